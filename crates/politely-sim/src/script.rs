//! Action scripts: rounds of application calls on two peers, and the end state they lead to.
//!
//! The differential check of issue 13 runs one [`Script`] three ways and compares what each
//! pair ends with: two engines in this simulator ([`Script::run_in_sim`]), a Chromium page
//! against a native `politely join`, and two Chromium pages, both through `politely serve`
//! (`web/test/differential.test.mjs`). Chromium is the reference: its `RTCPeerConnection` is
//! the W3C implementation. [`Script::expected`] is a fourth opinion, a model of webrtc-pc's
//! `[[Direction]]`/`[[CurrentDirection]]` rules that needs no engine at all.
//!
//! A script is a list of steps, each in a round. Both peers' steps of a round happen at the
//! same instant (glare on purpose); the next round starts once both sides have settled. A
//! step's `index` is the n-th transceiver *that peer's application* created by its own
//! `addTransceiver`/`addTrack` calls, in call order, so it means the same whatever the
//! timing. [`Script::random`] draws only scripts whose end state does not depend on timing
//! (the model in this module names the races it avoids).
//!
//! ```
//! use politely_sim::Script;
//!
//! let script: Script = serde_json::from_str(r#"{"steps":[
//!   {"round":0,"peer":0,"op":"addTransceiver","kind":"audio","direction":"sendrecv"},
//!   {"round":0,"peer":1,"op":"createDataChannel","label":"c1"},
//!   {"round":1,"peer":1,"op":"addTrack","kind":"video"}]}"#)?;
//! let expected = script.expected();
//! // Peer 1 sees peer 0's audio as a transceiver the remote created, receiving only.
//! let audio = &expected.peers[1].transceivers[0];
//! assert_eq!(audio.current_direction, Some(politely_core::Direction::RecvOnly));
//! # Ok::<(), serde_json::Error>(())
//! ```

use crate::sim::{Roles, Sim, SimConfig};
use politely_core::rng::Rng;
use politely_core::{
    ApiError, ChannelId, ConnectionState, Direction, Error, Event, MediaKind, Origin,
    SignalingState, TransceiverId, TransceiverInfo,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

/// Rounds of application calls on two peers (peer 0 and peer 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Script {
    /// The seed [`Script::random`] drew it from; it also seeds the simulator's network.
    #[serde(default)]
    pub seed: u64,
    /// The polite peer. In a room it is the one that joins first (the lower id is polite).
    #[serde(default)]
    pub polite: usize,
    /// The steps, in order; a round's steps for one peer run in this order.
    pub steps: Vec<ScriptStep>,
}

/// One application call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptStep {
    /// The round it belongs to, from 0.
    pub round: u32,
    /// The peer that makes the call, 0 or 1.
    pub peer: usize,
    /// The call.
    #[serde(flatten)]
    pub op: Op,
}

/// An application call, named as in W3C webrtc-pc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Op {
    /// `addTransceiver(kind, {direction})`; a sending direction comes with a track.
    AddTransceiver {
        /// Audio or video.
        #[serde(with = "KindDef")]
        kind: MediaKind,
        /// The initial `[[Direction]]`.
        #[serde(with = "DirectionDef")]
        direction: Direction,
    },
    /// `addTrack(track)`: may reuse a transceiver that has no track and never sent.
    AddTrack {
        /// The track's kind.
        #[serde(with = "KindDef")]
        kind: MediaKind,
    },
    /// `removeTrack(sender)` of the `index`-th transceiver this peer created.
    RemoveTrack {
        /// Which of this peer's transceivers.
        index: usize,
    },
    /// `transceiver.direction = direction` on the `index`-th transceiver this peer created.
    SetDirection {
        /// Which of this peer's transceivers.
        index: usize,
        /// The new `[[Direction]]`.
        #[serde(with = "DirectionDef")]
        direction: Direction,
    },
    /// `createDataChannel(label)`.
    CreateDataChannel {
        /// The label; a script's labels are unique.
        label: String,
    },
    /// `close()` on the channel with this label, whichever side created it.
    CloseDataChannel {
        /// The label.
        label: String,
    },
    /// `restartIce()`.
    RestartIce,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "MediaKind", rename_all = "lowercase")]
enum KindDef {
    Audio,
    Video,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Direction", rename_all = "lowercase")]
enum DirectionDef {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// `Option<Direction>` as W3C writes `currentDirection`: a direction or `null`.
mod current_direction {
    use super::DirectionDef;
    use politely_core::Direction;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Wire(#[serde(with = "DirectionDef")] Direction);

    pub(super) fn serialize<S: Serializer>(d: &Option<Direction>, s: S) -> Result<S::Ok, S::Error> {
        d.map(Wire).serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Direction>, D::Error> {
        Ok(Option::<Wire>::deserialize(d)?.map(|Wire(x)| x))
    }
}

/// Who made a transceiver, as the application sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Maker {
    /// This side's application, by its `index`-th `addTransceiver`/`addTrack` call (the
    /// first, when `addTrack` reused one of its own).
    Local(usize),
    /// A remote offer, and the application never took it over with `addTrack`.
    Remote,
}

impl Serialize for Maker {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Maker::Local(index) => s.serialize_u64(*index as u64),
            Maker::Remote => s.serialize_str("remote"),
        }
    }
}

impl<'de> Deserialize<'de> for Maker {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Index(usize),
            Word(String),
        }
        match Wire::deserialize(d)? {
            Wire::Index(index) => Ok(Maker::Local(index)),
            Wire::Word(w) if w == "remote" => Ok(Maker::Remote),
            Wire::Word(w) => Err(serde::de::Error::custom(format!(
                "origin is an index or \"remote\", not {w:?}"
            ))),
        }
    }
}

/// A data channel's W3C `readyState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadyState {
    /// Not open yet.
    Connecting,
    /// Open.
    Open,
    /// Closing (a browser's state between `close()` and the stream reset).
    Closing,
    /// Closed.
    Closed,
}

/// One transceiver at the end of a script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransceiverState {
    /// Who made it.
    pub origin: Maker,
    /// Audio or video.
    #[serde(with = "KindDef")]
    pub kind: MediaKind,
    /// `[[Direction]]`: what the application asked for.
    #[serde(with = "DirectionDef")]
    pub direction: Direction,
    /// `[[CurrentDirection]]`: what was negotiated, `null` before.
    #[serde(with = "current_direction")]
    pub current_direction: Option<Direction>,
    /// The mid; not compared (the order of m-lines depends on who won each glare).
    #[serde(default)]
    pub mid: Option<String>,
}

