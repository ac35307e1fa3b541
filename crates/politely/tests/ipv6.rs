//! IPv6: native peers on `[::1]` only. The server listens on `[::1]`, the sessions join
//! `ws://[::1]:…` and bind their peer connections' sockets to `::1`, so every signal and every
//! datagram crosses IPv6: the peers connect, chat, glare and restart ICE.

mod util;

use politely::{Bind, MediaKind, PeerEvent, Session, SessionConfig, SessionEvent};
use std::net::{IpAddr, Ipv6Addr};
use util::{TestServer, glare_transceivers, ice_restarts, until, until_ice_restarted};

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
    let kinds = [MediaKind::Audio, MediaKind::Video];
    glare_transceivers(&mut a, &mut b, &to_b, &to_a, &kinds, 1).await;
    let before = ice_restarts(&to_b, &to_a).await;
    to_b.restart_ice().await.unwrap();
    until_ice_restarted(&mut a, &mut b, &to_b, &to_a, before).await;
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
