//! Scenarios: what the application on each side does, and when.

use crate::sim::{Roles, SimConfig};
use politely_core::rng::Rng;
use politely_core::{
    ChannelId, Direction, Engine, Error, MediaKind, Origin, TrackLabel, TransceiverId,
};
use std::time::Duration;

/// Something the application does to one engine.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// `add_transceiver(kind, direction)`.
    AddTransceiver(MediaKind, Direction),
    /// `add_labelled_transceiver(kind, direction, label)`.
    AddLabelledTransceiver(MediaKind, Direction, TrackLabel),
    /// `set_track_label` on the n-th (modulo count) local transceiver that has a track; a
    /// no-op if none.
    SetTrackLabel(usize, TrackLabel),
    /// `add_track(kind)`.
    AddTrack(MediaKind),
    /// `create_data_channel(label)`.
    CreateChannel(String),
    /// `close_data_channel` on the n-th (modulo count) open channel this side created; a no-op
    /// if none is open.
    CloseChannel(usize),
    /// `close_data_channel` on the n-th (modulo count) open channel the remote created; a
    /// no-op if none is open. W3C closes it at both ends, the remote's for good.
    CloseRemoteChannel(usize),
    /// `set_direction` on the n-th (modulo count) transceiver this side created; a no-op if
    /// it created none.
    SetDirection(usize, Direction),
    /// `remove_track` on the n-th (modulo count) local transceiver that sends; a no-op if none.
    RemoveTrack(usize),
    /// `restart_ice()`.
    RestartIce,
    /// The peer restarts: a new engine (new connection id) that opens a channel again.
    Restart,
    /// `close()`: the engine says bye and closes for good.
    Close,
}

impl Action {
    /// Performs the action on an engine; returns what it acted on, for the simulator's
    /// record of the application's intent.
    pub fn apply(&self, engine: &mut Engine) -> Result<Touched, Error> {
        match self {
            Action::AddTransceiver(kind, direction) => engine
                .add_transceiver(*kind, *direction)
                .map(Touched::Transceiver),
            Action::AddLabelledTransceiver(kind, direction, label) => engine
                .add_labelled_transceiver(*kind, *direction, label.clone())
                .map(Touched::Transceiver),
            Action::SetTrackLabel(n, label) => {
                let with_track = engine
                    .transceivers()
                    .into_iter()
                    .filter(|t| t.origin == Origin::Local && t.has_track)
                    .map(|t| t.id);
                match nth(with_track, *n) {
                    Some(id) => engine
                        .set_track_label(id, label.clone())
                        .map(|()| Touched::Transceiver(id)),
                    None => Ok(Touched::Nothing),
                }
            }
            Action::AddTrack(kind) => engine.add_track(*kind).map(Touched::Transceiver),
            Action::CreateChannel(label) => engine
                .create_data_channel(label, Default::default())
                .map(Touched::Channel),
            Action::CloseChannel(n) => {
                let open = engine
                    .channels()
                    .into_iter()
                    .filter(|c| c.origin == Origin::Local && c.open)
                    .map(|c| c.id);
                match nth(open, *n) {
                    Some(id) => engine.close_data_channel(id).map(|()| Touched::Channel(id)),
                    None => Ok(Touched::Nothing),
                }
            }
            Action::CloseRemoteChannel(n) => {
                let open = engine
                    .channels()
                    .into_iter()
                    .filter(|c| c.origin == Origin::Remote && c.open);
                match nth(open, *n) {
                    Some(c) => engine
                        .close_data_channel(c.id)
                        .map(|()| Touched::RemoteChannel(c.label)),
                    None => Ok(Touched::Nothing),
                }
            }
            Action::SetDirection(n, direction) => {
                let local = engine
                    .transceivers()
                    .into_iter()
                    .filter(|t| t.origin == Origin::Local)
                    .map(|t| t.id);
                match nth(local, *n) {
                    Some(id) => engine
                        .set_direction(id, *direction)
                        .map(|()| Touched::Transceiver(id)),
                    None => Ok(Touched::Nothing),
                }
            }
            Action::RemoveTrack(n) => {
                let sending = engine
                    .transceivers()
                    .into_iter()
                    .filter(|t| t.origin == Origin::Local && t.has_track)
                    .map(|t| t.id);
                match nth(sending, *n) {
                    Some(id) => engine.remove_track(id).map(|()| Touched::Transceiver(id)),
                    None => Ok(Touched::Nothing),
                }
            }
            Action::RestartIce => engine.restart_ice().map(|()| Touched::Nothing),
            Action::Close => {
                engine.close();
                Ok(Touched::Nothing)
            }
            Action::Restart => unreachable!("the simulator handles restarts itself"),
        }
    }
}

/// The n-th (modulo count) of `items`; `None` if there are none.
fn nth<T>(items: impl Iterator<Item = T>, n: usize) -> Option<T> {
    let items: Vec<T> = items.collect();
    let count = items.len();
    items.into_iter().nth(n % count.max(1))
}

/// What an action acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    /// A transceiver: made, given a track, redirected, or stripped of its track.
    Transceiver(TransceiverId),
    /// A data channel: created or closed.
    Channel(ChannelId),
    /// A channel the remote created, by its label, closed here.
    RemoteChannel(String),
    /// Nothing in particular (an ICE restart, a close, or nothing to act on).
    Nothing,
}

