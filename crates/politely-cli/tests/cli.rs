//! Black-box tests of the `politely` binary (ripgrep's `TestCommand` style).

use std::process::{Command, Output};

fn politely(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_politely"))
        .args(args)
        .output()
        .expect("the politely binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The standard output of a command that succeeded.
fn succeeded(out: &Output) -> String {
    let text = stdout(out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The report of a `bench relay` that succeeded with no frame lost, duplicated or reordered.
fn clean_relay(out: &Output) -> String {
    let text = succeeded(out);
    assert!(
        text.contains(": lost 0, duplicated or reordered 0"),
        "{text}"
    );
    assert_eq!(text.lines().last(), Some("ok"), "{text}");
    text
}

#[test]
fn sim_runs_seeds_and_ends_with_the_tally() {
    let out = politely(&["sim", "--seeds", "12", "--jobs", "2"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.lines().last(), Some("12 passed, 0 failed"), "{text}");
    assert!(text.contains("runs: 12, converged: 12"), "{text}");
}

#[test]
fn glare_rounds_cost_three_offers_and_two_answers() {
    let out = politely(&["sim", "--glare", "--rounds", "2", "--seeds", "6"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("offers per glare round: 3.000, answers per glare round: 2.000"),
        "{text}"
    );
}

/// Determinism across processes: the same seed gives the same negotiation-level trace.
#[test]
fn a_seed_replays_identically_in_another_process() {
    let args = ["sim", "--seed", "31", "--peers", "3", "--trace"];
    let (a, b) = (politely(&args), politely(&args));
    assert!(a.status.success() && b.status.success());
    let trace = |o: &Output| {
        stdout(o)
            .lines()
            .take_while(|l| !l.starts_with("runs:"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (ta, tb) = (trace(&a), trace(&b));
    assert!(ta.iter().any(|l| l.starts_with("trace hash ")));
    assert!(ta.len() > 20, "a trace is printed");
    assert_eq!(ta, tb);
}

#[test]
fn bad_arguments_are_refused() {
    let out = politely(&["sim", "--peers", "9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--peers must be 2 to 6"));
}

/// `politely serve` on port 0, killed (and reaped) when dropped.
struct Served {
    child: std::process::Child,
    addr: String,
}

impl Served {
    fn start(args: &[&str], envs: &[(&str, &str)]) -> Served {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_politely"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
            .args(args)
            .envs(envs.iter().copied())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("politely serve starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Served { child, addr }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// A plain HTTP GET; returns the body.
    fn get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(&self.addr).unwrap();
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        tcp.read_to_string(&mut response).unwrap();
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_relays_without_loss_and_stops_on_sigterm() {
    let server = Served::start(&["--rate-limit", "0"], &[]);
    let pid = server.pid();
    let out = politely(&[
        "bench",
        "relay",
        "--url",
        &server.url(),
        "--pairs",
        "3",
        "--size",
        "300",
        "--seconds",
        "0.5",
        "--threads",
        "1",
        "--server-pid",
        &pid,
    ]);
    let text = clean_relay(&out);
    assert!(text.contains("server CPU: "), "{text}");

    let out = politely(&[
        "bench",
        "idle",
        "--url",
        &server.url(),
        "--connections",
        "40",
        "--hold",
        "0",
        "--server-pid",
        &pid,
    ]);
    let text = succeeded(&out);
    assert!(text.contains("idle: 40 connections joined"), "{text}");
    assert!(text.contains("40 still open"), "{text}");
    assert!(text.contains("KiB per idle connection"), "{text}");

    assert!(server.terminate().success(), "exit 0 after SIGTERM");
}

#[test]
fn serve_on_one_thread_relays_without_loss() {
    // `--threads 1` runs tokio's single-threaded scheduler, a different runtime from the default.
    let server = Served::start(&["--rate-limit", "0", "--threads", "1"], &[]);
    let out = politely(&[
        "bench",
        "relay",
        "--url",
        &server.url(),
        "--pairs",
        "4",
        "--size",
        "5000",
        "--seconds",
        "0.3",
        "--warmup",
        "0",
        "--threads",
        "2",
    ]);
    let text = clean_relay(&out);
    assert!(!text.contains("frames relayed: 0 "), "{text}");
    assert!(server.terminate().success(), "exit 0 after SIGTERM");
}

#[test]
fn the_default_rate_limit_refuses_a_benchmark_flood() {
    let server = Served::start(&[], &[]);
    let out = politely(&[
        "bench",
        "relay",
        "--url",
        &server.url(),
        "--pairs",
        "1",
        "--seconds",
        "1",
        "--window",
        "64",
    ]);
    assert!(!out.status.success());
    // Which error the pair reads first depends on timing (its own `rate-limited`, the 1008 close,
    // or `unknown-peer` once its partner was closed); the server's counters say what happened.
    let metrics = server.get("/metrics");
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"politely_errors_total{code="rate-limited"} "#))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(refused >= Some(1), "{metrics}");
}

#[test]
fn tokens_minted_by_the_cli_verify_against_the_same_secret() {
    let out = Command::new(env!("CARGO_BIN_EXE_politely"))
        .args([
            "token", "--room", "lobby", "--sub", "alice", "--name", "Alice", "--ttl", "10m",
        ])
        .env("POLITELY_SECRET", "s3cret")
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = stdout(&out).trim().to_owned();
    let secrets = [politely_server::Secret::new("s3cret")];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let user = politely_server::token::verify(&secrets, &token, "lobby", now)
        .unwrap()
        .unwrap();
    assert_eq!(
        (user.sub.as_str(), user.name.as_deref()),
        ("alice", Some("Alice"))
    );
    assert_eq!(
        politely_server::token::verify(&secrets, &token, "lobby", now + 601),
        Err(politely_server::token::TokenError::Expired)
    );
    // A server with the secret refuses the benchmark's token-less joins.
    let server = Served::start(&[], &[("POLITELY_SECRET", "s3cret")]);
    let out = politely(&[
        "bench",
        "idle",
        "--url",
        &server.url(),
        "--connections",
        "1",
        "--hold",
        "0",
    ]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("token-required"), "{}", stdout(&out));
}

#[test]
fn benchmarks_refuse_non_loopback_servers() {
    let out = politely(&["bench", "relay", "--url", "ws://192.168.1.10:8080"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only load servers on loopback"));
}

#[test]
fn demo_chats_and_resolves_every_glare_round() {
    let out = politely(&["demo", "--rounds", "6"]);
    let text = succeeded(&out);
    assert!(text.contains("bob      < hello bob"), "{text}");
    assert!(text.contains("alice    < hello alice"), "{text}");
    assert!(text.contains("rounds 6  glare seen"), "{text}");
    assert!(text.contains("failed 0"), "{text}");
    assert!(text.contains("final: 13 mids"), "{text}");
}

#[test]
fn native_benchmarks_report_and_fail_nothing() {
    let out = politely(&["bench", "connect", "--count", "3"]);
    let text = succeeded(&out);
    assert!(text.contains("join to first echoed message: n=3"), "{text}");
    // The connect by phase, from the engine's timeline.
    for phase in [
        "offer to answer applied",
        "to DTLS done (connected)",
        "message and its echo",
    ] {
        assert!(text.contains(phase), "{text}");
    }
    let json = std::env::temp_dir().join(format!("politely-glare-{}.json", std::process::id()));
    let out = politely(&[
        "bench",
        "glare",
        "--rounds",
        "20",
        "--json",
        json.to_str().unwrap(),
    ]);
    let text = succeeded(&out);
    assert!(
        text.contains("glare round, live connection: n=20"),
        "{text}"
    );
    assert!(
        text.contains("glare round, fresh connections: n=20"),
        "{text}"
    );
    assert!(text.contains("failures: 0"), "{text}");
    // `--json`: the samples behind those lines, for scripts/plot.mjs.
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    assert_eq!(written["bench"], "glare");
    let command = written["command"].as_str().unwrap();
    assert!(
        command.contains("bench glare --rounds 20 --json"),
        "{command}"
    );
    let series = written["series"].as_array().unwrap();
    let (phases, totals): (Vec<_>, Vec<_>) = series
        .iter()
        .partition(|s| s["phase"].as_bool() == Some(true));
    let names: Vec<&str> = totals.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "glare round, live connection",
            "glare round, fresh connections"
        ]
    );
    assert_eq!(phases.len(), 6, "the live round's phases");
    let samples = |s: &serde_json::Value| -> Vec<f64> {
        s["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    for s in &totals {
        let samples = samples(s);
        assert_eq!(samples.len(), 20, "{s}");
        // Each is a round's time in milliseconds: more than nothing, less than the 10 s a
        // round may take.
        assert!(samples.iter().all(|x| *x > 0.0 && *x < 10_000.0), "{s}");
    }
    // The phases split each live round: they add up to its time, sample by sample.
    let live = samples(totals[0]);
    for (i, total) in live.iter().enumerate() {
        let sum: f64 = phases.iter().map(|p| samples(p)[i]).sum();
        assert!(
            (sum - total).abs() < 0.01,
            "round {i}: phases {sum} ms, round {total} ms"
        );
    }
}

/// `politely serve`'s stderr from start to SIGTERM, with `envs` (and no other log setting).
fn serve_logs(args: &[&str], envs: &[(&str, &str)]) -> String {
    use std::io::{BufRead, Read};
    let mut child = Command::new(env!("CARGO_BIN_EXE_politely"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("POLITELY_LOG")
        .env_remove("RUST_LOG")
        .env_remove("POLITELY_LOG_FORMAT")
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("politely serve starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on "), "{line}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().unwrap().success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

#[test]
fn logs_follow_rust_log_and_come_as_json_when_asked() {
    // RUST_LOG is read when POLITELY_LOG is not set: `error` silences serve's `info` lines.
    let quiet = serve_logs(&[], &[("RUST_LOG", "error")]);
    assert_eq!(quiet, "", "RUST_LOG=error still logged");
    // POLITELY_LOG comes first, and `--log-format json` writes one object per line.
    let json = serve_logs(
        &["--log-format", "json"],
        &[("RUST_LOG", "error"), ("POLITELY_LOG", "info")],
    );
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "INFO"
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("politely serve"))),
        "{json}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "SIGTERM: shutting down"),
        "{json}"
    );
    // The default without either: serve's `info`, as text.
    let text = serve_logs(&[], &[]);
    assert!(
        text.contains(" INFO ") && text.contains("SIGTERM: shutting down"),
        "{text}"
    );
}

#[test]
fn the_sfu_benchmark_delivers_every_track_in_both_modes() {
    for gate in [None, Some("500")] {
        let mut args = vec![
            "bench",
            "sfu",
            "--clients",
            "4",
            "--rounds",
            "3",
            "--churn",
            "5",
            "--stream-secs",
            "1",
        ];
        args.extend(gate.iter().flat_map(|ms| ["--gate", ms]));
        let out = politely(&args);
        let text = succeeded(&out);
        // Every subscriber got every publish and every churn round's tracks, and the broadcast
        // reached every subscriber.
        assert!(text.contains("(n=9, 3 rounds"), "{text}");
        assert!(text.contains("churn: 5 rounds, 0 failed"), "{text}");
        assert!(text.contains("broadcast 1 -> 3: "), "{text}");
        assert!(!text.contains("received nothing"), "{text}");
    }
}

/// `politely join` with its stdin, stdout and stderr piped; lines arrive on channels.
struct Joined {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::sync::mpsc::Receiver<String>,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Joined {
    fn start(url: &str, room: &str) -> Joined {
        Joined::start_with(url, room, &[])
    }

    /// `politely join` with more options.
    fn start_with(url: &str, room: &str, options: &[&str]) -> Joined {
        use std::process::Stdio;
        let mut child = Command::new(env!("CARGO_BIN_EXE_politely"))
            .args(["join", url, room])
            .args(options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("politely join starts");
        let lines = |pipe: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        Joined {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
        }
    }

    fn say(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("input not ended");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next stdout line, within ten seconds.
    fn hear(&self) -> String {
        self.stdout
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a line on stdout")
    }

    /// Waits for a status line containing `what`; returns it.
    fn status(&self, what: &str) -> String {
        loop {
            let line = self
                .stderr
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no status line with {what:?}"));
            if line.contains(what) {
                return line;
            }
        }
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_join_processes_chat_both_ways_and_quit_cleanly() {
    let server = Served::start(&[], &[]);
    let mut a = Joined::start(&server.url(), "talk");
    let a_id = a
        .status("joined talk as ")
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    // Typed before anyone is there: held until a chat opens.
    a.say("hello from a");
    let mut b = Joined::start(&server.url(), "talk");
    let b_id = b
        .status("joined talk as ")
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(b.hear(), format!("{a_id}: hello from a"));
    b.status("channel chat open");
    b.say("hello from b");
    assert_eq!(a.hear(), format!("{b_id}: hello from b"));
    // Renegotiation from both sides at once, then more chat.
    a.say("/glare");
    b.say("/glare");
    a.say("/restart");
    b.say("after the glare");
    assert_eq!(a.hear(), format!("{b_id}: after the glare"));
    a.say("/quit");
    a.status("left");
    assert!(a.child.wait().unwrap().success());
    b.status(&format!("{a_id} left"));
    // End of input quits too.
    b.stdin = None;
    assert!(b.child.wait().unwrap().success());
}

/// A `redis-server` of the test's own, on a unix socket, without persistence.
struct RedisProcess {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl RedisProcess {
    fn start() -> RedisProcess {
        let dir = std::env::temp_dir().join(format!("politely-cli-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package; .ci/run installs it)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server made no socket"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        RedisProcess { child, dir }
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.dir.join("redis.sock").display())
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `serve --redis`: three server processes on one `redis-server` and a `join` through each.
/// They find each other, chat, and renegotiate at once across the nodes.
#[test]
fn three_serve_processes_share_a_room_through_redis() {
    let redis = RedisProcess::start();
    let nodes: Vec<Served> = ["a", "b", "c"]
        .iter()
        .map(|node| Served::start(&["--redis", &redis.url(), "--node-id", node], &[]))
        .collect();
    let mut peers = Vec::new();
    let mut ids = Vec::new();
    for node in &nodes {
        let peer = Joined::start(&node.url(), "spread");
        let id = peer
            .status("joined spread as ")
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned();
        ids.push(id);
        peers.push(peer);
    }
    // Both chats (each side opens one) between every two peers open, whichever nodes they
    // came through.
    for (i, peer) in peers.iter().enumerate() {
        let mut open = Vec::new();
        while open.len() < 4 {
            let line = peer.status(": channel chat open");
            let from = line
                .trim_start_matches("politely: ")
                .split(':')
                .next()
                .unwrap();
            if ids.iter().enumerate().any(|(j, id)| j != i && id == from) {
                open.push(from.to_owned());
            }
        }
    }
    peers[0].say("hello from a");
    for peer in &peers[1..] {
        assert_eq!(peer.hear(), format!("{}: hello from a", ids[0]));
    }
    for peer in &mut peers {
        peer.say("/glare");
    }
    peers[2].say("after the glare");
    let mut heard = vec![peers[0].hear(), peers[1].hear()];
    heard.sort();
    assert_eq!(heard, vec![format!("{}: after the glare", ids[2]); 2]);
    peers[1].say("/quit");
    peers[1].status("left");
    for peer in [&peers[0], &peers[2]] {
        peer.status(&format!("{} left", ids[1]));
    }
}

/// A load balancer on 127.0.0.1: each new TCP connection goes to the next backend that
/// accepts it, round robin (a dead one is skipped).
fn round_robin(backends: Vec<String>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut next = 0;
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let upstream = (0..backends.len()).find_map(|i| {
                let backend = &backends[(next + i) % backends.len()];
                std::net::TcpStream::connect(backend).ok().map(|s| (i, s))
            });
            let Some((i, upstream)) = upstream else {
                continue;
            };
            next = (next + i + 1) % backends.len();
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                (upstream, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    format!("ws://{addr}")
}

/// `bench chaos`: each fault in a short run of 20 pairs over three `serve --redis` processes
/// and a `redis-server` of the bench's own. The bench checks every frame against what was sent
/// and every client's view of its room against the truth, and exits 1 on any difference; with
/// the node killed, three pairs of native peers in glare rounds across nodes must settle every
/// round with the directions both asked for.
#[test]
fn chaos_runs_end_with_every_frame_accounted_for_and_every_view_true() {
    let base = ["bench", "chaos", "--pairs", "20", "--seconds", "1"];
    let run = |more: &[&str]| -> String {
        let args: Vec<&str> = base.iter().chain(more).copied().collect();
        succeeded(&politely(&args))
    };
    let text = run(&[
        "--fault",
        "node-kill",
        "--grace",
        "1",
        "--stay-away",
        "0.25",
        "--native-pairs",
        "3",
    ]);
    assert!(
        text.contains("resumed after the node was killed: "),
        "{text}"
    );
    assert!(text.contains("native pairs: 3, "), "{text}");
    // What a client wrote to the node as it died went again after its resume: no
    // renegotiation waited for the watchdog.
    assert!(text.contains("; watchdog firings 0;"), "{text}");
    // 20 pairs over 3 nodes put 14 clients on the first node; a quarter of them stay away.
    assert!(text.contains("heard leaving: 3,"), "{text}");
    assert!(
        text.contains("rooms left after every client left: 0"),
        "{text}"
    );
    let text = run(&["--fault", "redis-stop", "--stop-seconds", "3"]);
    assert!(text.contains("relaying after Redis came back"), "{text}");
    assert!(text.contains("duplicated or out of order: 0"), "{text}");
    for more in [
        &["--fault", "redis-kill", "--append-only"][..],
        &["--fault", "redis-kill"],
    ] {
        let text = run(more);
        assert!(text.contains("relaying after Redis came back"), "{text}");
        assert!(
            text.contains("clients whose view of their room is wrong at the end: 0"),
            "{text}"
        );
    }
}

/// A node killed (SIGKILL) under two `join` processes in glare rounds: the one it served
/// comes back through the load balancer on another node with its id; nobody saw it leave,
/// and they chat and renegotiate at once afterwards.
#[test]
fn a_node_killed_mid_call_and_its_client_resumes_on_another() {
    let redis = RedisProcess::start();
    let mut nodes: Vec<Served> = ["a", "b", "c"]
        .iter()
        .map(|node| Served::start(&["--redis", &redis.url(), "--node-id", node], &[]))
        .collect();
    let balancer = round_robin(nodes.iter().map(|n| n.addr.clone()).collect());
    // Round robin: the first joins node a, the second node b.
    let mut a = Joined::start(&balancer, "chaos");
    let a_id = a
        .status("joined chaos as ")
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    let mut b = Joined::start(&balancer, "chaos");
    let b_id = b
        .status("joined chaos as ")
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    a.say("hello");
    assert_eq!(b.hear(), format!("{a_id}: hello"));
    b.status("channel chat open");
    for _ in 0..5 {
        a.say("/glare");
        b.say("/glare");
    }
    let killed = std::time::Instant::now();
    let node_a = nodes.remove(0);
    drop(node_a); // SIGKILL
    let back = a.status("signaling back as ");
    let resumed_after = killed.elapsed();
    assert_eq!(
        back,
        format!("politely: signaling back as {a_id} (resumed: true)")
    );
    eprintln!("resumed {resumed_after:?} after the node was killed");
    for _ in 0..5 {
        a.say("/glare");
        b.say("/glare");
    }
    b.say("after");
    assert_eq!(a.hear(), format!("{b_id}: after"));
    a.say("and after");
    assert_eq!(b.hear(), format!("{a_id}: and after"));
    // B never heard A leave, nor its connection replaced.
    let said: Vec<String> = b.stderr.try_iter().collect();
    assert!(
        !said
            .iter()
            .any(|l| l.contains(" left") || l.contains("replaced")),
        "{said:?}"
    );
    // The renegotiations settled as both asked: each transceiver's negotiated direction is
    // its own direction with the other side's reversed.
    let (sa, sb) = (settled_state(&mut a), settled_state(&mut b));
    let ours = |state: &serde_json::Value| -> Vec<(String, String, String)> {
        let mut all: Vec<_> = state["transceivers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let text = |key: &str| t[key].as_str().unwrap_or("none").to_owned();
                (text("mid"), text("direction"), text("currentDirection"))
            })
            .collect();
        all.sort();
        all
    };
    // Nothing was lost on the way: no watchdog had to make up for a signal.
    assert_eq!(sa["notes"], serde_json::json!([]), "{sa}");
    assert_eq!(sb["notes"], serde_json::json!([]), "{sb}");
    let (ta, tb) = (ours(&sa), ours(&sb));
    assert_eq!(ta.len(), 4, "{sa}");
    let flags = |d: &str| {
        (
            d == "sendrecv" || d == "sendonly",
            d == "sendrecv" || d == "recvonly",
        )
    };
    let name = |(send, recv): (bool, bool)| match (send, recv) {
        (true, true) => "sendrecv",
        (true, false) => "sendonly",
        (false, true) => "recvonly",
        (false, false) => "inactive",
    };
    for ((mid, da, ca), (mid_b, db, cb)) in ta.iter().zip(&tb) {
        assert_eq!(mid, mid_b);
        let ((sa_, ra), (sb_, rb)) = (flags(da), flags(db));
        assert_eq!(ca, name((sa_ && rb, ra && sb_)), "mid {mid}: {sa} {sb}");
        assert_eq!(cb, name((sb_ && ra, rb && sa_)), "mid {mid}: {sa} {sb}");
    }
    a.say("/quit");
    a.status("left");
    // Now it does.
    let left = b.status(" left");
    assert_eq!(left, format!("politely: {a_id} left"));
}

/// `serve --tls-cert --tls-key` and `join wss://… --ca`: a certificate generated here, the
/// server terminating TLS, two clients that trust it chatting; one that does not is refused.
#[test]
fn join_over_wss_to_a_server_that_terminates_tls() {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let certificate = params.self_signed(&key).unwrap();
    let dir = std::env::temp_dir().join(format!("politely-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certificate.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let server = Served::start(
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
        ],
        &[],
    );
    let url = format!("wss://{}", server.addr);
    let ca = ["--ca", cert.to_str().unwrap()];
    let mut a = Joined::start_with(&url, "secure", &ca);
    a.status("joined secure as ");
    a.say("hello over tls");
    let mut b = Joined::start_with(&url, "secure", &ca);
    let a_id = b.status("channel chat open");
    assert!(a_id.contains("chat open"), "{a_id}");
    assert!(b.hear().ends_with(": hello over tls"));
    a.say("/quit");
    assert!(a.child.wait().unwrap().success());
    b.say("/quit");
    assert!(b.child.wait().unwrap().success());
    let refused = politely(&["join", &url, "secure"]);
    assert!(!refused.status.success());
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(text.contains("certificate"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[path = "../../politely/tests/util/coturn.rs"]
mod coturn;

/// `serve --turn-url --turn-secret` and `join --relay-only`: the server hands out coturn (run
/// here on loopback) with credentials made for each client, and two relay-only clients chat
/// through it; with coturn stopped, a relay-only client cannot start a connection at all.
#[test]
fn relay_only_clients_chat_through_the_turn_server_the_signaling_server_hands_out() {
    let mut turn = coturn::Coturn::start(&[]);
    let url = turn.url();
    let server = Served::start(
        &["--turn-url", &url, "--turn-ttl", "10m"],
        &[("POLITELY_TURN_SECRET", coturn::TURN_SECRET)],
    );
    let ws = format!("ws://{}", server.addr);
    let mut a = Joined::start_with(&ws, "relayed", &["--relay-only"]);
    a.status("joined relayed as ");
    a.say("hello through the relay");
    let mut b = Joined::start_with(&ws, "relayed", &["--relay-only"]);
    b.status("channel chat open");
    assert!(b.hear().ends_with(": hello through the relay"));
    a.say("/quit");
    assert!(a.child.wait().unwrap().success());
    b.say("/quit");
    assert!(b.child.wait().unwrap().success());
    turn.stop();
    let mut c = Joined::start_with(&ws, "relayed", &["--relay-only"]);
    c.status("joined relayed as ");
    let mut d = Joined::start_with(&ws, "relayed", &["--relay-only"]);
    // The connection with c gathers in its own task, after the join returns, and says why
    // it cannot start.
    d.status("joined relayed as ");
    let failed = d.status("the connection could not start");
    assert!(
        failed.contains("relay-only and no TURN server gave an allocation"),
        "{failed}"
    );
    d.say("/quit");
    assert!(d.child.wait().unwrap().success());
    c.say("/quit");
    assert!(c.child.wait().unwrap().success());
}

#[test]
fn a_script_is_the_same_for_a_seed_and_runs_in_the_simulator_as_the_model_says() {
    let a = succeeded(&politely(&["script", "--seed", "41", "--rounds", "6"]));
    assert_eq!(
        a,
        succeeded(&politely(&["script", "--seed", "41", "--rounds", "6"]))
    );
    let script: politely_sim::Script = serde_json::from_str(&a).expect("a script is JSON");
    assert_eq!((script.seed, script.rounds()), (41, 6));
    // A hand-written script, from a file: glare on a live connection, directions, restarts.
    let path = std::env::temp_dir().join(format!("politely-script-{}.json", std::process::id()));
    std::fs::write(
        &path,
        r#"{"seed":3,"polite":1,"steps":[
        {"round":0,"peer":0,"op":"createDataChannel","label":"c1"},
        {"round":0,"peer":0,"op":"addTransceiver","kind":"audio","direction":"sendrecv"},
        {"round":1,"peer":0,"op":"addTrack","kind":"video"},
        {"round":1,"peer":1,"op":"addTransceiver","kind":"audio","direction":"sendonly"},
        {"round":2,"peer":1,"op":"setDirection","index":0,"direction":"inactive"},
        {"round":2,"peer":0,"op":"restartIce"}]}"#,
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let outcome = |args: &[&str]| -> politely_sim::Outcome {
        serde_json::from_str(&succeeded(&politely(args))).expect("an outcome is JSON")
    };
    let sim = outcome(&["sim", "--script", file]);
    let model = outcome(&["sim", "--script", file, "--model"]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(model.differences(&sim), Vec::<String>::new(), "{sim:#?}");
    assert_eq!(sim.peers[1].transceivers.len(), 3);
    assert_eq!(
        politely(&["sim", "--script", "/nonexistent"]).status.code(),
        Some(2)
    );
}

/// `/state` of the connection toward the only peer, once it is settled: the end state. A
/// channel opens a few round trips after the connection does (the SCTP association and the
/// channel's open message come after DTLS), so settled includes no channel still connecting.
fn settled_state(joined: &mut Joined) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        joined.say("/state");
        let line = joined.status("politely: state {");
        joined.status("state end");
        let json = line.strip_prefix("politely: state ").unwrap();
        let state: serde_json::Value = serde_json::from_str(json).unwrap();
        let connecting = state["channels"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["readyState"] == "connecting"));
        if state["busy"] == false && state["connectionState"] == "connected" && !connecting {
            return state;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never settled: {state}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn join_makes_script_calls_and_shows_what_the_application_sees() {
    let server = Served::start(&[], &[]);
    let mut a = Joined::start_with(&server.url(), "scripted", &["--no-chat"]);
    a.status("joined scripted as ");
    let mut b = Joined::start_with(&server.url(), "scripted", &["--no-chat"]);
    b.status("joined scripted as ");
    a.status(" joined");
    a.say("/channel c1");
    a.status("act ok");
    a.say("/add-transceiver audio sendonly");
    a.status("act ok");
    b.say(r#"/act {"op":"addTrack","kind":"video"}"#);
    b.status("act ok");
    b.say("/direction 5 recvonly");
    assert!(b.status("act failed").contains("no transceiver 5"));
    b.say(r#"/act {"op":"stop"}"#);
    b.status("act failed");
    b.say("/add-track cat");
    b.status("act failed");
    let sa = settled_state(&mut a);
    let sb = settled_state(&mut b);
    for (s, polite) in [(&sa, true), (&sb, false)] {
        assert_eq!(s["polite"], polite, "{s}");
        assert_eq!(s["signalingState"], "stable");
        assert_eq!(
            s["channels"],
            serde_json::json!([{"label": "c1", "readyState": "open"}])
        );
    }
    let end = |s: &serde_json::Value| -> politely_sim::EndState {
        serde_json::from_value(s.clone()).expect("the end state's shape")
    };
    let ours = |s: &politely_sim::EndState, origin| {
        let t = s.transceivers.iter().find(|t| t.origin == origin).unwrap();
        (t.kind, t.direction, t.current_direction)
    };
    use politely_core::{Direction::*, MediaKind::*};
    use politely_sim::Maker;
    let (ea, eb) = (end(&sa), end(&sb));
    assert_eq!(
        ours(&ea, Maker::Local(0)),
        (Audio, SendOnly, Some(SendOnly))
    );
    assert_eq!(ours(&ea, Maker::Remote), (Video, RecvOnly, Some(RecvOnly)));
    assert_eq!(
        ours(&eb, Maker::Local(0)),
        (Video, SendRecv, Some(SendOnly))
    );
    assert_eq!(ours(&eb, Maker::Remote), (Audio, RecvOnly, Some(RecvOnly)));
    // Closed by b, the channel a made is closed at both ends.
    a.say("/close-channel c1");
    a.status("act ok");
    for joined in [&mut a, &mut b] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let s = settled_state(joined);
            if s["channels"][0]["readyState"] == "closed" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "c1 never closed: {s}");
        }
    }
}
