//! The star simulator: one SFU [`Room`] and 3 to 8 clients on a virtual clock, with joins,
//! leaves, publishes, unpublishes, subscriptions and page reloads at random times, and a verdict
//! that holds every client to what the applications asked for.

use crate::sim::certificate;
use politely_core::rng::Rng;
use politely_core::{
    ChannelId, Config, ConnectionState, Diagnostic, Engine, Event, MediaKind, Negotiation, Output,
    Role, SdpKind, Signal, SignalingState, TrackLabel, TransceiverId,
};
use politely_sfu::{AvailableTrack, Room, RoomConfig, RoomMessage, RoomOutput, Source, ToClient};
use serde_json::Value;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Settings of one star run.
#[derive(Debug, Clone)]
pub struct StarConfig {
    /// Clients, 3 to 8 (each may leave and join again under a new id).
    pub clients: usize,
    /// Seeds the schedule, the network and the engines.
    pub seed: u64,
    /// One-way signaling latency, client to room and back.
    pub signal_latency: Duration,
    /// One-way packet latency.
    pub packet_latency: Duration,
    /// Clients ask for a lease of this length before they renegotiate.
    pub gate: Option<Duration>,
    /// Random actions, spread over [`span`](Self::span).
    pub actions: usize,
    /// The virtual time over which the actions happen.
    pub span: Duration,
    /// Virtual time after which a run that has not settled fails.
    pub time_limit: Duration,
    /// The room's subscription default.
    pub subscribe_all: bool,
    /// Put each description's m-sections (mid, msid, SSRC, direction) in the trace.
    pub trace_descriptions: bool,
    /// Add the fault cases to the random schedule: reloads while an offer is on its way, tracks
    /// that stop sending without being removed, and in gate mode lease requests never used
    /// and a client that offers without a lease.
    pub faults: bool,
}

impl StarConfig {
    /// The random configuration of a seed: 3 to 8 clients, both subscription defaults, both
    /// negotiation modes when `gate` is `None` is not forced (see [`run_star_seed`]).
    pub fn random(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x57A2_57A2);
        Self {
            clients: 3 + rng.below(6) as usize,
            seed,
            signal_latency: Duration::from_millis(1 + rng.below(30)),
            packet_latency: Duration::from_millis(1 + rng.below(10)),
            gate: None,
            actions: 8 + rng.below(17) as usize,
            span: Duration::from_secs(4),
            time_limit: Duration::from_secs(60),
            subscribe_all: rng.below(4) != 0,
            trace_descriptions: false,
            faults: true,
        }
    }
}

/// Something a client's application does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum StarAction {
    /// The client joins (under a new id if it was in the room before).
    Join(usize),
    /// The client leaves.
    Leave(usize),
    /// The client publishes a track: says its source, then adds it.
    Publish(usize, MediaKind, Source),
    /// The client removes the n-th (modulo count) of its live tracks (the transceiver stays,
    /// without a sender).
    Unpublish(usize, usize),
    /// The client subscribes to the n-th (modulo count) track of the last list it got.
    Subscribe(usize, usize),
    /// The client unsubscribes from the n-th (modulo count) track of the last list it got.
    Unsubscribe(usize, usize),
    /// The client's page reloads and resumes its session: a new engine (new connection id), no
    /// tracks and no track list until the room sends it again; its subscriptions belong to the
    /// session and stay. It opens its channel again.
    Reload(usize),
    /// The client stops sending on the n-th (modulo count) of its live tracks without removing
    /// it (W3C `replaceTrack(null)`): the transceiver still sends in every description, and no
    /// packet flows. The track stays published; its subscribers receive it, silent.
    Mute(usize, usize),
    /// A lease request on the client's connection that no offer follows (a page that asked and
    /// crashed, or a client with a bug): the room must not hold its own renegotiation back for
    /// longer than the lease.
    StrayLeaseRequest(usize),
}

/// One client as its application sees it.
struct Member {
    /// The peer id of the current session; `None` while out of the room.
    id: Option<String>,
    sessions: u32,
    engine: Engine,
    addr: SocketAddr,
    generation: u32,
    /// Tracks published and not removed: transceiver → (kind, source, msid track id).
    published: BTreeMap<TransceiverId, (MediaKind, Source, String)>,
    /// Published tracks that no longer send (see [`StarAction::Mute`]).
    muted: BTreeSet<TransceiverId>,
    next_track: u32,
    /// What the application asked of its subscriptions since the page loaded.
    all: bool,
    chosen: BTreeSet<String>,
    refused: BTreeSet<String>,
    /// The last track list the room sent.
    announced: Option<Vec<AvailableTrack>>,
    /// Its own channel.
    chat: Option<ChannelId>,
    /// Media packets received per transceiver in the final phase.
    media: BTreeMap<TransceiverId, u64>,
    /// The sequence number of the last packet received on each transceiver, with the
    /// connection it came on, while the track it carries lasts.
    last_sequence: BTreeMap<TransceiverId, (String, u16)>,
    /// Packets that did not follow the previous one of their track: the network loses and
    /// reorders nothing, so a hole is a packet dropped on the way (a video frame lost).
    sequence_gaps: Vec<String>,
    /// Media packets received over the whole run.
    packets: u64,
    /// Messages received in the final phase, by channel label.
    messages: BTreeMap<String, Vec<String>>,
    errors: Vec<String>,
}

impl Member {
    /// The n-th (modulo count) of its published tracks, if it is in the room and has one.
    fn live_track(&self, n: usize) -> Option<TransceiverId> {
        if self.id.is_none() || self.published.is_empty() {
            return None;
        }
        self.published.keys().nth(n % self.published.len()).copied()
    }

