//! Hand-written scenarios from the catalog in NEGOTIATION.md (section b), each named after the
//! case it reproduces, with its source.

use politely_core::{
    ChannelId, ConnectionState, Diagnostic, Direction, Event, HeaderExtension, MediaKind,
    MediaPacket, Origin, Payload, Recovery, ReplaceReason, SdpKind, Signal, TrackLabel,
    WatchdogCause,
};
use politely_sim::{Action, Fate, Roles, Scenario, Sim, SimConfig, Verdict};
use std::time::Duration;

fn video(direction: Direction) -> Action {
    Action::AddTransceiver(MediaKind::Video, direction)
}

fn audio(direction: Direction) -> Action {
    Action::AddTransceiver(MediaKind::Audio, direction)
}

fn passed(verdict: &Verdict) {
    assert!(verdict.passed(), "{:#?}", verdict.failures);
}

fn is_offer(signal: &Signal) -> bool {
    matches!(&signal.payload, Payload::Description { description, .. } if description.kind == SdpKind::Offer)
}

fn is_answer(signal: &Signal) -> bool {
    matches!(&signal.payload, Payload::Description { description, .. } if description.kind == SdpKind::Answer)
}

/// Peer 0 is polite (lower id), peer 1 impolite.
fn connected_pair(config: SimConfig) -> Sim {
    let scenario = Scenario::default().at(0, 0, 1, Action::CreateChannel("setup".into()));
    let mut sim = Sim::with_scenario(config, &scenario);
    passed(&sim.run());
    sim
}

/// Catalog #22 (webrtc-pc #2566, PR #2572; matrix-js-sdk "not reject remote offer if not
/// polite and do have pending answer"): the impolite side receives the answer to its offer and,
/// in the same instant, a new offer the polite side made right after answering. The offer must
/// not be ignored: readyForOffer holds once the answer is being applied.
#[test]
fn offer_arriving_with_the_answer_is_not_ignored() {
    let mut sim = connected_pair(SimConfig::default());
    // The impolite side offers; the polite side answers and at once offers its own change.
    sim.act(1, 0, video(Direction::SendOnly));
    sim.run_for(Duration::from_millis(5)); // the offer reaches p0 now
    sim.act(0, 1, audio(Direction::SendOnly));
    let verdict = sim.run();
    passed(&verdict);
    assert!(!sim.saw(1, 0, |e| *e == Event::Diagnostic(Diagnostic::IgnoredOffer)));
    assert_eq!(sim.engine(1, 0).counters().ignored_offers, 0);
    assert_eq!(sim.engine(0, 1).counters().rollbacks, 0);
}

/// Catalog #29 (webrtc-pc #2519; simple-peer PR #31/#564; ion-sfu PR #204): the transport
/// reorders, so the polite side's candidates overtake its offer. They are buffered and applied
/// once the offer is set; none is lost and the connection comes up.
#[test]
fn candidates_before_their_description_are_buffered() {
    let config = SimConfig {
        trickle: true,
        ..SimConfig::default()
    };
    let scenario = Scenario::default().at(0, 0, 1, Action::CreateChannel("chat".into()));
    let mut sim = Sim::with_scenario(config, &scenario);
    sim.intercept(|from, _, signal| {
        if from == 0 && is_offer(signal) {
            Fate::Delay(Duration::from_millis(30))
        } else {
            Fate::Deliver
        }
    });
    passed(&sim.run());
    assert!(sim.saw(1, 0, |e| *e
        == Event::Diagnostic(Diagnostic::BufferedCandidate)));
}

/// Catalog #25 (simple-peer #898/#943; sepfy/libpeer#2): the channel delivers an answer twice.
/// The copy is ignored, never "Called in wrong state: stable".
#[test]
fn duplicated_answer_is_ignored() {
    let config = SimConfig::default();
    let scenario = Scenario::default().at(0, 0, 1, Action::CreateChannel("chat".into()));
    let mut sim = Sim::with_scenario(config, &scenario);
    sim.intercept(|_, _, signal| {
        if is_answer(signal) {
            Fate::Duplicate
        } else {
            Fate::Deliver
        }
    });
    passed(&sim.run());
    assert!(sim.saw(0, 1, |e| *e
        == Event::Diagnostic(Diagnostic::AnswerWithoutOffer)));
    assert_eq!(sim.engine(0, 1).counters().stale_descriptions, 1);
}

/// Catalog #26 (livekit client PCTransport "ignoring answer for old offer", PR #1547): the
/// answer to the offer is so late that the watchdog sends the offer again; the remote, which
/// had applied it, answers it again, and the late first answer is then dropped. The oracle of
/// intent holds: an earlier recovery rolled the offer back and made a new one, and the pair
/// ended with a video m-section at both ends that neither application made.
#[test]
fn stale_answer_to_an_older_offer_is_ignored() {
    let config = SimConfig {
        watchdog_timeout: Duration::from_secs(1),
        ..SimConfig::default()
    };
    let mut sim = connected_pair(config);
    let mut delayed = false;
    sim.intercept(move |from, _, signal| {
        if from == 1 && is_answer(signal) && !delayed {
            delayed = true;
            Fate::Delay(Duration::from_secs(3))
        } else {
            Fate::Deliver
        }
    });
    sim.act(0, 1, video(Direction::SendOnly));
    passed(&sim.run());
    assert!(sim.saw(0, 1, |e| matches!(
        e,
        Event::Watchdog {
            cause: WatchdogCause::AnswerTimeout,
            recovery: Recovery::ResendOffer
        }
    )));
    assert!(sim.saw(1, 0, |e| matches!(
        e,
        Event::Diagnostic(Diagnostic::DuplicateOffer)
    )));
    assert!(sim.saw(0, 1, |e| matches!(
        e,
        Event::Diagnostic(Diagnostic::AnswerWithoutOffer)
    )));
}

/// The ICE roles after an exchange: `controlling` nominates, the other side is controlled.
fn assert_ice_roles(sim: &mut Sim, controlling: usize) {
    let other = 1 - controlling;
    assert_eq!(
        sim.engine(controlling, other).ice_controlling(),
        Some(true),
        "peer {controlling} should control ICE"
    );
    assert_eq!(
        sim.engine(other, controlling).ice_controlling(),
        Some(false),
        "peer {other} should be controlled"
    );
}

/// An ICE restart decides the ICE roles afresh, as Chromium does: its offerer controls, even
/// when it answered the first exchange. rtc kept the first exchange's roles, so after a restart
/// offered by a native peer that had answered a Chromium peer, both ends were controlled; the
/// role conflict cost seconds of checks with stale credentials (differential seeds 1266 and
/// 1451).
#[test]
fn an_ice_restart_gives_its_offerer_the_controlling_role() {
    let mut sim = connected_pair(SimConfig::default());
    assert_ice_roles(&mut sim, 0); // p0 made the first offer
    sim.act(1, 0, Action::RestartIce);
    passed(&sim.run());
    assert_ice_roles(&mut sim, 1);
    sim.act(0, 1, Action::RestartIce);
    passed(&sim.run());
    assert_ice_roles(&mut sim, 0);
}

