//! The frames of protocol v1, named by direction, and the codes the server answers with.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// A frame a client sends to the server.
///
/// Strings borrow from the frame's text when they can ([`ClientMessage::from_json`]), so the
/// server parses a relayed `signal` without copying its `data`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMessage<'a> {
    /// Enter a room: the first frame of a connection. Answered by [`ServerMessage::Welcome`].
    Join {
        /// The room's name.
        room: Cow<'a, str>,
        /// A room token, when the server requires one.
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<Cow<'a, str>>,
        /// The `resume` token of an earlier `welcome`, to get the same id back after a drop.
        #[serde(skip_serializing_if = "Option::is_none")]
        resume: Option<Cow<'a, str>>,
        /// Join as the room's SFU: every other peer connects to this one only, and is polite
        /// toward it. One per room; on a server with secrets, the token must say `"sfu": true`.
        #[serde(skip_serializing_if = "is_false")]
        sfu: bool,
        /// With `resume`: the peers this client is connected with. A server that restarted
        /// since it issued the token keeps their places for them (they are resuming too).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        peers: Vec<Cow<'a, str>>,
        /// With `resume`: how many `signal`, `peer-joined` and `peer-left` frames this client
        /// has received under its id. A node of several (a server with Redis) sends the ones
        /// after these again from the peer's backlog, so nothing its old node had queued is
        /// lost.
        #[serde(skip_serializing_if = "Option::is_none")]
        received: Option<u64>,
    },
    /// Relay `data` to one peer of the same room.
    Signal {
        /// The id of the peer to relay to.
        to: Cow<'a, str>,
        /// Any JSON value; the server relays it untouched.
        data: Cow<'a, RawValue>,
    },
    /// Leave the room for good; the server closes the connection (code 1000).
    Leave,
    /// Ask for a [`ServerMessage::Pong`]: a keepalive that a browser page can send (pages cannot
    /// send WebSocket pings).
    Ping,
    /// Ask for fresh ICE servers ([`ServerMessage::IceServers`]): TURN credentials expire, so a
    /// client asks again before they do (at half their `iceTtl`).
    IceServers,
}

/// A frame the server sends to a client.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage<'a> {
    /// The answer to a successful `join`.
    Welcome {
        /// The id the server gave this client (time-ordered; never reused).
        id: Cow<'a, str>,
        /// The room joined.
        room: Cow<'a, str>,
        /// The other peers in the room, in id order.
        peers: Vec<PeerInfo<'a>>,
        /// The token a later `join` carries to resume this id after a dropped connection.
        resume: Cow<'a, str>,
        /// Whether this `join` resumed an earlier connection's id (and queued frames follow).
        resumed: bool,
        /// With `resumed`: how many text frames the client sent under this id after its
        /// first `welcome` the server took, counted up to the last `signal` that reached the
        /// room. The frames after those never did (they were in flight when the connection
        /// dropped, or written to a node that died): the client sends them again, and counts
        /// on from this number. Absent when the server does not know (a place it restored
        /// after a restart, or Redis lost it).
        #[serde(skip_serializing_if = "Option::is_none")]
        taken: Option<u64>,
        /// The protocol version the server speaks ([`crate::VERSION`]).
        version: u32,
        /// STUN and TURN servers for this client's peer connections, with credentials made for
        /// it (empty when the server hands out none).
        #[serde(rename = "iceServers", skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
        /// How long the credentials in `iceServers` stay valid, in seconds.
        #[serde(rename = "iceTtl", skip_serializing_if = "Option::is_none")]
        ice_ttl: Option<u64>,
    },
    /// Another peer entered the room.
    PeerJoined {
        /// The new peer's id.
        id: Cow<'a, str>,
        /// Whether *you* are polite toward that peer: your id sorts lower than theirs, or it
        /// is the room's SFU (and you are not).
        polite: bool,
        /// The peer is the room's SFU.
        #[serde(skip_serializing_if = "is_false")]
        sfu: bool,
        /// Who the peer is, from its room token (on servers that require tokens).
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<User>,
    },
    /// A peer left the room (it sent `leave`, or its grace period for resuming ended).
    PeerLeft {
        /// The id of the peer that left.
        id: Cow<'a, str>,
    },
    /// Data another peer of the room sent to you.
    Signal {
        /// The sender's id, set by the server.
        from: Cow<'a, str>,
        /// The data, exactly as the sender wrote it.
        data: Cow<'a, RawValue>,
    },
    /// A frame of yours was refused; the connection stays open.
    Error {
        /// What went wrong, for programs.
        code: ErrorCode,
        /// What went wrong, for people.
        message: Cow<'a, str>,
        /// For `unknown-peer`, the target that was refused.
        #[serde(skip_serializing_if = "Option::is_none")]
        peer: Option<Cow<'a, str>>,
    },
    /// The answer to a [`ClientMessage::Ping`].
    Pong,
    /// The answer to a [`ClientMessage::IceServers`]: the servers of `welcome` with new
    /// credentials.
    IceServers {
        /// As in `welcome`.
        #[serde(rename = "iceServers")]
        ice_servers: Vec<IceServer>,
        /// As in `welcome`.
        #[serde(rename = "iceTtl", skip_serializing_if = "Option::is_none")]
        ice_ttl: Option<u64>,
    },
}

