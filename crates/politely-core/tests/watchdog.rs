//! The watchdog names the cause when the transport never comes up: signaling works, but no
//! datagram is ever delivered and one side has no local address at all.

use politely_core::{Config, Engine, Event, Output, Recovery, Role, SignalingState, WatchdogCause};
use std::time::{Duration, Instant};

/// Moves the signals `from` has to `to`, keeping `from`'s events. Datagrams are dropped: there
/// is no network. Returns whether anything moved.
fn relay(from: &mut Engine, to: &mut Engine, now: Instant, events: &mut Vec<Event>) -> bool {
    let mut signals = Vec::new();
    while let Some(out) = from.poll_output() {
        match out {
            Output::Signal(s) => signals.push(s),
            Output::Event(e) => events.push(e),
            Output::Transmit(_) => {}
        }
    }
    let moved = !signals.is_empty();
    for s in signals {
        to.handle_signal(now, s)
            .expect("signals between engines are valid");
    }
    moved
}

/// Relays both ways until neither engine has anything to say.
fn exchange(a: &mut Engine, b: &mut Engine, now: Instant, events: &mut [Vec<Event>; 2]) {
    let [events_a, events_b] = events;
    while relay(a, b, now, events_a) | relay(b, a, now, events_b) {}
}

#[test]
fn no_local_candidates_and_a_stalled_transport_are_named() {
    // A test may read the clock once for its epoch; everything after is virtual.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut config = Config::new(Role::Polite, vec![]); // gathering never started
    config.watchdog_timeout = Duration::from_secs(1);
    let mut lonely = Engine::new(config, start).unwrap();
    let mut config = Config::new(Role::Impolite, vec!["127.0.0.1:7000".parse().unwrap()]);
    config.watchdog_timeout = Duration::from_secs(1);
    let mut other = Engine::new(config, start).unwrap();

    lonely
        .create_data_channel("chat", Default::default())
        .unwrap();
    let mut events = [Vec::new(), Vec::new()];
    exchange(&mut lonely, &mut other, start, &mut events);
    assert_eq!(lonely.signaling_state(), SignalingState::Stable);
    assert_eq!(other.signaling_state(), SignalingState::Stable);

    let mut now = start;
    while now < start + Duration::from_secs(4) {
        now += Duration::from_millis(50);
        for e in [&mut lonely, &mut other] {
            if e.poll_timeout().is_some_and(|t| t <= now) {
                e.handle_timeout(now);
            }
        }
        exchange(&mut lonely, &mut other, now, &mut events);
    }
    assert!(events[0].contains(&Event::Watchdog {
        cause: WatchdogCause::NoLocalCandidates,
        recovery: Recovery::ReportOnly,
    }));
    assert!(events[1].contains(&Event::Watchdog {
        cause: WatchdogCause::TransportStalled,
        recovery: Recovery::RestartIce,
    }));
}
