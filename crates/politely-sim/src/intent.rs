//! The oracle of intent: what each application asked of its engine, recorded from the API
//! calls alone (never read back from the engine or rtc), and the checks that hold it against
//! the engines at convergence.
//!
//! Comparing the two ends of a pair with each other is not enough: both ends can agree and
//! still not do what their applications asked (negotiation once overwrote the application's
//! transceiver directions, and every run still "converged"). The model here is the
//! application's side of the story: its transceivers and the directions it last set, its
//! tracks, its channels, its ICE restarts.

use politely_core::{
    ChannelId, Direction, Engine, Event, MediaKind, TrackLabel, TransceiverId, TransceiverInfo,
};
use std::collections::{BTreeMap, BTreeSet};

/// What one application did to the engine it runs toward one remote peer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Model {
    /// Transceivers this application made or gave a track (add_transceiver, add_track), with
    /// their kind.
    pub(crate) made: BTreeMap<TransceiverId, MediaKind>,
    /// The direction this application last gave each transceiver it touched. A transceiver
    /// that is not here was created by a remote offer and is `recvonly` (W3C).
    pub(crate) directions: BTreeMap<TransceiverId, Direction>,
    /// Transceivers with a track attached (added and not removed).
    pub(crate) tracks: BTreeSet<TransceiverId>,
    /// The `a=msid` the application gave a track (add_labelled_transceiver, set_track_label).
    pub(crate) labels: BTreeMap<TransceiverId, TrackLabel>,
    /// Channels created, by label, and whether this application closed them.
    pub(crate) channels: BTreeMap<String, (ChannelId, bool)>,
    /// For each ICE restart asked after a local description existed: the local and the
    /// remote ufrag then. Both ends move to new credentials (RFC 8445 §9).
    pub(crate) ice_restarts: Vec<(String, Option<String>)>,
    /// The application closed the engine.
    pub(crate) closed: bool,
}

impl Model {
    /// The direction the application's calls imply for a transceiver.
    pub(crate) fn direction(&self, id: TransceiverId) -> Direction {
        self.directions
            .get(&id)
            .copied()
            .unwrap_or(Direction::RecvOnly)
    }

    pub(crate) fn add_transceiver(&mut self, id: TransceiverId, kind: MediaKind, d: Direction) {
        self.made.insert(id, kind);
        self.directions.insert(id, d);
        if d.sends() {
            self.tracks.insert(id);
        }
    }

    /// W3C addTrack: the transceiver gains the send half of its direction. A new one has none
    /// in the record yet and so reads recvonly, which makes it sendrecv, as W3C creates it.
    pub(crate) fn add_track(&mut self, id: TransceiverId, kind: MediaKind) {
        // A reused transceiver counts as made here too: the application asked for a sending
        // one, and a replacement connection brings it back as this side's own.
        self.made.entry(id).or_insert(kind);
        let before = self.direction(id);
        self.directions
            .insert(id, Direction::from_send_recv(true, before.receives()));
        self.tracks.insert(id);
    }

    /// W3C removeTrack: the send half of the direction goes.
    pub(crate) fn remove_track(&mut self, id: TransceiverId) {
        let before = self.direction(id);
        self.directions
            .insert(id, Direction::from_send_recv(false, before.receives()));
        self.tracks.remove(&id);
    }
}