/// Catalog #31 and WPT restartIce (l) (twilio-video.js `_handleGlare`: "we'll need to restart
/// ICE again after rolling back"): the polite side restarts ICE and its restart offer collides
/// with the impolite side's offer. It rolls back, answers, and restarts again: its ufrag ends
/// up new, and the connection comes back.
#[test]
fn glare_during_an_ice_restart_by_the_polite_side() {
    let mut sim = connected_pair(SimConfig::default());
    let before = sim.engine(0, 1).local_ufrag();
    sim.act(0, 1, Action::RestartIce);
    sim.act(1, 0, video(Direction::SendOnly));
    passed(&sim.run());
    assert_eq!(sim.engine(0, 1).counters().rollbacks, 1);
    assert_ne!(
        sim.engine(0, 1).local_ufrag(),
        before,
        "the restart was lost"
    );
    assert_eq!(
        sim.engine(0, 1).connection_state(),
        ConnectionState::Connected
    );
    assert_ice_roles(&mut sim, 0); // its second restart offer was the last
}

/// The same glare with the impolite side restarting: its restart offer wins and is applied.
#[test]
fn glare_during_an_ice_restart_by_the_impolite_side() {
    let mut sim = connected_pair(SimConfig::default());
    let before = sim.engine(1, 0).local_ufrag();
    sim.act(1, 0, Action::RestartIce);
    sim.act(0, 1, video(Direction::SendOnly));
    passed(&sim.run());
    assert_eq!(sim.engine(1, 0).counters().ignored_offers, 1);
    assert_ne!(
        sim.engine(1, 0).local_ufrag(),
        before,
        "the restart was lost"
    );
    assert_ice_roles(&mut sim, 1);
}

/// WPT restartIce (e) and catalog #33: restartIce called in have-local-offer is not lost; the
/// next negotiation restarts.
#[test]
fn restart_ice_in_have_local_offer_restarts_in_the_next_negotiation() {
    let mut sim = connected_pair(SimConfig::default());
    let before = sim.engine(0, 1).local_ufrag();
    sim.act(0, 1, video(Direction::SendOnly)); // now in have-local-offer
    assert_eq!(
        sim.engine(0, 1).signaling_state(),
        politely_core::SignalingState::HaveLocalOffer
    );
    sim.act(0, 1, Action::RestartIce);
    passed(&sim.run());
    assert_ne!(sim.engine(0, 1).local_ufrag(), before);
    // Setup offer, the video offer, and one restart offer.
    assert_eq!(sim.engine(0, 1).counters().offers, 3);
}

/// WPT restartIce (a)/(b): before the first negotiation there is nothing to restart.
#[test]
fn restart_ice_before_the_first_negotiation_does_nothing() {
    let scenario = Scenario::default().at(0, 0, 1, Action::RestartIce);
    let mut sim = Sim::with_scenario(SimConfig::default(), &scenario);
    passed(&sim.run());
    assert_eq!(sim.engine(0, 1).counters().offers, 0);
}

/// WPT restartIce (j): a remote ICE restart satisfies a local one; no extra offer. As in WPT,
/// restartIce() is called first and the remote's restart offer is applied before the local
/// side gets to offer (here: before its outputs are drained).
#[test]
fn remote_restart_satisfies_local_restart() {
    let mut sim = connected_pair(SimConfig::default());
    let offers = sim.engine(0, 1).counters().offers;
    sim.act(1, 0, Action::RestartIce);
    sim.run_for(Duration::from_micros(4_990)); // p1's restart offer lands at 5 ms
    sim.engine(0, 1).restart_ice().unwrap(); // not drained: no offer yet
    passed(&sim.run());
    assert_eq!(
        sim.engine(0, 1).counters().offers,
        offers,
        "a redundant restart offer"
    );
    assert_eq!(sim.engine(0, 1).counters().ice_restarts, 1);
}

/// Catalog #34 (webrtc-rs/rtc#199, PR #209; RFC 8832 §6): both sides create data channels
/// before the first negotiation, with glare. No stream id collides: the DTLS client uses even
/// ids, the server odd ones, assigned once the role is known.
#[test]
fn data_channels_on_both_sides_before_the_first_negotiation() {
    let scenario = Scenario::default()
        .at(0, 0, 1, Action::CreateChannel("p0-a".into()))
        .at(0, 0, 1, Action::CreateChannel("p0-b".into()))
        .at(0, 1, 0, Action::CreateChannel("p1-a".into()))
        .at(0, 1, 0, Action::CreateChannel("p1-b".into()));
    let mut sim = Sim::with_scenario(SimConfig::default(), &scenario);
    passed(&sim.run());
    let parity = |sim: &mut Sim, a: usize, b: usize| {
        let ids: Vec<u16> = sim
            .engine(a, b)
            .channels()
            .into_iter()
            .filter(|c| c.origin == Origin::Local)
            .map(|c| c.stream_id.expect("an open channel has a stream id"))
            .collect();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0] % 2, ids[1] % 2, "one side mixes parities: {ids:?}");
        ids[0] % 2
    };
    let (p0, p1) = (parity(&mut sim, 0, 1), parity(&mut sim, 1, 0));
    assert_ne!(p0, p1, "both sides picked the same parity");
    assert_eq!(sim.engine(0, 1).channels().len(), 4);
}

/// Catalog #35 (twilio-video.js defers glare handling until the first negotiation for this):
/// whichever side offers later, an answer keeps the DTLS role established by the first
/// exchange. rtc alone would answer `active` every time and flip the roles.
#[test]
fn dtls_role_is_kept_when_the_offerer_changes_sides() {
    let scenario = Scenario::default().at(0, 0, 1, Action::CreateChannel("first".into()));
    let mut sim = Sim::with_scenario(SimConfig::default(), &scenario);
    let setups = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let seen = setups.clone();
    sim.intercept(move |from, _, signal| {
        if let Payload::Description { description, .. } = &signal.payload
            && description.kind == SdpKind::Answer
        {
            let setup = description
                .sdp
                .lines()
                .find_map(|l| l.strip_prefix("a=setup:"))
                .unwrap_or("")
                .to_owned();
            seen.borrow_mut().push((from, setup));
        }
        Fate::Deliver
    });
    passed(&sim.run());
    // p0 offered first, p1 answered and took a role; now p1 offers, then p0 again, then p1.
    sim.act(1, 0, video(Direction::SendOnly));
    passed(&sim.run());
    sim.act(0, 1, audio(Direction::SendOnly));
    passed(&sim.run());
    sim.act(1, 0, audio(Direction::SendRecv));
    passed(&sim.run());
    let setups = setups.borrow();
    assert_eq!(setups.len(), 4, "{setups:?}");
    let (first_answerer, first_role) = setups[0].clone();
    assert_eq!(first_answerer, 1);
    let other = if first_role == "active" {
        "passive"
    } else {
        "active"
    };
    for (from, role) in setups.iter() {
        let expected = if *from == first_answerer {
            first_role.as_str()
        } else {
            other
        };
        assert_eq!(role, expected, "answers: {setups:?}");
    }
}

/// Catalog #27: both peers polite. Each rolls back and answers the other's offer, then gets an
/// answer to an offer it rolled back: the engine detects it, backs off at random, converges.
#[test]
fn both_polite_is_detected_and_recovers() {
    let config = SimConfig {
        roles: Roles::BothPolite,
        watchdog_timeout: Duration::from_secs(1),
        ..SimConfig::default()
    };
    let scenario = Scenario::default().both(0, 0, 1, video(Direction::SendOnly));
    let mut sim = Sim::with_scenario(config, &scenario);
    passed(&sim.run());
    let detected = |sim: &Sim, a, b| {
        sim.saw(a, b, |e| {
            matches!(
                e,
                Event::Watchdog {
                    cause: WatchdogCause::BothPolite,
                    ..
                }
            )
        })
    };
    assert!(detected(&sim, 0, 1) || detected(&sim, 1, 0));
}

