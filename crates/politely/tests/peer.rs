//! `Peer` over a signaling channel the test brings: connect, a remote restart (new
//! connection id), and server-reflexive gathering against a STUN responder on loopback.

use futures_util::{Sink, Stream};
mod util;

use politely::{
    IceServer, IceTransportPolicy, Peer, PeerConfig, PeerEvent, ReplaceReason, Role, Signal,
};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// One end of an in-memory signaling channel. Sends go to whatever sender `to` holds now,
/// so the far end can be replaced, as a restarted peer replaces itself. Every signal sent
/// is also recorded.
struct End {
    to: Arc<Mutex<Option<mpsc::UnboundedSender<Signal>>>>,
    from: mpsc::UnboundedReceiver<Signal>,
    sent: Arc<Mutex<Vec<Signal>>>,
}

impl Sink<Signal> for End {
    type Error = std::io::Error;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, signal: Signal) -> Result<(), Self::Error> {
        self.sent.lock().unwrap().push(signal.clone());
        if let Some(to) = self.to.lock().unwrap().as_ref() {
            let _ = to.send(signal);
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

impl Stream for End {
    type Item = Signal;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Signal>> {
        self.from.poll_recv(cx)
    }
}

type Route = Arc<Mutex<Option<mpsc::UnboundedSender<Signal>>>>;

/// A new end whose sends go along `route`; returns it and the sender that reaches it.
fn end(route: Route) -> (End, mpsc::UnboundedSender<Signal>, Arc<Mutex<Vec<Signal>>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sent = Arc::new(Mutex::new(Vec::new()));
    (
        End {
            to: route,
            from: rx,
            sent: sent.clone(),
        },
        tx,
        sent,
    )
}

async fn next_open(peer: &mut Peer) -> politely::DataChannel {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), peer.next_event())
            .await
            .expect("a channel opens")
            .expect("the peer ended")
        {
            PeerEvent::ChannelOpen(channel) => return channel,
            PeerEvent::Error(e) => panic!("{e}"),
            _ => {}
        }
    }
}

async fn next_text(peer: &mut Peer) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), peer.next_event())
            .await
            .expect("a message arrives")
            .expect("the peer ended")
        {
            PeerEvent::Message { message, .. } => return message.as_text().unwrap().to_owned(),
            PeerEvent::Error(e) => panic!("{e}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_restart_replaces_the_connection() {
    let to_b: Route = Default::default();
    let (end_a, tx_a, _) = end(to_b.clone());
    // Each life of B has its own route to A, so nothing the first life sends late (its
    // `bye` as it is dropped) can reach A once it is cut.
    let first_life: Route = Arc::new(Mutex::new(Some(tx_a.clone())));
    let (end_b, tx_b, _) = end(first_life.clone());
    *to_b.lock().unwrap() = Some(tx_b);
    let mut a = Peer::connect(Role::Polite, end_a, PeerConfig::loopback())
        .await
        .unwrap();
    let mut b = Peer::connect(Role::Impolite, end_b, PeerConfig::loopback())
        .await
        .unwrap();
    let chat = a
        .create_data_channel("chat", Default::default())
        .await
        .unwrap();
    chat.opened().await.unwrap();
    let at_b = next_open(&mut b).await;
    at_b.send_text("first life").await.unwrap();
    assert_eq!(next_text(&mut a).await, "first life");
    let old = a.stats().await.unwrap().connection_id;

    // B restarts: its `bye` never reaches A (the process died), and a new B comes up on the
    // same signaling path with a new connection id.
    *first_life.lock().unwrap() = None;
    drop(b);
    let second_life: Route = Arc::new(Mutex::new(Some(tx_a)));
    let (end_b, tx_b, _) = end(second_life);
    *to_b.lock().unwrap() = Some(tx_b);
    let b = Peer::connect(Role::Impolite, end_b, PeerConfig::loopback())
        .await
        .unwrap();
    let new_b_channel = b
        .create_data_channel("again", Default::default())
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), a.next_event())
            .await
            .expect("A replaces its connection")
            .unwrap()
        {
            PeerEvent::Replaced { reason } => {
                assert_eq!(reason, ReplaceReason::RemoteRestarted);
                break;
            }
            PeerEvent::Error(e) => panic!("{e}"),
            _ => {}
        }
    }
    new_b_channel.opened().await.unwrap();
    new_b_channel.send_text("second life").await.unwrap();
    assert_eq!(next_text(&mut a).await, "second life");
    assert_ne!(a.stats().await.unwrap().connection_id, old);
    // A's own channel is re-created on the new connection under the same handle.
    chat.opened().await.unwrap();
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_reflexive_candidates_come_from_the_stun_server() {
    let stun = util::StunServer::start().await.addr;
    let (to_a, to_b): (Route, Route) = Default::default();
    let (end_a, tx_a, sent_by_a) = end(to_b.clone());
    let (end_b, tx_b, _) = end(to_a.clone());
    *to_a.lock().unwrap() = Some(tx_a);
    *to_b.lock().unwrap() = Some(tx_b);
    let config = PeerConfig {
        ice_servers: vec![IceServer::stun(format!("stun:{stun}"))],
        ..PeerConfig::loopback()
    };
    let a = Peer::connect(Role::Polite, end_a, config).await.unwrap();
    let mut b = Peer::connect(Role::Impolite, end_b, PeerConfig::loopback())
        .await
        .unwrap();
    let chat = a
        .create_data_channel("chat", Default::default())
        .await
        .unwrap();
    chat.opened().await.unwrap();
    next_open(&mut b).await;
    let json: Vec<String> = sent_by_a
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.to_json().to_string())
        .collect();
    assert!(
        json.iter().any(|s| s.contains("typ srflx raddr 127.0.0.1")),
        "no server-reflexive candidate in {json:#?}"
    );
    a.close().await;
    b.close().await;
}

