//! TURN: native peers with a relay-only ICE policy, through Debian's coturn started here on
//! loopback, with credentials the politely server hands out in `welcome` (the TURN REST scheme,
//! coturn's `use-auth-secret`). What a user asks for with a relay-only policy is that every
//! packet goes through the TURN server and no local address is revealed: the tests check that
//! the signals carry relay candidates only and that the connection dies with the TURN server.

mod util;

use politely::{IceTransportPolicy, MediaKind, PeerEvent, Session, SessionConfig, SessionEvent};
use std::time::Duration;
use util::{
    Coturn, TURN_SECRET, TestServer, glare_transceivers, ice_restarts, until, until_ice_restarted,
};

/// A politely server that hands out `coturn` with credentials lasting `ttl`.
async fn server_for(coturn: &Coturn, ttl: Duration) -> TestServer {
    TestServer::with(politely_server::Config {
        turn: Some(politely_server::Turn {
            urls: vec![coturn.url()],
            secret: TURN_SECRET.to_owned(),
            ttl,
        }),
        ..Default::default()
    })
    .await
}

fn relay_only() -> SessionConfig {
    let mut config = SessionConfig::loopback();
    config.peer.ice_transport_policy = IceTransportPolicy::Relay;
    config
}

fn message(event: SessionEvent) -> Option<String> {
    match event {
        SessionEvent::Peer {
            event: PeerEvent::Message { message, .. },
            ..
        } => Some(message.as_text().unwrap().to_owned()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_peers_connect_glare_and_restart_ice_through_coturn() {
    let mut coturn = Coturn::start(&[]);
    let server = server_for(&coturn, Duration::from_secs(600)).await;
    let mut a = Session::join(&server.url(), "relay", relay_only())
        .await
        .unwrap();
    let mut b = Session::join(&server.url(), "relay", relay_only())
        .await
        .unwrap();
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
    util::within(10, "the channel opens through the relay", chat.opened())
        .await
        .unwrap();

    // Glare: both add a transceiver at the same instant, three times.
    let kinds = [MediaKind::Audio, MediaKind::Video, MediaKind::Audio];
    glare_transceivers(&mut a, &mut b, &to_b, &to_a, &kinds, 1).await;

    // Both restart ICE at once; the relayed path is found again.
    let before = ice_restarts(&to_b, &to_a).await;
    let (ra, rb) = tokio::join!(to_b.restart_ice(), to_a.restart_ice());
    ra.unwrap();
    rb.unwrap();
    until_ice_restarted(&mut a, &mut b, &to_b, &to_a, before).await;
    chat.send_text("after the restart").await.unwrap();
    let text = until(&mut b, "a message after the restart", 10, message).await;
    assert_eq!(text, "after the restart");

    // Every packet goes through the relay: without it the connection is gone.
    coturn.stop();
    until(
        &mut a,
        "the connection to fail without the relay",
        30,
        |e| match e {
            SessionEvent::Peer {
                event: PeerEvent::Disconnected { .. },
                ..
            } => Some(()),
            _ => None,
        },
    )
    .await;
    a.leave().await;
    b.leave().await;
    server.stop().await;
}

/// Credentials that last 3 s. An allocation keeps the credentials it was made with (coturn
/// checks their expiry when the allocation is made, and ties the allocation to them), so a
/// relayed connection outlives them: messages keep flowing past the expiry, through the
/// allocation's refresh (at 2 s: the server caps allocations at 4 s). A connection started
/// later needs credentials that are valid then: the session asks the server for new ones at
/// half their lifetime, so a peer that joins after the first ones expired is reached through
/// a new allocation of Alice's. (With the first credentials only, coturn refuses that
/// allocation and the relay-only connection to Carol never starts.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_turn_credentials_are_renewed_through_the_signaling_server() {
    let coturn = Coturn::start(&["--max-allocate-lifetime=4"]);
    let server = server_for(&coturn, Duration::from_secs(3)).await;
    let mut a = Session::join(&server.url(), "renew", relay_only())
        .await
        .unwrap();
    let mut b = Session::join(&server.url(), "renew", relay_only())
        .await
        .unwrap();
    let to_b = until(&mut a, "bob", 5, |e| match e {
        SessionEvent::PeerJoined(p) => Some(p),
        _ => None,
    })
    .await;
    let chat = to_b
        .create_data_channel("chat", Default::default())
        .await
        .unwrap();
    util::within(10, "the channel opens through the relay", chat.opened())
        .await
        .unwrap();
    // Messages until well past the credentials' expiry, every one delivered in order, the
    // connection never lost.
    let started = tokio::time::Instant::now();
    let mut sent = 0u32;
    while started.elapsed() < Duration::from_secs(6) {
        chat.send_text(&sent.to_string()).await.unwrap();
        let text = until(&mut b, "the next message", 5, |e| match e {
            SessionEvent::Peer {
                event: PeerEvent::Disconnected { state },
                ..
            } => panic!("the relayed connection was lost ({state:?}) after {sent} messages"),
            e => message(e),
        })
        .await;
        assert_eq!(text, sent.to_string());
        sent += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
        // Alice's events are drained too, and must not say the connection was lost.
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(1), a.next_event()).await
        {
            if let SessionEvent::Peer {
                event: PeerEvent::Disconnected { state },
                ..
            } = event
            {
                panic!("the relayed connection was lost ({state:?}) at alice");
            }
        }
    }
    // Carol arrives long after everyone's first credentials expired: Alice's new connection
    // allocates with the credentials she was given since.
    let mut c = Session::join(&server.url(), "renew", relay_only())
        .await
        .unwrap();
    let to_a = until(&mut c, "alice", 5, |e| match e {
        SessionEvent::PeerJoined(p) if p.id() == a.id() => Some(p),
        _ => None,
    })
    .await;
    let hello = to_a
        .create_data_channel("hello", Default::default())
        .await
        .unwrap();
    util::within(
        10,
        "carol's channel opens through the relay",
        hello.opened(),
    )
    .await
    .unwrap();
    a.leave().await;
    b.leave().await;
    c.leave().await;
    server.stop().await;
}
