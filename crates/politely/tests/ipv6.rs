//! IPv6: native peers on `[::1]` only. The server listens on `[::1]`, the sessions join
//! `ws://[::1]:…` and bind their peer connections' sockets to `::1`, so every signal and every
//! datagram crosses IPv6: the peers connect, chat, glare and restart ICE.

mod util;

use politely::{Bind, Direction, MediaKind, PeerEvent, Session, SessionConfig, SessionEvent};
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;
use util::{TestServer, converge, either, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_peers_on_ipv6_loopback_connect_glare_and_restart_ice() {
    let server = TestServer::on("[::1]:0".parse().unwrap(), Default::default()).await;
    assert!(server.addr.is_ipv6());
    let config = || {
        let mut config = SessionConfig::default();
        config.peer.bind = Bind::Addrs(vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]);
        config
    };
    let url = format!("ws://{}", server.addr);
    let mut a = Session::join(&url, "six", config()).await.unwrap();
    let mut b = Session::join(&url, "six", config()).await.unwrap();
    let to_b = until(&mut a, "bob", 5, |e| match e {
        SessionEvent::PeerJoined(p) => Some(p),
        _ => None,
    })
    .await;
    let to_a = b.peer(&a.id()).unwrap();
    let chat = to_b
        .create_data_channel("chat", Default::default())
        .await
        .unwrap();
    util::within(10, "the channel opens over IPv6", chat.opened())
        .await
        .unwrap();
    let mut mids = 1;
    for kind in [MediaKind::Audio, MediaKind::Video] {
        let (ta, tb) = tokio::join!(
            to_b.add_transceiver(kind, Direction::SendRecv),
            to_a.add_transceiver(kind, Direction::SendRecv)
        );
        ta.unwrap();
        tb.unwrap();
        mids += 2;
        converge(&mut a, &mut b, &to_b, &to_a, mids).await;
    }
    let before = to_b.stats().await.unwrap().counters.ice_restarts;
    to_b.restart_ice().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (sa, sb) = (to_b.stats().await.unwrap(), to_a.stats().await.unwrap());
        if sa.counters.ice_restarts > before && sa.is_settled() && sb.is_settled() {
            break;
        }
        tokio::time::timeout_at(deadline, either(&mut a, &mut b))
            .await
            .expect("the ICE restart completes");
    }
    chat.send_text("over ::1").await.unwrap();
    let text = until(&mut b, "the message", 10, |e| match e {
        SessionEvent::Peer {
            event: PeerEvent::Message { message, .. },
            ..
        } => Some(message.as_text().unwrap().to_owned()),
        _ => None,
    })
    .await;
    assert_eq!(text, "over ::1");
    a.leave().await;
    b.leave().await;
    server.stop().await;
}
