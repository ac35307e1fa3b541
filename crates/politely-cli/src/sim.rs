//! `politely sim`: many seeded scenarios, a summary, and a replay command per failure.

use clap::Args;
use politely_sim::{Scenario, Sim, Verdict};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub(crate) struct SimArgs {
    /// How many seeds to run: seeds 0..N, or S..S+N with --seed [default: 1000, or 1 with
    /// --seed].
    #[arg(long)]
    seeds: Option<u64>,
    /// Peers per scenario, 2 to 6; by default seeds cycle through 2, 3 and 4.
    #[arg(long)]
    peers: Option<usize>,
    /// Run from this seed; with --seeds 1 (the default when --seed is given) it replays one seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override the random latency: both signaling and packets take this long, one way.
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Two-peer glare scenarios instead of random ones: both sides add a transceiver at the
    /// same instant, on the first negotiation and then on the live connection.
    #[arg(long)]
    glare: bool,
    /// Glare rounds per glare scenario (the first is on the first negotiation).
    #[arg(long, default_value_t = 2, requires = "glare")]
    rounds: u32,
    /// The negotiation gate: in every pair the polite end asks for a lease of this many
    /// milliseconds before it renegotiates, and offers under it.
    #[arg(long, value_name = "MS")]
    gate: Option<u64>,
    /// SFU stars instead of meshes: one room and 3 to 8 clients joining, leaving,
    /// publishing, unpublishing, subscribing and reloading at random (with --gate, every client
    /// asks before it renegotiates).
    #[arg(long, conflicts_with_all = ["peers", "glare", "latency_ms"])]
    star: bool,
    /// Print the negotiation-level trace of each run (use with --seed).
    #[arg(long)]
    trace: bool,
    /// Worker threads (runs are independent and each is deterministic).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Run one action script (JSON, `-` for stdin) with two engines and print both peers'
    /// end states as JSON (see `politely script`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["seeds", "seed", "peers", "glare", "trace"])]
    script: Option<PathBuf>,
    /// With --script: print what W3C webrtc-pc's rules make of the script (a model, no
    /// engines) instead of running it.
    #[arg(long, requires = "script")]
    model: bool,
}

struct Outcome {
    seed: u64,
    peers: usize,
    verdict: Verdict,
    wall: Duration,
    trace: Vec<String>,
}

fn run_one(args: &SimArgs, seed: u64) -> Outcome {
    let (mut config, scenario) = if args.glare {
        Scenario::glare(seed, args.rounds)
    } else {
        let peers = args.peers.unwrap_or(2 + (seed % 3) as usize);
        Scenario::random(seed, peers)
    };
    if let Some(ms) = args.latency_ms {
        config.signal_latency = Duration::from_millis(ms);
        config.packet_latency = Duration::from_millis(ms);
    }
    config.gate = args.gate.map(Duration::from_millis);
    config.trace = args.trace;
    let peers = config.peers;
    let start = Instant::now();
    let mut sim = Sim::with_scenario(config, &scenario);
    let verdict = sim.run();
    let wall = start.elapsed();
    let trace = if args.trace {
        sim.trace().to_vec()
    } else {
        Vec::new()
    };
    Outcome {
        seed,
        peers,
        verdict,
        wall,
        trace,
    }
}

