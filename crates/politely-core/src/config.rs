//! Engine configuration.

use crate::error::ConfigError;
use politely_proto::signal::ConnectionId;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// A DTLS identity (an ECDSA P-256 certificate) that connections can share.
///
/// Generating one costs a key pair; a browser keeps one per origin rather than one per
/// connection. Without one, rtc generates a certificate for every connection.
#[derive(Clone)]
pub struct Certificate(pub(crate) RTCCertificate);

impl Certificate {
    /// Generates a new self-signed ECDSA P-256 certificate (rtc's default kind). rtc draws
    /// the key from its crypto provider's randomness and stamps validity from the system clock.
    pub fn generate() -> Result<Self, ConfigError> {
        let rtc_err = |e: &dyn fmt::Display| ConfigError::Rtc(e.to_string());
        let provider = rtc::crypto::default_provider().map_err(|e| rtc_err(&e))?;
        let params =
            CertificateParams::new(vec!["politely".to_owned()]).map_err(|e| rtc_err(&e))?;
        let cert = RTCCertificate::generate(
            provider.crypto(),
            rtc::crypto::SignatureScheme::EcdsaP256Sha256,
            params,
        )
        .map_err(|e| rtc_err(&e))?;
        Ok(Self(cert))
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Certificate(ECDSA P-256)")
    }
}

/// A STUN or TURN server (W3C `RTCIceServer`), handed to rtc with the configuration.
///
/// The engine does no I/O, so it gathers nothing from these itself: the runtime asks the
/// STUN servers for its mapped addresses and passes them in [`Config::reflexive_addrs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:host:port` or `turn:host:port` URLs.
    pub urls: Vec<String>,
    /// The TURN username.
    pub username: String,
    /// The TURN credential.
    pub credential: String,
}

impl IceServer {
    /// A STUN server without credentials, e.g. `IceServer::stun("stun:127.0.0.1:3478")`.
    pub fn stun(url: impl Into<String>) -> Self {
        Self {
            urls: vec![url.into()],
            username: String::new(),
            credential: String::new(),
        }
    }
}

/// Which local candidates a connection uses (W3C `RTCIceTransportPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IceTransportPolicy {
    /// Host, server-reflexive and relay candidates.
    #[default]
    All,
    /// Relay candidates only: every packet goes through the TURN server, and the remote never
    /// learns a local or reflexive address.
    Relay,
}

/// Who yields when both sides offer at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This side rolls back its own offer and accepts the remote's.
    Polite,
    /// This side ignores a colliding remote offer.
    Impolite,
    /// Derived from the two peers' server-assigned ids: the lower id is polite (OWT's rule,
    /// and "first to connect is polite" when ids are time-ordered). Stable across reconnects.
    FromIds {
        /// This peer's id.
        local: String,
        /// The remote peer's id.
        remote: String,
    },
}

impl Role {
    /// Whether this side is polite.
    pub fn is_polite(&self) -> Result<bool, ConfigError> {
        match self {
            Role::Polite => Ok(true),
            Role::Impolite => Ok(false),
            Role::FromIds { local, remote } if local == remote => Err(ConfigError::EqualPeerIds),
            Role::FromIds { local, remote } => Ok(local < remote),
        }
    }
}

/// How this side starts a renegotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Negotiation {
    /// Offer whenever a change needs one; a collision resolves by the pattern (the W3C
    /// perfect negotiation). The default.
    #[default]
    Perfect,
    /// Ask the other side first and offer under the lease it grants (seed 003's gate), for a
    /// peer that would rather not roll back: a client of an SFU, say. The other side defers
    /// its own offers while the lease is out. A connection's first offer is not gated.
    /// Perfect negotiation still runs underneath, so a lease that expires in flight costs a
    /// rollback, not a hang.
    Gate {
        /// The lease to ask for: long enough for one offer and its answer to cross.
        lease: Duration,
    },
}

