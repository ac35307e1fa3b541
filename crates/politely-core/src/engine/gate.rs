//! The negotiation gate (seed 003's "may I negotiate now?"), per connection.
//!
//! Two roles, and an engine plays whichever the messages ask of it:
//! - the **asker** (an engine configured with [`Negotiation::Gate`](crate::Negotiation::Gate),
//!   typically a client of an SFU) asks before each renegotiation and offers under the lease it
//!   is granted. A connection's first offer is not gated, as in seed 003: nothing is being
//!   negotiated yet that it could interrupt;
//! - the **keeper** (any engine that receives a request, typically the SFU) grants a lease when
//!   it is stable, or answers `wait` and grants when its own exchange ends; while a lease is
//!   out it makes no offer of its own, for at most the lease's time.
//!
//! A lease ends with the answer to the offer made under it, a release, its expiry, or the
//! connection's replacement (this state lives in the connection). Unlike the seed's lock, a
//! granted lease that is never used blocks nothing past its expiry.

use std::time::{Duration, Instant};

/// A lease the keeper granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Lease {
    /// The request it answers.
    pub(super) id: u64,
    /// When it ends if nothing ends it sooner.
    pub(super) until: Instant,
}

/// One connection's gate state, both roles.
#[derive(Debug, Default)]
pub(super) struct GateState {
    /// Keeper: the lease out, if any (expired ones are dropped by `expire`).
    pub(super) lease: Option<Lease>,
    /// Keeper: a request answered with `wait`, granted once this side's exchange ends: its id
    /// and the lease asked for.
    pub(super) waiting: Option<(u64, Duration)>,
    /// Keeper: the remote has asked at least once, so its offers are expected under a lease.
    pub(super) remote_asks: bool,
    /// Asker: the request in flight, and when it was (last) sent.
    pub(super) asked: Option<(u64, Instant)>,
    /// Asker: a lease granted and not used yet.
    pub(super) granted: Option<u64>,
    /// Asker: a request went unanswered for the lease's time; the next offer goes without a
    /// lease (the keeper answers it when idle, and a peer that does not keep the gate, such as
    /// a browser page, answers it as usual). Cleared by that offer, or once nothing needs one.
    pub(super) unanswered: bool,
    /// Asker: the last request id used.
    pub(super) last_request: u64,
}

impl GateState {
    /// Keeper: whether a lease is out at `now`.
    pub(super) fn lease_out(&self, now: Instant) -> bool {
        self.lease.is_some_and(|l| l.until > now)
    }

    /// Keeper: whether `lease` names the lease that is out at `now`.
    pub(super) fn is_current_lease(&self, lease: Option<u64>, now: Instant) -> bool {
        lease.is_some()
            && self
                .lease
                .is_some_and(|l| Some(l.id) == lease && l.until > now)
    }

    /// Keeper: drops a lease whose time is up; true if one was.
    pub(super) fn expire(&mut self, now: Instant) -> bool {
        if self.lease.is_some_and(|l| l.until <= now) {
            self.lease = None;
            return true;
        }
        false
    }

    /// Keeper: ends the lease or forgets the waiting request with this id (a release).
    pub(super) fn release(&mut self, id: u64) {
        if self.lease.is_some_and(|l| l.id == id) {
            self.lease = None;
        }
        if self.waiting.is_some_and(|(w, _)| w == id) {
            self.waiting = None;
        }
    }

    /// Keeper: the lease a request for `asked` gets, capped at `max`.
    pub(super) fn grant(
        &mut self,
        id: u64,
        asked: Duration,
        max: Duration,
        now: Instant,
    ) -> Duration {
        let length = asked.min(max);
        self.lease = Some(Lease {
            id,
            until: now + length,
        });
        if self.waiting.is_some_and(|(w, _)| w == id) {
            self.waiting = None;
        }
        length
    }

    /// Asker: a new request id, marked in flight from `now`.
    pub(super) fn ask(&mut self, now: Instant) -> u64 {
        self.last_request += 1;
        self.asked = Some((self.last_request, now));
        self.last_request
    }

    /// When the next deadline of the gate is, for `poll_timeout`: the lease's expiry (keeper),
    /// or when the asker stops waiting for an answer (`retry` after the request or a `wait`).
    pub(super) fn deadline(&self, retry: Duration) -> Option<Instant> {
        let lease = self.lease.map(|l| l.until);
        let ask = self.asked.map(|(_, at)| at + retry);
        lease.into_iter().chain(ask).min()
    }
}

/// Milliseconds of a duration, as the wire carries lease lengths.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
// The tests need some instant to count from; everything after it is arithmetic.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_ends_by_expiry_release_or_replacement() {
        let t0 = Instant::now();
        let mut g = GateState::default();
        let granted = g.grant(1, Duration::from_secs(9), Duration::from_secs(2), t0);
        assert_eq!(
            granted,
            Duration::from_secs(2),
            "capped at the keeper's maximum"
        );
        assert!(g.lease_out(t0 + Duration::from_millis(1999)));
        assert!(g.is_current_lease(Some(1), t0));
        assert!(!g.is_current_lease(Some(2), t0));
        assert!(!g.is_current_lease(None, t0));
        assert!(!g.expire(t0 + Duration::from_millis(1999)));
        assert!(g.expire(t0 + Duration::from_secs(2)));
        assert!(!g.lease_out(t0));

        g.grant(2, Duration::from_secs(1), Duration::from_secs(2), t0);
        g.release(1); // not this lease
        assert!(g.lease_out(t0));
        g.release(2);
        assert!(!g.lease_out(t0));
    }

    #[test]
    fn the_next_deadline_is_the_earlier_of_expiry_and_asking_again() {
        let t0 = Instant::now();
        let mut g = GateState::default();
        assert_eq!(g.deadline(Duration::from_secs(5)), None);
        assert_eq!(g.ask(t0), 1);
        assert_eq!(
            g.deadline(Duration::from_secs(5)),
            Some(t0 + Duration::from_secs(5))
        );
        g.grant(7, Duration::from_secs(1), Duration::from_secs(2), t0);
        assert_eq!(
            g.deadline(Duration::from_secs(5)),
            Some(t0 + Duration::from_secs(1))
        );
    }
}
