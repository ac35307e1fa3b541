//! Native peers through a real politely server on loopback.

mod util;

use politely::{DataChannel, PeerEvent, SessionEvent};
use util::{TestServer, until};

fn opened(label: &str) -> impl FnMut(SessionEvent) -> Option<DataChannel> + '_ {
    move |event| match event {
        SessionEvent::Peer {
            event: PeerEvent::ChannelOpen(channel),
            ..
        } if channel.label() == label => Some(channel),
        _ => None,
    }
}

fn message(event: SessionEvent) -> Option<(String, String)> {
    match event {
        SessionEvent::Peer {
            peer,
            event: PeerEvent::Message { message, .. },
        } => Some((peer, message.as_text().unwrap().to_owned())),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_connect_and_chat_both_ways() {
    let server = TestServer::start().await;
    let mut alice = server.join("chat").await;
    let mut bob = server.join("chat").await;
    let to_bob = until(&mut alice, "bob joined", 5, |e| match e {
        SessionEvent::PeerJoined(p) => Some(p),
        _ => None,
    })
    .await;
    assert_eq!(to_bob.id(), bob.id());
    let channel = to_bob
        .create_data_channel("chat", Default::default())
        .await
        .unwrap();
    channel.opened().await.unwrap();
    channel.send_text("hello bob").await.unwrap();
    let bobs = until(&mut bob, "chat open at bob", 5, opened("chat")).await;
    let (from, text) = until(&mut bob, "alice's message", 5, message).await;
    assert_eq!(
        (from.as_str(), text.as_str()),
        (alice.id().as_str(), "hello bob")
    );
    bobs.send_text("hello alice").await.unwrap();
    let (from, text) = until(&mut alice, "bob's message", 5, message).await;
    assert_eq!(
        (from.as_str(), text.as_str()),
        (bob.id().as_str(), "hello alice")
    );
    alice.leave().await;
    until(&mut bob, "alice left", 5, |e| match e {
        SessionEvent::PeerLeft { peer } => Some(peer),
        _ => None,
    })
    .await;
    bob.leave().await;
    server.stop().await;
}

use politely::{Direction, MediaKind, Negotiation, Session, SessionConfig};
use std::time::Duration;
use util::{CutProxy, converge, either};

fn joined(event: SessionEvent) -> Option<politely::PeerHandle> {
    match event {
        SessionEvent::PeerJoined(p) => Some(p),
        _ => None,
    }
}

/// Alice's handle to Bob, Bob's to Alice, and the `chat` channel Alice opened toward Bob.
async fn connected(
    a: &mut Session,
    b: &Session,
) -> (politely::PeerHandle, politely::PeerHandle, DataChannel) {
    let to_b = until(a, "bob", 5, joined).await;
    let to_a = b.peer(&a.id()).unwrap();
    let chat = to_b
        .create_data_channel("chat", Default::default())
        .await
        .unwrap();
    chat.opened().await.unwrap();
    (to_b, to_a, chat)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_form_a_mesh_and_everyone_hears_everyone() {
    let server = TestServer::start().await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(server.join("mesh").await);
    }
    // Each opens a channel to each peer it knows of once all three are in.
    let ids: Vec<String> = sessions.iter().map(|s| s.id()).collect();
    for session in &mut sessions {
        while session.peers().len() < 2 {
            until(session, "the mesh", 5, joined).await;
        }
        for peer in session.peers() {
            let channel = peer
                .create_data_channel("mesh", Default::default())
                .await
                .unwrap();
            let me = session.id();
            tokio::spawn(async move {
                channel.opened().await.unwrap();
                channel.send_text(format!("from {me}")).await.unwrap();
            });
        }
    }
    for (i, session) in sessions.iter_mut().enumerate() {
        let mut heard = Vec::new();
        while heard.len() < 2 {
            let (from, text) = until(session, "mesh messages", 10, message).await;
            assert_eq!(text, format!("from {from}"));
            heard.push(from);
        }
        heard.sort();
        let mut others: Vec<String> = ids.iter().filter(|id| **id != ids[i]).cloned().collect();
        others.sort();
        assert_eq!(heard, others, "peer {i} heard from everyone else");
    }
    for session in sessions {
        session.leave().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_glare_rounds_renegotiate_a_live_connection() {
    let server = TestServer::start().await;
    let mut a = server.join("glare").await;
    let mut b = server.join("glare").await;
    let (to_b, to_a, _chat) = connected(&mut a, &b).await;
    let (mut first_a, mut first_b) = (None, None);
    let mut mids = 1;
    let mut glare = 0;
    for round in 0..200u32 {
        let (before_a, before_b) = (to_b.stats().await.unwrap(), to_a.stats().await.unwrap());
        if round < 6 {
            // Both add a transceiver at the same instant.
            let kind = if round % 2 == 0 {
                MediaKind::Audio
            } else {
                MediaKind::Video
            };
            let (ta, tb) = tokio::join!(
                to_b.add_transceiver(kind, Direction::SendRecv),
                to_a.add_transceiver(kind, Direction::SendRecv)
            );
            first_a.get_or_insert(ta.unwrap());
            first_b.get_or_insert(tb.unwrap());
            mids += 2;
        } else {
            // Both flip a direction at the same instant.
            let direction = if round % 2 == 0 {
                Direction::SendRecv
            } else {
                Direction::RecvOnly
            };
            let (ra, rb) = tokio::join!(
                to_b.set_direction(first_a.unwrap(), direction),
                to_a.set_direction(first_b.unwrap(), direction)
            );
            ra.unwrap();
            rb.unwrap();
        }
        let (sa, sb) = converge(&mut a, &mut b, &to_b, &to_a, mids).await;
        let collided = |after: &politely::PeerStats, before: &politely::PeerStats| {
            after.counters.rollbacks + after.counters.ignored_offers
                > before.counters.rollbacks + before.counters.ignored_offers
        };
        glare += u32::from(collided(&sa, &before_a) || collided(&sb, &before_b));
        assert_eq!(sa.connection_state, politely::ConnectionState::Connected);
        assert_eq!(
            sa.counters.watchdog_firings + sb.counters.watchdog_firings,
            0
        );
    }
    // Simultaneous changes over loopback collide nearly every time; most rounds are glare.
    assert!(glare > 100, "only {glare} of 200 rounds collided");
    // The connection still carries data after all that.
    let channel = to_b
        .create_data_channel("after", Default::default())
        .await
        .unwrap();
    channel.opened().await.unwrap();
    channel.send_text("still here").await.unwrap();
    let (_, text) = until(&mut b, "a message after the rounds", 5, message).await;
    assert_eq!(text, "still here");
    a.leave().await;
    b.leave().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_gate_changes_at_once_take_turns_instead_of_colliding() {
    // Alice joins first, so she is polite toward Bob, and asks before she renegotiates.
    let server = TestServer::start().await;
    let mut config = SessionConfig::loopback();
    config.peer.negotiation = Negotiation::Gate {
        lease: Duration::from_secs(2),
    };
    let mut a = Session::join(&server.url(), "gate", config).await.unwrap();
    let mut b = server.join("gate").await;
    let (to_b, to_a, _chat) = connected(&mut a, &b).await;
    let (before_a, before_b) = (to_b.stats().await.unwrap(), to_a.stats().await.unwrap());
    let mut mids = 1;
    for round in 0..20u32 {
        let kind = if round % 2 == 0 {
            MediaKind::Audio
        } else {
            MediaKind::Video
        };
        let (ta, tb) = tokio::join!(
            to_b.add_transceiver(kind, Direction::SendRecv),
            to_a.add_transceiver(kind, Direction::SendRecv)
        );
        ta.unwrap();
        tb.unwrap();
        mids += 2;
        converge(&mut a, &mut b, &to_b, &to_a, mids).await;
    }
    let (sa, sb) = (to_b.stats().await.unwrap(), to_a.stats().await.unwrap());
    let (ca, cb) = (sa.counters, sb.counters);
    let delta = |after: u64, before: u64| after - before;
    assert_eq!(
        delta(
            ca.rollbacks + ca.ignored_offers + cb.rollbacks + cb.ignored_offers,
            before_a.counters.rollbacks
                + before_a.counters.ignored_offers
                + before_b.counters.rollbacks
                + before_b.counters.ignored_offers
        ),
        0,
        "no collision in 20 rounds of changes at once: {ca:?} {cb:?}"
    );
    assert_eq!(
        delta(ca.lease_requests, before_a.counters.lease_requests),
        20
    );
    assert_eq!(delta(cb.leases_used, before_b.counters.leases_used), 20);
    assert_eq!(cb.leases_expired, 0);
    assert_eq!(ca.watchdog_firings + cb.watchdog_firings, 0);
    a.leave().await;
    b.leave().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_from_either_side_keeps_the_channel() {
    let server = TestServer::start().await;
    let mut a = server.join("restart").await;
    let mut b = server.join("restart").await;
    let (to_b, to_a, channel) = connected(&mut a, &b).await;
    for (restarting, other) in [(&to_b, &to_a), (&to_a, &to_b)] {
        let before = restarting.stats().await.unwrap().counters.ice_restarts;
        restarting.restart_ice().await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (s, o) = (
                restarting.stats().await.unwrap(),
                other.stats().await.unwrap(),
            );
            if s.counters.ice_restarts > before && s.is_settled() && o.is_settled() {
                break;
            }
            tokio::time::timeout_at(deadline, either(&mut a, &mut b))
                .await
                .expect("the ICE restart completes");
        }
    }
    channel.send_text("after two restarts").await.unwrap();
    let (_, text) = until(&mut b, "a message after the restarts", 5, message).await;
    assert_eq!(text, "after two restarts");
    a.leave().await;
    b.leave().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_signaling_connection_resumes_with_the_same_id() {
    let server = TestServer::start().await;
    let proxy = CutProxy::start(server.addr).await;
    let mut a = Session::join(&proxy.url(), "resume", SessionConfig::loopback())
        .await
        .unwrap();
    let mut b = server.join("resume").await;
    let to_b = until(&mut a, "bob", 5, joined).await;
    let id = a.id();
    let chat = to_b
        .create_data_channel("chat", Default::default())
        .await
        .unwrap();
    chat.opened().await.unwrap();

    proxy.cut();
    until(&mut a, "the drop", 5, |e| {
        matches!(e, SessionEvent::SignalingLost { .. }).then_some(())
    })
    .await;
    // Renegotiation while the signaling is down: the offer waits in the backlog.
    to_b.add_transceiver(MediaKind::Audio, Direction::SendRecv)
        .await
        .unwrap();
    let resumed = until(&mut a, "the resume", 5, |e| match e {
        SessionEvent::Reconnected { resumed, id } => Some((resumed, id)),
        _ => None,
    })
    .await;
    assert_eq!(resumed, (true, id.clone()));
    let to_a = b.peer(&id).expect("bob never saw alice leave");
    converge(&mut a, &mut b, &to_b, &to_a, 2).await;
    chat.send_text("back").await.unwrap();
    let (from, text) = until(&mut b, "a message after the resume", 5, message).await;
    assert_eq!((from, text.as_str()), (id, "back"));
    a.leave().await;
    b.leave().await;
    server.stop().await;
}

/// The server stops mid-call (a deploy: it closes every connection with 1001) and comes back
/// on the same address with the same resume secret: the call's data keeps flowing meanwhile,
/// both peers get their ids back, neither connection is replaced, and they renegotiate
/// afterwards. (A server killed outright: web/test/faults.test.mjs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_survives_a_server_restart_with_the_same_resume_secret() {
    let config = || politely_server::Config {
        resume_secret: Some(politely_server::Secret::new("resume key")),
        ..Default::default()
    };
    let server = TestServer::with(config()).await;
    let addr = server.addr;
    let mut a = server.join("restart").await;
    let mut b = server.join("restart").await;
    let (to_b, to_a, chat) = connected(&mut a, &b).await;
    let (a_id, b_id) = (a.id(), b.id());
    let connection = to_b.stats().await.unwrap().connection_id;

    server.stop().await;
    for session in [&mut a, &mut b] {
        until(session, "the drop", 5, |e| {
            matches!(e, SessionEvent::SignalingLost { .. }).then_some(())
        })
        .await;
    }
    // The call does not need the server.
    chat.send_text("while the server is down").await.unwrap();
    let (from, text) = until(&mut b, "a message without a server", 5, message).await;
    assert_eq!(
        (from.as_str(), text.as_str()),
        (a_id.as_str(), "while the server is down")
    );

    let server = TestServer::on(addr, config()).await;
    for (session, id) in [(&mut a, &a_id), (&mut b, &b_id)] {
        let back = until(session, "the resume", 10, |e| match e {
            SessionEvent::Reconnected { resumed, id } => Some((resumed, id)),
            SessionEvent::PeerLeft { peer } => panic!("{peer} left"),
            _ => None,
        })
        .await;
        assert_eq!(back, (true, id.clone()));
    }
    assert!(b.peer(&a_id).is_some() && a.peer(&b_id).is_some());
    to_b.add_transceiver(MediaKind::Audio, Direction::SendRecv)
        .await
        .unwrap();
    let (sa, sb) = converge(&mut a, &mut b, &to_b, &to_a, 2).await;
    assert_eq!(
        sa.connection_id, connection,
        "the connection was not replaced"
    );
    assert_eq!(sb.connection_id, connection);
    assert_eq!(
        sa.counters.connections_replaced + sb.counters.connections_replaced,
        0
    );
    chat.send_text("after the restart").await.unwrap();
    let (_, text) = until(&mut b, "a message after the restart", 5, message).await;
    assert_eq!(text, "after the restart");
    a.leave().await;
    b.leave().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_ends_every_task() {
    let server = TestServer::start().await;
    let metrics = tokio::runtime::Handle::current().metrics();
    // A first cycle starts what lives as long as the runtime (the server's and tokio's own).
    let warm = server.join("warm-up").await;
    warm.leave().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let baseline = metrics.num_alive_tasks();
    for round in 0..3 {
        let mut a = server.join("tasks").await;
        let mut b = server.join("tasks").await;
        // The last round's peers may still be in the room for a moment (the server sees them
        // go a little after they leave), so wait for this round's bob by id.
        let bob = b.id();
        let to_b = until(&mut a, "bob", 5, |e| joined(e).filter(|p| p.id() == bob)).await;
        let channel = to_b
            .create_data_channel("x", Default::default())
            .await
            .unwrap();
        channel.opened().await.unwrap();
        until(&mut b, "the channel", 5, opened("x")).await;
        if round == 2 {
            // Dropping, rather than leaving, must clean up as well.
            drop(a);
            until(&mut b, "alice gone", 5, |e| match e {
                SessionEvent::PeerLeft { .. } => Some(()),
                _ => None,
            })
            .await;
            drop(b);
        } else {
            a.leave().await;
            b.leave().await;
        }
    }
    // The server's connection tasks end a moment after the clients close.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while metrics.num_alive_tasks() > baseline && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metrics.num_alive_tasks(), baseline, "tasks leaked");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_know_who_is_who_from_their_room_tokens() {
    let secret = politely_server::Secret::new("a key for this test only");
    let server = TestServer::with(politely_server::Config {
        secrets: vec![secret.clone()],
        ..Default::default()
    })
    .await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let url = server.url();
    let join = |sub: &str, name: &str| {
        let mut claims = politely_server::token::Claims::new(sub, "who", exp);
        claims.name = Some(name.to_owned());
        let config = SessionConfig {
            token: Some(politely_server::token::mint(&secret, &claims)),
            ..SessionConfig::loopback()
        };
        Session::join(&url, "who", config)
    };
    let mut alice = join("alice@example.com", "Alice").await.unwrap();
    let mut bob = join("bob@example.com", "Bob").await.unwrap();
    // Alice learns of Bob from `peer-joined`, Bob of Alice from his `welcome`.
    let to_bob = until(&mut alice, "bob", 5, joined).await;
    let to_alice = until(&mut bob, "alice", 5, joined).await;
    let user = |handle: &politely::PeerHandle| {
        let user = handle.user().expect("a user from the token");
        (user.sub.clone(), user.name.clone())
    };
    assert_eq!(
        user(&to_bob),
        ("bob@example.com".to_owned(), Some("Bob".to_owned()))
    );
    assert_eq!(
        user(&to_alice),
        ("alice@example.com".to_owned(), Some("Alice".to_owned()))
    );
    alice.leave().await;
    bob.leave().await;
    server.stop().await;
}
