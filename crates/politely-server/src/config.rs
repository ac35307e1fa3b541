//! The server's settings, with the defaults `politely serve` uses.

use politely_proto::User;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// How the server runs. `Config::default()` is what `politely serve` runs with no flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address to listen on. Default `127.0.0.1:8080`: opening it wider is a choice.
    pub listen: SocketAddr,
    /// The most peers a room holds (connected or within their resume grace period). Default 16.
    pub max_room_size: usize,
    /// The largest text frame accepted, in bytes. Default 256 KiB. A larger frame is refused
    /// with `frame-too-large`; one larger than four times this ends the connection (1009),
    /// because a WebSocket frame cannot be skipped without reading it.
    pub max_frame_bytes: usize,
    /// The per-connection token bucket for incoming frames; `None` disables it.
    pub rate_limit: Option<RateLimit>,
    /// The keys of room tokens (see [`crate::token`]). With any, `join` needs a token signed
    /// with one of them; with none (the default), anyone may join. Several keys at once let a
    /// key be rotated: mint with the new one while the old one's tokens run out.
    pub secrets: Vec<Secret>,
    /// How long a dropped connection keeps its id and room slot. Default 10 s.
    pub resume_grace: Duration,
    /// The key of resume tokens. With one, a token stays good across a restart of the server
    /// (or on another server with the same key): a peer whose call is up resumes its id, and
    /// the places of the peers it names are kept for them for [`resume_grace`](Self::resume_grace).
    /// Default none: a random key per process, so a restart gives every peer a new id.
    pub resume_secret: Option<Secret>,
    /// How old a resume token may be for a server that did not issue it (one restarted since)
    /// to accept it. Default 24 h: a session whose signaling has not reconnected for longer
    /// joins afresh after a restart.
    pub resume_max_age: Duration,
    /// The most frames queued for one client (while it is slow, or within its grace period).
    /// Default 1024.
    pub send_queue_frames: usize,
    /// The most bytes queued for one client. Default 4 MiB.
    pub send_queue_bytes: usize,
    /// The most memory all clients' send queues may take together. Default 256 MiB. A queue
    /// counts twice its frame bytes (its buffer grows by doubling) and the read buffers its
    /// large relayed frames keep alive. A frame that finds the budget spent disconnects its
    /// target as a slow consumer (4002), as a full queue does; the sender is not disturbed.
    /// Queues reserve the budget in 64 KiB steps.
    pub max_queued_bytes: usize,
    /// The most TCP connections open at once (WebSocket or plain HTTP). Default 10,000. Past it
    /// a new connection is answered `503` and closed. Applies to [`crate::Server`], not to
    /// [`crate::app`] mounted elsewhere.
    pub max_connections: usize,
    /// The most TCP connections open at once from one client address. Default 256.
    pub max_connections_per_address: usize,
    /// How long a client has to send a whole HTTP request head (the WebSocket upgrade, or any
    /// other request, each request of a kept-alive connection included). Default 10 s.
    pub request_timeout: Duration,
    /// The application's say on joins: called for every ordinary `join` (not a resume) that
    /// passed the server's own checks (room name, token), before the peer enters the room. A
    /// refusal is answered with `join-refused` and its text. Default none.
    pub join_hook: Option<JoinHook>,
    /// How often the server pings every connection. Default 15 s.
    pub ping_interval: Duration,
    /// How long a connection may stay silent (no frame, no pong) before it counts as dropped.
    /// Default 45 s; silence is checked at each ping, so the close comes up to one ping interval
    /// later.
    pub ping_timeout: Duration,
    /// How long a new connection has to join. Default 10 s.
    pub join_timeout: Duration,
    /// The `Origin`s a browser may connect from; `None` (the default) allows any. Clients that
    /// send no `Origin` (native ones) are always allowed.
    pub allowed_origins: Option<Vec<String>>,
    /// How many refused frames a connection may send in a burst before it is closed (1008);
    /// the allowance refills by one per second. Default 20.
    pub max_strikes: u32,
    /// Each connection's initial WebSocket read size, in bytes. Default 1 KiB: an idle
    /// connection holds this much; under load reads double, up to 16 KiB, and shrink back once
    /// the connection is idle.
    pub read_buffer_bytes: usize,
    /// TLS termination in the server (`wss://`, `https://`), e.g. from [`tls_from_pem`].
    /// Default none: plain TCP, with a proxy in front terminating TLS (the usual deployment).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// TURN servers handed to clients in `welcome` with short-lived credentials. Default none.
    pub turn: Option<crate::Turn>,
    /// Several server nodes sharing rooms through Redis: any node takes any client, and a
    /// room's members may sit on any nodes. Default none: one node, rooms in memory. Needs
    /// [`crate::Server::bind`], which connects to Redis.
    pub redis: Option<Redis>,
}

