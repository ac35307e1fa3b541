//! The negotiation gate (seed 003): the polite peer asks before it renegotiates and offers
//! under the lease it is granted; the impolite peer keeps the gate. Peer 0 is polite (lower id).

use politely_core::{Direction, Gate, MediaKind, Payload, Signal};
use politely_sim::{Action, Failure, Fate, Scenario, Sim, SimConfig, Verdict};
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(2);

fn passed(verdict: &Verdict) {
    assert!(verdict.passed(), "{:#?}", verdict.failures);
}

fn video() -> Action {
    Action::AddTransceiver(MediaKind::Video, Direction::SendRecv)
}

fn audio() -> Action {
    Action::AddTransceiver(MediaKind::Audio, Direction::SendRecv)
}

fn gated_pair() -> Sim {
    let config = SimConfig {
        gate: Some(LEASE),
        ..SimConfig::default()
    };
    let scenario = Scenario::default().at(0, 0, 1, Action::CreateChannel("setup".into()));
    let mut sim = Sim::with_scenario(config, &scenario);
    passed(&sim.run());
    sim
}

fn is_leased_offer(signal: &Signal) -> bool {
    matches!(&signal.payload, Payload::Description { lease: Some(_), .. })
}

/// The first offer of a connection is not gated (seed 003: the client just offers); a
/// renegotiation asks, is granted, and offers under the lease, which the answer ends.
#[test]
fn a_renegotiation_asks_first_and_offers_under_the_lease() {
    let mut sim = gated_pair();
    assert_eq!(sim.engine(0, 1).counters().lease_requests, 0);
    sim.act(0, 1, video());
    passed(&sim.run());
    let (asker, keeper) = (sim.engine(0, 1).counters(), sim.engine(1, 0).counters());
    assert_eq!(asker.lease_requests, 1);
    assert_eq!(keeper.leases_granted, 1);
    assert_eq!(keeper.leases_used, 1);
    assert_eq!(keeper.leases_expired, 0);
    assert_eq!(keeper.offers_without_lease, 0);
    assert!(!sim.engine(1, 0).gate_busy());
}

/// Both sides change at once. Without the gate that is a glare and a rollback; with it, the
/// keeper's offer is answered while the asker's request waits, and the asker offers after,
/// under the lease granted when the keeper's exchange ended. Nobody rolls back or ignores.
#[test]
fn changes_on_both_sides_at_once_take_turns_instead_of_colliding() {
    let mut sim = gated_pair();
    sim.act(0, 1, video());
    sim.act(1, 0, audio());
    passed(&sim.run());
    let (asker, keeper) = (sim.engine(0, 1).counters(), sim.engine(1, 0).counters());
    assert_eq!((asker.rollbacks, keeper.rollbacks), (0, 0));
    assert_eq!((asker.ignored_offers, keeper.ignored_offers), (0, 0));
    assert_eq!(
        keeper.requests_deferred, 1,
        "the request waited for the keeper's exchange"
    );
    assert_eq!(keeper.leases_used, 1);
    assert_eq!(sim.engine(0, 1).transceivers().len(), 2);
}

/// A lease granted and never used (its offer is lost) holds the keeper back for the lease's
/// time, not forever: the keeper's own change goes out once it expires. The asker, still
/// waiting for its answer, yields to that offer (perfect negotiation runs underneath) and asks
/// again.
#[test]
fn a_lease_that_is_never_used_expires() {
    let mut sim = gated_pair();
    let mut dropped = false;
    sim.intercept(move |from, _, signal| {
        if from == 0 && !dropped && is_leased_offer(signal) {
            dropped = true;
            return Fate::Drop;
        }
        Fate::Deliver
    });
    sim.act(0, 1, video());
    // Request and grant cross (5 ms each way); the leased offer is lost.
    sim.run_for(Duration::from_millis(20));
    assert_eq!(sim.engine(1, 0).counters().leases_granted, 1);
    assert!(sim.engine(1, 0).gate_busy());
    let offers = sim.engine(1, 0).counters().offers;
    sim.act(1, 0, audio());
    sim.run_for(LEASE - Duration::from_millis(100));
    assert_eq!(
        sim.engine(1, 0).counters().offers,
        offers,
        "the keeper waits for the lease"
    );
    sim.run_for(Duration::from_millis(200));
    assert_eq!(sim.engine(1, 0).counters().leases_expired, 1);
    assert_eq!(
        sim.engine(1, 0).counters().offers,
        offers + 1,
        "then offers its own change"
    );
    // The offer the network lost was neither answered nor ignored, which the verdict's count
    // (offers = answers + ignored) cannot know; everything else must hold.
    let verdict = sim.run();
    assert_eq!(
        verdict.failures,
        [Failure::ExtraOffers(
            "4 offers, 3 answers, 0 ignored".into()
        )]
    );
    assert_eq!(sim.engine(0, 1).transceivers().len(), 2);
}

/// A lost grant: the asker hears nothing for the lease's time and offers without a lease
/// (as it does toward a peer that does not keep the gate, such as a browser page); the keeper,
/// idle, answers it.
#[test]
fn an_unanswered_request_gives_way_to_an_offer_without_a_lease() {
    let mut sim = gated_pair();
    let mut dropped = false;
    sim.intercept(move |from, _, signal| {
        if from == 1 && !dropped && matches!(signal.payload, Payload::Gate(Gate::Grant { .. })) {
            dropped = true;
            return Fate::Drop;
        }
        Fate::Deliver
    });
    sim.act(0, 1, video());
    passed(&sim.run());
    let (asker, keeper) = (sim.engine(0, 1).counters(), sim.engine(1, 0).counters());
    assert_eq!(asker.lease_requests, 1);
    assert_eq!(
        (
            keeper.leases_granted,
            keeper.leases_expired,
            keeper.offers_without_lease
        ),
        (1, 1, 1)
    );
    assert_eq!((asker.rollbacks, keeper.ignored_offers), (0, 0));
    assert_eq!(sim.engine(0, 1).transceivers().len(), 1);
}

/// Random scenarios with the gate on: every run converges with no lease or request left,
/// across 2 to 4 peers (every pair gated, the lower id asking).
#[test]
fn random_gated_scenarios_converge() {
    let total: u64 = std::env::var("POLITELY_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let failures = politely_sim::failing_seeds(0..total, Some(LEASE));
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