/// A STUN or TURN server, in the shape of the W3C `RTCIceServer` (a page hands it to
/// `new RTCPeerConnection({iceServers})` as it is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:` and `turn:` URLs (RFC 7064, RFC 7065).
    pub urls: Vec<String>,
    /// The TURN username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A peer in a `welcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo<'a> {
    /// The peer's id.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// Whether *you* are polite toward that peer: your id sorts lower than theirs, or it is
    /// the room's SFU (and you are not).
    pub polite: bool,
    /// The peer is the room's SFU.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sfu: bool,
    /// Who the peer is, from its room token (on servers that require tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Who a peer is: the claims of its room token that the server relays to the room (`sub`,
/// and `name` and `metadata` when the token has them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user's identity (the token's `sub`).
    pub sub: String,
    /// A display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whatever else the application put in the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// Why the server refused a frame: the `code` of an `error` frame.
///
/// A client should treat an unknown code like [`ErrorCode::Unknown`] (newer servers may add
/// codes), so deserialization never fails on one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The frame is not JSON text.
    InvalidJson,
    /// The frame is JSON, but a field is missing or has the wrong type.
    InvalidFrame,
    /// The frame's `type` is not one the server knows.
    UnknownType,
    /// A binary WebSocket frame; the protocol is JSON text only.
    BinaryFrame,
    /// The frame is larger than the server's limit (256 KiB by default).
    FrameTooLarge,
    /// The connection sent frames faster than the server's rate limit; the frame was dropped.
    RateLimited,
    /// A `signal` before a successful `join`.
    NotJoined,
    /// A second `join` on a connection that already joined.
    AlreadyJoined,
    /// The target of a `signal` is not another peer of your room.
    UnknownPeer,
    /// The room name is empty, too long, or has control characters.
    InvalidRoom,
    /// The room has as many peers as the server allows.
    RoomFull,
    /// The server requires a token and the `join` carried none.
    TokenRequired,
    /// The token is malformed or its signature is wrong.
    TokenInvalid,
    /// The token's expiry has passed.
    TokenExpired,
    /// The token was made for another room.
    TokenWrongRoom,
    /// The application that runs the server refused the `join` (its join hook).
    JoinRefused,
    /// A `join` asked for the SFU role of a room that has an SFU, or without a token that
    /// grants it.
    SfuRefused,
    /// The server could not reach the nodes it shares rooms with (a cluster whose Redis does
    /// not answer): the `join` or `signal` was not carried out. Worth retrying shortly.
    Unavailable,
    /// A code this version of the crate does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code, in documentation order.
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::InvalidJson,
        ErrorCode::InvalidFrame,
        ErrorCode::UnknownType,
        ErrorCode::BinaryFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::UnknownPeer,
        ErrorCode::InvalidRoom,
        ErrorCode::RoomFull,
        ErrorCode::TokenRequired,
        ErrorCode::TokenInvalid,
        ErrorCode::TokenExpired,
        ErrorCode::TokenWrongRoom,
        ErrorCode::JoinRefused,
        ErrorCode::SfuRefused,
        ErrorCode::Unavailable,
        ErrorCode::Unknown,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid-json",
            ErrorCode::InvalidFrame => "invalid-frame",
            ErrorCode::UnknownType => "unknown-type",
            ErrorCode::BinaryFrame => "binary-frame",
            ErrorCode::FrameTooLarge => "frame-too-large",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::NotJoined => "not-joined",
            ErrorCode::AlreadyJoined => "already-joined",
            ErrorCode::UnknownPeer => "unknown-peer",
            ErrorCode::InvalidRoom => "invalid-room",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::TokenRequired => "token-required",
            ErrorCode::TokenInvalid => "token-invalid",
            ErrorCode::TokenExpired => "token-expired",
            ErrorCode::TokenWrongRoom => "token-wrong-room",
            ErrorCode::JoinRefused => "join-refused",
            ErrorCode::SfuRefused => "sfu-refused",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the server closed a WebSocket: the close frame's code and reason.
