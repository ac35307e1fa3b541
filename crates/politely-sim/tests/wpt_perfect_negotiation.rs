//! The web-platform-tests perfect-negotiation scenarios, re-created against the engine.
//!
//! Sources: wpt `webrtc/RTCPeerConnection-perfect-negotiation.https.html` (setup, glare),
//! `...-perfect-negotiation-stress-glare.https.html` and `...-stress-glare-linear.https.html`,
//! with the helper `RTCPeerConnection-perfect-negotiation-helper.js`. As in WPT's
//! `promise_test_both_roles`, every scenario runs twice, with the roles swapped.

use politely_core::{Direction, MediaKind, Origin, SignalingState};
use politely_sim::{Action, Roles, Scenario, Sim, SimConfig};
use std::time::Duration;

/// Peer 0 and 1 with either role order: `polite_first` makes peer 0 the polite one.
fn config(polite_first: bool, seed: u64) -> SimConfig {
    SimConfig {
        seed,
        roles: if polite_first {
            Roles::ById
        } else {
            Roles::ByIdReversed
        },
        ..SimConfig::default()
    }
}

fn add_video() -> Action {
    Action::AddTransceiver(MediaKind::Video, Direction::SendOnly)
}

/// The WPT helper's invariants on the final state: both stable, and each side's own
/// transceivers negotiated as sendonly, the remote's as recvonly.
fn assert_settled(sim: &mut Sim, expected_per_side: usize) {
    for (a, b) in [(0, 1), (1, 0)] {
        let e = sim.engine(a, b);
        assert_eq!(e.signaling_state(), SignalingState::Stable);
        let ts = e.transceivers();
        assert_eq!(ts.len(), expected_per_side, "p{a} transceivers: {ts:#?}");
        for t in &ts {
            let expected = match t.origin {
                Origin::Local => Direction::SendOnly,
                Origin::Remote => Direction::RecvOnly,
            };
            assert_eq!(t.current_direction, Some(expected), "p{a} {t:?}");
        }
    }
}

fn both_roles(test: impl Fn(bool)) {
    test(true);
    test(false);
}

/// "Perfect negotiation setup connects": A adds a transceiver, connects; then B adds one.
#[test]
fn setup_connects() {
    both_roles(|polite_first| {
        let scenario = Scenario::default().at(0, 0, 1, add_video());
        let mut sim = Sim::with_scenario(config(polite_first, 1), &scenario);
        let verdict = sim.run();
        assert!(verdict.passed(), "{:?}", verdict.failures);
        assert_settled(&mut sim, 1);
        sim.act(1, 0, add_video());
        let verdict = sim.run();
        assert!(verdict.passed(), "{:?}", verdict.failures);
        assert_settled(&mut sim, 2);
        assert_eq!(verdict.stats.offers, 2);
    });
}

/// "Perfect negotiation glare": both add a transceiver at once on fresh connections. An
/// addTransceiver-created transceiver is never matched to a remote m-section, so each side
/// ends with exactly 2. The glare costs 3 offers and 2 answers.
#[test]
fn glare_on_first_negotiation() {
    both_roles(|polite_first| {
        let scenario = Scenario::default().both(0, 0, 1, add_video());
        let mut sim = Sim::with_scenario(config(polite_first, 2), &scenario);
        let verdict = sim.run();
        assert!(verdict.passed(), "{:?}", verdict.failures);
        assert_settled(&mut sim, 2);
        assert_eq!((verdict.stats.offers, verdict.stats.answers), (3, 2));
        assert_eq!(verdict.stats.collisions, 1);
    });
}

/// "Perfect negotiation stress glare": on a connected pair, 10 rounds of simultaneous
/// addTransceiver waiting i-1 ms (9..0) between rounds, then a final round: 22 per side.
fn stress_glare(polite_first: bool, pause: Duration) {
    // Connect first (with a data channel, so no transceiver exists before the rounds).
    let scenario = Scenario::default().at(0, 0, 1, Action::CreateChannel("setup".into()));
    let mut sim = Sim::with_scenario(config(polite_first, 3), &scenario);
    assert!(sim.run().passed());
    assert_settled(&mut sim, 0);
    for i in (0..10u64).rev() {
        sim.act(0, 1, add_video());
        sim.act(1, 0, add_video());
        sim.run_for(Duration::from_millis(i) + pause);
    }
    sim.act(0, 1, add_video());
    sim.act(1, 0, add_video());
    let verdict = sim.run();
    assert!(verdict.passed(), "{:?}", verdict.failures);
    assert_settled(&mut sim, 22);
}

#[test]
fn stress_glare_ten_rounds() {
    both_roles(|polite_first| stress_glare(polite_first, Duration::ZERO));
}

/// The "linear" variant: a pause between rounds (WPT's `setTimeout(0)`), here one signaling
/// latency, so a round may be settling when the next begins.
#[test]
fn stress_glare_linear() {
    both_roles(|polite_first| stress_glare(polite_first, Duration::from_millis(5)));
}
