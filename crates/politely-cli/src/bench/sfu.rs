//! `politely bench sfu`: native clients of an SFU room on loopback. The server and its SFU run
//! in a child process (`politely serve --sfu`), so their CPU is measured apart from the
//! clients'; a proxy in front of the server can add signaling latency.

use crate::native::{ms, percentile};
use crate::system::cpu_nanos;
use anyhow::{Context as _, bail};
use clap::Args;
use politely::{
    Direction, MediaKind, Negotiation, PeerEvent, PeerHandle, Session, SessionConfig, SessionEvent,
    TrackLabel, TransceiverId,
};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[derive(Args, Debug)]
pub(crate) struct SfuArgs {
    /// Clients in the room.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Publish rounds: one client publishes a video track, every other one must receive it,
    /// then it unpublishes.
    #[arg(long, default_value_t = 50)]
    rounds: u64,
    /// Churn rounds after those: every client publishes at once, and every one must receive
    /// every other's track.
    #[arg(long, default_value_t = 0)]
    churn: u64,
    /// Then one client streams video (a 1 -> N broadcast) for this long, with no
    /// renegotiation: the SFU's CPU per forwarded packet is measured over this phase.
    #[arg(long, default_value_t = 5)]
    stream_secs: u64,
    /// Bytes per video frame of the broadcast (50 frames a second; a frame is split into
    /// packets of at most 1200 bytes).
    #[arg(long, default_value_t = 6000)]
    frame_bytes: usize,
    /// One-way signaling latency added between the clients and the server, by a proxy.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Clients ask the SFU before renegotiating, for a lease of this many milliseconds.
    #[arg(long, value_name = "MS")]
    gate: Option<u64>,
    /// How long a subscriber may take to receive a track before the round counts as failed.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
    /// After the broadcast, run `rtc`'s own `broadcast` example (the binary at this path)
    /// under the same 1 -> N load and print both. It listens on every interface, so this runs
    /// only in a namespace whose one interface is loopback (scripts/bench-sfu-rtc-broadcast.sh).
    #[arg(long, value_name = "PATH")]
    rtc_broadcast: Option<std::path::PathBuf>,
    #[command(flatten)]
    json: super::samples::JsonArg,
}

/// What a client's event task reports.
#[derive(Debug)]
enum Seen {
    /// The first packet of a publisher's track arrived.
    FirstPacket { client: usize, publisher: String },
    /// A publisher's track stopped arriving.
    Removed { publisher: String },
}

/// Sequence-number bookkeeping of everything the subscribers received.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Integrity {
    pub(crate) packets: u64,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) reordered: u64,
}

impl Integrity {
    /// Counts a packet with sequence number `seq` of a track whose highest one so far is `last`.
    pub(crate) fn count(&mut self, last: &mut Option<u16>, seq: u16) {
        self.packets += 1;
        match *last {
            Some(l) if seq == l => self.duplicated += 1,
            Some(l) if (seq.wrapping_sub(l) as i16) < 0 => self.reordered += 1,
            Some(l) => self.lost += u64::from(seq.wrapping_sub(l)) - 1,
            None => {}
        }
        if last.is_none_or(|l| (seq.wrapping_sub(l) as i16) > 0) {
            *last = Some(seq);
        }
    }
}

pub(crate) fn run(args: &SfuArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.clients >= 2, "--clients must be at least 2");
    if args.rtc_broadcast.is_some() {
        anyhow::ensure!(args.stream_secs > 0, "--rtc-broadcast needs --stream-secs");
        super::broadcast::only_loopback()?;
    }
    let mut child = spawn_server()?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench(args, &mut child))
}

/// `politely serve --sfu` on 127.0.0.1:0, and its address. It ends with the bench: killed
/// when this is dropped (a normal end, an error, a panic), and by itself when the bench's
/// process is gone (killed by a signal).
struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_server() -> anyhow::Result<Server> {
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--sfu",
            "--rate-limit",
            "0",
            "--max-room-size",
            "64",
            "--log",
            "error",
            "--exit-with-parent",
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting politely serve --sfu")?;
    let stdout = child.stdout.take().context("the server's stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected first line from the server: {line:?}"))?
        .to_owned();
    Ok(Server(child, addr))
}

