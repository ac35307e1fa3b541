//! What the engine tells the application.

use crate::error::Error;
use crate::media::{ChannelId, MediaKind, MediaPacket, Origin, TransceiverId};
use crate::signaling::SignalingState;
use politely_proto::signal::ConnectionId;

/// An application event, drained with [`Engine::poll_output`](crate::Engine::poll_output).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The signaling state changed.
    SignalingStateChange(SignalingState),
    /// An offer/answer exchange completed and the connection is stable (the WPT helper's
    /// `negotiated`). `local_offer` tells whether this side made the offer.
    Negotiated {
        /// Whether this side was the offerer.
        local_offer: bool,
    },
    /// The transport's overall state changed.
    ConnectionStateChange(ConnectionState),
    /// A data channel opened, on either side's initiative.
    ChannelOpen {
        /// The channel.
        id: ChannelId,
        /// Its label.
        label: String,
        /// Who created it.
        origin: Origin,
    },
    /// A data channel closed.
    ChannelClosed {
        /// The channel.
        id: ChannelId,
        /// It opens again, under the same id: it is one of this application's and its
        /// connection went away (replaced by a new one, or about to be), not closed by either
        /// application. `false` when it is closed for good: by
        /// [`close_data_channel`](crate::Engine::close_data_channel) here, by the remote
        /// application, or a channel the remote made whose connection went away.
        reopens: bool,
    },
    /// A message arrived on a data channel.
    Message {
        /// The channel.
        channel: ChannelId,
        /// The payload.
        data: Vec<u8>,
        /// Whether the sender sent it as text.
        text: bool,
    },
    /// The remote now sends on a transceiver: its negotiated direction receives (the W3C
    /// `track` event, fired when the description is applied, before any packet arrives).
    TrackAdded {
        /// The transceiver.
        transceiver: TransceiverId,
        /// Audio or video.
        kind: MediaKind,
        /// Its negotiated mid.
        mid: String,
    },
    /// The remote stopped sending on a transceiver (it removed its track, or the connection
    /// carrying it was replaced).
    TrackRemoved {
        /// The transceiver.
        transceiver: TransceiverId,
    },
    /// An RTP packet arrived on a remote track.
    Media(MediaPacket),
    /// The remote asked for a keyframe on a transceiver this side sends on (an RTCP PLI or
    /// FIR): its decoder cannot go on without one. An encoder should send one soon; an SFU
    /// relays the request to the track's publisher.
    KeyframeRequested {
        /// The sending transceiver.
        transceiver: TransceiverId,
    },
    /// The peer connection was replaced by a new one with a new connection id.
    ConnectionReplaced {
        /// The id that is retired.
        old: ConnectionId,
        /// The id now in use.
        new: ConnectionId,
        /// Why.
        reason: ReplaceReason,
    },
    /// The negotiation watchdog found no progress and acted.
    Watchdog {
        /// The likely cause.
        cause: WatchdogCause,
        /// What the engine did about it.
        recovery: Recovery,
    },
    /// Something the pattern expects and handles, reported for debugging (never an error).
    Diagnostic(Diagnostic),
    /// An error surfaced to the application. Errors the pattern expects (a colliding offer,
    /// a candidate of an ignored offer) are never surfaced; they appear as diagnostics.
    Error(Error),
    /// The engine closed, on local request or because the peer said `bye`.
    Closed {
        /// True if the remote peer closed.
        by_remote: bool,
    },
}

/// The overall transport state (W3C `RTCPeerConnectionState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Not started.
    New,
    /// ICE or DTLS in progress.
    Connecting,
    /// Connected.
    Connected,
    /// Connectivity lost, may recover.
    Disconnected,
    /// Failed; needs an ICE restart.
    Failed,
    /// Closed.
    Closed,
}

/// Why a connection was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplaceReason {
    /// Both sides created a connection at once; the polite side adopted the remote's id.
    Collision,
    /// The remote peer restarted and came back with a new connection id.
    RemoteRestarted,
    /// The watchdog gave up on the current connection.
    Watchdog,
    /// The remote's watchdog gave up on the connection and asked for a new one.
    RemoteRequested,
}

/// The watchdog's best guess at why a negotiation stalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchdogCause {
    /// Our offer was not answered while we ignored a colliding offer: the remote is probably
    /// impolite too (both sides ignore, nobody answers).
    BothImpolite,
    /// An answer arrived for an offer we had rolled back: the remote yielded to us while we
    /// yielded to it, so it is polite too (livelock).
    BothPolite,
    /// Our offer was not answered and nothing collided: a message was probably lost.
    AnswerTimeout,
    /// No local candidate exists: ICE gathering never started.
    NoLocalCandidates,
    /// Negotiation completed but the transport did not connect.
    TransportStalled,
    /// The transport is up but a local data channel has not opened. SCTP retransmits a lost
    /// opening with a backed-off timer (seconds, after losses), so the first two firings wait
    /// ([`Recovery::Wait`]) and the third replaces the connection.
    ChannelStalled,
}

/// What the watchdog did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recovery {
    /// Applied the colliding offer it had ignored, as a polite peer would.
    YieldedToIgnoredOffer,
    /// Sent its unanswered offer again, with the same id: a remote that lost it applies it,
    /// and one that answered it (and the answer was lost) answers it again. Rolling it back
    /// instead and making a new offer left the two ends with different histories when the
    /// remote had applied the first.
    ResendOffer,
    /// Waits a random back-off before offering again, to break the symmetry.
    BackOff,
    /// Restarted ICE.
    RestartIce,
    /// Replaced the connection with a new one (new connection id).
    NewConnection,
    /// Nothing the engine can do; the application must act (e.g. supply candidates).
    ReportOnly,
    /// Nothing yet: the stall may pass by itself; a later firing acts if it has not.
    Wait,
}