    fn wants(&self, track: &str) -> bool {
        if self.all {
            !self.refused.contains(track)
        } else {
            self.chosen.contains(track)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Endpoint {
    Client(usize),
    Room(String),
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Timed<T: Ord> {
    at: Instant,
    seq: u64,
    item: T,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Message {
    /// The client, and whether the room sends (`true`) or receives.
    client: usize,
    to_client: bool,
    /// The session the message belongs to; stale ones are dropped.
    id: String,
    text: String,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Datagram {
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// The end of a star run.
#[derive(Debug, Clone, Default)]
pub struct StarVerdict {
    /// Why it failed; empty if it passed.
    pub failures: Vec<String>,
    /// Virtual time when everything settled.
    pub settled_at: Option<Duration>,
    /// Clients in the room at the end.
    pub clients: usize,
    /// Tracks forwarded to some client at the end (client × track).
    pub forwarded: usize,
    /// The room's counters.
    pub room: politely_sfu::RoomCounters,
    /// Offers and answers sent on every connection of the run, by both ends; offers ignored
    /// (collisions, and offers without a lease while the room was busy) and repeated offers
    /// that were recognised as such. On the connections that live at the end, offers =
    /// answers + ignored + repeated (checked); the rest of the difference is offers lost with
    /// the connections they were made on.
    pub offers: u64,
    /// See [`offers`](Self::offers).
    pub answers: u64,
    /// See [`offers`](Self::offers).
    pub ignored_offers: u64,
    /// See [`offers`](Self::offers).
    pub repeated_offers: u64,
    /// Leases granted by the room's engines (those of the clients present at the end).
    pub leases_granted: u64,
    /// Leases that ran out unused, and offers that came without a lease (same engines).
    pub leases_expired: u64,
    /// See [`leases_expired`](Self::leases_expired).
    pub offers_without_lease: u64,
    /// Fault cases that ran: tracks that stopped sending without being removed, lease
    /// requests never used, and reloads while the client's engine was not stable.
    pub muted: u64,
    /// See [`muted`](Self::muted).
    pub stray_lease_requests: u64,
    /// See [`muted`](Self::muted).
    pub reloads_mid_negotiation: u64,
    /// Media packets clients received over the run, and those that did not follow the one
    /// before on their transceiver (must be none: the network is lossless).
    pub packets_received: u64,
    /// See [`packets_received`](Self::packets_received).
    pub sequence_gaps: u64,
}

impl StarVerdict {
    /// Whether the run passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// A star simulation in progress.
pub struct Star {
    config: StarConfig,
    base: Instant,
    now: Instant,
    seq: u64,
    room: Room,
    members: Vec<Member>,
    owners: BTreeMap<SocketAddr, Endpoint>,
    next_room_port: u16,
    signals: BinaryHeap<Reverse<Timed<Message>>>,
    last_signal: BTreeMap<(usize, bool), Instant>,
    packets: BinaryHeap<Reverse<Timed<Datagram>>>,
    actions: BinaryHeap<Reverse<Timed<StarAction>>>,
    next_tick: Instant,
    /// Counting received media and messages (the final phase).
    counting: bool,
    /// The fault cases that ran, for the verdict.
    faults: FaultsRun,
    /// Requests of [`StarAction::StrayLeaseRequest`]: the room's grant (or wait) for them
    /// never reaches a page, which neither offers nor releases.
    stray_requests: BTreeSet<u64>,
    /// What became of the offers, per connection id.
    ledger: BTreeMap<String, Ledger>,
    /// The connection id of the signal being delivered: an offer ignored or repeated belongs
    /// to it (an impolite side ignores a new connection's first offer without adopting its
    /// id).
    delivering: Option<String>,
    trace: Vec<String>,
}

/// The fault cases that ran (see [`StarVerdict::muted`]).
#[derive(Debug, Default)]
struct FaultsRun {
    muted: u64,
    stray_lease_requests: u64,
    reloads_mid_negotiation: u64,
}

/// The offers made on one connection and what became of them: each is answered, ignored by an
/// impolite side in a collision (or by the room when it arrived without a lease while the room
/// was busy), or is a duplicate of one already answered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Ledger {
    offers: u64,
    answers: u64,
    ignored: u64,
    duplicates: u64,
}

impl Ledger {
    fn count(&mut self, payload: &politely_core::Payload) {
        if let politely_core::Payload::Description { description, .. } = payload {
            match description.kind {
                SdpKind::Offer => self.offers += 1,
                SdpKind::Answer => self.answers += 1,
            }
        }
    }

    fn note(&mut self, diagnostic: &Diagnostic) {
        match diagnostic {
            Diagnostic::IgnoredOffer => self.ignored += 1,
            Diagnostic::DuplicateOffer => self.duplicates += 1,
            _ => {}
        }
    }
}

/// Media is written every this often on every live track.
const TICK: Duration = Duration::from_millis(50);

impl Star {
    /// A star with the room empty and the actions of `schedule` due.
    pub fn new(config: StarConfig, schedule: &[(Duration, StarAction)]) -> Self {
        assert!(
            (3..=8).contains(&config.clients),
            "the star runs 3 to 8 clients"
        );
        // The simulator may read the clock, once, for the virtual epoch.
        #[allow(clippy::disallowed_methods)]
        let base = Instant::now();
        let room = Room::new(
            RoomConfig {
                subscribe_all: config.subscribe_all,
                ..RoomConfig::default()
            },
            base,
        );
        let mut star = Self {
            base,
            now: base,
            seq: 0,
            room,
            members: Vec::new(),
            owners: BTreeMap::new(),
            next_room_port: 0,
            signals: BinaryHeap::new(),
            last_signal: BTreeMap::new(),
            packets: BinaryHeap::new(),
            actions: BinaryHeap::new(),
            next_tick: base + TICK,
            counting: false,
            ledger: BTreeMap::new(),
            faults: FaultsRun::default(),
            stray_requests: BTreeSet::new(),
            delivering: None,
            trace: Vec::new(),
            config,
        };
        for i in 0..star.config.clients {
            let member = star.new_member(i, 0);
            star.members.push(member);
        }
        for (at, action) in schedule {
            star.seq += 1;
            star.actions.push(Reverse(Timed {
                at: base + *at,
                seq: star.seq,
                item: action.clone(),
            }));
        }
        star
    }

    /// The trace of what happened.
    pub fn trace(&self) -> &[String] {
        &self.trace
    }

    fn client_addr(i: usize, generation: u32) -> SocketAddr {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            30_000 + (i as u16) * 100 + (generation as u16 % 100),
        )
    }

    fn new_member(&mut self, i: usize, generation: u32) -> Member {
        let addr = Self::client_addr(i, generation);
        self.owners.insert(addr, Endpoint::Client(i));
        let mut config = Config::new(Role::Polite, vec![addr]);
        config.seed = self
            .config
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(i as u64 * 1_000 + u64::from(generation));
        config.certificate = Some(certificate(i % 6));
        // With the faults, client 0 is a page that does not keep the gate: its offers carry no
        // lease, and the room answers them when idle and ignores them otherwise.
        if let Some(lease) = self.config.gate
            && !(self.config.faults && i == 0)
        {
            config.negotiation = Negotiation::Gate { lease };
        }
        Member {
            id: None,
            sessions: 0,
            engine: Engine::new(config, self.now).expect("invariant: star configs are valid"),
            addr,
            generation,
            published: BTreeMap::new(),
            muted: BTreeSet::new(),
            next_track: 0,
            all: self.config.subscribe_all,
            chosen: BTreeSet::new(),
            refused: BTreeSet::new(),
            announced: None,
            chat: None,
            media: BTreeMap::new(),
            last_sequence: BTreeMap::new(),
            sequence_gaps: Vec::new(),
            packets: 0,
            messages: BTreeMap::new(),
            errors: Vec::new(),
        }
    }

    fn record(&mut self, line: String) {
        let t = self.now - self.base;
        self.trace.push(format!(
            "{:>6}.{:03} {line}",
            t.as_secs(),
            t.subsec_millis()
        ));
    }

    /// Runs the schedule, lets everything settle, then checks the end state.
    pub fn run(&mut self) -> StarVerdict {
        let limit = self.base + self.config.time_limit;
        let mut settled_at = None;
        while self.now < limit {
            if self.actions.is_empty() && self.signals.is_empty() && self.settled() {
                settled_at = Some(self.now - self.base);
                break;
            }
            self.step_to_next(limit);
        }
        let mut verdict = StarVerdict {
            settled_at,
            ..Default::default()
        };
        if settled_at.is_none() {
            verdict
                .failures
                .push(format!("did not settle: {}", self.unsettled()));
            return self.finish(verdict);
        }
        // The final phase: every live track sends and every client says something on its
        // channel; all of it must arrive where it should.
        self.counting = true;
        for i in 0..self.members.len() {
            let Some(id) = self.members[i].id.clone() else {
                continue;
            };
            if let Some(chat) = self.members[i].chat {
                let text = format!("final from {id}");
                if let Err(e) = self.members[i].engine.send(chat, text.as_bytes(), true) {
                    verdict
                        .failures
                        .push(format!("{id} cannot send on its chat: {e}"));
                }
                self.drain_member(i);
            }
        }
        let until = self.now + Duration::from_millis(400);
        while self.now < until {
            self.step_to_next(until);
        }
        self.check(&mut verdict);
        self.finish(verdict)
    }

    fn finish(&mut self, mut verdict: StarVerdict) -> StarVerdict {
        verdict.room = self.room.counters();
        verdict.muted = self.faults.muted;
        verdict.stray_lease_requests = self.faults.stray_lease_requests;
        verdict.reloads_mid_negotiation = self.faults.reloads_mid_negotiation;
        let ids: Vec<String> = self.room.clients().map(str::to_owned).collect();
        for id in ids {
            if let Some(e) = self.room.engine(&id) {
                let c = e.counters();
                verdict.leases_granted += c.leases_granted;
                verdict.leases_expired += c.leases_expired;
                verdict.offers_without_lease += c.offers_without_lease;
            }
        }
        for m in &self.members {
            verdict.packets_received += m.packets;
            verdict.sequence_gaps += m.sequence_gaps.len() as u64;
        }
        for l in self.ledger.values() {
            verdict.offers += l.offers;
            verdict.answers += l.answers;
            verdict.ignored_offers += l.ignored;
            verdict.repeated_offers += l.duplicates;
        }
        verdict
    }

    fn step_to_next(&mut self, until: Instant) {
        let mut next = self.next_tick;
        if let Some(Reverse(s)) = self.signals.peek() {
            next = next.min(s.at);
        }
        if let Some(Reverse(p)) = self.packets.peek() {
            next = next.min(p.at);
        }
        if let Some(Reverse(a)) = self.actions.peek() {
            next = next.min(a.at);
        }
        if let Some(t) = self.room.poll_timeout() {
            next = next.min(t);
        }
        for m in &mut self.members {
            if m.id.is_some()
                && let Some(t) = m.engine.poll_timeout()
            {
                next = next.min(t);
            }
        }
        if next > until {
            self.now = until;
            return;
        }
        self.now = self.now.max(next);
        self.step();
    }

    fn step(&mut self) {
        let now = self.now;
        while let Some(Reverse(a)) = self.actions.peek()
            && a.at <= now
        {
            let Reverse(a) = self.actions.pop().expect("invariant: peeked");
            self.act(a.item);
        }
        while let Some(Reverse(s)) = self.signals.peek()
            && s.at <= now
        {
            let Reverse(s) = self.signals.pop().expect("invariant: peeked");
            self.deliver(s.item);
        }
        while let Some(Reverse(p)) = self.packets.peek()
            && p.at <= now
        {
            let Reverse(p) = self.packets.pop().expect("invariant: peeked");
            let d = p.item;
            match self.owners.get(&d.to).cloned() {
                Some(Endpoint::Client(i)) if self.members[i].addr == d.to => {
                    self.members[i]
                        .engine
                        .handle_datagram(now, d.from, d.to, &d.bytes);
                    self.drain_member(i);
                }
                Some(Endpoint::Room(id)) => {
                    self.room.handle_datagram(now, &id, d.from, d.to, &d.bytes);
                    self.drain_room();
                }
                _ => {}
            }
        }
        if self.room.poll_timeout().is_some_and(|t| t <= now) {
            self.room.handle_timeout(now);
            self.drain_room();
        }
        for i in 0..self.members.len() {
            if self.members[i].id.is_some()
                && self.members[i]
                    .engine
                    .poll_timeout()
                    .is_some_and(|t| t <= now)
            {
                self.members[i].engine.handle_timeout(now);
                self.drain_member(i);
            }
        }
        if self.next_tick <= now {
            self.next_tick = now + TICK;
            self.tick();
        }
    }

    /// Every live track writes a sample.
    fn tick(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].id.is_none() {
                continue;
            }
            let m = &self.members[i];
            let live: Vec<(TransceiverId, MediaKind)> = m
                .published
                .iter()
                .filter(|(t, _)| !m.muted.contains(t))
                .map(|(t, (k, ..))| (*t, *k))
                .collect();
            for (t, kind) in live {
                let sample: &[u8] = match kind {
                    MediaKind::Audio => &[0xfc; 60],
                    MediaKind::Video => &[0x10, 0x02, 0, 0x9d, 0x01, 0x2a, 0, 0, 0, 0],
                };
                if let Err(e) = self.members[i].engine.write_sample(t, sample, TICK) {
                    self.members[i].errors.push(format!("write_sample: {e}"));
                }
            }
            self.drain_member(i);
        }
    }

    fn act(&mut self, action: StarAction) {
        self.record(format!("action {action:?}"));
        match action {
            StarAction::Join(i) => {
                if self.members[i].id.is_some() {
                    return;
                }
                let sessions = self.members[i].sessions;
                if sessions > 0 {
                    // A new session: a new page, a new engine.
                    let generation = self.members[i].generation + 1;
                    self.members[i] = self.new_member(i, generation);
                }
                let m = &mut self.members[i];
                m.sessions = sessions + 1;
                let id = if m.sessions == 1 {
                    format!("c{i}")
                } else {
                    format!("c{i}s{}", m.sessions)
                };
                m.id = Some(id.clone());
                let room_addr = SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    40_000 + self.next_room_port,
                );
                self.next_room_port += 1;
                self.owners.insert(room_addr, Endpoint::Room(id.clone()));
                let mut config = Config::new(Role::Impolite, vec![room_addr]);
                config.seed = self.config.seed ^ (0xA11 + u64::from(self.next_room_port));
                config.certificate = Some(certificate(5));
                self.room
                    .add_client(self.now, id, config)
                    .expect("invariant: room configs are valid");
                self.drain_room();
                self.open_chat(i);
            }
            StarAction::Leave(i) => {
                let Some(id) = self.members[i].id.take() else {
                    return;
                };
                self.members[i].engine.close();
                self.members[i].published.clear();
                self.members[i].announced = None;
                self.room.remove_client(&id);
                self.drain_room();
            }
            StarAction::Publish(i, kind, source) => {
                let Some(id) = self.members[i].id.clone() else {
                    return;
                };
                let m = &mut self.members[i];
                m.next_track += 1;
                let track_id = format!("{id}g{}t{}", m.generation, m.next_track);
                // The source first, as a page would: it names the track before offering it.
                let publish = RoomMessage::Publish {
                    track: track_id.clone(),
                    source,
                };
                let label = TrackLabel {
                    stream_id: id.clone(),
                    track_id: track_id.clone(),
                };
                match m.engine.add_labelled_transceiver(
                    kind,
                    politely_core::Direction::SendOnly,
                    label,
                ) {
                    Ok(t) => {
                        m.published.insert(t, (kind, source, track_id));
                    }
                    Err(e) => m.errors.push(format!("publish: {e}")),
                }
                self.send_to_room(i, publish.to_json());
                self.drain_member(i);
            }
            StarAction::Unpublish(i, n) => {
                let m = &mut self.members[i];
                let Some(t) = m.live_track(n) else { return };
                m.published.remove(&t);
                m.muted.remove(&t);
                if let Err(e) = m.engine.remove_track(t) {
                    m.errors.push(format!("unpublish: {e}"));
                }
                self.drain_member(i);
            }
            StarAction::Mute(i, n) => {
                let m = &mut self.members[i];
                let Some(t) = m.live_track(n) else { return };
                if m.muted.insert(t) {
                    self.faults.muted += 1;
                }
            }
            StarAction::StrayLeaseRequest(i) => {
                let (Some(id), Some(lease)) = (self.members[i].id.clone(), self.config.gate) else {
                    return;
                };
                let request = 1_000_000 + self.seq;
                self.stray_requests.insert(request);
                let signal = Signal {
                    connection_id: self.members[i].engine.connection_id().clone(),
                    payload: politely_core::Payload::Gate(politely_core::Gate::Request {
                        id: request,
                        lease_ms: lease.as_millis() as u64,
                    }),
                };
                self.post(i, false, id, signal.to_json().to_string());
                self.faults.stray_lease_requests += 1;
            }
            StarAction::Subscribe(i, n) | StarAction::Unsubscribe(i, n) => {
                let subscribe = matches!(action, StarAction::Subscribe(..));
                let m = &mut self.members[i];
                let Some(list) = m.announced.as_ref().filter(|l| !l.is_empty()) else {
                    return;
                };
                if m.id.is_none() {
                    return;
                }
                let track = list[n % list.len()].id.clone();
                let message = if subscribe {
                    m.refused.remove(&track);
                    m.chosen.insert(track.clone());
                    RoomMessage::Subscribe(vec![track])
                } else {
                    m.chosen.remove(&track);
                    m.refused.insert(track.clone());
                    RoomMessage::Unsubscribe(vec![track])
                };
                self.send_to_room(i, message.to_json());
            }
            StarAction::Reload(i) => {
                let Some(id) = self.members[i].id.clone() else {
                    return;
                };
                let generation = self.members[i].generation + 1;
                let old = &self.members[i];
                if old.engine.signaling_state() != SignalingState::Stable
                    || old.engine.has_pending_description()
                {
                    self.faults.reloads_mid_negotiation += 1;
                }
                let (sessions, all, chosen, refused) = (
                    old.sessions,
                    old.all,
                    old.chosen.clone(),
                    old.refused.clone(),
                );
                let fresh = self.new_member(i, generation);
                self.members[i] = fresh;
                let m = &mut self.members[i];
                m.id = Some(id);
                m.sessions = sessions;
                (m.all, m.chosen, m.refused) = (all, chosen, refused);
                self.open_chat(i);
            }
        }
    }

    fn open_chat(&mut self, i: usize) {
        let m = &mut self.members[i];
        match m.engine.create_data_channel("chat", Default::default()) {
            Ok(c) => m.chat = Some(c),
            Err(e) => m.errors.push(format!("chat: {e}")),
        }
        self.drain_member(i);
    }

    fn send_to_room(&mut self, i: usize, data: Value) {
        let Some(id) = self.members[i].id.clone() else {
            return;
        };
        self.post(i, false, id, data.to_string());
    }

    /// Queues a signal, FIFO per direction.
    fn post(&mut self, client: usize, to_client: bool, id: String, text: String) {
        let mut at = self.now + self.config.signal_latency;
        if let Some(last) = self.last_signal.get(&(client, to_client)) {
            at = at.max(*last);
        }
        self.last_signal.insert((client, to_client), at);
        self.seq += 1;
        self.signals.push(Reverse(Timed {
            at,
            seq: self.seq,
            item: Message {
                client,
                to_client,
                id,
                text,
            },
        }));
    }

    fn deliver(&mut self, message: Message) {
        let value: Value =
            serde_json::from_str(&message.text).expect("invariant: the simulator sends JSON");
        let i = message.client;
        if message.to_client {
            if self.members[i].id.as_deref() != Some(message.id.as_str()) {
                return;
            }
            if RoomMessage::is_room(&value) {
                match RoomMessage::from_json(&value) {
                    Ok(RoomMessage::Tracks(list)) => self.members[i].announced = Some(list),
                    Ok(other) => self.members[i]
                        .errors
                        .push(format!("the room sent {other:?}")),
                    Err(e) => self.members[i].errors.push(e.to_string()),
                }
                return;
            }
            let signal = Signal::from_json(&value).expect("invariant: the room sends signals");
            if let politely_core::Payload::Gate(
                politely_core::Gate::Grant { id, .. } | politely_core::Gate::Wait { id },
            ) = &signal.payload
                && self.stray_requests.contains(id)
            {
                return;
            }
            let now = self.now;
            self.delivering = Some(signal.connection_id.as_str().to_owned());
            if let Err(e) = self.members[i].engine.handle_signal(now, signal) {
                self.members[i]
                    .errors
                    .push(format!("refused a signal: {e}"));
            }
            self.drain_member(i);
            self.delivering = None;
        } else {
            if self.room.engine(&message.id).is_none() {
                return;
            }
            self.delivering = Signal::from_json(&value)
                .ok()
                .map(|s| s.connection_id.as_str().to_owned());
            if let Err(e) = self.room.handle_data(self.now, &message.id, &value) {
                self.members[i]
                    .errors
                    .push(format!("the room refused a signal: {e}"));
            }
            self.drain_room();
            self.delivering = None;
        }
    }

    fn send_datagram(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.seq += 1;
        let at = self.now + self.config.packet_latency;
        self.packets.push(Reverse(Timed {
            at,
            seq: self.seq,
            item: Datagram { from, to, bytes },
        }));
    }

    fn drain_member(&mut self, i: usize) {
        while let Some(output) = self.members[i].engine.poll_output() {
            match output {
                Output::Signal(signal) => {
                    if self.config.trace_descriptions {
                        let what = match &signal.payload {
                            politely_core::Payload::Description {
                                description,
                                offer_id,
                                ..
                            } => {
                                let lines: Vec<&str> = description
                                    .sdp
                                    .lines()
                                    .filter(|l| {
                                        l.starts_with("a=mid")
                                            || l.starts_with("a=send")
                                            || l.starts_with("a=recv")
                                            || l.starts_with("a=inactive")
                                    })
                                    .collect();
                                format!("{:?} #{offer_id:?} {}", description.kind, lines.join(" "))
                            }
                            other => format!("{other:?}").chars().take(60).collect(),
                        };
                        let id = self.members[i].id.clone().unwrap_or_default();
                        self.record(format!(
                            "{id} → room [{}] {what}",
                            signal.connection_id.as_str()
                        ));
                    }
                    if let Some(id) = self.members[i].id.clone() {
                        self.ledger
                            .entry(signal.connection_id.as_str().to_owned())
                            .or_default()
                            .count(&signal.payload);
                        self.post(i, false, id, signal.to_json().to_string());
                    }
                }
                Output::Transmit(t) => self.send_datagram(t.source, t.destination, t.contents),
                Output::Event(event) => self.on_member_event(i, event),
            }
        }
    }

    fn on_member_event(&mut self, i: usize, event: Event) {
        let counting = self.counting;
        let (now, base) = (self.now, self.base);
        let m = &mut self.members[i];
        // A track that ended may have packets still on the way, which arrive after it and are
        // dropped; the next track on the transceiver goes on from the numbers they took.
        if let Event::TrackRemoved { transceiver } = &event {
            m.last_sequence.remove(transceiver);
        }
        if let Event::Media(p) = &event {
            m.packets += 1;
            let connection = m.engine.connection_id().as_str();
            let last = m
                .last_sequence
                .insert(p.transceiver, (connection.to_owned(), p.sequence_number));
            if let Some((on, last)) = last
                && on == connection
                && p.sequence_number != last.wrapping_add(1)
            {
                m.sequence_gaps.push(format!(
                    "{}: at {:.3} s, on {} packet {} after {last}",
                    m.id.as_deref().unwrap_or("?"),
                    (now - base).as_secs_f64(),
                    p.transceiver,
                    p.sequence_number
                ));
            }
        }
        match event {
            Event::Media(p) if counting => *m.media.entry(p.transceiver).or_default() += 1,
            Event::Message { channel, data, .. } if counting => {
                let label = m
                    .engine
                    .channels()
                    .into_iter()
                    .find(|c| c.id == channel)
                    .map(|c| c.label)
                    .unwrap_or_default();
                m.messages
                    .entry(label)
                    .or_default()
                    .push(String::from_utf8_lossy(&data).into_owned());
            }
            Event::Error(e) => m.errors.push(format!("error event: {e}")),
            Event::Diagnostic(d) => {
                let connection = (self.delivering.clone())
                    .unwrap_or_else(|| m.engine.connection_id().as_str().to_owned());
                self.ledger.entry(connection).or_default().note(&d);
            }
            Event::Watchdog { .. }
            | Event::ConnectionReplaced { .. }
            | Event::ConnectionStateChange(_) => {
                let line = format!("{:?}: {event:?}", m.id);
                self.record(line);
            }
            _ => {}
        }
    }

    fn drain_room(&mut self) {
        while let Some(output) = self.room.poll_output() {
            match output {
                RoomOutput::Signal { to, message } => {
                    let Some(i) = self
                        .members
                        .iter()
                        .position(|m| m.id.as_deref() == Some(to.as_str()))
                    else {
                        continue;
                    };
                    if let ToClient::Room(r) = &message {
                        self.record(format!("room → {to}: {}", r.to_json()));
                    }
                    if self.config.trace_descriptions
                        && let ToClient::Negotiation(s) = &message
                        && let politely_core::Payload::Description { description, .. } = &s.payload
                    {
                        let lines: Vec<&str> = description
                            .sdp
                            .lines()
                            .filter(|l| {
                                l.starts_with("a=mid")
                                    || l.starts_with("a=msid:")
                                    || (l.starts_with("a=ssrc:") && l.contains("cname"))
                                    || l.starts_with("a=send")
                                    || l.starts_with("a=recv")
                                    || l.starts_with("a=inactive")
                            })
                            .collect();
                        self.record(format!(
                            "room → {to} {:?}: {}",
                            description.kind,
                            lines.join(" | ")
                        ));
                    }
                    if let ToClient::Negotiation(s) = &message {
                        self.ledger
                            .entry(s.connection_id.as_str().to_owned())
                            .or_default()
                            .count(&s.payload);
                    }
                    self.post(i, true, to, message.to_json().to_string());
                }
                RoomOutput::Transmit { transmit, .. } => {
                    self.send_datagram(transmit.source, transmit.destination, transmit.contents);
                }
                RoomOutput::Event {
                    client,
                    event: Event::Diagnostic(d),
                } => {
                    let connection = self.delivering.clone().or_else(|| {
                        let e = self.room.engine(&client)?;
                        Some(e.connection_id().as_str().to_owned())
                    });
                    if let Some(connection) = connection {
                        self.ledger.entry(connection).or_default().note(&d);
                    }
                }
                RoomOutput::Event { client, event } => match &event {
                    Event::Error(_)
                    | Event::Watchdog { .. }
                    | Event::ConnectionReplaced { .. }
                    | Event::ConnectionStateChange(_) => {
                        self.record(format!("room's engine for {client}: {event:?}"));
                    }
                    _ => {}
                },
            }
        }
    }

    /// Every engine of every present client, and the room's toward it, is stable with nothing
    /// to negotiate, no lease out, and connected.
    fn settled(&mut self) -> bool {
        self.unsettled().is_empty()
    }

    fn unsettled(&mut self) -> String {
        let mut why = Vec::new();
        for m in &mut self.members {
            let Some(id) = m.id.clone() else { continue };
            let room_engine = self.room.engine(&id);
            let Some(r) = room_engine else {
                why.push(format!("{id} is not in the room"));
                continue;
            };
            for (side, e) in [("client", &mut m.engine), ("room", r)] {
                let closed_channel = e.channels().into_iter().find(|c| !c.open);
                if let Some(c) = closed_channel {
                    why.push(format!("{id} ({side}): channel {} not open", c.label));
                }
                if e.signaling_state() != SignalingState::Stable
                    || e.has_pending_description()
                    || e.wants_to_negotiate()
                    || e.gate_busy()
                    || e.connection_state() != ConnectionState::Connected
                {
                    why.push(format!(
                        "{id} ({side}): {:?}, pending {}, wants {}, gate {}, {:?}",
                        e.signaling_state(),
                        e.has_pending_description(),
                        e.wants_to_negotiate(),
                        e.gate_busy(),
                        e.connection_state()
                    ));
                }
            }
        }
        why.join("; ")
    }

    /// The end state against what the applications asked for.
    fn check(&mut self, verdict: &mut StarVerdict) {
        let failures = &mut verdict.failures;
        for m in &self.members {
            if let Some(first) = m.sequence_gaps.first() {
                failures.push(format!(
                    "{} packets with a hole before them, the first {first}",
                    m.sequence_gaps.len()
                ));
            }
        }
        // Every offer on a connection that lives on was answered, ignored in a collision, or
        // repeated: none was left without a reply (offers on replaced connections may be lost
        // with them, and are counted in the totals only).
        for m in &self.members {
            let Some(id) = &m.id else { continue };
            let connection = m.engine.connection_id().as_str();
            let l = self.ledger.get(connection).copied().unwrap_or_default();
            if l.offers != l.answers + l.ignored + l.duplicates {
                failures.push(format!(
                    "{id}: connection {connection}: {} offers, {} answers, {} ignored, {} repeated",
                    l.offers, l.answers, l.ignored, l.duplicates
                ));
            }
        }
        let available = self.room.available();
        // What is published is what the present clients' applications published, with the
        // sources they said.
        let mut truth: BTreeSet<(String, String, MediaKind, Source)> = BTreeSet::new();
        for m in &self.members {
            let Some(id) = &m.id else { continue };
            for (kind, source, msid) in m.published.values() {
                truth.insert((id.clone(), msid.clone(), *kind, *source));
            }
        }
        let room_view: BTreeSet<(String, String, MediaKind, Source)> = available
            .iter()
            .filter_map(|t| {
                let (publisher, msid) = self.room.track_origin(&t.id)?;
                let kind = match t.kind {
                    politely_sfu::TrackKind::Audio => MediaKind::Audio,
                    politely_sfu::TrackKind::Video => MediaKind::Video,
                };
                Some((publisher.to_owned(), msid.to_owned(), kind, t.source))
            })
            .collect();
        if truth != room_view {
            failures.push(format!(
                "published: the applications {truth:?}, the room {room_view:?}"
            ));
        }
        let present: Vec<String> = self.members.iter().filter_map(|m| m.id.clone()).collect();
        verdict.clients = present.len();
        // Tracks whose publisher stopped sending without removing them: (publisher, msid).
        let silent: BTreeSet<(String, String)> = self
            .members
            .iter()
            .filter_map(|m| Some((m.id.clone()?, m)))
            .flat_map(|(id, m)| {
                m.muted
                    .iter()
                    .filter_map(|t| m.published.get(t))
                    .map(move |(_, _, msid)| (id.clone(), msid.clone()))
            })
            .collect();
        for m in &mut self.members {
            let Some(id) = m.id.clone() else { continue };
            for e in &m.errors {
                failures.push(format!("{id}: {e}"));
            }
            // The list it holds is the room's, less its own.
            let expected_list: Vec<AvailableTrack> = available
                .iter()
                .filter(|t| t.publisher != id)
                .cloned()
                .collect();
            let without_mids = |list: &[AvailableTrack]| -> Vec<AvailableTrack> {
                list.iter()
                    .cloned()
                    .map(|mut t| {
                        t.mid = None;
                        t
                    })
                    .collect()
            };
            let held = m.announced.as_deref().map(without_mids);
            if held.as_ref() != Some(&expected_list) {
                failures.push(format!(
                    "{id} holds the list {:?}, the room has {expected_list:?}",
                    m.announced
                ));
            }
            // It receives exactly the tracks it wants, each named by publisher and track id.
            let wanted: BTreeSet<(String, String)> = expected_list
                .iter()
                .filter(|t| m.wants(&t.id))
                .map(|t| (t.publisher.clone(), t.id.clone()))
                .collect();
            let transceivers = m.engine.transceivers();
            let mut receiving = BTreeSet::new();
            for t in &transceivers {
                if !t.current_direction.is_some_and(|d| d.receives()) {
                    continue;
                }
                let Some(label) = &t.remote_label else {
                    failures.push(format!("{id} receives on {} with no msid", t.id));
                    continue;
                };
                receiving.insert((label.stream_id.clone(), label.track_id.clone()));
                if let Some(a) = available.iter().find(|a| a.id == label.track_id) {
                    let kind = match a.kind {
                        politely_sfu::TrackKind::Audio => MediaKind::Audio,
                        politely_sfu::TrackKind::Video => MediaKind::Video,
                    };
                    if kind != t.kind {
                        failures.push(format!("{id} receives {} as {:?}", a.id, t.kind));
                    }
                }
                let is_silent = self
                    .room
                    .track_origin(&label.track_id)
                    .is_some_and(|(p, msid)| silent.contains(&(p.to_owned(), msid.to_owned())));
                if !is_silent && m.media.get(&t.id).copied().unwrap_or(0) == 0 {
                    failures.push(format!(
                        "{id} got no packet of {}/{} on {} (packets per transceiver: {:?}; {:?})",
                        label.stream_id, label.track_id, t.id, m.media, t
                    ));
                }
            }
            // A page knows a received track by the mid the list gives it (a browser keeps a
            // transceiver's track id when the m-section is reused): every track it receives is
            // listed with the mid it arrives on.
            for t in m.announced.iter().flatten() {
                let arrives_on = transceivers
                    .iter()
                    .find(|u| u.remote_label.as_ref().is_some_and(|l| l.track_id == t.id))
                    .filter(|u| u.current_direction.is_some_and(|d| d.receives()))
                    .and_then(|u| u.mid.clone());
                if arrives_on.is_some() && t.mid != arrives_on {
                    failures.push(format!(
                        "{id}'s list gives {} mid {:?}; it arrives on {arrives_on:?}",
                        t.id, t.mid
                    ));
                }
            }
            verdict.forwarded += receiving.len();
            if receiving != wanted {
                failures.push(format!("{id} receives {receiving:?}, it wants {wanted:?}"));
            }
            // Every other client's channel reaches it, and the final message on it.
            let channels = m.engine.channels();
            for other in &present {
                if *other == id {
                    continue;
                }
                let label = format!("{other}/chat");
                if !channels.iter().any(|c| c.label == label && c.open) {
                    failures.push(format!("{id} has no open {label}"));
                    continue;
                }
                let text = format!("final from {other}");
                if !m
                    .messages
                    .get(&label)
                    .is_some_and(|got| got.contains(&text))
                {
                    failures.push(format!("{id} did not get \"{text}\" on {label}"));
                }
            }
        }
    }
}

/// The random schedule of a seed: the clients join in the first 300 ms, then `actions` random
/// actions over the span.
pub fn random_schedule(config: &StarConfig) -> Vec<(Duration, StarAction)> {
    let mut rng = Rng::new(config.seed ^ 0x5CED_0000);
    let mut faults = Rng::new(config.seed ^ 0xFA17_0000);
    let mut schedule = Vec::new();
    for i in 0..config.clients {
        schedule.push((Duration::from_millis(rng.below(300)), StarAction::Join(i)));
    }
    let kind = |rng: &mut Rng| {
        if rng.below(2) == 0 {
            MediaKind::Audio
        } else {
            MediaKind::Video
        }
    };
    for _ in 0..config.actions {
        let at = Duration::from_millis(300 + rng.below(config.span.as_millis() as u64));
        let i = rng.below(config.clients as u64) as usize;
        let n = rng.below(8) as usize;
        let action = match rng.below(20) {
            0..=6 => {
                let source = if rng.below(3) == 0 {
                    Source::Screen
                } else {
                    Source::Media
                };
                StarAction::Publish(i, kind(&mut rng), source)
            }
            7..=9 => StarAction::Unpublish(i, n),
            10..=11 => StarAction::Subscribe(i, n),
            12..=13 => StarAction::Unsubscribe(i, n),
            14..=15 => StarAction::Reload(i),
            16 => StarAction::Leave(i),
            _ => StarAction::Join(i),
        };
        if config.faults {
            schedule.extend(fault_after(&mut faults, config, at, &action));
        }
        schedule.push((at, action));
    }
    schedule.sort();
    schedule
}

/// The fault case that follows an action, if any, drawn from its own generator so the rest of
/// a seed's schedule is the same with and without the fault cases.
fn fault_after(
    rng: &mut Rng,
    config: &StarConfig,
    at: Duration,
    action: &StarAction,
) -> Option<(Duration, StarAction)> {
    let roll = rng.below(12);
    let StarAction::Publish(i, ..) = *action else {
        return None;
    };
    let after = |ms: u64| at + Duration::from_millis(ms);
    match roll {
        // The page reloads while the offer that publishes is on its way to the room, or the
        // room's answer on its way back.
        0 | 1 => {
            let delay = rng.below(2 * config.signal_latency.as_millis() as u64 + 1);
            Some((after(delay), StarAction::Reload(i)))
        }
        2 => {
            let delay = 100 + rng.below(1_000);
            Some((after(delay), StarAction::Mute(i, rng.below(8) as usize)))
        }
        3 | 4 if config.gate.is_some() => {
            let delay = rng.below(500);
            let j = rng.below(config.clients as u64) as usize;
            Some((after(delay), StarAction::StrayLeaseRequest(j)))
        }
        _ => None,
    }
}

/// Runs the random star of `seed`, in gate mode if `gate` gives a lease; `descriptions` puts
/// every description's m-sections in the trace.
pub fn run_star_seed(
    seed: u64,
    gate: Option<Duration>,
    descriptions: bool,
) -> (StarVerdict, Vec<String>) {
    let mut config = StarConfig::random(seed);
    config.gate = gate;
    config.trace_descriptions = descriptions;
    let schedule = random_schedule(&config);
    let mut star = Star::new(config, &schedule);
    let verdict = star.run();
    (verdict, star.trace().to_vec())
}

/// Runs the random stars of `seeds` and describes each failure with the command that replays
/// it.
pub fn failing_star_seeds(seeds: impl Iterator<Item = u64>, gate: Option<Duration>) -> Vec<String> {
    let mut failures = Vec::new();
    for seed in seeds {
        let (verdict, _) = run_star_seed(seed, gate, false);
        if !verdict.passed() {
            let gate = gate
                .map(|g| format!(" --gate {}", g.as_millis()))
                .unwrap_or_default();
            failures.push(format!(
                "star seed {seed}: {:?}\n  replay: cargo run --release -p politely-cli -- sim --star --seed {seed}{gate} --trace",
                verdict.failures
            ));
        }
    }
    failures
}
