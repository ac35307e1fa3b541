//! Nothing a peer sends panics the engine (str0m's `malformed-packet-injection.rs` idea): every
//! prefix of a real offer, garbage candidates and signals, and datagrams of every length. A
//! refused description leaves the engine as it was, and a connected pair still works
//! afterwards.

use politely_core::rng::Rng;
use politely_core::{
    Candidate, Config, Direction, Engine, MediaKind, Output, Payload, PeerError, Role, SdpKind,
    Signal, SignalingState,
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

/// What an application sees of an engine, to tell whether a refused message changed it.
fn snapshot(engine: &mut Engine) -> (SignalingState, Vec<String>, usize, usize) {
    (
        engine.signaling_state(),
        engine.negotiated_mids(),
        engine.transceivers().len(),
        engine.channels().len(),
    )
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
    let (mut refused, mut accepted) = (0, 0);
    for (offer_id, end) in (0..=sdp.len())
        .filter(|&end| sdp.is_char_boundary(end))
        .enumerate()
    {
        let signal = Signal {
            connection_id: offer.connection_id.clone(),
            payload: Payload::Description {
                description: politely_core::Description {
                    kind: SdpKind::Offer,
                    sdp: sdp[..end].to_owned(),
                },
                offer_id: Some(offer_id as u64 + 1),
                lease: None,
            },
        };
        let before = snapshot(&mut target);
        let result = target.handle_signal(now, signal);
        while target.poll_output().is_some() {}
        // Whatever the outcome, an offer is answered or refused within the step.
        assert_eq!(
            target.signaling_state(),
            SignalingState::Stable,
            "prefix {end}"
        );
        assert!(!target.has_pending_description(), "prefix {end}");
        match result {
            // A refused offer leaves the engine as it was.
            Err(PeerError::InvalidDescription(_)) => {
                refused += 1;
                assert_eq!(snapshot(&mut target), before, "prefix {end}");
            }
            Err(e) => panic!("prefix {end}: not a description error: {e}"),
            Ok(()) => accepted += 1,
        }
    }
    // The whole offer was the last prefix: it was accepted and negotiated both sections.
    assert!(
        refused > 0 && accepted > 0,
        "{refused} refused, {accepted} accepted"
    );
    assert_eq!(
        target.negotiated_mids().len(),
        2,
        "{:?}",
        target.negotiated_mids()
    );
}

/// Garbage candidates are refused (none is taken for a real one), garbage signals are
/// refused or ignored, none panics, and the pair still connects and works afterwards.
#[test]
fn garbage_candidates_and_signals() {
    let scenario = Scenario::default().at(0, 0, 1, Action::CreateChannel("first".into()));
    let mut sim = Sim::with_scenario(SimConfig::default(), &scenario);
    assert!(sim.run().passed());
    let id = sim.engine(0, 1).connection_id().clone();
    let mut rng = Rng::new(9);
    let mut refused = 0;
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
            connection_id: id.clone(),
            payload: Payload::Candidate(Some(candidate)),
        };
        let now = sim.now();
        match sim.engine(0, 1).handle_signal(now, signal) {
            Err(PeerError::InvalidCandidate(_)) => refused += 1,
            Err(e) => panic!("candidate {i}: not a candidate error: {e}"),
            Ok(()) => {}
        }
        sim.flush(0, 1);
    }
    // Every other one names an unknown ufrag, a third an unknown mid: those at least.
    assert!(
        refused >= 250,
        "only {refused} of 500 garbage candidates refused"
    );
    // Signals: a real one with bytes flipped; whatever still parses goes to the engine.
    let real = sim.engine(0, 1).connection_id().clone();
    let text = Signal {
        connection_id: real,
        payload: Payload::Candidate(None),
    }
    .to_json()
    .to_string();
    let mut parsed = 0;
    for _ in 0..500 {
        let mut bytes = text.clone().into_bytes();
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len() as u64) as usize;
            bytes[at] = b' ' + rng.below(95) as u8;
        }
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let Ok(signal) = Signal::from_json(&value) else {
            continue;
        };
        parsed += 1;
        let now = sim.now();
        let _ = sim.engine(0, 1).handle_signal(now, signal);
        sim.flush(0, 1);
    }
    assert!(parsed > 0, "no mutated signal parsed: the engine saw none");
    sim.act(0, 1, Action::CreateChannel("after".into()));
    sim.act(
        1,
        0,
        Action::AddTransceiver(MediaKind::Audio, Direction::SendRecv),
    );
    let verdict = sim.run();
    assert!(verdict.passed(), "{:?}", verdict.failures);
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
