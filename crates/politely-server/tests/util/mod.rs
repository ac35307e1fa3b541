//! A test client and server harness: servers bind 127.0.0.1:0 and tests learn the address
//! before connecting; clients read exact frames with a timeout.
//!
//! With `POLITELY_TEST_NODES=3` in the environment, a [`TestServer`] is three nodes sharing a
//! `redis-server` of their own, behind a round-robin balancer: each new TCP connection goes to
//! the next node, so the members of a room sit on different nodes. The server contract tests
//! run so in `.ci/run`.

#![allow(dead_code, unreachable_pub)]

pub mod redis;

use futures_util::{SinkExt, StreamExt};
use politely_server::websocket::{self, Opcode, Reader, Role};
use politely_server::{Config, Server};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a frame it expects.
pub const PATIENCE: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    /// Set when this is several nodes behind a balancer (`addr` is the balancer's).
    cluster: Option<Cluster>,
}

/// Nodes sharing a Redis, and the balancer in front of them.
struct Cluster {
    nodes: Vec<TestServer>,
    balancer: JoinHandle<()>,
    redis: redis::RedisServer,
}

/// How many nodes a [`TestServer`] is: `POLITELY_TEST_NODES`, default 1.
pub fn nodes() -> usize {
    std::env::var("POLITELY_TEST_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

impl TestServer {
    /// One server with `config`, or, with `POLITELY_TEST_NODES` over 1 and no Redis in
    /// `config`, that many nodes with it behind a round-robin balancer.
    pub async fn start(config: Config) -> TestServer {
        let n = nodes();
        if n < 2 || config.redis.is_some() {
            return TestServer::start_one(config).await;
        }
        let redis = redis::RedisServer::start();
        let mut nodes = Vec::new();
        for i in 0..n {
            let config = Config {
                redis: Some(politely_server::Redis {
                    node: Some(format!("n{i}")),
                    ..politely_server::Redis::new(redis.url())
                }),
                ..config.clone()
            };
            nodes.push(TestServer::start_one(config).await);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let targets = nodes.iter().map(|node| node.addr).collect();
        let balancer = tokio::spawn(balance(listener, targets));
        TestServer {
            addr,
            stop: None,
            task: None,
            cluster: Some(Cluster {
                nodes,
                balancer,
                redis,
            }),
        }
    }

    async fn start_one(mut config: Config) -> TestServer {
        config.listen = "127.0.0.1:0".parse().unwrap();
        let server = Server::bind(config).await.expect("bind 127.0.0.1:0");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            stop: Some(stop),
            task: Some(task),
            cluster: None,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Stops the server (every node) and waits for `serve` to return.
    pub async fn shutdown(mut self) {
        if let Some(cluster) = self.cluster.take() {
            for node in cluster.nodes {
                Box::pin(node.shutdown()).await;
            }
            cluster.balancer.abort();
            return;
        }
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("serve returned within 10 s")
            .unwrap()
            .unwrap();
    }

    /// A plain HTTP GET; returns the status code and the body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let mut tcp = TcpStream::connect(self.addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tcp.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
        (status, body)
    }

    /// The value of one metric line, e.g. `politely_errors_total{code="rate-limited"}`; of
    /// several nodes, the sum of theirs (a room's members on several nodes count once in
    /// `politely_rooms` each; there the cluster's count, `politely_cluster_rooms`, is read).
    pub async fn metric(&self, name: &str) -> f64 {
        if let Some(cluster) = &self.cluster {
            if name == "politely_rooms" {
                return Box::pin(cluster.nodes[0].metric("politely_cluster_rooms")).await;
            }
            let mut sum = 0.0;
            for node in &cluster.nodes {
                sum += Box::pin(node.metric(name)).await;
            }
            return sum;
        }
        let (_, body) = self.get("/metrics").await;
        body.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no metric {name} in\n{body}"))
            .parse()
            .unwrap()
    }
}

impl TestServer {
    /// Waits up to the patience for a metric to reach `value` (connection tasks count their
    /// close a moment after the client sees its effects).
    pub async fn wait_metric(&self, name: &str, value: f64) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let got = self.metric(name).await;
            if got == value {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} is {got}, not {value}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Hands each connection to the next of `nodes` in turn and copies both ways until either
/// side closes.
async fn balance(listener: tokio::net::TcpListener, nodes: Vec<SocketAddr>) {
    for next in 0.. {
        let Ok((mut client, _)) = listener.accept().await else {
            return;
        };
        let node = nodes[next % nodes.len()];
        tokio::spawn(async move {
            let Ok(mut upstream) = TcpStream::connect(node).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
    }
}

/// What a client read.
#[derive(Debug, PartialEq)]
pub enum Frame {
    Text(String),
    Close(Option<(u16, String)>),
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(server: &TestServer) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(server.url())
            .await
            .expect("WebSocket handshake");
        Client { ws }
    }

    /// Connects and joins `room`; returns the client, its id and its welcome.
    pub async fn join(server: &TestServer, room: &str) -> (Client, String, Value) {
        let mut client = Client::connect(server).await;
        client
            .send(&format!(r#"{{"type":"join","room":"{room}"}}"#))
            .await;
        let welcome = client.json().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        let id = welcome["id"].as_str().unwrap().to_owned();
        (client, id, welcome)
    }

    /// Connects and sends a `join` carrying a `resume` token; the reply is the caller's to read.
    pub async fn rejoin(server: &TestServer, room: &str, resume: &str) -> Client {
        let mut client = Client::connect(server).await;
        client
            .send(&format!(
                r#"{{"type":"join","room":"{room}","resume":"{resume}"}}"#
            ))
            .await;
        client
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub async fn send_message(&mut self, message: Message) {
        self.ws.send(message).await.unwrap();
    }

    /// The next text frame or close, skipping pings and pongs.
    pub async fn next(&mut self) -> Frame {
        self.next_within(PATIENCE)
            .await
            .expect("a frame within the patience")
    }

    pub async fn next_within(&mut self, wait: Duration) -> Option<Frame> {
        let read = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(text))) => return Frame::Text(text.to_string()),
                    Some(Ok(Message::Close(frame))) => {
                        return Frame::Close(frame.map(|CloseFrame { code, reason }| {
                            (u16::from(code), reason.to_string())
                        }));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Frame::Close(None),
                }
            }
        };
        tokio::time::timeout(wait, read).await.ok()
    }

    /// The next frame, which must be text.
    pub async fn text(&mut self) -> String {
        match self.next().await {
            Frame::Text(text) => text,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    pub async fn json(&mut self) -> Value {
        serde_json::from_str(&self.text().await).unwrap()
    }

    /// The next frame must be a close with this code.
    pub async fn expect_close(&mut self, code: u16) {
        loop {
            match self.next().await {
                Frame::Close(Some((got, _))) => {
                    assert_eq!(got, code, "close code");
                    return;
                }
                Frame::Close(None) => panic!("closed without a close frame, expected {code}"),
                // Frames queued before the close may still arrive.
                Frame::Text(_) => continue,
            }
        }
    }

    /// Nothing arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(frame) = self.next_within(wait).await {
            panic!("expected silence, got {frame:?}");
        }
    }
}

/// The exact error frame the server sends.
pub fn error(code: &str, message: &str) -> String {
    let message = serde_json::to_string(message).unwrap();
    format!(r#"{{"type":"error","code":"{code}","message":{message}}}"#)
}

/// A config for tests: the defaults, on port 0.
pub fn config() -> Config {
    Config::default()
}

pub const MASK: [u8; 4] = [0xa1, 0xb2, 0xc3, 0xd4];

pub fn request(addr: SocketAddr, extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A client on a raw socket, so tests can send what a WebSocket library would refuse to.
pub struct Raw {
    pub tcp: TcpStream,
    pub reader: Reader,
}

impl Raw {
    /// Sends `head` (perhaps in pieces) and returns the response head and the client.
    pub async fn handshake(addr: SocketAddr, pieces: &[&[u8]]) -> (String, Raw) {
        Raw::handshake_on(TcpStream::connect(addr).await.unwrap(), pieces).await
    }

    /// [`Raw::handshake`] on a connection already made.
    pub async fn handshake_on(mut tcp: TcpStream, pieces: &[&[u8]]) -> (String, Raw) {
        tcp.set_nodelay(true).unwrap();
        for piece in pieces {
            tcp.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let mut head = Vec::new();
        let end = loop {
            let n = tokio::time::timeout(PATIENCE, tcp.read_buf(&mut head))
                .await
                .expect("a response")
                .unwrap();
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(n > 0, "closed before a response: {head:?}");
        };
        let mut reader = Reader::new(Role::Client, 1 << 20, 1 << 20, 4096);
        reader.feed(&head[end..]);
        let response = String::from_utf8(head[..end].to_vec()).unwrap();
        (response, Raw { tcp, reader })
    }

    pub async fn open(addr: SocketAddr) -> Raw {
        let (response, raw) = Raw::handshake(addr, &[request(addr, "").as_bytes()]).await;
        assert!(response.starts_with("HTTP/1.1 101 "), "{response}");
        raw
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    pub async fn send_frame(&mut self, opcode: Opcode, payload: &[u8]) {
        let mut out = Vec::new();
        websocket::write_masked_frame(&mut out, opcode, payload, MASK);
        self.send_bytes(&out).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(Opcode::Text, text.as_bytes()).await;
    }

    /// The next message, described as text (`Text(..)`, `Close(Some(1002))`, ...); `"eof"` when
    /// the server closed the socket. The server's keepalive pings are skipped.
    pub async fn next(&mut self) -> String {
        self.next_within(PATIENCE).await.expect("a frame in time")
    }

    /// The next message within `wait`, as [`Raw::next`] describes it, or `None`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.reader.next_message().unwrap() {
                Some(websocket::Message::Ping(_)) => continue,
                Some(websocket::Message::Text(text)) => {
                    return Some(String::from_utf8(text.as_bytes().to_vec()).unwrap());
                }
                Some(other) => return Some(format!("{other:?}")),
                None => {}
            }
            let read = self.tcp.read_buf(self.reader.buffer());
            match tokio::time::timeout_at(deadline, read).await {
                Err(_) => return None,
                Ok(Ok(0)) => return Some("eof".into()),
                Ok(Err(e)) => return Some(format!("error: {e}")),
                Ok(Ok(_)) => {}
            }
        }
    }

    pub async fn json(&mut self) -> serde_json::Value {
        let text = self.next().await;
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    }

    pub async fn join(addr: SocketAddr, room: &str) -> (Raw, String) {
        let mut raw = Raw::open(addr).await;
        raw.send_text(&format!(r#"{{"type":"join","room":"{room}"}}"#))
            .await;
        let welcome = raw.json().await;
        assert_eq!(welcome["type"], "welcome");
        let id = welcome["id"].as_str().unwrap().to_owned();
        (raw, id)
    }
}