/// One data channel at the end of a script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelState {
    /// The label.
    pub label: String,
    /// Its state.
    pub ready_state: ReadyState,
}

/// What one peer's application sees at the end of a script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndState {
    /// W3C `signalingState` (`stable`, `have-local-offer`, ...).
    pub signaling_state: String,
    /// Every transceiver.
    pub transceivers: Vec<TransceiverState>,
    /// Every data channel the application made or was given, closed ones included.
    pub channels: Vec<ChannelState>,
}

impl EndState {
    /// The end state of an engine as its application sees it: `created` lists the ids its
    /// `add_transceiver`/`add_track` calls returned, in call order (a script's indices), and
    /// `channels` every channel it made or was given, with its state.
    pub fn observe(
        signaling: SignalingState,
        transceivers: &[TransceiverInfo],
        created: &[TransceiverId],
        channels: impl IntoIterator<Item = (String, ReadyState)>,
    ) -> EndState {
        let transceivers = transceivers
            .iter()
            .map(|t| TransceiverState {
                origin: created
                    .iter()
                    .position(|id| *id == t.id)
                    .map_or(Maker::Remote, Maker::Local),
                kind: t.kind,
                direction: t.direction,
                current_direction: t.current_direction,
                mid: t.mid.clone(),
            })
            .collect();
        let mut channels: Vec<ChannelState> = channels
            .into_iter()
            .map(|(label, ready_state)| ChannelState { label, ready_state })
            .collect();
        channels.sort_by(|a, b| a.label.cmp(&b.label));
        EndState {
            signaling_state: signaling.to_string(),
            transceivers,
            channels,
        }
    }

    /// The state as compared: mids dropped, transceivers sorted (those of local origin by
    /// index, the remote-made ones as a multiset, since nothing stable tells them apart).
    pub fn comparable(&self) -> EndState {
        let mut transceivers: Vec<TransceiverState> = self
            .transceivers
            .iter()
            .map(|t| TransceiverState {
                mid: None,
                ..t.clone()
            })
            .collect();
        transceivers.sort_by_key(|t| (t.origin, t.kind, t.direction, t.current_direction));
        let mut channels = self.channels.clone();
        channels.sort_by(|a, b| a.label.cmp(&b.label));
        EndState {
            signaling_state: self.signaling_state.clone(),
            transceivers,
            channels,
        }
    }
}

/// What running a script led to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// Peer 0's and peer 1's end states.
    pub peers: Vec<EndState>,
    /// Indices into [`Script::steps`] of the calls that failed.
    pub failed_steps: Vec<usize>,
    /// Rounds after which the pair did not settle in time (the next round started anyway).
    pub unsettled_rounds: Vec<u32>,
    /// What went wrong on the way (errors surfaced, watchdog firings, refused calls), for the
    /// report; not compared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Outcome {
    /// How `other` differs from `self`, one line per difference, mids and notes aside.
    pub fn differences(&self, other: &Outcome) -> Vec<String> {
        let mut out = Vec::new();
        if self.failed_steps != other.failed_steps {
            out.push(format!(
                "failed steps: {:?} vs {:?}",
                self.failed_steps, other.failed_steps
            ));
        }
        if self.unsettled_rounds != other.unsettled_rounds {
            out.push(format!(
                "unsettled rounds: {:?} vs {:?}",
                self.unsettled_rounds, other.unsettled_rounds
            ));
        }
        for (peer, (a, b)) in self.peers.iter().zip(&other.peers).enumerate() {
            let (a, b) = (a.comparable(), b.comparable());
            if a.signaling_state != b.signaling_state {
                out.push(format!(
                    "peer {peer}: signaling state {} vs {}",
                    a.signaling_state, b.signaling_state
                ));
            }
            let line = |t: &TransceiverState| serde_json::to_string(t).unwrap_or_default();
            let (ta, tb): (Vec<String>, Vec<String>) = (
                a.transceivers.iter().map(line).collect(),
                b.transceivers.iter().map(line).collect(),
            );
            for t in multiset_minus(&ta, &tb) {
                out.push(format!("peer {peer}: only in the first: {t}"));
            }
            for t in multiset_minus(&tb, &ta) {
                out.push(format!("peer {peer}: only in the second: {t}"));
            }
            if a.channels != b.channels {
                out.push(format!(
                    "peer {peer}: channels {:?} vs {:?}",
                    a.channels, b.channels
                ));
            }
        }
        out
    }
}

fn multiset_minus<'a>(a: &'a [String], b: &[String]) -> Vec<&'a String> {
    let mut rest: Vec<&String> = b.iter().collect();
    a.iter()
        .filter(|x| match rest.iter().position(|y| y == x) {
            Some(i) => {
                rest.swap_remove(i);
                false
            }
            None => true,
        })
        .collect()
}

impl Script {
    /// The number of rounds: one past the last step's.
    pub fn rounds(&self) -> u32 {
        self.steps.iter().map(|s| s.round + 1).max().unwrap_or(0)
    }

    /// The steps of `peer` in `round`, with their indices in [`Script::steps`].
    pub fn batch(&self, round: u32, peer: usize) -> impl Iterator<Item = (usize, &Op)> {
        self.steps
            .iter()
            .enumerate()
            .filter(move |(_, s)| s.round == round && s.peer == peer)
            .map(|(i, s)| (i, &s.op))
    }

