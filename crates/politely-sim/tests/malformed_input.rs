//! Nothing a peer sends panics the engine (str0m's `malformed-packet-injection.rs` idea): every
//! prefix of a real offer, garbage candidates, and datagrams of every length. A refused
//! description leaves the engine as it was, and a connected pair still works afterwards.

use politely_core::rng::Rng;
use politely_core::{
    Candidate, Config, Direction, Engine, MediaKind, Output, Payload, Role, SdpKind, Signal,
    SignalingState,
};
use politely_sim::{Action, Scenario, Sim, SimConfig};
use std::time::Instant;

fn engine(role: Role, now: Instant) -> Engine {
    Engine::new(Config::new(role, vec!["127.0.0.1:9".parse().unwrap()]), now).unwrap()
}

fn first_offer(engine: &mut Engine) -> Signal {
    std::iter::from_fn(|| engine.poll_output())
        .find_map(|out| match out {
            Output::Signal(s) => Some(s),
            _ => None,
        })
        .expect("an offer")
}

#[test]
fn every_prefix_of_an_offer() {
    let now = Instant::now();
    let mut donor = engine(Role::Impolite, now);
    donor
        .add_transceiver(MediaKind::Audio, Direction::SendRecv)
        .unwrap();
    donor.create_data_channel("x", Default::default()).unwrap();
    let offer = first_offer(&mut donor);
    let Payload::Description { description, .. } = &offer.payload else {
        panic!("not a description");
    };
    let sdp = description.sdp.clone();
    let mut target = engine(Role::Polite, now);
    let mut offer_id = 0;
    for end in (0..sdp.len()).step_by(7) {
        let mut prefix = sdp[..end].to_owned();
        while !sdp.is_char_boundary(prefix.len()) {
            prefix.pop();
        }
        offer_id += 1;
        let signal = Signal {
            connection_id: offer.connection_id.clone(),
            payload: Payload::Description {
                description: politely_core::Description {
                    kind: SdpKind::Offer,
                    sdp: prefix,
                },
                offer_id: Some(offer_id),
            },
        };
        let result = target.handle_signal(now, signal);
        while target.poll_output().is_some() {}
        if result.is_err() {
            assert_eq!(
                target.signaling_state(),
                SignalingState::Stable,
                "prefix {end}"
            );
            assert!(!target.has_pending_description(), "prefix {end}");
        }
    }
}

#[test]
fn garbage_candidates_and_signals() {
    let now = Instant::now();
    let mut donor = engine(Role::Impolite, now);
    donor.create_data_channel("x", Default::default()).unwrap();
    let offer = first_offer(&mut donor);
    let mut target = engine(Role::Polite, now);
    target.handle_signal(now, offer.clone()).unwrap();
    while target.poll_output().is_some() {}
    let mut rng = Rng::new(9);
    for i in 0..500 {
        let len = rng.below(120) as usize;
        let text: String = (0..len)
            .map(|_| char::from(b' ' + rng.below(95) as u8))
            .collect();
        let candidate = Candidate {
            candidate: if i % 2 == 0 {
                format!("candidate:{text}")
            } else {
                text
            },
            sdp_mid: [None, Some("0".to_owned()), Some("zz".to_owned())][i % 3].clone(),
            sdp_m_line_index: Some(rng.below(3) as u16),
            username_fragment: [None, Some("nope".to_owned())][i % 2].clone(),
        };
        let signal = Signal {
            connection_id: offer.connection_id.clone(),
            payload: Payload::Candidate(Some(candidate)),
        };
        let _ = target.handle_signal(now, signal);
        while target.poll_output().is_some() {}
    }
    assert_eq!(target.signaling_state(), SignalingState::Stable);
}

#[test]
fn datagrams_of_every_length_then_the_pair_still_works() {
    let scenario = Scenario::default().at(0, 0, 1, Action::CreateChannel("first".into()));
    let mut sim = Sim::with_scenario(SimConfig::default(), &scenario);
    assert!(sim.run().passed());
    let mut rng = Rng::new(4);
    let from = "127.0.0.1:20100".parse().unwrap(); // the remote's label, so rtc routes it
    let to = "127.0.0.1:20001".parse().unwrap();
    for len in 0..=1500usize {
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if let Some(first) = bytes.first_mut() {
            // Cover every demultiplexing range: STUN 0-3, DTLS 20-63, RTP/RTCP 128-191.
            *first = [0u8, 1, 20, 22, 23, 128, 200, 255][len % 8];
        }
        let now = sim.now();
        let e = sim.engine(0, 1);
        e.handle_datagram(now, from, to, &bytes);
        while e.poll_output().is_some() {}
    }
    sim.act(0, 1, Action::CreateChannel("after".into()));
    sim.act(
        1,
        0,
        Action::AddTransceiver(MediaKind::Video, Direction::SendOnly),
    );
    let verdict = sim.run();
    assert!(verdict.passed(), "{:?}", verdict.failures);
}
