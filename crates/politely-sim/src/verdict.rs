//! The end-state checks every run must pass.

use crate::sim::{Sim, Stats};
use politely_core::{ConnectionState, Origin, SignalingState};
use std::fmt;

/// One reason a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// An engine surfaced an error event.
    Surfaced(usize, usize, String),
    /// `handle_signal` refused a message.
    Peer(usize, usize, String),
    /// An intent failed.
    Api(usize, usize, String),
    /// Thousands of steps without virtual time advancing.
    Livelock,
    /// The run did not settle before the time limit.
    NotConverged(String),
    /// Both ends settled but disagree.
    Mismatch(String),
    /// More offers than the pattern needs.
    ExtraOffers(String),
    /// The ends agree, but not with what their applications asked (the oracle of intent).
    Intent(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Surfaced(a, b, e) => write!(f, "p{a}>p{b} surfaced an error: {e}"),
            Failure::Peer(a, b, e) => write!(f, "p{a}>p{b} refused a signal: {e}"),
            Failure::Api(a, b, e) => write!(f, "p{a}>p{b} intent failed: {e}"),
            Failure::Livelock => f.write_str("livelock: virtual time stopped advancing"),
            Failure::NotConverged(why) => write!(f, "did not converge: {why}"),
            Failure::Mismatch(why) => write!(f, "ends disagree: {why}"),
            Failure::ExtraOffers(why) => write!(f, "more offers than needed: {why}"),
            Failure::Intent(why) => write!(f, "not what the application asked: {why}"),
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Every failure found; empty means the run passed.
    pub failures: Vec<Failure>,
    /// Measurements.
    pub stats: Stats,
    /// FNV-1a hash of the negotiation-level trace, to compare runs across processes.
    pub trace_hash: u64,
}

impl Verdict {
    /// Whether the run passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    pub(crate) fn check(sim: &mut Sim) -> Verdict {
        let mut failures: Vec<Failure> = sim.failures().to_vec();
        let converged = sim.stats().converged_at.is_some();
        let roles_ok = matches!(
            sim.config().roles,
            crate::Roles::ById | crate::Roles::ByIdReversed
        );
        let peers = sim.config().peers;
        let mut total_offers = 0;
        let mut total_answers = 0;
        let mut total_ignored = 0;
        let mut watchdog = 0;
        for a in 0..peers {
            for b in 0..peers {
                if a == b {
                    continue;
                }
                let c = sim.links()[&(a, b)].counters();
                total_offers += c.offers;
                total_answers += c.answers;
                total_ignored += c.ignored_offers;
                watchdog += c.watchdog_firings;
            }
        }
        // Every offer is answered or lost to a collision; any other offer was not needed.
        // With misassigned roles the watchdog re-offers, so the identity only holds without it.
        if roles_ok && watchdog == 0 && total_offers != total_answers + total_ignored {
            failures.push(Failure::ExtraOffers(format!(
                "{total_offers} offers, {total_answers} answers, {total_ignored} ignored"
            )));
        }
        for a in 0..peers {
            for b in (a + 1)..peers {
                if let Some(why) = pair_problem(sim, a, b) {
                    if converged {
                        failures.push(Failure::Mismatch(why));
                    } else {
                        failures.push(Failure::NotConverged(why));
                    }
                } else if converged {
                    failures.extend(intent_problems(sim, a, b).into_iter().map(Failure::Intent));
                }
            }
        }
        if !converged
            && !failures
                .iter()
                .any(|f| matches!(f, Failure::NotConverged(_)))
        {
            failures.push(Failure::NotConverged("time limit reached".into()));
        }
        Verdict {
            failures,
            stats: sim.stats().clone(),
            trace_hash: fnv1a(sim.trace()),
        }
    }
}