async fn bench(args: &SfuArgs, server: &mut Server) -> anyhow::Result<ExitCode> {
    let target = server.1.clone();
    let addr = if args.latency_ms > 0 {
        proxy(target, Duration::from_millis(args.latency_ms)).await?
    } else {
        target
    };
    let url = format!("ws://{addr}");
    let room = format!("bench-sfu-{}", std::process::id());
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let integrity = std::sync::Arc::new(std::sync::Mutex::new(Integrity::default()));
    let mut clients: Vec<(String, PeerHandle, Session)> = Vec::new();
    for _ in 0..args.clients {
        let mut config = SessionConfig::loopback();
        if let Some(ms) = args.gate {
            config.peer.negotiation = Negotiation::Gate {
                lease: Duration::from_millis(ms),
            };
        }
        let mut session = Session::join(&url, &room, config).await?;
        let sfu = wait_for_sfu(&mut session).await?;
        clients.push((session.id(), sfu, session));
    }
    // Every client's events go to its own task, which reports what the rounds wait for.
    let mut handles = Vec::new();
    let mut tasks = Vec::new();
    for (i, (id, sfu, session)) in clients.into_iter().enumerate() {
        handles.push((id, sfu, session.id()));
        tasks.push(tokio::spawn(watch(
            i,
            session,
            seen_tx.clone(),
            integrity.clone(),
        )));
    }
    // Each client's video transceiver once it stopped publishing: the next publish reuses it
    // (a new msid, sending again), as a camera toggle should, instead of adding an m-section.
    let mut idle: Vec<Option<TransceiverId>> = vec![None; handles.len()];
    let pid = server.0.id();
    let cpu_start = cpu_nanos(pid);
    let started = Instant::now();
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut latencies = Vec::new();
    let mut failed_rounds = 0u64;
    for round in 0..args.rounds {
        let p = (round as usize) % handles.len();
        let t0 = Instant::now();
        let (track, writer) = publish(
            &handles[p].0,
            &handles[p].1,
            &format!("r{round}"),
            10,
            idle[p].take(),
        )
        .await?;
        let mut waiting: Vec<usize> = (0..handles.len()).filter(|&i| i != p).collect();
        let deadline = t0 + timeout;
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, seen_rx.recv()).await {
                Ok(Some(Seen::FirstPacket { client, publisher }))
                    if publisher == handles[p].0 && waiting.contains(&client) =>
                {
                    latencies.push(t0.elapsed());
                    waiting.retain(|&c| c != client);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if !waiting.is_empty() {
            failed_rounds += 1;
            eprintln!("round {round}: {} subscribers got nothing", waiting.len());
        }
        writer.abort();
        idle[p] = Some(unpublish(&handles[p].1, track).await?);
        wait_removed(
            &mut seen_rx,
            Some(&handles[p].0),
            handles.len() - 1,
            timeout,
        )
        .await;
    }
    let publish_phase = started.elapsed();
    let mut churn_failed = 0u64;
    let mut churn_times = Vec::new();
    for round in 0..args.churn {
        let t0 = Instant::now();
        let mut live = Vec::new();
        for (i, (id, sfu, _)) in handles.iter().enumerate() {
            live.push(publish(id, sfu, &format!("c{round}"), 10, idle[i].take()).await?);
        }
        let n = handles.len();
        let mut missing: BTreeMap<(usize, String), ()> = BTreeMap::new();
        for (c, _) in handles.iter().enumerate() {
            for (id, _, _) in handles.iter().filter(|(id, _, _)| *id != handles[c].0) {
                missing.insert((c, id.clone()), ());
            }
        }
        let deadline = t0 + timeout;
        while !missing.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, seen_rx.recv()).await {
                Ok(Some(Seen::FirstPacket { client, publisher })) => {
                    missing.remove(&(client, publisher));
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if missing.is_empty() {
            churn_times.push(t0.elapsed());
        } else {
            churn_failed += 1;
            eprintln!(
                "churn round {round}: {} of {} deliveries missing",
                missing.len(),
                n * (n - 1)
            );
        }
        for (i, ((track, writer), (_, sfu, _))) in live.into_iter().zip(&handles).enumerate() {
            writer.abort();
            idle[i] = Some(unpublish(sfu, track).await?);
        }
        wait_removed(&mut seen_rx, None, n * (n - 1), timeout).await;
    }
    let negotiation_phase = started.elapsed();
    let negotiation_cpu = cpu_start
        .zip(cpu_nanos(pid))
        .map(|(a, b)| b.saturating_sub(a));
    let before_stream = *integrity.lock().expect("never poisoned");
    // The broadcast: client 0 streams to everyone, nothing renegotiates while it is timed.
    let mut stream = None;
    // Subscribers the broadcast never reached within the timeout.
    let mut unreached = 0;
    if args.stream_secs > 0 {
        let (track, writer) = publish(
            &handles[0].0,
            &handles[0].1,
            "broadcast",
            args.frame_bytes,
            idle[0].take(),
        )
        .await?;
        let mut waiting = handles.len() - 1;
        let deadline = Instant::now() + timeout;
        while waiting > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, seen_rx.recv()).await {
                Ok(Some(Seen::FirstPacket { publisher, .. })) if publisher == handles[0].0 => {
                    waiting -= 1;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        unreached = waiting;
        let packets_before = integrity.lock().expect("never poisoned").packets;
        let cpu_before = cpu_nanos(pid);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(args.stream_secs)).await;
        let cpu = cpu_before
            .zip(cpu_nanos(pid))
            .map(|(a, b)| b.saturating_sub(a));
        let packets = integrity.lock().expect("never poisoned").packets - packets_before;
        stream = Some((t0.elapsed(), cpu, packets));
        writer.abort();
        idle[0] = Some(unpublish(&handles[0].1, track).await?);
    }
    for task in tasks {
        task.abort();
    }
    let integrity = *integrity.lock().expect("never poisoned");
    let gate = args.gate.map_or("perfect negotiation".to_owned(), |ms| {
        format!("gate ({ms} ms leases)")
    });
    println!(
        "{} clients, {gate}, signaling latency {} ms one way",
        args.clients, args.latency_ms
    );
    let mut samples = super::samples::Samples::new("sfu");
    samples.add(
        format!(
            "publish -> first packet at each subscriber, {} clients, {gate}",
            args.clients
        ),
        &latencies,
    );
    samples.add(
        format!("churn round, {} clients, {gate}", args.clients),
        &churn_times,
    );
    samples.write(&args.json)?;
    if !latencies.is_empty() {
        latencies.sort();
        println!(
            "publish -> first RTP packet at each subscriber: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={}, {} rounds in {:.1} s)",
            ms(percentile(&latencies, 0.50)),
            ms(percentile(&latencies, 0.99)),
            ms(*latencies.last().expect("not empty")),
            latencies.len(),
            args.rounds,
            publish_phase.as_secs_f64()
        );
    }
    if args.churn > 0 {
        churn_times.sort();
        let p = |q| {
            if churn_times.is_empty() {
                0.0
            } else {
                ms(percentile(&churn_times, q))
            }
        };
        println!(
            "churn: {} rounds, {} failed; everyone publishes -> everyone receives everyone: p50 {:.1} ms, p99 {:.1} ms",
            args.churn,
            churn_failed,
            p(0.50),
            p(0.99)
        );
    }
    println!(
        "received: {} packets; lost {}, duplicated {}, reordered {}",
        integrity.packets, integrity.lost, integrity.duplicated, integrity.reordered
    );
    if let Some(nanos) = negotiation_cpu {
        let packets = before_stream.packets.max(1);
        println!(
            "server + SFU CPU in the publish and churn rounds: {:.2} s over {:.1} s ({:.0} us per packet received, renegotiation included)",
            nanos as f64 / 1e9,
            negotiation_phase.as_secs_f64(),
            nanos as f64 / 1e3 / packets as f64
        );
    }
    match stream {
        Some((span, Some(nanos), packets)) if packets > 0 => println!(
            "broadcast 1 -> {}: {packets} packets received in {:.1} s; server + SFU CPU {:.3} s = {:.2} us per forwarded packet (CPU / packets x subscribers)",
            handles.len() - 1,
            span.as_secs_f64(),
            nanos as f64 / 1e9,
            nanos as f64 / 1e3 / packets as f64
        ),
        Some(_) => println!("broadcast: no packets or CPU unknown"),
        None => {}
    }
    if unreached > 0 {
        println!(
            "broadcast: {unreached} of {} subscribers received nothing",
            handles.len() - 1
        );
    }
    let mut broadcast_failed = unreached > 0 || matches!(stream, Some((_, _, 0)));
    if let Some(bin) = &args.rtc_broadcast {
        let example = super::broadcast::run(
            bin,
            handles.len() - 1,
            args.stream_secs,
            args.frame_bytes,
            timeout,
        )
        .await?;
        let i = example.integrity;
        println!(
            "rtc's broadcast example 1 -> {}, same load: {} packets received in {:.1} s; lost {}, duplicated {}, reordered {}",
            handles.len() - 1,
            example.packets,
            example.span.as_secs_f64(),
            i.lost,
            i.duplicated,
            i.reordered
        );
        match (example.cpu_nanos, stream) {
            (Some(nanos), Some((_, Some(ours), packets))) if example.packets > 0 && packets > 0 => {
                let theirs = nanos as f64 / 1e3 / example.packets as f64;
                let ours = ours as f64 / 1e3 / packets as f64;
                println!(
                    "  its CPU {:.3} s = {theirs:.2} us per forwarded packet; politely's SFU (with its signaling server) takes {:.2}x that",
                    nanos as f64 / 1e9,
                    ours / theirs
                );
            }
            _ => println!("  CPU unknown or nothing received"),
        }
        broadcast_failed |= example.packets == 0;
    }
    Ok(
        if failed_rounds == 0 && churn_failed == 0 && !broadcast_failed {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

async fn wait_for_sfu(session: &mut Session) -> anyhow::Result<PeerHandle> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut sfu = None;
    loop {
        let event = tokio::time::timeout_at(deadline, session.next_event())
            .await
            .context("no connection to the SFU in 10 s")?
            .context("the session ended")?;
        match event {
            // A connection with nothing to negotiate is never made: a chat channel, as an
            // application would open, brings it up before the timed rounds.
            SessionEvent::PeerJoined(peer) => {
                peer.create_data_channel("chat", Default::default()).await?;
                sfu = Some(peer);
            }
            SessionEvent::Peer {
                event: PeerEvent::Connected,
                ..
            } => {
                if let Some(sfu) = sfu {
                    return Ok(sfu);
                }
            }
            SessionEvent::Ended { reason } => bail!("session ended: {reason}"),
            _ => {}
        }
    }
}

/// Publishes a video track and writes a frame every 20 ms until the task is aborted.
async fn publish(
    id: &str,
    sfu: &PeerHandle,
    name: &str,
    frame_bytes: usize,
    idle: Option<TransceiverId>,
) -> anyhow::Result<(TransceiverId, tokio::task::JoinHandle<()>)> {
    let label = TrackLabel {
        stream_id: id.to_owned(),
        track_id: format!("{id}-{name}"),
    };
    let track = match idle {
        Some(track) => {
            sfu.set_track_label(track, label).await?;
            sfu.set_direction(track, Direction::SendOnly).await?;
            track
        }
        None => {
            sfu.add_labelled_transceiver(MediaKind::Video, Direction::SendOnly, label)
                .await?
        }
    };
    Ok((track, write_frames(sfu.clone(), track, frame_bytes)))
}

/// Writes a video frame of `frame_bytes` on `track` every 20 ms until the task is aborted or
/// the connection ends.
pub(crate) fn write_frames(
    peer: PeerHandle,
    track: TransceiverId,
    frame_bytes: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            let mut frame = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
            frame.resize(frame_bytes.max(10), 0);
            if peer
                .write_sample(track, frame, Duration::from_millis(20))
                .await
                .is_err()
            {
                return;
            }
        }
    })
}

/// Stops publishing a track, keeping its transceiver for the next publish.
async fn unpublish(sfu: &PeerHandle, track: TransceiverId) -> anyhow::Result<TransceiverId> {
    sfu.set_direction(track, Direction::Inactive).await?;
    Ok(track)
}

/// Waits until `count` tracks stopped arriving: `publisher`'s, or anyone's when it is `None`.
async fn wait_removed(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    publisher: Option<&str>,
    count: usize,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    let mut removed = 0;
    while removed < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, seen.recv()).await {
            Ok(Some(Seen::Removed { publisher: p })) if publisher.is_none_or(|w| w == p) => {
                removed += 1;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

/// One client's events: the first packet of each track it receives, and tracks removed.
async fn watch(
    client: usize,
    mut session: Session,
    seen: mpsc::UnboundedSender<Seen>,
    integrity: std::sync::Arc<std::sync::Mutex<Integrity>>,
) {
    // Receiving transceivers: (publisher, packets seen, last sequence number).
    let mut tracks: BTreeMap<TransceiverId, (String, bool, Option<u16>)> = BTreeMap::new();
    while let Some(event) = session.next_event().await {
        let SessionEvent::Peer { event, .. } = event else {
            continue;
        };
        match event {
            PeerEvent::TrackAdded {
                transceiver,
                label: Some(label),
                ..
            } => {
                tracks.insert(transceiver, (label.stream_id, false, None));
            }
            PeerEvent::TrackRemoved { transceiver } => {
                if let Some((publisher, ..)) = tracks.remove(&transceiver) {
                    let _ = seen.send(Seen::Removed { publisher });
                }
            }
            PeerEvent::Media(packet) => {
                let Some((publisher, first_seen, last)) = tracks.get_mut(&packet.transceiver)
                else {
                    continue;
                };
                integrity
                    .lock()
                    .expect("never poisoned")
                    .count(last, packet.sequence_number);
                if !*first_seen {
                    *first_seen = true;
                    let _ = seen.send(Seen::FirstPacket {
                        client,
                        publisher: publisher.clone(),
                    });
                }
            }
            _ => {}
        }
    }
}

/// A TCP proxy on 127.0.0.1:0 to `target` that holds every chunk `latency` in each direction,
/// in order.
async fn proxy(target: String, latency: Duration) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&target).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(delayed(cr, sw, latency));
                tokio::spawn(delayed(sr, cw, latency));
            });
        }
    });
    Ok(addr)
}

async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    latency: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0
            || tx
                .send((tokio::time::Instant::now() + latency, buf[..n].to_vec()))
                .is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
