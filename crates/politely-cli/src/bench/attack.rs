//! `politely bench attack`: what a hostile client does to a politely server, to measure what it
//! costs the server (memory, CPU) and everyone else (run `bench relay` beside it for a
//! bystander's latency). Loopback only, bounded in count and time, and it stops by itself.

use super::raw::Client;
use super::ws_url;
use crate::system;
use clap::{Args, ValueEnum};
use politely_server::websocket::{self, Opcode};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    /// Connections that send `G` and nothing more (a request that never ends).
    Slowloris,
    /// Connections that complete the handshake and send one frame header announcing 256 KiB.
    Headers,
    /// Joined connections that send WebSocket pings as fast as they can.
    Pings,
    /// Peers that join rooms (15 to a room) and drop their connection (parked for their grace
    /// period) while one sender in each room floods them with 16 KiB signals.
    Park,
}

#[derive(Args, Debug)]
pub(crate) struct AttackArgs {
    /// The server, e.g. ws://127.0.0.1:8080 (loopback only).
    #[arg(long)]
    url: String,
    /// The attack.
    #[arg(long, value_enum)]
    kind: Kind,
    /// Attacking connections (or parked peers), 1 to 5,000.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=5_000))]
    connections: u64,
    /// How long the attack lasts, in seconds (at most 120).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// The server's pid, to report its memory and CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// What the attack saw.
#[derive(Default)]
struct Tally {
    opened: u64,
    refused: u64,
    closed_by_server: u64,
    frames_sent: u64,
    frames_received: u64,
}

pub(crate) fn run(args: &AttackArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.seconds > 0.0 && args.seconds <= 120.0,
        "--seconds must be in (0, 120]"
    );
    let url = ws_url(&args.url)?;
    system::raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rss_before = args.server_pid.and_then(system::rss_bytes);
    let cpu_before = args.server_pid.and_then(system::cpu_nanos);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let (tally, rss_peak) = runtime.block_on(attack(args, &url, deadline))?;
    let cpu_after = args.server_pid.and_then(system::cpu_nanos);
    let rss_after = args.server_pid.and_then(system::rss_bytes);
    println!(
        "attack {:?}: {} connections for {:.1} s: {} opened, {} refused, {} closed by the \
         server, {} frames sent, {} received",
        args.kind,
        args.connections,
        started.elapsed().as_secs_f64(),
        tally.opened,
        tally.refused,
        tally.closed_by_server,
        tally.frames_sent,
        tally.frames_received,
    );
    if let (Some(before), Some(peak), Some(after)) = (rss_before, rss_peak, rss_after) {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!(
            "server memory: {:.1} MiB before, {:.1} MiB at the peak, {:.1} MiB after",
            mib(before),
            mib(peak),
            mib(after)
        );
    }
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        println!(
            "server CPU: {:.2} s",
            after.saturating_sub(before) as f64 / 1e9
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn attack(
    args: &AttackArgs,
    url: &str,
    deadline: Instant,
) -> anyhow::Result<(Tally, Option<u64>)> {
    let mut tally = Tally::default();
    let mut peak = args.server_pid.and_then(system::rss_bytes);
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_owned();
    // What each attacking connection holds; the server closing one is counted.
    let mut held: Vec<TcpStream> = Vec::new();
    let mut clients: Vec<Client> = Vec::new();
    // Per room of parked peers: its sender and the parked ids.
    let mut rooms: Vec<(Client, Vec<String>)> = Vec::new();
    for _ in 0..args.connections {
        match args.kind {
            Kind::Slowloris => {
                let mut tcp = TcpStream::connect(&authority).await?;
                tcp.write_all(b"G").await?;
                held.push(tcp);
            }
            Kind::Headers => match Client::connect(url).await {
                Ok(mut client) => {
                    let mut header = Vec::new();
                    websocket::write_header(&mut header, Opcode::Text, 256 * 1024, Some([1; 4]));
                    client.tcp.write_all(&header).await?;
                    held.push(client.tcp);
                }
                Err(_) => tally.refused += 1,
            },
            Kind::Pings => match Client::join(url, &format!("attack-{}", tally.opened)).await {
                Ok((client, _)) => clients.push(client),
                Err(_) => tally.refused += 1,
            },
            Kind::Park => {
                let room = format!("attack-park-{}", tally.opened / 15);
                if tally.opened % 15 == 0 {
                    rooms.push((Client::join(url, &room).await?.0, Vec::new()));
                }
                match Client::join(url, &room).await {
                    // Dropped without a close: the server keeps the peer for its grace period.
                    Ok((client, id)) => {
                        drop(client);
                        if let Some((_, targets)) = rooms.last_mut() {
                            targets.push(id);
                        }
                    }
                    Err(_) => tally.refused += 1,
                }
            }
        }
        tally.opened += 1;
    }
    let mut pings = Vec::new();
    for i in 0..1000u32 {
        websocket::write_masked_frame(&mut pings, Opcode::Ping, &i.to_le_bytes(), [7; 4]);
    }
    let data = format!(r#""{}""#, "x".repeat(16 * 1024));
    let mut next_sample = Instant::now();
    while Instant::now() < deadline {
        match args.kind {
            Kind::Slowloris | Kind::Headers => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Kind::Pings => {
                for client in &mut clients {
                    if client.tcp.write_all(&pings).await.is_ok() {
                        tally.frames_sent += 1000;
                    }
                    while let Ok(true) = client.try_read() {}
                    while let Ok(Some(_)) = client.reader.next_message() {
                        tally.frames_received += 1;
                    }
                }
                tokio::task::yield_now().await;
            }
            Kind::Park => {
                for (sender, targets) in &mut rooms {
                    for target in targets.iter() {
                        let signal =
                            format!(r#"{{"type":"signal","to":"{target}","data":{data}}}"#);
                        sender.push_text(signal.as_bytes());
                        tally.frames_sent += 1;
                    }
                    if sender.flush().await.is_err() {
                        continue;
                    }
                    while let Ok(true) = sender.try_read() {}
                    while let Ok(Some(_)) = sender.reader.next_message() {
                        tally.frames_received += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if Instant::now() >= next_sample {
            next_sample = Instant::now() + Duration::from_millis(100);
            if let (Some(pid), Some(p)) = (args.server_pid, peak.as_mut()) {
                *p = (*p).max(system::rss_bytes(pid).unwrap_or(0));
            }
        }
    }
    // Which held connections the server closed meanwhile.
    for tcp in &mut held {
        let mut buf = [0u8; 4096];
        let closed = loop {
            match tcp.try_read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                Err(_) => break true,
            }
        };
        tally.closed_by_server += u64::from(closed);
    }
    for client in &mut clients {
        let mut buf = [0u8; 1];
        if matches!(
            tokio::time::timeout(Duration::from_millis(1), client.tcp.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        ) {
            tally.closed_by_server += 1;
        }
    }
    Ok((tally, peak))
}
