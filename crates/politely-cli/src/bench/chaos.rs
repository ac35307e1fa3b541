//! `politely bench chaos`: a cluster of `politely serve --redis` nodes (child processes, with a
//! `redis-server` of the bench's own on a unix socket), pairs of clients signalling each other
//! across nodes, and one fault in the middle of the run: a node killed, Redis stopped, or Redis
//! killed and started again (with or without its append-only file).
//!
//! Every signal carries its direction's number and the time it was sent. At the end the bench
//! checks what each client received against what its partner sent, and what each client
//! believes about its room against the truth, and reports how long clients took to come back.
//! A frame may be missing only for a reason the bench can name: its sender was told
//! `unavailable`, or it was written to a node that died before handing it to Redis, or (Redis
//! restarted without persistence) it was in Redis's memory when Redis died.

use crate::native::{Pair, change_of, ms, percentile};
use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use politely_proto::{ClientMessage, ErrorCode, ServerMessage};
use serde::Deserialize;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

#[derive(Args, Debug)]
pub(crate) struct ChaosArgs {
    /// What goes wrong in the middle of the run.
    #[arg(long, value_enum)]
    fault: Fault,
    /// Nodes (`politely serve --redis` processes).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=5))]
    nodes: u64,
    /// Pairs of clients, each pair in a room of its own with its two clients on different nodes.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pairs: u64,
    /// Seconds of signalling before the fault, and at least as long after it (at most 60).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Milliseconds between two signals of one client.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    interval_ms: u64,
    /// The nodes' resume grace period, in seconds.
    #[arg(long, default_value_t = 2.0)]
    grace: f64,
    /// With `--fault node-kill`: the share of the killed node's clients that never come back
    /// (they died with it); their partners must hear them leave, once, within the grace
    /// period plus 3 s.
    #[arg(long, default_value_t = 0.1)]
    stay_away: f64,
    /// With `--fault redis-stop`: how long Redis stays stopped, in seconds.
    #[arg(long, default_value_t = 3.0)]
    stop_seconds: f64,
    /// Redis writes an append-only file, so what it acknowledged survives its kill.
    #[arg(long)]
    append_only: bool,
    /// Pairs of native peers (full WebRTC connections) in glare rounds through a round-robin
    /// balancer in front of the nodes, each pair's peers on different nodes; every round
    /// must settle with both sides' directions as asked, through the fault.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=20))]
    native_pairs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Fault {
    /// The first node is killed (SIGKILL); its clients resume through the others.
    NodeKill,
    /// Redis is stopped (SIGSTOP) for `--stop-seconds`, then continued.
    RedisStop,
    /// Redis is killed (SIGKILL) and started again on the same socket and directory.
    RedisKill,
}

/// How long after the end of the run clients leave.
const LEAVE_AFTER: Duration = Duration::from_millis(300);

/// What a client saw, for the verdict.
#[derive(Default)]
struct Report {
    /// The number of the last signal it sent (they start at 1).
    sent: u64,
    /// The highest number received from its partner.
    highest: u64,
    /// Ranges of its partner's numbers that never arrived, below `highest`.
    gaps: Vec<(u64, u64)>,
    /// Signals that arrived twice or out of order.
    disorder: u64,
    /// For each connection it lost: the number of the last signal sent on it.
    losses: Vec<u64>,
    /// `unavailable` errors it was sent.
    unavailable: u64,
    /// `unknown-peer` errors it was sent (a signal that crossed its partner's leave).
    unknown_peer: u64,
    /// Signals it sent again after a resume, which the server had not taken.
    sent_again: u64,
    /// Since the fault: when each resume was welcomed.
    resumed: Vec<Duration>,
    /// Since the fault: when it heard its partner leave.
    partner_left: Vec<Duration>,
    /// Its partner is in its room, as it believes at the end.
    partner_present: bool,
    /// After the fault: when the first signal its partner sent after Redis came back arrived.
    relayed_after_back: Option<Duration>,
    /// It was chosen to die with its node and never came back.
    stayed_away: bool,
    /// Anything the protocol does not allow.
    faults: Vec<String>,
}

/// The run's shared clock and milestones.
struct Timeline {
    start: Instant,
    /// When the fault happened.
    fault: OnceLock<Instant>,
    /// When Redis was back (continued, or its restarted process listening).
    back: OnceLock<Instant>,
    /// When clients stop sending (set once every client is welcomed).
    stop: OnceLock<Instant>,
    /// When clients leave.
    end: OnceLock<Instant>,
}

impl Timeline {
    fn micros(&self, at: Instant) -> u64 {
        at.duration_since(self.start).as_micros() as u64
    }