    /// What W3C webrtc-pc makes of the script once every round has settled.
    /// Where the spec leaves the outcome to timing (an `addTrack` that could reuse either of
    /// two transceivers), the model takes the first it knows of; [`Script::random`] never
    /// draws such a step.
    pub fn expected(&self) -> Outcome {
        let mut model = Model::default();
        let mut failed = Vec::new();
        for round in 0..self.rounds() {
            for peer in 0..2 {
                for (i, op) in self.batch(round, peer) {
                    if model.apply(peer, op).is_err() {
                        failed.push(i);
                    }
                }
            }
            model.settle();
        }
        Outcome {
            peers: vec![model.end_state(0), model.end_state(1)],
            failed_steps: failed,
            unsettled_rounds: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A random script of `rounds` rounds, fully determined by `seed`, whose end state does
    /// not depend on timing under W3C rules. The first round creates a data channel, so the
    /// pair connects whatever else happens.
    pub fn random(seed: u64, rounds: u32) -> Script {
        let mut rng = Rng::new(seed);
        let polite = rng.below(2) as usize;
        let mut model = Model::default();
        let mut steps = Vec::new();
        let mut labels = 0u32;
        for round in 0..rounds {
            let first = rng.below(2) as usize;
            // Channels are closed in rounds of their own (see `Model`): the opener closes
            // one, the other side perhaps another.
            if round > 0 && rng.chance(0.15) && !model.closable().is_empty() {
                for (peer, chance) in [(first, 1.0), (1 - first, 0.5)] {
                    if rng.chance(chance)
                        && let Some(op) = draw_close(&mut rng, &model)
                    {
                        model
                            .apply(peer, &op)
                            .expect("invariant: the channel exists");
                        steps.push(ScriptStep { round, peer, op });
                    }
                }
                model.settle();
                continue;
            }
            let mut batches: [Batch; 2] = Default::default();
            for peer in [first, 1 - first] {
                let mut count = match rng.below(10) {
                    0..=1 => 0,
                    2..=6 => 1,
                    7..=8 => 2,
                    _ => 3,
                };
                // The first round: `first` opens a channel, so the pair connects. Chromium
                // cannot take a glare on the first negotiation in which the polite side's
                // rolled-back offer had a data section and the other's offer had not the same
                // (its answer then fails to start SCTP, or its next offer's data section is
                // rejected round after round), so the other side adds no channel, and
                // nothing at all when the opener is the polite one.
                let first_round = round == 0;
                if first_round && peer != first && first == polite {
                    count = 0;
                }
                let allowed = Allowed {
                    channels: !first_round || peer == first,
                    restart: !first_round,
                };
                let mut ops = Vec::new();
                let mut add = |op: Op, batch: &mut Batch, model: &mut Model| {
                    batch.note(model, peer, &op);
                    model
                        .apply(peer, &op)
                        .expect("invariant: draw only returns calls the model accepts");
                    ops.push(op);
                };
                if first_round && peer == first {
                    labels += 1;
                    let label = format!("c{labels}");
                    add(
                        Op::CreateDataChannel { label },
                        &mut batches[peer],
                        &mut model,
                    );
                }
                for _ in 0..count {
                    // A few tries: some draws do not fit the state (nothing to remove, a kind
                    // the other side holds this round).
                    for _ in 0..8 {
                        let [a, b] = &mut batches;
                        let (mine, other) = if peer == 0 { (a, &*b) } else { (b, &*a) };
                        let drawn = draw(&mut rng, &model, peer, other, mine, allowed, &mut labels);
                        if let Some(op) = drawn {
                            add(op, mine, &mut model);
                            break;
                        }
                    }
                }
                for op in ops {
                    steps.push(ScriptStep { round, peer, op });
                }
            }
            model.settle();
        }
        // Peer 0's steps first within a round, as a reader expects.
        steps.sort_by_key(|s| (s.round, s.peer));
        Script {
            seed,
            polite,
            steps,
        }
    }
}

impl fmt::Display for Script {
    /// JSON with one step per line, easy to read and to diff.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{{\"seed\":{},\"polite\":{},\"steps\":[",
            self.seed, self.polite
        )?;
        for (i, step) in self.steps.iter().enumerate() {
            let comma = if i + 1 < self.steps.len() { "," } else { "" };
            let json = serde_json::to_string(step).map_err(|_| fmt::Error)?;
            writeln!(f, "  {json}{comma}")?;
        }
        write!(f, "]}}")
    }
}

/// What one peer did so far in the round being drawn, for the rules that keep a round free
/// of races.
#[derive(Default)]
struct Batch {
    /// Kinds of every transceiver call (add, addTrack, setDirection, removeTrack).
    kinds: BTreeSet<MediaKind>,
    /// Kinds of `addTrack` calls.
    add_track_kinds: BTreeSet<MediaKind>,
    /// Kinds of new transceivers whose kind had no m-section when the round began.
    fresh: BTreeSet<MediaKind>,
    restarted: bool,
}

impl Batch {
    /// Records `op`, before the model applies it.
    fn note(&mut self, model: &Model, peer: usize, op: &Op) {
        match op {
            Op::AddTransceiver { kind, .. } => {
                self.kinds.insert(*kind);
                if model.is_fresh(*kind) {
                    self.fresh.insert(*kind);
                }
            }
            Op::AddTrack { kind } => {
                self.kinds.insert(*kind);
                self.add_track_kinds.insert(*kind);
                if model.is_fresh(*kind)
                    && matches!(model.add_track_target(peer, *kind), Reuse::New)
                {
                    self.fresh.insert(*kind);
                }
            }
            Op::RemoveTrack { index } | Op::SetDirection { index, .. } => {
                self.kinds
                    .insert(model.sections[model.created[peer][*index]].kind);
            }
            Op::CreateDataChannel { .. } | Op::CloseDataChannel { .. } => {}
            Op::RestartIce => self.restarted = true,
        }
    }
}

/// At most this many m-sections for media, so a script stays quick in a browser.
const MAX_SECTIONS: usize = 14;

/// Calls the first round does not allow everywhere.
#[derive(Clone, Copy)]
struct Allowed {
    /// `createDataChannel`.
    channels: bool,
    /// `restartIce` (before the first negotiation it has nothing to restart).
    restart: bool,
}