/// One scheduled action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Virtual time from the start.
    pub at: Duration,
    /// The peer that acts.
    pub peer: usize,
    /// Toward which remote peer (each pair has its own connection).
    pub remote: usize,
    /// What it does.
    pub action: Action,
}

/// A list of scheduled actions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scenario {
    /// The steps, in any order.
    pub steps: Vec<Step>,
}

impl Scenario {
    /// Adds a step.
    pub fn at(mut self, ms: u64, peer: usize, remote: usize, action: Action) -> Self {
        self.steps.push(Step {
            at: Duration::from_millis(ms),
            peer,
            remote,
            action,
        });
        self
    }

    /// Both ends of a pair act at the same instant.
    pub fn both(self, ms: u64, a: usize, b: usize, action: Action) -> Self {
        self.at(ms, a, b, action.clone()).at(ms, b, a, action)
    }

    /// A random scenario and network for `peers` peers, fully determined by `seed`: random
    /// latency, jitter and loss, and on every pair random intents on both sides at random
    /// times, often at the same instant on both ends to provoke glare.
    pub fn random(seed: u64, peers: usize) -> (SimConfig, Scenario) {
        let mut rng = Rng::new(seed);
        let signal_latency = Duration::from_micros(rng.below(30_000));
        let packet_latency = Duration::from_micros(rng.below(20_000));
        let config = SimConfig {
            peers,
            seed,
            signal_latency,
            signal_jitter: signal_latency.mul_f64(rng.unit() * 0.5),
            packet_latency,
            packet_jitter: packet_latency.mul_f64(rng.unit() * 0.5),
            packet_loss: if rng.chance(0.3) {
                rng.unit() * 0.05
            } else {
                0.0
            },
            shared_connection_ids: rng.chance(0.5),
            roles: Roles::ById,
            trickle: rng.chance(0.7),
            ..SimConfig::default()
        };
        let mut scenario = Scenario::default();
        let mut label = 0u32;
        for a in 0..peers {
            for b in (a + 1)..peers {
                // Every pair opens at least one channel, so it connects and echoes.
                let opener = if rng.chance(0.5) { (a, b) } else { (b, a) };
                label += 1;
                scenario = scenario.at(
                    rng.below(50),
                    opener.0,
                    opener.1,
                    Action::CreateChannel(format!("c{label}")),
                );
                let mut t = 0u64;
                for _ in 0..(1 + rng.below(5)) {
                    t += rng.below(400);
                    let action = random_action(&mut rng, &mut label);
                    if rng.chance(0.5) {
                        // Glare on purpose: both ends at the same instant.
                        let other = random_action(&mut rng, &mut label);
                        scenario = scenario.at(t, a, b, action).at(t, b, a, other);
                    } else if rng.chance(0.5) {
                        scenario = scenario.at(t, a, b, action);
                    } else {
                        scenario = scenario.at(t, b, a, action);
                    }
                }
            }
        }
        (config, scenario)
    }
}

impl Scenario {
    /// A two-peer glare scenario, fully determined by `seed`: `rounds` glare rounds, 2 s
    /// apart, the first on the very first negotiation (with a data channel on each side) and
    /// the others on the live connection; in each, both sides add a transceiver at the same
    /// instant. Each round costs exactly 3 offers and 2 answers when the pattern is minimal.
    pub fn glare(seed: u64, rounds: u32) -> (SimConfig, Scenario) {
        let mut rng = Rng::new(seed);
        let signal_latency = Duration::from_micros(1 + rng.below(30_000));
        let packet_latency = Duration::from_micros(rng.below(10_000));
        let config = SimConfig {
            peers: 2,
            seed,
            signal_latency,
            signal_jitter: signal_latency.mul_f64(rng.unit() * 0.5),
            packet_latency,
            shared_connection_ids: rng.chance(0.5),
            trickle: rng.chance(0.5),
            ..SimConfig::default()
        };
        let kind = |rng: &mut Rng| {
            if rng.chance(0.5) {
                MediaKind::Audio
            } else {
                MediaKind::Video
            }
        };
        let mut scenario = Scenario::default()
            .at(0, 0, 1, Action::CreateChannel("a".into()))
            .at(0, 1, 0, Action::CreateChannel("b".into()));
        for at in (0..u64::from(rounds)).map(|r| r * 2_000) {
            let (ka, kb) = (kind(&mut rng), kind(&mut rng));
            scenario = scenario
                .at(at, 0, 1, Action::AddTransceiver(ka, Direction::SendRecv))
                .at(at, 1, 0, Action::AddTransceiver(kb, Direction::SendRecv));
        }
        (config, scenario)
    }
}

fn random_action(rng: &mut Rng, label: &mut u32) -> Action {
    let kind = if rng.chance(0.5) {
        MediaKind::Audio
    } else {
        MediaKind::Video
    };
    let direction = match rng.below(4) {
        0 => Direction::SendRecv,
        1 => Direction::SendOnly,
        2 => Direction::RecvOnly,
        _ => Direction::Inactive,
    };
    match rng.below(11) {
        0..=2 => Action::AddTransceiver(kind, direction),
        3 => Action::AddTrack(kind),
        4..=5 => {
            *label += 1;
            Action::CreateChannel(format!("c{label}"))
        }
        6 => Action::SetDirection(rng.below(8) as usize, direction),
        7 => Action::RemoveTrack(rng.below(8) as usize),
        8 => Action::CloseChannel(rng.below(8) as usize),
        _ => Action::RestartIce,
    }
}
