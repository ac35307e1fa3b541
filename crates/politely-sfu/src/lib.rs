//! A sans-I/O selective forwarding unit on [`politely_core`]: a [`Room`] owns one
//! perfect-negotiation engine per client and forwards each client's media and data to the
//! others.
//!
//! Both sides renegotiate. A client adds and removes its own tracks whenever it likes
//! (client-initiated); the room adds and removes a transceiver on a client's connection for
//! every track that client subscribes to or loses (server-initiated). When the two offers
//! cross, the pattern resolves it: the room's engines are always impolite, so a client's
//! colliding offer is the one that rolls back, on the client, where the application's intent is
//! kept and offered again. A client that cannot roll back asks first
//! ([`politely_core::Negotiation::Gate`]); the room's engines grant and defer their own offers
//! while the lease is out.
//!
//! Like the engine, the room never reads a clock or touches a socket: the caller feeds it
//! signals, datagrams and timeouts for each client, and drains [`RoomOutput`]s.
//!
//! # The track model (seed 003)
//!
//! A client says what each of its tracks shows ([`Source`]: camera/microphone or screen) with a
//! `publish` room message. The room announces the tracks every client may subscribe to (a
//! `tracks` room message, sent again on every change), and each client subscribes to all of
//! them by default ([`RoomConfig::subscribe_all`]) or chooses with `subscribe`/`unsubscribe`.
//! A forwarded track arrives with the publisher's id as its `a=msid` stream id and the room's
//! track id as its track id, so a page tells publishers and tracks apart from the `track`
//! event alone.
//!
//! # Media
//!
//! Packets are forwarded as they come, renumbered per subscriber transceiver:
//! the SSRC and payload type are the subscriber connection's own, and when a transceiver is
//! reused for another track its sequence numbers and timestamps go on from where they were.
//! Lost packets are retransmitted by the engines' NACK responders; a new subscription asks the
//! publisher for a keyframe at once, and a subscriber's keyframe request reaches the publisher,
//! at most once per [`RoomConfig::keyframe_interval`] per track.
//!
//! # Data
//!
//! A channel a client opens, labelled `chat`, reaches every other client as a channel the room
//! opens, labelled `<publisher id>/chat`, carrying the same messages. Messages a client sends
//! on a channel the room opened are not relayed.

#![cfg_attr(not(test), warn(missing_docs))]

mod rewrite;
mod room;

pub use politely_proto::room::{AvailableTrack, RoomMessage, Source, TrackKind};
pub use room::{ClientId, Room, RoomConfig, RoomCounters, RoomOutput, ToClient};