/// Draws one call for `peer` that keeps the round's end state independent of timing, or
/// `None` if the draw does not fit.
fn draw(
    rng: &mut Rng,
    model: &Model,
    peer: usize,
    other: &Batch,
    mine: &Batch,
    allowed: Allowed,
    labels: &mut u32,
) -> Option<Op> {
    let kind = if rng.chance(0.5) {
        MediaKind::Audio
    } else {
        MediaKind::Video
    };
    let direction = random_direction(rng);
    // A peer that adds a track of kind K holds K for the round: the other side neither adds
    // nor changes a transceiver of kind K (see `Model`).
    let held_by_other = |k: MediaKind| other.add_track_kinds.contains(&k);
    // The first m-sections of a kind come from one side per round (see `Model`).
    let new_section_fits = |k: MediaKind| {
        model.sections.len() < MAX_SECTIONS && (!model.is_fresh(k) || other.fresh.is_empty())
    };
    match rng.below(100) {
        0..=24 => (new_section_fits(kind) && !held_by_other(kind))
            .then_some(Op::AddTransceiver { kind, direction }),
        25..=39 => {
            let fits = !other.kinds.contains(&kind)
                && match model.add_track_target(peer, kind) {
                    Reuse::New => new_section_fits(kind),
                    Reuse::Existing(_) => true,
                    Reuse::Uncertain(_) => false,
                };
            fits.then_some(Op::AddTrack { kind })
        }
        40..=64 => {
            let index = pick(rng, &model.settled_indices(peer, |_, _| true))?;
            let section = &model.sections[model.created[peer][index]];
            let current = section.sides[peer].as_ref()?.direction;
            // Another direction than the current one, so that the call changes something.
            let direction = if direction == current {
                random_direction(rng)
            } else {
                direction
            };
            (!held_by_other(section.kind)).then_some(Op::SetDirection { index, direction })
        }
        65..=74 => {
            let index = pick(rng, &model.settled_indices(peer, |_, side| side.has_track))?;
            let kind = model.sections[model.created[peer][index]].kind;
            (!held_by_other(kind)).then_some(Op::RemoveTrack { index })
        }
        75..=82 if allowed.channels && model.channels.len() < 8 => {
            *labels += 1;
            Some(Op::CreateDataChannel {
                label: format!("c{labels}"),
            })
        }
        83.. if allowed.restart && !mine.restarted => Some(Op::RestartIce),
        _ => None,
    }
}

/// Draws a `close()` of a channel that was open when the round began and that no one closed
/// yet, or `None` if there is none.
fn draw_close(rng: &mut Rng, model: &Model) -> Option<Op> {
    let open = model.closable();
    let channel = open.get(rng.below(open.len().max(1) as u64) as usize)?;
    Some(Op::CloseDataChannel {
        label: channel.label.clone(),
    })
}

fn random_direction(rng: &mut Rng) -> Direction {
    match rng.below(4) {
        0 => Direction::SendRecv,
        1 => Direction::SendOnly,
        2 => Direction::RecvOnly,
        _ => Direction::Inactive,
    }
}

fn pick(rng: &mut Rng, from: &[usize]) -> Option<usize> {
    (!from.is_empty()).then(|| from[rng.below(from.len() as u64) as usize])
}

/// W3C webrtc-pc's transceiver and channel rules for two peers whose rounds settle, as a
/// model: it predicts the end state and tells the generator which calls are free of races.
///
/// After a round settles, each side's `[[CurrentDirection]]` is its `[[Direction]]`
/// intersected with the reverse of the other side's (JSEP 5.3.1; negotiation-needed stays
/// set until it is). A transceiver created by a remote offer starts `recvonly`.
///
/// The races a script must avoid, and how [`Script::random`] avoids them:
/// - `addTrack(K)` reuses the first transceiver of kind K that has no track and was never
///   used to send (`[[CurrentDirection]]` never `sendrecv`/`sendonly`), and a remote offer's
///   new m-section is matched to a transceiver `addTrack` created and not yet negotiated. If
///   the other side adds a K transceiver in the same round, either may happen first; if it
///   changes the direction of a K transceiver, the candidate's "never sent" may flip before
///   the call. So a peer that calls `addTrack(K)` holds K for the round: the other side
///   makes no call on a K transceiver.
/// - "Never sent" depends on every direction negotiated on the way, not only on settled
///   ones: within a round one side may already use its new direction while the other still
///   answers with its old one. The model tracks it as never / maybe / yes, and `addTrack(K)`
///   is drawn only when its candidates are all certain and at most one is left (which one is
///   first among several depends on when remote offers created them).
/// - A transceiver gets at most one call per round, and only if it existed when the round
///   began; a channel is closed only if it was open when the round began.
///
/// One more rule keeps clear of a browser limitation rather than a race (NEGOTIATION.md
/// scenario 50): a kind's first m-sections bring its RTP header extensions, and Chromium
/// keeps the extension ids of an offer it rolled back; if the other side brought the other
/// kind's first m-section in the same glare, the ids collide in the BUNDLE group and
/// Chromium refuses its own next offer ("A BUNDLE group contains a codec collision for header
/// extension id=1"). So in a round, kinds that have no m-section yet are introduced by one
/// side only. And a channel closed while the connection renegotiates may stay `closing` for
/// good in Chromium (seen in about 1 script in 25 before this rule), so channels are closed
/// in rounds that do nothing else.
#[derive(Debug, Default)]
struct Model {
    sections: Vec<Section>,
    /// Per peer, the section of each transceiver its application created (a script's
    /// indices); `addTrack` that reuses a transceiver adds it again.
    created: [Vec<usize>; 2],
    channels: Vec<ChannelModel>,
}

/// One m-section: a transceiver at each end.
#[derive(Debug)]
struct Section {
    kind: MediaKind,
    /// Each peer's transceiver; `None` until the section is negotiated there.
    sides: [Option<Side>; 2],
}

#[derive(Debug, Clone)]
struct Side {
    direction: Direction,
    has_track: bool,
    /// `[[Direction]]` when the round began; `None` for a transceiver made in this round.
    at_round_start: Option<Direction>,
    /// Whether the application called on it in this round.
    touched: bool,
    sent: Sent,
}

/// Whether a transceiver was ever used to send (W3C addTrack's reuse condition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Sent {
    Never,
    /// Depends on how the round's offers and answers interleaved.
    Maybe,
    Yes,
}

#[derive(Debug)]
struct ChannelModel {
    label: String,
    closed: bool,
    /// Open at both ends since a round ended.
    settled: bool,
}

/// What `addTrack` would do.
enum Reuse {
    /// Create a transceiver.
    New,
    /// Reuse this section's transceiver.
    Existing(usize),
    /// Depends on timing; the model's guess is this section (the first candidate it knows).
    Uncertain(usize),
}