pub(crate) fn run(args: &SimArgs) -> anyhow::Result<ExitCode> {
    // Silent unless asked: a failing seed is replayed with RUST_LOG to read what happened.
    if let Ok(filter) = std::env::var("RUST_LOG") {
        crate::init_logs(&filter, crate::LogFormat::Text)?;
    }
    if let Some(path) = &args.script {
        return crate::script::run_in_sim(path, args.model);
    }
    if args.star {
        return Ok(run_stars(args));
    }
    if let Some(p) = args.peers {
        anyhow::ensure!((2..=6).contains(&p), "--peers must be 2 to 6");
    }
    let first = args.seed.unwrap_or(0);
    let count = args
        .seeds
        .unwrap_or(if args.seed.is_some() { 1 } else { 1000 });
    let next = Arc::new(AtomicU64::new(0));
    let outcomes = Arc::new(Mutex::new(Vec::with_capacity(count as usize)));
    let started = Instant::now();
    let progress = Progress::new(count);
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.max(1) {
            let (next, outcomes, progress) = (next.clone(), outcomes.clone(), &progress);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let outcome = run_one(args, first + i);
                    progress.tick(outcome.verdict.passed());
                    outcomes
                        .lock()
                        .expect("invariant: no worker panics while holding the lock")
                        .push(outcome);
                }
            });
        }
    });
    progress.finish();
    let wall = started.elapsed();
    let mut outcomes = std::mem::take(
        &mut *outcomes
            .lock()
            .expect("invariant: all workers have finished"),
    );
    outcomes.sort_by_key(|o| o.seed);
    report(args, &outcomes, wall);
    let failed = outcomes.iter().filter(|o| !o.verdict.passed()).count();
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn report(args: &SimArgs, outcomes: &[Outcome], wall: Duration) {
    let mut out = std::io::stdout().lock();
    for o in outcomes {
        for line in &o.trace {
            let _ = writeln!(out, "{line}");
        }
        if args.trace {
            let _ = writeln!(out, "trace hash {:016x}", o.verdict.trace_hash);
        }
    }
    let runs = outcomes.len();
    let passed = outcomes.iter().filter(|o| o.verdict.passed()).count();
    let failed = runs - passed;
    let converged = outcomes
        .iter()
        .filter(|o| o.verdict.stats.converged_at.is_some())
        .count();
    let _ = writeln!(out, "runs: {runs}, converged: {converged}");
    for o in outcomes.iter().filter(|o| !o.verdict.passed()) {
        let _ = writeln!(out, "FAILED seed {} ({} peers):", o.seed, o.peers);
        for f in &o.verdict.failures {
            let _ = writeln!(out, "  {f}");
        }
        let _ = writeln!(out, "  replay: {}", replay_command(args, o));
    }
    let offers: u64 = outcomes.iter().map(|o| o.verdict.stats.offers).sum();
    let answers: u64 = outcomes.iter().map(|o| o.verdict.stats.answers).sum();
    let collisions: u64 = outcomes.iter().map(|o| o.verdict.stats.collisions).sum();
    let watchdog: u64 = outcomes
        .iter()
        .map(|o| o.verdict.stats.watchdog_firings)
        .sum();
    let _ = writeln!(
        out,
        "offers: {offers}, answers: {answers}, collisions: {collisions}, watchdog firings: {watchdog}"
    );
    if args.gate.is_some() {
        let sum = |f: fn(&Outcome) -> u64| outcomes.iter().map(f).sum::<u64>();
        let _ = writeln!(
            out,
            "gate: {} lease requests, {} granted, {} used, {} expired, {} told to wait",
            sum(|o| o.verdict.stats.lease_requests),
            sum(|o| o.verdict.stats.leases_granted),
            sum(|o| o.verdict.stats.leases_used),
            sum(|o| o.verdict.stats.leases_expired),
            sum(|o| o.verdict.stats.requests_deferred),
        );
    }
    if args.glare && runs > 0 {
        // The pattern's minimum is 3 offers and 2 answers a round.
        let rounds = u64::from(args.rounds) * runs as u64;
        let _ = writeln!(
            out,
            "glare rounds: {rounds}, offers per glare round: {:.3}, answers per glare round: {:.3}",
            offers as f64 / rounds as f64,
            answers as f64 / rounds as f64
        );
    }
    let pick = |f: &dyn Fn(&Outcome) -> Option<Duration>| {
        let mut v: Vec<Duration> = outcomes.iter().filter_map(f).collect();
        v.sort();
        v
    };
    let mut glare: Vec<Duration> = outcomes
        .iter()
        .flat_map(|o| o.verdict.stats.glare_to_settled.iter().copied())
        .collect();
    glare.sort();
    let lines: [(&str, Vec<Duration>); 3] = [
        (
            "virtual time to first data-channel message",
            pick(&|o| o.verdict.stats.first_message),
        ),
        (
            "virtual time from a glare to settled (per glare round)",
            glare,
        ),
        (
            "virtual time to converge",
            pick(&|o| o.verdict.stats.converged_at),
        ),
    ];
    for (name, v) in lines {
        if !v.is_empty() {
            let _ = writeln!(
                out,
                "{name}: p50 {:.1} ms, p99 {:.1} ms (n={})",
                ms(percentile(&v, 0.50)),
                ms(percentile(&v, 0.99)),
                v.len()
            );
        }
    }
    let walls = pick(&|o| Some(o.wall));
    if !walls.is_empty() {
        let total: Duration = walls.iter().sum();
        let _ = writeln!(
            out,
            "wall time per scenario: mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms; {:.0} scenarios/s per worker, {:.0} scenarios/s overall ({} workers, {:.1} s)",
            ms(total / walls.len() as u32),
            ms(percentile(&walls, 0.50)),
            ms(percentile(&walls, 0.99)),
            walls.len() as f64 / total.as_secs_f64(),
            walls.len() as f64 / wall.as_secs_f64(),
            args.jobs.max(1),
            wall.as_secs_f64()
        );
    }
    let _ = writeln!(out, "{passed} passed, {failed} failed");
}

