//! Shared by the runtime's tests: a real politely server on 127.0.0.1:0, and waiting helpers.

#![allow(dead_code, unreachable_pub)]

use politely::{PeerEvent, Session, SessionConfig, SessionEvent};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;

/// A politely server on loopback that stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with(politely_server::Config::default()).await
    }

    pub async fn with(config: politely_server::Config) -> Self {
        Self::on("127.0.0.1:0".parse().unwrap(), config).await
    }

    /// A server listening on `listen` (`[::1]:0`, say).
    pub async fn on(listen: SocketAddr, mut config: politely_server::Config) -> Self {
        config.listen = listen;
        config.rate_limit = None;
        let server = politely_server::Server::bind(config).await.unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub async fn join(&self, room: &str) -> Session {
        Session::join(&self.url(), room, SessionConfig::loopback())
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

/// Waits for an event that `pick` accepts, within `secs` seconds; panics naming `what`.
pub async fn until<T>(
    session: &mut Session,
    what: &str,
    secs: u64,
    mut pick: impl FnMut(SessionEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let event = tokio::time::timeout_at(deadline, session.next_event())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|| panic!("session ended while waiting for {what}"));
        if let SessionEvent::Peer {
            event: PeerEvent::Error(e),
            peer,
        } = &event
        {
            panic!("error from {peer} while waiting for {what}: {e}");
        }
        if let Some(t) = pick(event) {
            return t;
        }
    }
}

pub async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

use politely::{PeerHandle, PeerStats};
use std::net::SocketAddr as Addr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The next event of either session: `(true, event)` for `a`.
pub async fn either(a: &mut Session, b: &mut Session) -> (bool, SessionEvent) {
    let (at_a, event) = tokio::select! {
        e = a.next_event() => (true, e),
        e = b.next_event() => (false, e),
    };
    let event = event.expect("a session ended");
    if let SessionEvent::Peer {
        event: PeerEvent::Error(e),
        ..
    } = &event
    {
        panic!("peer error: {e}");
    }
    (at_a, event)
}

/// Drives both sessions until both connections are settled with the same `mids` mids.
pub async fn converge(
    a: &mut Session,
    b: &mut Session,
    to_b: &PeerHandle,
    to_a: &PeerHandle,
    mids: usize,
) -> (PeerStats, PeerStats) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (sa, sb) = (to_b.stats().await.unwrap(), to_a.stats().await.unwrap());
        if sa.is_settled() && sb.is_settled() && sa.mids == sb.mids && sa.mids.len() == mids {
            return (sa, sb);
        }
        let Ok(_) = tokio::time::timeout_at(deadline, either(a, b)).await else {
            panic!("no convergence to {mids} mids: {sa:?} {sb:?}");
        };
    }
}

/// Both sides add a transceiver of each kind at the same instant, one kind per round, and the
/// sessions converge after each round; `mids` is the count before, and the count after is
/// returned.
pub async fn glare_transceivers(
    a: &mut Session,
    b: &mut Session,
    to_b: &PeerHandle,
    to_a: &PeerHandle,
    kinds: &[politely::MediaKind],
    mut mids: usize,
) -> usize {
    for &kind in kinds {
        let (ta, tb) = tokio::join!(
            to_b.add_transceiver(kind, politely::Direction::SendRecv),
            to_a.add_transceiver(kind, politely::Direction::SendRecv)
        );
        ta.unwrap();
        tb.unwrap();
        mids += 2;
        converge(a, b, to_b, to_a, mids).await;
    }
    mids
}

/// Drives both sessions until the two ends have restarted ICE more than `before` times
/// together (the sum of their counters) and both are settled, within 10 s.
pub async fn until_ice_restarted(
    a: &mut Session,
    b: &mut Session,
    to_b: &PeerHandle,
    to_a: &PeerHandle,
    before: u64,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (sa, sb) = (to_b.stats().await.unwrap(), to_a.stats().await.unwrap());
        if sa.counters.ice_restarts + sb.counters.ice_restarts > before
            && sa.is_settled()
            && sb.is_settled()
        {
            return;
        }
        tokio::time::timeout_at(deadline, either(a, b))
            .await
            .expect("the ICE restart completes");
    }
}

/// The ICE restarts both ends counted, together.
pub async fn ice_restarts(to_b: &PeerHandle, to_a: &PeerHandle) -> u64 {
    let (sa, sb) = (to_b.stats().await.unwrap(), to_a.stats().await.unwrap());
    sa.counters.ice_restarts + sb.counters.ice_restarts
}

/// A TCP proxy in front of the server whose connections can be cut, to drop a client's
/// signaling connection without touching the client.
pub struct CutProxy {
    pub addr: Addr,
    cut: watch::Sender<u64>,
}

impl CutProxy {
    pub async fn start(upstream: Addr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(0u64);
        let cuts = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self { addr, cut }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Ends every connection open now.
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

mod coturn;
#[allow(unused_imports)]
pub use coturn::{Coturn, TURN_SECRET};

/// A STUN server of one method on loopback: every binding request is answered with the
/// source address, until it is told to fall silent (as a server that went away does).
pub struct StunServer {
    pub addr: SocketAddr,
    silent: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl StunServer {
    pub async fn start() -> StunServer {
        use rtc::stun::message::{BINDING_SUCCESS, Message};
        use rtc::stun::xoraddr::XorMappedAddress;
        use std::sync::atomic::Ordering;
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let silent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let quiet = silent.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                if quiet.load(Ordering::Relaxed) {
                    continue;
                }
                let mut request = Message::new();
                request.raw = buf[..n].to_vec();
                if request.decode().is_err() {
                    continue;
                }
                let mut response = Message::new();
                response
                    .build(&[
                        Box::new(request.clone()),
                        Box::new(BINDING_SUCCESS),
                        Box::new(XorMappedAddress {
                            ip: from.ip(),
                            port: from.port(),
                        }),
                    ])
                    .unwrap();
                let _ = socket.send_to(&response.raw, from).await;
            }
        });
        StunServer { addr, silent }
    }

    /// From now on no request is answered.
    pub fn fall_silent(&self) {
        self.silent
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