/// Catalog #28 (LiveKit `negotiationFailedTimeout`): both peers impolite. Both ignore, both
/// wait in have-local-offer; the watchdog names the cause and yields once.
#[test]
fn both_impolite_is_detected_and_recovers() {
    let config = SimConfig {
        roles: Roles::BothImpolite,
        watchdog_timeout: Duration::from_secs(1),
        ..SimConfig::default()
    };
    let scenario = Scenario::default().both(0, 0, 1, video(Direction::SendOnly));
    let mut sim = Sim::with_scenario(config, &scenario);
    passed(&sim.run());
    let yielded = |sim: &Sim, a, b| {
        sim.saw(a, b, |e| {
            *e == Event::Watchdog {
                cause: WatchdogCause::BothImpolite,
                recovery: Recovery::YieldedToIgnoredOffer,
            }
        })
    };
    assert!(yielded(&sim, 0, 1) || yielded(&sim, 1, 0));
}

/// Catalog #38 (OWT "WebRTC collision should be resolved"): no connection exists; both sides
/// create one with their own id and offer at once. Exactly one survives: the polite side adopts
/// the impolite side's id. A late message carrying the dropped id changes nothing.
#[test]
fn two_new_connections_colliding() {
    let config = SimConfig {
        shared_connection_ids: false,
        ..SimConfig::default()
    };
    let scenario = Scenario::default().both(0, 0, 1, video(Direction::SendOnly));
    let mut sim = Sim::with_scenario(config, &scenario);
    let polite_first_id = sim.engine(0, 1).connection_id().clone();
    passed(&sim.run());
    assert!(sim.saw(0, 1, |e| matches!(
        e,
        Event::ConnectionReplaced {
            reason: ReplaceReason::Collision,
            ..
        }
    )));
    let surviving = sim.engine(1, 0).connection_id().clone();
    assert_eq!(sim.engine(0, 1).connection_id(), &surviving);
    assert_ne!(surviving, polite_first_id);

    // A late candidate and a late bye for the dropped connection reach the impolite side.
    for payload in [Payload::Candidate(None), Payload::Bye { reconnect: false }] {
        let late = Signal {
            connection_id: polite_first_id.clone(),
            payload,
        };
        let now = sim.now();
        sim.engine(1, 0)
            .handle_signal(now, late)
            .expect("a late message is not an error");
        while sim.engine(1, 0).poll_output().is_some() {}
        assert_eq!(sim.engine(1, 0).connection_id(), &surviving);
    }
}

/// Catalog #47 and DESIGN "a peer that restarts comes with a new id": after a reload the peer
/// offers on a new connection id; the other side replaces its stale connection, replays its
/// own channels on the new one, and both converge.
#[test]
fn restarted_peer_with_a_new_connection_id() {
    let mut sim = connected_pair(SimConfig::default());
    let old = sim.engine(0, 1).connection_id().clone();
    sim.act(1, 0, Action::Restart);
    passed(&sim.run());
    assert!(sim.saw(0, 1, |e| matches!(
        e,
        Event::ConnectionReplaced {
            reason: ReplaceReason::RemoteRestarted,
            ..
        }
    )));
    assert_ne!(sim.engine(0, 1).connection_id(), &old);
    // p0's own "setup" channel was replayed onto the new connection and echoed again.
    let labels: Vec<String> = sim
        .engine(0, 1)
        .channels()
        .into_iter()
        .map(|c| c.label)
        .collect();
    assert!(labels.contains(&"setup".to_owned()), "{labels:?}");
}

/// rtc `tests/perfect_negotiation_rollback.rs` (RFC 9429 §5.7): the polite side's addTrack
/// transceiver survives the rollback of its offer and is negotiated in its next offer.
#[test]
fn rollback_keeps_an_add_track_transceiver() {
    let scenario = Scenario::default()
        .at(0, 0, 1, Action::AddTrack(MediaKind::Video))
        .at(0, 1, 0, Action::AddTrack(MediaKind::Audio));
    let mut sim = Sim::with_scenario(SimConfig::default(), &scenario);
    passed(&sim.run());
    assert_eq!(sim.engine(0, 1).counters().rollbacks, 1);
    let ts = sim.engine(0, 1).transceivers();
    assert!(
        ts.iter()
            .any(|t| t.origin == Origin::Local && t.kind == MediaKind::Video && t.mid.is_some()),
        "{ts:#?}"
    );
}

/// A track each side adds is reported to the other as a W3C `track` event, once, with the
/// kind of the track; removing it is reported too. Both sides add at once, so the events
/// must survive the rollback of one of the offers.
#[test]
fn tracks_are_reported_to_the_other_side() {
    let scenario = Scenario::default()
        .at(0, 0, 1, Action::AddTrack(MediaKind::Audio))
        .at(0, 1, 0, Action::AddTrack(MediaKind::Video));
    let mut sim = Sim::with_scenario(SimConfig::default(), &scenario);
    passed(&sim.run());
    for (peer, remote, sent, received) in [
        (0, 1, MediaKind::Audio, MediaKind::Video),
        (1, 0, MediaKind::Video, MediaKind::Audio),
    ] {
        let own = sim.engine(peer, remote).transceivers();
        assert!(
            own.iter()
                .any(|t| t.origin == Origin::Local && t.kind == sent && t.has_track),
            "{own:#?}"
        );
        let added = sim
            .events(peer, remote)
            .iter()
            .filter(|(_, e)| matches!(e, Event::TrackAdded { kind, .. } if *kind == received))
            .count();
        assert_eq!(added, 1, "p{peer} hears of the p{remote}'s track once");
    }
    // p0 sends one track only: its audio.
    sim.act(0, 1, Action::RemoveTrack(0));
    passed(&sim.run());
    assert!(sim.saw(1, 0, |e| matches!(e, Event::TrackRemoved { .. })));
}

/// RFC 9429 §5.7: a rollback of a remote offer removes the transceivers it created. rtc's
/// setRemoteDescription can fail after applying part of an offer (here: one without ICE
/// credentials); the engine rolls the remote offer back, the transceivers it created go, and
/// the engine negotiates normally afterwards.
#[test]
fn rollback_removes_remote_created_transceivers() {
    use politely_core::{Config, Engine, Output, PeerError, Role, SignalingState};
    let now = std::time::Instant::now();
    let engine = |role| Engine::new(Config::new(role, vec!["127.0.0.1:9".parse().unwrap()]), now);
    let mut donor = engine(Role::Impolite).unwrap();
    donor
        .add_transceiver(MediaKind::Audio, Direction::SendOnly)
        .unwrap();
    donor
        .add_transceiver(MediaKind::Video, Direction::SendOnly)
        .unwrap();
    let good = std::iter::from_fn(|| donor.poll_output())
        .find_map(|out| match out {
            Output::Signal(s) if is_offer(&s) => Some(s),
            _ => None,
        })
        .expect("the donor offers");
    let mut bad = good.clone();
    if let Payload::Description { description, .. } = &mut bad.payload {
        description.sdp = description
            .sdp
            .lines()
            .filter(|l| !l.starts_with("a=ice-ufrag") && !l.starts_with("a=ice-pwd"))
            .map(|l| format!("{l}\r\n"))
            .collect();
    }

    let mut target = engine(Role::Polite).unwrap();
    let err = target
        .handle_signal(now, bad)
        .expect_err("an offer without ICE credentials");
    assert!(matches!(err, PeerError::InvalidDescription(_)), "{err:?}");
    while target.poll_output().is_some() {}
    assert!(
        target.transceivers().is_empty(),
        "{:#?}",
        target.transceivers()
    );
    assert_eq!(target.signaling_state(), SignalingState::Stable);
    assert!(!target.has_pending_description());

    // The same offer, intact and renumbered, now applies and is answered.
    let mut good = good;
    if let Payload::Description { offer_id, .. } = &mut good.payload {
        *offer_id = Some(2);
    }
    target
        .handle_signal(now, good)
        .expect("the valid offer applies");
    let answered = std::iter::from_fn(|| target.poll_output())
        .any(|out| matches!(&out, Output::Signal(s) if is_answer(s)));
    assert!(answered);
    assert_eq!(target.transceivers().len(), 2);
}