/// `(type, address)` of every candidate a peer sent: in its descriptions and trickled.
fn candidates_sent(sent: &Mutex<Vec<Signal>>) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    for signal in sent.lock().unwrap().iter() {
        let json = signal.to_json();
        if let Some(sdp) = json["description"]["sdp"].as_str() {
            lines.extend(
                sdp.lines()
                    .filter_map(|l| l.strip_prefix("a="))
                    .filter(|l| l.starts_with("candidate:"))
                    .map(str::to_owned),
            );
        }
        if let Some(candidate) = json["candidate"]["candidate"].as_str() {
            lines.push(candidate.to_owned());
        }
    }
    lines
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let typ = fields.iter().position(|f| *f == "typ").unwrap();
            (
                fields[typ + 1].to_owned(),
                format!("{}:{}", fields[4], fields[5]),
            )
        })
        .collect()
}

/// A relay-only policy is a privacy choice: the signals carry relay candidates only (the
/// TURN server's relayed addresses), never a host or reflexive one, and the peers connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_peer_sends_relay_candidates_only() {
    let coturn = util::Coturn::start(&[]);
    let turn = politely_server::Turn {
        urls: vec![coturn.url()],
        secret: util::TURN_SECRET.to_owned(),
        ttl: Duration::from_secs(600),
    };
    let config = |user: &str| {
        let server = turn
            .ice_servers(user, std::time::SystemTime::now())
            .remove(0);
        PeerConfig {
            ice_servers: vec![IceServer {
                urls: server.urls,
                username: server.username.unwrap(),
                credential: server.credential.unwrap(),
            }],
            ice_transport_policy: IceTransportPolicy::Relay,
            ..PeerConfig::loopback()
        }
    };
    let (to_a, to_b): (Route, Route) = Default::default();
    let (end_a, tx_a, sent_by_a) = end(to_b.clone());
    let (end_b, tx_b, sent_by_b) = end(to_a.clone());
    *to_a.lock().unwrap() = Some(tx_a);
    *to_b.lock().unwrap() = Some(tx_b);
    let a = Peer::connect(Role::Polite, end_a, config("a"))
        .await
        .unwrap();
    let mut b = Peer::connect(Role::Impolite, end_b, config("b"))
        .await
        .unwrap();
    let chat = a
        .create_data_channel("chat", Default::default())
        .await
        .unwrap();
    chat.opened().await.unwrap();
    next_open(&mut b).await;
    chat.send_text("relayed").await.unwrap();
    assert_eq!(next_text(&mut b).await, "relayed");
    let relay_port = |address: &str| address.rsplit_once(':').unwrap().1.parse::<u16>().unwrap();
    for sent in [&sent_by_a, &sent_by_b] {
        let candidates = candidates_sent(sent);
        assert!(!candidates.is_empty());
        for (typ, address) in &candidates {
            assert_eq!(typ, "relay", "{address} revealed: {candidates:?}");
            // From coturn's relay range, not a socket of the peer's own.
            assert!(relay_port(address) >= 20_000, "{candidates:?}");
        }
    }
    a.close().await;
    b.close().await;
}

/// On `::1` only, every candidate either peer sends is an IPv6 host candidate, and they connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_bound_to_ipv6_loopback_send_ipv6_candidates_and_connect() {
    let config = || PeerConfig {
        bind: politely::Bind::Addrs(vec![std::net::Ipv6Addr::LOCALHOST.into()]),
        ..PeerConfig::loopback()
    };
    let (to_a, to_b): (Route, Route) = Default::default();
    let (end_a, tx_a, sent_by_a) = end(to_b.clone());
    let (end_b, tx_b, sent_by_b) = end(to_a.clone());
    *to_a.lock().unwrap() = Some(tx_a);
    *to_b.lock().unwrap() = Some(tx_b);
    let a = Peer::connect(Role::Polite, end_a, config()).await.unwrap();
    let mut b = Peer::connect(Role::Impolite, end_b, config())
        .await
        .unwrap();
    let chat = a
        .create_data_channel("chat", Default::default())
        .await
        .unwrap();
    chat.opened().await.unwrap();
    next_open(&mut b).await;
    chat.send_text("six").await.unwrap();
    assert_eq!(next_text(&mut b).await, "six");
    for sent in [&sent_by_a, &sent_by_b] {
        let candidates = candidates_sent(sent);
        assert!(!candidates.is_empty());
        for (typ, address) in &candidates {
            assert_eq!(typ, "host", "{candidates:?}");
            assert!(address.starts_with("::1:"), "{candidates:?}");
        }
    }
    a.close().await;
    b.close().await;
}
