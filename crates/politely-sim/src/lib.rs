//! politely-sim: the deterministic simulator and test kit for politely's engine.
//!
//! Two to six [`Engine`](politely_core::Engine)s in a full mesh (one engine per ordered pair
//! of peers, as an application keeps one connection per remote peer), an in-memory packet
//! network (latency, jitter, loss; addresses are labels that are never bound), an in-memory
//! signaling channel (reliable and FIFO per directed pair, with its own latency and jitter;
//! messages cross it as JSON text), a virtual clock and a seeded RNG. The loop always handles
//! the earliest pending input (str0m's `progress()`), then drains that engine.
//!
//! Every run ends with [`Verdict`]: every pair stable with no pending description and nothing
//! left to negotiate, connected, the same connection id and mids at both ends, complementary
//! directions, every data channel open at both ends with a message echoed, no error surfaced,
//! and no offer beyond the pattern's minimum (every offer answered or lost to a collision).
//!
//! # Determinism
//!
//! For a given seed, the scenario, the network's delays and losses, and every engine's own
//! randomness are fixed, so the negotiation-level trace and the verdict repeat run after run.
//! rtc draws randomness of its own (DTLS and ECDSA, ICE credentials, SCTP tags, STUN
//! transaction ids): packet bytes differ between runs, and DER signatures vary in length by a
//! byte. The trace records no packet bytes, ufrags or SDP, and losses are drawn per datagram
//! in send order, so as long as the *number* of datagrams is the same the trace is too. rtc also
//! walks some maps in a per-process random order; the engine orders channel events by stream
//! so that does not show, except where rtc holds two SCTP associations on one connection (an
//! rtc bug): then which one a new channel is written to, and so whether the watchdog has to
//! replace the connection, can differ between processes. The verdict holds either way.
//!
//! ```
//! use politely_sim::{Action, Scenario, Sim, SimConfig};
//! use politely_core::{Direction, MediaKind};
//!
//! // Glare on the very first negotiation: both sides add a transceiver at once.
//! let scenario = Scenario::default().both(0, 0, 1, Action::AddTransceiver(MediaKind::Video, Direction::SendOnly));
//! let verdict = Sim::with_scenario(SimConfig::default(), &scenario).run();
//! assert!(verdict.passed(), "{:?}", verdict.failures);
//! assert_eq!((verdict.stats.offers, verdict.stats.answers), (3, 2));
//! ```

mod intent;
mod scenario;
mod script;
mod sim;
mod star;
mod verdict;

pub use scenario::{Action, Scenario, Step, Touched};
pub use script::{
    ChannelState, EndState, Maker, Op, Outcome, ReadyState, Script, ScriptStep, TransceiverState,
    negotiated,
};
pub use sim::{Fate, Roles, Sim, SimConfig, Stats};
pub use star::{
    Star, StarAction, StarConfig, StarVerdict, failing_star_seeds, random_schedule, run_star_seed,
};
pub use verdict::{Failure, Verdict};

/// Runs the random scenario of `seed` with `peers` peers, optionally overriding the latency.
pub fn run_seed(
    seed: u64,
    peers: usize,
    latency: Option<std::time::Duration>,
) -> (Verdict, Vec<String>) {
    let (mut config, scenario) = Scenario::random(seed, peers);
    if let Some(l) = latency {
        config.signal_latency = l;
        config.packet_latency = l;
    }
    let mut sim = Sim::with_scenario(config, &scenario);
    let verdict = sim.run();
    (verdict, sim.trace().to_vec())
}

/// Runs the random scenarios of `seeds` (2, 3 or 4 peers by seed), with the negotiation gate
/// on if `gate` gives a lease (in every pair the polite end asks before it renegotiates), and
/// describes each failure with the command that replays it.
pub fn failing_seeds(
    seeds: impl Iterator<Item = u64>,
    gate: Option<std::time::Duration>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for seed in seeds {
        let peers = 2 + (seed % 3) as usize;
        let (mut config, scenario) = Scenario::random(seed, peers);
        config.gate = gate;
        let verdict = Sim::with_scenario(config, &scenario).run();
        if !verdict.passed() {
            let gate = gate
                .map(|g| format!(" --gate {}", g.as_millis()))
                .unwrap_or_default();
            failures.push(format!(
                "seed {seed} ({peers} peers): {:?}\n  replay: cargo run --release -p politely-cli -- sim --seed {seed} --peers {peers}{gate} --trace",
                verdict.failures
            ));
        }
    }
    failures
}
