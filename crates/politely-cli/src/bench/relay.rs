//! `politely bench relay`: pairs of clients in rooms of two signal each other through the
//! server with a window of frames in flight per direction, for a fixed time.
//!
//! Each frame carries its direction's sequence number and its send time; the receiver checks
//! the sequence (lost, duplicated, reordered) and records the latency. One task drives both
//! clients of a pair, so windows need no cross-task bookkeeping.

use super::{Socket, join, thousands, ws_url};
use crate::system;
use clap::Args;
use futures_util::{FutureExt, SinkExt, StreamExt};
use politely_proto::ServerMessage;
use serde::Deserialize;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

#[derive(Args, Debug)]
pub(crate) struct RelayArgs {
    /// The server, e.g. ws://127.0.0.1:8080 (loopback only).
    #[arg(long)]
    url: String,
    /// Pairs of clients, each pair in its own room (1 to 5,000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=5000))]
    pairs: u64,
    /// Bytes per signal frame as sent (the data is padded to reach it; at least 100).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(100..=256 * 1024))]
    size: u64,
    /// How long to send, in seconds (at most 600).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Frames in flight per direction per pair.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    window: u64,
    /// The server's pid, to report its CPU time per relayed frame (it must run on this machine).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Generator threads; 0 means one per CPU.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Default)]
struct PairResult {
    sent: u64,
    /// Frames received while the clock ran (before the deadline).
    in_window: u64,
    received: u64,
    duplicated_or_reordered: u64,
    latencies_us: Vec<u32>,
}

#[derive(Deserialize)]
struct Payload {
    s: u64,
    t: u64,
}

/// One direction of a pair: the sender's socket and sequence, the receiver's expectations.
struct Direction {
    next_seq: u64,
    received: u64,
    /// The next sequence number the receiver expects.
    expected: u64,
}

impl Direction {
    fn in_flight(&self) -> u64 {
        self.next_seq - self.received
    }
}

pub(crate) fn run(args: &RelayArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.seconds > 0.0 && args.seconds <= 600.0,
        "--seconds must be in (0, 600]"
    );
    let url = ws_url(&args.url)?;
    system::raise_open_files_limit();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        runtime.worker_threads(args.threads);
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(relay(args, url))
}

