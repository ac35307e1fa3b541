//! The pattern's state on one connection, as data: the signaling state together with what
//! exists only in it (the pending offer), the steps that move it, and the watchdog's
//! decisions as a table.
//!
//! Every change goes through `Engine::transition`, which checks the step against
//! [`signaling::next`] (W3C's table) and emits the event. The watchdog has no timer of its
//! own: its deadline is read from the state (`Engine::watchdog_deadline`).

use crate::event::{Recovery, WatchdogCause};
use crate::media::Direction;
use crate::sdp;
use crate::signaling::{self, DescType, Op, SignalingState};
use politely_proto::signal::Description;
use std::time::Instant;

/// Watchdog firings without progress before the connection is replaced by a new one.
pub(super) const STRIKES_BEFORE_NEW_CONNECTION: u32 = 3;

/// Where negotiation stands on one connection.
#[derive(Debug)]
pub(super) enum Negotiation {
    /// No exchange in progress.
    Stable,
    /// Our offer is applied and awaits its answer.
    LocalOffer(PendingOffer),
    /// A remote offer is applied. Never seen between two inputs: the engine answers it in
    /// the step that applied it.
    RemoteOffer,
    /// The engine was closed.
    Closed,
}

/// Our offer, applied locally and sent, awaiting its answer.
#[derive(Debug)]
pub(super) struct PendingOffer {
    /// The id the answer must echo.
    pub(super) id: u64,
    /// Its SDP: the current local description once answered.
    pub(super) sdp: String,
    /// The gate's lease it was made under, if any (sent again with it).
    pub(super) lease: Option<u64>,
    /// The last colliding offer ignored while this one was pending (we are impolite), kept
    /// for the watchdog: if ours goes unanswered too, the remote is most likely impolite as
    /// well, and the watchdog yields to it.
    pub(super) ignored: Option<(Description, Option<u64>)>,
    /// The watchdog counts from here: when the offer was sent, plus a random jitter.
    pub(super) watch_from: Instant,
}

impl Negotiation {
    pub(super) fn signaling(&self) -> SignalingState {
        match self {
            Negotiation::Stable => SignalingState::Stable,
            Negotiation::LocalOffer(_) => SignalingState::HaveLocalOffer,
            Negotiation::RemoteOffer => SignalingState::HaveRemoteOffer,
            Negotiation::Closed => SignalingState::Closed,
        }
    }
}

/// The last completed exchange: W3C's current local and remote descriptions. Kept as text
/// because rtc rebuilds the SDP on every `current_local_description()` call.
#[derive(Debug, Clone)]
pub(super) struct Exchange {
    pub(super) local: String,
    pub(super) remote: String,
    /// This side answered (the remote offered).
    pub(super) local_is_answer: bool,
    /// The id of the offer this exchange completed, if it had one. A repeat of a remote offer
    /// with this id (its offerer's watchdog heard no answer) is answered with `local` again.
    pub(super) offer_id: Option<u64>,
    /// `local` and `remote` read once, for the questions asked of them at every step.
    pub(super) local_sections: sdp::Sections,
    pub(super) remote_sections: sdp::Sections,
}

impl Exchange {
    pub(super) fn new(
        local: String,
        remote: String,
        local_is_answer: bool,
        offer_id: Option<u64>,
    ) -> Self {
        Self {
            local_sections: sdp::Sections::parse(&local),
            remote_sections: sdp::Sections::parse(&remote),
            local,
            remote,
            local_is_answer,
            offer_id,
        }
    }

    /// W3C `currentDirection` of the m-section with this mid: the direction negotiated by this
    /// exchange, the answer's for the answerer and its reverse for the offerer. Read from the
    /// SDP rather than from rtc's `current_direction()`, which reports `inactive` for a
    /// transceiver created by a remote recvonly offer while rtc's answer for it says `sendonly`
    /// (a local bookkeeping choice so that `add_track` can reuse it); the SDP is what both ends
    /// agreed on.
    pub(super) fn direction(&self, mid: &str) -> Option<Direction> {
        if self.local_is_answer {
            self.local_sections.direction(mid)
        } else {
            self.remote_sections.direction(mid).map(Direction::reverse)
        }
    }
}