impl Model {
    fn apply(&mut self, peer: usize, op: &Op) -> Result<(), ()> {
        match op {
            Op::AddTransceiver { kind, direction } => {
                self.add_section(peer, *kind, *direction, direction.sends());
            }
            Op::AddTrack { kind } => match self.add_track_target(peer, *kind) {
                Reuse::New => self.add_section(peer, *kind, Direction::SendRecv, true),
                Reuse::Existing(s) | Reuse::Uncertain(s) => {
                    let side = self.sections[s].sides[peer]
                        .as_mut()
                        .expect("invariant: a reuse candidate exists at this peer");
                    side.has_track = true;
                    side.touched = true;
                    // webrtc-pc addTrack: recvonly becomes sendrecv, inactive sendonly.
                    side.direction = match side.direction {
                        Direction::RecvOnly => Direction::SendRecv,
                        Direction::Inactive => Direction::SendOnly,
                        d => d,
                    };
                    self.created[peer].push(s);
                }
            },
            Op::RemoveTrack { index } => {
                let side = self.side_mut(peer, *index)?;
                side.touched = true;
                // webrtc-pc removeTrack: nothing if there is no track; else the send half goes.
                if side.has_track {
                    side.has_track = false;
                    side.direction = match side.direction {
                        Direction::SendRecv => Direction::RecvOnly,
                        Direction::SendOnly => Direction::Inactive,
                        d => d,
                    };
                }
            }
            Op::SetDirection { index, direction } => {
                let side = self.side_mut(peer, *index)?;
                side.touched = true;
                side.direction = *direction;
            }
            Op::CreateDataChannel { label } => self.channels.push(ChannelModel {
                label: label.clone(),
                closed: false,
                settled: false,
            }),
            Op::CloseDataChannel { label } => {
                let channel = self
                    .channels
                    .iter_mut()
                    .find(|c| &c.label == label)
                    .ok_or(())?;
                channel.closed = true;
            }
            Op::RestartIce => {}
        }
        Ok(())
    }
}

impl Model {
    fn add_section(&mut self, peer: usize, kind: MediaKind, direction: Direction, track: bool) {
        let mut sides = [None, None];
        sides[peer] = Some(Side {
            direction,
            has_track: track,
            at_round_start: None,
            touched: true,
            sent: Sent::Never,
        });
        self.sections.push(Section { kind, sides });
        self.created[peer].push(self.sections.len() - 1);
    }

    /// Channels open since a round ended and not closed since.
    fn closable(&self) -> Vec<&ChannelModel> {
        self.channels
            .iter()
            .filter(|c| !c.closed && c.settled)
            .collect()
    }

    /// Whether no m-section of `kind` existed when the round began.
    fn is_fresh(&self, kind: MediaKind) -> bool {
        !self.sections.iter().any(|s| {
            s.kind == kind
                && s.sides
                    .iter()
                    .flatten()
                    .any(|side| side.at_round_start.is_some())
        })
    }

    fn side_mut(&mut self, peer: usize, index: usize) -> Result<&mut Side, ()> {
        let section = *self.created[peer].get(index).ok_or(())?;
        self.sections[section].sides[peer].as_mut().ok_or(())
    }

    /// What `addTrack(kind)` at `peer` reuses: the transceivers of that kind with no track
    /// that were never used to send.
    fn add_track_target(&self, peer: usize, kind: MediaKind) -> Reuse {
        let candidates: Vec<(usize, &Side)> = self
            .sections
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind == kind)
            .filter_map(|(i, s)| Some((i, s.sides[peer].as_ref()?)))
            .filter(|(_, side)| !side.has_track && side.sent != Sent::Yes)
            .collect();
        match candidates.as_slice() {
            [] => Reuse::New,
            [(i, side)] if side.sent == Sent::Never && !side.touched => Reuse::Existing(*i),
            [(i, _), ..] => Reuse::Uncertain(*i),
        }
    }

    /// `peer`'s script indices of transceivers that existed when the round began, that no
    /// call touched in this round and that match `filter`; one index per transceiver.
    fn settled_indices(&self, peer: usize, filter: impl Fn(&Section, &Side) -> bool) -> Vec<usize> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (index, &s) in self.created[peer].iter().enumerate() {
            let section = &self.sections[s];
            if let Some(side) = &section.sides[peer]
                && side.at_round_start.is_some()
                && !side.touched
                && filter(section, side)
                && seen.insert(s)
            {
                out.push(index);
            }
        }
        out
    }

    /// The round settles: every section is negotiated at both ends (a transceiver created by
    /// a remote offer starts `recvonly`), and what was sent on the way is recorded.
    fn settle(&mut self) {
        for section in &mut self.sections {
            for side in &mut section.sides {
                side.get_or_insert(Side {
                    direction: Direction::RecvOnly,
                    has_track: false,
                    at_round_start: None,
                    touched: false,
                    sent: Sent::Never,
                });
            }
            let [Some(a), Some(b)] = &mut section.sides else {
                unreachable!("both sides were just filled in");
            };
            (a.sent, b.sent) = (sent_after_round(a, b), sent_after_round(b, a));
            for side in section.sides.iter_mut().flatten() {
                side.at_round_start = Some(side.direction);
                side.touched = false;
            }
        }
        for channel in &mut self.channels {
            channel.settled = true;
        }
    }

    fn end_state(&self, peer: usize) -> EndState {
        let transceivers = self
            .sections
            .iter()
            .enumerate()
            .filter_map(|(i, section)| {
                let me = section.sides[peer].as_ref()?;
                let them = section.sides[1 - peer].as_ref()?;
                Some(TransceiverState {
                    origin: self.created[peer]
                        .iter()
                        .position(|&s| s == i)
                        .map_or(Maker::Remote, Maker::Local),
                    kind: section.kind,
                    direction: me.direction,
                    current_direction: Some(negotiated(me.direction, them.direction)),
                    mid: None,
                })
            })
            .collect();
        let mut channels: Vec<ChannelState> = self
            .channels
            .iter()
            .map(|c| ChannelState {
                label: c.label.clone(),
                ready_state: if c.closed {
                    ReadyState::Closed
                } else {
                    ReadyState::Open
                },
            })
            .collect();
        channels.sort_by(|a, b| a.label.cmp(&b.label));
        EndState {
            signaling_state: SignalingState::Stable.to_string(),
            transceivers,
            channels,
        }
    }
}

/// `me`'s "ever sent" once a round settled. Each side's direction took two values in the
/// round (at its start and at its end), and an offer or answer may have paired either of
/// mine with either of theirs, except both old ones, which the previous round settled.
fn sent_after_round(me: &Side, them: &Side) -> Sent {
    if negotiated(me.direction, them.direction).sends() {
        return Sent::Yes;
    }
    let transient = [
        them.at_round_start.map(|t| (me.direction, t)),
        me.at_round_start.map(|m| (m, them.direction)),
    ];
    if me.sent == Sent::Never
        && transient
            .into_iter()
            .flatten()
            .any(|(m, t)| negotiated(m, t).sends())
    {
        Sent::Maybe
    } else {
        me.sent
    }
}

