//! TURN (RFC 8656): a relayed address for a peer connection, through rtc's sans-I/O client.
//!
//! An allocation is made from one of the connection's own sockets (its base), so one socket
//! carries both the host candidate's traffic and the TURN client's; datagrams from the TURN
//! server's address go to the client, everything else to the engine. The engine sees the
//! relayed address as one more local address: what it sends from there goes out through
//! the client (a ChannelData message once a channel is bound, a Send indication before), and
//! what the server relays comes in as if received on it.

use bytes::BytesMut;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::turn::client::{Client, ClientConfig, Event};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// One TURN allocation of a peer connection.
pub(crate) struct Allocation {
    client: Client,
    /// The index of the socket it was made from, among the connection's sockets.
    pub(crate) socket: usize,
    /// The TURN server's address.
    pub(crate) server: SocketAddr,
    /// The address the server relays from: the relay candidate's.
    pub(crate) relayed: SocketAddr,
}

impl Allocation {
    /// Allocates on the TURN server at `server` from `socket` (the connection's socket number
    /// `index`), within `timeout`.
    ///
    /// The allocation keeps the credentials it was made with for its whole life: a TURN
    /// server ties an allocation to its username (a request under another is refused with
    /// 441), and coturn checks a REST credential's expiry only when the allocation is made.
    /// Fresh credentials serve new allocations.
    pub(crate) async fn allocate(
        socket: &UdpSocket,
        index: usize,
        server: SocketAddr,
        credentials: (&str, &str),
        timeout: Duration,
    ) -> io::Result<Allocation> {
        let other = |e: &dyn std::fmt::Display| io::Error::other(e.to_string());
        let crypto = rtc::crypto::default_provider().map_err(|e| other(&e))?;
        let config = ClientConfig {
            turn_serv_addr: server.to_string(),
            local_addr: socket.local_addr()?,
            transport_protocol: TransportProtocol::UDP,
            username: credentials.0.to_owned(),
            password: credentials.1.to_owned(),
            software: concat!("politely ", env!("CARGO_PKG_VERSION")).to_owned(),
            ..ClientConfig::default()
        };
        let mut client = Client::new(config, crypto).map_err(|e| other(&e))?;
        let local = socket.local_addr()?;
        client.allocate(Instant::now()).map_err(|e| other(&e))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut buf = vec![0u8; 1500];
        loop {
            while let Some(transmit) = client.poll_write() {
                socket
                    .send_to(&transmit.message, transmit.transport.peer_addr)
                    .await?;
            }
            while let Some(event) = client.poll_event() {
                match event {
                    Event::AllocateResponse(_, relayed) => {
                        return Ok(Allocation {
                            client,
                            socket: index,
                            server,
                            relayed,
                        });
                    }
                    Event::AllocateError(_, e) => return Err(other(&e)),
                    Event::TransactionTimeout(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no answer from the TURN server",
                        ));
                    }
                    _ => {}
                }
            }
            let wake = client
                .poll_timeout()
                .map_or(deadline, tokio::time::Instant::from_std)
                .min(deadline);
            match tokio::time::timeout_at(wake, socket.recv_from(&mut buf)).await {
                Ok(Ok((n, from))) if from == server => {
                    // An unreadable datagram is dropped, as a network would.
                    let _ = client.handle_read(tagged(local, from, &buf[..n]));
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no allocation from the TURN server in time",
                    ));
                }
                Err(_) => {
                    let _ = client.handle_timeout(Instant::now());
                }
            }
        }
    }

    /// Takes a datagram the TURN server sent: what it relays from peers is returned as
    /// `(peer, data)`.
    pub(crate) fn handle_read(
        &mut self,
        local: SocketAddr,
        contents: &[u8],
        relayed: &mut Vec<(SocketAddr, BytesMut)>,
    ) {
        if let Err(e) = self
            .client
            .handle_read(tagged(local, self.server, contents))
        {
            tracing::trace!(server = %self.server, "TURN datagram dropped: {e}");
        }
        while let Some(event) = self.client.poll_event() {
            match event {
                Event::DataIndicationOrChannelData(_, peer, data) => relayed.push((peer, data)),
                Event::CreatePermissionError(_, e) => {
                    tracing::debug!(relayed = %self.relayed, "TURN permission refused: {e}")
                }
                Event::TransactionTimeout(_) => {
                    tracing::debug!(server = %self.server, "a TURN request went unanswered")
                }
                _ => {}
            }
        }
    }

    /// Sends `contents` to `peer` through the relay. Until the server has granted a
    /// permission for the peer the datagram is dropped and the permission asked for: ICE
    /// retransmits its checks, and nothing else is sent before a check has succeeded.
    pub(crate) fn send_to(&mut self, now: Instant, contents: &[u8], peer: SocketAddr) {
        let Ok(mut relay) = self.client.relay(self.relayed) else {
            return;
        };
        if relay.send_to(now, contents, peer).is_err()
            && let Err(e) = relay.create_permission(now, peer)
        {
            tracing::debug!(relayed = %self.relayed, %peer, "TURN permission: {e}");
        }
    }

    /// Sends what the client has to send (requests, relayed data) on `socket`.
    pub(crate) fn flush(&mut self, socket: &UdpSocket) {
        while let Some(transmit) = self.client.poll_write() {
            if let Err(e) = socket.try_send_to(&transmit.message, transmit.transport.peer_addr) {
                tracing::trace!(server = %self.server, "TURN send: {e}");
            }
        }
    }

    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let _ = self.client.handle_timeout(now);
        // Events of timed-out requests; relayed data only comes with reads.
        while let Some(event) = self.client.poll_event() {
            if let Event::TransactionTimeout(_) = event {
                tracing::debug!(server = %self.server, "a TURN request went unanswered");
            }
        }
    }

    /// Releases the allocation (a Refresh with lifetime 0), sent on `socket`.
    pub(crate) fn release(&mut self, socket: &UdpSocket) {
        if let Ok(mut relay) = self.client.relay(self.relayed) {
            let _ = relay.close(Instant::now());
        }
        self.flush(socket);
    }
}