/// The pair `(a, b)`'s problems against what both applications asked, if any. `a_events` are
/// every event `a`'s engine emitted, for the W3C `track` events.
pub(crate) fn check_pair(
    (a, b): (usize, usize),
    models: (&Model, &Model),
    engines: (&mut Engine, &mut Engine),
    events: (&[Event], &[Event]),
) -> Vec<String> {
    let mut problems = Vec::new();
    let (ma, mb) = models;
    let (ea, eb) = engines;
    let ta = ea.transceivers();
    let tb = eb.transceivers();
    // What each end shows of its channels and ICE credentials, read once.
    let channels = |e: &mut Engine| -> Vec<(String, bool)> {
        e.channels()
            .into_iter()
            .map(|c| (c.label, c.open))
            .collect()
    };
    let end_a = End {
        channels: channels(ea),
        local_ufrag: ea.local_ufrag(),
        remote_ufrag: ea.remote_ufrag(),
    };
    let end_b = End {
        channels: channels(eb),
        local_ufrag: eb.local_ufrag(),
        remote_ufrag: eb.remote_ufrag(),
    };
    for ((x, y), m, mine, theirs, other_model, ev, here, there) in [
        ((a, b), ma, &ta, &tb, mb, events.0, &end_a, &end_b),
        ((b, a), mb, &tb, &ta, ma, events.1, &end_b, &end_a),
    ] {
        // Directions are the application's, never the negotiated ones.
        for t in mine {
            let wanted = m.direction(t.id);
            if t.direction != wanted {
                problems.push(format!(
                    "p{x}>p{y} {} ({:?}, {:?}) has direction {}, its application asked {wanted}",
                    t.id, t.kind, t.origin, t.direction
                ));
            }
            let has_track = m.tracks.contains(&t.id);
            if t.has_track != has_track {
                problems.push(format!(
                    "p{x}>p{y} {} has_track {} but its application {}",
                    t.id,
                    t.has_track,
                    if has_track {
                        "added one"
                    } else {
                        "added none or removed it"
                    }
                ));
            }
        }
        // Every transceiver made is negotiated, with the same kind at the other end.
        for (id, kind) in &m.made {
            let Some(t) = mine.iter().find(|t| t.id == *id) else {
                problems.push(format!("p{x}>p{y} lost {id}, which its application made"));
                continue;
            };
            let Some(mid) = &t.mid else {
                problems.push(format!("p{x}>p{y} {id} was never negotiated"));
                continue;
            };
            match theirs.iter().find(|u| u.mid.as_ref() == Some(mid)) {
                None => problems.push(format!("p{y} has no transceiver for p{x}'s mid {mid}")),
                Some(u) if u.kind != *kind || t.kind != *kind => problems.push(format!(
                    "mid {mid}: p{x} made {kind:?}, ends have {:?} and {:?}",
                    t.kind, u.kind
                )),
                Some(_) => {}
            }
        }
        // A named track that sends is known to the remote by its name (an SFU's subscribers
        // tell publishers apart by it).
        for (id, label) in &m.labels {
            let Some(t) = mine.iter().find(|t| t.id == *id) else {
                continue;
            };
            if !t.has_track || !m.direction(*id).sends() {
                continue;
            }
            let Some(mid) = &t.mid else { continue };
            let seen = theirs
                .iter()
                .find(|u| u.mid.as_ref() == Some(mid))
                .and_then(|u| u.remote_label.clone());
            if seen.as_ref() != Some(label) {
                problems.push(format!(
                    "p{x}>p{y} {id} (mid {mid}) is named {label:?}; p{y} sees {seen:?}"
                ));
            }
        }
        // None appears that nobody made.
        for t in mine {
            let made_here = m.made.contains_key(&t.id);
            let made_there = t.mid.as_ref().is_some_and(|mid| {
                theirs
                    .iter()
                    .any(|u| u.mid.as_ref() == Some(mid) && other_model.made.contains_key(&u.id))
            });
            if !made_here && !made_there {
                problems.push(format!(
                    "p{x}>p{y} has {} ({:?}, mid {:?}) that neither application made",
                    t.id, t.kind, t.mid
                ));
            }
        }
        // W3C track events: one TrackAdded per period of receiving, ending in the state the
        // negotiated direction gives.
        for t in mine {
            if let Some(why) = track_events_problem(t, ev) {
                problems.push(format!("p{x}>p{y} {}: {why}", t.id));
            }
        }
        // Channels: created and not closed is open; closed is gone.
        for (label, (_, closed)) in &m.channels {
            let open = |end: &End| end.channels.iter().any(|(l, open)| l == label && *open);
            let (here, there) = (open(here), open(there));
            match (closed, here, there) {
                (false, true, true) | (true, false, false) => {}
                (false, ..) => problems.push(format!(
                    "p{x}>p{y} channel {label} is not open at both ends (here {here}, there {there})"
                )),
                (true, ..) => problems.push(format!(
                    "p{x}>p{y} closed channel {label}, still open (here {here}, there {there})"
                )),
            }
        }
        // ICE restarts asked were applied: the local ufrag moved on, and the remote uses it.
        let (local, remote_sees, remote_local) = (
            here.local_ufrag.clone(),
            there.remote_ufrag.clone(),
            there.local_ufrag.clone(),
        );
        for (old_local, old_remote) in &m.ice_restarts {
            if local.as_deref() == Some(old_local.as_str()) {
                problems.push(format!(
                    "p{x}>p{y} asked for an ICE restart; its ufrag is still {old_local}"
                ));
            }
            if old_remote.is_some() && remote_local == *old_remote {
                problems.push(format!(
                    "p{x}>p{y} asked for an ICE restart; p{y}'s ufrag is still {old_remote:?}"
                ));
            }
        }
        if local != remote_sees {
            problems.push(format!(
                "p{x}>p{y} uses ufrag {local:?}, p{y} sees {remote_sees:?}"
            ));
        }
    }
    // Per mid: each end's negotiated direction is its own direction intersected with the
    // reverse of the other's (JSEP, RFC 9429 §5.3.1), whoever offered last.
    for t in &ta {
        let Some(mid) = &t.mid else { continue };
        let Some(u) = tb.iter().find(|u| u.mid.as_ref() == Some(mid)) else {
            continue;
        };
        let want_a = ma.direction(t.id).intersect(mb.direction(u.id).reverse());
        if t.current_direction != Some(want_a) || u.current_direction != Some(want_a.reverse()) {
            problems.push(format!(
                "mid {mid}: p{a} wants {}, p{b} wants {}, so p{a} should be {want_a}; negotiated p{a} {:?}, p{b} {:?}",
                ma.direction(t.id),
                mb.direction(u.id),
                t.current_direction,
                u.current_direction
            ));
        }
    }
    problems
}

/// What one end shows of its channels (label, open) and its ICE credentials.
struct End {
    channels: Vec<(String, bool)>,
    local_ufrag: Option<String>,
    remote_ufrag: Option<String>,
}

/// Whether the `track` events of one transceiver alternate added/removed, starting with added,
/// and end as its negotiated direction says (receiving: added; otherwise: removed or none).
fn track_events_problem(t: &TransceiverInfo, events: &[Event]) -> Option<String> {
    let mut receiving = false;
    for event in events {
        match event {
            Event::TrackAdded { transceiver, .. } if *transceiver == t.id => {
                if receiving {
                    return Some("TrackAdded twice without TrackRemoved".into());
                }
                receiving = true;
            }
            Event::TrackRemoved { transceiver } if *transceiver == t.id => {
                if !receiving {
                    return Some("TrackRemoved without TrackAdded".into());
                }
                receiving = false;
            }
            _ => {}
        }
    }
    let should = t.current_direction.is_some_and(Direction::receives);
    (receiving != should).then(|| {
        format!(
            "negotiated {:?}, but the last track event says receiving = {receiving}",
            t.current_direction
        )
    })
}