async fn relay(args: &RelayArgs, url: String) -> anyhow::Result<ExitCode> {
    let duration = Duration::from_secs_f64(args.seconds);
    let run_id = std::process::id();
    let barrier = Arc::new(Barrier::new(args.pairs as usize + 1));
    let epoch = Instant::now();
    let start_at = Arc::new(tokio::sync::OnceCell::new());
    let mut tasks = Vec::new();
    for pair in 0..args.pairs {
        let room = format!("bench-relay-{run_id}-{pair}");
        let (url, barrier, start_at) = (url.clone(), barrier.clone(), start_at.clone());
        let (size, window) = (args.size as usize, args.window);
        tasks.push(tokio::spawn(async move {
            let a = join(&url, &room, 16 * 1024).await;
            let b = join(&url, &room, 16 * 1024).await;
            barrier.wait().await;
            let (a, b) = (a?, b?);
            let deadline: Instant = *start_at.get().expect("set before the barrier opens");
            run_pair(a, b, size, window, epoch, deadline).await
        }));
    }
    // Every pair has joined (or failed) when the barrier opens.
    let deadline = Instant::now() + Duration::from_millis(100) + duration;
    start_at.set(deadline).expect("set once");
    barrier.wait().await;
    let started = Instant::now();
    let cpu_before = args.server_pid.and_then(system::cpu_nanos);
    let own_before = system::cpu_nanos(std::process::id());
    tokio::time::sleep_until(deadline).await;
    let cpu_after = args.server_pid.and_then(system::cpu_nanos);
    let own_after = system::cpu_nanos(std::process::id());
    let elapsed = started.elapsed().as_secs_f64();

    let mut total = PairResult::default();
    let mut failures = Vec::new();
    for task in tasks {
        match task.await? {
            Ok(result) => {
                total.sent += result.sent;
                total.in_window += result.in_window;
                total.received += result.received;
                total.duplicated_or_reordered += result.duplicated_or_reordered;
                total.latencies_us.extend(result.latencies_us);
            }
            Err(e) => failures.push(e),
        }
    }
    if let Some(e) = failures.first() {
        anyhow::bail!(
            "{} of {} pairs failed; the first: {e:#}",
            failures.len(),
            args.pairs
        );
    }
    let in_window = total.in_window;
    let lost = total.sent - total.received;
    total.latencies_us.sort_unstable();
    let percentile = |p: f64| {
        let samples = &total.latencies_us;
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        f64::from(samples[i]) / 1000.0
    };
    println!(
        "relay: {} pairs, {}-byte frames, window {} per direction, {:.1} s",
        args.pairs, args.size, args.window, elapsed
    );
    println!(
        "frames relayed: {} ({} per second)",
        thousands(in_window),
        thousands((in_window as f64 / elapsed) as u64)
    );
    println!(
        "latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(0.50),
        percentile(0.99),
        percentile(1.0)
    );
    println!(
        "sent {}, received {}: lost {lost}, duplicated or reordered {}",
        thousands(total.sent),
        thousands(total.received),
        total.duplicated_or_reordered
    );
    let cpu = |label: &str, before: Option<u64>, after: Option<u64>| {
        let (Some(before), Some(after)) = (before, after) else {
            return false;
        };
        let nanos = after.saturating_sub(before) as f64;
        println!(
            "{label}: {:.2} µs per relayed frame ({:.0}% of one core)",
            nanos / 1000.0 / in_window.max(1) as f64,
            nanos / 1e9 / elapsed * 100.0
        );
        true
    };
    if let Some(pid) = args.server_pid
        && !cpu("server CPU", cpu_before, cpu_after)
    {
        println!("server CPU: unknown (cannot read /proc/{pid})");
    }
    cpu("generator CPU", own_before, own_after);
    let clean = lost == 0 && total.duplicated_or_reordered == 0;
    println!(
        "{}",
        if clean {
            "ok"
        } else {
            "FAILED: frames lost, duplicated or reordered"
        }
    );
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn frame(to: &str, seq: u64, sent_us: u64, size: usize) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(size.max(128));
    let _ = write!(
        text,
        r#"{{"type":"signal","to":"{to}","data":{{"s":{seq},"t":{sent_us},"p":""#
    );
    const PAD: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    let mut pad = size.saturating_sub(text.len() + 3);
    while pad > 0 {
        let n = pad.min(PAD.len());
        text.push_str(&PAD[..n]);
        pad -= n;
    }
    text.push_str(r#""}}"#);
    text
}

async fn fill(
    ws: &mut Socket,
    to: &str,
    dir: &mut Direction,
    size: usize,
    window: u64,
    epoch: Instant,
) -> anyhow::Result<u64> {
    let mut sent = 0;
    while dir.in_flight() < window {
        let now_us = epoch.elapsed().as_micros() as u64;
        ws.feed(Message::text(frame(to, dir.next_seq, now_us, size)))
            .await?;
        dir.next_seq += 1;
        sent += 1;
    }
    if sent > 0 {
        ws.flush().await?;
    }
    Ok(sent)
}

/// `s` and `t` of a relayed bench frame, `{"type":"signal","from":"…","data":{"s":1,"t":2,…`.
fn quick_payload(text: &str) -> Option<Payload> {
    let rest = text.strip_prefix(r#"{"type":"signal","from":""#)?;
    let rest = &rest[rest.find(r#"","data":{"s":"#)? + 14..];
    let (s, rest) = rest.split_once(',')?;
    let (t, _) = rest.strip_prefix(r#""t":"#)?.split_once(',')?;
    Some(Payload {
        s: s.parse().ok()?,
        t: t.parse().ok()?,
    })
}

type Read = Option<Result<Message, tokio_tungstenite::tungstenite::Error>>;

/// Checks one received frame against its direction; returns its latency in microseconds.
fn on_message(
    message: Read,
    dir: &mut Direction,
    epoch: Instant,
    result: &mut PairResult,
) -> anyhow::Result<Option<u32>> {
    let text = match message {
        Some(Ok(Message::Text(text))) => text,
        Some(Ok(Message::Close(frame))) => anyhow::bail!("the server closed a client: {frame:?}"),
        Some(Ok(_)) => return Ok(None),
        Some(Err(e)) => return Err(e.into()),
        None => anyhow::bail!("the server closed a client"),
    };
    // The generator shares the cores with the server, so it reads its own frames' two numbers
    // without a full parse; anything else (errors, presence) takes the parser.
    let payload = match quick_payload(&text) {
        Some(payload) => payload,
        None => match ServerMessage::from_json(&text)? {
            ServerMessage::Signal { data, .. } => serde_json::from_str(data.get())?,
            ServerMessage::Error { code, message, .. } => {
                anyhow::bail!("server error: {code}: {message}")
            }
            _ => return Ok(None),
        },
    };
    if payload.s == dir.expected {
        dir.expected += 1;
    } else {
        result.duplicated_or_reordered += 1;
        dir.expected = dir.expected.max(payload.s + 1);
    }
    dir.received += 1;
    result.received += 1;
    let now_us = epoch.elapsed().as_micros() as u64;
    Ok(Some(
        now_us.saturating_sub(payload.t).min(u64::from(u32::MAX)) as u32,
    ))
}

async fn run_pair(
    (mut a, a_id): (Socket, String),
    (mut b, b_id): (Socket, String),
    size: usize,
    window: u64,
    epoch: Instant,
    deadline: Instant,
) -> anyhow::Result<PairResult> {
    let mut result = PairResult {
        latencies_us: Vec::with_capacity(1 << 16),
        ..PairResult::default()
    };
    let new = || Direction {
        next_seq: 0,
        received: 0,
        expected: 0,
    };
    let (mut a_to_b, mut b_to_a) = (new(), new());
    let mut in_window = 0;
    let drain_until = deadline + Duration::from_secs(5);
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    loop {
        let now = Instant::now();
        let sending = now < deadline;
        if sending {
            result.sent += fill(&mut a, &b_id, &mut a_to_b, size, window, epoch).await?;
            result.sent += fill(&mut b, &a_id, &mut b_to_a, size, window, epoch).await?;
        } else if a_to_b.in_flight() == 0 && b_to_a.in_flight() == 0 || now >= drain_until {
            break;
        } else if timer.deadline() != drain_until {
            timer.as_mut().reset(drain_until);
        }
        let (message, from_a) = tokio::select! {
            m = a.next() => (m, true),
            m = b.next() => (m, false),
            () = &mut timer => continue,
        };
        let mut received = 0;
        let mut handle = |message, from_a| -> anyhow::Result<()> {
            let dir = if from_a { &mut b_to_a } else { &mut a_to_b };
            if let Some(latency) = on_message(message, dir, epoch, &mut result)? {
                result.latencies_us.push(latency);
                received += 1;
            }
            Ok(())
        };
        handle(message, from_a)?;
        // Take everything already read before sending again, so a window refills with one
        // write instead of one per frame.
        while let Some(message) = a.next().now_or_never() {
            handle(message, true)?;
        }
        while let Some(message) = b.next().now_or_never() {
            handle(message, false)?;
        }
        if sending {
            in_window += received;
        }
    }
    result.in_window = in_window;
    let _ = a.close(None).await;
    let _ = b.close(None).await;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_asked_size_and_their_numbers_read_back() {
        let text = frame("01JD0000000000000000000000", 42, 1234, 200);
        assert_eq!(text.len(), 200);
        serde_json::from_str::<serde_json::Value>(&text).expect("a frame is JSON");
        // The server relays `data` byte for byte.
        let data = &text[text.find(r#""data":"#).unwrap() + 7..text.len() - 1];
        let relayed =
            format!(r#"{{"type":"signal","from":"01JC0000000000000000000000","data":{data}}}"#);
        let payload = quick_payload(&relayed).unwrap();
        assert_eq!((payload.s, payload.t), (42, 1234));
        assert!(quick_payload(r#"{"type":"peer-left","id":"x"}"#).is_none());
    }
}
