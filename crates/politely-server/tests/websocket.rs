//! The WebSocket layer seen from raw TCP: the handshake and its refusals, frames a library
//! client would never send, and the two ways a connection reaches the server (the fast path on
//! the raw socket, and the router when `app` is mounted in an application's own server).

mod util;

use politely_server::websocket::{self, Opcode};
use politely_server::{Config, app};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use util::{MASK, PATIENCE, Raw, TestServer, request};

/// One whole HTTP/1.1 response with a `content-length` body, read off `tcp` and nothing more.
async fn read_response(tcp: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut byte))
            .await
            .expect("a response")
            .unwrap();
        assert_eq!(n, 1, "closed before a whole response: {bytes:?}");
        bytes.push(byte[0]);
        let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&bytes[..end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map_or(0, |value| value.trim().parse().unwrap());
        if bytes.len() == end + 4 + length {
            return String::from_utf8(bytes).unwrap();
        }
    }
}

fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        rate_limit: None,
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_answers_the_rfc_example_and_refuses_what_is_not_an_upgrade() {
    let server = TestServer::start(config()).await;
    let addr = server.addr;
    let (response, _raw) = Raw::handshake(
        addr,
        &[request(addr, "Sec-WebSocket-Protocol: chat, politely.v1\r\n").as_bytes()],
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(response.contains("Sec-WebSocket-Protocol: politely.v1\r\n"));

    // A header given twice counts with both values, as HTTP reads it.
    let repeated = request(addr, "Connection: keep-alive\r\n")
        .replace("Connection: Upgrade\r\n", "Connection: close\r\n");
    let (response, _) = Raw::handshake(addr, &[repeated.as_bytes()]).await;
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    let repeated = request(addr, "Connection: keep-alive\r\n");
    let (response, _) = Raw::handshake(addr, &[repeated.as_bytes()]).await;
    assert!(response.starts_with("HTTP/1.1 101 "), "{response}");

    let wrong_version = request(addr, "").replace("Version: 13", "Version: 8");
    let (response, _) = Raw::handshake(addr, &[wrong_version.as_bytes()]).await;
    assert!(response.starts_with("HTTP/1.1 426 "), "{response}");
    assert!(response.contains("Sec-WebSocket-Version: 13\r\n"));

    let plain_get = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let (response, _) = Raw::handshake(addr, &[plain_get.as_bytes()]).await;
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");

    let no_key = request(addr, "").replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    let (response, _) = Raw::handshake(addr, &[no_key.as_bytes()]).await;
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");

    let huge = request(addr, &format!("X-Padding: {}\r\n", "a".repeat(10_000)));
    let (response, _) = Raw::handshake(addr, &[huge.as_bytes()]).await;
    assert!(response.starts_with("HTTP/1.1 431 "), "{response}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_small_pieces_is_served_through_the_router() {
    let server = TestServer::start(config()).await;
    let addr = server.addr;
    // A plain request first, so the connection is the router's whatever the timing (the fast
    // path decides on a connection's first bytes); then the upgrade on the same kept-alive
    // connection, in pieces.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let health = read_response(&mut tcp).await;
    assert!(health.starts_with("HTTP/1.1 200 "), "{health}");
    let request = request(addr, "");
    let (a_text, b_text) = request.as_bytes().split_at(3);
    let (response, mut a) = Raw::handshake_on(tcp, &[a_text, b_text]).await;
    assert!(response.starts_with("HTTP/1.1 101 "), "{response}");
    assert!(response.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    a.send_text(r#"{"type":"join","room":"r"}"#).await;
    let a_id = a.json().await["id"].as_str().unwrap().to_owned();
    let (mut b, b_id) = Raw::join(addr, "r").await;
    assert_eq!(a.json().await["type"], "peer-joined");
    // Small data is copied into the queue; large data is written from the read that carried
    // it, through the upgraded stream too.
    let large = format!(r#""{}""#, "y".repeat(5000));
    for data in [
        "[1]".to_owned(),
        format!("[2,{large}]"),
        format!("[3,{large}]"),
    ] {
        a.send_text(&format!(
            r#"{{"type":"signal","to":"{b_id}","data":{data}}}"#
        ))
        .await;
        b.send_text(&format!(
            r#"{{"type":"signal","to":"{a_id}","data":{data}}}"#
        ))
        .await;
        assert_eq!(
            b.next().await,
            format!(r#"{{"type":"signal","from":"{a_id}","data":{data}}}"#)
        );
        assert_eq!(
            a.next().await,
            format!(r#"{{"type":"signal","from":"{b_id}","data":{data}}}"#)
        );
    }
    server.shutdown().await;
    assert_eq!(a.next().await, "Close(Some(1001))");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_mounted_in_an_application_serves_websockets() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().nest_service("/signal", app(config()));
    let serve = tokio::spawn(async move { axum::serve(listener, router).await });
    let request = request(addr, "").replace("GET /ws ", "GET /signal/ws ");
    let (response, mut a) = Raw::handshake(addr, &[request.as_bytes()]).await;
    assert!(response.starts_with("HTTP/1.1 101 "), "{response}");
    a.send_text(r#"{"type":"join","room":"r"}"#).await;
    assert_eq!(a.json().await["type"], "welcome");
    a.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(a.next().await, r#"{"type":"pong"}"#);
    serve.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_a_library_would_not_send_close_with_the_rfc_codes() {
    let server = TestServer::start(config()).await;
    let addr = server.addr;

    // An unmasked client frame: 1002.
    let (mut a, _) = Raw::join(addr, "r").await;
    let mut unmasked = Vec::new();
    websocket::write_frame(&mut unmasked, Opcode::Text, br#"{"type":"ping"}"#);
    a.send_bytes(&unmasked).await;
    assert_eq!(a.next().await, "Close(Some(1002))");

    // A reserved opcode: 1002.
    let (mut b, _) = Raw::join(addr, "r").await;
    b.send_bytes(&[0x83, 0x80, 1, 2, 3, 4]).await;
    assert_eq!(b.next().await, "Close(Some(1002))");

    // Text that is not UTF-8: 1007.
    let (mut c, _) = Raw::join(addr, "r").await;
    c.send_frame(Opcode::Text, &[b'"', 0xff, b'"']).await;
    assert_eq!(c.next().await, "Close(Some(1007))");

    // The same inside a signal that is otherwise in the shape the fast path takes.
    let (mut d, _) = Raw::join(addr, "r").await;
    let mut signal = br#"{"type":"signal","to":"x","data":"a"#.to_vec();
    signal.extend_from_slice(b"\xc3\x28\"}");
    d.send_frame(Opcode::Text, &signal).await;
    assert_eq!(d.next().await, "Close(Some(1007))");
    assert_eq!(
        server
            .metric(r#"politely_closes_total{code="1002",reason="protocol-error"}"#)
            .await,
        2.0
    );
    assert_eq!(
        server
            .metric(r#"politely_closes_total{code="1007",reason="invalid-utf8"}"#)
            .await,
        2.0
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_fragments_and_the_closing_handshake() {
    let server = TestServer::start(config()).await;
    let addr = server.addr;
    let (mut a, a_id) = Raw::join(addr, "r").await;
    let (mut b, b_id) = Raw::join(addr, "r").await;
    assert_eq!(a.json().await["type"], "peer-joined");

    // A ping is answered with its payload.
    a.send_frame(Opcode::Ping, b"are you there").await;
    assert_eq!(a.next().await, format!("Pong({:?})", b"are you there"));

    // A signal in three fragments, with a ping between them, is relayed whole.
    let text = format!(r#"{{"type":"signal","to":"{b_id}","data":{{"x":"héllo"}}}}"#);
    let (one, rest) = text.as_bytes().split_at(10);
    let (two, three) = rest.split_at(20);
    let mut out = Vec::new();
    for (opcode, part, fin) in [
        (Opcode::Text, one, false),
        (Opcode::Ping, &b""[..], true),
        (Opcode::Continuation, two, false),
        (Opcode::Continuation, three, true),
    ] {
        websocket::write_masked_frame(&mut out, opcode, part, MASK);
        if !fin {
            let header = out.len() - part.len() - 6;
            out[header] &= 0x7f;
        }
    }
    a.send_bytes(&out).await;
    assert_eq!(a.next().await, "Pong([])");
    assert_eq!(
        b.next().await,
        format!(r#"{{"type":"signal","from":"{a_id}","data":{{"x":"héllo"}}}}"#)
    );

    // A close from the client is echoed, and the others see it leave at once.
    let mut close = Vec::new();
    websocket::write_close(&mut close, 1000, "bye", Some(MASK));
    a.send_bytes(&close).await;
    assert_eq!(a.next().await, "Close(Some(1000))");
    assert_eq!(a.next().await, "eof");
    let left = b.json().await;
    assert_eq!(
        (left["type"].as_str(), left["id"].as_str()),
        (Some("peer-left"), Some(a_id.as_str()))
    );
    server.shutdown().await;
}
