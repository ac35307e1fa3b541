//! A deliberately plain relay server, the baseline for `politely bench relay`: the usual shape of
//! an axum + tungstenite signaling server, speaking enough of protocol v1 for the benchmark
//! (`join`, `welcome`, `signal`).
//!
//! What makes it the usual shape: default WebSocket buffers (128 KiB to read), Nagle's algorithm
//! left on, the socket split into a reader and a writer task joined by an unbounded channel, and
//! one `send` (a write and a flush) per frame. The envelope is parsed with serde and `data` kept
//! raw, as politely does, so the comparison is about the I/O path.
//!
//! ```sh
//! cargo run --release -p politely-server --example naive-relay -- 127.0.0.1:8090 &
//! politely bench relay --url ws://127.0.0.1:8090 --pairs 50 --size 200 --seconds 10 --server-pid $!
//! ```

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    room: Option<String>,
    to: Option<String>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Default)]
struct Rooms {
    next: AtomicU64,
    peers: Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>,
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    tokio::runtime::Runtime::new()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("listening on {}", listener.local_addr()?);
        let app = Router::new()
            .route("/ws", get(upgrade))
            .with_state(Arc::new(Rooms::default()));
        axum::serve(listener, app).await
    })
}

async fn upgrade(State(rooms): State<Arc<Rooms>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| connection(rooms, socket))
}

async fn connection(rooms: Arc<Rooms>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut me: Option<String> = None;
    while let Some(Ok(Message::Text(text))) = stream.next().await {
        let Ok(frame) = serde_json::from_str::<Frame<'_>>(&text) else {
            continue;
        };
        match (frame.kind, &me) {
            ("join", None) => {
                // Ids only need to be distinct here; the room is not checked.
                let id = format!("{:026}", rooms.next.fetch_add(1, Ordering::Relaxed));
                let room = frame.room.unwrap_or_default();
                let welcome = format!(
                    r#"{{"type":"welcome","id":"{id}","room":"{room}","peers":[],"resume":"","resumed":false,"version":1}}"#
                );
                let _ = tx.send(Message::text(welcome));
                rooms.peers.lock().unwrap().insert(id.clone(), tx.clone());
                me = Some(id);
            }
            ("signal", Some(id)) => {
                let (Some(to), Some(data)) = (frame.to, frame.data) else {
                    continue;
                };
                let relayed = format!(r#"{{"type":"signal","from":"{id}","data":{}}}"#, data.get());
                if let Some(peer) = rooms.peers.lock().unwrap().get(&to) {
                    let _ = peer.send(Message::text(relayed));
                }
            }
            _ => {}
        }
    }
    if let Some(id) = me {
        rooms.peers.lock().unwrap().remove(&id);
    }
}
