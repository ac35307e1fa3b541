//! The simulator: engines in a full mesh over an in-memory network, on a virtual clock.

use crate::intent::Model;
use crate::scenario::{Action, Scenario, Touched};
use crate::verdict::{Failure, Verdict};
use politely_core::rng::Rng;
use politely_core::{
    Certificate, Config, ConnectionId, Counters, Diagnostic, Engine, Event, Negotiation, Origin,
    Output, Payload, Role, SdpKind, Signal, SignalingState,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How the two ends of each pair get their roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roles {
    /// From peer ids: the lower index is polite (the server's rule).
    ById,
    /// From peer ids, ordered the other way: the higher index is polite (roles swapped).
    ByIdReversed,
    /// Misconfigured: both ends polite.
    BothPolite,
    /// Misconfigured: both ends impolite.
    BothImpolite,
}

/// Network and engine settings of one simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of peers, 2 to 6, in a full mesh.
    pub peers: usize,
    /// Seeds the network, the engines and the scenario.
    pub seed: u64,
    /// One-way signaling latency.
    pub signal_latency: Duration,
    /// Extra random signaling delay, up to this (FIFO per directed pair is kept).
    pub signal_jitter: Duration,
    /// One-way packet latency.
    pub packet_latency: Duration,
    /// Extra random packet delay, up to this (packets may reorder, as UDP does).
    pub packet_jitter: Duration,
    /// Probability that a datagram is lost.
    pub packet_loss: f64,
    /// Both ends of a pair start with the same connection id (glare then resolves by
    /// rollback); otherwise each draws its own and brand-new connections collide.
    pub shared_connection_ids: bool,
    /// Role assignment.
    pub roles: Roles,
    /// Trickle candidates as messages.
    pub trickle: bool,
    /// The engines' watchdog timeout.
    pub watchdog_timeout: Duration,
    /// Virtual time after which a run that has not converged fails.
    pub time_limit: Duration,
    /// The negotiation gate: the polite end of each pair asks for a lease of this length
    /// before it renegotiates (`Negotiation::Gate`); the impolite end keeps the gate.
    pub gate: Option<Duration>,
    /// Record the negotiation-level trace (`Sim::trace`, and its hash in the verdict). Off,
    /// a run skips formatting it: `politely sim` turns it off unless asked for `--trace`.
    pub trace: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            peers: 2,
            seed: 0,
            signal_latency: Duration::from_millis(5),
            signal_jitter: Duration::ZERO,
            packet_latency: Duration::from_millis(1),
            packet_jitter: Duration::ZERO,
            packet_loss: 0.0,
            shared_connection_ids: true,
            roles: Roles::ById,
            trickle: true,
            watchdog_timeout: Duration::from_secs(5),
            time_limit: Duration::from_secs(120),
            gate: None,
            trace: true,
        }
    }
}

/// What happens to a signaling message in flight (rustls-test's `transfer_altered`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Deliver it normally.
    Deliver,
    /// Lose it.
    Drop,
    /// Deliver it twice.
    Duplicate,
    /// Hold it back by this much, ignoring FIFO order (a reordering transport).
    Delay(Duration),
    /// Deliver this instead: the message as another implementation writes it.
    Rewrite(Signal),
}

type Interceptor = Box<dyn FnMut(usize, usize, &Signal) -> Fate>;

/// The engine one peer runs toward one remote, and what the simulator observed of it.
pub(crate) struct Link {
    pub(crate) engine: Engine,
    pub(crate) addr: SocketAddr,
    /// Channels of local origin whose echo came back, by label.
    pub(crate) echoed: BTreeSet<String>,
    pub(crate) restarts: u32,
    /// Every event the engine emitted, with its virtual time.
    pub(crate) events: Vec<(Duration, Event)>,
    /// Counters of engines this link had before a restart replaced them.
    pub(crate) retired: Vec<Counters>,
    /// What the application asked of the current engine (the oracle of intent).
    pub(crate) model: Model,
    /// Where the current engine's events start in `events` (a restart makes a new engine).
    pub(crate) events_from: usize,
}