/// How a node reaches the others (see [`Config::redis`]).
#[derive(Debug, Clone)]
pub struct Redis {
    /// `redis://host:port/db`, or `redis+unix:///path/to/socket`.
    pub url: String,
    /// This node's name, unique among the nodes; `None` picks a random one.
    pub node: Option<String>,
    /// What every key and channel name starts with, so that several deployments can share
    /// one Redis. Default `politely:`.
    pub prefix: String,
    /// How many recent frames Redis keeps for each peer, from which a node fills a gap in
    /// what it heard (after its subscription dropped). Default 1024.
    pub backlog: usize,
}

impl Redis {
    /// A node of the deployment on the Redis at `url`, with the default settings.
    pub fn new(url: impl Into<String>) -> Self {
        Redis {
            url: url.into(),
            node: None,
            prefix: "politely:".into(),
            backlog: 1024,
        }
    }
}

/// A TLS configuration from PEM files: the certificate chain (leaf first) and its private key.
pub fn tls_from_pem(
    certificates: &std::path::Path,
    key: &std::path::Path,
) -> std::io::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |what: &std::path::Path, e: &dyn std::fmt::Display| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", what.display()),
        )
    };
    let chain = CertificateDer::pem_file_iter(certificates)
        .map_err(|e| invalid(certificates, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(certificates, &e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(key, &e))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(certificates, &e))?
    .with_no_client_auth()
    .with_single_cert(chain, key_der)
    .map_err(|e| invalid(certificates, &e))?;
    Ok(Arc::new(config))
}

/// What a [`JoinHook`] decides on.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct JoinRequest<'a> {
    /// The room asked for.
    pub room: &'a str,
    /// Who the token says the client is (with a server that requires tokens, and a JWT).
    pub user: Option<&'a User>,
    /// The client's address, when the server accepted the connection itself.
    pub address: Option<SocketAddr>,
    /// The `Origin` of the WebSocket request, if it had one (browsers send it).
    pub origin: Option<&'a str>,
}

/// Decides joins for an application that embeds the server (see [`Config::join_hook`]):
/// `Ok(())` admits, `Err(reason)` refuses with `join-refused` and `reason` as the message.
/// It runs on the connection's task, so it must be quick; it must not block.
#[derive(Clone)]
pub struct JoinHook(Arc<Decide>);

/// The function behind a [`JoinHook`].
type Decide = dyn Fn(&JoinRequest<'_>) -> Result<(), String> + Send + Sync;

impl JoinHook {
    /// A hook from a function.
    pub fn new(
        decide: impl Fn(&JoinRequest<'_>) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        JoinHook(Arc::new(decide))
    }

    pub(crate) fn decide(&self, request: &JoinRequest<'_>) -> Result<(), String> {
        (self.0)(request)
    }
}

impl std::fmt::Debug for JoinHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinHook(..)")
    }
}

/// A token bucket: `per_second` frames on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// The sustained rate, frames per second.
    pub per_second: f64,
    /// The bucket's size, frames.
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: 200.0,
            burst: 400.0,
        }
    }
}

/// A key room tokens are signed with (HMAC-SHA256).
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from its bytes (a passphrase's UTF-8, say). Use at least 32 random bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            max_room_size: 16,
            max_frame_bytes: 256 * 1024,
            rate_limit: Some(RateLimit::default()),
            secrets: Vec::new(),
            resume_grace: Duration::from_secs(10),
            resume_secret: None,
            resume_max_age: Duration::from_secs(24 * 3600),
            send_queue_frames: 1024,
            send_queue_bytes: 4 * 1024 * 1024,
            max_queued_bytes: 256 * 1024 * 1024,
            max_connections: 10_000,
            max_connections_per_address: 256,
            request_timeout: Duration::from_secs(10),
            join_hook: None,
            ping_interval: Duration::from_secs(15),
            ping_timeout: Duration::from_secs(45),
            join_timeout: Duration::from_secs(10),
            allowed_origins: None,
            max_strikes: 20,
            read_buffer_bytes: 1024,
            tls: None,
            turn: None,
            redis: None,
        }
    }
}