/// `[[CurrentDirection]]` of a side whose direction is `mine` when the other side's is
/// `theirs`: mine intersected with the reverse of theirs (JSEP 5.3.1).
pub fn negotiated(mine: Direction, theirs: Direction) -> Direction {
    let receives = |d: Direction| matches!(d, Direction::SendRecv | Direction::RecvOnly);
    match (
        mine.sends() && receives(theirs),
        receives(mine) && theirs.sends(),
    ) {
        (true, true) => Direction::SendRecv,
        (true, false) => Direction::SendOnly,
        (false, true) => Direction::RecvOnly,
        (false, false) => Direction::Inactive,
    }
}

/// Virtual time a round may take to settle; long enough for the watchdog to recover twice.
const ROUND_LIMIT: Duration = Duration::from_secs(30);

impl Script {
    /// Runs the script with two engines in the simulator and returns what each application
    /// sees at the end. The script's seed draws the network's latency and, per round, which
    /// peer acts first and how much later the other does (from the same instant to after
    /// the first offer arrived), so a script whose end state depends on timing shows it.
    pub fn run_in_sim(&self) -> Outcome {
        let mut rng = Rng::new(self.seed ^ 0x5C21_7000_0000_0001);
        let signal_latency = Duration::from_micros(500 + rng.below(20_000));
        let config = SimConfig {
            peers: 2,
            seed: self.seed,
            signal_latency,
            signal_jitter: signal_latency.mul_f64(rng.unit() * 0.5),
            packet_latency: Duration::from_micros(rng.below(5_000)),
            shared_connection_ids: rng.chance(0.5),
            roles: if self.polite == 0 {
                Roles::ById
            } else {
                Roles::ByIdReversed
            },
            ..SimConfig::default()
        };
        let mut sim = Sim::new(config);
        let mut apps = [App::default(), App::default()];
        let mut failed = Vec::new();
        let mut unsettled_rounds = Vec::new();
        let mut notes = Vec::new();
        for round in 0..self.rounds() {
            let first = rng.below(2) as usize;
            let skew = signal_latency.mul_f64(rng.unit() * 2.0);
            for peer in [first, 1 - first] {
                if peer != first {
                    sim.run_for(skew);
                }
                // A batch runs back to back, then the engine is drained once: as calls an
                // application makes in one task, whose negotiation coalesces into one offer.
                for (i, op) in self.batch(round, peer) {
                    if let Err(e) = apps[peer].apply(&mut sim, peer, op) {
                        failed.push(i);
                        notes.push(format!("step {i} (peer {peer}, {op:?}) failed: {e}"));
                    }
                }
                sim.flush(peer, 1 - peer);
            }
            let deadline = sim.elapsed() + ROUND_LIMIT;
            while let Some(why) = unsettled(&mut sim, &apps) {
                if sim.elapsed() >= deadline {
                    unsettled_rounds.push(round);
                    notes.push(format!("not settled after round {round}: {why}"));
                    break;
                }
                sim.run_for(Duration::from_millis(1));
            }
        }
        for peer in 0..2 {
            for (at, event) in sim.events(peer, 1 - peer) {
                if matches!(event, Event::Error(_) | Event::Watchdog { .. }) {
                    notes.push(format!("peer {peer} at {at:?}: {event:?}"));
                }
            }
        }
        Outcome {
            peers: (0..2).map(|p| apps[p].end_state(&mut sim, p)).collect(),
            failed_steps: failed,
            unsettled_rounds,
            notes,
        }
    }
}

/// What one simulated application made: its transceivers in call order and its channels.
#[derive(Default)]
struct App {
    created: Vec<TransceiverId>,
    channels: BTreeMap<String, ChannelId>,
}

impl App {
    fn apply(&mut self, sim: &mut Sim, peer: usize, op: &Op) -> Result<(), Error> {
        let index = |i: usize| {
            self.created
                .get(i)
                .copied()
                .ok_or_else(|| ApiError::InvalidArgument(format!("no transceiver {i}")))
        };
        match op {
            Op::AddTransceiver { kind, direction } => {
                let id = sim
                    .engine(peer, 1 - peer)
                    .add_transceiver(*kind, *direction)?;
                self.created.push(id);
            }
            Op::AddTrack { kind } => {
                let id = sim.engine(peer, 1 - peer).add_track(*kind)?;
                self.created.push(id);
            }
            Op::RemoveTrack { index: i } => {
                let id = index(*i)?;
                sim.engine(peer, 1 - peer).remove_track(id)?;
            }
            Op::SetDirection {
                index: i,
                direction,
            } => {
                let id = index(*i)?;
                sim.engine(peer, 1 - peer).set_direction(id, *direction)?;
            }
            Op::CreateDataChannel { label } => {
                let id = sim
                    .engine(peer, 1 - peer)
                    .create_data_channel(label, Default::default())?;
                self.channels.insert(label.clone(), id);
            }
            Op::CloseDataChannel { label } => {
                let id = self
                    .known_channels(sim, peer)
                    .remove(label)
                    .ok_or_else(|| {
                        ApiError::InvalidArgument(format!("no channel labelled {label}"))
                    })?;
                sim.engine(peer, 1 - peer).close_data_channel(id)?;
            }
            Op::RestartIce => sim.engine(peer, 1 - peer).restart_ice()?,
        }
        Ok(())
    }

    /// Every channel this application made or was given (a remote channel by its latest
    /// open event: a new connection announces it again under a new id), by label.
    fn known_channels(&self, sim: &Sim, peer: usize) -> BTreeMap<String, ChannelId> {
        let mut known = self.channels.clone();
        for (_, event) in sim.events(peer, 1 - peer) {
            if let Event::ChannelOpen {
                id,
                label,
                origin: Origin::Remote,
            } = event
            {
                known.insert(label.clone(), *id);
            }
        }
        known
    }

    /// Every known channel's state: open or connecting while the engine lists it, closed
    /// once it is gone.
    fn channel_states(&self, sim: &mut Sim, peer: usize) -> Vec<(String, ReadyState)> {
        let known = self.known_channels(sim, peer);
        let listed = sim.engine(peer, 1 - peer).channels();
        known
            .into_iter()
            .map(|(label, id)| {
                let state = match listed.iter().find(|c| c.id == id) {
                    Some(c) if c.open => ReadyState::Open,
                    Some(_) => ReadyState::Connecting,
                    None => ReadyState::Closed,
                };
                (label, state)
            })
            .collect()
    }

