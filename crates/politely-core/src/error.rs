//! Errors, split by cause (the shape of rustls's `Error`): the remote peer misbehaved, the
//! application misused the API, or the configuration is wrong. Nothing a peer sends panics the
//! engine; a peer error is reported and the message is dropped.

use crate::media::{ChannelId, TransceiverId};
use politely_proto::signal::SignalError;
use std::fmt;

/// Any error of the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The remote peer sent something unusable.
    Peer(PeerError),
    /// The application called the engine in a way it cannot honour.
    Api(ApiError),
    /// The configuration cannot work.
    Config(ConfigError),
    /// rtc failed where nothing the application or the peer did explains it: a bug in
    /// politely or in rtc. The text is rtc's. The engine stays usable; the step that failed
    /// (an offer, a channel) is what is lost.
    Internal(String),
}

/// The remote peer misbehaved: a malformed message, an SDP or candidate that rtc refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerError {
    /// The signal is not in the W3C shapes; the text names the offending field.
    MalformedSignal(&'static str),
    /// A well-formed message that politely does not support (pranswer, rollback on the wire).
    Unsupported(&'static str),
    /// rtc refused the peer's session description.
    InvalidDescription(String),
    /// rtc refused a candidate that did not belong to an ignored offer.
    InvalidCandidate(String),
}

/// The application misused the API.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiError {
    /// The engine was closed.
    Closed,
    /// No data channel with this id exists (it was closed, or never created).
    UnknownChannel(ChannelId),
    /// No transceiver with this id exists.
    UnknownTransceiver(TransceiverId),
    /// The channel is not open yet, or no longer.
    ChannelNotOpen(ChannelId),
    /// The arguments contradict each other or rtc's limits (a message larger than the
    /// negotiated maximum, say).
    InvalidArgument(String),
}

/// The configuration cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// Roles derived from ids need two different ids.
    EqualPeerIds,
    /// rtc refused to build a peer connection with these settings.
    Rtc(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Peer(e) => write!(f, "peer error: {e}"),
            Error::Api(e) => write!(f, "API misuse: {e}"),
            Error::Config(e) => write!(f, "configuration error: {e}"),
            Error::Internal(e) => write!(f, "internal error (rtc): {e}"),
        }
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::MalformedSignal(what) => write!(f, "malformed signal: {what}"),
            PeerError::Unsupported(what) => write!(f, "unsupported: {what}"),
            PeerError::InvalidDescription(e) => write!(f, "invalid session description: {e}"),
            PeerError::InvalidCandidate(e) => write!(f, "invalid candidate: {e}"),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Closed => f.write_str("the engine is closed"),
            ApiError::UnknownChannel(id) => write!(f, "unknown data channel {id}"),
            ApiError::UnknownTransceiver(id) => write!(f, "unknown transceiver {id}"),
            ApiError::ChannelNotOpen(id) => write!(f, "data channel {id} is not open"),
            ApiError::InvalidArgument(e) => write!(f, "invalid argument: {e}"),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::EqualPeerIds => f.write_str("local and remote peer ids are equal"),
            ConfigError::Rtc(e) => write!(f, "rtc refused the configuration: {e}"),
        }
    }
}

impl std::error::Error for Error {}
impl std::error::Error for PeerError {}
impl std::error::Error for ApiError {}
impl std::error::Error for ConfigError {}

impl From<PeerError> for Error {
    fn from(e: PeerError) -> Self {
        Error::Peer(e)
    }
}

impl From<SignalError> for PeerError {
    fn from(e: SignalError) -> Self {
        match e {
            SignalError::Malformed(what) => PeerError::MalformedSignal(what),
            SignalError::Unsupported(what) => PeerError::Unsupported(what),
        }
    }
}

impl From<SignalError> for Error {
    fn from(e: SignalError) -> Self {
        Error::Peer(e.into())
    }
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Error::Api(e)
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}
