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
//! Routes: `GET /ws` (the WebSocket), `GET /health`, `GET /ready` (503 while a node of several
//! cannot reach Redis), `GET /metrics` (Prometheus text).
//!
//! Each connection is one task. WebSocket requests are recognised from their first bytes and
//! handled on the raw TCP socket with the server's own framing; everything else
//! goes to the axum router. A relayed frame is parsed only as far as its envelope (`type`, `to`;
//! `data` is kept as raw JSON text) and written, re-framed with the sender's id, straight into
//! the target's bounded queue of encoded frames; the target's task writes everything queued
//! with one write. Frames of one sender to one target keep their order.

#![cfg_attr(not(test), warn(missing_docs))]

mod assets;
mod cluster;
mod config;
#[cfg(test)]
mod conformance;
mod connection;
#[cfg(test)]
mod fuzz;
mod handshake;
mod hub;
mod id;
mod metrics;
mod resume;
pub mod token;
mod turn;
// WebSocket framing: not public API (see the `internals` feature).
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod websocket;
#[cfg(not(feature = "internals"))]
mod websocket;

pub use config::{Config, JoinHook, JoinRequest, RateLimit, Redis, Secret, tls_from_pem};
pub use turn::Turn;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hub::{Admission, Hub, Refused};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// The routes of the server, for mounting in an application of your own. Connections it accepts
/// end when their clients go; use [`Server`] for a graceful shutdown that closes them. It runs
/// one node: [`Config::redis`] needs [`Server::bind`].
pub fn app(config: Config) -> Router {
    app_with_metrics(config).0
}

/// [`app`], and a view of its metrics.
pub fn app_with_metrics(config: Config) -> (Router, ServerMetrics) {
    let hub = Arc::new(Hub::new(config));
    (router(hub.clone()), ServerMetrics(hub))
}

/// A live view of a server's metrics, for an application that embeds it: the figures of
/// `GET /metrics`.
#[derive(Clone)]
pub struct ServerMetrics(Arc<Hub>);

impl ServerMetrics {
    /// The Prometheus text that `GET /metrics` answers.
    pub fn prometheus(&self) -> String {
        self.0.metrics.render()
    }

    /// Open WebSocket connections.
    pub fn connections(&self) -> u64 {
        self.0.metrics.connections.load(Relaxed).max(0) as u64
    }

    /// Peers in rooms, connected or within their resume grace period.
    pub fn peers(&self) -> u64 {
        self.0.metrics.peers.load(Relaxed).max(0) as u64
    }

    /// Rooms with at least one peer.
    pub fn rooms(&self) -> u64 {
        self.0.metrics.rooms.load(Relaxed).max(0) as u64
    }

    /// Bytes of the send-queue budget reserved now.
    pub fn queued_bytes(&self) -> usize {
        self.0.metrics.queued_bytes.load(Relaxed)
    }
}

impl std::fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerMetrics")
            .field("connections", &self.connections())
            .field("peers", &self.peers())
            .field("rooms", &self.rooms())
            .finish()
    }
}

fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route(politely_proto::WS_PATH, get(upgrade))
        .route("/health", get(health))
        .route("/ready", get(readiness))
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
    /// Binds `config.listen` (port 0 picks a free port; see [`Server::local_addr`]). With
    /// [`Config::redis`], connects to Redis first (an error if it does not answer).
    pub async fn bind(config: Config) -> io::Result<Server> {
        cluster::check(&config).map_err(io::Error::other)?;
        let hub = match config.redis.clone() {
            Some(settings) => {
                let configured = config.resume_secret.as_ref().map(|s| s.as_bytes().to_vec());
                let (cluster, key) =
                    cluster::Cluster::connect(&settings, configured.as_deref()).await?;
                let hub = Arc::new(Hub::clustered(config, key, cluster.clone()));
                cluster.start(&hub).await?;
                tracing::info!(node = cluster.node(), "cluster node on {}", settings.url);
                hub
            }
            None => Arc::new(Hub::new(config)),
        };
        let listener = TcpListener::bind(hub.config.listen).await?;
        let local_addr = listener.local_addr()?;
        Ok(Server {
            listener,
            hub,
            local_addr,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A view of the server's metrics that stays live while it serves.
    pub fn metrics(&self) -> ServerMetrics {
        ServerMetrics(self.hub.clone())
    }

    /// Serves until `shutdown` completes, then stops accepting, closes every WebSocket with
    /// 1001 (going away) and waits up to five seconds for the connections to end.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let hub = self.hub;
        let router = router(hub.clone());
        let tls = hub.config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        tokio::pin!(shutdown);
        let result = loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break Ok(()),
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let admission = match hub.admit(peer) {
                        Ok(admission) => admission,
                        Err(refused) => {
                            refuse(&hub, &tcp, refused);
                            continue;
                        }
                    };
                    // Frames are batched per write already; Nagle's algorithm would only add
                    // latency.
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::warn!("TCP_NODELAY: {e}");
                    }
                    let (task_hub, router) = (hub.clone(), router.clone());
                    match tls.clone() {
                        Some(tls) => {
                            hub.tasks
                                .spawn(tls_connection(task_hub, router, tls, tcp, admission));
                        }
                        None => {
                            hub.tasks
                                .spawn(connection(task_hub, router, tcp, admission));
                        }
                    }
                }
                // Out of file descriptors, or a connection reset before it was accepted: the
                // listener itself is fine. Pause so a full descriptor table is not a busy loop.
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        drop(self.listener);
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

/// Answers a connection over the limits with a `503` and closes it, without a task: one write
/// that fits any socket buffer, then the close.
fn refuse(hub: &Hub, tcp: &TcpStream, refused: Refused) {
    let (counter, body) = match refused {
        Refused::Total => (
            &hub.metrics.refused_total,
            "the server has too many connections\n",
        ),
        Refused::Address => (
            &hub.metrics.refused_address,
            "too many connections from your address\n",
        ),
    };
    counter.fetch_add(1, Relaxed);
    tracing::debug!(?refused, "connection refused");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Retry-After: 10\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.try_write(response.as_bytes());
}

/// One accepted TCP connection: a WebSocket request is served on the raw socket, anything else
/// by the router (over HTTP/1.1, keep-alive included). `admission` holds its place within the
/// connection limits for as long as it is open, upgraded through the router included.
async fn connection(hub: Arc<Hub>, router: Router, tcp: TcpStream, admission: Admission) {
    let mut first = [0u8; 8];
    let timeout = hub.config.request_timeout;
    let peeked = tokio::select! {
        peeked = tokio::time::timeout(timeout, tcp.peek(&mut first)) => peeked,
        () = hub.shutdown.cancelled() => return,
    };
    match peeked {
        Ok(Ok(n)) if handshake::is_websocket_request(&first[..n]) => {
            drop(router);
            return handshake::upgrade_tcp(hub, tcp).await;
        }
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    // Boxed: hyper's connection state is large, and every connection's task would otherwise
    // reserve room for it, WebSockets on the fast path included (0.5 KiB of each idle one).
    Box::pin(serve_http(hub, router, tcp, admission)).await;
}

/// One accepted TCP connection when the server terminates TLS: the handshake within the
/// request timeout, then everything through the router (a WebSocket request too: the fast path
/// reads the raw socket).
async fn tls_connection(
    hub: Arc<Hub>,
    router: Router,
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    admission: Admission,
) {
    let timeout = hub.config.request_timeout;
    let accepted = tokio::select! {
        accepted = tokio::time::timeout(timeout, acceptor.accept(tcp)) => accepted,
        () = hub.shutdown.cancelled() => return,
    };
    match accepted {
        Ok(Ok(tls)) => Box::pin(serve_http(hub, router, tls, admission)).await,
        Ok(Err(e)) => tracing::debug!("TLS handshake: {e}"),
        Err(_) => tracing::debug!("TLS handshake timed out"),
    }
}

/// The router's side of [`connection`], over HTTP/1.1 with keep-alive. The same limits as the
/// fast path: the whole head within the request timeout (each request's, on a kept-alive
/// connection: an idle one closes too), at most 8 KiB of it and 48 header lines.
async fn serve_http<S>(hub: Arc<Hub>, router: Router, stream: S, admission: Admission)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let router = router.layer(axum::Extension(Arc::new(admission)));
    let service = hyper_util::service::TowerToHyperService::new(router);
    let http = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(hub.config.request_timeout)
        .max_header_size(handshake::MAX_HEAD)
        .max_headers(handshake::MAX_HEADERS)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(http);
    tokio::select! {
        _ = http.as_mut() => {}
        () = hub.shutdown.cancelled() => {
            http.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
        }
    }
}

/// The WebSocket route, for requests that did not take the fast path (an application that
/// mounts [`app`] in its own server, or a request whose first bytes came in pieces).
async fn upgrade(State(hub): State<Arc<Hub>>, request: Request) -> Response {
    let admission = request.extensions().get::<Arc<Admission>>().cloned();
    handshake::upgrade_in_router(hub, request, admission)
}

/// Whether this node can serve joins: always for one node; for a node of several, while
/// Redis answers its heartbeats.
fn ready(hub: &Hub) -> bool {
    hub.cluster.as_ref().is_none_or(|c| c.reachable())
}

async fn health(State(hub): State<Arc<Hub>>) -> Response {
    let status = if ready(&hub) { "ok" } else { "degraded" };
    let body = format!(
        "{{\"status\":\"{status}\",\"version\":{},\"connections\":{},\"rooms\":{}}}\n",
        politely_proto::VERSION,
        hub.metrics.connections.load(Relaxed),
        hub.metrics.rooms.load(Relaxed),
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `200 ready`, or `503` while a node of several cannot reach Redis (a load balancer then
/// sends new clients elsewhere).
async fn readiness(State(hub): State<Arc<Hub>>) -> Response {
    if ready(&hub) {
        "ready\n".into_response()
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "redis does not answer\n",
        )
            .into_response()
    }
}

async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    let mut text = hub.metrics.render();
    // A node of several also reports the rooms of all of them (absent while Redis is away).
    if let Some(rooms) = match &hub.cluster {
        Some(cluster) => cluster.rooms().await,
        None => None,
    } {
        text.push_str(
            "# HELP politely_cluster_rooms Rooms with at least one peer on any node (from Redis).\n\
             # TYPE politely_cluster_rooms gauge\n",
        );
        text.push_str(&format!("politely_cluster_rooms {rooms}\n"));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
