//! A game loop over an unreliable, unordered channel: 60 state updates a second each way,
//! each echoed, so each side sees its round-trip time; late updates are simply superseded.
//!
//! ```sh
//! cargo run --release -p politely --example game_loop
//! ```
//!
//! A server and two players run in this process, on loopback, for three seconds. The channel
//! is created by both ends with one negotiated id, `ordered: false` and `max_retransmits: 0`:
//! what is lost stays lost, as a game wants of its state updates.

mod common;

use politely::{ChannelOptions, DataChannel, PeerEvent, Session, SessionConfig, SessionEvent};
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_micros(16_667);
const PLAY: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = common::embedded_server().await?;
    let a = Session::join(&url, "game", SessionConfig::loopback()).await?;
    let b = Session::join(&url, "game", SessionConfig::loopback()).await?;
    let epoch = Instant::now();
    let (ra, rb) = tokio::join!(play("a", a, epoch), play("b", b, epoch));
    for result in [ra?, rb?] {
        println!("{result}");
    }
    Ok(())
}

/// One player: sends `tick <n> <sent µs>` every tick, echoes the other's ticks as `echo ...`,
/// and measures round trips from the echoes of its own.
async fn play(name: &str, mut session: Session, epoch: Instant) -> Result<String, politely::Error> {
    let channel = loop {
        match session.next_event().await {
            Some(SessionEvent::PeerJoined(peer)) => {
                let options = ChannelOptions {
                    ordered: false,
                    max_retransmits: Some(0),
                    negotiated: Some(1),
                    ..Default::default()
                };
                peer.create_data_channel("state", options).await?;
            }
            Some(SessionEvent::Peer {
                event: PeerEvent::ChannelOpen(channel),
                ..
            }) => break channel,
            Some(_) => {}
            None => return Err(politely::Error::Closed),
        }
    };
    let mut ticker = tokio::time::interval(TICK);
    let (mut sent, mut rtts) = (0u64, Vec::new());
    let end = Instant::now() + PLAY;
    // After the last tick, a moment for the last echoes.
    let last_echo = end + Duration::from_millis(200);
    while Instant::now() < last_echo {
        tokio::select! {
            _ = ticker.tick(), if Instant::now() < end => {
                let now = epoch.elapsed().as_micros();
                // An update that cannot go (the other player just left) is one more lost.
                let _ = channel.send_text(format!("tick {sent} {now}")).await;
                sent += 1;
            }
            event = session.next_event() => match event {
                Some(SessionEvent::Peer { event: PeerEvent::Message { message, .. }, .. }) => {
                    on_message(&channel, message.as_text().unwrap_or(""), epoch, &mut rtts).await;
                }
                Some(_) => {}
                None => break,
            },
            () = tokio::time::sleep_until(last_echo.into()) => break,
        }
    }
    session.leave().await;
    rtts.sort();
    let at = |q: f64| {
        rtts.get(((rtts.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    Ok(format!(
        "{name}: {sent} updates sent at 60/s, {} echoed back ({} lost or late); round trip p50 {:.2} ms, p99 {:.2} ms",
        rtts.len(),
        sent - rtts.len() as u64,
        at(0.5) as f64 / 1000.0,
        at(0.99) as f64 / 1000.0,
    ))
}

/// Echoes the other player's tick, or takes the round trip of one of ours.
async fn on_message(channel: &DataChannel, text: &str, epoch: Instant, rtts: &mut Vec<u128>) {
    let mut words = text.split(' ');
    match (words.next(), words.next(), words.next()) {
        (Some("tick"), Some(n), Some(at)) => {
            let _ = channel.send_text(format!("echo {n} {at}")).await;
        }
        (Some("echo"), Some(_), Some(at)) => {
            if let Ok(at) = at.parse::<u128>() {
                rtts.push(epoch.elapsed().as_micros().saturating_sub(at));
            }
        }
        _ => {}
    }
}