/// Catalog #36 (algesten/str0m#887, PR #888): after a glare with rollback, existing m-lines
/// keep their indices and new ones are appended; both ends agree on the order.
#[test]
fn m_line_order_is_kept_across_rollback() {
    let scenario = Scenario::default()
        .at(0, 1, 0, audio(Direction::SendRecv))
        .at(0, 1, 0, video(Direction::SendRecv));
    let mut sim = Sim::with_scenario(SimConfig::default(), &scenario);
    passed(&sim.run());
    let before = sim.engine(0, 1).negotiated_mids();
    sim.act(0, 1, video(Direction::SendOnly));
    sim.act(1, 0, audio(Direction::SendOnly));
    passed(&sim.run());
    assert_eq!(sim.engine(0, 1).counters().rollbacks, 1);
    let after = sim.engine(0, 1).negotiated_mids();
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "existing m-lines moved"
    );
    assert_eq!(after.len(), before.len() + 2);
    assert_eq!(after, sim.engine(1, 0).negotiated_mids());
}

/// Several peers renegotiating at once: on every pair both ends add a transceiver at the same
/// instant, twice, in a full mesh of 3 and of 4 peers.
#[test]
fn three_and_four_peers_renegotiating_at_once() {
    for peers in [3, 4] {
        let mut scenario = Scenario::default();
        for a in 0..peers {
            for b in (a + 1)..peers {
                scenario = scenario
                    .at(0, a, b, Action::CreateChannel(format!("{a}-{b}")))
                    .both(500, a, b, video(Direction::SendRecv))
                    .both(520, a, b, audio(Direction::SendOnly));
            }
        }
        let config = SimConfig {
            peers,
            ..SimConfig::default()
        };
        let mut sim = Sim::with_scenario(config, &scenario);
        let verdict = sim.run();
        passed(&verdict);
        assert!(verdict.stats.collisions >= (peers * (peers - 1) / 2) as u64);
    }
}

/// The engine is deterministic: the same seed gives the same trace and verdict, run after run.
#[test]
fn same_seed_same_trace() {
    for seed in [3, 17, 101] {
        let (a, trace_a) = politely_sim::run_seed(seed, 3, None);
        let (b, trace_b) = politely_sim::run_seed(seed, 3, None);
        assert_eq!(trace_a, trace_b, "seed {seed}");
        assert_eq!(a.trace_hash, b.trace_hash);
        assert_eq!(a.passed(), b.passed());
    }
}

/// `close()` says bye: the peer closes too, and a closed engine refuses intents and ignores
/// input.
#[test]
fn close_says_bye_and_the_peer_closes() {
    let mut sim = connected_pair(SimConfig::default());
    sim.act(0, 1, Action::Close);
    sim.run_for(Duration::from_millis(50));
    assert!(sim.saw(1, 0, |e| *e == Event::Closed { by_remote: true }));
    for (a, b) in [(0, 1), (1, 0)] {
        let e = sim.engine(a, b);
        assert_eq!(e.signaling_state(), politely_core::SignalingState::Closed);
        assert_eq!(
            e.create_data_channel("late", Default::default()),
            Err(politely_core::Error::Api(politely_core::ApiError::Closed))
        );
        assert_eq!(e.poll_timeout(), None);
    }
}

/// A transport that never comes up (every datagram lost): the watchdog restarts ICE, then
/// replaces the connection. The side with nothing of its own to offer asks the other for a new
/// connection with `bye` + `reconnect`. Once the network works again, the pair converges on a
/// new connection id.
#[test]
fn a_dead_transport_gets_a_new_connection() {
    let config = SimConfig {
        watchdog_timeout: Duration::from_secs(1),
        ..SimConfig::default()
    };
    let scenario = Scenario::default().at(0, 0, 1, Action::CreateChannel("only-p0".into()));
    let mut sim = Sim::with_scenario(config, &scenario);
    let first = sim.engine(0, 1).connection_id().clone();
    sim.set_packet_loss(1.0);
    sim.run_for(Duration::from_secs(12));
    let restarted = |sim: &Sim, a, b| {
        sim.saw(a, b, |e| {
            *e == Event::Watchdog {
                cause: WatchdogCause::TransportStalled,
                recovery: Recovery::RestartIce,
            }
        })
    };
    assert!(restarted(&sim, 0, 1) && restarted(&sim, 1, 0));
    assert!(
        sim.saw(1, 0, |e| matches!(
            e,
            Event::Watchdog {
                recovery: Recovery::NewConnection,
                ..
            }
        )) || sim.saw(0, 1, |e| matches!(
            e,
            Event::Watchdog {
                recovery: Recovery::NewConnection,
                ..
            }
        ))
    );
    sim.set_packet_loss(0.0);
    passed(&sim.run());
    assert_ne!(sim.engine(0, 1).connection_id(), &first);
}

fn late_candidate(connection_id: politely_core::ConnectionId, ufrag: &str) -> Signal {
    Signal {
        connection_id,
        payload: Payload::Candidate(Some(politely_core::Candidate {
            candidate: "candidate:1 1 udp 2130706431 127.0.0.1 20100 typ host".into(),
            sdp_mid: None,
            sdp_m_line_index: Some(0),
            username_fragment: Some(ufrag.into()),
        })),
    }
}

/// A browser that may not reveal its addresses (no capture permission: the default for a page
/// with only data channels) sends host candidates named `<uuid>.local`. The engine drops them
/// with a diagnostic, not an error, and sends no mDNS query (no socket of the application's is
/// on port 5353, and none may reach a multicast group): the browser's checks make the pair.
#[test]
fn hidden_candidates_are_dropped_without_a_query() {
    let mut sim = connected_pair(SimConfig::default());
    let ufrag = sim.engine(0, 1).remote_ufrag().expect("a remote ufrag");
    let (now, id) = (sim.now(), sim.engine(0, 1).connection_id().clone());
    let e = sim.engine(0, 1);
    let mut hidden = late_candidate(id, &ufrag);
    if let Payload::Candidate(Some(c)) = &mut hidden.payload {
        c.candidate = c
            .candidate
            .replace("127.0.0.1", "4e0f3b6a-2a8f-4d3e-9c1a-0d2f7c8b9a11.local");
    }
    e.handle_signal(now, hidden)
        .expect("a hidden candidate is not an error");
    let mut outputs: Vec<_> = std::iter::from_fn(|| e.poll_output()).collect();
    for step in 1..=20 {
        let later = now + std::time::Duration::from_millis(50 * step);
        e.handle_timeout(later);
        outputs.extend(std::iter::from_fn(|| e.poll_output()));
    }
    assert!(
        !outputs.iter().any(|o| matches!(
            o,
            politely_core::Output::Transmit(t) if t.destination.ip().is_multicast()
        )),
        "an mDNS query left the engine"
    );
    assert!(outputs.iter().any(|o| matches!(
        o,
        politely_core::Output::Event(Event::Diagnostic(Diagnostic::HiddenCandidate))
    )));
    assert_eq!(e.counters().hidden_candidates, 1);
    passed(&sim.run());
}