/// Where the pair (a, b) does not do what its applications asked (see [`crate::intent`]).
fn intent_problems(sim: &mut Sim, a: usize, b: usize) -> Vec<String> {
    let links = sim.links();
    let mut la = links
        .remove(&(a, b))
        .expect("invariant: a link exists for every ordered pair");
    let lb = links
        .get_mut(&(b, a))
        .expect("invariant: a link exists for every ordered pair");
    let problems = if la.model.closed || lb.model.closed {
        Vec::new()
    } else {
        let ev = |l: &crate::sim::Link| {
            l.events[l.events_from..]
                .iter()
                .map(|(_, e)| e.clone())
                .collect::<Vec<_>>()
        };
        let (ev_a, ev_b) = (ev(&la), ev(lb));
        crate::intent::check_pair(
            (a, b),
            (&la.model, &lb.model),
            (&mut la.engine, &mut lb.engine),
            (&ev_a, &ev_b),
        )
    };
    links.insert((a, b), la);
    problems
}

/// What is wrong with the pair (a, b), if anything.
fn pair_problem(sim: &mut Sim, a: usize, b: usize) -> Option<String> {
    let links = sim.links();
    let mut ends = Vec::new();
    for (x, y) in [(a, b), (b, a)] {
        let link = links
            .get_mut(&(x, y))
            .expect("invariant: a link exists for every ordered pair");
        let e = &mut link.engine;
        if e.signaling_state() != SignalingState::Stable || e.has_pending_description() {
            return Some(format!(
                "p{x}>p{y} is {} with a pending description",
                e.signaling_state()
            ));
        }
        if e.wants_to_negotiate() {
            return Some(format!("p{x}>p{y} still wants to negotiate"));
        }
        if e.gate_busy() {
            return Some(format!("p{x}>p{y} holds a gate lease or request"));
        }
        let channels = e.channels();
        let transceivers = e.transceivers();
        let active = !channels.is_empty() || !transceivers.is_empty();
        if active && e.connection_state() != ConnectionState::Connected {
            return Some(format!("p{x}>p{y} is {:?}", e.connection_state()));
        }
        if let Some(c) = channels.iter().find(|c| !c.open) {
            return Some(format!("p{x}>p{y} channel {} is not open", c.label));
        }
        if let Some(c) = channels
            .iter()
            .find(|c| c.origin == Origin::Local && !link.echoed.contains(&c.label))
        {
            return Some(format!("p{x}>p{y} channel {} never echoed", c.label));
        }
        ends.push((
            e.connection_id().clone(),
            e.negotiated_mids(),
            transceivers,
            channels,
        ));
    }
    let (ida, mids_a, tr_a, ch_a) = &ends[0];
    let (idb, mids_b, tr_b, ch_b) = &ends[1];
    if ida != idb {
        return Some(format!("p{a} uses connection {ida}, p{b} uses {idb}"));
    }
    if mids_a != mids_b {
        return Some(format!("mids differ: p{a} {mids_a:?}, p{b} {mids_b:?}"));
    }
    for t in tr_a.iter().filter(|t| t.mid.is_some()) {
        let Some(u) = tr_b.iter().find(|u| u.mid == t.mid) else {
            return Some(format!("p{b} has no transceiver for mid {:?}", t.mid));
        };
        let complementary = match (t.current_direction, u.current_direction) {
            (Some(x), Some(y)) => x.reverse() == y,
            _ => false,
        };
        if !complementary {
            return Some(format!(
                "mid {:?}: p{a} {:?} vs p{b} {:?}",
                t.mid, t.current_direction, u.current_direction
            ));
        }
    }
    let mut labels_a: Vec<&str> = ch_a.iter().map(|c| c.label.as_str()).collect();
    let mut labels_b: Vec<&str> = ch_b.iter().map(|c| c.label.as_str()).collect();
    labels_a.sort_unstable();
    labels_b.sort_unstable();
    if labels_a != labels_b {
        return Some(format!(
            "channels differ: p{a} {labels_a:?}, p{b} {labels_b:?}"
        ));
    }
    None
}

fn fnv1a(lines: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for line in lines {
        for byte in line.bytes().chain(std::iter::once(b'\n')) {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
