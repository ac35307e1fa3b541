//! politely-core: a sans-I/O perfect-negotiation engine for WebRTC, on webrtc-rs's `rtc`.
//!
//! Either peer may (re)negotiate at any moment; when both offer at once ("glare"), the W3C
//! perfect negotiation pattern resolves it with the same code on both ends: the *polite* side
//! rolls back its offer and answers, the *impolite* side ignores the colliding offer. An
//! [`Engine`] handles one remote peer. It owns an `rtc` peer connection and supplies what `rtc`
//! lacks against a browser: implicit rollback, parameterless setLocalDescription, coalesced
//! negotiation-needed, a persistent restartIce, candidate buffering and ICE-generation
//! filtering, a stale-answer guard, connection ids, and a watchdog for misassigned roles.
//!
//! # The contract
//!
//! The engine performs no I/O, never reads the clock and draws randomness only from its seed.
//! Its methods come in kinds, as in quinn-proto and str0m:
//!
//! - **inputs** (`handle_*`): a signaling message from the remote peer, a datagram, a timeout.
//!   Each takes `now`.
//! - **intents**: what the application wants ([`Engine::create_data_channel`],
//!   [`Engine::add_transceiver`], [`Engine::restart_ice`], [`Engine::close`], ...). Intents made
//!   back to back before draining coalesce into one offer.
//! - **outputs** (`poll_*`): after *every* input or intent, call [`Engine::poll_output`] until
//!   it returns `None`, then sleep until [`Engine::poll_timeout`] or the next input.
//!
//! ```no_run
//! use politely_core::{Config, Engine, Output, Role};
//! use std::time::Instant;
//! # fn send_to_peer(_: serde_json::Value) {}
//! # fn send_datagram(_: &politely_core::Transmit) {}
//! # fn next_input(_: Option<Instant>) -> Input { Input::Timeout }
//! # enum Input { Signal(serde_json::Value), Datagram(std::net::SocketAddr, std::net::SocketAddr, Vec<u8>), Timeout }
//!
//! let local = "127.0.0.1:5000".parse().unwrap();
//! let role = Role::FromIds { local: "01J0A".into(), remote: "01J0B".into() };
//! let mut engine = Engine::new(Config::new(role, vec![local]), Instant::now())?;
//! engine.create_data_channel("chat", Default::default())?;
//! loop {
//!     // Drain everything the last input produced: signals, datagrams, events.
//!     while let Some(output) = engine.poll_output() {
//!         match output {
//!             Output::Signal(signal) => send_to_peer(signal.to_json()),
//!             Output::Transmit(datagram) => send_datagram(&datagram),
//!             Output::Event(event) => println!("{event:?}"),
//!         }
//!     }
//!     // Wait for the next input or the engine's next timer; `None` means no timer.
//!     match next_input(engine.poll_timeout()) {
//!         Input::Signal(json) => {
//!             let signal = politely_core::Signal::from_json(&json)?;
//!             engine.handle_signal(Instant::now(), signal)?;
//!         }
//!         Input::Datagram(from, to, bytes) => {
//!             engine.handle_datagram(Instant::now(), from, to, &bytes)
//!         }
//!         Input::Timeout => engine.handle_timeout(Instant::now()),
//!     }
//! }
//! # #[allow(unreachable_code)]
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Determinism
//!
//! Given the same inputs at the same times, the engine makes the same decisions: its own
//! randomness (connection ids, SSRCs, watchdog jitter) comes from [`Config::seed`]. `rtc` draws
//! some randomness the caller cannot seed (DTLS and ECDSA, ICE credentials, SCTP tags, STUN
//! transaction ids), so packet *bytes* differ between runs; the negotiation-level behaviour does
//! not depend on them.

#![cfg_attr(not(test), warn(missing_docs))]

mod config;
mod engine;
mod error;
mod event;
mod media;
mod negotiation_needed;
// The seeded generator the engine and the simulator share: not API.
#[doc(hidden)]
pub mod rng;
mod sdp;
mod signaling;

pub use config::{Certificate, Config, IceServer, IceTransportPolicy, Negotiation, Role};
pub use engine::{Engine, Output, Transmit};
pub use error::{ApiError, ConfigError, Error, PeerError};
pub use event::{
    ConnectionState, Counters, Diagnostic, Event, Recovery, ReplaceReason, Timeline, WatchdogCause,
};
pub use media::{
    ChannelId, ChannelInfo, ChannelOptions, Direction, HeaderExtension, MediaKind, MediaPacket,
    Origin, TrackLabel, TransceiverId, TransceiverInfo,
};
pub use politely_proto::signal::{
    Candidate, ConnectionId, Description, Gate, Payload, SdpKind, Signal, SignalError,
};
pub use signaling::SignalingState;
