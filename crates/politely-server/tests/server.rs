//! The server end to end, through real WebSockets on 127.0.0.1, asserting exact frames.

mod util;

use politely_server::token::Claims;
use politely_server::{Config, RateLimit, Secret};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use util::{Client, Frame, TestServer, config, error};

fn welcome_text(
    id: &str,
    room: &str,
    peers: &[(&str, bool)],
    resume: &str,
    resumed: bool,
) -> String {
    let peers: Vec<String> = peers
        .iter()
        .map(|(id, polite)| format!(r#"{{"id":"{id}","polite":{polite}}}"#))
        .collect();
    // A resumed welcome says how many frames were taken (none in these tests).
    let taken = if resumed { r#","taken":0"# } else { "" };
    format!(
        r#"{{"type":"welcome","id":"{id}","room":"{room}","peers":[{}],"resume":"{resume}","resumed":{resumed}{taken},"version":1}}"#,
        peers.join(",")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_welcome_presence_and_roles() {
    let server = TestServer::start(config()).await;

    let mut a = Client::connect(&server).await;
    a.send(r#"{"type":"join","room":"lobby"}"#).await;
    let text = a.text().await;
    let welcome: Value = serde_json::from_str(&text).unwrap();
    let a_id = welcome["id"].as_str().unwrap().to_owned();
    let resume = welcome["resume"].as_str().unwrap();
    assert_eq!(text, welcome_text(&a_id, "lobby", &[], resume, false));
    assert_eq!(a_id.len(), 26, "a ULID");

    let mut b = Client::connect(&server).await;
    b.send(r#"{"type":"join","room":"lobby"}"#).await;
    let text = b.text().await;
    let welcome: Value = serde_json::from_str(&text).unwrap();
    let b_id = welcome["id"].as_str().unwrap().to_owned();
    assert!(b_id > a_id, "ids are time-ordered: {b_id} after {a_id}");
    // The earlier peer is polite: B (the later id) is impolite toward A.
    let resume = welcome["resume"].as_str().unwrap();
    assert_eq!(
        text,
        welcome_text(&b_id, "lobby", &[(&a_id, false)], resume, false)
    );
    assert_eq!(
        a.text().await,
        format!(r#"{{"type":"peer-joined","id":"{b_id}","polite":true}}"#)
    );

    let (mut c, c_id, welcome) = Client::join(&server, "lobby").await;
    assert_eq!(
        welcome["peers"],
        serde_json::json!([{"id": a_id, "polite": false}, {"id": b_id, "polite": false}])
    );
    for peer in [&mut a, &mut b] {
        assert_eq!(
            peer.text().await,
            format!(r#"{{"type":"peer-joined","id":"{c_id}","polite":true}}"#)
        );
    }

    // `leave` is answered with a close (1000), and the others see peer-left at once.
    b.send(r#"{"type":"leave"}"#).await;
    b.expect_close(1000).await;
    for peer in [&mut a, &mut c] {
        assert_eq!(
            peer.text().await,
            format!(r#"{{"type":"peer-left","id":"{b_id}"}}"#)
        );
    }

    // A close frame from the client is a leave too: no grace period.
    c.ws.close(None).await.unwrap();
    assert_eq!(
        a.text().await,
        format!(r#"{{"type":"peer-left","id":"{c_id}"}}"#)
    );
    assert_eq!(server.metric("politely_rooms").await, 1.0);
    a.send(r#"{"type":"ping"}"#).await;
    assert_eq!(a.text().await, r#"{"type":"pong"}"#);
    a.send(r#"{"type":"leave"}"#).await;
    a.expect_close(1000).await;
    // The room is dropped when it empties.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.metric("politely_rooms").await, 0.0);
    assert_eq!(server.metric("politely_peers").await, 0.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_are_relayed_untouched_with_the_server_setting_from() {
    let server = TestServer::start(config()).await;
    let (mut a, a_id, _) = Client::join(&server, "r").await;
    let (mut b, b_id, _) = Client::join(&server, "r").await;
    a.text().await; // peer-joined

    // Odd spacing, unicode, escapes and a forged `from`: data arrives byte for byte, and
    // `from` is the sender's real id.
    let data = r#"{ "connectionId" : "c1", "candidate": null, "x": [1, 2.50, "é\u00e9\n"] }"#;
    b.send(&format!(
        r#"{{"type":"signal","from":"{a_id}","to":"{a_id}","data":{data}}}"#
    ))
    .await;
    assert_eq!(
        a.text().await,
        format!(r#"{{"type":"signal","from":"{b_id}","data":{data}}}"#)
    );
    // Any JSON value is data, null included.
    a.send(&format!(r#"{{"type":"signal","to":"{b_id}","data":null}}"#))
        .await;
    assert_eq!(
        b.text().await,
        format!(r#"{{"type":"signal","from":"{a_id}","data":null}}"#)
    );
    // The typed W3C shapes round-trip through the server.
    let signal = politely_proto::signal::Signal {
        connection_id: politely_proto::signal::ConnectionId::new("c9"),
        payload: politely_proto::signal::Payload::Bye { reconnect: false },
    };
    let frame = politely_proto::ClientMessage::signal(b_id.as_str(), signal.to_raw()).to_json();
    a.send(&frame).await;
    let text = b.text().await;
    let politely_proto::ServerMessage::Signal { from, data } =
        politely_proto::ServerMessage::from_json(&text).unwrap()
    else {
        panic!("{text}")
    };
    assert_eq!(from, a_id.as_str());
    assert_eq!(
        politely_proto::signal::Signal::from_raw(&data).unwrap(),
        signal
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_is_kept_per_directed_pair_under_concurrency() {
    let server = TestServer::start(Config {
        rate_limit: None,
        ..config()
    })
    .await;
    const PEERS: usize = 4;
    const FRAMES: usize = 300;
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..PEERS {
        let (client, id, _) = Client::join(&server, "busy").await;
        clients.push(client);
        ids.push(id);
    }
    // Drain the presence frames each earlier peer got.
    for (i, client) in clients.iter_mut().enumerate() {
        for _ in i + 1..PEERS {
            assert_eq!(client.json().await["type"], "peer-joined");
        }
    }
    let mut tasks = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            let me = ids[i].clone();
            let others: Vec<&String> = ids.iter().filter(|id| **id != me).collect();
            let (mut sink, mut stream) = futures_util::StreamExt::split(client.ws);
            let send = async {
                use futures_util::SinkExt;
                for n in 0..FRAMES {
                    for to in &others {
                        let frame =
                            format!(r#"{{"type":"signal","to":"{to}","data":{{"n":{n}}}}}"#);
                        sink.feed(Message::text(frame)).await.unwrap();
                    }
                    if n % 16 == 0 {
                        sink.flush().await.unwrap();
                    }
                }
                sink.flush().await.unwrap();
                sink
            };
            let receive = async {
                let mut next: HashMap<String, u64> = HashMap::new();
                let mut received = 0;
                while received < FRAMES * (PEERS - 1) {
                    let message = futures_util::StreamExt::next(&mut stream)
                        .await
                        .unwrap()
                        .unwrap();
                    let Message::Text(text) = message else {
                        continue;
                    };
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(frame["type"], "signal", "{frame}");
                    let from = frame["from"].as_str().unwrap().to_owned();
                    let n = frame["data"]["n"].as_u64().unwrap();
                    let expected = next.entry(from.clone()).or_insert(0);
                    assert_eq!(n, *expected, "from {from}: frames out of order");
                    *expected += 1;
                    received += 1;
                }
                next
            };
            let (_sink, next) = tokio::join!(send, receive);
            assert!(next.values().all(|n| *n == FRAMES as u64));
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("relay finished")
            .unwrap();
    }
    assert_eq!(
        server.metric("politely_frames_relayed_total").await,
        (PEERS * (PEERS - 1) * FRAMES) as f64
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_isolated() {
    let server = TestServer::start(config()).await;
    let (mut a, a_id, _) = Client::join(&server, "one").await;
    let (mut b, b_id, welcome) = Client::join(&server, "two").await;
    assert_eq!(welcome["peers"], serde_json::json!([]));
    b.send(&format!(r#"{{"type":"signal","to":"{a_id}","data":1}}"#))
        .await;
    assert_eq!(
        b.text().await,
        format!(
            r#"{{"type":"error","code":"unknown-peer","message":"no other peer in your room has this id","peer":"{a_id}"}}"#
        )
    );
    // Nobody in room one heard of B or its signal.
    a.expect_silence(Duration::from_millis(200)).await;
    // A signal to yourself is refused the same way.
    b.send(&format!(r#"{{"type":"signal","to":"{b_id}","data":1}}"#))
        .await;
    assert_eq!(b.json().await["code"], "unknown-peer");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_specific_errors_and_disturbs_nobody() {
    let server = TestServer::start(Config {
        max_frame_bytes: 1024,
        ..config()
    })
    .await;
    let (mut a, a_id, _) = Client::join(&server, "r").await;

    let mut c = Client::connect(&server).await;
    // Before join.
    c.send(&format!(r#"{{"type":"signal","to":"{a_id}","data":{{}}}}"#))
        .await;
    assert_eq!(c.text().await, error("not-joined", "join a room first"));
    for (frame, code) in [
        ("not json", "invalid-json"),
        (r#"{"type":"join","room":"r""#, "invalid-json"),
        ("3", "invalid-frame"),
        (r#"{"room":"r"}"#, "invalid-frame"),
        (r#"{"type":"join"}"#, "invalid-frame"),
        (r#"{"type":"join","room":7}"#, "invalid-frame"),
        (r#"{"type":"signal","to":"x"}"#, "invalid-frame"),
        (r#"{"type":"signal","data":{}}"#, "invalid-frame"),
        (r#"{"type":"signal","to":false,"data":{}}"#, "invalid-frame"),
        (r#"{"type":"bogus"}"#, "unknown-type"),
        (r#"{"type":"join","room":""}"#, "invalid-room"),
        (r#"{"type":"join","room":"a\u0007b"}"#, "invalid-room"),
    ] {
        c.send(frame).await;
        let reply = c.json().await;
        assert_eq!(reply["type"], "error", "{frame}");
        assert_eq!(reply["code"], code, "{frame}: {reply}");
        assert!(!reply["message"].as_str().unwrap().is_empty());
    }
    c.send(r#"{"type":"bogus"}"#).await;
    assert_eq!(
        c.text().await,
        error("unknown-type", "unknown frame type `bogus`")
    );
    c.send(r#"{"type":"signal","data":{}}"#).await;
    assert_eq!(
        c.text().await,
        error("invalid-frame", "a signal frame needs `to`")
    );
    c.send_message(Message::binary(vec![1, 2, 3])).await;
    assert_eq!(
        c.text().await,
        error("binary-frame", "frames are JSON text")
    );
    c.send(&"x".repeat(1025)).await;
    assert_eq!(
        c.text().await,
        error("frame-too-large", "a frame may have at most 1024 bytes")
    );

    // After all that, the connection still joins and relays.
    c.send(r#"{"type":"join","room":"r"}"#).await;
    let welcome = c.json().await;
    assert_eq!(welcome["type"], "welcome");
    let c_id = welcome["id"].as_str().unwrap().to_owned();
    c.send(r#"{"type":"join","room":"r"}"#).await;
    assert_eq!(
        c.text().await,
        error("already-joined", "this connection already joined a room")
    );
    c.send(r#"{"type":"signal","to":"01ZZZZZZZZZZZZZZZZZZZZZZZZ","data":{}}"#)
        .await;
    assert_eq!(c.json().await["code"], "unknown-peer");

    // A saw only C's arrival and its one good signal.
    assert_eq!(a.json().await["type"], "peer-joined");
    c.send(&format!(r#"{{"type":"signal","to":"{a_id}","data":"hi"}}"#))
        .await;
    assert_eq!(
        a.text().await,
        format!(r#"{{"type":"signal","from":"{c_id}","data":"hi"}}"#)
    );
    a.expect_silence(Duration::from_millis(100)).await;
    assert_eq!(
        server
            .metric(r#"politely_errors_total{code="invalid-frame"}"#)
            .await,
        8.0
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_far_over_the_limit_ends_the_connection_with_1009() {
    let server = TestServer::start(Config {
        max_frame_bytes: 1024,
        ..config()
    })
    .await;
    let (mut a, _, _) = Client::join(&server, "r").await;
    a.send(&"x".repeat(4 * 1024 + 1)).await;
    a.expect_close(1009).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_rate_limited_then_closed_with_1008() {
    let server = TestServer::start(Config {
        rate_limit: Some(RateLimit {
            per_second: 0.5,
            burst: 5.0,
        }),
        max_strikes: 10,
        ..config()
    })
    .await;
    let (mut a, a_id, _) = Client::join(&server, "r").await;
    let (mut b, _, _) = Client::join(&server, "r").await;
    assert_eq!(a.json().await["type"], "peer-joined");
    // The join used one token of five: four signals pass, the fifth is refused with one error.
    for n in 0..6 {
        b.send(&format!(r#"{{"type":"signal","to":"{a_id}","data":{n}}}"#))
            .await;
    }
    for n in 0..4 {
        assert_eq!(a.json().await["data"], n);
    }
    assert_eq!(
        b.text().await,
        error(
            "rate-limited",
            "too many frames; this one and the next ones over the limit are dropped"
        )
    );
    a.expect_silence(Duration::from_millis(50)).await;
    // A sustained flood runs out of strikes.
    for _ in 0..50 {
        b.send(r#"{"type":"ping"}"#).await;
    }
    b.expect_close(1008).await;
    server
        .wait_metric(
            r#"politely_closes_total{code="1008",reason="too-many-errors"}"#,
            1.0,
        )
        .await;
    // The closed client left for good.
    assert_eq!(a.json().await["type"], "peer-left");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_room_refuses_joins() {
    let server = TestServer::start(Config {
        max_room_size: 2,
        ..config()
    })
    .await;
    let (_a, _, _) = Client::join(&server, "small").await;
    let (_b, _, _) = Client::join(&server, "small").await;
    let mut c = Client::connect(&server).await;
    c.send(r#"{"type":"join","room":"small"}"#).await;
    assert_eq!(c.text().await, error("room-full", "the room has 2 peers"));
    // Other rooms are unaffected.
    c.send(r#"{"type":"join","room":"big"}"#).await;
    assert_eq!(c.json().await["type"], "welcome");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_admit_their_room_and_nothing_else_and_tell_the_room_who_is_who() {
    let old = Secret::new("correct horse battery staple");
    let new = Secret::new("a newer key, mid-rotation");
    let server = TestServer::start(Config {
        secrets: vec![new.clone(), old.clone()],
        ..config()
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mint = |secret: &Secret, sub: &str, room: &str, exp: u64| {
        politely_server::token::mint(secret, &Claims::new(sub, room, exp))
    };
    let expired = mint(&new, "eve", "vip", now - 1);
    let other_room = mint(&new, "eve", "other", now + 3600);
    let forged = mint(&Secret::new("guess"), "eve", "vip", now + 3600);
    let mut early = Claims::new("eve", "vip", now + 3600);
    early.nbf = Some(now + 600);
    let early = politely_server::token::mint(&new, &early);

    let mut c = Client::connect(&server).await;
    c.send(r#"{"type":"join","room":"vip"}"#).await;
    assert_eq!(
        c.text().await,
        error("token-required", "this server needs a room token")
    );
    let invalid = "the token is malformed, not valid yet, or its signature is wrong";
    for (token, code, message) in [
        (&forged, "token-invalid", invalid),
        (&"garbage".to_owned(), "token-invalid", invalid),
        (&early, "token-invalid", invalid),
        (&expired, "token-expired", "the token has expired"),
        (
            &other_room,
            "token-wrong-room",
            "the token is for another room",
        ),
    ] {
        c.send(&format!(
            r#"{{"type":"join","room":"vip","token":"{token}"}}"#
        ))
        .await;
        assert_eq!(c.text().await, error(code, message));
    }
    // A token signed with the old key, with a name and metadata: the others see who joined.
    let mut alice = Claims::new("alice@example.com", "vip", now + 3600);
    alice.name = Some("Alice".into());
    alice.metadata = Some(serde_json::json!({"role": "host"}));
    let alice = politely_server::token::mint(&old, &alice);
    c.send(&format!(
        r#"{{"type":"join","room":"vip","token":"{alice}"}}"#
    ))
    .await;
    let welcome = c.json().await;
    assert_eq!(welcome["type"], "welcome");
    let bob = mint(&new, "bob@example.com", "vip", now + 3600);
    let mut b = Client::connect(&server).await;
    b.send(&format!(
        r#"{{"type":"join","room":"vip","token":"{bob}"}}"#
    ))
    .await;
    let welcome = b.json().await;
    assert_eq!(
        welcome["peers"][0]["user"],
        serde_json::json!({"sub": "alice@example.com", "name": "Alice", "metadata": {"role": "host"}})
    );
    let joined = c.json().await;
    assert_eq!(joined["type"], "peer-joined");
    assert_eq!(
        joined["user"],
        serde_json::json!({"sub": "bob@example.com"})
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_peer_resumes_its_id_and_queued_frames_within_the_grace_period() {
    let server = TestServer::start(Config {
        resume_grace: Duration::from_secs(5),
        ..config()
    })
    .await;
    let (mut a, a_id, welcome) = Client::join(&server, "r").await;
    let resume = welcome["resume"].as_str().unwrap().to_owned();
    let (mut b, b_id, _) = Client::join(&server, "r").await;
    assert_eq!(a.json().await["type"], "peer-joined");

    // A's TCP connection ends without a close frame: a drop, not a leave.
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 0..3 {
        b.send(&format!(r#"{{"type":"signal","to":"{a_id}","data":{n}}}"#))
            .await;
    }
    // Within the grace period, B sees no peer-left, and signals to A are accepted.
    b.expect_silence(Duration::from_millis(200)).await;

    let mut a = Client::rejoin(&server, "r", &resume).await;
    let text = a.text().await;
    let welcome: Value = serde_json::from_str(&text).unwrap();
    let new_resume = welcome["resume"].as_str().unwrap();
    assert_ne!(new_resume, resume, "the resume token rotates");
    assert_eq!(
        text,
        welcome_text(&a_id, "r", &[(&b_id, true)], new_resume, true)
    );
    for n in 0..3 {
        assert_eq!(
            a.text().await,
            format!(r#"{{"type":"signal","from":"{b_id}","data":{n}}}"#)
        );
    }
    b.expect_silence(Duration::from_millis(100)).await;
    // The old token is spent: it joins as a new peer.
    let mut c = Client::rejoin(&server, "r", &resume).await;
    let welcome = c.json().await;
    assert_eq!(welcome["resumed"], false);
    assert_ne!(welcome["id"], a_id.as_str());
    assert_eq!(server.metric("politely_resumes_total").await, 1.0);
    for peer in [&mut a, &mut b] {
        assert_eq!(peer.json().await["type"], "peer-joined");
    }

    // Resuming while the old connection is still open replaces it (4001).
    let mut a2 = Client::rejoin(&server, "r", new_resume).await;
    assert_eq!(a2.json().await["resumed"], true);
    a.expect_close(4001).await;
    b.expect_silence(Duration::from_millis(100)).await;
    server.shutdown().await;
}

/// A server restarted with the same resume secret gives a peer its id back from the token
/// alone, and keeps the places of the peers it names until they resume too (or their grace
/// period ends): the calls between them survive the restart.
/// A resumed welcome says how many text frames the server took from the peer since its
/// welcome, counted up to its last signal (relayed or refused); the count goes on from there on
/// the new connection, and a signal from a connection whose id was resumed is not relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_welcome_says_how_many_frames_were_taken() {
    let server = TestServer::start(config()).await;
    let (mut a, _, welcome) = Client::join(&server, "t").await;
    let resume = welcome["resume"].as_str().unwrap().to_owned();
    let (mut b, b_id, _) = Client::join(&server, "t").await;
    a.json().await; // peer-joined
    let to_b = |data: &str| format!(r#"{{"type":"signal","to":"{b_id}","data":{data}}}"#);
    for n in 1..=3 {
        a.send(&to_b(&n.to_string())).await;
        b.json().await;
    }
    a.send(r#"{"type":"ping"}"#).await;
    assert_eq!(a.json().await["type"], "pong");
    // A frame over the size limit is refused, and counted: the client counted it.
    a.send(&to_b(&format!("\"{}\"", "x".repeat(300 * 1024))))
        .await;
    assert_eq!(a.json().await["code"], "frame-too-large");
    let nobody = r#"{"type":"signal","to":"01JD3Q5ZB8M1XW2C6T0N4H9F7E","data":0}"#;
    a.send(nobody).await;
    assert_eq!(a.json().await["code"], "unknown-peer");
    // After the last signal: not counted until another signal comes.
    a.send(r#"{"type":"ping"}"#).await;
    assert_eq!(a.json().await["type"], "pong");
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut a = Client::rejoin(&server, "t", &resume).await;
    let welcome = a.json().await;
    assert_eq!(welcome["resumed"], true, "{welcome}");
    assert_eq!(welcome["taken"], 6, "{welcome}");
    // The client counts on from 6: its seventh frame.
    a.send(&to_b("4")).await;
    assert_eq!(b.json().await["data"], 4);
    let resume = welcome["resume"].as_str().unwrap().to_owned();
    // Resumed while this connection is still open: what it sends now is not relayed.
    let mut again = Client::rejoin(&server, "t", &resume).await;
    let welcome = again.json().await;
    assert_eq!(welcome["taken"], 7, "{welcome}");
    // (The server may have closed it already: the write may fail.)
    let _ = futures_util::SinkExt::send(&mut a.ws, Message::text(to_b("5"))).await;
    a.expect_close(4001).await;
    b.expect_silence(Duration::from_millis(200)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_gives_ids_back_and_keeps_places_for_the_peers_named() {
    let with_secret = || Config {
        resume_secret: Some(Secret::new("resume key")),
        resume_grace: Duration::from_millis(800),
        ..config()
    };
    let first = TestServer::start(with_secret()).await;
    let (_a, a_id, welcome) = Client::join(&first, "r").await;
    let a_resume = welcome["resume"].as_str().unwrap().to_owned();
    let (_b, b_id, welcome) = Client::join(&first, "r").await;
    let b_resume = welcome["resume"].as_str().unwrap().to_owned();
    let (_c, c_id, _) = Client::join(&first, "r").await;
    let (_, _, welcome) = Client::join(&first, "other room").await;
    let other_room = welcome["resume"].as_str().unwrap().to_owned();
    first.shutdown().await;

    let second = TestServer::start(with_secret()).await;
    // A comes back naming B and C, and an id that is not one.
    let mut a = Client::connect(&second).await;
    a.send(&format!(
        r#"{{"type":"join","room":"r","resume":"{a_resume}","peers":["{b_id}","{c_id}","nonsense"]}}"#
    ))
    .await;
    let welcome = a.json().await;
    assert_eq!(welcome["resumed"], true);
    assert_eq!(welcome["id"], a_id.as_str());
    let listed: Vec<(String, bool)> = welcome["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap().to_owned(), p["polite"] == true))
        .collect();
    // The roles are the old ones: A, the earliest, is polite toward both.
    assert_eq!(listed, vec![(b_id.clone(), true), (c_id.clone(), true)]);
    // A signal to B waits in B's place.
    a.send(&format!(
        r#"{{"type":"signal","to":"{b_id}","data":"kept"}}"#
    ))
    .await;

    // B comes back and finds it; A hears nothing of B (it knew B all along).
    let mut b = Client::connect(&second).await;
    b.send(&format!(
        r#"{{"type":"join","room":"r","resume":"{b_resume}","peers":["{a_id}","{c_id}"]}}"#
    ))
    .await;
    let welcome = b.json().await;
    assert_eq!(welcome["resumed"], true);
    assert_eq!(welcome["id"], b_id.as_str());
    assert_eq!(welcome["peers"].as_array().unwrap().len(), 2);
    assert_eq!(
        b.text().await,
        format!(r#"{{"type":"signal","from":"{a_id}","data":"kept"}}"#)
    );
    a.expect_silence(Duration::from_millis(100)).await;

    // C never comes back: its place goes when the grace period ends.
    let left = format!(r#"{{"type":"peer-left","id":"{c_id}"}}"#);
    assert_eq!(a.text().await, left);
    assert_eq!(b.text().await, left);

    // A token spent on this server, one for another room, and a token from a server with
    // another key: ordinary joins.
    let (_, _, welcome) = Client::join(&second, "r").await;
    assert_eq!(welcome["resumed"], false);
    let mut again = Client::rejoin(&second, "r", &a_resume).await;
    let welcome = again.json().await;
    assert_eq!(welcome["resumed"], false);
    assert_ne!(welcome["id"], a_id.as_str());
    let mut elsewhere = Client::rejoin(&second, "r", &other_room).await;
    assert_eq!(elsewhere.json().await["resumed"], false);
    second.shutdown().await;

    let other_key = TestServer::start(Config {
        resume_secret: Some(Secret::new("another key")),
        ..config()
    })
    .await;
    let mut stranger = Client::rejoin(&other_key, "r", &b_resume).await;
    assert_eq!(stranger.json().await["resumed"], false);
    other_key.shutdown().await;

    // Without a secret, each server has a key of its own: a restart gives new ids.
    let first = TestServer::start(config()).await;
    let (_d, _, welcome) = Client::join(&first, "r").await;
    let d_resume = welcome["resume"].as_str().unwrap().to_owned();
    first.shutdown().await;
    let second = TestServer::start(config()).await;
    let mut d = Client::rejoin(&second, "r", &d_resume).await;
    assert_eq!(d.json().await["resumed"], false);
    second.shutdown().await;
}

/// A place kept for the room's SFU (named by a client that resumed first) is announced without
/// the role; when the SFU resumes, its token says it is the SFU and the others hear it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_place_takes_the_sfu_role_from_the_resuming_token() {
    let with_secret = || Config {
        resume_secret: Some(Secret::new("resume key")),
        ..config()
    };
    let first = TestServer::start(with_secret()).await;
    let mut sfu = Client::connect(&first).await;
    sfu.send(r#"{"type":"join","room":"s","sfu":true}"#).await;
    let welcome = sfu.json().await;
    let (sfu_id, sfu_resume) = (
        welcome["id"].as_str().unwrap().to_owned(),
        welcome["resume"].as_str().unwrap().to_owned(),
    );
    let (_c, c_id, welcome) = Client::join(&first, "s").await;
    let c_resume = welcome["resume"].as_str().unwrap().to_owned();
    first.shutdown().await;

    let second = TestServer::start(with_secret()).await;
    let mut c = Client::connect(&second).await;
    c.send(&format!(
        r#"{{"type":"join","room":"s","resume":"{c_resume}","peers":["{sfu_id}"]}}"#
    ))
    .await;
    let welcome = c.json().await;
    assert_eq!(welcome["id"], c_id.as_str());
    assert_eq!(welcome["peers"][0]["id"], sfu_id.as_str());
    assert_eq!(
        welcome["peers"][0].get("sfu"),
        None,
        "the kept place's role is unknown"
    );
    let mut sfu = Client::rejoin(&second, "s", &sfu_resume).await;
    assert_eq!(sfu.json().await["resumed"], true);
    assert_eq!(
        c.text().await,
        format!(r#"{{"type":"peer-joined","id":"{sfu_id}","polite":true,"sfu":true}}"#)
    );
    second.shutdown().await;
}

/// A resume token older than `resume_max_age` is not taken by a server that did not issue it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_refuses_a_resume_token_past_its_age() {
    let with_secret = || Config {
        resume_secret: Some(Secret::new("resume key")),
        resume_max_age: Duration::from_millis(200),
        ..config()
    };
    let first = TestServer::start(with_secret()).await;
    let (_a, a_id, welcome) = Client::join(&first, "r").await;
    let resume = welcome["resume"].as_str().unwrap().to_owned();
    first.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = TestServer::start(with_secret()).await;
    let mut a = Client::rejoin(&second, "r", &resume).await;
    let welcome = a.json().await;
    assert_eq!(welcome["resumed"], false);
    assert_ne!(welcome["id"], a_id.as_str());
    second.shutdown().await;
}

/// Signal data from 1 KiB up is relayed from the read that carried it rather than copied into
/// the queue (and a queue that backs up copies again once its shared payloads hold 512 KiB of
/// buffers). Whatever the path, a peer must get the same bytes in the same order, live and after
/// a resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_of_every_size_arrive_whole_and_in_order_live_and_after_a_resume() {
    let server = TestServer::start(Config {
        rate_limit: None,
        resume_grace: Duration::from_secs(5),
        ..config()
    })
    .await;
    let (mut a, a_id, welcome) = Client::join(&server, "r").await;
    let resume = welcome["resume"].as_str().unwrap().to_owned();
    let (mut b, b_id, _) = Client::join(&server, "r").await;
    assert_eq!(a.json().await["type"], "peer-joined");
    // Around the threshold, beyond the largest read (16 KiB), with escapes and multibyte text.
    let sizes = [
        0, 990, 1000, 1001, 1013, 4000, 17_000, 40_000, 10, 3000, 1500,
    ];
    let unit = r#"ab\"c\\é\u00e9 "#;
    let data = |n: usize| {
        let size = sizes[n % sizes.len()];
        let pad = unit.repeat(size / unit.len()) + &"x".repeat(size % unit.len());
        format!(r#"{{"n":{n},"pad":"{pad}"}}"#)
    };
    let signal = |n: usize| format!(r#"{{"type":"signal","to":"{a_id}","data":{}}}"#, data(n));
    let relayed = |n: usize| format!(r#"{{"type":"signal","from":"{b_id}","data":{}}}"#, data(n));

    for n in 0..50 {
        b.send(&signal(n)).await;
    }
    for n in 0..50 {
        assert_eq!(a.text().await, relayed(n), "live, frame {n}");
    }

    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 50..150 {
        b.send(&signal(n)).await;
    }
    let mut a = Client::rejoin(&server, "r", &resume).await;
    assert_eq!(a.json().await["resumed"], true);
    for n in 50..150 {
        assert_eq!(a.text().await, relayed(n), "after the resume, frame {n}");
    }
    a.expect_silence(Duration::from_millis(100)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_grace_period_the_peer_is_gone() {
    let server = TestServer::start(Config {
        resume_grace: Duration::from_millis(300),
        ..config()
    })
    .await;
    let (a, a_id, welcome) = Client::join(&server, "r").await;
    let resume = welcome["resume"].as_str().unwrap().to_owned();
    let (mut b, _, _) = Client::join(&server, "r").await;
    drop(a);
    let started = std::time::Instant::now();
    assert_eq!(
        b.text().await,
        format!(r#"{{"type":"peer-left","id":"{a_id}"}}"#)
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    let mut a = Client::rejoin(&server, "r", &resume).await;
    let welcome = a.json().await;
    assert_eq!(welcome["resumed"], false);
    assert_ne!(welcome["id"], a_id.as_str());
    assert_eq!(server.metric("politely_grace_expired_total").await, 1.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_times_out_and_is_treated_as_dropped() {
    let server = TestServer::start(Config {
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_millis(300),
        resume_grace: Duration::from_millis(100),
        ..config()
    })
    .await;
    let (mut a, _, _) = Client::join(&server, "r").await;
    let (silent, silent_id, _) = Client::join(&server, "r").await;
    assert_eq!(a.json().await["type"], "peer-joined");
    // A keeps reading, so it answers pings and stays; the silent client never reads again, so
    // it never answers a ping.
    let started = std::time::Instant::now();
    assert_eq!(
        a.text().await,
        format!(r#"{{"type":"peer-left","id":"{silent_id}"}}"#)
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    a.expect_silence(Duration::from_millis(400)).await;
    server
        .wait_metric(
            r#"politely_closes_total{code="4003",reason="keepalive-timeout"}"#,
            1.0,
        )
        .await;
    drop(silent);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_joins_is_closed() {
    let server = TestServer::start(Config {
        join_timeout: Duration::from_millis(200),
        ..config()
    })
    .await;
    let mut c = Client::connect(&server).await;
    c.expect_close(4004).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_is_disconnected() {
    let server = TestServer::start(Config {
        rate_limit: None,
        send_queue_frames: 8,
        ..config()
    })
    .await;
    let (mut a, a_id, _) = Client::join(&server, "r").await;
    let (mut b, b_id, _) = Client::join(&server, "r").await;
    assert_eq!(a.json().await["type"], "peer-joined");
    // A stops reading; B sends far more than socket buffers and the queue hold.
    let big = "x".repeat(200 * 1024);
    let mut gone = false;
    for _ in 0..200 {
        b.send(&format!(
            r#"{{"type":"signal","to":"{a_id}","data":"{big}"}}"#
        ))
        .await;
        if let Some(Frame::Text(text)) = b.next_within(Duration::from_millis(1)).await {
            assert_eq!(text, format!(r#"{{"type":"peer-left","id":"{a_id}"}}"#));
            gone = true;
            break;
        }
    }
    if !gone {
        assert_eq!(
            b.text().await,
            format!(r#"{{"type":"peer-left","id":"{a_id}"}}"#)
        );
    }
    assert!(server.metric("politely_queue_dropped_frames_total").await >= 1.0);
    server
        .wait_metric(
            r#"politely_closes_total{code="4002",reason="slow-consumer"}"#,
            1.0,
        )
        .await;
    let _ = (b_id, &mut a);
    server.shutdown().await;
}

/// The demo page and the browser client are served beside `/ws`, from the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_client_and_demo_are_served() {
    let server = TestServer::start(config()).await;
    let (status, body) = server.get("/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<script type=\"module\" src=\"./demo.js\">"));
    let (status, body) = server.get("/politely.js").await;
    assert_eq!(status, 200);
    assert!(body.contains("export class Politely"), "{}", &body[..200]);
    let (status, body) = server.get("/demo.js").await;
    assert_eq!(status, 200);
    assert!(body.contains("import { Politely } from \"./politely.js\""));
    let (status, _) = server.get("/nothing-here").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_origins() {
    let server = TestServer::start(Config {
        allowed_origins: Some(vec!["https://app.example".into()]),
        ..config()
    })
    .await;
    let (status, body) = server.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        "{\"status\":\"ok\",\"version\":1,\"connections\":0,\"rooms\":0}\n"
    );

    let request = |origin: &str| {
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                server.url(),
            )
            .unwrap();
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        request
    };
    let refused = tokio_tungstenite::connect_async(request("https://evil.example")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected 403, got {other:?}"),
    }
    let (mut ws, response) = tokio_tungstenite::connect_async(request("https://app.example"))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    futures_util::SinkExt::send(&mut ws, Message::text(r#"{"type":"join","room":"r"}"#))
        .await
        .unwrap();
    let _ = futures_util::StreamExt::next(&mut ws).await;
    assert_eq!(server.metric("politely_origin_refused_total").await, 1.0);
    assert_eq!(server.metric("politely_connections").await, 1.0);
    assert_eq!(server.metric("politely_rooms").await, 1.0);
    assert_eq!(server.metric("politely_peers").await, 1.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subprotocol_is_selected_when_offered() {
    let server = TestServer::start(config()).await;
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            server.url(),
        )
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "politely.v1".parse().unwrap());
    let (_ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "politely.v1");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_connection_with_1001() {
    let server = TestServer::start(config()).await;
    let (mut a, _, _) = Client::join(&server, "r").await;
    let mut idle = Client::connect(&server).await;
    let addr = server.addr;
    server.shutdown().await;
    a.expect_close(1001).await;
    idle.expect_close(1001).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

/// A shutdown that finds a client's write half done finishes it before the queued frames and
/// the close follow; cut short, they would be read as the rest of the frame in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_during_a_blocked_write_keeps_the_stream_whole() {
    let server = TestServer::start(Config {
        rate_limit: None,
        send_queue_bytes: 64 * 1024 * 1024,
        ..config()
    })
    .await;
    let (mut a, a_id, _) = Client::join(&server, "r").await;
    let (mut b, b_id, _) = Client::join(&server, "r").await;
    assert_eq!(a.json().await["type"], "peer-joined");
    // A does not read: its socket fills, and the server's write to it blocks part way.
    let pad = "x".repeat(200 * 1024);
    const FRAMES: usize = 40;
    for n in 0..FRAMES {
        b.send(&format!(
            r#"{{"type":"signal","to":"{a_id}","data":[{n},"{pad}"]}}"#
        ))
        .await;
    }
    server
        .wait_metric("politely_frames_relayed_total", FRAMES as f64)
        .await;
    let shutdown = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in 0..FRAMES {
        let text = a.text().await;
        assert!(
            text == format!(r#"{{"type":"signal","from":"{b_id}","data":[{n},"{pad}"]}}"#),
            "frame {n} arrived damaged: {}...",
            &text[..text.len().min(80)]
        );
    }
    a.expect_close(1001).await;
    shutdown.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_keep_their_place_and_signals_to_a_departed_peer_are_no_abuse() {
    let server = TestServer::start(Config {
        max_strikes: 5,
        ..config()
    })
    .await;
    let mut c = Client::connect(&server).await;
    // Sent back to back: the welcome still comes before the error and the pong.
    c.send(r#"{"type":"join","room":"r"}"#).await;
    c.send(r#"{"type":"signal","to":"gone","data":1}"#).await;
    c.send(r#"{"type":"ping"}"#).await;
    assert_eq!(c.json().await["type"], "welcome");
    assert_eq!(c.json().await["code"], "unknown-peer");
    assert_eq!(c.text().await, r#"{"type":"pong"}"#);
    // Candidates trickled to a peer that just left get unknown-peer, never a close.
    for _ in 0..30 {
        c.send(r#"{"type":"signal","to":"gone","data":{"candidate":null}}"#)
            .await;
    }
    for _ in 0..30 {
        assert_eq!(c.json().await["code"], "unknown-peer");
    }
    c.send(r#"{"type":"ping"}"#).await;
    assert_eq!(c.text().await, r#"{"type":"pong"}"#);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_hook_decides_joins_and_an_embedder_reads_the_metrics() {
    use politely_server::{JoinHook, JoinRequest, Server};
    use std::sync::{Arc, Mutex};
    use util::{Raw, request};
    type Seen = (String, Option<std::net::IpAddr>, Option<String>);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let hook = JoinHook::new(move |r: &JoinRequest<'_>| {
        let entry = (
            r.room.to_owned(),
            r.address.map(|a| a.ip()),
            r.origin.map(str::to_owned),
        );
        log.lock().unwrap().push(entry);
        match r.room {
            "closed" => Err("this room is closed".into()),
            _ => Ok(()),
        }
    });
    let server = Server::bind(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        join_hook: Some(hook),
        ..config()
    })
    .await
    .unwrap();
    let metrics = server.metrics();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let origin = "Origin: https://app.example\r\n";
    let (response, mut raw) = Raw::handshake(addr, &[request(addr, origin).as_bytes()]).await;
    assert!(response.starts_with("HTTP/1.1 101 "), "{response}");
    raw.send_text(r#"{"type":"join","room":"closed"}"#).await;
    let refused = raw.json().await;
    assert_eq!(
        (refused["code"].as_str(), refused["message"].as_str()),
        (Some("join-refused"), Some("this room is closed"))
    );
    raw.send_text(r#"{"type":"join","room":"open"}"#).await;
    assert_eq!(raw.json().await["type"], "welcome");
    assert_eq!(
        (metrics.connections(), metrics.peers(), metrics.rooms()),
        (1, 1, 1)
    );
    assert!(
        metrics
            .prometheus()
            .contains("politely_errors_total{code=\"join-refused\"} 1")
    );
    let loopback = Some(std::net::IpAddr::from([127, 0, 0, 1]));
    let origin = Some("https://app.example".to_owned());
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("closed".to_owned(), loopback, origin.clone()),
            ("open".to_owned(), loopback, origin),
        ]
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// The SFU role: one per room, marked in `welcome` and `peer-joined`, and every other peer is
/// polite toward it whatever the id order (an SFU that joins after a client has the higher id,
/// and one that joins before has the lower).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sfu_role_is_marked_unique_and_always_impolite() {
    let server = TestServer::start(config()).await;
    let (mut early, early_id, _) = Client::join(&server, "call").await;
    let mut sfu = Client::connect(&server).await;
    sfu.send(r#"{"type":"join","room":"call","sfu":true}"#)
        .await;
    let welcome: Value = serde_json::from_str(&sfu.text().await).unwrap();
    let sfu_id = welcome["id"].as_str().unwrap().to_owned();
    assert!(sfu_id > early_id);
    // The SFU is impolite toward the earlier client, though its id is higher.
    assert_eq!(
        welcome["peers"],
        serde_json::json!([{"id": early_id, "polite": false}])
    );
    assert_eq!(
        early.text().await,
        format!(r#"{{"type":"peer-joined","id":"{sfu_id}","polite":true,"sfu":true}}"#)
    );
    // A later client is polite toward the SFU (its id is higher) and is told which peer it is.
    let (_late, late_id, welcome) = Client::join(&server, "call").await;
    assert_eq!(
        welcome["peers"],
        serde_json::json!([
            {"id": early_id, "polite": false},
            {"id": sfu_id, "polite": true, "sfu": true}
        ])
    );
    assert_eq!(
        sfu.text().await,
        format!(r#"{{"type":"peer-joined","id":"{late_id}","polite":false}}"#)
    );
    // A second SFU is refused.
    let mut second = Client::connect(&server).await;
    second
        .send(r#"{"type":"join","room":"call","sfu":true}"#)
        .await;
    assert_eq!(
        second.text().await,
        error("sfu-refused", "the room has an SFU already")
    );
    server.shutdown().await;
}

/// On a server with secrets, the SFU role needs a token that grants it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sfu_role_needs_a_token_that_grants_it() {
    let secret = Secret::new("sfu secret");
    let server = TestServer::start(Config {
        secrets: vec![secret.clone()],
        ..config()
    })
    .await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let plain = politely_server::token::mint(&secret, &Claims::new("media", "call", exp));
    let mut granted = Claims::new("media", "call", exp);
    granted.sfu = true;
    let granted = politely_server::token::mint(&secret, &granted);
    let mut c = Client::connect(&server).await;
    c.send(&format!(
        r#"{{"type":"join","room":"call","token":"{plain}","sfu":true}}"#
    ))
    .await;
    assert_eq!(
        c.text().await,
        error("sfu-refused", "the token does not grant the SFU role")
    );
    c.send(&format!(
        r#"{{"type":"join","room":"call","token":"{granted}","sfu":true}}"#
    ))
    .await;
    let welcome: Value = serde_json::from_str(&c.text().await).unwrap();
    assert_eq!(welcome["type"], "welcome");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_servers_are_handed_out_with_credentials_made_for_each_client() {
    use base64::Engine as _;
    use hmac::Mac as _;
    let server = TestServer::start(Config {
        turn: Some(politely_server::Turn {
            urls: vec!["turn:127.0.0.1:3478?transport=udp".to_owned()],
            secret: "turn secret".to_owned(),
            ttl: Duration::from_secs(120),
        }),
        ..config()
    })
    .await;
    let mut early = Client::connect(&server).await;
    early.send(r#"{"type":"ice-servers"}"#).await;
    assert_eq!(early.text().await, error("not-joined", "join a room first"));
    let (mut a, id, welcome) = Client::join(&server, "turn").await;
    // The REST scheme coturn checks: `<expiry>:<id>`, and the HMAC-SHA1 of it, base64.
    let check = |servers: &Value, ttl: &Value| {
        assert_eq!(ttl, 120);
        let server = &servers[0];
        assert_eq!(server["urls"][0], "turn:127.0.0.1:3478?transport=udp");
        let username = server["username"].as_str().unwrap();
        let (expiry, user) = username.split_once(':').unwrap();
        assert_eq!(user, id);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let expiry: u64 = expiry.parse().unwrap();
        assert!(
            (now + 118..=now + 121).contains(&expiry),
            "{expiry} vs {now}"
        );
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"turn secret").unwrap();
        mac.update(username.as_bytes());
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(server["credential"], expected.as_str());
    };
    check(&welcome["iceServers"], &welcome["iceTtl"]);
    a.send(r#"{"type":"ice-servers"}"#).await;
    let fresh = a.json().await;
    assert_eq!(fresh["type"], "ice-servers");
    check(&fresh["iceServers"], &fresh["iceTtl"]);
    server.shutdown().await;
}
