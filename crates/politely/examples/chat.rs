//! A chat room: every line typed goes to every peer of the room, and what they type appears.
//!
//! With a server (`politely serve` in another terminal), in as many terminals as you like:
//!
//! ```sh
//! cargo run -p politely --example chat -- ws://127.0.0.1:8080 lobby
//! ```
//!
//! Without arguments it runs by itself: a server and two peers in this process say hello to
//! each other, and it exits.

mod common;

use politely::{ChannelOptions, DataChannel, PeerEvent, Session, SessionConfig, SessionEvent};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Both ends create the chat channel with this id: one channel between them, whoever is first.
const CHAT: u16 = 0;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [url, room] => interactive(url, room).await,
        [] => by_itself().await,
        _ => Err("usage: chat [WS-URL ROOM]".into()),
    }
}

/// What every peer of the chat does with the session's events: a chat channel toward each
/// peer, the open ones in `open`, messages printed.
async fn on_event(event: SessionEvent, open: &mut Vec<DataChannel>) -> Result<(), politely::Error> {
    match event {
        SessionEvent::PeerJoined(peer) => {
            let options = ChannelOptions {
                negotiated: Some(CHAT),
                ..Default::default()
            };
            peer.create_data_channel("chat", options).await?;
        }
        SessionEvent::Peer {
            event: PeerEvent::ChannelOpen(channel),
            ..
        } => open.push(channel),
        // Every peer's chat has the same id: what closed is what says so.
        SessionEvent::Peer {
            event: PeerEvent::ChannelClosed(_),
            ..
        } => open.retain(|c| !c.is_closed()),
        SessionEvent::Peer {
            peer,
            event: PeerEvent::Message { message, .. },
        } => println!("{peer}: {}", message.as_text().unwrap_or("<binary>")),
        SessionEvent::PeerLeft { peer } => println!("{peer} left"),
        _ => {}
    }
    Ok(())
}

async fn interactive(url: &str, room: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut session = Session::join(url, room, SessionConfig::default()).await?;
    println!(
        "joined {room} as {}; type to chat, end input to leave",
        session.id()
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut open = Vec::new();
    loop {
        tokio::select! {
            event = session.next_event() => match event {
                Some(event) => on_event(event, &mut open).await?,
                None => break,
            },
            line = lines.next_line() => match line? {
                Some(line) => {
                    open.retain(|c| !c.is_closed());
                    for channel in &open {
                        // A peer that just left fails here; the others still get it.
                        let _ = channel.send_text(line.clone()).await;
                    }
                }
                None => break,
            },
        }
    }
    session.leave().await;
    Ok(())
}

async fn by_itself() -> Result<(), Box<dyn std::error::Error>> {
    let url = common::embedded_server().await?;
    let mut alice = Session::join(&url, "lobby", SessionConfig::loopback()).await?;
    let mut bob = Session::join(&url, "lobby", SessionConfig::loopback()).await?;
    let (mut alice_open, mut bob_open) = (Vec::new(), Vec::new());
    let mut heard = 0;
    while heard < 2 {
        let (at_alice, event) = tokio::select! {
            e = alice.next_event() => (true, e.ok_or("alice's session ended")?),
            e = bob.next_event() => (false, e.ok_or("bob's session ended")?),
        };
        let (name, open) = if at_alice {
            ("alice", &mut alice_open)
        } else {
            ("bob", &mut bob_open)
        };
        if let SessionEvent::Peer {
            event: PeerEvent::Message { .. },
            ..
        } = &event
        {
            heard += 1;
            print!("{name} hears ");
        }
        let opened = open.len();
        on_event(event, open).await?;
        if open.len() > opened {
            open[opened].send_text(format!("hello from {name}")).await?;
        }
    }
    alice.leave().await;
    bob.leave().await;
    Ok(())
}
