//! What the examples share: a politely signaling server inside the process, on loopback, for
//! the runs that need no server of their own.

use std::net::SocketAddr;

/// A signaling server on 127.0.0.1 (a free port) that runs until the process ends; returns
/// its URL.
pub(crate) async fn embedded_server() -> Result<String, Box<dyn std::error::Error>> {
    let config = politely_server::Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Default::default()
    };
    let server = politely_server::Server::bind(config).await?;
    let url = format!("ws://{}", server.local_addr());
    tokio::spawn(server.serve(std::future::pending()));
    Ok(url)
}