/// A change of the negotiation state: a description applied, or the connection's end.
#[derive(Debug)]
pub(super) enum Step {
    /// setLocalDescription(offer), with the offer.
    LocalOffer(PendingOffer),
    /// setRemoteDescription(offer).
    RemoteOffer,
    /// setLocalDescription(answer).
    LocalAnswer,
    /// setRemoteDescription(answer).
    RemoteAnswer,
    /// setLocalDescription(rollback).
    LocalRollback,
    /// setRemoteDescription(rollback).
    RemoteRollback,
    /// The engine closes (W3C close(): from any state).
    Close,
    /// The connection is replaced by a new one, which starts stable; whatever exchange the
    /// old one had is abandoned.
    Replace,
}

impl Step {
    /// The W3C operation, for the description steps.
    fn op(&self) -> Option<Op> {
        Some(match self {
            Step::LocalOffer(_) => Op::SetLocal(DescType::Offer),
            Step::RemoteOffer => Op::SetRemote(DescType::Offer),
            Step::LocalAnswer => Op::SetLocal(DescType::Answer),
            Step::RemoteAnswer => Op::SetRemote(DescType::Answer),
            Step::LocalRollback => Op::SetLocal(DescType::Rollback),
            Step::RemoteRollback => Op::SetRemote(DescType::Rollback),
            Step::Close | Step::Replace => return None,
        })
    }

    /// Whether the step is allowed from `from`: W3C's table for descriptions; a close from
    /// anywhere; a replacement from anywhere but closed.
    pub(super) fn allowed_from(&self, from: SignalingState) -> bool {
        match (self.op(), self) {
            (Some(op), _) => signaling::next(from, op).is_ok(),
            (None, Step::Close) => true,
            (None, _) => from != SignalingState::Closed,
        }
    }

    /// The state the step leads to. The description steps are only taken once rtc applied
    /// the description, so this is where rtc is, allowed or not.
    pub(super) fn into_state(self) -> Negotiation {
        match self {
            Step::LocalOffer(offer) => Negotiation::LocalOffer(offer),
            Step::RemoteOffer => Negotiation::RemoteOffer,
            Step::LocalAnswer
            | Step::RemoteAnswer
            | Step::LocalRollback
            | Step::RemoteRollback
            | Step::Replace => Negotiation::Stable,
            Step::Close => Negotiation::Closed,
        }
    }
}

/// What the watchdog sees when it fires.
#[derive(Debug, Clone, Copy)]
pub(super) struct Situation {
    pub(super) signaling: SignalingState,
    /// Firings in have-local-offer since the last completed exchange.
    pub(super) negotiation_strikes: u32,
    /// A colliding offer was ignored while ours was pending.
    pub(super) ignored_offer: bool,
    /// Any local candidate exists.
    pub(super) local_candidates: bool,
    /// The transport is connected.
    pub(super) connected: bool,
    /// ICE itself is connected (a stall above it is in DTLS or SCTP).
    pub(super) ice_connected: bool,
    /// Firings on a stalled transport since it last connected.
    pub(super) transport_strikes: u32,
    /// A local channel has not opened on the connected transport (dialed, or waiting for the
    /// SCTP association).
    pub(super) stalled_channel: bool,
    /// Firings with a local channel not open since a local channel last opened.
    pub(super) channel_strikes: u32,
}

/// What the watchdog does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Gives up on the connection: a new one, with the application's channels and
    /// transceivers replayed.
    NewConnection(WatchdogCause),
    /// Acts on the cause and reports the recovery.
    Recover(WatchdogCause, Recovery),
    /// Nothing to act on.
    Nothing,
}