/// Catalog #30 (webrtc-pc #1227 / PR #1580; twilio `icebox.js`; WHIP PR #181): after an ICE
/// restart, a late candidate carrying the old ufrag is dropped, without tearing anything down;
/// one with a ufrag that matches nothing is a peer error.
#[test]
fn candidates_of_an_old_ice_generation_are_dropped() {
    let mut sim = connected_pair(SimConfig::default());
    let old = sim.engine(0, 1).remote_ufrag().expect("a remote ufrag");
    sim.act(1, 0, Action::RestartIce);
    passed(&sim.run());
    assert_ne!(
        sim.engine(0, 1).remote_ufrag().as_deref(),
        Some(old.as_str())
    );
    let (now, id) = (sim.now(), sim.engine(0, 1).connection_id().clone());
    let e = sim.engine(0, 1);
    e.handle_signal(now, late_candidate(id.clone(), &old))
        .expect("an old-generation candidate is not an error");
    assert!(std::iter::from_fn(|| e.poll_output()).any(|o| matches!(
        o,
        politely_core::Output::Event(Event::Diagnostic(Diagnostic::OldGenerationCandidate))
    )));
    assert_eq!(e.counters().old_generation_candidates, 1);
    let unknown = e.handle_signal(now, late_candidate(id, "never-seen"));
    assert!(
        matches!(unknown, Err(politely_core::PeerError::InvalidCandidate(_))),
        "{unknown:?}"
    );
    while e.poll_output().is_some() {}
    passed(&sim.run());
}

/// WPT helper `ignoreIceCandidateFailures` (catalog #6): the impolite side ignores a colliding
/// offer; a candidate of that offer which fails is suppressed, not surfaced. Once the next remote
/// description is applied, the same failure is an error again.
#[test]
fn candidate_failures_of_an_ignored_offer_are_suppressed() {
    let mut sim = connected_pair(SimConfig::default());
    let id = sim.engine(1, 0).connection_id().clone();
    // Both offer; hold p0's offer back so p1 is certainly in have-local-offer when it lands.
    sim.act(1, 0, video(Direction::SendOnly));
    sim.act(0, 1, audio(Direction::SendOnly));
    sim.run_for(Duration::from_micros(5_001)); // both offers have landed; p1 ignored p0's
    assert!(sim.saw(1, 0, |e| *e == Event::Diagnostic(Diagnostic::IgnoredOffer)));
    let now = sim.now();
    let e = sim.engine(1, 0);
    e.handle_signal(now, late_candidate(id.clone(), "of-the-ignored-offer"))
        .expect("suppressed while the ignored offer is the last description");
    assert_eq!(e.counters().suppressed_candidates, 1);
    while e.poll_output().is_some() {}
    passed(&sim.run());
    let now = sim.now();
    let e = sim.engine(1, 0);
    let after = e.handle_signal(now, late_candidate(id, "of-the-ignored-offer"));
    assert!(
        matches!(after, Err(politely_core::PeerError::InvalidCandidate(_))),
        "{after:?}"
    );
}

/// W3C RTCDataChannel close: closing resets the channel's outgoing stream (RFC 8831 §6.7), and
/// the remote closes its end when it sees the reset. Both ends must report the channel closed,
/// and it must be gone from both lists.
#[test]
fn a_closed_channel_closes_at_both_ends() {
    let mut sim = connected_pair(SimConfig::default());
    sim.act(1, 0, Action::CreateChannel("second".into()));
    sim.run_for(Duration::from_secs(1));
    sim.act(1, 0, Action::CloseChannel(1));
    sim.run_for(Duration::from_secs(2));
    for (x, y) in [(0, 1), (1, 0)] {
        let labels: Vec<_> = sim
            .engine(x, y)
            .channels()
            .into_iter()
            .map(|c| c.label)
            .collect();
        assert_eq!(labels, ["setup"], "p{x}'s channels");
        assert!(
            sim.saw(x, y, |e| matches!(e, Event::ChannelClosed { .. })),
            "p{x} reported no ChannelClosed"
        );
    }
    passed(&sim.run());
}

/// W3C closes a channel at both ends when either application closes it. The end that made it
/// reports it closed for good, and a later connection does not bring it back; a channel still
/// wanted does come back, under its id.
#[test]
fn a_channel_the_remote_closed_stays_closed_on_a_new_connection() {
    let mut sim = connected_pair(SimConfig::default());
    sim.act(0, 1, Action::CreateChannel("second".into()));
    sim.run_for(Duration::from_secs(1));
    let ids = |sim: &mut Sim| -> Vec<(String, ChannelId)> {
        let mut ids: Vec<_> = sim
            .engine(0, 1)
            .channels()
            .into_iter()
            .filter(|c| c.origin == Origin::Local)
            .map(|c| (c.label, c.id))
            .collect();
        ids.sort();
        ids
    };
    let before = ids(&mut sim);
    assert_eq!(before.len(), 2, "{before:?}");
    let second = before[0].1;
    // p1 closes p0's "second", the only channel p0 made that p1 sees.
    sim.act(1, 0, Action::CloseRemoteChannel(1));
    sim.run_for(Duration::from_secs(2));
    assert!(
        sim.saw(0, 1, |e| *e
            == Event::ChannelClosed {
                id: second,
                reopens: false
            }),
        "p0 was not told that \"second\" closed for good"
    );
    assert_eq!(ids(&mut sim), [before[1].clone()]);
    // p1 restarts: p0 replaces its connection and brings back what it still wants.
    sim.act(1, 0, Action::Restart);
    passed(&sim.run());
    assert!(
        sim.saw(0, 1, |e| *e
            == Event::ChannelClosed {
                id: before[1].1,
                reopens: true
            }),
        "p0 was not told that \"setup\" comes back"
    );
    assert_eq!(ids(&mut sim), [before[1].clone()]);
}

