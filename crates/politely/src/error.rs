//! The runtime's errors.

use politely_core::{ApiError, ConfigError};
use politely_proto::ErrorCode;
use std::{fmt, io};

/// What can go wrong in the runtime.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The peer, channel or session has ended.
    Closed,
    /// The call does not fit the current state (see [`ApiError`]).
    Api(ApiError),
    /// The configuration was refused (see [`ConfigError`]).
    Config(ConfigError),
    /// The engine failed inside rtc, through no fault of the call (see
    /// [`politely_core::Error::Internal`]).
    Internal(String),
    /// A socket could not be bound or used.
    Io(io::Error),
    /// The signaling server could not be reached, or broke the protocol.
    Signaling(String),
    /// The server refused to let us join.
    Refused {
        /// The server's code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Closed => f.write_str("closed"),
            Error::Api(e) => write!(f, "{e}"),
            Error::Config(e) => write!(f, "configuration: {e}"),
            Error::Internal(e) => write!(f, "internal: {e}"),
            Error::Io(e) => write!(f, "I/O: {e}"),
            Error::Signaling(e) => write!(f, "signaling: {e}"),
            Error::Refused { code, message } => write!(f, "join refused: {code}: {message}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Api(e) => Some(e),
            Error::Config(e) => Some(e),
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Error::Api(e)
    }
}

impl From<politely_core::Error> for Error {
    fn from(e: politely_core::Error) -> Self {
        match e {
            politely_core::Error::Api(e) => Error::Api(e),
            politely_core::Error::Config(e) => Error::Config(e),
            // The engine's calls report a peer's faults as events, never as results; anything
            // else is the engine's own.
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}
