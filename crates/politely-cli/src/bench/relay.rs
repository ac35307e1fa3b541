//! `politely bench relay`: pairs of clients in rooms of two signal each other through the
//! server with a window of frames in flight per direction, for a fixed time.
//!
//! Each frame carries its direction's sequence number and its send time; the receiver checks
//! the sequence (lost, duplicated, reordered) and records the latency. One task drives both
//! clients of a pair, so windows need no cross-task bookkeeping. The generator shares the cores
//! with the server, so it is lean: raw sockets with the server crate's framing, one write per
//! window refill, one clock reading per batch, and a single-threaded runtime per thread.

use super::raw::{Client, frame_error};
use super::{thousands, ws_url};
use crate::system;
use clap::Args;
use politely_proto::ServerMessage;
use politely_server::websocket::{Message, Reader};
use serde::Deserialize;
use std::process::ExitCode;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Args, Debug)]
pub(crate) struct RelayArgs {
    /// The server, e.g. ws://127.0.0.1:8080 (loopback only). Repeated: nodes of one cluster
    /// (`serve --redis`), and each pair's two clients join different nodes (pair n joins
    /// nodes n and n + 1), unless --same-node.
    #[arg(long, required = true)]
    url: Vec<String>,
    /// With several --url: both clients of a pair join the same node (pair n: node n).
    #[arg(long)]
    same_node: bool,
    /// Pairs of clients, each pair in its own room (1 to 5,000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=5000))]
    pairs: u64,
    /// Bytes per signal frame as sent (the data is padded to reach it; at least 100).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(100..=256 * 1024))]
    size: u64,
    /// How long to measure, in seconds (at most 600).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// How long to run the load before measuring, in seconds (at most 60): the first moments
    /// of a run measure the operating system placing two busy processes, not the server.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Frames in flight per direction per pair.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    window: u64,
    /// The server's pid, to report its CPU time per relayed frame (it must run on this
    /// machine). Repeated for the nodes of a cluster: their CPU time is added up.
    #[arg(long)]
    server_pid: Vec<u32>,
    /// The pid of the Redis the nodes share, to report its CPU time per relayed frame.
    #[arg(long)]
    redis_pid: Option<u32>,
    /// Generator threads, each with its share of the pairs; 0 means one per CPU.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Default)]
struct PairResult {
    sent: u64,
    /// Frames received while the clock ran (after the warm-up, before the deadline).
    in_window: u64,
    received: u64,
    duplicated_or_reordered: u64,
    latencies: Histogram,
}

/// Latencies in microseconds, exact below 1,024 µs and within 1/64 (1.6%) above, in a fixed
/// table: recording never allocates, so it cannot stall the generator mid-run.
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

/// Sub-buckets per power of two above the exact range.
const SUB_BUCKETS: u64 = 64;
const EXACT: u64 = 1024;

impl Default for Histogram {
    fn default() -> Self {
        // The exact range, then 64 sub-buckets for each power of two from 2^10 to 2^63.
        Histogram {
            counts: vec![0; (EXACT + 54 * SUB_BUCKETS) as usize],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn bucket(us: u64) -> usize {
        if us < EXACT {
            return us as usize;
        }
        let power = 63 - u64::from(us.leading_zeros());
        let sub = (us >> (power - 6)) - SUB_BUCKETS;
        (EXACT + (power - 10) * SUB_BUCKETS + sub) as usize
    }

    /// The smallest value of a bucket (what a percentile reports).
    fn low(bucket: usize) -> u64 {
        let bucket = bucket as u64;
        if bucket < EXACT {
            return bucket;
        }
        let power = (bucket - EXACT) / SUB_BUCKETS + 10;
        let sub = (bucket - EXACT) % SUB_BUCKETS;
        (SUB_BUCKETS + sub) << (power - 6)
    }

    fn record(&mut self, us: u64) {
        self.counts[Self::bucket(us)] += 1;
        self.total += 1;
        self.max = self.max.max(us);
    }

    fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The value below which a share `p` of the samples fall, in microseconds.
    fn percentile(&self, p: f64) -> u64 {
        if p >= 1.0 {
            return self.max;
        }
        let rank = ((self.total as f64 * p).ceil() as u64).clamp(1, self.total.max(1));
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::low(bucket);
            }
        }
        self.max
    }
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
    anyhow::ensure!(
        (0.0..=60.0).contains(&args.warmup),
        "--warmup must be in [0, 60]"
    );
    let warmup = Duration::from_secs_f64(args.warmup);
    let urls = args
        .url
        .iter()
        .map(|url| ws_url(url))
        .collect::<anyhow::Result<Vec<_>>>()?;
    system::raise_open_files_limit();
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(args.pairs as usize);
    let duration = Duration::from_secs_f64(args.seconds);
    let run_id = std::process::id();
    let epoch = Instant::now();
    // Every thread waits here twice: once its pairs have joined (or failed), and once the start
    // is set.
    let barrier = Arc::new(Barrier::new(threads + 1));
    // When measuring starts, and ends.
    let start_at = Arc::new(OnceLock::<(Instant, Instant)>::new());
    let mut handles = Vec::new();
    for thread in 0..threads {
        let pairs: Vec<u64> = (0..args.pairs)
            .filter(|pair| *pair as usize % threads == thread)
            .collect();
        let (urls, barrier, start_at) = (urls.clone(), barrier.clone(), start_at.clone());
        let same_node = args.same_node;
        let (size, window) = (args.size as usize, args.window);
        handles.push(std::thread::spawn(
            move || -> anyhow::Result<Vec<PairResult>> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let mut joins = Vec::new();
                    for pair in pairs {
                        let room = format!("bench-relay-{run_id}-{pair}");
                        let n = urls.len();
                        let first = pair as usize % n;
                        let second = if same_node { first } else { (first + 1) % n };
                        let (a_url, b_url) = (urls[first].clone(), urls[second].clone());
                        joins.push(tokio::spawn(async move {
                            let a = Client::join(&a_url, &room).await?;
                            let b = Client::join(&b_url, &room).await?;
                            anyhow::Ok((a, b))
                        }));
                    }
                    let mut clients = Vec::new();
                    let mut failure = None;
                    for join in joins {
                        match join.await? {
                            Ok(pair) => clients.push(pair),
                            Err(e) => failure = Some(e),
                        }
                    }
                    // The barriers are passed even after a failure, so no thread waits forever.
                    barrier.wait();
                    barrier.wait();
                    if let Some(e) = failure {
                        return Err(e);
                    }
                    let clock = *start_at.get().expect("set between the barriers");
                    let mut tasks = Vec::new();
                    for (a, b) in clients {
                        tasks.push(tokio::spawn(run_pair(a, b, size, window, epoch, clock)));
                    }
                    let mut results = Vec::new();
                    for task in tasks {
                        results.push(task.await??);
                    }
                    Ok(results)
                })
            },
        ));
    }
    barrier.wait();
    let measure_from = Instant::now() + warmup;
    let deadline = measure_from + duration;
    start_at.set((measure_from, deadline)).expect("set once");
    barrier.wait();
    std::thread::sleep(measure_from.saturating_duration_since(Instant::now()));
    let started = Instant::now();
    // The nodes' CPU time added up; unknown if any cannot be read.
    let servers = || -> Option<u64> {
        if args.server_pid.is_empty() {
            return None;
        }
        args.server_pid
            .iter()
            .map(|pid| system::cpu_nanos(*pid))
            .sum()
    };
    let cpu_before = servers();
    let redis_before = args.redis_pid.and_then(system::cpu_nanos);
    let own_before = system::cpu_nanos(std::process::id());
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    let cpu_after = servers();
    let redis_after = args.redis_pid.and_then(system::cpu_nanos);
    let own_after = system::cpu_nanos(std::process::id());
    let elapsed = started.elapsed().as_secs_f64();

    let mut total = PairResult::default();
    let mut failures = Vec::new();
    for handle in handles {
        let results = match handle.join() {
            Ok(results) => results,
            Err(_) => Err(anyhow::anyhow!("a generator thread panicked")),
        };
        match results {
            Ok(results) => {
                for result in results {
                    total.sent += result.sent;
                    total.in_window += result.in_window;
                    total.received += result.received;
                    total.duplicated_or_reordered += result.duplicated_or_reordered;
                    total.latencies.merge(&result.latencies);
                }
            }
            Err(e) => failures.push(e),
        }
    }
    if let Some(e) = failures.first() {
        anyhow::bail!(
            "{} of {threads} generator threads failed; the first: {e:#}",
            failures.len()
        );
    }
    let in_window = total.in_window;
    let lost = total.sent - total.received;
    let percentile = |p: f64| total.latencies.percentile(p) as f64 / 1000.0;
    let placement = match (urls.len(), args.same_node) {
        (1, _) => String::new(),
        (n, true) => format!(", {n} nodes, both clients of a pair on one"),
        (n, false) => format!(", {n} nodes, the clients of a pair on two"),
    };
    println!(
        "relay: {} pairs, {}-byte frames, window {} per direction, {:.1} s after {:.1} s of \
         warm-up, {threads} generator threads{placement}",
        args.pairs, args.size, args.window, elapsed, args.warmup
    );
    println!(
        "frames relayed: {} ({} per second)",
        thousands(in_window),
        thousands((in_window as f64 / elapsed) as u64)
    );
    println!(
        "latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        percentile(0.50),
        percentile(0.90),
        percentile(0.99),
        percentile(0.999),
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
    if !args.server_pid.is_empty() && !cpu("server CPU", cpu_before, cpu_after) {
        println!(
            "server CPU: unknown (cannot read /proc of {:?})",
            args.server_pid
        );
    }
    if let Some(pid) = args.redis_pid
        && !cpu("redis CPU", redis_before, redis_after)
    {
        println!("redis CPU: unknown (cannot read /proc/{pid})");
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

/// Appends `n` in decimal (the formatter's machinery costs more than the rest of a frame).
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends a signal frame's text to `out`: `size` bytes, or more if the numbers need it.
fn frame(out: &mut Vec<u8>, to: &str, seq: u64, sent_us: u64, size: usize) {
    let start = out.len();
    out.extend_from_slice(br#"{"type":"signal","to":""#);
    out.extend_from_slice(to.as_bytes());
    out.extend_from_slice(br#"","data":{"s":"#);
    push_decimal(out, seq);
    out.extend_from_slice(br#","t":"#);
    push_decimal(out, sent_us);
    out.extend_from_slice(br#","p":""#);
    let pad = size.saturating_sub(out.len() - start + 3);
    out.resize(out.len() + pad, b'x');
    out.extend_from_slice(br#""}}"#);
}

/// Tops up a direction's window: frames queued in the client's buffer, written by the caller.
fn fill(
    client: &mut Client,
    scratch: &mut Vec<u8>,
    to: &str,
    dir: &mut Direction,
    size: usize,
    window: u64,
    now_us: u64,
) -> u64 {
    let mut sent = 0;
    while dir.in_flight() < window {
        scratch.clear();
        frame(scratch, to, dir.next_seq, now_us, size);
        client.push_text(scratch);
        dir.next_seq += 1;
        sent += 1;
    }
    sent
}

/// `s` and `t` of a relayed bench frame, `{"type":"signal","from":"…","data":{"s":1,"t":2,…`.
fn quick_payload(frame: &[u8]) -> Option<Payload> {
    let rest = frame.strip_prefix(br#"{"type":"signal","from":""#)?;
    // Ids have no quotes: the id ends at the first one.
    let id_end = rest.iter().position(|&b| b == b'"')?;
    let rest = rest[id_end..].strip_prefix(br#"","data":{"s":"#)?;
    let (s, rest) = number(rest)?;
    let (t, _) = number(rest.strip_prefix(br#","t":"#)?)?;
    Some(Payload { s, t })
}

/// The decimal number at the start of `bytes`, and what follows it.
fn number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let value = bytes[..digits]
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some((value, &bytes[digits..]))
}

/// Checks every frame a client has read against its direction, recording the latencies of
/// frames sent since `measure_from_us` against `now_us`; returns how many signal frames arrived
/// and how many pings need a pong.
fn drain(
    reader: &mut Reader,
    dir: &mut Direction,
    (measure_from_us, now_us): (u64, u64),
    result: &mut PairResult,
) -> anyhow::Result<(u64, usize)> {
    let (mut received, mut pings) = (0, 0);
    while let Some(message) = reader.next_message().map_err(frame_error)? {
        let text = match message {
            Message::Text(text) => text.as_bytes(),
            Message::Ping(_) => {
                pings += 1;
                continue;
            }
            Message::Close(code) => anyhow::bail!("the server closed a client ({code:?})"),
            _ => continue,
        };
        // The generator shares the cores with the server, so it reads its own frames' two
        // numbers without a full parse; anything else (errors, presence) takes the parser.
        let payload = match quick_payload(text) {
            Some(payload) => payload,
            None => match ServerMessage::from_json(std::str::from_utf8(text)?)? {
                ServerMessage::Signal { data, .. } => serde_json::from_str(data.get())?,
                ServerMessage::Error { code, message, .. } => {
                    anyhow::bail!("server error: {code}: {message}")
                }
                _ => continue,
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
        received += 1;
        let latency = now_us.saturating_sub(payload.t);
        if payload.t >= measure_from_us {
            result.latencies.record(latency);
        }
    }
    Ok((received, pings))
}

async fn run_pair(
    (mut a, a_id): (Client, String),
    (mut b, b_id): (Client, String),
    size: usize,
    window: u64,
    epoch: Instant,
    (measure_from, deadline): (Instant, Instant),
) -> anyhow::Result<PairResult> {
    let measure_from_us = measure_from.duration_since(epoch).as_micros() as u64;
    let mut result = PairResult::default();
    let new = || Direction {
        next_seq: 0,
        received: 0,
        expected: 0,
    };
    let (mut a_to_b, mut b_to_a) = (new(), new());
    let mut scratch = Vec::with_capacity(size + 64);
    let mut in_window = 0;
    let drain_until = deadline + Duration::from_secs(5);
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    loop {
        let now = Instant::now();
        let sending = now < deadline;
        if sending {
            let now_us = now.duration_since(epoch).as_micros() as u64;
            result.sent += fill(
                &mut a,
                &mut scratch,
                &b_id,
                &mut a_to_b,
                size,
                window,
                now_us,
            );
            result.sent += fill(
                &mut b,
                &mut scratch,
                &a_id,
                &mut b_to_a,
                size,
                window,
                now_us,
            );
        } else if a_to_b.in_flight() == 0 && b_to_a.in_flight() == 0 || now >= drain_until {
            break;
        } else if timer.deadline() != drain_until {
            timer.as_mut().reset(drain_until);
        }
        a.flush().await?;
        b.flush().await?;
        let from_a = tokio::select! {
            read = a.read() => { read?; true }
            read = b.read() => { read?; false }
            () = &mut timer => continue,
        };
        // Take what the other client has too, so both windows refill in this round.
        if from_a {
            b.try_read()?;
        } else {
            a.try_read()?;
        }
        let now = Instant::now();
        let clock = (
            measure_from_us,
            now.duration_since(epoch).as_micros() as u64,
        );
        let (got_b, pings_a) = drain(&mut a.reader, &mut b_to_a, clock, &mut result)?;
        let (got_a, pings_b) = drain(&mut b.reader, &mut a_to_b, clock, &mut result)?;
        for _ in 0..pings_a {
            a.push_pong();
        }
        for _ in 0..pings_b {
            b.push_pong();
        }
        if now >= measure_from && now < deadline {
            in_window += got_a + got_b;
        }
    }
    result.in_window = in_window;
    a.close().await;
    b.close().await;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_exact_below_a_millisecond_and_close_above() {
        let mut histogram = Histogram::default();
        for us in [0, 1, 1023, 1024, 1500, 65_000, 10_000_000, u64::MAX >> 1] {
            let bucket = Histogram::bucket(us);
            let low = Histogram::low(bucket);
            assert!(low <= us && us - low <= us / 64, "{us}: {low}");
            assert!(Histogram::low(bucket + 1) > us, "{us}");
            histogram.record(us);
        }
        for us in 0..1000 {
            assert_eq!(Histogram::low(Histogram::bucket(us)), us);
        }
        let mut even = Histogram::default();
        for us in 1..=100 {
            even.record(us);
        }
        assert_eq!(even.percentile(0.5), 50);
        assert_eq!(even.percentile(0.99), 99);
        assert_eq!(even.percentile(1.0), 100);
        histogram.merge(&even);
        assert_eq!(histogram.total, 108);
        assert_eq!(histogram.percentile(1.0), u64::MAX >> 1);
    }

    #[test]
    fn frames_have_the_asked_size_and_their_numbers_read_back() {
        for n in [0, 7, 10, 99, 1234, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        let mut text = Vec::new();
        frame(&mut text, "01JD0000000000000000000000", 42, 1234, 200);
        let text = String::from_utf8(text).unwrap();
        assert_eq!(text.len(), 200);
        serde_json::from_str::<serde_json::Value>(&text).expect("a frame is JSON");
        // The server relays `data` byte for byte.
        let data = &text[text.find(r#""data":"#).unwrap() + 7..text.len() - 1];
        let relayed =
            format!(r#"{{"type":"signal","from":"01JC0000000000000000000000","data":{data}}}"#);
        let payload = quick_payload(relayed.as_bytes()).unwrap();
        assert_eq!((payload.s, payload.t), (42, 1234));
        assert!(quick_payload(br#"{"type":"peer-left","id":"x"}"#).is_none());
    }
}