/// W3C: a direction records what the application wants; an m-section offered `inactive` is
/// not stopped. rtc stops such a transceiver for good (add_track can no longer reuse it, so a
/// track added on it makes a new m-section); the engine keeps it alive, so it is reused, and
/// media flows on it again once the application turns it back on.
#[test]
fn an_inactive_transceiver_is_reused_and_carries_media_again() {
    let mut sim = connected_pair(SimConfig::default());
    sim.act(
        0,
        1,
        Action::AddTransceiver(MediaKind::Audio, Direction::SendRecv),
    );
    passed(&sim.run());
    let packets = |sim: &mut Sim, from: usize, to: usize| -> usize {
        let id = sim.engine(from, to).transceivers()[0].id;
        let before = sim.events(to, from).len();
        for _ in 0..5 {
            sim.engine(from, to)
                .write_sample(id, &[1; 40], Duration::from_millis(20))
                .expect("the transceiver has a track");
            sim.flush(from, to);
            sim.run_for(Duration::from_millis(20));
        }
        sim.events(to, from)[before..]
            .iter()
            .filter(|(_, e)| matches!(e, Event::Media(_)))
            .count()
    };
    assert!(packets(&mut sim, 0, 1) > 0, "p0's audio reaches p1");
    sim.act(0, 1, Action::SetDirection(0, Direction::Inactive));
    passed(&sim.run());
    assert_eq!(packets(&mut sim, 0, 1), 0, "inactive sends nothing");
    // p1's transceiver, created by p0's offer, never sent: W3C addTrack reuses it.
    sim.act(1, 0, Action::AddTrack(MediaKind::Audio));
    passed(&sim.run());
    let theirs = sim.engine(1, 0).transceivers();
    assert_eq!(
        theirs.len(),
        1,
        "add_track reused the inactive one: {theirs:#?}"
    );
    sim.act(0, 1, Action::SetDirection(0, Direction::SendRecv));
    passed(&sim.run());
    let t = &sim.engine(1, 0).transceivers()[0];
    assert_eq!(t.current_direction, Some(Direction::SendRecv), "{t:?}");
    assert!(packets(&mut sim, 0, 1) > 0, "p0's audio reaches p1 again");
    assert!(packets(&mut sim, 1, 0) > 0, "p1's audio reaches p0");
}

/// W3C addTrack reuses a transceiver only if it has no track and never sent; removeTrack on
/// one without a track does nothing.
#[test]
fn add_track_never_reuses_a_transceiver_that_sent() {
    let mut sim = connected_pair(SimConfig::default());
    sim.act(0, 1, Action::AddTrack(MediaKind::Video));
    passed(&sim.run());
    // It sent (negotiated sendrecv, answered recvonly); its track goes.
    sim.act(0, 1, Action::RemoveTrack(0));
    passed(&sim.run());
    let sent = sim.engine(0, 1).transceivers()[0].id;
    sim.engine(0, 1)
        .remove_track(sent)
        .expect("removing no track does nothing");
    sim.act(0, 1, Action::AddTrack(MediaKind::Video));
    passed(&sim.run());
    let ours = sim.engine(0, 1).transceivers();
    assert_eq!(
        ours.len(),
        2,
        "a new transceiver for the new track: {ours:#?}"
    );
    assert!(!ours[0].has_track && ours[1].has_track, "{ours:#?}");
    // One added without a track never sent: a track is put on it.
    sim.act(
        1,
        0,
        Action::AddTransceiver(MediaKind::Audio, Direction::RecvOnly),
    );
    passed(&sim.run());
    sim.act(1, 0, Action::AddTrack(MediaKind::Audio));
    passed(&sim.run());
    let theirs = sim.engine(1, 0).transceivers();
    let audio: Vec<_> = theirs
        .iter()
        .filter(|t| t.kind == MediaKind::Audio)
        .collect();
    assert_eq!(audio.len(), 1, "{theirs:#?}");
    assert_eq!(audio[0].direction, Direction::SendRecv);
}

