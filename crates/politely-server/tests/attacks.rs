//! What a hostile client tries, on raw sockets: each probe is answered as RFC 6455 and
//! `docs/protocol.md` say, and the server goes on serving everyone else. Each test failed
//! before the fix it names.

mod util;

use politely_server::Config;
use politely_server::websocket::{self, Opcode};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use util::{MASK, PATIENCE, Raw, TestServer, request};

fn config() -> Config {
    Config {
        rate_limit: None,
        ..Config::default()
    }
}

/// Reads until the server closes the socket: what it sent, or `None` if it was still open after
/// `wait`.
async fn closed_within(tcp: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = async {
        loop {
            match tcp.read_buf(&mut got).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(wait, read).await.ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

/// A TCP connection to `server` from the loopback address `from` (127.0.0.0/8 is all loopback,
/// so one machine can be several clients).
async fn connect_from(from: [u8; 4], server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(server).await.unwrap()
}

/// A masked frame with FIN clear: a fragment other than the last.
fn fragment(opcode: Opcode, payload: &[u8], fin: bool) -> Vec<u8> {
    let mut out = Vec::new();
    websocket::write_masked_frame(&mut out, opcode, payload, MASK);
    if !fin {
        out[0] &= 0x7f;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_never_ends_is_closed_on_either_path() {
    // Bug: the HTTP fallback path ran hyper without a timer, so `G` and nothing else held a
    // connection (and its descriptor) forever.
    let server = TestServer::start(Config {
        request_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    for start in [
        &b"G"[..],
        b"GET /ws HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n",
    ] {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(start).await.unwrap();
        let closed = closed_within(&mut tcp, PATIENCE).await;
        assert!(
            closed.is_some(),
            "{:?} still open",
            String::from_utf8_lossy(start)
        );
    }
    // A kept-alive HTTP connection that goes quiet after a request closes too.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let response = closed_within(&mut tcp, PATIENCE).await.expect("closed");
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limits_are_answered_503() {
    // Bug: no limit on connections per address or in total; 300 idle sockets from one client
    // exhausted the server's descriptors and locked everyone out.
    let server = TestServer::start(Config {
        max_connections: 4,
        max_connections_per_address: 3,
        ..config()
    })
    .await;
    let addr = server.addr;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut tcp = connect_from([127, 0, 0, 1], addr).await;
        tcp.write_all(b"G").await.unwrap();
        held.push(tcp);
    }
    let mut refused = connect_from([127, 0, 0, 1], addr).await;
    let answer = closed_within(&mut refused, PATIENCE).await.expect("closed");
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(
        answer.ends_with("too many connections from your address\n"),
        "{answer}"
    );
    // Another address may still connect, up to the total.
    let (response, mut other) = Raw::handshake_on(
        connect_from([127, 0, 0, 2], addr).await,
        &[request(addr, "").as_bytes()],
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 101 "), "{response}");
    let mut over_total = connect_from([127, 0, 0, 3], addr).await;
    let answer = closed_within(&mut over_total, PATIENCE)
        .await
        .expect("closed");
    assert!(
        answer.ends_with("the server has too many connections\n"),
        "{answer}"
    );
    // The WebSocket works as ever, and a closed connection gives its place back.
    other.send_text(r#"{"type":"join","room":"r"}"#).await;
    assert_eq!(other.json().await["type"], "welcome");
    drop(held);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut tcp = connect_from([127, 0, 0, 1], addr).await;
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = closed_within(&mut tcp, PATIENCE).await.expect("closed");
        if answer.starts_with("HTTP/1.1 200 ") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(other);
    server
        .wait_metric(
            r#"politely_connections_refused_total{limit="per-address"}"#,
            1.0,
        )
        .await;
    // (The loop above may have found the total still full while the held ones closed.)
    let total = server
        .metric(r#"politely_connections_refused_total{limit="total"}"#)
        .await;
    assert!(total >= 1.0, "{total}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_frame_header_before_join_ends_the_connection() {
    // Bug: a 14-byte header announcing 256 KiB made the reader reserve it all, before any join.
    let server = TestServer::start(config()).await;
    let mut raw = Raw::open(server.addr).await;
    let mut header = Vec::new();
    websocket::write_header(&mut header, Opcode::Text, 256 * 1024, Some(MASK));
    raw.send_bytes(&header).await;
    assert_eq!(raw.next().await, "Close(Some(1009))");
    // After join, the same header is a frame being read, and the frame limit applies as ever.
    let (mut joined, _) = Raw::join(server.addr, "r").await;
    let frame = fragment(Opcode::Text, &vec![b' '; 300 * 1024], true);
    joined.send_bytes(&frame).await;
    assert_eq!(joined.json().await["code"], "frame-too-large");
    joined.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(joined.next().await, r#"{"type":"pong"}"#);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_signal_survives_keepalive_ticks_between_its_fragments() {
    // Bug: each keepalive tick gave back the reader's memory, the first fragments of a message
    // being assembled included; the sender got `invalid-json`.
    let server = TestServer::start(Config {
        ping_interval: Duration::from_millis(100),
        ..config()
    })
    .await;
    let (mut a, a_id) = Raw::join(server.addr, "r").await;
    let (mut b, b_id) = Raw::join(server.addr, "r").await;
    assert_eq!(a.json().await["type"], "peer-joined");
    let data = format!(r#""{}""#, "z".repeat(3000));
    let signal = format!(r#"{{"type":"signal","to":"{b_id}","data":{data}}}"#);
    let (first, rest) = signal.as_bytes().split_at(2500);
    a.send_bytes(&fragment(Opcode::Text, first, false)).await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    a.send_bytes(&fragment(Opcode::Continuation, rest, true))
        .await;
    assert_eq!(
        b.next().await,
        format!(r#"{{"type":"signal","from":"{a_id}","data":{data}}}"#)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hard_limit_holds_across_fragments() {
    // Bug: fragments of 256 KiB adding up to 6 MiB got one `frame-too-large` and the connection
    // went on reading; the hard limit (4 × the frame limit) must end it with 1009.
    let server = TestServer::start(config()).await;
    let (mut a, _) = Raw::join(server.addr, "r").await;
    let part = vec![b'x'; 256 * 1024];
    let mut stream = fragment(Opcode::Text, &part, false);
    for _ in 0..24 {
        stream.extend(fragment(Opcode::Continuation, &part, false));
    }
    // The server stops reading part way: the rest of the write may fail.
    let _ = a.tcp.write_all(&stream).await;
    assert_eq!(a.json().await["code"], "frame-too-large");
    assert_eq!(a.next().await, "Close(Some(1009))");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_codes_a_client_may_not_send_fail_the_connection_with_1002() {
    // Bug: the server echoed any code, 1005, 1006 and 1015 included (RFC 6455 §7.4.1 reserves
    // them for reporting; they never go on the wire).
    let server = TestServer::start(config()).await;
    for (code, answer) in [
        (1000, 1000),
        (1001, 1001),
        (1011, 1011),
        (3000, 3000),
        (4999, 4999),
        (0, 1002),
        (999, 1002),
        (1004, 1002),
        (1005, 1002),
        (1006, 1002),
        (1015, 1002),
        (1016, 1002),
        (2999, 1002),
        (5000, 1002),
    ] {
        let mut raw = Raw::open(server.addr).await;
        let mut close = Vec::new();
        websocket::write_close(&mut close, code, "", Some(MASK));
        raw.send_bytes(&close).await;
        assert_eq!(
            raw.next().await,
            format!("Close(Some({answer}))"),
            "close code {code}"
        );
    }
    server.shutdown().await;
}

/// `n` pings in one buffer, each carrying its number.
fn pings(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        websocket::write_masked_frame(&mut out, Opcode::Ping, i.to_string().as_bytes(), MASK);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_is_answered_once_per_read_and_counts_against_the_rate_limit() {
    // Bug: pings took no token and no strike, and each got a pong of its own, written at once:
    // a million pings cost 2.4 s of server CPU.
    let server = TestServer::start(config()).await;
    let mut raw = Raw::open(server.addr).await;
    raw.send_bytes(&pings(1000)).await;
    let mut pongs = Vec::new();
    while let Some(message) = raw.next_within(Duration::from_millis(300)).await {
        pongs.push(message);
    }
    // The 1000 pings (under 6 KiB) arrive in a few reads; the last pong answers the last ping.
    assert!(!pongs.is_empty() && pongs.len() <= 10, "{pongs:?}");
    assert_eq!(pongs.last().unwrap(), &format!("Pong({:?})", b"999"));
    server.shutdown().await;

    let server = TestServer::start(Config::default()).await;
    let (mut raw, _) = Raw::join(server.addr, "r").await;
    raw.send_bytes(&pings(2000)).await;
    // 400 in the burst (a pong for each read of them), then 20 strikes: the flood ends the
    // connection.
    let mut seen = Vec::new();
    loop {
        let message = raw.next().await;
        if message.starts_with("Close") || message == "eof" {
            assert_eq!(message, "Close(Some(1008))", "after {seen:?}");
            break;
        }
        seen.push(message);
    }
    let pongs = seen.iter().filter(|m| m.starts_with("Pong(")).count();
    let errors: Vec<_> = seen.iter().filter(|m| !m.starts_with("Pong(")).collect();
    assert!(pongs <= 10, "{seen:?}");
    assert_eq!(errors.len(), 1, "{seen:?}");
    assert!(errors[0].contains(r#""code":"rate-limited""#), "{seen:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_paths_check_the_handshake_the_same_way() {
    // Bug: the router (fallback) path read only the first of repeated headers, took 100 KiB
    // heads, and neither path checked the key's form.
    let server = TestServer::start(Config {
        allowed_origins: Some(vec!["https://good.example".into()]),
        ..config()
    })
    .await;
    let addr = server.addr;
    let ok = request(addr, "Origin: https://good.example\r\n");
    let cases = [
        (ok.clone(), 101),
        (
            request(
                addr,
                "Origin: https://good.example\r\nOrigin: https://evil.example\r\n",
            ),
            400,
        ),
        (request(addr, "Origin: https://evil.example\r\n"), 403),
        (ok.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="), 400),
        (
            ok.replace("dGhlIHNhbXBsZSBub25jZQ==", "not base64 at all!!!!!!="),
            400,
        ),
        (
            request(addr, "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"),
            400,
        ),
        (
            request(addr, &format!("X-Padding: {}\r\n", "a".repeat(10_000))),
            431,
        ),
        (ok.replace("HTTP/1.1", "HTTP/1.0"), 400),
    ];
    for (request, status) in cases {
        // In one piece the fast path reads it; with three bytes first, the router does.
        let (whole, _) = Raw::handshake(addr, &[request.as_bytes()]).await;
        let (first, rest) = request.as_bytes().split_at(3);
        let (pieces, _) = Raw::handshake(addr, &[first, rest]).await;
        // (hyper answers an HTTP/1.0 request in HTTP/1.0.)
        let code = |response: &str| response.get(9..12).map(str::to_owned);
        let expected = Some(status.to_string());
        assert_eq!(code(&whole), expected, "fast path: {whole}\nfor {request}");
        assert_eq!(code(&pieces), expected, "router: {pieces}\nfor {request}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_wide_queue_budget_bounds_what_parked_peers_hold() {
    // Bug: each parked peer could hold its whole 4 MiB queue for its grace period, and one
    // client could park as many peers as it liked: memory grew with its bandwidth.
    let server = TestServer::start(Config {
        max_queued_bytes: 256 * 1024,
        resume_grace: Duration::from_secs(30),
        ..config()
    })
    .await;
    let (mut a, _) = Raw::join(server.addr, "r").await;
    let (b, b_id) = Raw::join(server.addr, "r").await;
    assert_eq!(a.json().await["type"], "peer-joined");
    // B's connection drops: its slot and queue wait for a resume.
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let data = format!(r#""{}""#, "q".repeat(16 * 1024));
    let signal = format!(r#"{{"type":"signal","to":"{b_id}","data":{data}}}"#);
    let mut left = None;
    for _ in 0..32 {
        a.send_text(&signal).await;
        if let Some(message) = a.next_within(Duration::from_millis(20)).await {
            left = Some(message);
            break;
        }
    }
    let left = left.expect("b evicted");
    let left: serde_json::Value =
        serde_json::from_str(&left).unwrap_or_else(|_| panic!("not JSON: {left}"));
    assert_eq!(
        (left["type"].as_str(), left["id"].as_str()),
        (Some("peer-left"), Some(b_id.as_str()))
    );
    server
        .wait_metric("politely_queue_budget_refused_total", 1.0)
        .await;
    // Everything reserved is given back once the queues are gone or taken.
    server.wait_metric("politely_queued_bytes", 0.0).await;
    // A goes on as ever.
    a.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(a.next().await, r#"{"type":"pong"}"#);
    server.shutdown().await;
}