fn tagged(local: SocketAddr, peer: SocketAddr, contents: &[u8]) -> TaggedBytesMut {
    TaggedBytesMut {
        now: Instant::now(),
        transport: TransportContext {
            local_addr: local,
            peer_addr: peer,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        },
        message: BytesMut::from(contents),
    }
}

/// A `turn:` URL's server (`turn:host[:port][?transport=udp]`, port 3478 by default), or
/// `None` for a URL this client cannot use (`turns:`, TCP).
pub(crate) fn turn_host_port(url: &str) -> Option<String> {
    let rest = url.strip_prefix("turn:")?;
    let (host_port, query) = rest.split_once('?').unwrap_or((rest, ""));
    if query
        .split('&')
        .any(|kv| kv.starts_with("transport=") && kv != "transport=udp")
    {
        return None;
    }
    Some(with_default_port(host_port, 3478))
}

/// `host:port`, with `port` added when the address has none (`[::1]` and `::1` included).
pub(crate) fn with_default_port(host_port: &str, port: u16) -> String {
    let has_port = |p: &str| p.parse::<u16>().is_ok();
    if host_port.starts_with('[') {
        match host_port.rsplit_once("]:") {
            Some((_, p)) if has_port(p) => host_port.to_owned(),
            _ => format!("{host_port}:{port}"),
        }
    } else {
        match host_port.matches(':').count() {
            0 => format!("{host_port}:{port}"),
            1 if host_port.rsplit_once(':').is_some_and(|(_, p)| has_port(p)) => {
                host_port.to_owned()
            }
            // A bare IPv6 address.
            _ => format!("[{host_port}]:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_urls() {
        assert_eq!(
            turn_host_port("turn:127.0.0.1").as_deref(),
            Some("127.0.0.1:3478")
        );
        assert_eq!(
            turn_host_port("turn:turn.example.org:5349?transport=udp").as_deref(),
            Some("turn.example.org:5349")
        );
        assert_eq!(
            turn_host_port("turn:[::1]:3479").as_deref(),
            Some("[::1]:3479")
        );
        assert_eq!(turn_host_port("turn:[::1]").as_deref(), Some("[::1]:3478"));
        assert_eq!(turn_host_port("turn:::1").as_deref(), Some("[::1]:3478"));
        assert_eq!(turn_host_port("turn:h?transport=tcp"), None);
        assert_eq!(turn_host_port("turns:h:5349"), None);
        assert_eq!(turn_host_port("stun:h"), None);
    }
}