/// What an SFU needs of a connection: a sending track named by the application arrives under
/// that `a=msid`; a packet written as it is arrives with its own numbering (the SSRC and
/// payload type are the connection's); a keyframe request reaches the sending side; and a
/// relabelled track is renegotiated, so the remote learns the new ids.
#[test]
fn a_labelled_track_forwards_packets_and_keyframe_requests() {
    let mut sim = connected_pair(SimConfig::default());
    let label = |stream: &str, track: &str| TrackLabel {
        stream_id: stream.into(),
        track_id: track.into(),
    };
    sim.act(
        1,
        0,
        Action::AddLabelledTransceiver(MediaKind::Video, Direction::SendOnly, label("alice", "t1")),
    );
    passed(&sim.run());
    let sending = sim.engine(1, 0).transceivers()[0].id;
    let remote = sim.engine(0, 1).transceivers();
    assert_eq!(remote.len(), 1, "{remote:#?}");
    assert_eq!(remote[0].remote_label, Some(label("alice", "t1")));
    let receiving = remote[0].id;

    let before = sim.events(0, 1).len();
    for (i, marker) in [(0u16, false), (1, true)] {
        let packet = MediaPacket {
            transceiver: sending,
            payload_type: 0, // replaced by the negotiated one
            sequence_number: 40_000 + i,
            timestamp: 90_000,
            marker,
            // Audio level is not negotiated for video: left out.
            extensions: vec![(HeaderExtension::AudioLevel, vec![0x80 | 30])],
            payload: vec![0x10, 0, i as u8],
        };
        assert!(sim.engine(1, 0).write_rtp(sending, &packet).unwrap());
    }
    sim.flush(1, 0);
    sim.run_for(Duration::from_millis(20));
    let got: Vec<_> = sim.events(0, 1)[before..]
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Media(p) => Some((
                p.transceiver,
                p.sequence_number,
                p.marker,
                p.payload_type,
                p.extensions.clone(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        [
            (receiving, 40_000, false, 96, vec![]),
            (receiving, 40_001, true, 96, vec![])
        ]
    );

    assert!(sim.engine(0, 1).request_keyframe(receiving).unwrap());
    sim.flush(0, 1);
    sim.run_for(Duration::from_millis(20));
    assert!(
        sim.saw(1, 0, |e| *e
            == Event::KeyframeRequested {
                transceiver: sending
            }),
        "the sender was not asked for a keyframe"
    );

    sim.act(1, 0, Action::SetTrackLabel(0, label("bob", "t2")));
    passed(&sim.run());
    let remote = sim.engine(0, 1).transceivers();
    assert_eq!(remote.len(), 1, "the m-section is reused: {remote:#?}");
    assert_eq!(remote[0].remote_label, Some(label("bob", "t2")));
    assert_eq!(media_arriving(&mut sim, sending), 3, "after a relabel");

    // An SFU's way: stop sending, and once the other end has seen it stop, send another
    // track on the same m-section.
    sim.act(1, 0, Action::SetDirection(0, Direction::RecvOnly));
    passed(&sim.run());
    assert_eq!(media_arriving(&mut sim, sending), 0, "not sending");
    sim.act(1, 0, Action::SetTrackLabel(0, label("carol", "t3")));
    sim.act(1, 0, Action::SetDirection(0, Direction::SendRecv));
    passed(&sim.run());
    assert_eq!(
        sim.engine(0, 1).transceivers()[0].remote_label,
        Some(label("carol", "t3"))
    );
    assert_eq!(media_arriving(&mut sim, sending), 3, "sending again");
}

/// A track sends only once its negotiated direction does, as in a browser: a transceiver that
/// stopped sending and is asked to send again (an SFU client re-publishing on it) writes
/// nothing until the exchange that makes it send completes. rtc would send at once, under an
/// SSRC that no description the remote applied declares yet, and the remote cannot place it.
#[test]
fn a_track_sends_only_once_its_negotiated_direction_does() {
    let mut sim = connected_pair(SimConfig::default());
    let label = |track: &str| TrackLabel {
        stream_id: "alice".into(),
        track_id: track.into(),
    };
    sim.act(
        1,
        0,
        Action::AddLabelledTransceiver(MediaKind::Video, Direction::SendOnly, label("t1")),
    );
    passed(&sim.run());
    let sending = sim.engine(1, 0).transceivers()[0].id;
    let packet = |n: u16| MediaPacket {
        transceiver: sending,
        payload_type: 0,
        sequence_number: n,
        timestamp: 3_000 * u32::from(n),
        marker: true,
        extensions: Vec::new(),
        payload: vec![0x10, 0, 0],
    };
    assert!(sim.engine(1, 0).write_rtp(sending, &packet(1)).unwrap());

    sim.act(1, 0, Action::SetDirection(0, Direction::Inactive));
    passed(&sim.run());
    assert!(!sim.engine(1, 0).write_rtp(sending, &packet(2)).unwrap());

    sim.act(1, 0, Action::SetTrackLabel(0, label("t2")));
    sim.act(1, 0, Action::SetDirection(0, Direction::SendOnly));
    assert!(
        !sim.engine(1, 0).write_rtp(sending, &packet(3)).unwrap(),
        "sent before the exchange that makes it send"
    );
    passed(&sim.run());
    assert_eq!(
        sim.engine(0, 1).transceivers()[0].remote_label,
        Some(label("t2"))
    );
    assert!(sim.engine(1, 0).write_rtp(sending, &packet(4)).unwrap());
}

/// Writes three packets on peer 1's `sending` transceiver; how many peer 0 receives.
/// RFC 6464's audio level travels with a forwarded packet: the sender names the extension by
/// URI and the engine writes it under the id this connection negotiated; the receiver gets it
/// back by URI, with its value. (What a browser shows as the receiver's `audioLevel`.)
#[test]
fn the_audio_level_of_a_forwarded_packet_arrives() {
    let mut sim = connected_pair(SimConfig::default());
    sim.act(
        1,
        0,
        Action::AddLabelledTransceiver(
            MediaKind::Audio,
            Direction::SendOnly,
            TrackLabel {
                stream_id: "alice".into(),
                track_id: "a".into(),
            },
        ),
    );
    passed(&sim.run());
    let sending = sim.engine(1, 0).transceivers()[0].id;
    let receiving = sim.engine(0, 1).transceivers()[0].id;
    let before = sim.events(0, 1).len();
    for (i, level) in [(0u16, 0x80 | 30), (1, 127)] {
        let packet = MediaPacket {
            transceiver: sending,
            payload_type: 0,
            sequence_number: 7_000 + i,
            timestamp: 960 * u32::from(i),
            marker: false,
            extensions: vec![(HeaderExtension::AudioLevel, vec![level])],
            payload: vec![0xfc; 20],
        };
        assert!(sim.engine(1, 0).write_rtp(sending, &packet).unwrap());
    }
    sim.flush(1, 0);
    sim.run_for(Duration::from_millis(20));
    let got: Vec<_> = sim.events(0, 1)[before..]
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Media(p) => Some((p.transceiver, p.extensions.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                receiving,
                vec![(HeaderExtension::AudioLevel, vec![0x80 | 30])]
            ),
            (receiving, vec![(HeaderExtension::AudioLevel, vec![127])]),
        ]
    );
}

fn media_arriving(sim: &mut Sim, sending: politely_core::TransceiverId) -> usize {
    let before = sim.events(0, 1).len();
    // Numbering goes on from call to call: SRTP drops a packet it has seen (RFC 3711 §3.3.2).
    let start = sim.events(0, 1).len() as u16 * 8;
    for i in 0..3u16 {
        let packet = MediaPacket {
            transceiver: sending,
            payload_type: 0,
            sequence_number: 1_000 + start + i,
            timestamp: 3_000 * u32::from(start + i),
            marker: true,
            extensions: Vec::new(),
            payload: vec![0x10, 0, 0],
        };
        sim.engine(1, 0).write_rtp(sending, &packet).unwrap();
    }
    sim.flush(1, 0);
    sim.run_for(Duration::from_millis(20));
    sim.events(0, 1)[before..]
        .iter()
        .filter(|(_, e)| matches!(e, Event::Media(_)))
        .count()
}

/// A transceiver with a track whose m-section the other end first sees not sending (an SFU's
/// spare, offered to a client that reloaded) carries media once it sends.
#[test]
fn a_track_first_offered_not_sending_carries_media_once_it_sends() {
    let mut sim = connected_pair(SimConfig::default());
    let label = |stream: &str, track: &str| TrackLabel {
        stream_id: stream.into(),
        track_id: track.into(),
    };
    // Both before any offer: the first offer of the m-section does not send.
    let at = sim.elapsed() + Duration::from_millis(10);
    sim.schedule(
        at,
        1,
        0,
        Action::AddLabelledTransceiver(MediaKind::Video, Direction::SendRecv, label("a", "t1")),
    );
    sim.schedule(at, 1, 0, Action::SetDirection(0, Direction::RecvOnly));
    passed(&sim.run());
    let sending = sim.engine(1, 0).transceivers()[0].id;
    sim.act(1, 0, Action::SetTrackLabel(0, label("b", "t2")));
    sim.act(1, 0, Action::SetDirection(0, Direction::SendRecv));
    passed(&sim.run());
    assert_eq!(media_arriving(&mut sim, sending), 3);
}

/// NACK: with a lossy network, packets the receiver misses are asked for and sent again, so
/// far more arrive than the loss alone would let through.
#[test]
fn lost_packets_are_retransmitted_on_nack() {
    let mut sim = connected_pair(SimConfig::default());
    let label = TrackLabel {
        stream_id: "s".into(),
        track_id: "t".into(),
    };
    sim.act(
        1,
        0,
        Action::AddLabelledTransceiver(MediaKind::Video, Direction::SendOnly, label),
    );
    passed(&sim.run());
    let sending = sim.engine(1, 0).transceivers()[0].id;
    sim.set_packet_loss(0.2);
    let before = sim.events(0, 1).len();
    let count = 300u16;
    for i in 0..count {
        let packet = MediaPacket {
            transceiver: sending,
            payload_type: 0,
            sequence_number: 5_000 + i,
            timestamp: 3_000 * u32::from(i),
            marker: true,
            extensions: Vec::new(),
            payload: vec![0x10, 0, 0, 1, 2, 3],
        };
        sim.engine(1, 0).write_rtp(sending, &packet).unwrap();
        sim.flush(1, 0);
        sim.run_for(Duration::from_millis(20));
    }
    sim.set_packet_loss(0.0);
    sim.run_for(Duration::from_secs(2));
    let received: std::collections::BTreeSet<u16> = sim.events(0, 1)[before..]
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Media(p) => Some(p.sequence_number),
            _ => None,
        })
        .collect();
    // 20% loss each way (a NACK or a retransmission can be lost too): without NACK about 240
    // of 300 arrive.
    assert!(
        received.len() > 285,
        "{} of {count} packets arrived",
        received.len()
    );
}