    fn stopped(&self, now: Instant) -> bool {
        self.stop.get().is_some_and(|stop| now >= *stop)
    }

    fn ended(&self, now: Instant) -> bool {
        self.end.get().is_some_and(|end| now >= *end)
    }
}

/// The nodes' URLs and a round-robin pick over the ones that accept a connection.
struct Nodes {
    urls: Vec<String>,
    next: AtomicUsize,
}

type Socket = super::Socket;

impl Nodes {
    async fn connect_to(url: &str) -> anyhow::Result<Socket> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(ws)
    }

    /// The next node that accepts a connection, as a load balancer that skips dead nodes.
    async fn connect(&self) -> anyhow::Result<Socket> {
        for _ in 0..self.urls.len() {
            let i = self.next.fetch_add(1, Relaxed) % self.urls.len();
            if let Ok(ws) = Nodes::connect_to(&self.urls[i]).await {
                return Ok(ws);
            }
        }
        bail!("no node accepts a connection")
    }
}

#[derive(Deserialize)]
struct Data {
    n: u64,
    t: u64,
}

/// One client: joins `room` on node `first`, signals its partner every interval, and after a
/// lost connection resumes through any node (unless it is to stay away after the fault).
#[allow(clippy::too_many_arguments)]
async fn client(
    nodes: Arc<Nodes>,
    first: usize,
    room: String,
    interval: Duration,
    stay_away: bool,
    timeline: Arc<Timeline>,
    joined: tokio::sync::mpsc::Sender<()>,
) -> Report {
    let mut report = Report::default();
    let mut ws = match Nodes::connect_to(&nodes.urls[first]).await {
        Ok(ws) => ws,
        Err(e) => {
            report.faults.push(format!("connect: {e}"));
            return report;
        }
    };
    let join = ClientMessage::Join {
        room: room.as_str().into(),
        token: None,
        resume: None,
        sfu: false,
        peers: Vec::new(),
        received: None,
    };
    let _ = ws.send(Message::text(join.to_json())).await;
    let mut id = None;
    let mut token = String::new();
    let mut partner: Option<String> = None;
    let mut received = 0u64;
    // Frames written under the id since the welcome, and the last of them until a resume
    // says how many the server took.
    let mut written = 0u64;
    let mut unconfirmed: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut told_joined = false;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let lost = tokio::select! {
            _ = ticks.tick() => {
                let now = Instant::now();
                if timeline.ended(now) {
                    break;
                }
                let Some(to) = partner.as_deref().filter(|_| report.partner_present) else {
                    continue;
                };
                if timeline.stopped(now) {
                    continue;
                }
                report.sent += 1;
                let data = format!(r#"{{"n":{},"t":{}}}"#, report.sent, timeline.micros(now));
                let frame = format!(r#"{{"type":"signal","to":"{to}","data":{data}}}"#);
                written += 1;
                if unconfirmed.len() == 1024 {
                    unconfirmed.pop_front();
                }
                unconfirmed.push_back(frame.clone());
                ws.send(Message::text(frame)).await.is_err()
            }
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let Ok(frame) = ServerMessage::from_json(&text) else {
                        report.faults.push(format!("not a server frame: {text}"));
                        continue;
                    };
                    if frame.counts_as_received() {
                        received += 1;
                    }
                    match frame {
                        ServerMessage::Welcome { id: mine, peers, resume, .. } => {
                            id = Some(mine.into_owned());
                            token = resume.into_owned();
                            if let Some(peer) = peers.first() {
                                partner = Some(peer.id.to_string());
                                report.partner_present = true;
                            }
                            if !told_joined {
                                told_joined = true;
                                let _ = joined.send(()).await;
                            }
                        }
                        ServerMessage::PeerJoined { id: peer, .. } => {
                            if partner.as_deref().is_some_and(|p| p != peer) {
                                report.faults.push(format!("a second peer joined: {peer}"));
                            }
                            if report.partner_present {
                                report.faults.push(format!("{peer} joined twice"));
                            }
                            partner = Some(peer.into_owned());
                            report.partner_present = true;
                        }
                        ServerMessage::PeerLeft { id: peer } => {
                            if partner.as_deref() != Some(&*peer) || !report.partner_present {
                                report.faults.push(format!("{peer} left, not a present peer"));
                            }
                            report.partner_present = false;
                            let since = timeline.fault.get().map(|f| f.elapsed());
                            report.partner_left.push(since.unwrap_or_default());
                        }
                        ServerMessage::Signal { from, data } => {
                            if partner.as_deref() != Some(&*from) || !report.partner_present {
                                report.faults.push(format!("a signal from {from}, not a present peer"));
                            }
                            match serde_json::from_str::<Data>(data.get()) {
                                Ok(Data { n, t }) => {
                                    if n == report.highest + 1 {
                                        report.highest = n;
                                    } else if n > report.highest {
                                        report.gaps.push((report.highest + 1, n - 1));
                                        report.highest = n;
                                    } else {
                                        report.disorder += 1;
                                    }
                                    if report.relayed_after_back.is_none()
                                        && let Some(back) = timeline.back.get()
                                        && t >= timeline.micros(*back)
                                    {
                                        report.relayed_after_back = Some(back.elapsed());
                                    }
                                }
                                Err(e) => report.faults.push(format!("bad signal data: {e}")),
                            }
                        }
                        ServerMessage::Error { code: ErrorCode::Unavailable, .. } => {
                            report.unavailable += 1;
                        }
                        ServerMessage::Error { code: ErrorCode::UnknownPeer, .. } => {
                            report.unknown_peer += 1;
                        }
                        ServerMessage::Error { code, message, .. } => {
                            report.faults.push(format!("error {code}: {message}"));
                        }
                        _ => {}
                    }
                    false
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => true,
                Some(Ok(_)) => false,
            }
        };
        if !lost {
            continue;
        }
        report.losses.push(report.sent);
        if id.is_none() {
            report.faults.push("lost before its welcome".into());
            return report;
        }
        if stay_away && timeline.fault.get().is_some() {
            report.stayed_away = true;
            return report;
        }
        // Resume through any node, saying how many frames arrived; retried until the end.
        loop {
            if timeline.ended(Instant::now()) {
                report.faults.push("never resumed".into());
                return report;
            }
            match resume(&nodes, &room, &token, received).await {
                Ok((socket, welcome_id, new_token, peers, taken)) => {
                    if id.as_deref() != Some(&*welcome_id) {
                        report
                            .faults
                            .push(format!("resumed as {welcome_id}, not {id:?}"));
                    }
                    let listed = partner.as_ref().is_some_and(|p| peers.contains(p));
                    if listed != report.partner_present {
                        report
                            .faults
                            .push(format!("resumed with the peers {peers:?}"));
                    }
                    token = new_token;
                    ws = socket;
                    // What the server never took goes again (written to the node that died).
                    let Some(taken) = taken else {
                        report
                            .faults
                            .push("resumed without the count of frames taken".into());
                        return report;
                    };
                    let first = written + 1 - unconfirmed.len() as u64;
                    let again: Vec<String> = std::mem::take(&mut unconfirmed)
                        .into_iter()
                        .zip(first..)
                        .filter(|(_, n)| *n > taken)
                        .map(|(frame, _)| frame)
                        .collect();
                    written = taken;
                    report.sent_again += again.len() as u64;
                    for frame in again {
                        written += 1;
                        unconfirmed.push_back(frame.clone());
                        let _ = ws.send(Message::text(frame)).await;
                    }
                    let since = timeline.fault.get().map(|f| f.elapsed());
                    report.resumed.push(since.unwrap_or_default());
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    // Every client's view is taken at the same instant; then they all leave (their partners'
    // `peer-left` from here on is the end of the run, not part of it). The leave reads on
    // until the server's close so that it is not lost to a reset.
    let leave_at = timeline.end.get().copied().unwrap_or_else(Instant::now) + LEAVE_AFTER;
    let _ = tokio::time::timeout_at(leave_at, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    let _ = ws.send(Message::text(r#"{"type":"leave"}"#)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(message)) = ws.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    report
}

/// A resuming join: the socket, the id, the new token, the room's peers and how many of its
/// frames the server took, once welcomed with `resumed`.
async fn resume(
    nodes: &Nodes,
    room: &str,
    token: &str,
    received: u64,
) -> anyhow::Result<(Socket, String, String, Vec<String>, Option<u64>)> {
    let mut ws = nodes.connect().await?;
    let join = ClientMessage::Join {
        room: room.into(),
        token: None,
        resume: Some(token.into()),
        sfu: false,
        peers: Vec::new(),
        received: Some(received),
    };
    ws.send(Message::text(join.to_json())).await?;
    while let Some(message) = ws.next().await {
        let Message::Text(text) = message? else {
            continue;
        };
        match ServerMessage::from_json(&text)? {
            ServerMessage::Welcome {
                id,
                resume,
                resumed,
                peers,
                taken,
                ..
            } => {
                anyhow::ensure!(resumed, "welcomed as a new peer");
                let (id, resume) = (id.into_owned(), resume.into_owned());
                let peers = peers.iter().map(|p| p.id.to_string()).collect();
                return Ok((ws, id, resume, peers, taken));
            }
            ServerMessage::Error { code, message, .. } => bail!("{code}: {message}"),
            _ => continue,
        }
    }
    bail!("closed before the welcome")
}

/// What a native pair's rounds came to.
#[derive(Default)]
struct NativeReport {
    rounds: u64,
    glare: u64,
    times: Vec<Duration>,
    /// The longest round that ran while the fault happened, if one did.
    through_fault: Option<Duration>,
    watchdog_firings: u64,
    failure: Option<String>,
}

/// A TCP balancer on 127.0.0.1: each connection goes to the next node that accepts one.
async fn balancer(nodes: Vec<String>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut next = 0usize;
        while let Ok((mut client, _)) = listener.accept().await {
            let mut upstream = None;
            for _ in 0..nodes.len() {
                next += 1;
                if let Ok(tcp) = tokio::net::TcpStream::connect(&nodes[next % nodes.len()]).await {
                    upstream = Some(tcp);
                    break;
                }
            }
            let Some(mut upstream) = upstream else {
                continue;
            };
            tokio::spawn(async move {
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    Ok(format!("ws://{addr}"))
}

/// Glare rounds between two native peers until the clients stop.
async fn native_pair(pair: anyhow::Result<Pair>, timeline: Arc<Timeline>) -> NativeReport {
    let mut report = NativeReport::default();
    let mut pair = match pair {
        Ok(pair) => pair,
        Err(e) => {
            report.failure = Some(format!("join: {e:#}"));
            return report;
        }
    };
    while !timeline.stopped(Instant::now()) {
        let started = Instant::now();
        match pair.round(change_of(report.rounds, 4), false).await {
            Ok(round) => {
                report.rounds += 1;
                report.glare += u64::from(round.glare);
                report.times.push(round.elapsed);
                if timeline.fault.get().is_some_and(|f| *f >= started) {
                    let longest = report.through_fault.unwrap_or_default();
                    report.through_fault = Some(longest.max(round.elapsed));
                }
            }
            Err(e) => {
                report.failure = Some(format!("round {}: {e:#}", report.rounds + 1));
                break;
            }
        }
    }
    if let Ok((a, b)) = pair.stats().await {
        report.watchdog_firings = a.counters.watchdog_firings + b.counters.watchdog_firings;
    }
    pair.leave().await;
    report
}

/// A child process the bench started: killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    /// Sends `signal` (`STOP`, `CONT`) with kill(1).
    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.0.id().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} failed");
        Ok(())
    }
}

/// `redis-server` on a unix socket in `dir`, and a watcher that kills it if the bench's
/// process is gone (killed by a signal, so no destructor ran).
fn spawn_redis(dir: &Path, append_only: bool) -> anyhow::Result<Process> {
    let socket = dir.join("redis.sock");
    let _ = std::fs::remove_file(&socket);
    let child = Command::new("redis-server")
        .args(["--port", "0", "--save", ""])
        .args(["--appendonly", if append_only { "yes" } else { "no" }])
        .arg("--unixsocket")
        .arg(&socket)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting redis-server (Debian's redis-server package)")?;
    let redis = Process(child);
    Command::new("sh")
        .arg("-c")
        .arg("while kill -0 $0 2>/dev/null && kill -0 $1 2>/dev/null; do sleep 0.2; done; kill -9 $1 2>/dev/null")
        .arg(std::process::id().to_string())
        .arg(redis.0.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "redis-server made no socket"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(redis)
}

/// `politely serve --redis` on 127.0.0.1:0; its process and address.
fn spawn_node(redis_url: &str, name: &str, grace: f64) -> anyhow::Result<(Process, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["serve", "--listen", "127.0.0.1:0", "--redis", redis_url])
        .args(["--node-id", name, "--rate-limit", "0", "--log", "error"])
        .args(["--resume-grace", &format!("{}ms", (grace * 1000.0) as u64)])
        .args(["--exit-with-parent", &std::process::id().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting politely serve --redis")?;
    let stdout = child.stdout.take().context("the node's stdout")?;
    let process = Process(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected first line from a node: {line:?}"))?
        .to_owned();
    Ok((process, addr))
}

/// A temporary directory of the bench's own, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn run(args: &ChaosArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.seconds > 0.0 && args.seconds <= 60.0,
        "--seconds is from 0 to 60"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.stay_away),
        "--stay-away is a share, 0 to 1"
    );
    anyhow::ensure!(
        args.grace > 0.0
            && args.grace <= 60.0
            && args.stop_seconds > 0.0
            && args.stop_seconds <= 30.0,
        "--grace is at most 60 s and --stop-seconds at most 30 s"
    );
    let dir = TempDir(std::env::temp_dir().join(format!("politely-chaos-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let mut redis = spawn_redis(&dir.0, args.append_only)?;
    let redis_url = format!("redis+unix://{}", dir.0.join("redis.sock").display());
    let mut nodes = Vec::new();
    for i in 0..args.nodes {
        nodes.push(spawn_node(&redis_url, &format!("chaos-{i}"), args.grace)?);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench(args, &dir.0, &mut redis, &mut nodes))
}

async fn bench(
    args: &ChaosArgs,
    dir: &Path,
    redis: &mut Process,
    nodes: &mut [(Process, String)],
) -> anyhow::Result<ExitCode> {
    let urls: Vec<String> = nodes
        .iter()
        .map(|(_, addr)| format!("ws://{addr}{}", politely_proto::WS_PATH))
        .collect();
    let shared = Arc::new(Nodes {
        urls: urls.clone(),
        next: AtomicUsize::new(0),
    });
    let seconds = Duration::from_secs_f64(args.seconds);
    let grace = Duration::from_secs_f64(args.grace);
    let after = match args.fault {
        // Long enough for the partners of clients that stay away to hear them leave.
        Fault::NodeKill => seconds.max(grace + Duration::from_millis(3500)),
        Fault::RedisStop => seconds + Duration::from_secs_f64(args.stop_seconds),
        Fault::RedisKill => seconds,
    };
    // Clients join first; the clock for the run starts once every one is welcomed.
    let n = nodes.len();
    let count = args.pairs as usize * 2;
    let (joined_tx, mut joined_rx) = tokio::sync::mpsc::channel(count);
    let start = Instant::now();
    let join_time = Duration::from_secs(10);
    let timeline = Arc::new(Timeline {
        start,
        fault: OnceLock::new(),
        back: OnceLock::new(),
        stop: OnceLock::new(),
        end: OnceLock::new(),
    });
    // Native pairs first, one after another, so that the balancer puts each pair's two peers
    // on consecutive nodes.
    let mut natives = Vec::new();
    if args.native_pairs > 0 {
        let through = balancer(nodes.iter().map(|(_, addr)| addr.clone()).collect()).await?;
        for pair in 0..args.native_pairs {
            let room = format!("chaos-native-{}-{pair}", std::process::id());
            let joined = Pair::join(&through, &room).await;
            natives.push(tokio::spawn(native_pair(joined, timeline.clone())));
        }
    }
    let mut on_first_node = 0usize;
    let mut tasks = Vec::new();
    for pair in 0..args.pairs as usize {
        let room = format!("chaos-{}-{pair}", std::process::id());
        for side in 0..2 {
            let first = (2 * pair + side) % n;
            let mut stay_away = false;
            if first == 0 {
                let share = args.stay_away;
                stay_away = ((on_first_node + 1) as f64 * share).floor()
                    > (on_first_node as f64 * share).floor();
                on_first_node += 1;
            }
            let stay_away = stay_away && args.fault == Fault::NodeKill;
            tasks.push(tokio::spawn(client(
                shared.clone(),
                first,
                room.clone(),
                Duration::from_millis(args.interval_ms),
                stay_away,
                timeline.clone(),
                joined_tx.clone(),
            )));
            // The first of a pair is in the room before the second joins.
            if side == 0 {
                tokio::time::timeout(join_time, joined_rx.recv())
                    .await
                    .context("a client was not welcomed within 10 s")?;
            }
        }
        tokio::time::timeout(join_time, joined_rx.recv())
            .await
            .context("a client was not welcomed within 10 s")?;
    }
    let joined_in = start.elapsed();
    let stop = Instant::now() + seconds + after;
    let _ = timeline.stop.set(stop);
    let _ = timeline.end.set(stop + Duration::from_secs(1));
    tokio::time::sleep(seconds).await;
    let fault_at = Instant::now();
    let _ = timeline.fault.set(fault_at);
    match args.fault {
        Fault::NodeKill => {
            let node = &mut nodes[0].0;
            node.0.kill()?;
            node.0.wait()?;
        }
        Fault::RedisStop => {
            redis.signal("STOP")?;
            tokio::time::sleep(Duration::from_secs_f64(args.stop_seconds)).await;
            redis.signal("CONT")?;
            let _ = timeline.back.set(Instant::now());
        }
        Fault::RedisKill => {
            redis.0.kill()?;
            redis.0.wait()?;
            *redis = spawn_redis(dir, args.append_only)?;
            let _ = timeline.back.set(Instant::now());
        }
    }
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(task.await?);
    }
    let mut verdict = judge(args, &reports, &timeline);
    let mut native = Vec::new();
    for task in natives {
        native.push(task.await?);
    }
    judge_native(&mut verdict, &native);
    // Ghost presence: with every client gone, no room is left (the ones that stayed away
    // were removed after their grace period).
    let live = if args.fault == Fault::NodeKill {
        &nodes[1].1
    } else {
        &nodes[0].1
    };
    let rooms = rooms_left(live).await;
    println!(
        "chaos {:?}: {} nodes, {} pairs, {} clients welcomed in {:.0} ms, {:.1} s of signals before the fault and {:.1} s after",
        args.fault,
        n,
        args.pairs,
        count,
        ms(joined_in),
        seconds.as_secs_f64(),
        after.as_secs_f64()
    );
    let mut failed = verdict.print();
    match rooms {
        Some(0) => println!("rooms left after every client left: 0"),
        other => {
            println!("FAIL rooms left after every client left: {other:?} (politely_cluster_rooms)");
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `politely_cluster_rooms` of the node at `addr` once it reaches 0, or its last value after
/// 3 s.
async fn rooms_left(addr: &str) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let rooms = cluster_rooms(addr).await;
        if rooms == Some(0) || Instant::now() >= deadline {
            return rooms;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn cluster_rooms(addr: &str) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.ok()?;
    let mut body = String::new();
    tcp.read_to_string(&mut body).await.ok()?;
    body.lines()
        .find_map(|line| line.strip_prefix("politely_cluster_rooms "))?
        .trim()
        .parse()
        .ok()
}

/// Native pairs: every round settled as both asked, none failed.
fn judge_native(verdict: &mut Verdict, pairs: &[NativeReport]) {
    if pairs.is_empty() {
        return;
    }
    let mut times: Vec<Duration> = pairs.iter().flat_map(|p| p.times.iter().copied()).collect();
    times.sort();
    let rounds: u64 = pairs.iter().map(|p| p.rounds).sum();
    let glare: u64 = pairs.iter().map(|p| p.glare).sum();
    let watchdog: u64 = pairs.iter().map(|p| p.watchdog_firings).sum();
    let through = pairs.iter().filter_map(|p| p.through_fault).max();
    let failures: Vec<&String> = pairs.iter().filter_map(|p| p.failure.as_ref()).collect();
    verdict.check(
        failures.is_empty() && pairs.iter().all(|p| p.rounds > 0),
        format!(
            "native pairs: {}, glare rounds {rounds} ({glare} collided), p50 {:.1} ms, max {:.1} ms; longest round through the fault {}; watchdog firings {watchdog}; failed {}",
            pairs.len(),
            ms(percentile(&times, 0.5)),
            ms(times.last().copied().unwrap_or_default()),
            through.map_or("none".to_owned(), |d| format!("{:.1} ms", ms(d))),
            failures.len(),
        ),
    );
    for failure in failures.iter().take(5) {
        verdict.failures.push(format!("native pair: {failure}"));
    }
}

#[derive(Default)]
struct Verdict {
    failures: Vec<String>,
    lines: Vec<String>,
}

impl Verdict {
    fn check(&mut self, ok: bool, line: String) {
        if ok {
            self.lines.push(line);
        } else {
            self.failures.push(line);
        }
    }

    /// Prints the figures and failures; whether any failed.
    fn print(&self) -> bool {
        for line in &self.lines {
            println!("{line}");
        }
        for line in &self.failures {
            println!("FAIL {line}");
        }
        !self.failures.is_empty()
    }
}

fn judge(args: &ChaosArgs, reports: &[Report], timeline: &Timeline) -> Verdict {
    let mut verdict = Verdict::default();
    let grace = Duration::from_secs_f64(args.grace);
    let (mut missing_told, mut missing_dead_node, mut unexplained, mut told) = (0, 0, 0, 0);
    let (mut died_with_node, mut sent_again) = (0, 0);
    let mut disorder = 0;
    let mut sent = 0;
    let mut faults = Vec::new();
    let mut resumes = Vec::new();
    let mut not_resumed = 0;
    let mut left_times = Vec::new();
    let mut ghosts = 0;
    let mut after_back = Vec::new();
    let mut never_after_back = 0;
    let mut details = Vec::new();
    for (i, report) in reports.iter().enumerate() {
        let partner = &reports[i ^ 1];
        for fault in &report.faults {
            faults.push(format!("client {i}: {fault}"));
        }
        sent += report.sent;
        sent_again += report.sent_again;
        disorder += report.disorder;
        // Only a partner that left may be unknown.
        if report.unknown_peer > 0 && !partner.stayed_away {
            faults.push(format!(
                "client {i}: {} signals refused as to an unknown peer",
                report.unknown_peer
            ));
        }
        told += partner.unavailable;
        // What the partner sent and this client never got, each range with its reason.
        let mut gaps = report.gaps.clone();
        // (What came after a client that stayed away died is nobody's.)
        if partner.sent > report.highest && !report.stayed_away {
            gaps.push((report.highest + 1, partner.sent));
        }
        let mut unexplained_here = 0;
        for (low, high) in gaps {
            let len = high - low + 1;
            if args.fault == Fault::NodeKill && partner.losses.contains(&high) {
                // The tail of what the partner wrote to the node that died: gone with it if
                // the partner never came back; otherwise it should have been sent again.
                if partner.stayed_away {
                    died_with_node += len;
                } else {
                    missing_dead_node += len;
                }
            } else {
                unexplained_here += len;
            }
        }
        // Frames refused with `unavailable` may still have been relayed (Redis ran the script
        // after the node stopped waiting for it), so they bound the rest from above.
        if unexplained_here > partner.unavailable && details.len() < 5 {
            details.push(format!(
                "client {i} missing {unexplained_here} of its partner's: gaps {:?}, highest {}; the partner sent {}, lost connections after {:?}, told unavailable {}",
                report.gaps, report.highest, partner.sent, partner.losses, partner.unavailable
            ));
        }
        if unexplained_here <= partner.unavailable {
            missing_told += unexplained_here;
        } else {
            missing_told += partner.unavailable;
            unexplained += unexplained_here - partner.unavailable;
        }
        if report.stayed_away {
            continue;
        }
        if args.fault == Fault::NodeKill && !report.losses.is_empty() {
            match report.resumed.first() {
                Some(at) => resumes.push(*at),
                None => not_resumed += 1,
            }
        }
        // Presence: the partner is there unless it stayed away, then it left once.
        let expected_left = usize::from(partner.stayed_away);
        if report.partner_present == partner.stayed_away
            || report.partner_left.len() != expected_left
        {
            ghosts += 1;
            faults.push(format!(
                "client {i}: its partner {} present at the end, and left {} times",
                if report.partner_present {
                    "is"
                } else {
                    "is not"
                },
                report.partner_left.len()
            ));
        }
        left_times.extend(report.partner_left.iter().copied());
        if timeline.back.get().is_some() {
            match report.relayed_after_back {
                Some(at) => after_back.push(at),
                None => never_after_back += 1,
            }
        }
    }
    verdict.check(
        faults.is_empty(),
        format!("frames the protocol does not allow: {}", faults.len()),
    );
    for fault in faults.iter().take(10) {
        verdict.failures.push(fault.clone());
    }
    verdict.check(
        disorder == 0,
        format!("signals sent {sent}; duplicated or out of order: {disorder}"),
    );
    let lost_with_redis = args.fault == Fault::RedisKill && !args.append_only;
    if !lost_with_redis {
        verdict.failures.extend(details);
    }
    verdict.check(
        (unexplained == 0 || lost_with_redis) && missing_dead_node == 0,
        format!(
            "missing: {missing_told} of the {told} refused as unavailable, {died_with_node} sent by clients that died with their node, {missing_dead_node} written to the dead node by clients that came back (after a resume they send again what the server never took: {sent_again}), {unexplained} with no such reason{}",
            if lost_with_redis {
                " (lost with Redis's data: it ran without persistence)"
            } else {
                ""
            }
        ),
    );
    if args.fault == Fault::NodeKill {
        resumes.sort();
        let within = resumes
            .iter()
            .filter(|at| **at <= Duration::from_millis(1500))
            .count();
        let total = resumes.len() + not_resumed;
        verdict.check(
            not_resumed == 0,
            format!(
                "resumed after the node was killed: {} of {total}, {within} within 1.5 s; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                resumes.len(),
                ms(percentile(&resumes, 0.5)),
                ms(percentile(&resumes, 0.99)),
                ms(resumes.last().copied().unwrap_or_default()),
            ),
        );
        left_times.sort();
        let late = left_times
            .iter()
            .filter(|at| **at > grace + Duration::from_secs(3))
            .count();
        // A figure, not a check: how late is the machine's to decide.
        verdict.lines.push(format!(
                "peers that stayed away, heard leaving: {}, after {:.0}-{:.0} ms ({late} later than the grace period plus 3 s)",
                left_times.len(),
                ms(left_times.first().copied().unwrap_or_default()),
                ms(left_times.last().copied().unwrap_or_default()),
            ));
    }
    verdict.check(
        ghosts == 0,
        format!("clients whose view of their room is wrong at the end: {ghosts}"),
    );
    if timeline.back.get().is_some() {
        after_back.sort();
        verdict.check(
            never_after_back == 0,
            format!(
                "relaying after Redis came back: every direction within {:.0} ms (p50 {:.0} ms); {never_after_back} never",
                ms(after_back.last().copied().unwrap_or_default()),
                ms(percentile(&after_back, 0.5)),
            ),
        );
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ChaosArgs,
    }

    fn args(fault: &str) -> ChaosArgs {
        Cli::parse_from(["chaos", "--fault", fault]).args
    }

    fn timeline() -> Timeline {
        Timeline {
            start: Instant::now(),
            fault: OnceLock::new(),
            back: OnceLock::new(),
            stop: OnceLock::new(),
            end: OnceLock::new(),
        }
    }

    /// Two clients that each sent 10 and received all 10 of the other's.
    fn pair() -> Vec<Report> {
        (0..2)
            .map(|_| Report {
                sent: 10,
                highest: 10,
                partner_present: true,
                ..Report::default()
            })
            .collect()
    }

    fn failures(fault: &str, reports: &[Report]) -> Vec<String> {
        judge(&args(fault), reports, &timeline()).failures
    }

    fn fails(fault: &str, reports: &[Report]) -> bool {
        !failures(fault, reports).is_empty()
    }

    #[test]
    fn a_clean_run_passes_and_each_kind_of_wrong_fails() {
        assert_eq!(failures("redis-stop", &pair()), Vec::<String>::new());
        // A frame missing from the middle with no reason.
        let mut reports = pair();
        reports[1].gaps.push((4, 4));
        assert!(fails("redis-stop", &reports));
        // ... unless its sender was told `unavailable`.
        reports[0].unavailable = 1;
        assert_eq!(failures("redis-stop", &reports), Vec::<String>::new());
        // The tail of what a client wrote to a node that died: gone with a client that never
        // came back, but one that resumed sends it again.
        let mut reports = pair();
        reports[1].highest = 7;
        assert!(fails("node-kill", &reports));
        reports[0].losses.push(10);
        reports[0].stayed_away = true;
        reports[1].partner_present = false;
        reports[1].partner_left.push(Duration::from_secs(3));
        assert_eq!(failures("node-kill", &reports), Vec::<String>::new());
        reports[0].stayed_away = false;
        reports[1].partner_present = true;
        reports[1].partner_left.clear();
        reports[0].resumed.push(Duration::from_millis(5));
        assert!(fails("node-kill", &reports));
        reports[1].highest = 10;
        assert_eq!(failures("node-kill", &reports), Vec::<String>::new());
        // Duplicates, a wrong view of the room, a frame the protocol does not allow.
        let mut reports = pair();
        reports[0].disorder = 1;
        assert!(fails("redis-kill", &reports));
        let mut reports = pair();
        reports[0].partner_present = false;
        assert!(fails("redis-kill", &reports));
        let mut reports = pair();
        reports[1].faults.push("a second peer joined".into());
        assert!(fails("redis-kill", &reports));
        // A signal refused as to an unknown peer, whose partner is still there.
        let mut reports = pair();
        reports[0].unknown_peer = 1;
        assert!(fails("redis-stop", &reports));
        // A peer that stayed away must have been heard leaving, once.
        let mut reports = pair();
        reports[0].stayed_away = true;
        reports[0].losses.push(10);
        assert!(fails("node-kill", &reports));
        reports[1].partner_present = false;
        reports[1].partner_left.push(Duration::from_secs(3));
        assert_eq!(failures("node-kill", &reports), Vec::<String>::new());
    }
}
