//! The politely signaling server: rooms, server-assigned time-ordered ids, directed relay of
//! signals, presence and roles, optional room tokens, resume after a dropped connection,
//! keepalive, limits, health and metrics. It speaks protocol v1 of [`politely_proto`].
//!
//! It is a library, so tests and applications run exactly what ships: [`Server::bind`] then
//! [`Server::serve`], or mount [`app`] in an axum application of your own.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use politely_server::{Config, Server};
//!
//! let server = Server::bind(Config::default()).await?;
//! println!("listening on {}", server.local_addr());
//! // Anything that completes asks for a graceful shutdown: a signal, a channel, a timer.
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! # drop(stop);
//! server
//!     .serve(async {
//!         let _ = stopped.await;
//!     })
//!     .await
//! # }
//! ```
//!
//! Routes: `GET /ws` (the WebSocket), `GET /health`, `GET /metrics` (Prometheus text).
//!
//! Each connection is one task. A relayed frame is parsed only as far as its envelope (`type`,
//! `to`; `data` is kept as raw JSON text), re-framed with the sender's id and pushed onto the
//! target's bounded queue; the target's task writes everything queued with one flush. Frames of
//! one sender to one target keep their order.

#![cfg_attr(not(test), warn(missing_docs))]

mod assets;
mod config;
mod connection;
mod hub;
mod id;
mod metrics;
pub mod token;

pub use config::{Config, RateLimit, Secret};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use hub::Hub;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::net::TcpListener;

/// The routes of the server, for mounting in an application of your own. Connections it accepts
/// end when their clients go; use [`Server`] for a graceful shutdown that closes them.
pub fn app(config: Config) -> Router {
    router(Arc::new(Hub::new(config)))
}

fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route(politely_proto::WS_PATH, get(upgrade))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/", get(assets::index))
        .route("/politely.js", get(assets::client))
        .route("/demo.js", get(assets::demo))
        .with_state(hub)
}

/// A bound server, ready to serve.
pub struct Server {
    listener: TcpListener,
    hub: Arc<Hub>,
    local_addr: SocketAddr,
}

impl Server {
    /// Binds `config.listen` (port 0 picks a free port; see [`Server::local_addr`]).
    pub async fn bind(config: Config) -> io::Result<Server> {
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        Ok(Server {
            listener,
            hub: Arc::new(Hub::new(config)),
            local_addr,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops accepting, closes every WebSocket with
    /// 1001 (going away) and waits up to five seconds for the connections to end.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let hub = self.hub.clone();
        let stop = hub.shutdown.clone();
        // Frames are batched per flush already; Nagle's algorithm would only add latency.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!("TCP_NODELAY: {e}");
            }
        });
        let result = axum::serve(listener, router(self.hub))
            .with_graceful_shutdown(async move {
                shutdown.await;
                stop.cancel();
            })
            .await;
        hub.shutdown.cancel();
        hub.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), hub.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = hub.tasks.len(),
                "connections still open five seconds after shutdown"
            );
        }
        result
    }
}

async fn upgrade(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let (Some(allowed), Some(origin)) =
        (&hub.config.allowed_origins, headers.get(header::ORIGIN))
    {
        let origin = origin.to_str().unwrap_or_default();
        if !allowed.iter().any(|a| a == origin) {
            hub.metrics.origin_refused.fetch_add(1, Relaxed);
            return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
        }
    }
    if hub.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let config = &hub.config;
    // A frame up to four times the limit is read and refused with an error frame; past that the
    // connection ends (1009), since a WebSocket frame cannot be skipped unread.
    let hard_limit = config.max_frame_bytes.saturating_mul(4);
    let hub2 = hub.clone();
    ws.protocols([politely_proto::SUBPROTOCOL])
        .read_buffer_size(config.read_buffer_bytes)
        .write_buffer_size(64 * 1024)
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| hub.tasks.track_future(connection::run(hub2, socket)))
}

async fn health(State(hub): State<Arc<Hub>>) -> Response {
    let body = format!(
        "{{\"status\":\"ok\",\"version\":{},\"connections\":{},\"rooms\":{}}}\n",
        politely_proto::VERSION,
        hub.metrics.connections.load(Relaxed),
        hub.metrics.rooms.load(Relaxed),
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        hub.metrics.render(),
    )
        .into_response()
}