/// Catalog #50 (Chromium ↔ Firefox, found in politely): both offer a new audio section at
/// once; the polite side rolls back and cannot apply the impolite side's offer (Chromium keeps
/// its own header-extension ids). It refuses the offer by number; its own offer stands (still
/// pending: Chromium undoes the failed step whole) or follows (if it rolled back). The polite
/// side's part is played by hand: the impolite side's offer is lost on the way (the polite
/// side "could not apply it") and a `refused` for it reaches the impolite side, with the
/// polite side's offer before it (ignored as a collision, then taken) or after it (taken once
/// it comes; our offers wait for it). Either way: both changes negotiated, no watchdog.
#[test]
fn a_refused_offer_gives_way_to_the_other_offer() {
    for polite_offer_after in [false, true] {
        let mut sim = connected_pair(SimConfig::default());
        let refused = std::rc::Rc::new(std::cell::Cell::new(None));
        let seen = refused.clone();
        sim.intercept(move |from, _, signal| match &signal.payload {
            Payload::Description {
                description,
                offer_id,
                ..
            } if from == 1 && description.kind == SdpKind::Offer && seen.get().is_none() => {
                seen.set(*offer_id);
                Fate::Drop
            }
            Payload::Description { description, .. }
                if polite_offer_after && from == 0 && description.kind == SdpKind::Offer =>
            {
                Fate::Delay(Duration::from_millis(100))
            }
            _ => Fate::Deliver,
        });
        sim.act(0, 1, video(Direction::SendRecv));
        sim.act(1, 0, audio(Direction::SendRecv));
        sim.run_for(Duration::from_millis(50));
        let offer_id = refused.get().expect("the impolite side offered");
        assert_eq!(
            sim.engine(1, 0).counters().ignored_offers,
            u64::from(!polite_offer_after)
        );
        let id = sim.engine(1, 0).connection_id().clone();
        let answers_before = sim.engine(1, 0).counters().answers;
        let offers_before = sim.engine(1, 0).counters().offers;
        sim.handle_signal(
            1,
            0,
            Signal {
                connection_id: id,
                payload: Payload::Refused { offer_id },
            },
        )
        .expect("a refusal is not an error");
        assert!(sim.saw(1, 0, |e| *e == Event::Diagnostic(Diagnostic::OfferRefused)));
        // The ignored offer is answered at once, and our change offered right after it;
        // otherwise nothing is offered until the other side's offer is taken.
        let taken = u64::from(!polite_offer_after);
        let impolite = sim.engine(1, 0).counters();
        assert_eq!(impolite.answers, answers_before + taken);
        assert_eq!(impolite.offers, offers_before + taken);
        // With the polite side's offer after the refusal, the refused offer was neither
        // answered nor ignored, which the verdict's count (offers = answers + ignored) cannot
        // know; everything else must hold. (Otherwise it was ignored, and counts as such.)
        let verdict = sim.run();
        let expected = if polite_offer_after {
            vec![politely_sim::Failure::ExtraOffers(
                "4 offers, 3 answers, 0 ignored".into(),
            )]
        } else {
            Vec::new()
        };
        assert_eq!(
            verdict.failures, expected,
            "polite offer after the refusal: {polite_offer_after}"
        );
        for (peer, remote) in [(0, 1), (1, 0)] {
            let e = sim.engine(peer, remote);
            assert_eq!(e.counters().watchdog_firings, 0);
            assert_eq!(e.transceivers().len(), 2);
        }
        assert_eq!(sim.engine(1, 0).counters().rollbacks, 1);
    }
}

/// Found against Firefox ESR: its later offers write every m-section but the first with port 0
/// and `a=bundle-only` (RFC 8843 §6), live sections on the BUNDLE transport. Read as rejected,
/// they made every answer `inactive`: media stopped both ways, and since `inactive` was then
/// "what was offered", a later direction change needed no offer and was lost. Peer 1 writes
/// its offers that way here; every answer must still carry what each side asked for, through
/// changes on either side and a glare.
#[test]
fn bundle_only_sections_are_live_sections() {
    let mut sim = connected_pair(SimConfig::default());
    sim.intercept(|from, _, signal| match &signal.payload {
        Payload::Description {
            description,
            offer_id,
            lease,
        } if from == 1 && description.kind == SdpKind::Offer => {
            let mut description = description.clone();
            description.sdp = bundle_only(&description.sdp);
            assert!(
                description.sdp.contains("a=bundle-only"),
                "{}",
                description.sdp
            );
            Fate::Rewrite(Signal {
                connection_id: signal.connection_id.clone(),
                payload: Payload::Description {
                    description,
                    offer_id: *offer_id,
                    lease: *lease,
                },
            })
        }
        _ => Fate::Deliver,
    });
    sim.act(0, 1, audio(Direction::SendRecv));
    passed(&sim.run());
    sim.act(1, 0, video(Direction::SendRecv));
    passed(&sim.run());
    sim.act(1, 0, Action::SetDirection(0, Direction::RecvOnly));
    passed(&sim.run());
    // Both at once: peer 0's change rides on its answer or its own offer after the glare.
    sim.act(0, 1, Action::SetDirection(0, Direction::RecvOnly));
    sim.act(1, 0, Action::SetDirection(0, Direction::SendRecv));
    passed(&sim.run());
    sim.act(0, 1, Action::SetDirection(0, Direction::SendRecv));
    passed(&sim.run());
    // Each side sends on its own transceiver and receives on the other's.
    for (peer, remote) in [(0, 1), (1, 0)] {
        for t in sim.engine(peer, remote).transceivers() {
            let expected = if t.origin == Origin::Local {
                Direction::SendOnly
            } else {
                Direction::RecvOnly
            };
            assert_eq!(t.current_direction, Some(expected), "p{peer}: {t:?}");
        }
    }
}

/// An offer as Firefox writes its later ones: each m-section after the first gets port 0 and
/// `a=bundle-only`.
fn bundle_only(sdp: &str) -> String {
    let mut out = String::new();
    let mut sections = 0;
    for line in sdp.split_terminator("\r\n") {
        if let Some(rest) = line.strip_prefix("m=") {
            sections += 1;
            let mut words: Vec<&str> = rest.split(' ').collect();
            if sections > 1 {
                words[1] = "0";
                out.push_str(&format!("m={}\r\na=bundle-only\r\n", words.join(" ")));
                continue;
            }
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

/// The engine's timeline: every step of a connection's setup is stamped, in the order the steps
/// happen, on the simulator's clock. And the DTLS client's first flight leaves when ICE
/// connects, not at rtc's next timer: the handshake takes its three round trips (DTLS 1.2 with
/// the cookie exchange) and no more
/// (it waited for the next ICE tick, 7 ms of a 9 ms connect on loopback, before the engine
/// ran rtc's timers at once).
#[test]
fn the_timeline_stamps_each_step_and_dtls_starts_when_ice_connects() {
    let config = SimConfig {
        signal_latency: Duration::from_millis(5),
        packet_latency: Duration::from_millis(1),
        ..SimConfig::default()
    };
    let mut sim = connected_pair(config);
    let rtt = Duration::from_millis(2);
    for (peer, remote) in [(0, 1), (1, 0)] {
        let t = sim.engine(peer, remote).timeline();
        let steps = [
            ("created", t.created),
            ("first negotiated", t.first_negotiated),
            ("ICE connected", t.ice_connected),
            ("connected", t.connected),
            ("SCTP up", t.sctp_up),
            ("channel open", t.channel_open),
            ("first message", t.first_message),
        ];
        for pair in steps.windows(2) {
            let ((a, at_a), (b, at_b)) = (pair[0], pair[1]);
            let (at_a, at_b) = (at_a.expect(a), at_b.expect(b));
            assert!(at_a <= at_b, "peer {peer}: {a} after {b}");
        }
        // One side offered the exchange, the other received it; both were stamped.
        assert!(t.first_offer_sent.is_some() != t.first_offer_received.is_some());
        assert_eq!(t.last_negotiated, t.first_negotiated);
        let dtls = t.connected.unwrap() - t.ice_connected.unwrap();
        assert!(
            dtls <= 3 * rtt + Duration::from_micros(100),
            "peer {peer}: DTLS took {dtls:?} after ICE connected, more than three round trips"
        );
    }
}