    fn end_state(&self, sim: &mut Sim, peer: usize) -> EndState {
        let channels = self.channel_states(sim, peer);
        let engine = sim.engine(peer, 1 - peer);
        EndState::observe(
            engine.signaling_state(),
            &engine.transceivers(),
            &self.created,
            channels,
        )
    }
}

/// Why the pair has not settled yet, or `None` once it has: each engine stable with nothing
/// pending or left to negotiate and connected, every transceiver negotiated with the same
/// mids at both ends, and every channel either open at both ends or closed at both.
fn unsettled(sim: &mut Sim, apps: &[App; 2]) -> Option<String> {
    let mut mids = Vec::new();
    let mut channels = Vec::new();
    for (peer, app) in apps.iter().enumerate() {
        let engine = sim.engine(peer, 1 - peer);
        if engine.signaling_state() != SignalingState::Stable || engine.has_pending_description() {
            return Some(format!("peer {peer} is {}", engine.signaling_state()));
        }
        if engine.wants_to_negotiate() {
            return Some(format!("peer {peer} still wants to negotiate"));
        }
        if engine.connection_state() != ConnectionState::Connected {
            return Some(format!("peer {peer} is {:?}", engine.connection_state()));
        }
        let transceivers = engine.transceivers();
        if let Some(t) = transceivers
            .iter()
            .find(|t| t.mid.is_none() || t.current_direction.is_none())
        {
            return Some(format!("peer {peer}'s {} is not negotiated", t.id));
        }
        let mut m: Vec<String> = transceivers.into_iter().filter_map(|t| t.mid).collect();
        m.sort();
        mids.push(m);
        let states = app.channel_states(sim, peer);
        if let Some((label, state)) = states
            .iter()
            .find(|(_, s)| !matches!(s, ReadyState::Open | ReadyState::Closed))
        {
            return Some(format!("peer {peer}'s channel {label} is {state:?}"));
        }
        channels.push(states);
    }
    if mids[0] != mids[1] {
        return Some(format!("mids differ: {:?} vs {:?}", mids[0], mids[1]));
    }
    (channels[0] != channels[1])
        .then(|| format!("channels differ: {:?} vs {:?}", channels[0], channels[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(json: &str) -> Script {
        serde_json::from_str(json).expect("a valid script")
    }

    fn seen(state: &EndState) -> Vec<(Maker, MediaKind, Direction, Option<Direction>)> {
        state
            .comparable()
            .transceivers
            .into_iter()
            .map(|t| (t.origin, t.kind, t.direction, t.current_direction))
            .collect()
    }

    #[test]
    fn a_step_reads_and_prints_as_the_browser_tests_write_it() {
        let json = r#"{"round":1,"peer":1,"op":"setDirection","index":0,"direction":"recvonly"}"#;
        let step: ScriptStep = serde_json::from_str(json).unwrap();
        assert_eq!(
            step.op,
            Op::SetDirection {
                index: 0,
                direction: Direction::RecvOnly
            }
        );
        assert_eq!(serde_json::to_string(&step).unwrap(), json);
        let restart = r#"{"round":3,"peer":0,"op":"restartIce"}"#;
        let step: ScriptStep = serde_json::from_str(restart).unwrap();
        assert_eq!(step.op, Op::RestartIce);
        assert_eq!(serde_json::to_string(&step).unwrap(), restart);
        // A kind or direction W3C does not name is refused, not guessed.
        for bad in [
            r#"{"round":0,"peer":0,"op":"addTrack","kind":"Audio"}"#,
            r#"{"round":0,"peer":0,"op":"addTransceiver","kind":"audio","direction":"send"}"#,
            r#"{"round":0,"peer":0,"op":"stop"}"#,
        ] {
            assert!(serde_json::from_str::<ScriptStep>(bad).is_err(), "{bad}");
        }
        // Defaults: seed 0, peer 0 polite.
        let s = script(r#"{"steps":[]}"#);
        assert_eq!((s.seed, s.polite, s.rounds()), (0, 0, 0));
    }

    #[test]
    fn an_origin_is_an_index_or_remote() {
        let t: TransceiverState = serde_json::from_str(
            r#"{"origin":"remote","kind":"video","direction":"recvonly","currentDirection":null}"#,
        )
        .unwrap();
        assert_eq!(
            (t.origin, t.current_direction, t.mid),
            (Maker::Remote, None, None)
        );
        let t: TransceiverState = serde_json::from_str(
            r#"{"origin":2,"kind":"audio","direction":"sendrecv","currentDirection":"sendonly","mid":"1"}"#,
        )
        .unwrap();
        assert_eq!(t.origin, Maker::Local(2));
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"origin":2,"kind":"audio","direction":"sendrecv","currentDirection":"sendonly","mid":"1"}"#
        );
        let bad =
            r#"{"origin":"local","kind":"audio","direction":"sendrecv","currentDirection":null}"#;
        assert!(serde_json::from_str::<TransceiverState>(bad).is_err());
    }

    /// webrtc-pc, worked by hand: a remote-created transceiver starts recvonly and addTrack
    /// takes it over; one that has sent is never reused after removeTrack.
    #[test]
    fn the_model_follows_webrtc_pc() {
        let outcome = script(
            r#"{"steps":[
            {"round":0,"peer":0,"op":"addTransceiver","kind":"audio","direction":"sendrecv"},
            {"round":0,"peer":0,"op":"createDataChannel","label":"c1"},
            {"round":1,"peer":1,"op":"addTrack","kind":"audio"},
            {"round":2,"peer":0,"op":"setDirection","index":0,"direction":"recvonly"},
            {"round":3,"peer":1,"op":"removeTrack","index":0},
            {"round":4,"peer":1,"op":"addTrack","kind":"audio"},
            {"round":4,"peer":0,"op":"closeDataChannel","label":"c1"},
            {"round":4,"peer":0,"op":"setDirection","index":7,"direction":"recvonly"}]}"#,
        )
        .expected();
        use Direction::*;
        use MediaKind::Audio;
        assert_eq!(
            seen(&outcome.peers[0]),
            [
                (Maker::Local(0), Audio, RecvOnly, Some(Inactive)),
                (Maker::Remote, Audio, RecvOnly, Some(RecvOnly)),
            ]
        );
        assert_eq!(
            seen(&outcome.peers[1]),
            [
                (Maker::Local(0), Audio, RecvOnly, Some(Inactive)),
                (Maker::Local(1), Audio, SendRecv, Some(SendOnly)),
            ]
        );
        for peer in &outcome.peers {
            assert_eq!(peer.signaling_state, "stable");
            assert_eq!(
                peer.channels,
                [ChannelState {
                    label: "c1".into(),
                    ready_state: ReadyState::Closed
                }]
            );
        }
        // There is no transceiver 7.
        assert_eq!(outcome.failed_steps, [7]);
    }

    #[test]
    fn negotiated_is_mine_intersected_with_the_reverse_of_theirs() {
        use Direction::*;
        let all = [SendRecv, SendOnly, RecvOnly, Inactive];
        for mine in all {
            for theirs in all {
                let d = negotiated(mine, theirs);
                assert_eq!(negotiated(theirs, mine), d.reverse(), "{mine} {theirs}");
                let receives = |x: Direction| matches!(x, SendRecv | RecvOnly);
                assert_eq!(d.sends(), mine.sends() && receives(theirs));
                assert_eq!(receives(d), receives(mine) && theirs.sends());
            }
        }
        assert_eq!(negotiated(SendRecv, RecvOnly), SendOnly);
        assert_eq!(negotiated(SendOnly, SendOnly), Inactive);
        assert_eq!(negotiated(RecvOnly, SendRecv), RecvOnly);
    }

    /// The rules `Script::random` promises, checked on the scripts themselves.
    #[test]
    fn random_scripts_repeat_and_keep_clear_of_races() {
        for seed in 0..300 {
            let s = Script::random(seed, 10);
            assert_eq!(s, Script::random(seed, 10), "seed {seed}");
            assert!(s.polite < 2);
            // The first round opens a channel.
            assert!(
                s.batch(0, 0)
                    .chain(s.batch(0, 1))
                    .any(|(_, op)| matches!(op, Op::CreateDataChannel { .. })),
                "seed {seed}: {s}"
            );
            let mut kinds: [Vec<MediaKind>; 2] = Default::default();
            let mut labels = BTreeMap::new();
            let mut closed = BTreeSet::new();
            let mut negotiated_kinds = BTreeSet::new();
            for round in 0..s.rounds() {
                let mut touched: [BTreeSet<MediaKind>; 2] = Default::default();
                let mut tracks: [BTreeSet<MediaKind>; 2] = Default::default();
                let mut fresh: [BTreeSet<MediaKind>; 2] = Default::default();
                let made_before = [kinds[0].len(), kinds[1].len()];
                for peer in 0..2 {
                    let mut used = BTreeSet::new();
                    for (_, op) in s.batch(round, peer) {
                        match op {
                            Op::AddTransceiver { kind, .. } | Op::AddTrack { kind } => {
                                touched[peer].insert(*kind);
                                if matches!(op, Op::AddTrack { .. }) {
                                    tracks[peer].insert(*kind);
                                }
                                if !negotiated_kinds.contains(kind) {
                                    fresh[peer].insert(*kind);
                                }
                                kinds[peer].push(*kind);
                            }
                            Op::SetDirection { index, .. } | Op::RemoveTrack { index } => {
                                assert!(*index < made_before[peer], "seed {seed}: {s}");
                                assert!(used.insert(*index), "seed {seed}: one call each");
                                touched[peer].insert(kinds[peer][*index]);
                            }
                            Op::CreateDataChannel { label } => {
                                assert!(labels.insert(label.clone(), round).is_none());
                            }
                            Op::CloseDataChannel { label } => {
                                assert!(labels[label] < round, "seed {seed}: {s}");
                                assert!(closed.insert(label.clone()), "seed {seed}: {s}");
                            }
                            Op::RestartIce => assert!(round > 0),
                        }
                    }
                }
                let ops: Vec<&Op> = s
                    .batch(round, 0)
                    .chain(s.batch(round, 1))
                    .map(|(_, op)| op)
                    .collect();
                let closes = ops
                    .iter()
                    .filter(|op| matches!(op, Op::CloseDataChannel { .. }))
                    .count();
                assert!(
                    closes == 0 || closes == ops.len(),
                    "seed {seed} round {round}: {s}"
                );
                for peer in 0..2 {
                    // addTrack(K) holds K for the round.
                    assert!(
                        tracks[peer].is_disjoint(&touched[1 - peer]),
                        "seed {seed} round {round}: {s}"
                    );
                }
                // Kinds seen for the first time come from one side.
                assert!(
                    fresh[0].is_empty() || fresh[1].is_empty(),
                    "seed {seed} round {round}: {s}"
                );
                negotiated_kinds.extend(kinds.iter().flatten().copied());
            }
        }
    }

    /// A script of glare on the live connection (transceivers on both sides, directions on
    /// both, ICE restarts on both) ends in the simulator as webrtc-pc says.
    #[test]
    fn the_simulator_ends_as_the_model_says() {
        let s = script(
            r#"{"seed":7,"polite":1,"steps":[
            {"round":0,"peer":0,"op":"createDataChannel","label":"c1"},
            {"round":0,"peer":0,"op":"addTransceiver","kind":"video","direction":"sendrecv"},
            {"round":1,"peer":0,"op":"addTransceiver","kind":"audio","direction":"sendonly"},
            {"round":1,"peer":1,"op":"addTransceiver","kind":"audio","direction":"recvonly"},
            {"round":1,"peer":1,"op":"createDataChannel","label":"c2"},
            {"round":2,"peer":0,"op":"setDirection","index":1,"direction":"recvonly"},
            {"round":2,"peer":1,"op":"setDirection","index":0,"direction":"inactive"},
            {"round":3,"peer":0,"op":"restartIce"},
            {"round":3,"peer":1,"op":"restartIce"}]}"#,
        );
        let (sim, model) = (s.run_in_sim(), s.expected());
        assert_eq!(model.differences(&sim), Vec::<String>::new(), "{sim:#?}");
        assert_eq!(sim.peers[0].transceivers.len(), 3);
        // The same script with a mistake: the outcome tells.
        let mut wrong = model.clone();
        wrong.peers[1].transceivers[0].direction = Direction::SendOnly;
        assert_eq!(model.differences(&wrong).len(), 2);
    }
}
