//! An audio call: each side sends an Opus stream, each hears the other's, and one of them
//! mutes and unmutes mid-call (a renegotiation while media flows).
//!
//! ```sh
//! cargo run --release -p politely --example call
//! ```
//!
//! A server and two peers run in this process, on loopback, for about three seconds. The
//! audio is generated: 20 ms Opus frames of silence (RFC 6716 §3.1, config 31), 50 a second,
//! written with `write_sample`; encoding real sound, and decoding what arrives, is the
//! application's (with any Opus codec crate). Each side counts the RTP packets it receives
//! and prints what it heard.

mod common;

use politely::{
    Direction, MediaKind, PeerEvent, PeerHandle, Session, SessionConfig, SessionEvent,
    TransceiverId,
};
use std::time::Duration;

/// An Opus frame of 20 ms of silence.
const SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];
const FRAME: Duration = Duration::from_millis(20);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = common::embedded_server().await?;
    let alice = Session::join(&url, "call", SessionConfig::loopback()).await?;
    let bob = Session::join(&url, "call", SessionConfig::loopback()).await?;
    let (a, b) = tokio::join!(talk("alice", alice, true), talk("bob", bob, false));
    println!("{}\n{}", a?, b?);
    Ok(())
}

/// One side of the call: adds its microphone track when the other is announced, writes a
/// frame every 20 ms, and counts what it receives. `mutes`: halfway through, stop sending
/// (direction `recvonly`) for half a second, then send again.
async fn talk(name: &str, mut session: Session, mutes: bool) -> Result<String, politely::Error> {
    let (peer, track) = loop {
        match session.next_event().await {
            Some(SessionEvent::PeerJoined(peer)) => {
                let track = peer.add_track(MediaKind::Audio).await?;
                break (peer, track);
            }
            Some(_) => {}
            None => return Err(politely::Error::Closed),
        }
    };
    let writer = tokio::spawn(microphone(peer.clone(), track));
    let mut frames = tokio::time::interval(FRAME);
    let (mut received, mut tracks_added, mut tracks_removed) = (0u64, 0, 0);
    for tick in 0..150u32 {
        if mutes && tick == 60 {
            peer.set_direction(track, Direction::RecvOnly).await?;
        }
        if mutes && tick == 85 {
            peer.set_direction(track, Direction::SendRecv).await?;
        }
        let deadline = frames.tick();
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                event = session.next_event() => match event {
                    Some(SessionEvent::Peer { event, .. }) => match event {
                        PeerEvent::TrackAdded { kind: MediaKind::Audio, .. } => tracks_added += 1,
                        PeerEvent::TrackRemoved { .. } => tracks_removed += 1,
                        PeerEvent::Media(_) => received += 1,
                        _ => {}
                    },
                    Some(_) => {}
                    None => return Err(politely::Error::Closed),
                },
            }
        }
    }
    writer.abort();
    session.leave().await;
    Ok(format!(
        "{name}: {received} audio packets received in 3 s (50 a second while the other sends); \
         the other's track added {tracks_added}×, removed {tracks_removed}×"
    ))
}

/// Writes a frame every 20 ms; a frame written while the track cannot send (negotiating, or
/// muted) is dropped, as live audio is.
async fn microphone(peer: PeerHandle, track: TransceiverId) {
    let mut frames = tokio::time::interval(FRAME);
    loop {
        frames.tick().await;
        if peer
            .write_sample(track, SILENCE.to_vec(), FRAME)
            .await
            .is_err()
        {
            return;
        }
    }
}
