//! A browser and a native peer in one room: the server here also serves the demo page and
//! `politely.js`; open the printed address in a browser (or two) and chat with this program,
//! which answers every message and shows what the page does (glare, ICE restarts, calls).
//!
//! ```sh
//! cargo run -p politely --example browser            # then open http://127.0.0.1:8080/?room=lobby
//! ```
//!
//! It listens on 127.0.0.1:8080 (or the address given as the first argument) and runs until
//! Ctrl-C.

use politely::{ChannelOptions, PeerEvent, Session, SessionConfig, SessionEvent};
use std::collections::HashMap;
use std::net::SocketAddr;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen: SocketAddr = match std::env::args().nth(1) {
        Some(addr) => addr.parse()?,
        None => SocketAddr::from(([127, 0, 0, 1], 8080)),
    };
    let config = politely_server::Config {
        listen,
        ..Default::default()
    };
    let server = politely_server::Server::bind(config).await?;
    let addr = server.local_addr();
    tokio::spawn(server.serve(async {
        let _ = tokio::signal::ctrl_c().await;
    }));
    println!("open http://{addr}/?room=lobby in a browser; Ctrl-C ends");

    let mut session =
        Session::join(&format!("ws://{addr}"), "lobby", SessionConfig::loopback()).await?;
    // Our `chat` channel toward each peer, to answer on.
    let mut chats = HashMap::new();
    loop {
        let event = tokio::select! {
            event = session.next_event() => match event {
                Some(event) => event,
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        };
        match event {
            SessionEvent::PeerJoined(peer) => {
                println!("{} joined", peer.id());
                // The demo page opens a `chat` channel of its own toward every peer and reads
                // on every channel; so does this program (no negotiated id: the page's
                // channel is one, ours another).
                let chat = peer
                    .create_data_channel("chat", ChannelOptions::default())
                    .await?;
                chats.insert(peer.id().to_owned(), chat);
            }
            SessionEvent::Peer { peer, event } => match event {
                PeerEvent::Message { message, .. } => {
                    let text = message.as_text().unwrap_or("<binary>").to_owned();
                    println!("{peer}: {text}");
                    if let Some(chat) = chats.get(&peer) {
                        // Sent once our channel is open; a peer gone meanwhile is no error.
                        let _ = chat.send_text(format!("native peer heard: {text}")).await;
                    }
                }
                PeerEvent::Negotiated { counters, .. } => println!(
                    "{peer}: negotiated ({} offers, {} rollbacks, {} ignored offers so far)",
                    counters.offers, counters.rollbacks, counters.ignored_offers
                ),
                PeerEvent::TrackAdded { kind, .. } => println!("{peer}: sends {kind:?}"),
                PeerEvent::Watchdog { cause, recovery } => {
                    println!("{peer}: watchdog: {cause:?}, {recovery:?}")
                }
                _ => {}
            },
            SessionEvent::PeerLeft { peer } => {
                chats.remove(&peer);
                println!("{peer} left");
            }
            _ => {}
        }
    }
    session.leave().await;
    Ok(())
}
