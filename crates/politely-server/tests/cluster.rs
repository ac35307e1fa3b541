//! Several nodes sharing rooms through a real `redis-server` (started by each test on a unix
//! socket, without persistence): rooms spread over the nodes, exact frames.

mod util;

use politely_server::{Config, Redis};
use serde_json::Value;
use std::time::Duration;
use util::redis::RedisServer;
use util::{Client, Frame, TestServer, error};

fn node(redis: &RedisServer, name: &str) -> Config {
    Config {
        redis: Some(Redis {
            node: Some(name.into()),
            ..Redis::new(redis.url())
        }),
        ..util::config()
    }
}

/// Three nodes on one Redis, with `config` for each.
async fn three(redis: &RedisServer, config: impl Fn(Config) -> Config) -> Vec<TestServer> {
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(TestServer::start(config(node(redis, name))).await);
    }
    nodes
}

fn signal(to: &str, data: &str) -> String {
    format!(r#"{{"type":"signal","to":"{to}","data":{data}}}"#)
}

fn relayed(from: &str, data: &str) -> String {
    format!(r#"{{"type":"signal","from":"{from}","data":{data}}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spread_over_three_nodes_relays_in_order_with_presence_everywhere() {
    let redis = RedisServer::start();
    let nodes = three(&redis, |c| c).await;
    let (mut a, a_id, welcome) = Client::join(&nodes[0], "spread").await;
    assert_eq!(welcome["peers"], serde_json::json!([]));
    let (mut b, b_id, welcome) = Client::join(&nodes[1], "spread").await;
    assert_eq!(
        welcome["peers"],
        serde_json::json!([{"id": a_id, "polite": false}])
    );
    assert_eq!(
        a.text().await,
        format!(r#"{{"type":"peer-joined","id":"{b_id}","polite":true}}"#)
    );
    let (c, c_id, welcome) = Client::join(&nodes[2], "spread").await;
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

    // Every pair, both ways, interleaved: each receiver hears each sender in order.
    let ids = [a_id.clone(), b_id.clone(), c_id.clone()];
    let mut clients = [a, b, c];
    const N: usize = 100;
    for n in 0..N {
        for (from, client) in clients.iter_mut().enumerate() {
            for (to, id) in ids.iter().enumerate() {
                if to != from {
                    client.send(&signal(id, &format!(r#"{{"n":{n}}}"#))).await;
                }
            }
        }
    }
    for (to, client) in clients.iter_mut().enumerate() {
        let mut next = [0usize; 3];
        for _ in 0..2 * N {
            let frame: Value = client.json().await;
            assert_eq!(frame["type"], "signal", "{frame}");
            let from = ids.iter().position(|id| frame["from"] == **id).unwrap();
            assert_ne!(from, to);
            assert_eq!(frame["data"]["n"], next[from], "from {from} to {to}");
            next[from] += 1;
        }
        client.expect_silence(Duration::from_millis(100)).await;
    }
    // The exact frame, as one node writes it.
    let [a, b, _] = &mut clients;
    b.send(&signal(&a_id, r#"{"x":[1,"é"]}"#)).await;
    assert_eq!(a.text().await, relayed(&b_id, r#"{"x":[1,"é"]}"#));
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_signals_keep_one_order_across_nodes() {
    let redis = RedisServer::start();
    let nodes = three(&redis, |c| c).await;
    let (mut a, a_id, _) = Client::join(&nodes[0], "order").await;
    // B signals A the moment it is welcomed, from another node: A hears B joined first.
    for round in 0..20 {
        let (mut b, b_id, _) = Client::join(&nodes[1 + round % 2], "order").await;
        b.send(&signal(&a_id, r#""hello""#)).await;
        b.send(&signal(&a_id, r#""bye""#)).await;
        b.send(r#"{"type":"leave"}"#).await;
        assert_eq!(
            a.text().await,
            format!(r#"{{"type":"peer-joined","id":"{b_id}","polite":true}}"#)
        );
        assert_eq!(a.text().await, relayed(&b_id, r#""hello""#));
        assert_eq!(a.text().await, relayed(&b_id, r#""bye""#));
        assert_eq!(
            a.text().await,
            format!(r#"{{"type":"peer-left","id":"{b_id}"}}"#)
        );
        b.expect_close(1000).await;
        // Gone on every node.
        a.send(&signal(&b_id, "1")).await;
        assert_eq!(
            a.text().await,
            error_for(
                "unknown-peer",
                "no other peer in your room has this id",
                &b_id
            )
        );
    }
    for node in nodes {
        node.shutdown().await;
    }
}

fn error_for(code: &str, message: &str, peer: &str) -> String {
    let plain = error(code, message);
    format!(r#"{},"peer":"{peer}"}}"#, plain.strip_suffix('}').unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_roles_hold_across_nodes() {
    let redis = RedisServer::start();
    let nodes = three(&redis, |c| Config {
        max_room_size: 2,
        ..c
    })
    .await;
    let (_a, _, _) = Client::join(&nodes[0], "small").await;
    let (_b, _, _) = Client::join(&nodes[1], "small").await;
    let mut c = Client::connect(&nodes[2]).await;
    c.send(r#"{"type":"join","room":"small"}"#).await;
    assert_eq!(c.text().await, error("room-full", "the room has 2 peers"));

    // One SFU per room, whichever node it comes through; everyone is polite toward it.
    let (mut sfu, sfu_id, _) = {
        let mut client = Client::connect(&nodes[0]).await;
        client
            .send(r#"{"type":"join","room":"sfu","sfu":true}"#)
            .await;
        let welcome = client.json().await;
        let id = welcome["id"].as_str().unwrap().to_owned();
        (client, id, welcome)
    };
    let mut second = Client::connect(&nodes[1]).await;
    second
        .send(r#"{"type":"join","room":"sfu","sfu":true}"#)
        .await;
    assert_eq!(
        second.text().await,
        error("sfu-refused", "the room has an SFU already")
    );
    let (_client, client_id, welcome) = Client::join(&nodes[2], "sfu").await;
    assert_eq!(
        welcome["peers"],
        serde_json::json!([{"id": sfu_id, "polite": true, "sfu": true}])
    );
    assert_eq!(
        sfu.text().await,
        format!(r#"{{"type":"peer-joined","id":"{client_id}","polite":false}}"#)
    );
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_peer_resumes_on_another_node_with_what_was_sent_meanwhile() {
    let redis = RedisServer::start();
    let nodes = three(&redis, |c| Config {
        resume_grace: Duration::from_secs(5),
        ..c
    })
    .await;
    let (mut a, a_id, _) = Client::join(&nodes[0], "r").await;
    let (b, b_id, welcome) = Client::join(&nodes[1], "r").await;
    let resume = welcome["resume"].as_str().unwrap().to_owned();
    a.text().await; // peer-joined
    drop(b); // the connection drops: B keeps its place for the grace period
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in 0..5 {
        a.send(&signal(&b_id, &n.to_string())).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Back through the third node, with its token: the same id, and the five signals.
    let mut b = Client::rejoin(&nodes[2], "r", &resume).await;
    let welcome = b.json().await;
    assert_eq!(welcome["resumed"], true, "{welcome}");
    assert_eq!(welcome["id"], b_id);
    assert_eq!(
        welcome["peers"],
        serde_json::json!([{"id": a_id, "polite": false}])
    );
    for n in 0..5 {
        assert_eq!(b.text().await, relayed(&a_id, &n.to_string()));
    }
    // A never saw B leave, and the call goes on through the new node.
    a.send(&signal(&b_id, r#""again""#)).await;
    assert_eq!(b.text().await, relayed(&a_id, r#""again""#));
    b.send(&signal(&a_id, r#""back""#)).await;
    assert_eq!(a.text().await, relayed(&b_id, r#""back""#));
    a.expect_silence(Duration::from_millis(200)).await;

    // Resumed elsewhere while its old connection is still open: the old node closes it
    // (4001), and its signals are no longer taken.
    let resume = welcome["resume"].as_str().unwrap().to_owned();
    let mut moved = Client::rejoin(&nodes[0], "r", &resume).await;
    assert_eq!(moved.json().await["resumed"], true);
    b.expect_close(4001).await;
    moved.send(&signal(&a_id, r#""moved""#)).await;
    assert_eq!(a.text().await, relayed(&b_id, r#""moved""#));
    // An older token is refused: a fresh join with a new id.
    let mut stale = Client::rejoin(&nodes[1], "r", &resume).await;
    let welcome = stale.json().await;
    assert_eq!(welcome["resumed"], false);
    assert_ne!(welcome["id"], b_id);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_does_not_come_back_leaves_once_for_everyone() {
    let redis = RedisServer::start();
    let nodes = three(&redis, |c| Config {
        resume_grace: Duration::from_millis(300),
        ..c
    })
    .await;
    let (mut a, _, _) = Client::join(&nodes[0], "g").await;
    let (b, b_id, _) = Client::join(&nodes[1], "g").await;
    let (mut c, _, _) = Client::join(&nodes[2], "g").await;
    a.text().await; // peer-joined b
    a.text().await; // peer-joined c
    drop(b);
    let left = format!(r#"{{"type":"peer-left","id":"{b_id}"}}"#);
    assert_eq!(a.text().await, left);
    assert_eq!(c.text().await, left);
    a.expect_silence(Duration::from_millis(500)).await;
    c.expect_silence(Duration::from_millis(10)).await;
    assert_eq!(redis.cli(&["HLEN", "politely:members:g"]).trim(), "2");
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_subscription_dropped_fills_the_gap_from_the_inbox() {
    let redis = RedisServer::start();
    let nodes = three(&redis, |c| c).await;
    let (mut a, a_id, _) = Client::join(&nodes[0], "gap").await;
    let (mut b, b_id, _) = Client::join(&nodes[1], "gap").await;
    a.text().await; // peer-joined
    // Every node's subscription is cut (as when Redis restarts); signals sent meanwhile are
    // numbered and kept in the inbox, and arrive in order once the nodes are back.
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(killed.trim(), "3", "three subscriptions");
    for n in 0..50 {
        b.send(&signal(&a_id, &n.to_string())).await;
        a.send(&signal(&b_id, &n.to_string())).await;
    }
    for n in 0..50 {
        assert_eq!(a.text().await, relayed(&b_id, &n.to_string()));
        assert_eq!(b.text().await, relayed(&a_id, &n.to_string()));
    }
    a.expect_silence(Duration::from_millis(100)).await;
    b.expect_silence(Duration::from_millis(10)).await;
    // The 100 came from the inboxes (none was delivered twice).
    let mut fetched = 0.0;
    for node in &nodes[..2] {
        fetched += node.metric("politely_cluster_gap_frames_total").await;
        assert_eq!(node.metric("politely_cluster_duplicates_total").await, 0.0);
    }
    assert_eq!(fetched, 100.0);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_leaves_its_peers_to_resume_elsewhere_or_to_leave_once() {
    let redis = RedisServer::start();
    let mut nodes = three(&redis, |c| Config {
        resume_grace: Duration::from_millis(500),
        ..c
    })
    .await;
    let (mut a, _, _) = Client::join(&nodes[0], "dead").await;
    let (mut c, _, _) = Client::join(&nodes[2], "dead").await;
    let (_gone, gone_id, _) = Client::join(&nodes[1], "dead").await;
    let (_moving, moving_id, welcome) = Client::join(&nodes[1], "dead").await;
    let resume = welcome["resume"].as_str().unwrap().to_owned();
    for peer in [&mut a, &mut c] {
        peer.json().await; // peer-joined gone
        peer.json().await; // peer-joined moving
    }
    a.json().await; // peer-joined c
    // Node b stops beating (its process goes; its peers' places stay in Redis).
    let started = std::time::Instant::now();
    nodes.remove(1).shutdown().await;
    // One of its peers comes back through node c at once, the other never does.
    let mut moving = Client::rejoin(&nodes[1], "dead", &resume).await;
    assert_eq!(moving.json().await["resumed"], true);
    let left = format!(r#"{{"type":"peer-left","id":"{gone_id}"}}"#);
    match a.next_within(Duration::from_secs(10)).await {
        Some(Frame::Text(text)) => assert_eq!(text, left),
        other => panic!("expected {left}, got {other:?}"),
    }
    let reaped = started.elapsed();
    assert_eq!(c.text().await, left);
    assert_eq!(moving.text().await, left);
    // Within the node timeout (2 s), the grace period (0.5 s) and two heartbeats (0.5 s
    // each), and only once.
    assert!(reaped < Duration::from_secs(4), "{reaped:?}");
    eprintln!("reaped after {reaped:?}");
    a.expect_silence(Duration::from_millis(1500)).await;
    c.expect_silence(Duration::from_millis(10)).await;
    assert_eq!(redis.cli(&["HLEN", "politely:members:dead"]).trim(), "3");
    a.send(&signal(&moving_id, r#""still here""#)).await;
    assert_eq!(moving.json().await["data"], "still here");
    let reaped = nodes[0].metric("politely_cluster_reaped_total").await
        + nodes[1].metric("politely_cluster_reaped_total").await;
    assert_eq!(
        reaped, 1.0,
        "one peer was still attached to the stopped node"
    );
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_pause_degrades_the_nodes_and_then_nothing_is_lost_or_reaped() {
    let redis = RedisServer::start();
    let nodes = three(&redis, |c| Config {
        resume_grace: Duration::from_millis(500),
        ..c
    })
    .await;
    let (mut a, a_id, _) = Client::join(&nodes[0], "pause").await;
    let (mut b, b_id, _) = Client::join(&nodes[1], "pause").await;
    a.text().await; // peer-joined
    assert_eq!(nodes[0].get("/ready").await.0, 200);
    // Redis stops answering for 3 s (SIGSTOP): the nodes say so, sockets stay open.
    let pid = redis.child.id().to_string();
    let signal_redis = |sig: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal_redis("-STOP");
    let paused = std::time::Instant::now();
    b.send(&signal(&a_id, r#""during""#)).await;
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let (status, body) = nodes[0].get("/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        nodes[1]
            .get("/health")
            .await
            .1
            .contains(r#""status":"degraded""#)
    );
    signal_redis("-CONT");
    // The signal sent during the pause is answered `unavailable`, or arrives late; the next
    // ones arrive, and no node was taken for dead.
    let failed = match b.next_within(Duration::from_secs(5)).await {
        Some(Frame::Text(text)) => {
            let frame: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(frame["code"], "unavailable", "{frame}");
            assert_eq!(frame["peer"], a_id.as_str(), "{frame}");
            true
        }
        None => false,
        other => panic!("{other:?}"),
    };
    if !failed {
        assert_eq!(a.text().await, relayed(&b_id, r#""during""#));
    }
    eprintln!("the signal sent during the pause: failed {failed}");
    b.send(&signal(&a_id, r#""after""#)).await;
    assert_eq!(a.text().await, relayed(&b_id, r#""after""#));
    eprintln!(
        "relaying again {:?} after the pause began",
        paused.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    a.send(&signal(&b_id, r#""later""#)).await;
    assert_eq!(b.text().await, relayed(&a_id, r#""later""#));
    a.expect_silence(Duration::from_millis(100)).await;
    assert_eq!(nodes[0].get("/ready").await.0, 200);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_lost_its_data_the_nodes_register_their_peers_again() {
    let mut redis = RedisServer::start();
    let nodes = three(&redis, |c| c).await;
    let (mut a, a_id, _) = Client::join(&nodes[0], "lost").await;
    let (mut b, b_id, welcome) = Client::join(&nodes[1], "lost").await;
    let b_resume = welcome["resume"].as_str().unwrap().to_owned();
    a.text().await; // peer-joined
    // Redis is killed and comes back empty (no persistence).
    redis.restart();
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(10);
    while redis.cli(&["HLEN", "politely:members:lost"]).trim() != "2" {
        assert!(
            std::time::Instant::now() < deadline,
            "the members were not registered again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("registered again {:?} after the restart", started.elapsed());
    // Each node noticed (once).
    for node in &nodes {
        while node.metric("politely_cluster_registered_again_total").await < 1.0 {
            assert!(
                std::time::Instant::now() < deadline,
                "a node did not notice"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The room is as it was: signals both ways, a newcomer sees both, nobody left.
    a.send(&signal(&b_id, r#""after""#)).await;
    assert_eq!(b.text().await, relayed(&a_id, r#""after""#));
    b.send(&signal(&a_id, r#""too""#)).await;
    assert_eq!(a.text().await, relayed(&b_id, r#""too""#));
    let (_c, c_id, welcome) = Client::join(&nodes[2], "lost").await;
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
    // Tokens given before still resume (the nodes put their shared key back).
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut b = Client::rejoin(&nodes[2], "lost", &b_resume).await;
    let welcome = b.json().await;
    assert_eq!(welcome["resumed"], true, "{welcome}");
    assert_eq!(welcome["id"], b_id);
    a.expect_silence(Duration::from_millis(200)).await;
    for node in &nodes {
        let again = node.metric("politely_cluster_registered_again_total").await;
        assert_eq!(again, 1.0);
    }
    for node in nodes {
        node.shutdown().await;
    }
}

/// Sends a signal as a client does: again if it is answered `unavailable` (Redis was away).
async fn send_until_taken(client: &mut Client, frame: &str) {
    for _ in 0..20 {
        client.send(frame).await;
        match client.next_within(Duration::from_millis(300)).await {
            None => return,
            Some(Frame::Text(text)) if text.contains(r#""unavailable""#) => continue,
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    panic!("never taken");
}

/// Joins as a client does: again if the join is answered `unavailable`.
async fn join_until_taken(node: &TestServer, room: &str) -> (Client, String, Value) {
    for _ in 0..20 {
        let mut client = Client::connect(node).await;
        client
            .send(&format!(r#"{{"type":"join","room":"{room}"}}"#))
            .await;
        let reply = client.json().await;
        if reply["code"] == "unavailable" {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(reply["type"], "welcome", "{reply}");
        let id = reply["id"].as_str().unwrap().to_owned();
        return (client, id, reply);
    }
    panic!("never joined");
}

/// The moment Redis comes back empty, before any node's heartbeat noticed: a signal is
/// relayed once (its node registers first, and waits for the target's node to), a newcomer's
/// welcome lists everyone (joins wait until every node had time to register), a resume gets
/// its id back, and nobody is closed or told anything else. (A call in flight when Redis
/// died is answered `unavailable`, and the client sends it again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_after_redis_lost_its_data_nothing_sent_is_lost_and_no_one_is_missed() {
    let mut redis = RedisServer::start();
    let nodes = three(&redis, |c| c).await;
    let (mut a, a_id, _) = Client::join(&nodes[0], "moment").await;
    let (mut b, b_id, welcome) = Client::join(&nodes[1], "moment").await;
    let b_resume = welcome["resume"].as_str().unwrap().to_owned();
    a.text().await; // peer-joined
    redis.restart();
    send_until_taken(&mut a, &signal(&b_id, r#""at once""#)).await;
    let (c, c_id, welcome) = join_until_taken(&nodes[2], "moment").await;
    assert_eq!(
        welcome["peers"],
        serde_json::json!([{"id": a_id, "polite": false}, {"id": b_id, "polite": false}])
    );
    assert_eq!(b.text().await, relayed(&a_id, r#""at once""#));
    let joined = format!(r#"{{"type":"peer-joined","id":"{c_id}","polite":true}}"#);
    assert_eq!(a.text().await, joined);
    assert_eq!(b.text().await, joined);
    // Again, and B's connection drops: B resumes on C's node.
    drop(b);
    redis.restart();
    let mut resumed = None;
    for _ in 0..20 {
        let mut b = Client::rejoin(&nodes[2], "moment", &b_resume).await;
        let reply = b.json().await;
        if reply["code"] != "unavailable" {
            assert_eq!(reply["resumed"], true, "{reply}");
            assert_eq!(reply["id"], b_id);
            resumed = Some(b);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut b = resumed.expect("resumed");
    send_until_taken(&mut a, &signal(&b_id, r#""again""#)).await;
    assert_eq!(b.text().await, relayed(&a_id, r#""again""#));
    a.expect_silence(Duration::from_millis(300)).await;
    b.expect_silence(Duration::from_millis(100)).await;
    drop(c);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_that_says_what_it_received_gets_the_rest_again() {
    let redis = RedisServer::start();
    let nodes = three(&redis, |c| c).await;
    let (mut a, a_id, _) = Client::join(&nodes[0], "count").await;
    let (mut b, b_id, welcome) = Client::join(&nodes[1], "count").await;
    let resume = welcome["resume"].as_str().unwrap().to_owned();
    a.text().await; // peer-joined
    for n in 1..=3 {
        a.send(&signal(&b_id, &n.to_string())).await;
        assert_eq!(b.text().await, relayed(&a_id, &n.to_string()));
    }
    drop(b);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 4..=5 {
        a.send(&signal(&b_id, &n.to_string())).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // It says it got only the first: the second to the fifth come again, once, in order.
    let mut b = Client::connect(&nodes[2]).await;
    b.send(&format!(
        r#"{{"type":"join","room":"count","resume":"{resume}","received":1}}"#
    ))
    .await;
    let welcome = b.json().await;
    assert_eq!(welcome["resumed"], true, "{welcome}");
    for n in 2..=5 {
        assert_eq!(b.text().await, relayed(&a_id, &n.to_string()));
    }
    b.expect_silence(Duration::from_millis(200)).await;
    for node in nodes {
        node.shutdown().await;
    }
}
