//! Candidate gathering: UDP sockets on the configured addresses (host candidates), their
//! mapped addresses as seen by STUN servers (server-reflexive candidates), and allocations on
//! TURN servers made from them (relay candidates).

use crate::config::{Bind, IceServer, IceTransportPolicy, PeerConfig};
use crate::error::Error;
use crate::turn::{self, Allocation};
use rtc::stun::message::{BINDING_REQUEST, Getter, Message, TransactionId};
use rtc::stun::xoraddr::XorMappedAddress;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;

/// The sockets of one peer connection, one per local address, and the reflexive addresses
/// STUN found for them.
pub(crate) struct Gathered {
    pub(crate) sockets: Vec<UdpSocket>,
    pub(crate) local_addrs: Vec<SocketAddr>,
    /// `(base, mapped)`: the local socket address and what a STUN server saw.
    pub(crate) reflexive: Vec<(SocketAddr, SocketAddr)>,
    /// TURN allocations, at most one per socket.
    pub(crate) relays: Vec<Allocation>,
}

impl Gathered {
    /// `(base, relayed)` of each allocation.
    pub(crate) fn relay_addrs(&self) -> Vec<(SocketAddr, SocketAddr)> {
        self.relays
            .iter()
            .map(|r| (self.local_addrs[r.socket], r.relayed))
            .collect()
    }
}

/// Binds a socket on every configured address and asks the STUN servers about each.
pub(crate) async fn gather(config: &PeerConfig) -> Result<Gathered, Error> {
    let ips = local_ips(&config.bind)?;
    if ips.is_empty() {
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "no local address to gather candidates on",
        )));
    }
    let mut sockets = Vec::with_capacity(ips.len());
    let mut local_addrs = Vec::with_capacity(ips.len());
    for ip in ips {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        local_addrs.push(socket.local_addr()?);
        sockets.push(socket);
    }
    let servers = stun_servers(&config.ice_servers).await;
    let mut reflexive = Vec::new();
    for (socket, &base) in sockets.iter().zip(&local_addrs) {
        for &server in servers.iter().filter(|s| s.is_ipv4() == base.is_ipv4()) {
            match binding(socket, server, config.stun_timeout).await {
                Ok(mapped) => {
                    tracing::debug!(%base, %server, %mapped, "server-reflexive address");
                    if !reflexive.contains(&(base, mapped)) {
                        reflexive.push((base, mapped));
                    }
                    break;
                }
                Err(e) => tracing::warn!(%base, %server, "STUN binding failed: {e}"),
            }
        }
    }
    let mut relays = Vec::new();
    let turn_servers = turn_servers(&config.ice_servers).await;
    for (index, (socket, &base)) in sockets.iter().zip(&local_addrs).enumerate() {
        for (server, ice) in turn_servers
            .iter()
            .filter(|s| s.0.is_ipv4() == base.is_ipv4())
        {
            let credentials = (ice.username.as_str(), ice.credential.as_str());
            match Allocation::allocate(socket, index, *server, credentials, config.stun_timeout)
                .await
            {
                Ok(allocation) => {
                    tracing::debug!(%base, %server, relayed = %allocation.relayed, "TURN allocation");
                    relays.push(allocation);
                    break;
                }
                Err(e) => tracing::warn!(%base, %server, "TURN allocation failed: {e}"),
            }
        }
    }
    if config.ice_transport_policy == IceTransportPolicy::Relay && relays.is_empty() {
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "the ICE transport policy is relay-only and no TURN server gave an allocation",
        )));
    }
    Ok(Gathered {
        sockets,
        local_addrs,
        reflexive,
        relays,
    })
}

/// The addresses [`Bind`] names.
fn local_ips(bind: &Bind) -> Result<Vec<IpAddr>, Error> {
    match bind {
        Bind::Addrs(ips) => Ok(ips.clone()),
        Bind::Interfaces => {
            // Link-local addresses need a scope a candidate cannot carry.
            let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()?
                .into_iter()
                .filter(|i| !i.is_loopback() && !i.is_link_local())
                .map(|i| i.ip())
                .collect();
            ips.sort();
            ips.dedup();
            Ok(ips)
        }
    }
}

/// The socket addresses of the `stun:` URLs (`stun:host[:port]`, port 3478 by default).
async fn stun_servers(servers: &[IceServer]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for url in servers.iter().flat_map(|s| &s.urls) {
        let Some(rest) = url.strip_prefix("stun:") else {
            continue;
        };
        let rest = rest.split('?').next().unwrap_or_default();
        let host_port = turn::with_default_port(rest, 3478);
        match tokio::net::lookup_host(&host_port).await {
            Ok(addrs) => out.extend(addrs),
            Err(e) => tracing::warn!(url, "cannot resolve the STUN server: {e}"),
        }
    }
    out
}

/// The socket addresses of the `turn:` URLs, each with its server entry (for the
/// credentials).
async fn turn_servers(servers: &[IceServer]) -> Vec<(SocketAddr, &IceServer)> {
    let mut out = Vec::new();
    for server in servers {
        for url in server.urls.iter().filter(|u| u.starts_with("turn")) {
            let Some(host_port) = turn::turn_host_port(url) else {
                tracing::warn!(url, "not a TURN URL this client uses (turn: over UDP)");
                continue;
            };
            match tokio::net::lookup_host(&host_port).await {
                Ok(addrs) => out.extend(addrs.map(|a| (a, server))),
                Err(e) => tracing::warn!(url, "cannot resolve the TURN server: {e}"),
            }
        }
    }
    out
}

/// One STUN binding request (RFC 8489 §6) from `socket` to `server`, retransmitted a few
/// times within `timeout`; returns the XOR-MAPPED-ADDRESS of the success response.
async fn binding(
    socket: &UdpSocket,
    server: SocketAddr,
    timeout: Duration,
) -> io::Result<SocketAddr> {
    let invalid =
        |e: rtc::shared::error::Error| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let mut request = Message::new();
    request
        .build(&[Box::<TransactionId>::default(), Box::new(BINDING_REQUEST)])
        .map_err(invalid)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 1500];
    // RFC 8489 §6.2.1 retransmits with doubling intervals; on the paths this runs on a short
    // first interval is what matters.
    let mut interval = Duration::from_millis(100);
    loop {
        socket.send_to(&request.raw, server).await?;
        let wait = tokio::time::Instant::now() + interval;
        loop {
            let until = wait.min(deadline);
            match tokio::time::timeout_at(until, socket.recv_from(&mut buf)).await {
                Ok(Ok((n, from))) if from == server => {
                    let mut response = Message::new();
                    response.raw = buf[..n].to_vec();
                    if response.decode().is_err()
                        || response.transaction_id != request.transaction_id
                    {
                        continue;
                    }
                    let mut mapped = XorMappedAddress::default();
                    mapped.get_from(&response).map_err(invalid)?;
                    return Ok(SocketAddr::new(mapped.ip, mapped.port));
                }
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_) => break,
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no STUN response"));
        }
        interval *= 2;
    }
}