fn replay_command(args: &SimArgs, o: &Outcome) -> String {
    let mut cmd = format!(
        "cargo run --release -p politely-cli -- sim --seed {}",
        o.seed
    );
    if args.glare {
        cmd.push_str(&format!(" --glare --rounds {}", args.rounds));
    } else if let Some(p) = args.peers {
        cmd.push_str(&format!(" --peers {p}"));
    }
    if let Some(l) = args.latency_ms {
        cmd.push_str(&format!(" --latency-ms {l}"));
    }
    if let Some(g) = args.gate {
        cmd.push_str(&format!(" --gate {g}"));
    }
    cmd.push_str(" --trace");
    cmd
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A progress bar on stderr, redrawn at most every 200 ms.
struct Progress {
    total: u64,
    done: AtomicU64,
    failed: AtomicU64,
    last: Mutex<Instant>,
    start: Instant,
}

impl Progress {
    fn new(total: u64) -> Self {
        let now = Instant::now();
        Self {
            total,
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last: Mutex::new(now),
            start: now,
        }
    }

    fn tick(&self, passed: bool) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if !passed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        if last.elapsed() >= Duration::from_millis(200) || done == self.total {
            *last = Instant::now();
            self.draw(done);
        }
    }

    fn draw(&self, done: u64) {
        const WIDTH: u64 = 30;
        let filled = (done * WIDTH).checked_div(self.total).unwrap_or(WIDTH);
        let bar: String = (0..WIDTH)
            .map(|i| if i < filled { '#' } else { '-' })
            .collect();
        eprint!(
            "\r[{bar}] {done}/{} seeds, {} failed, {:.0}s",
            self.total,
            self.failed.load(Ordering::Relaxed),
            self.start.elapsed().as_secs_f64()
        );
    }

    fn finish(&self) {
        self.draw(self.done.load(Ordering::Relaxed));
        eprintln!();
    }
}

