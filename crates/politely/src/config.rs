//! Configuration of peers and sessions.

pub use politely_core::{IceServer, IceTransportPolicy, Negotiation};
use std::net::IpAddr;
use std::time::Duration;

/// Which local addresses a peer connection binds its UDP sockets to. Each bound socket is
/// one host candidate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Bind {
    /// Every address of this machine's interfaces except loopback and link-local (what a
    /// browser gathers). This is the default for real deployments.
    #[default]
    Interfaces,
    /// Exactly these addresses, each on a port the system picks. Tests and the demo use
    /// `127.0.0.1` so that nothing leaves the machine.
    Addrs(Vec<IpAddr>),
}

impl Bind {
    /// Only `127.0.0.1`: connections that never leave this machine.
    pub fn loopback() -> Self {
        Bind::Addrs(vec![IpAddr::from([127, 0, 0, 1])])
    }
}

/// How messages that arrive on data channels reach the application.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Delivery {
    /// As [`PeerEvent::Message`](crate::PeerEvent::Message) events, in order with every other
    /// event of the peer (a message never comes before its channel's open event). The simplest
    /// choice for an application with one event loop.
    #[default]
    Events,
    /// On each channel's own stream, [`DataChannel::recv`](crate::DataChannel::recv), for
    /// applications that hand channels to separate tasks. Decided up front so that no
    /// message can slip to the other path.
    PerChannel,
}

/// Everything a peer connection needs beyond its role and its signaling.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The local addresses to gather host candidates on.
    pub bind: Bind,
    /// STUN servers to gather server-reflexive candidates from, and TURN servers (`turn:`
    /// over UDP, with their credentials) to allocate a relay candidate on. A [`Session`]
    /// adds the servers its signaling server hands out.
    ///
    /// [`Session`]: crate::Session
    pub ice_servers: Vec<IceServer>,
    /// All candidates (the default), or relay candidates only: every packet then goes
    /// through the TURN server, and the remote peer never learns a local address.
    pub ice_transport_policy: IceTransportPolicy,
    /// How long to wait for a STUN or TURN server's answer before going on without it.
    pub stun_timeout: Duration,
    /// How long a negotiation may make no progress before the engine's watchdog acts.
    pub watchdog_timeout: Duration,
    /// Interval between ICE connectivity checks while connecting (RFC 8445's pacing, Ta).
    /// rtc's default is 200 ms and browsers use 50 ms; a connection waits for about one
    /// interval before its first check succeeds, so 5 ms (the RFC's floor) connects in
    /// under 10 ms on a LAN at the cost of a few more STUN packets while connecting
    /// (measured on loopback: 24 ms median at 20 ms, 9 ms at 5 ms).
    pub ice_check_interval: Duration,
    /// Perfect negotiation (the default), or ask the other side before each renegotiation
    /// ([`Negotiation::Gate`], for a client of an SFU that would rather not roll back). Every
    /// peer keeps the gate when the other side asks, whatever this says.
    pub negotiation: Negotiation,
    /// How incoming data-channel messages are delivered.
    pub delivery: Delivery,
    /// Capacity of the peer's event queue, and of each channel's queue with
    /// [`Delivery::PerChannel`]. When the application does not keep up, the peer connection
    /// waits for it (as a socket that is not read does), so nothing is dropped.
    pub queue_capacity: usize,
    /// A data channel's [`send`](crate::DataChannel::send_text) waits while more than this
    /// many bytes are buffered and unacknowledged on it.
    pub send_high_water: usize,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            bind: Bind::default(),
            ice_servers: Vec::new(),
            ice_transport_policy: IceTransportPolicy::All,
            stun_timeout: Duration::from_secs(2),
            watchdog_timeout: Duration::from_secs(5),
            ice_check_interval: Duration::from_millis(5),
            negotiation: Negotiation::Perfect,
            delivery: Delivery::default(),
            queue_capacity: 256,
            send_high_water: 1 << 20,
        }
    }
}

impl PeerConfig {
    /// A configuration that binds only `127.0.0.1`.
    pub fn loopback() -> Self {
        Self {
            bind: Bind::loopback(),
            ..Self::default()
        }
    }
}

/// Configuration of a [`Session`](crate::Session).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Applied to the connection with every peer of the room.
    pub peer: PeerConfig,
    /// A room token, when the server requires one (`politely token`).
    pub token: Option<String>,
    /// How long to keep trying to resume after the signaling connection drops. Keep it
    /// within the server's resume grace period (10 s by default) to keep the same id.
    pub reconnect_for: Duration,
    /// How long to wait for the server's `welcome`.
    pub join_timeout: Duration,
    /// For a `wss://` server: certificate authorities (DER) trusted besides the webpki roots,
    /// for a private deployment or a test.
    pub trusted_certificates: Vec<Vec<u8>>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            peer: PeerConfig::default(),
            token: None,
            reconnect_for: Duration::from_secs(8),
            join_timeout: Duration::from_secs(10),
            trusted_certificates: Vec::new(),
        }
    }
}

impl SessionConfig {
    /// A configuration whose peer connections bind only `127.0.0.1`.
    pub fn loopback() -> Self {
        Self {
            peer: PeerConfig::loopback(),
            ..Self::default()
        }
    }
}