/// Expected events of the pattern, reported for debugging.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Diagnostic {
    /// Impolite: a colliding offer was ignored.
    IgnoredOffer,
    /// Polite: our offer was rolled back to accept the remote's.
    RolledBack,
    /// An answer arrived while no offer of ours was pending.
    AnswerWithoutOffer,
    /// An answer for an older offer arrived after a newer one was sent.
    StaleAnswer {
        /// The offer it answers.
        answers: u64,
        /// The offer pending now.
        pending: Option<u64>,
    },
    /// The same offer arrived twice.
    DuplicateOffer,
    /// A message for a connection that was replaced, or that we never adopted.
    UnknownConnection(ConnectionId),
    /// A candidate of an older ICE generation (its ufrag is no longer the remote's).
    OldGenerationCandidate,
    /// A candidate that failed because it belongs to an ignored offer.
    SuppressedCandidateError,
    /// Candidates arrived before any remote description and were buffered.
    BufferedCandidate,
    /// The remote refused our offer (`refused`): rolled back, and its offer awaited.
    OfferRefused,
    /// A host candidate whose address is an mDNS name (`….local`, a browser hiding its
    /// addresses): not resolved. The peer is reached through the checks it sends to our
    /// candidates (a peer-reflexive candidate).
    HiddenCandidate,
}

/// Counters an application can read with [`Engine::counters`](crate::Engine::counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Offers sent.
    pub offers: u64,
    /// Answers sent.
    pub answers: u64,
    /// Offers received.
    pub offers_received: u64,
    /// Answers received and applied.
    pub answers_applied: u64,
    /// Own offers rolled back (polite side of a glare).
    pub rollbacks: u64,
    /// Remote offers ignored (impolite side of a glare).
    pub ignored_offers: u64,
    /// Candidate failures suppressed because they belong to an ignored offer.
    pub suppressed_candidates: u64,
    /// Candidates dropped because they belong to an old ICE generation.
    pub old_generation_candidates: u64,
    /// Host candidates with an mDNS name instead of an address, not resolved
    /// ([`Diagnostic::HiddenCandidate`]).
    pub hidden_candidates: u64,
    /// Stale or duplicate descriptions ignored.
    pub stale_descriptions: u64,
    /// Watchdog firings.
    pub watchdog_firings: u64,
    /// Connections replaced by a new connection id.
    pub connections_replaced: u64,
    /// ICE restarts applied (local credentials changed).
    pub ice_restarts: u64,
    /// Gate, asking side: leases asked for (repeats of an unanswered request not counted).
    pub lease_requests: u64,
    /// Gate, keeping side: leases granted.
    pub leases_granted: u64,
    /// Gate, keeping side: offers that arrived under the lease that was out.
    pub leases_used: u64,
    /// Gate, keeping side: leases that ran out before an offer, an answer or a release ended them.
    pub leases_expired: u64,
    /// Gate, keeping side: requests answered with `wait` (this side was negotiating).
    pub requests_deferred: u64,
    /// Gate, keeping side: renegotiation offers without a valid lease from a peer that asks;
    /// answered when this side is idle, ignored otherwise.
    pub offers_without_lease: u64,
}

/// When the current connection went through each step of its setup, and of its latest
/// exchange, on the clock the engine is given (`None`: not yet). Read with
/// [`Engine::timeline`](crate::Engine::timeline) to see where connection and negotiation time
/// goes; a replacement connection starts a new one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeline {
    /// The connection was made (the engine created, or a replacement begun).
    pub created: Option<std::time::Instant>,
    /// This side sent the connection's first offer.
    pub first_offer_sent: Option<std::time::Instant>,
    /// A remote offer was first applied.
    pub first_offer_received: Option<std::time::Instant>,
    /// The first exchange completed (back to stable).
    pub first_negotiated: Option<std::time::Instant>,
    /// ICE first reached connected (a pair of candidates works).
    pub ice_connected: Option<std::time::Instant>,
    /// The transport first reached connected: ICE and the DTLS handshake.
    pub connected: Option<std::time::Instant>,
    /// The SCTP association was first known up.
    pub sctp_up: Option<std::time::Instant>,
    /// The first of the application's data channels opened.
    pub channel_open: Option<std::time::Instant>,
    /// The first message arrived on one of the application's data channels.
    pub first_message: Option<std::time::Instant>,
    /// This side last sent an offer.
    pub last_offer_sent: Option<std::time::Instant>,
    /// A remote offer was last applied.
    pub last_offer_received: Option<std::time::Instant>,
    /// This side last rolled back its offer (the polite side of a glare).
    pub last_rollback: Option<std::time::Instant>,
    /// This side last sent an answer.
    pub last_answer_sent: Option<std::time::Instant>,
    /// A remote answer was last applied.
    pub last_answer_received: Option<std::time::Instant>,
    /// An exchange last completed.
    pub last_negotiated: Option<std::time::Instant>,
}

impl Timeline {
    pub(crate) fn new(now: std::time::Instant) -> Self {
        Self {
            created: Some(now),
            ..Self::default()
        }
    }
}

/// Sets a first-time mark once.
pub(crate) fn mark(slot: &mut Option<std::time::Instant>, now: std::time::Instant) {
    if slot.is_none() {
        *slot = Some(now);
    }
}
