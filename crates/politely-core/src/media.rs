//! Application-level handles and options: data channels and transceivers.
//!
//! Ids are the engine's own, not rtc's: rtc's transceiver ids are indices that shift when a
//! rollback removes a transceiver, and a connection replaced by a new one (new connection id)
//! gets new rtc objects. The engine's ids stay valid across both.

use std::fmt;

/// A data channel of this engine, stable across rollbacks and connection replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelId(pub(crate) u32);

/// A transceiver of this engine, stable across rollbacks and connection replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransceiverId(pub(crate) u32);

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ch{}", self.0)
    }
}

impl fmt::Display for TransceiverId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tr{}", self.0)
    }
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MediaKind {
    /// An audio m-section (Opus).
    Audio,
    /// A video m-section (VP8).
    Video,
}

/// A transceiver's direction (W3C `RTCRtpTransceiverDirection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Send and receive.
    SendRecv,
    /// Send only.
    SendOnly,
    /// Receive only.
    RecvOnly,
    /// Neither.
    Inactive,
}

impl Direction {
    /// The direction as the other end sees it.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// Whether this direction sends.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether this direction receives.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The direction that sends if `send` and receives if `recv`.
    pub fn from_send_recv(send: bool, recv: bool) -> Direction {
        match (send, recv) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// What both directions allow: it sends only if both send, receives only if both receive.
    /// An answer's direction is the transceiver's direction intersected with the reverse of the
    /// offered one (JSEP, RFC 9429 §5.3.1), so it never widens the offer.
    pub fn intersect(self, other: Direction) -> Direction {
        Direction::from_send_recv(
            self.sends() && other.sends(),
            self.receives() && other.receives(),
        )
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        })
    }
}

/// An RTP header extension (RFC 8285) the engine negotiates, known by its URI. The id it has
/// on the wire is each connection's own (`a=extmap`): the engine names extensions by URI in
/// [`MediaPacket::extensions`] and gives them this connection's id when it writes them, so a
/// packet forwarded from one connection to another keeps its extensions whatever ids the two
/// negotiated. Extensions the remote did not negotiate are not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum HeaderExtension {
    /// `urn:ietf:params:rtp-hdrext:ssrc-audio-level` (RFC 6464): the audio level of the
    /// packet, which a browser reports as the receiver's `audioLevel` and an SFU's speaker
    /// detection reads without decoding.
    AudioLevel,
}

impl HeaderExtension {
    /// Every extension the engine negotiates.
    ///
    /// Only audio level for now, at id 1 as Chromium offers it: an extension whose id differs
    /// between the two ends' offers on one m-section makes Chromium refuse the description
    /// after a glare ("RTP extension ID reassignment not supported"), and rtc numbers
    /// extensions in the order they are registered.
    pub const ALL: [Self; 1] = [Self::AudioLevel];

    /// The extension's URI, as `a=extmap` names it.
    pub const fn uri(self) -> &'static str {
        match self {
            Self::AudioLevel => "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        }
    }

    /// The extension with this URI, if the engine negotiates it.
    pub fn from_uri(uri: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.uri() == uri)
    }

    /// The kind of media it is negotiated for.
    pub const fn kind(self) -> MediaKind {
        match self {
            Self::AudioLevel => MediaKind::Audio,
        }
    }
}

/// One RTP packet received on a transceiver's remote track.
///
/// The payload is the RTP payload as sent: for Opus one whole frame, for VP8 a fragment of a
/// frame behind its payload descriptor (`marker` is set on the last fragment of a frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPacket {
    /// The transceiver that received it.
    pub transceiver: TransceiverId,
    /// The negotiated payload type.
    pub payload_type: u8,
    /// The RTP sequence number.
    pub sequence_number: u16,
    /// The RTP timestamp, in the codec's clock rate (48 kHz for Opus, 90 kHz for VP8).
    pub timestamp: u32,
    /// The RTP marker bit.
    pub marker: bool,
    /// The header extensions it carried that the engine negotiates, by URI, with their values.
    /// [`Engine::write_rtp`](crate::Engine::write_rtp) writes them with the ids of the
    /// connection it writes on.
    pub extensions: Vec<(HeaderExtension, Vec<u8>)>,
    /// The RTP payload.
    pub payload: Vec<u8>,
}

/// The `a=msid` of a sending track: the ids the remote sees as the W3C `track` event's
/// `streams[0].id` and `track.id`. Without one, the engine names both after the track's SSRC.
///
/// Both must be `token` characters (RFC 8830 §2): letters, digits and ``!#$%&'*+-.^_`{|}~``.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrackLabel {
    /// The media stream id.
    pub stream_id: String,
    /// The track id.
    pub track_id: String,
}

impl TrackLabel {
    /// Whether both ids are non-empty SDP tokens of at most 64 characters.
    pub fn is_valid(&self) -> bool {
        let token = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`{|}~".contains(&b))
        };
        token(&self.stream_id) && token(&self.track_id)
    }
}

/// Options of a new data channel (W3C `RTCDataChannelInit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelOptions {
    /// Deliver in order (default true).
    pub ordered: bool,
    /// Give up on a message after this many retransmissions.
    pub max_retransmits: Option<u16>,
    /// Give up on a message after this many milliseconds.
    pub max_packet_life_time: Option<u16>,
    /// The subprotocol name.
    pub protocol: String,
    /// An out-of-band negotiated stream id; `None` announces the channel in-band (DCEP), with
    /// the id chosen by DTLS role once it is known (RFC 8832 §6: client even, server odd).
    pub negotiated: Option<u16>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self {
            ordered: true,
            max_retransmits: None,
            max_packet_life_time: None,
            protocol: String::new(),
            negotiated: None,
        }
    }
}

/// Who opened a data channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// This side created it.
    Local,
    /// The remote side created it.
    Remote,
}

/// A snapshot of one transceiver, for inspection and convergence checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransceiverInfo {
    /// The engine's id.
    pub id: TransceiverId,
    /// Audio or video.
    pub kind: MediaKind,
    /// The mid, once negotiated; never a provisional one.
    pub mid: Option<String>,
    /// The preferred direction.
    pub direction: Direction,
    /// The negotiated direction, if negotiated.
    pub current_direction: Option<Direction>,
    /// Who created it.
    pub origin: Origin,
    /// Whether a local track is attached (it can send media).
    pub has_track: bool,
    /// The remote's `a=msid` for this m-section, once a remote description gave one: which
    /// of the remote's streams and tracks arrives here.
    pub remote_label: Option<TrackLabel>,
}

/// A snapshot of one data channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// The engine's id.
    pub id: ChannelId,
    /// The label.
    pub label: String,
    /// Who created it.
    pub origin: Origin,
    /// Whether it is open.
    pub open: bool,
    /// The SCTP stream id, once assigned.
    pub stream_id: Option<u16>,
}
