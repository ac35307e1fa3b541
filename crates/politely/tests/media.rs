//! Media between native peers through a real server: tracks added and removed renegotiate and
//! are reported on the far side, and samples written on a track arrive there intact.

mod util;

use politely::{MediaKind, MediaPacket, PeerEvent, SessionEvent, TransceiverId};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use util::{TestServer, until};

const AUDIO_FRAME: usize = 160;
/// Large enough that a frame needs three packets.
const VIDEO_FRAME: usize = 3000;

fn audio_frame(n: u8) -> Vec<u8> {
    vec![n; AUDIO_FRAME]
}

fn video_frame(n: u8) -> Vec<u8> {
    (0..VIDEO_FRAME).map(|i| n ^ (i as u8)).collect()
}

fn track_added(event: SessionEvent) -> Option<(TransceiverId, MediaKind)> {
    match event {
        SessionEvent::Peer {
            event: PeerEvent::TrackAdded {
                transceiver, kind, ..
            },
            ..
        } => Some((transceiver, kind)),
        _ => None,
    }
}

fn media(event: SessionEvent) -> Option<MediaPacket> {
    match event {
        SessionEvent::Peer {
            event: PeerEvent::Media(packet),
            ..
        } => Some(packet),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_cross_and_tracks_come_and_go() {
    let server = TestServer::start().await;
    let mut alice = server.join("media").await;
    let mut bob = server.join("media").await;
    let joined = |e| match e {
        SessionEvent::PeerJoined(p) => Some(p),
        _ => None,
    };
    let to_bob = until(&mut alice, "bob joined", 5, joined).await;
    let to_alice = until(&mut bob, "alice joined", 5, joined).await;

    let audio = to_bob.add_track(MediaKind::Audio).await.unwrap();
    let video = to_bob.add_track(MediaKind::Video).await.unwrap();
    let mut at_bob = Vec::new();
    while at_bob.len() < 2 {
        at_bob.push(until(&mut bob, "alice's tracks at bob", 10, track_added).await);
    }
    let bob_audio = at_bob.iter().find(|t| t.1 == MediaKind::Audio).unwrap().0;
    let bob_video = at_bob.iter().find(|t| t.1 == MediaKind::Video).unwrap().0;

    // Alice streams 20 ms samples until told to stop; samples written before the transport
    // is up are dropped, as live media is.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (peer, stop) = (to_bob.clone(), stop.clone());
        async move {
            let mut sent = 0u32;
            for n in 0..=u8::MAX {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let tick = Duration::from_millis(20);
                let a = peer
                    .write_sample(audio, audio_frame(n), tick)
                    .await
                    .unwrap();
                let v = peer
                    .write_sample(video, video_frame(n), tick)
                    .await
                    .unwrap();
                sent += u32::from(a) + u32::from(v);
                tokio::time::sleep(tick).await;
            }
            sent
        }
    });

    // Bob gets whole audio frames, and video frames in fragments that reassemble.
    let (mut audio_packets, mut video_frames) = (Vec::new(), 0);
    let mut fragments: Vec<u8> = Vec::new();
    while audio_packets.len() < 10 || video_frames < 10 {
        let packet = until(&mut bob, "media at bob", 10, media).await;
        if packet.transceiver == bob_audio {
            let n = packet.payload[0];
            assert_eq!(packet.payload, audio_frame(n));
            audio_packets.push(packet);
        } else {
            assert_eq!(packet.transceiver, bob_video);
            // The one-byte VP8 payload descriptor; S is set on a frame's first fragment.
            if packet.payload[0] & 0x10 != 0 {
                fragments.clear();
            }
            fragments.extend_from_slice(&packet.payload[1..]);
            if packet.marker {
                let n = fragments[0];
                assert_eq!(fragments, video_frame(n));
                video_frames += 1;
            }
        }
    }
    // Timestamps advance 20 ms at 48 kHz per frame, sequence numbers one per packet.
    for pair in audio_packets.windows(2) {
        let frames = u32::from(pair[1].payload[0].wrapping_sub(pair[0].payload[0]));
        let seq = pair[1]
            .sequence_number
            .wrapping_sub(pair[0].sequence_number);
        assert_eq!(u32::from(seq), frames);
        assert_eq!(
            pair[1].timestamp.wrapping_sub(pair[0].timestamp),
            960 * frames
        );
    }
    stop.store(true, Ordering::Relaxed);
    assert!(writer.await.unwrap() >= 20);

    // Alice stops sending audio: bob's audio track goes; a track bob adds reaches alice.
    to_bob.remove_track(audio).await.unwrap();
    let removed = until(&mut bob, "the audio track removed", 10, |e| match e {
        SessionEvent::Peer {
            event: PeerEvent::TrackRemoved { transceiver },
            ..
        } => Some(transceiver),
        _ => None,
    })
    .await;
    assert_eq!(removed, bob_audio);
    to_alice.add_track(MediaKind::Video).await.unwrap();
    let (_, kind) = until(&mut alice, "bob's track at alice", 10, track_added).await;
    assert_eq!(kind, MediaKind::Video);

    alice.leave().await;
    bob.leave().await;
    server.stop().await;
}