impl Decision {
    /// Whether this firing counts against the pending offer (have-local-offer).
    pub(super) fn is_negotiation_strike(self) -> bool {
        matches!(
            self,
            Decision::NewConnection(WatchdogCause::AnswerTimeout)
                | Decision::Recover(
                    WatchdogCause::AnswerTimeout | WatchdogCause::BothImpolite,
                    _
                )
        )
    }

    /// Whether this firing counts against a local channel that has not opened.
    pub(super) fn is_channel_strike(self) -> bool {
        matches!(
            self,
            Decision::Recover(WatchdogCause::ChannelStalled, _)
                | Decision::NewConnection(WatchdogCause::ChannelStalled)
        )
    }

    /// Whether this firing counts against a stalled transport.
    pub(super) fn is_transport_strike(self) -> bool {
        matches!(
            self,
            Decision::Recover(WatchdogCause::TransportStalled, _)
                | Decision::NewConnection(WatchdogCause::TransportStalled)
        )
    }
}

/// The watchdog's decision. Each arm is labelled, and the test below runs the same labels as
/// a table.
pub(super) fn decide(s: &Situation) -> Decision {
    use Decision::*;
    use SignalingState::*;
    use WatchdogCause::*;
    match s.signaling {
        // have-local-offer: third unanswered offer -> new connection
        HaveLocalOffer if s.negotiation_strikes + 1 >= STRIKES_BEFORE_NEW_CONNECTION => {
            NewConnection(AnswerTimeout)
        }
        // have-local-offer: unanswered while we ignored theirs -> yield to it
        HaveLocalOffer if s.ignored_offer => Recover(BothImpolite, Recovery::YieldedToIgnoredOffer),
        // have-local-offer: unanswered, nothing collided -> send the same offer again
        HaveLocalOffer => Recover(AnswerTimeout, Recovery::ResendOffer),
        // stable: no local candidate -> report (nothing the engine can do)
        Stable if !s.local_candidates => Recover(NoLocalCandidates, Recovery::ReportOnly),
        // stable: not connected, ICE connected -> new connection (the stall is above ICE)
        Stable if !s.connected && s.ice_connected => NewConnection(TransportStalled),
        // stable: not connected, third time -> new connection
        Stable if !s.connected && s.transport_strikes + 1 >= STRIKES_BEFORE_NEW_CONNECTION => {
            NewConnection(TransportStalled)
        }
        // stable: not connected -> restart ICE
        Stable if !s.connected => Recover(TransportStalled, Recovery::RestartIce),
        // stable: connected, a local channel not open, third time -> new connection
        Stable if s.stalled_channel && s.channel_strikes + 1 >= STRIKES_BEFORE_NEW_CONNECTION => {
            NewConnection(ChannelStalled)
        }
        // stable: connected, a local channel not open -> wait (SCTP may be retransmitting it)
        Stable if s.stalled_channel => Recover(ChannelStalled, Recovery::Wait),
        // stable: connected, every channel open -> nothing
        // have-remote-offer, closed -> nothing (neither outlives an input)
        _ => Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;
    use SignalingState::*;
    use WatchdogCause::*;

    fn situation(signaling: SignalingState) -> Situation {
        Situation {
            signaling,
            negotiation_strikes: 0,
            ignored_offer: false,
            local_candidates: true,
            connected: true,
            ice_connected: true,
            transport_strikes: 0,
            stalled_channel: false,
            channel_strikes: 0,
        }
    }

    #[test]
    fn watchdog_table() {
        let offer = situation(HaveLocalOffer);
        let stable = situation(Stable);
        let stalled = Situation {
            connected: false,
            ice_connected: false,
            ..stable
        };
        let table: &[(&str, Situation, Decision)] = &[
            (
                "have-local-offer: third unanswered offer -> new connection",
                Situation {
                    negotiation_strikes: 2,
                    ignored_offer: true,
                    ..offer
                },
                NewConnection(AnswerTimeout),
            ),
            (
                "have-local-offer: unanswered while we ignored theirs -> yield to it",
                Situation {
                    negotiation_strikes: 1,
                    ignored_offer: true,
                    ..offer
                },
                Recover(BothImpolite, Recovery::YieldedToIgnoredOffer),
            ),
            (
                "have-local-offer: unanswered, nothing collided -> send the same offer again",
                offer,
                Recover(AnswerTimeout, Recovery::ResendOffer),
            ),
            (
                "stable: no local candidate -> report (nothing the engine can do)",
                Situation {
                    local_candidates: false,
                    ..stalled
                },
                Recover(NoLocalCandidates, Recovery::ReportOnly),
            ),
            (
                "stable: not connected, ICE connected -> new connection (the stall is above ICE)",
                Situation {
                    ice_connected: true,
                    ..stalled
                },
                NewConnection(TransportStalled),
            ),
            (
                "stable: not connected, third time -> new connection",
                Situation {
                    transport_strikes: 2,
                    ..stalled
                },
                NewConnection(TransportStalled),
            ),
            (
                "stable: not connected -> restart ICE",
                Situation {
                    transport_strikes: 1,
                    ..stalled
                },
                Recover(TransportStalled, Recovery::RestartIce),
            ),
            (
                "stable: connected, a local channel not open, third time -> new connection",
                Situation {
                    stalled_channel: true,
                    channel_strikes: 2,
                    ..stable
                },
                NewConnection(ChannelStalled),
            ),
            (
                "stable: connected, a local channel not open -> wait (SCTP may be retransmitting it)",
                Situation {
                    stalled_channel: true,
                    channel_strikes: 1,
                    ..stable
                },
                Recover(ChannelStalled, Recovery::Wait),
            ),
            (
                "stable: connected, every channel open -> nothing",
                stable,
                Nothing,
            ),
            (
                "have-remote-offer, closed -> nothing (neither outlives an input)",
                situation(HaveRemoteOffer),
                Nothing,
            ),
            (
                "have-remote-offer, closed -> nothing (neither outlives an input)",
                situation(Closed),
                Nothing,
            ),
        ];
        let source = include_str!("negotiation.rs");
        for (label, s, expected) in table {
            assert!(
                source.contains(&format!("// {label}\n")),
                "no arm is labelled {label:?}"
            );
            assert_eq!(decide(s), *expected, "{label}");
        }
    }

    #[test]
    fn steps_follow_the_signaling_table() {
        use crate::signaling::SignalingState as S;
        type Row = (&'static str, fn() -> Step, S, bool, S);
        let table: &[Row] = &[
            (
                "close from have-local-offer",
                || Step::Close,
                S::HaveLocalOffer,
                true,
                S::Closed,
            ),
            (
                "close when closed",
                || Step::Close,
                S::Closed,
                true,
                S::Closed,
            ),
            (
                "replace from have-local-offer",
                || Step::Replace,
                S::HaveLocalOffer,
                true,
                S::Stable,
            ),
            (
                "replace when closed",
                || Step::Replace,
                S::Closed,
                false,
                S::Stable,
            ),
            (
                "remote answer in stable",
                || Step::RemoteAnswer,
                S::Stable,
                false,
                S::Stable,
            ),
            (
                "remote offer in stable",
                || Step::RemoteOffer,
                S::Stable,
                true,
                S::HaveRemoteOffer,
            ),
            (
                "local answer in have-remote-offer",
                || Step::LocalAnswer,
                S::HaveRemoteOffer,
                true,
                S::Stable,
            ),
            (
                "local rollback in have-local-offer",
                || Step::LocalRollback,
                S::HaveLocalOffer,
                true,
                S::Stable,
            ),
            (
                "remote rollback in have-local-offer",
                || Step::RemoteRollback,
                S::HaveLocalOffer,
                false,
                S::Stable,
            ),
        ];
        for (label, step, from, allowed, to) in table {
            assert_eq!(step().allowed_from(*from), *allowed, "{label}");
            assert_eq!(step().into_state().signaling(), *to, "{label}");
        }
    }
}