impl Link {
    /// Counters of this link's engines, the current and the retired, added up.
    pub(crate) fn counters(&self) -> Counters {
        let mut total = self.engine.counters();
        for c in &self.retired {
            total.offers += c.offers;
            total.answers += c.answers;
            total.ignored_offers += c.ignored_offers;
            total.watchdog_firings += c.watchdog_firings;
        }
        total
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight<T: Ord> {
    at: Instant,
    seq: u64,
    item: T,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Datagram {
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Message {
    from: usize,
    to: usize,
    text: String,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Scheduled {
    peer: usize,
    remote: usize,
    action: Action,
}

/// Measurements of one run.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Virtual time from start to the first data-channel message received.
    pub first_message: Option<Duration>,
    /// For each glare round: virtual time from its first collision until every engine was
    /// stable again with nothing left to negotiate.
    pub glare_to_settled: Vec<Duration>,
    /// Virtual time at convergence.
    pub converged_at: Option<Duration>,
    /// Offers made by all engines.
    pub offers: u64,
    /// Answers made by all engines.
    pub answers: u64,
    /// Collisions (offers ignored or rolled back, counted once per round).
    pub collisions: u64,
    /// Watchdog firings.
    pub watchdog_firings: u64,
    /// The gate: leases asked for, granted, used and expired, and requests told to wait.
    pub lease_requests: u64,
    /// See [`lease_requests`](Self::lease_requests).
    pub leases_granted: u64,
    /// See [`lease_requests`](Self::lease_requests).
    pub leases_used: u64,
    /// See [`lease_requests`](Self::lease_requests).
    pub leases_expired: u64,
    /// See [`lease_requests`](Self::lease_requests).
    pub requests_deferred: u64,
}

/// A simulation in progress.
pub struct Sim {
    config: SimConfig,
    base: Instant,
    now: Instant,
    rng: Rng,
    seq: u64,
    links: BTreeMap<(usize, usize), Link>,
    owners: BTreeMap<SocketAddr, (usize, usize)>,
    signals: BinaryHeap<Reverse<InFlight<Message>>>,
    last_signal_at: BTreeMap<(usize, usize), Instant>,
    packets: BinaryHeap<Reverse<InFlight<Datagram>>>,
    actions: BinaryHeap<Reverse<InFlight<Scheduled>>>,
    interceptor: Option<Interceptor>,
    trace: Vec<String>,
    failures: Vec<Failure>,
    /// When the glare round in progress began.
    open_collision: Option<Instant>,
    stats: Stats,
}

impl Sim {
    /// A simulation with every pair's engines created at virtual time zero.
    pub fn new(config: SimConfig) -> Self {
        assert!(
            (2..=6).contains(&config.peers),
            "the simulator runs 2 to 6 peers"
        );
        // The simulator, unlike the engine, may read the clock: once, for the virtual epoch.
        let base = Instant::now();
        let mut sim = Self {
            rng: Rng::new(config.seed ^ 0x5151_5151_5151_5151),
            config,
            base,
            now: base,
            seq: 0,
            links: BTreeMap::new(),
            owners: BTreeMap::new(),
            signals: BinaryHeap::new(),
            last_signal_at: BTreeMap::new(),
            packets: BinaryHeap::new(),
            actions: BinaryHeap::new(),
            interceptor: None,
            trace: Vec::new(),
            failures: Vec::new(),
            open_collision: None,
            stats: Stats::default(),
        };
        for a in 0..sim.config.peers {
            for b in 0..sim.config.peers {
                if a != b {
                    let link = sim.new_link(a, b, 0);
                    sim.owners.insert(link.addr, (a, b));
                    sim.links.insert((a, b), link);
                }
            }
        }
        sim
    }

    /// Builds a simulation and schedules a scenario's actions.
    pub fn with_scenario(config: SimConfig, scenario: &Scenario) -> Self {
        let mut sim = Sim::new(config);
        for step in &scenario.steps {
            sim.schedule(step.at, step.peer, step.remote, step.action.clone());
        }
        sim
    }

    /// The address label of the engine `peer` runs toward `remote`. Never bound: loopback
    /// labels so that nothing could ever leave the machine even by mistake.
    fn addr(peer: usize, remote: usize) -> SocketAddr {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            20_000 + (peer as u16) * 100 + remote as u16,
        )
    }

    fn new_link(&mut self, peer: usize, remote: usize, generation: u32) -> Link {
        let addr = Self::addr(peer, remote);
        let role = match self.config.roles {
            Roles::ById => Role::FromIds {
                local: format!("peer-{peer}"),
                remote: format!("peer-{remote}"),
            },
            Roles::ByIdReversed => Role::FromIds {
                local: format!("peer-{}", 9 - peer),
                remote: format!("peer-{}", 9 - remote),
            },
            Roles::BothPolite => Role::Polite,
            Roles::BothImpolite => Role::Impolite,
        };
        let mut config = Config::new(role, vec![addr]);
        config.seed = self
            .config
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add((peer * 16 + remote) as u64 + u64::from(generation) * 1_000);
        config.trickle = self.config.trickle;
        config.certificate = Some(certificate(peer));
        config.watchdog_timeout = self.config.watchdog_timeout;
        if let Some(lease) = self.config.gate
            && config.role.is_polite() == Ok(true)
        {
            config.negotiation = Negotiation::Gate { lease };
        }
        if self.config.shared_connection_ids && generation == 0 {
            let (lo, hi) = (peer.min(remote), peer.max(remote));
            config.connection_id = Some(ConnectionId::new(format!("pair-{lo}-{hi}")));
        }
        let engine = Engine::new(config, self.now).expect("invariant: simulator configs are valid");
        Link {
            engine,
            addr,
            echoed: BTreeSet::new(),
            restarts: generation,
            events: Vec::new(),
            retired: Vec::new(),
            model: Model::default(),
            events_from: 0,
        }
    }

    /// Schedules `action` for the engine `peer` runs toward `remote`, at virtual time `at`.
    pub fn schedule(&mut self, at: Duration, peer: usize, remote: usize, action: Action) {
        self.seq += 1;
        self.actions.push(Reverse(InFlight {
            at: self.base + at,
            seq: self.seq,
            item: Scheduled {
                peer,
                remote,
                action,
            },
        }));
    }

    /// Changes the probability that a datagram is lost, from now on.
    pub fn set_packet_loss(&mut self, loss: f64) {
        self.config.packet_loss = loss;
    }

    /// Installs a function that decides the fate of every signaling message.
    pub fn intercept(&mut self, f: impl FnMut(usize, usize, &Signal) -> Fate + 'static) {
        self.interceptor = Some(Box::new(f));
    }

    /// The virtual clock's current instant.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time elapsed.
    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    /// The engine `peer` runs toward `remote`.
    pub fn engine(&mut self, peer: usize, remote: usize) -> &mut Engine {
        &mut self.link_mut(peer, remote).engine
    }

    fn link_mut(&mut self, peer: usize, remote: usize) -> &mut Link {
        self.links
            .get_mut(&(peer, remote))
            .expect("invariant: a link exists for every ordered pair of distinct peers")
    }

    /// The negotiation-level trace so far: one line per event, with virtual time.
    pub fn trace(&self) -> &[String] {
        &self.trace
    }

    /// Every event the engine `peer` runs toward `remote` emitted so far, with virtual times.
    pub fn events(&self, peer: usize, remote: usize) -> &[(Duration, Event)] {
        &self.links[&(peer, remote)].events
    }

    /// Whether the engine `peer` runs toward `remote` emitted an event matching `f`.
    pub fn saw(&self, peer: usize, remote: usize, f: impl Fn(&Event) -> bool) -> bool {
        self.events(peer, remote).iter().any(|(_, e)| f(e))
    }

    /// Measurements so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Hands `signal` to the engine `peer` runs toward `remote` now, as if it came from the
    /// remote (a message the test writes itself), then drains: what the engine answers goes
    /// on the simulated network.
    pub fn handle_signal(
        &mut self,
        peer: usize,
        remote: usize,
        signal: Signal,
    ) -> Result<(), politely_core::PeerError> {
        let now = self.now;
        self.record(peer, remote, || format!("injected {}", describe(&signal)));
        let handled = self
            .link_mut(peer, remote)
            .engine
            .handle_signal(now, signal);
        self.drain(peer, remote);
        handled
    }

    /// Applies an action now, then drains.
    pub fn act(&mut self, peer: usize, remote: usize, action: Action) {
        self.apply(peer, remote, action);
        self.drain(peer, remote);
    }

    fn apply(&mut self, peer: usize, remote: usize, action: Action) {
        self.record(peer, remote, || format!("action {action:?}"));
        if action == Action::Restart {
            // The peer restarts: a brand-new engine with a new connection id, which opens a
            // channel again as the application would after a reload.
            let generation = self.links[&(peer, remote)].restarts + 1;
            let mut link = self.new_link(peer, remote, generation);
            let old = self.link_mut(peer, remote);
            link.retired = std::mem::take(&mut old.retired);
            link.retired.push(old.engine.counters());
            link.events = std::mem::take(&mut old.events);
            link.events_from = link.events.len();
            *old = link;
            let label = format!("after-restart-{generation}");
            self.apply(peer, remote, Action::CreateChannel(label));
            return;
        }
        let engine = &mut self.link_mut(peer, remote).engine;
        let local_ufrag = engine.local_ufrag();
        let touched = match action.apply(engine) {
            Ok(touched) => touched,
            Err(e) => {
                self.fail(Failure::Api(peer, remote, e.to_string()));
                return;
            }
        };
        let remote_ufrag = self.links[&(remote, peer)].engine.local_ufrag();
        let model = &mut self.link_mut(peer, remote).model;
        match (&action, touched) {
            (Action::AddTransceiver(kind, direction), Touched::Transceiver(id)) => {
                model.add_transceiver(id, *kind, *direction);
            }
            (Action::AddLabelledTransceiver(kind, direction, label), Touched::Transceiver(id)) => {
                model.add_transceiver(id, *kind, *direction);
                model.labels.insert(id, label.clone());
            }
            (Action::SetTrackLabel(_, label), Touched::Transceiver(id)) => {
                model.labels.insert(id, label.clone());
            }
            (Action::AddTrack(kind), Touched::Transceiver(id)) => model.add_track(id, *kind),
            (Action::SetDirection(_, direction), Touched::Transceiver(id)) => {
                model.directions.insert(id, *direction);
            }
            (Action::RemoveTrack(_), Touched::Transceiver(id)) => model.remove_track(id),
            (Action::CreateChannel(label), Touched::Channel(id)) => {
                model.channels.insert(label.clone(), (id, false));
            }
            (Action::CloseChannel(_), Touched::Channel(id)) => {
                for (channel, closed) in model.channels.values_mut() {
                    if *channel == id {
                        *closed = true;
                    }
                }
            }
            (Action::CloseRemoteChannel(_), Touched::RemoteChannel(label)) => {
                // The remote application's channel: closed at both ends, as if it had.
                let theirs = &mut self.link_mut(remote, peer).model;
                if let Some((_, closed)) = theirs.channels.get_mut(&label) {
                    *closed = true;
                }
            }
            (Action::RestartIce, _) => {
                // W3C restartIce does nothing before the first local description.
                if let Some(local) = local_ufrag {
                    model.ice_restarts.push((local, remote_ufrag));
                }
            }
            (Action::Close, _) => model.closed = true,
            _ => {}
        }
    }

    /// Runs until every pair has converged and nothing is scheduled, or the time limit.
    pub fn run(&mut self) -> Verdict {
        let limit = self.base + self.config.time_limit;
        let mut steps_at_same_instant = 0u32;
        let mut last = self.now;
        loop {
            // Cheap conditions first: the full check reads channels and transceivers.
            if self.actions.is_empty()
                && self.signals.is_empty()
                && self.quiet()
                && self.converged_now()
            {
                self.stats.converged_at = Some(self.elapsed());
                break;
            }
            let Some(next) = self.next_instant() else {
                break;
            };
            if next > limit {
                self.now = limit;
                break;
            }
            self.now = self.now.max(next);
            if self.now == last {
                steps_at_same_instant += 1;
                if steps_at_same_instant > 100_000 {
                    self.fail(Failure::Livelock);
                    break;
                }
            } else {
                steps_at_same_instant = 0;
                last = self.now;
            }
            self.step();
            if let Some(t) = self.open_collision
                && self.quiet()
            {
                self.stats.glare_to_settled.push(self.now - t);
                self.open_collision = None;
            }
        }
        self.collect_counters();
        Verdict::check(self)
    }

    /// Runs for a span of virtual time regardless of convergence.
    pub fn run_for(&mut self, span: Duration) {
        let until = self.now + span;
        while let Some(next) = self.next_instant() {
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            self.step();
        }
        self.now = until;
    }

    fn next_instant(&mut self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        if let Some(Reverse(s)) = self.signals.peek() {
            consider(s.at);
        }
        if let Some(Reverse(p)) = self.packets.peek() {
            consider(p.at);
        }
        if let Some(Reverse(a)) = self.actions.peek() {
            consider(a.at);
        }
        for link in self.links.values_mut() {
            if let Some(t) = link.engine.poll_timeout() {
                consider(t);
            }
        }
        next
    }

    /// Handles everything due at `now`, one input at a time, draining after each.
    fn step(&mut self) {
        let now = self.now;
        // Actions due together run back to back before any draining, as calls an application
        // makes in one task do: their negotiation coalesces into one offer.
        let mut touched = BTreeSet::new();
        while let Some(Reverse(a)) = self.actions.peek()
            && a.at <= now
        {
            let Reverse(a) = self.actions.pop().expect("invariant: peeked");
            self.apply(a.item.peer, a.item.remote, a.item.action);
            touched.insert((a.item.peer, a.item.remote));
        }
        for (peer, remote) in touched {
            self.drain(peer, remote);
        }
        while let Some(Reverse(s)) = self.signals.peek()
            && s.at <= now
        {
            let Reverse(s) = self.signals.pop().expect("invariant: peeked");
            self.deliver_signal(s.item);
        }
        while let Some(Reverse(p)) = self.packets.peek()
            && p.at <= now
        {
            let Reverse(p) = self.packets.pop().expect("invariant: peeked");
            let Some(&(peer, remote)) = self.owners.get(&p.item.to) else {
                continue;
            };
            let link = self.link_mut(peer, remote);
            link.engine
                .handle_datagram(now, p.item.from, p.item.to, &p.item.bytes);
            self.drain(peer, remote);
        }
        let keys: Vec<(usize, usize)> = self.links.keys().copied().collect();
        for (peer, remote) in keys {
            let link = self.link_mut(peer, remote);
            if link.engine.poll_timeout().is_some_and(|t| t <= now) {
                link.engine.handle_timeout(now);
                self.drain(peer, remote);
            }
        }
    }

    fn deliver_signal(&mut self, message: Message) {
        let (from, to) = (message.from, message.to);
        // The wire is JSON text: parse it back exactly as a real receiver would.
        let value = match serde_json::from_str(&message.text) {
            Ok(v) => v,
            Err(e) => {
                self.fail(Failure::Peer(to, from, format!("unparsable signal: {e}")));
                return;
            }
        };
        let signal = match Signal::from_json(&value) {
            Ok(s) => s,
            Err(e) => {
                self.fail(Failure::Peer(to, from, e.to_string()));
                return;
            }
        };
        self.record(to, from, || format!("recv {}", describe(&signal)));
        let now = self.now;
        let result = self.engine(to, from).handle_signal(now, signal);
        if let Err(e) = result {
            self.fail(Failure::Peer(to, from, e.to_string()));
        }
        self.drain(to, from);
    }

    /// Drains one engine's outputs into the network, the signaling channel and the trace.
    fn drain(&mut self, peer: usize, remote: usize) {
        while let Some(output) = self.link_mut(peer, remote).engine.poll_output() {
            match output {
                Output::Signal(signal) => self.send_signal(peer, remote, signal),
                Output::Transmit(t) => self.send_packet(t.source, t.destination, t.contents),
                Output::Event(event) => self.on_event(peer, remote, event),
            }
        }
    }

    fn send_signal(&mut self, from: usize, to: usize, signal: Signal) {
        self.record(from, to, || format!("send {}", describe(&signal)));
        let fate = match self.interceptor.as_mut() {
            Some(f) => f(from, to, &signal),
            None => Fate::Deliver,
        };
        let text = match &fate {
            Fate::Rewrite(other) => other.to_json().to_string(),
            _ => signal.to_json().to_string(),
        };
        let jitter = jitter(&mut self.rng, self.config.signal_jitter);
        let mut at = self.now + self.config.signal_latency + jitter;
        let copies = match fate {
            Fate::Drop => {
                self.record(from, to, || "signal dropped in flight".into());
                return;
            }
            Fate::Duplicate => 2,
            Fate::Deliver | Fate::Rewrite(_) => 1,
            Fate::Delay(extra) => {
                // Deliberately out of order: do not advance the FIFO watermark.
                self.seq += 1;
                self.signals.push(Reverse(InFlight {
                    at: at + extra,
                    seq: self.seq,
                    item: Message { from, to, text },
                }));
                return;
            }
        };
        // Reliable and FIFO per directed pair: never before the previous message.
        if let Some(prev) = self.last_signal_at.get(&(from, to)) {
            at = at.max(*prev);
        }
        self.last_signal_at.insert((from, to), at);
        for _ in 0..copies {
            self.seq += 1;
            self.signals.push(Reverse(InFlight {
                at,
                seq: self.seq,
                item: Message {
                    from,
                    to,
                    text: text.clone(),
                },
            }));
        }
    }

    fn send_packet(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        if self.config.packet_loss > 0.0 && self.rng.chance(self.config.packet_loss) {
            return;
        }
        let jitter = jitter(&mut self.rng, self.config.packet_jitter);
        self.seq += 1;
        self.packets.push(Reverse(InFlight {
            at: self.now + self.config.packet_latency + jitter,
            seq: self.seq,
            item: Datagram { from, to, bytes },
        }));
    }

    fn on_event(&mut self, peer: usize, remote: usize, event: Event) {
        let at = self.elapsed();
        self.link_mut(peer, remote).events.push((at, event.clone()));
        match &event {
            Event::Media(p) => {
                let (transceiver, sequence) = (p.transceiver, p.sequence_number);
                self.record(peer, remote, || {
                    format!("media {transceiver} seq {sequence}")
                });
            }
            Event::Message { data, .. } => {
                self.record(peer, remote, || {
                    format!("message {:?}", String::from_utf8_lossy(data))
                });
            }
            Event::Error(e) => {
                let e = e.to_string();
                self.record(peer, remote, || format!("ERROR {e}"));
                self.fail(Failure::Surfaced(peer, remote, e));
            }
            _ => self.record(peer, remote, || format!("{event:?}")),
        }
        if matches!(
            event,
            Event::Diagnostic(Diagnostic::IgnoredOffer | Diagnostic::RolledBack)
        ) && self.open_collision.is_none()
        {
            self.open_collision = Some(self.now);
        }
        match event {
            Event::ChannelOpen {
                id,
                label,
                origin: Origin::Local,
            } => {
                let link = self.link_mut(peer, remote);
                link.echoed.remove(&label);
                let ping = format!("ping {label}");
                if let Err(e) = link.engine.send(id, ping.as_bytes(), true) {
                    self.fail(Failure::Api(peer, remote, e.to_string()));
                }
            }
            Event::Message { channel, data, .. } => {
                if self.stats.first_message.is_none() {
                    self.stats.first_message = Some(self.elapsed());
                }
                let text = String::from_utf8_lossy(&data).into_owned();
                if let Some(label) = text.strip_prefix("ping ") {
                    let pong = format!("pong {label}");
                    if let Err(e) = self
                        .engine(peer, remote)
                        .send(channel, pong.as_bytes(), true)
                    {
                        self.fail(Failure::Api(peer, remote, e.to_string()));
                    }
                } else if let Some(label) = text.strip_prefix("pong ") {
                    self.link_mut(peer, remote).echoed.insert(label.to_owned());
                }
            }
            _ => {}
        }
    }

    fn record(&mut self, peer: usize, remote: usize, line: impl FnOnce() -> String) {
        if !self.config.trace {
            return;
        }
        let ms = self.elapsed().as_secs_f64() * 1000.0;
        self.trace
            .push(format!("{ms:10.3} p{peer}>p{remote} {}", line()));
    }

    pub(crate) fn fail(&mut self, failure: Failure) {
        self.failures.push(failure);
    }

    pub(crate) fn failures(&self) -> &[Failure] {
        &self.failures
    }

    pub(crate) fn config(&self) -> &SimConfig {
        &self.config
    }

    pub(crate) fn links(&mut self) -> &mut BTreeMap<(usize, usize), Link> {
        &mut self.links
    }

    /// Whether every engine is stable with nothing left to negotiate (our own view only).
    fn quiet(&self) -> bool {
        self.links.values().all(|l| {
            l.engine.signaling_state() == SignalingState::Stable
                && !l.engine.wants_to_negotiate()
                && !l.engine.gate_busy()
        })
    }

    /// Whether every pair is settled: stable, nothing to negotiate, connected, channels open
    /// and echoed. Runs after every quiet step, so the cheap tests come first; the verdict
    /// re-checks everything against rtc (pending descriptions included) at the end.
    fn converged_now(&mut self) -> bool {
        let keys: Vec<(usize, usize)> = self.links.keys().copied().collect();
        let closed: Vec<((usize, usize), String)> = self
            .links
            .iter()
            .flat_map(|(pair, link)| {
                link.model
                    .channels
                    .iter()
                    .filter(|(_, (_, closed))| *closed)
                    .map(|(label, _)| (*pair, label.clone()))
            })
            .collect();
        keys.into_iter().all(|(a, b)| {
            let link = self.link_mut(a, b);
            let e = &mut link.engine;
            if e.signaling_state() != SignalingState::Stable
                || e.wants_to_negotiate()
                || e.gate_busy()
            {
                return false;
            }
            if e.connection_state() != politely_core::ConnectionState::Connected {
                // Only a pair that never had anything to negotiate may stay unconnected.
                return e.negotiated_mids().is_empty()
                    && e.channels().is_empty()
                    && e.transceivers().is_empty();
            }
            let channels = e.channels();
            let settled = channels.iter().all(|c| c.open)
                && channels
                    .iter()
                    .filter(|c| c.origin == Origin::Local)
                    .all(|c| link.echoed.contains(&c.label));
            // A channel either application closed is gone from this end once the stream
            // reset went round (RFC 8831 §6.7).
            settled
                && !channels.iter().any(|c| {
                    closed.iter().any(|(pair, label)| {
                        (*pair == (a, b) || *pair == (b, a)) && *label == c.label
                    })
                })
        })
    }

    fn collect_counters(&mut self) {
        let mut stats = Stats {
            first_message: self.stats.first_message,
            glare_to_settled: std::mem::take(&mut self.stats.glare_to_settled),
            converged_at: self.stats.converged_at,
            ..Stats::default()
        };
        for link in self.links.values() {
            let c = link.counters();
            stats.offers += c.offers;
            stats.answers += c.answers;
            stats.collisions += c.ignored_offers;
            stats.watchdog_firings += c.watchdog_firings;
            stats.lease_requests += c.lease_requests;
            stats.leases_granted += c.leases_granted;
            stats.leases_used += c.leases_used;
            stats.leases_expired += c.leases_expired;
            stats.requests_deferred += c.requests_deferred;
        }
        self.stats = stats;
    }

    /// Drains the engine `peer` runs toward `remote` after calls made on it directly through
    /// [`engine`](Self::engine), as actions due together are drained: once, after the last.
    /// Action scripts call the engine themselves because their steps name transceivers by
    /// the ids the engine returned, which an [`Action`] cannot carry.
    pub fn flush(&mut self, peer: usize, remote: usize) {
        self.drain(peer, remote);
    }
}

/// Each peer's DTLS identity, from a per-process pool: an application keeps one identity, and
/// key generation is not what the simulator measures. Certificates are random either way (rtc
/// draws the keys), so sharing them across runs changes no decision.
pub(crate) fn certificate(peer: usize) -> Certificate {
    static POOL: OnceLock<Vec<Certificate>> = OnceLock::new();
    POOL.get_or_init(|| {
        (0..6)
            .map(|_| Certificate::generate().expect("invariant: rtc generates ECDSA certificates"))
            .collect()
    })[peer]
        .clone()
}

fn jitter(rng: &mut Rng, max: Duration) -> Duration {
    if max.is_zero() {
        Duration::ZERO
    } else {
        max.mul_f64(rng.unit())
    }
}

/// A short, stable description of a signal for the trace (no SDP or ufrag bytes, which rtc
/// randomises).
fn describe(signal: &Signal) -> String {
    let id = signal.connection_id.as_str();
    match &signal.payload {
        Payload::Description {
            description,
            offer_id,
            lease,
        } => {
            let kind = match description.kind {
                SdpKind::Offer => "offer",
                SdpKind::Answer => "answer",
            };
            let m = description.sdp.matches("\nm=").count();
            let setup = description
                .sdp
                .lines()
                .find_map(|l| l.strip_prefix("a=setup:"))
                .unwrap_or("-")
                .trim();
            let lease = lease
                .map(|l| format!(" under lease {l}"))
                .unwrap_or_default();
            format!(
                "{kind} #{} ({m} m-lines, setup {setup}){lease} on {id}",
                offer_id.unwrap_or(0)
            )
        }
        Payload::Gate(gate) => format!("gate {gate:?} on {id}"),
        Payload::Candidate(Some(_)) => format!("candidate on {id}"),
        Payload::Candidate(None) => format!("end-of-candidates on {id}"),
        Payload::Bye { reconnect } => format!("bye (reconnect: {reconnect}) on {id}"),
        Payload::Refused { offer_id } => format!("refused #{offer_id} on {id}"),
    }
}
