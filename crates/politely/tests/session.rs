//! Native peers through a real politely server on loopback.

mod util;

use politely::{DataChannel, PeerEvent, SessionEvent};
use util::{TestServer, until};

fn opened(label: &str) -> impl FnMut(SessionEvent) -> Option<DataChannel> + '_ {
    move |event| match event {
        SessionEvent::Peer {
            event: PeerEvent::ChannelOpen(channel),
            ..
        } if channel.label() == label => Some(channel),
        _ => None,
    }
}

fn message(event: SessionEvent) -> Option<(String, String)> {
    match event {
        SessionEvent::Peer {
            peer,
            event: PeerEvent::Message { message, .. },
        } => Some((peer, message.as_text().unwrap().to_owned())),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_connect_and_chat_both_ways() {
    let server = TestServer::start().await;
    let mut alice = server.join("chat").await;
    let mut bob = server.join("chat").await;
    let to_bob = until(&mut alice, "bob joined", 5, |e| match e {
        SessionEvent::PeerJoined(p) => Some(p),
        _ => None,
    })
    .await;
    assert_eq!(to_bob.id(), bob.id());
    let channel = to_bob
        .create_data_channel("chat", Default::default())
        .await
        .unwrap();
    channel.opened().await.unwrap();
    channel.send_text("hello bob").await.unwrap();
    let bobs = until(&mut bob, "chat open at bob", 5, opened("chat")).await;
    let (from, text) = until(&mut bob, "alice's message", 5, message).await;
    assert_eq!(
        (from.as_str(), text.as_str()),
        (alice.id().as_str(), "hello bob")
    );
    bobs.send_text("hello alice").await.unwrap();
    let (from, text) = until(&mut alice, "bob's message", 5, message).await;
    assert_eq!(
        (from.as_str(), text.as_str()),
        (bob.id().as_str(), "hello alice")
    );
    alice.leave().await;
    until(&mut bob, "alice left", 5, |e| match e {
        SessionEvent::PeerLeft { peer } => Some(peer),
        _ => None,
    })
    .await;
    bob.leave().await;
    server.stop().await;
}