///
/// Standard codes (RFC 6455 §7.4.1) where one fits; the rest are in the private range
/// 4000-4999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: the client sent `leave`.
    Normal,
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1002: a malformed WebSocket frame (an unmasked client frame, a reserved bit or opcode, a
    /// fragmented control frame).
    ProtocolError,
    /// 1007: a text frame that is not UTF-8.
    InvalidUtf8,
    /// 1008: the connection kept sending refused frames (persistent abuse).
    PolicyViolation,
    /// 1009: a frame far above the size limit; it cannot be skipped, so the connection ends.
    MessageTooBig,
    /// 4001: the same id was resumed on another connection.
    Replaced,
    /// 4002: the client did not read its frames fast enough and its send queue filled up.
    SlowConsumer,
    /// 4003: the client answered no ping within the keepalive timeout.
    KeepaliveTimeout,
    /// 4004: the client sent no successful `join` within the join timeout.
    JoinTimeout,
}

impl CloseCode {
    /// Every close code the server sends.
    pub const ALL: [CloseCode; 10] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::InvalidUtf8,
        CloseCode::PolicyViolation,
        CloseCode::MessageTooBig,
        CloseCode::Replaced,
        CloseCode::SlowConsumer,
        CloseCode::KeepaliveTimeout,
        CloseCode::JoinTimeout,
    ];

    /// The numeric code of the close frame.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidUtf8 => 1007,
            CloseCode::PolicyViolation => 1008,
            CloseCode::MessageTooBig => 1009,
            CloseCode::Replaced => 4001,
            CloseCode::SlowConsumer => 4002,
            CloseCode::KeepaliveTimeout => 4003,
            CloseCode::JoinTimeout => 4004,
        }
    }

    /// The close frame's reason text (kebab-case, like error codes).
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "left",
            CloseCode::GoingAway => "server-shutting-down",
            CloseCode::ProtocolError => "protocol-error",
            CloseCode::InvalidUtf8 => "invalid-utf8",
            CloseCode::PolicyViolation => "too-many-errors",
            CloseCode::MessageTooBig => "frame-too-large",
            CloseCode::Replaced => "replaced",
            CloseCode::SlowConsumer => "slow-consumer",
            CloseCode::KeepaliveTimeout => "keepalive-timeout",
            CloseCode::JoinTimeout => "join-timeout",
        }
    }

    /// The close code with this number, if the server sends it.
    pub fn from_code(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// A frame that could not be parsed, with the error code the server answers it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// [`ErrorCode::InvalidJson`], [`ErrorCode::InvalidFrame`] or [`ErrorCode::UnknownType`].
    pub code: ErrorCode,
    /// What was wrong, naming the field.
    pub message: String,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for FrameError {}

impl FrameError {
    fn missing(kind: &str, field: &str) -> Self {
        FrameError {
            code: ErrorCode::InvalidFrame,
            message: format!("a {kind} frame needs `{field}`"),
        }
    }

    fn unknown_type(kind: &str) -> Self {
        FrameError {
            code: ErrorCode::UnknownType,
            message: format!("unknown frame type `{kind}`"),
        }
    }
}

impl From<serde_json::Error> for FrameError {
    fn from(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        let code = match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => ErrorCode::InvalidJson,
            Category::Data => ErrorCode::InvalidFrame,
        };
        FrameError {
            code,
            message: e.to_string(),
        }
    }
}

/// A present field, even when its value is `null` (a bare `Option<&RawValue>` reads `null` as
/// absent, and `null` is valid signal data).
fn present<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<&'a RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// An optional string that borrows from the frame when it has no escapes (serde's `borrow`
/// covers a bare `Cow<str>` only; inside an `Option` it would always copy). `null` reads as
/// absent, as JavaScript clients often send it.
fn borrowed<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    struct Optional;
    impl<'de> serde::de::Visitor<'de> for Optional {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(Visitor).map(Some)
        }
    }
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }
    }
    d.deserialize_option(Optional)
}

/// Every field any client frame has, flat: serde's internally tagged enums buffer their content
/// and cannot hold a borrowed `RawValue`, and a flat struct reads each field exactly once.
/// Unknown fields (a client's own `from`, for one) are ignored.
#[derive(Deserialize)]
#[serde(expecting = "a frame: a JSON object with a `type`")]
struct ClientEnvelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    room: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    token: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    resume: Option<Cow<'a, str>>,
    #[serde(default)]
    sfu: bool,
    #[serde(default)]
    peers: Option<Vec<Cow<'a, str>>>,
    #[serde(default)]
    received: Option<u64>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    to: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

