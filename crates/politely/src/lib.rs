//! politely: WebRTC negotiation for Rust that holds under glare.
//!
//! Either peer may (re)negotiate at any moment; when both do at once ("glare"), the W3C
//! *perfect negotiation* pattern resolves it, with the same code on both ends. When an
//! exchange still stalls (a lost signal, a dead transport), a watchdog restarts ICE or
//! replaces the connection, and says so ([`PeerEvent::Watchdog`]). This crate runs
//! [`politely_core`]'s sans-I/O engine on tokio: UDP sockets, timers, candidate gathering, and
//! a client for the politely signaling server.
//!
//! - [`Session`]: join a room on a politely server; one peer connection per other peer,
//!   roles from the server's ids (the lower id is polite), signaling reconnects with resume.
//! - [`Peer`]: one peer connection over a signaling channel you bring (any `Sink`/`Stream` of
//!   [`Signal`]s).
//! - [`PeerHandle`] and [`DataChannel`]: add channels and transceivers, restart ICE, send with
//!   back-pressure; every change renegotiates by itself.
//!
//! ```no_run
//! # async fn demo() -> Result<(), politely::Error> {
//! use politely::{ChannelOptions, PeerEvent, Session, SessionConfig, SessionEvent};
//!
//! let mut session = Session::join("ws://127.0.0.1:8080", "lobby", SessionConfig::loopback()).await?;
//! while let Some(event) = session.next_event().await {
//!     match event {
//!         SessionEvent::PeerJoined(peer) => {
//!             // Both ends create "chat" with the same negotiated id: one channel between
//!             // them, whoever is first. (Without an id, each end's channel is its own, and
//!             // each end also sees the other's open.)
//!             let options = ChannelOptions { negotiated: Some(0), ..Default::default() };
//!             peer.create_data_channel("chat", options).await?;
//!         }
//!         SessionEvent::Peer { event: PeerEvent::ChannelOpen(channel), .. } => {
//!             channel.send_text("hello").await?;
//!         }
//!         SessionEvent::Peer { peer, event: PeerEvent::Message { message, .. } } => {
//!             println!("{peer}: {}", message.as_text().unwrap_or("<binary>"));
//!         }
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # How it runs
//!
//! Each peer connection is one task (the *driver*) that owns the engine and its UDP sockets,
//! one per local address. It handles one input at a time (a datagram, a signal, a timer, a
//! call from a handle) and then drains the engine: events before writes, so the datagrams
//! that events produce (SCTP on DTLS up, channel opens on association up) leave at once
//! rather than a timer tick later. ICE checks run every 5 ms
//! ([`PeerConfig::ice_check_interval`]) instead of rtc's 200 ms, and host and peer-reflexive
//! candidates are accepted without a wait: on the paths peers share a LAN or loopback, that
//! is the difference between a few milliseconds and a few hundred to connect.
//!
//! Queues between tasks are bounded. When the application does not read events, its peer
//! connections stop taking input (as a socket that is not read does); calls on handles are
//! still served, so no task waits on another in a circle.

#![cfg_attr(not(test), warn(missing_docs))]

mod channel;
mod config;
mod driver;
mod error;
mod gather;
mod peer;
mod session;
mod sfu;
mod timer;
mod turn;

pub use channel::{DataChannel, Message};
pub use config::{
    Bind, Delivery, IceServer, IceTransportPolicy, Negotiation, PeerConfig, SessionConfig,
};
pub use error::Error;
pub use peer::{Peer, PeerEvent, PeerHandle, PeerStats};
pub use politely_core::Error as EngineError;
pub use politely_core::{
    ApiError, ChannelId, ChannelInfo, ChannelOptions, ConfigError, ConnectionId, ConnectionState,
    Counters, Direction, HeaderExtension, MediaKind, MediaPacket, Origin, PeerError, Recovery,
    ReplaceReason, Role, Signal, SignalingState, Timeline, TrackLabel, TransceiverId,
    TransceiverInfo, WatchdogCause,
};
pub use politely_proto::room::{AvailableTrack, RoomMessage, Source, TrackKind};
pub use politely_proto::{ErrorCode, User};
pub use politely_sfu::{RoomConfig, RoomCounters};
pub use session::{Session, SessionEvent};
pub use sfu::{Sfu, SfuConfig};

/// The README's and the guide's Rust examples, compiled as doc tests (`cargo test --doc`); the
/// files sit outside the package, so only a workspace build reads them.
#[cfg(doctest)]
mod documentation {
    #[doc = include_str!("../../../README.md")]
    struct Readme;
    #[doc = include_str!("../../../docs/guide/rust.md")]
    struct RustGuide;
}
