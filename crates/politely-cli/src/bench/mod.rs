//! `politely bench`: load generators for the signaling server, loopback only, bounded in count
//! and time.

use clap::Subcommand;
use futures_util::{SinkExt, StreamExt};
use politely_proto::ServerMessage;
use std::process::ExitCode;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod attack;
mod broadcast;
mod chaos;
mod idle;
mod native;
mod raw;
mod relay;
mod samples;
mod sfu;

#[derive(Subcommand, Debug)]
pub(crate) enum BenchCommand {
    /// Relayed frames per second, latency, the server's CPU per frame, and a check that no
    /// frame is lost, duplicated or reordered.
    Relay(relay::RelayArgs),
    /// Idle connections held, and the server's memory per connection.
    Idle(idle::IdleArgs),
    /// Native peers: time from joining to the first data-channel message echoed.
    Connect(native::ConnectArgs),
    /// Native peers: time per glare round, on a live connection and on fresh ones.
    Glare(native::GlareArgs),
    /// A hostile client (slowloris, huge frame headers, ping floods, parked peers' backlog),
    /// with the server's memory and CPU; run `bench relay` beside it for a bystander's latency.
    Attack(attack::AttackArgs),
    /// An SFU room (`politely serve --sfu` in a child process): publish to first packet at
    /// every subscriber, churn rounds, the SFU's CPU per forwarded packet.
    Sfu(sfu::SfuArgs),
    /// A cluster (nodes on a Redis of its own) with a fault mid-run: a node killed, Redis
    /// stopped or killed; what clients received checked against what was sent.
    Chaos(chaos::ChaosArgs),
}

pub(crate) fn run(command: &BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Relay(args) => relay::run(args),
        BenchCommand::Idle(args) => idle::run(args),
        BenchCommand::Connect(args) => native::connect(args),
        BenchCommand::Glare(args) => native::glare(args),
        BenchCommand::Attack(args) => attack::run(args),
        BenchCommand::Sfu(args) => sfu::run(args),
        BenchCommand::Chaos(args) => chaos::run(args),
    }
}

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The server's WebSocket URL (`ws://host:port` gets the protocol's path), refused unless
/// it is plain `ws://` on loopback.
fn ws_url(url: &str) -> anyhow::Result<String> {
    let parsed = politely_proto::server_url(url)?;
    anyhow::ensure!(
        parsed.scheme() == "ws",
        "the benchmarks speak plain ws:// on loopback: {url}"
    );
    anyhow::ensure!(
        crate::join::loopback_of_url(parsed.as_str()).is_some(),
        "the benchmarks only load servers on loopback, not {}",
        parsed.host_str().unwrap_or_default()
    );
    Ok(parsed.into())
}

/// Connects and joins `room`; returns the socket and the id from the welcome.
async fn join(url: &str, room: &str, read_buffer: usize) -> anyhow::Result<(Socket, String)> {
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
    let join = politely_proto::ClientMessage::Join {
        room: room.into(),
        token: None,
        resume: None,
        sfu: false,
        peers: Vec::new(),
        received: None,
    };
    ws.send(Message::text(join.to_json())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => match ServerMessage::from_json(&text)? {
                ServerMessage::Welcome { id, .. } => return Ok((ws, id.into_owned())),
                ServerMessage::Error { code, message, .. } => {
                    anyhow::bail!("join refused: {code}: {message}")
                }
                _ => continue,
            },
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("the server closed the connection before the welcome"),
        }
    }
}

/// Formats 1234567 as "1,234,567".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_loopback_only_and_get_the_ws_path() {
        assert_eq!(
            ws_url("ws://127.0.0.1:8080").unwrap(),
            "ws://127.0.0.1:8080/ws"
        );
        assert_eq!(
            ws_url("ws://localhost:1/ws").unwrap(),
            "ws://localhost:1/ws"
        );
        assert_eq!(ws_url("ws://[::1]:9").unwrap(), "ws://[::1]:9/ws");
        assert!(ws_url("ws://10.0.0.5:8080").is_err());
        assert!(ws_url("ws://[fe80::1]:8080").is_err());
        assert!(ws_url("wss://127.0.0.1:8080").is_err());
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