impl<'a> ClientMessage<'a> {
    /// Parses a client frame. Unknown fields are ignored; the error says which code the server
    /// answers with.
    pub fn from_json(text: &'a str) -> Result<Self, FrameError> {
        let env: ClientEnvelope<'a> = serde_json::from_str(text)?;
        Ok(match &*env.kind {
            "join" => ClientMessage::Join {
                room: env
                    .room
                    .ok_or_else(|| FrameError::missing("join", "room"))?,
                token: env.token,
                resume: env.resume,
                sfu: env.sfu,
                peers: env.peers.unwrap_or_default(),
                received: env.received,
            },
            "signal" => ClientMessage::Signal {
                to: env.to.ok_or_else(|| FrameError::missing("signal", "to"))?,
                data: Cow::Borrowed(
                    env.data
                        .ok_or_else(|| FrameError::missing("signal", "data"))?,
                ),
            },
            "leave" => ClientMessage::Leave,
            "ping" => ClientMessage::Ping,
            "ice-servers" => ClientMessage::IceServers,
            other => return Err(FrameError::unknown_type(other)),
        })
    }

    /// A `signal` frame carrying `data`.
    pub fn signal(to: impl Into<Cow<'a, str>>, data: Box<RawValue>) -> Self {
        ClientMessage::Signal {
            to: to.into(),
            data: Cow::Owned(data),
        }
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        // Serializing borrowed strings and a RawValue into a String cannot fail.
        serde_json::to_string(self).expect("client frames always serialize")
    }
}

#[derive(Deserialize)]
#[serde(expecting = "a frame: a JSON object with a `type`")]
struct ServerEnvelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    room: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    peers: Option<Vec<PeerInfo<'a>>>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    resume: Option<Cow<'a, str>>,
    #[serde(default)]
    resumed: bool,
    #[serde(default)]
    taken: Option<u64>,
    #[serde(default)]
    version: Option<u32>,
    #[serde(default)]
    polite: Option<bool>,
    #[serde(default)]
    sfu: bool,
    #[serde(default)]
    user: Option<User>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    from: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default)]
    code: Option<ErrorCode>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    message: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    peer: Option<Cow<'a, str>>,
    #[serde(default, rename = "iceServers")]
    ice_servers: Option<Vec<IceServer>>,
    #[serde(default, rename = "iceTtl")]
    ice_ttl: Option<u64>,
}

impl<'a> ServerMessage<'a> {
    /// Whether a client counts this frame in a resuming `join`'s `received`: a `signal`, a
    /// `peer-joined` or a `peer-left` (what a server of several nodes numbers for each peer).
    pub fn counts_as_received(&self) -> bool {
        matches!(
            self,
            ServerMessage::Signal { .. }
                | ServerMessage::PeerJoined { .. }
                | ServerMessage::PeerLeft { .. }
        )
    }

    /// Parses a server frame. Clients should ignore frames whose type they do not know
    /// ([`ErrorCode::UnknownType`]): a newer server may send more.
    pub fn from_json(text: &'a str) -> Result<Self, FrameError> {
        let env: ServerEnvelope<'a> = serde_json::from_str(text)?;
        let id = |kind| {
            env.id
                .clone()
                .ok_or_else(|| FrameError::missing(kind, "id"))
        };
        Ok(match &*env.kind {
            "welcome" => ServerMessage::Welcome {
                id: id("welcome")?,
                room: env
                    .room
                    .ok_or_else(|| FrameError::missing("welcome", "room"))?,
                peers: env.peers.unwrap_or_default(),
                resume: env.resume.unwrap_or_default(),
                resumed: env.resumed,
                taken: env.taken,
                version: env.version.unwrap_or(crate::VERSION),
                ice_servers: env.ice_servers.unwrap_or_default(),
                ice_ttl: env.ice_ttl,
            },
            "peer-joined" => ServerMessage::PeerJoined {
                id: id("peer-joined")?,
                polite: env
                    .polite
                    .ok_or_else(|| FrameError::missing("peer-joined", "polite"))?,
                sfu: env.sfu,
                user: env.user,
            },
            "peer-left" => ServerMessage::PeerLeft {
                id: id("peer-left")?,
            },
            "signal" => ServerMessage::Signal {
                from: env
                    .from
                    .ok_or_else(|| FrameError::missing("signal", "from"))?,
                data: Cow::Borrowed(
                    env.data
                        .ok_or_else(|| FrameError::missing("signal", "data"))?,
                ),
            },
            "error" => ServerMessage::Error {
                code: env.code.unwrap_or(ErrorCode::Unknown),
                message: env.message.unwrap_or_default(),
                peer: env.peer,
            },
            "pong" => ServerMessage::Pong,
            "ice-servers" => ServerMessage::IceServers {
                ice_servers: env
                    .ice_servers
                    .ok_or_else(|| FrameError::missing("ice-servers", "iceServers"))?,
                ice_ttl: env.ice_ttl,
            },
            other => return Err(FrameError::unknown_type(other)),
        })
    }

    /// An `error` frame.
    pub fn error(code: ErrorCode, message: impl Into<Cow<'a, str>>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
            peer: None,
        }
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        // Serializing strings, booleans, integers and a RawValue into a String cannot fail.
        serde_json::to_string(self).expect("server frames always serialize")
    }
}
