//! The politely signaling protocol, version 1: JSON text frames over one WebSocket per client.
//!
//! A client connects to the server's `/ws` path, sends [`ClientMessage::Join`] and gets a
//! [`ServerMessage::Welcome`] with its id and the room's other peers. From then on it sends
//! [`ClientMessage::Signal`] frames addressed to one peer, and receives the other peers'
//! signals, presence (`peer-joined`, `peer-left`) and `error` frames:
//!
//! ```json
//! {"type":"join","room":"lobby"}
//! {"type":"welcome","id":"01JD…","room":"lobby","peers":[{"id":"01JC…","polite":false}],"resume":"…","resumed":false,"version":1}
//! {"type":"signal","to":"01JC…","data":{"connectionId":"…","description":{"type":"offer","sdp":"…"}}}
//! {"type":"signal","from":"01JC…","data":{"connectionId":"…","description":{"type":"answer","sdp":"…"}}}
//! ```
//!
//! The server relays a signal's `data` untouched; [`signal`] has typed helpers for the
//! W3C/MDN shapes that politely peers and browser pages put there. The whole protocol, with
//! every error and close code, limits, resume and versioning, is documented in the project's
//! `docs/protocol.md`.
//!
//! The types are named by direction and borrow from the frame text where they can. Golden tests
//! pin every frame's JSON, so a rename cannot silently change the wire.

#![cfg_attr(not(test), warn(missing_docs))]

mod address;
mod envelope;
mod message;
pub mod room;
pub mod signal;

pub use envelope::signal_envelope;
pub use message::{
    ClientMessage, CloseCode, ErrorCode, FrameError, IceServer, PeerInfo, ServerMessage, User,
};

/// The protocol version this crate speaks; the server reports it in `welcome`.
pub const VERSION: u32 = 1;

/// The WebSocket subprotocol name of this version. Clients may offer it; a future incompatible
/// version will have another name, and a client that offers none gets version 1.
pub const SUBPROTOCOL: &str = "politely.v1";

/// The path of the WebSocket endpoint.
pub const WS_PATH: &str = "/ws";

pub use address::{Url, UrlError, server_url};

/// Whether `room` is an acceptable room name: 1 to 128 bytes of UTF-8 without control
/// characters.
pub fn is_valid_room(room: &str) -> bool {
    (1..=128).contains(&room.len()) && !room.chars().any(char::is_control)
}