/// Everything an [`Engine`](crate::Engine) needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Polite or impolite.
    pub role: Role,
    /// Local transport addresses: one host candidate each. The engine never binds them; the
    /// caller owns the sockets and feeds datagrams in.
    pub local_addrs: Vec<SocketAddr>,
    /// Server-reflexive addresses, `(base, mapped)`: a local address of
    /// [`local_addrs`](Self::local_addrs) and the address a STUN server saw it as. Each is one
    /// `srflx` candidate, sent from its base.
    pub reflexive_addrs: Vec<(SocketAddr, SocketAddr)>,
    /// Relayed addresses, `(base, relayed)`: a TURN allocation made from a local address of
    /// [`local_addrs`](Self::local_addrs), and the address the TURN server relays from. Each
    /// is one `relay` candidate. Transmits whose source is a relayed address must go through
    /// the TURN server (the caller's TURN client), and what it relays is fed in with the
    /// relayed address as destination.
    pub relay_addrs: Vec<(SocketAddr, SocketAddr)>,
    /// Which local candidates to use: all (the default), or relay candidates only (W3C
    /// `iceTransportPolicy: "relay"`: the remote never learns a local address).
    pub ice_transport_policy: IceTransportPolicy,
    /// STUN and TURN servers, passed to rtc's configuration (which validates them).
    pub ice_servers: Vec<IceServer>,
    /// The id of the first connection. Two engines configured with the same id share their
    /// first connection (glare then resolves by rollback); by default each side draws its own
    /// and a collision of two brand-new connections resolves by id (the polite side adopts).
    pub connection_id: Option<ConnectionId>,
    /// Seed for every random value the engine draws itself (connection ids, SSRCs, watchdog
    /// jitter). rtc draws its own DTLS, ICE and SCTP randomness.
    pub seed: u64,
    /// Trickle local candidates as `candidate` messages, ending with `candidate: null`. Local
    /// candidates are always embedded in the descriptions too.
    pub trickle: bool,
    /// How long a negotiation may make no progress before the watchdog acts. A random jitter
    /// of up to half this is added, so two peers stuck the same way do not retry in lockstep.
    pub watchdog_timeout: Duration,
    /// Carry a data section (`m=application`) in a connection's first offer even when the
    /// application has not created a data channel yet. rtc 0.21 starts SCTP only at the moment
    /// DTLS completes, so a data section added by a later renegotiation never connects and its
    /// channels never open. The section is carried by an out-of-band negotiated channel on
    /// stream 1000 that is never announced, so neither this application nor the peer's sees
    /// it. Turn it off for media-only connections that will never open a data channel.
    pub data_section: bool,
    /// The DTLS identity of every connection; `None` lets rtc generate one per connection.
    pub certificate: Option<Certificate>,
    /// Perfect negotiation, or ask before each renegotiation ([`Negotiation::Gate`]).
    pub negotiation: Negotiation,
    /// The longest lease this side grants when the other side asks (whatever this side's own
    /// [`negotiation`](Self::negotiation)): its own offers wait at most this long.
    pub max_lease: Duration,
    /// Interval between ICE connectivity checks. rtc's default is 200 ms; 20 ms halves the time
    /// to connect on low-latency paths at the cost of a few more STUN packets.
    pub ice_check_interval: Duration,
}

impl Config {
    /// A configuration with the given role and local addresses, and defaults for the rest.
    pub fn new(role: Role, local_addrs: Vec<SocketAddr>) -> Self {
        Self {
            role,
            local_addrs,
            reflexive_addrs: Vec::new(),
            relay_addrs: Vec::new(),
            ice_transport_policy: IceTransportPolicy::All,
            ice_servers: Vec::new(),
            connection_id: None,
            seed: 0,
            trickle: true,
            watchdog_timeout: Duration::from_secs(5),
            data_section: true,
            certificate: None,
            ice_check_interval: Duration::from_millis(20),
            negotiation: Negotiation::Perfect,
            max_lease: Duration::from_secs(2),
        }
    }
}