/// `politely sim --star`: random SFU stars, each checked against what its clients asked for.
fn run_stars(args: &SimArgs) -> ExitCode {
    let first = args.seed.unwrap_or(0);
    let count = args
        .seeds
        .unwrap_or(if args.seed.is_some() { 1 } else { 1000 });
    let gate = args.gate.map(Duration::from_millis);
    let next = AtomicU64::new(0);
    let results = Mutex::new(Vec::with_capacity(count as usize));
    let started = Instant::now();
    let progress = Progress::new(count);
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let begun = Instant::now();
                    let (verdict, trace) = politely_sim::run_star_seed(first + i, gate, args.trace);
                    progress.tick(verdict.passed());
                    results
                        .lock()
                        .expect("invariant: no worker panics while holding the lock")
                        .push((first + i, verdict, trace, begun.elapsed()));
                }
            });
        }
    });
    progress.finish();
    let wall = started.elapsed();
    let mut results = results
        .into_inner()
        .expect("invariant: all workers have finished");
    results.sort_by_key(|r| r.0);
    let mut out = std::io::stdout().lock();
    for (_, _, trace, _) in results.iter().filter(|_| args.trace) {
        for line in trace {
            let _ = writeln!(out, "{line}");
        }
    }
    let mut settled: Vec<Duration> = results.iter().filter_map(|r| r.1.settled_at).collect();
    settled.sort();
    let sum =
        |f: fn(&politely_sim::StarVerdict) -> u64| results.iter().map(|r| f(&r.1)).sum::<u64>();
    let failed: Vec<_> = results.iter().filter(|r| !r.1.passed()).collect();
    for (seed, verdict, ..) in &failed {
        let _ = writeln!(out, "FAILED star seed {seed}:");
        for f in &verdict.failures {
            let _ = writeln!(out, "  {f}");
        }
        let gate = args
            .gate
            .map(|g| format!(" --gate {g}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  replay: cargo run --release -p politely-cli -- sim --star --seed {seed}{gate} --trace"
        );
    }
    let _ = writeln!(
        out,
        "stars: {}, clients at the end: {}, tracks forwarded at the end (client x track): {}",
        results.len(),
        sum(|v| v.clients as u64),
        sum(|v| v.forwarded as u64)
    );
    let _ = writeln!(
        out,
        "room: {} packets in, {} forwarded ({} received by clients, {} after a hole), {} keyframe requests ({} throttled), {} messages relayed, {} tracks published, {} transceivers added, {} reused",
        sum(|v| v.room.packets_received),
        sum(|v| v.room.packets_forwarded),
        sum(|v| v.packets_received),
        sum(|v| v.sequence_gaps),
        sum(|v| v.room.keyframe_requests),
        sum(|v| v.room.keyframe_requests_throttled),
        sum(|v| v.room.messages_relayed),
        sum(|v| v.room.tracks_published),
        sum(|v| v.room.transceivers_added),
        sum(|v| v.room.transceivers_reused),
    );
    let _ = writeln!(
        out,
        "offers: {}, answers: {}, ignored offers: {}, repeated offers: {}, lost with replaced connections: {}, leases granted: {}",
        sum(|v| v.offers),
        sum(|v| v.answers),
        sum(|v| v.ignored_offers),
        sum(|v| v.repeated_offers),
        sum(|v| v
            .offers
            .saturating_sub(v.answers + v.ignored_offers + v.repeated_offers)),
        sum(|v| v.leases_granted),
    );
    let _ = writeln!(
        out,
        "gate: {} leases expired unused, {} offers without a lease; faults: {} tracks muted, {} lease requests never used, {} reloads mid-negotiation",
        sum(|v| v.leases_expired),
        sum(|v| v.offers_without_lease),
        sum(|v| v.muted),
        sum(|v| v.stray_lease_requests),
        sum(|v| v.reloads_mid_negotiation),
    );
    if !settled.is_empty() {
        let _ = writeln!(
            out,
            "virtual time to settle: p50 {:.0} ms, p99 {:.0} ms (slowest: seed {})",
            ms(percentile(&settled, 0.50)),
            ms(percentile(&settled, 0.99)),
            results
                .iter()
                .max_by_key(|r| r.1.settled_at)
                .map_or(0, |r| r.0)
        );
    }
    let _ = writeln!(
        out,
        "{} stars in {:.1} s ({} workers); {} passed, {} failed",
        results.len(),
        wall.as_secs_f64(),
        args.jobs.max(1),
        results.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
