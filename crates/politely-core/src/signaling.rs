//! The signaling state machine (W3C webrtc-pc §4.3.1, JSEP RFC 9429 §3.2), as a table.
//!
//! rtc has no getter for the signaling state, so the engine keeps its own and moves it in one
//! place, after each rtc operation succeeds. Each arm is labelled `from->Op(type)->to`, and the
//! tests at the bottom run the same labels as a table, invalid transitions included. politely
//! never creates provisional answers, and refuses them from peers, so the pranswer states are
//! not represented.

use std::fmt;

/// Where an offer/answer exchange stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SignalingState {
    /// No exchange in progress.
    Stable,
    /// A local offer was applied and awaits an answer.
    HaveLocalOffer,
    /// A remote offer was applied and awaits the local answer.
    HaveRemoteOffer,
    /// The connection was closed.
    Closed,
}

impl fmt::Display for SignalingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignalingState::Stable => "stable",
            SignalingState::HaveLocalOffer => "have-local-offer",
            SignalingState::HaveRemoteOffer => "have-remote-offer",
            SignalingState::Closed => "closed",
        })
    }
}

/// The type of a description being applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DescType {
    Offer,
    Answer,
    Rollback,
}

/// Applying a description, locally or remotely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    SetLocal(DescType),
    SetRemote(DescType),
}

/// A transition the state machine forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidTransition {
    pub(crate) from: SignalingState,
    pub(crate) op: Op,
}

impl fmt::Display for InvalidTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is invalid in {}", self.op, self.from)
    }
}

/// The state after applying `op` in `from`.
pub(crate) fn next(from: SignalingState, op: Op) -> Result<SignalingState, InvalidTransition> {
    use DescType::*;
    use Op::*;
    use SignalingState::*;
    match (from, op) {
        // stable->SetLocal(offer)->have-local-offer
        (Stable, SetLocal(Offer)) => Ok(HaveLocalOffer),
        // stable->SetRemote(offer)->have-remote-offer
        (Stable, SetRemote(Offer)) => Ok(HaveRemoteOffer),
        // have-local-offer->SetLocal(offer)->have-local-offer (a re-offer replaces the pending one)
        (HaveLocalOffer, SetLocal(Offer)) => Ok(HaveLocalOffer),
        // have-local-offer->SetRemote(answer)->stable
        (HaveLocalOffer, SetRemote(Answer)) => Ok(Stable),
        // have-local-offer->SetLocal(rollback)->stable
        (HaveLocalOffer, SetLocal(Rollback)) => Ok(Stable),
        // have-remote-offer->SetRemote(offer)->have-remote-offer
        (HaveRemoteOffer, SetRemote(Offer)) => Ok(HaveRemoteOffer),
        // have-remote-offer->SetLocal(answer)->stable
        (HaveRemoteOffer, SetLocal(Answer)) => Ok(Stable),
        // have-remote-offer->SetRemote(rollback)->stable
        (HaveRemoteOffer, SetRemote(Rollback)) => Ok(Stable),
        _ => Err(InvalidTransition { from, op }),
    }
}

#[cfg(test)]
mod tests {
    use super::DescType::*;
    use super::Op::*;
    use super::SignalingState::*;
    use super::*;

    #[test]
    fn transition_table() {
        let table: &[(&str, SignalingState, Op, Option<SignalingState>)] = &[
            (
                "stable->SetLocal(offer)->have-local-offer",
                Stable,
                SetLocal(Offer),
                Some(HaveLocalOffer),
            ),
            (
                "stable->SetRemote(offer)->have-remote-offer",
                Stable,
                SetRemote(Offer),
                Some(HaveRemoteOffer),
            ),
            (
                "have-local-offer->SetLocal(offer)->have-local-offer",
                HaveLocalOffer,
                SetLocal(Offer),
                Some(HaveLocalOffer),
            ),
            (
                "have-local-offer->SetRemote(answer)->stable",
                HaveLocalOffer,
                SetRemote(Answer),
                Some(Stable),
            ),
            (
                "have-local-offer->SetLocal(rollback)->stable",
                HaveLocalOffer,
                SetLocal(Rollback),
                Some(Stable),
            ),
            (
                "have-remote-offer->SetRemote(offer)->have-remote-offer",
                HaveRemoteOffer,
                SetRemote(Offer),
                Some(HaveRemoteOffer),
            ),
            (
                "have-remote-offer->SetLocal(answer)->stable",
                HaveRemoteOffer,
                SetLocal(Answer),
                Some(Stable),
            ),
            (
                "have-remote-offer->SetRemote(rollback)->stable",
                HaveRemoteOffer,
                SetRemote(Rollback),
                Some(Stable),
            ),
            // Invalid: WPT "Illegal rollbacks" (setLocalDescription-rollback.html and setRemoteDescription-rollback.html).
            (
                "stable->SetLocal(rollback)->invalid",
                Stable,
                SetLocal(Rollback),
                None,
            ),
            (
                "stable->SetRemote(rollback)->invalid",
                Stable,
                SetRemote(Rollback),
                None,
            ),
            (
                "have-local-offer->SetRemote(rollback)->invalid",
                HaveLocalOffer,
                SetRemote(Rollback),
                None,
            ),
            (
                "have-remote-offer->SetLocal(rollback)->invalid",
                HaveRemoteOffer,
                SetLocal(Rollback),
                None,
            ),
            // Invalid: an answer in the wrong state ("Called in wrong state: stable", simple-peer #898).
            (
                "stable->SetRemote(answer)->invalid",
                Stable,
                SetRemote(Answer),
                None,
            ),
            (
                "stable->SetLocal(answer)->invalid",
                Stable,
                SetLocal(Answer),
                None,
            ),
            (
                "have-local-offer->SetLocal(answer)->invalid",
                HaveLocalOffer,
                SetLocal(Answer),
                None,
            ),
            (
                "have-remote-offer->SetRemote(answer)->invalid",
                HaveRemoteOffer,
                SetRemote(Answer),
                None,
            ),
            // Invalid: no implicit rollback at this level; the engine rolls back explicitly.
            (
                "have-local-offer->SetRemote(offer)->invalid",
                HaveLocalOffer,
                SetRemote(Offer),
                None,
            ),
            (
                "have-remote-offer->SetLocal(offer)->invalid",
                HaveRemoteOffer,
                SetLocal(Offer),
                None,
            ),
            (
                "closed->SetLocal(offer)->invalid",
                Closed,
                SetLocal(Offer),
                None,
            ),
            (
                "closed->SetRemote(offer)->invalid",
                Closed,
                SetRemote(Offer),
                None,
            ),
        ];
        for (label, from, op, to) in table {
            assert_eq!(next(*from, *op).ok(), *to, "{label}");
        }
    }
}
