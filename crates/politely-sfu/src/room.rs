//! The room: clients, their engines, the published tracks and who receives them.

use crate::rewrite::Rewriter;
use politely_core::{
    ChannelId, Config, Direction, Engine, Event, MediaKind, MediaPacket, Origin, Output, PeerError,
    Role, Signal, SignalError, TrackLabel, TransceiverId, Transmit,
};
use politely_proto::room::{AvailableTrack, RoomMessage, Source, TrackKind};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A client's peer id, as the signaling server assigned it.
pub type ClientId = String;

/// How a room behaves.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// A client receives every track it may (seed 003's default) until it unsubscribes from
    /// some; with `false`, none until it subscribes.
    pub subscribe_all: bool,
    /// At most one keyframe request to a publisher's track per this interval, however many
    /// subscribers ask.
    pub keyframe_interval: Duration,
    /// Messages held for a relayed channel that has not opened yet; more are dropped.
    pub relay_queue: usize,
}

impl Default for RoomConfig {
    fn default() -> Self {
        Self {
            subscribe_all: true,
            keyframe_interval: Duration::from_millis(500),
            relay_queue: 256,
        }
    }
}

/// A message for one client, to send over signaling as a signal's `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToClient {
    /// The negotiation of the client's connection.
    Negotiation(Signal),
    /// The room's track list.
    Room(RoomMessage),
}

impl ToClient {
    /// The message as JSON.
    pub fn to_json(&self) -> Value {
        match self {
            ToClient::Negotiation(signal) => signal.to_json(),
            ToClient::Room(message) => message.to_json(),
        }
    }
}

/// Something the caller must act on, drained with [`Room::poll_output`].
#[derive(Debug, Clone, PartialEq)]
pub enum RoomOutput {
    /// Send this to a client over signaling.
    Signal {
        /// The client.
        to: ClientId,
        /// The message.
        message: ToClient,
    },
    /// Send this datagram from the client's connection.
    Transmit {
        /// The client whose connection sends it.
        client: ClientId,
        /// The datagram.
        transmit: Transmit,
    },
    /// An event of a client's engine, for logs (media, messages and keyframe requests, which
    /// the room acts on itself, are not repeated here).
    Event {
        /// The client.
        client: ClientId,
        /// The event.
        event: Event,
    },
}

/// What the room did, summed over its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomCounters {
    /// RTP packets received from publishers.
    pub packets_received: u64,
    /// RTP packets handed to subscribers' connections (one per subscriber).
    pub packets_forwarded: u64,
    /// Packets not forwarded because the subscriber's transceiver could not send yet.
    pub packets_not_sendable: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests: u64,
    /// Keyframe requests not sent because one went to the same track within the interval.
    pub keyframe_requests_throttled: u64,
    /// Data-channel messages relayed (one per receiving client).
    pub messages_relayed: u64,
    /// Tracks published over the room's life.
    pub tracks_published: u64,
    /// Transceivers added to subscribers' connections.
    pub transceivers_added: u64,
    /// Subscriptions that reused a transceiver a former one left.
    pub transceivers_reused: u64,
}

/// A published track.
#[derive(Debug, Clone)]
struct Track {
    publisher: ClientId,
    /// The publisher's transceiver that receives it.
    transceiver: TransceiverId,
    kind: MediaKind,
    /// The publisher's msid track and stream ids, which `publish` messages name.
    msid_track: String,
    msid_stream: String,
    source: Source,
    last_keyframe_request: Option<Instant>,
}

/// One forwarded track on a subscriber's connection.
#[derive(Debug, Clone)]
struct Downlink {
    transceiver: TransceiverId,
    kind: MediaKind,
    rewriter: Rewriter,
    /// A keyframe is asked of the publisher once the transceiver can send.
    needs_keyframe: bool,
}

/// A channel the room opened on a client's connection, relaying another client's channel.
#[derive(Debug, Clone)]
struct Relay {
    channel: ChannelId,
    open: bool,
    held: VecDeque<(Vec<u8>, bool)>,
}

/// Which tracks a client wants.
#[derive(Debug, Clone, Default)]
struct Subscription {
    all: bool,
    chosen: BTreeSet<String>,
    refused: BTreeSet<String>,
}

impl Subscription {
    fn wants(&self, track: &str) -> bool {
        if self.all {
            !self.refused.contains(track)
        } else {
            self.chosen.contains(track)
        }
    }
}

struct Client {
    engine: Engine,
    /// Sources the client declared, by msid track id.
    sources: BTreeMap<String, Source>,
    subscription: Subscription,
    /// Forwarded tracks, by room track id.
    downlinks: BTreeMap<String, Downlink>,
    /// Transceivers whose track went away, kept (not sending) for the next subscription.
    spare: Vec<Downlink>,
    /// The client's own channels: id on its connection → label.
    channels: BTreeMap<ChannelId, String>,
    /// Channels relaying other clients' channels, by (publisher, label).
    relays: BTreeMap<(ClientId, String), Relay>,
    /// The track list last sent.
    announced: Option<Vec<AvailableTrack>>,
}

/// An SFU room: one engine per client. See the [crate docs](crate).
pub struct Room {
    config: RoomConfig,
    clients: BTreeMap<ClientId, Client>,
    /// Published tracks by room track id.
    tracks: BTreeMap<String, Track>,
    next_track: u64,
    queue: VecDeque<RoomOutput>,
    /// Clients whose engine may have output to drain.
    dirty: BTreeSet<ClientId>,
    counters: RoomCounters,
    /// The time of the latest input.
    now: Instant,
}

impl Room {
    /// An empty room.
    pub fn new(config: RoomConfig, now: Instant) -> Self {
        Self {
            config,
            clients: BTreeMap::new(),
            tracks: BTreeMap::new(),
            next_track: 1,
            queue: VecDeque::new(),
            dirty: BTreeSet::new(),
            counters: RoomCounters::default(),
            now,
        }
    }

    /// Adds a client with its engine configuration (the local addresses of its connection,
    /// its ICE servers, ...). The room's side is always impolite: `config.role` is replaced.
    /// The room's engine waits for the client's offer unless there is something to forward
    /// already, in which case it offers.
    pub fn add_client(
        &mut self,
        now: Instant,
        id: ClientId,
        mut config: Config,
    ) -> Result<(), politely_core::ConfigError> {
        self.now = now;
        config.role = Role::Impolite;
        let engine = Engine::new(config, now)?;
        let subscription = Subscription {
            all: self.config.subscribe_all,
            ..Default::default()
        };
        self.clients.insert(
            id.clone(),
            Client {
                engine,
                sources: BTreeMap::new(),
                subscription,
                downlinks: BTreeMap::new(),
                spare: Vec::new(),
                channels: BTreeMap::new(),
                relays: BTreeMap::new(),
                announced: None,
            },
        );
        // Other clients' channels reach the newcomer too.
        let channels: Vec<(ClientId, String)> = self
            .clients
            .iter()
            .filter(|(other, _)| **other != id)
            .flat_map(|(other, c)| c.channels.values().map(|l| (other.clone(), l.clone())))
            .collect();
        for (publisher, label) in channels {
            self.open_relay(&id, &publisher, &label);
        }
        self.announce(&id);
        self.reconcile(&id);
        self.dirty.insert(id);
        self.drain();
        Ok(())
    }

    /// Removes a client: its engine says `bye` (drain the output to send it), its tracks and
    /// channels are gone for everyone else.
    pub fn remove_client(&mut self, id: &str) {
        let Some(mut client) = self.clients.remove(id) else {
            return;
        };
        client.engine.close();
        while let Some(output) = client.engine.poll_output() {
            self.route(id, output, false);
        }
        let gone: Vec<String> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.publisher == id)
            .map(|(k, _)| k.clone())
            .collect();
        for track in gone {
            self.tracks.remove(&track);
        }
        let labels: Vec<String> = client.channels.into_values().collect();
        for other in self.clients.keys().cloned().collect::<Vec<_>>() {
            for label in &labels {
                self.close_relay(&other, id, label);
            }
        }
        self.everyone_changed();
        self.drain();
    }

    /// The clients in the room.
    pub fn clients(&self) -> impl Iterator<Item = &str> {
        self.clients.keys().map(String::as_str)
    }

    /// The engine of a client's connection, for inspection (its transceivers, counters).
    pub fn engine(&mut self, client: &str) -> Option<&mut Engine> {
        self.clients.get_mut(client).map(|c| &mut c.engine)
    }

    /// The tracks published now (without mids, which are per client).
    pub fn available(&self) -> Vec<AvailableTrack> {
        self.tracks
            .iter()
            .map(|(id, t)| AvailableTrack {
                id: id.clone(),
                publisher: t.publisher.clone(),
                kind: track_kind(t.kind),
                source: t.source,
                mid: None,
            })
            .collect()
    }

    /// Who published a track, and the track id of its `a=msid` on the publisher's connection
    /// (the id the publisher's `publish` message names).
    pub fn track_origin(&self, track: &str) -> Option<(&str, &str)> {
        self.tracks
            .get(track)
            .map(|t| (t.publisher.as_str(), t.msid_track.as_str()))
    }

    /// What the room did so far.
    pub fn counters(&self) -> RoomCounters {
        self.counters
    }

    /// Handles a signal's `data` from a client: a room message or its connection's negotiation.
    pub fn handle_data(&mut self, now: Instant, from: &str, data: &Value) -> Result<(), PeerError> {
        if RoomMessage::is_room(data) {
            let message =
                RoomMessage::from_json(data).map_err(|e| PeerError::MalformedSignal(e.0))?;
            self.handle_room_message(now, from, message);
            Ok(())
        } else {
            let signal = Signal::from_json(data).map_err(|e| match e {
                SignalError::Malformed(what) => PeerError::MalformedSignal(what),
                SignalError::Unsupported(what) => PeerError::Unsupported(what),
            })?;
            self.handle_signal(now, from, signal)
        }
    }

    /// Handles a negotiation signal from a client.
    pub fn handle_signal(
        &mut self,
        now: Instant,
        from: &str,
        signal: Signal,
    ) -> Result<(), PeerError> {
        self.now = now;
        let Some(client) = self.clients.get_mut(from) else {
            return Ok(());
        };
        let result = client.engine.handle_signal(now, signal);
        self.dirty.insert(from.to_owned());
        self.drain();
        result
    }

    /// Handles a room message from a client.
    pub fn handle_room_message(&mut self, now: Instant, from: &str, message: RoomMessage) {
        self.now = now;
        log::debug!("{from}: {}", message.to_json());
        let Some(client) = self.clients.get_mut(from) else {
            return;
        };
        match message {
            RoomMessage::Publish { track, source } => {
                client.sources.insert(track.clone(), source);
                let mut changed = false;
                for t in self.tracks.values_mut() {
                    let named = t.msid_track == track || t.msid_stream == track;
                    if t.publisher == from && named && t.source != source {
                        t.source = source;
                        changed = true;
                    }
                }
                if changed {
                    self.everyone_changed();
                }
            }
            RoomMessage::Subscribe(ids) => {
                for id in ids {
                    client.subscription.refused.remove(&id);
                    client.subscription.chosen.insert(id);
                }
                self.reconcile(from);
            }
            RoomMessage::Unsubscribe(ids) => {
                for id in ids {
                    client.subscription.chosen.remove(&id);
                    client.subscription.refused.insert(id);
                }
                self.reconcile(from);
            }
            // The room's own message; a client has no business sending it.
            RoomMessage::Tracks(_) => {}
        }
        self.drain();
    }

    /// Handles a datagram that arrived on a client's connection.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        client: &str,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        self.now = now;
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        c.engine.handle_datagram(now, source, destination, contents);
        self.dirty.insert(client.to_owned());
        self.drain();
    }

    /// Handles the passing of time; call it at [`poll_timeout`](Self::poll_timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        for (id, client) in &mut self.clients {
            if client.engine.poll_timeout().is_some_and(|at| at <= now) {
                client.engine.handle_timeout(now);
                self.dirty.insert(id.clone());
            }
        }
        self.drain();
    }

    /// The earliest timer of any client's engine.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.clients
            .values_mut()
            .filter_map(|c| c.engine.poll_timeout())
            .min()
    }

    /// The next output; `None` when there is nothing to do until the next input or timeout.
    pub fn poll_output(&mut self) -> Option<RoomOutput> {
        self.queue.pop_front()
    }

    // ------------------------------------------------------------------ inner workings

    /// Drains every engine that may have output, until none has: an event of one engine
    /// (a packet to forward, a track published) acts on others.
    fn drain(&mut self) {
        while let Some(id) = self.dirty.pop_first() {
            while let Some(output) = self
                .clients
                .get_mut(&id)
                .and_then(|c| c.engine.poll_output())
            {
                self.route(&id, output, true);
            }
        }
    }

    fn route(&mut self, id: &str, output: Output, act: bool) {
        match output {
            Output::Signal(signal) => self.queue.push_back(RoomOutput::Signal {
                to: id.to_owned(),
                message: ToClient::Negotiation(signal),
            }),
            Output::Transmit(transmit) => self.queue.push_back(RoomOutput::Transmit {
                client: id.to_owned(),
                transmit,
            }),
            Output::Event(event) if act => self.on_event(id, event),
            Output::Event(_) => {}
        }
    }

    fn on_event(&mut self, id: &str, event: Event) {
        match event {
            Event::Media(packet) => return self.forward(id, packet),
            Event::Message {
                channel,
                data,
                text,
            } => return self.relay(id, channel, data, text),
            Event::KeyframeRequested { transceiver } => {
                return self.keyframe_wanted_by(id, transceiver);
            }
            Event::TrackAdded {
                transceiver, kind, ..
            } => self.publish(id, transceiver, kind),
            Event::TrackRemoved { transceiver } => self.unpublish(id, transceiver),
            Event::ChannelOpen {
                id: channel,
                ref label,
                origin,
            } => self.channel_open(id, channel, label, origin),
            Event::ChannelClosed {
                id: channel,
                reopens,
            } => self.channel_closed(id, channel, reopens),
            Event::Negotiated { .. } => {
                // The forwarded tracks' mids are known now, or changed.
                self.announce(id);
                self.reconcile(id);
            }
            Event::ConnectionReplaced { .. } => self.connection_replaced(id),
            _ => {}
        }
        self.queue.push_back(RoomOutput::Event {
            client: id.to_owned(),
            event,
        });
    }

    /// The client's connection was replaced (a reloaded page that resumed its session, or a
    /// watchdog): it is told the tracks again, since a new page has not heard them. What it
    /// subscribed to belongs to the session and stays; its old tracks went with the old
    /// connection.
    fn connection_replaced(&mut self, id: &str) {
        if let Some(client) = self.clients.get_mut(id) {
            client.announced = None;
        }
        self.announce(id);
        self.reconcile(id);
    }

    /// A client's transceiver now receives: a track is published.
    fn publish(&mut self, id: &str, transceiver: TransceiverId, kind: MediaKind) {
        let Some(client) = self.clients.get_mut(id) else {
            return;
        };
        if self
            .tracks
            .values()
            .any(|t| t.publisher == id && t.transceiver == transceiver)
        {
            return;
        }
        let label = client
            .engine
            .transceivers()
            .into_iter()
            .find(|t| t.id == transceiver)
            .and_then(|t| t.remote_label)
            .unwrap_or(TrackLabel {
                stream_id: String::new(),
                track_id: String::new(),
            });
        // A `publish` names the msid's track id, or its stream id: Chromium's msid track id is
        // not the MediaStreamTrack's id, so a page names the stream it made for the track.
        let source = client
            .sources
            .get(&label.track_id)
            .or_else(|| client.sources.get(&label.stream_id))
            .copied()
            .unwrap_or_default();
        let (msid_track, msid_stream) = (label.track_id, label.stream_id);
        let track_id = format!("t{}", self.next_track);
        self.next_track += 1;
        self.counters.tracks_published += 1;
        log::debug!(
            "{id} publishes {track_id} on {transceiver} ({kind:?}, {source:?}, msid {msid_track})"
        );
        self.tracks.insert(
            track_id,
            Track {
                publisher: id.to_owned(),
                transceiver,
                kind,
                msid_track,
                msid_stream,
                source,
                last_keyframe_request: None,
            },
        );
        self.everyone_changed();
    }

    fn unpublish(&mut self, id: &str, transceiver: TransceiverId) {
        let before = self.tracks.len();
        self.tracks
            .retain(|_, t| !(t.publisher == id && t.transceiver == transceiver));
        if self.tracks.len() != before {
            self.everyone_changed();
        }
    }

    /// The tracks changed: every client's list and subscriptions follow.
    fn everyone_changed(&mut self) {
        for id in self.clients.keys().cloned().collect::<Vec<_>>() {
            self.announce(&id);
            self.reconcile(&id);
        }
    }

    /// Sends a client the tracks it may subscribe to, if they changed since the last list.
    fn announce(&mut self, id: &str) {
        let available = self.available();
        let Some(client) = self.clients.get_mut(id) else {
            return;
        };
        let mids: BTreeMap<TransceiverId, String> = client
            .engine
            .transceivers()
            .into_iter()
            .filter_map(|t| Some((t.id, t.mid?)))
            .collect();
        let list: Vec<AvailableTrack> = available
            .into_iter()
            .filter(|t| t.publisher != id)
            .map(|mut t| {
                t.mid = client
                    .downlinks
                    .get(&t.id)
                    .and_then(|d| mids.get(&d.transceiver).cloned());
                t
            })
            .collect();
        if client.announced.as_ref() == Some(&list) {
            return;
        }
        client.announced = Some(list.clone());
        self.queue.push_back(RoomOutput::Signal {
            to: id.to_owned(),
            message: ToClient::Room(RoomMessage::Tracks(list)),
        });
    }

    /// Brings a client's forwarded tracks in line with what it wants of what is published:
    /// a transceiver for each (reusing one a former track left, once the client has seen that
    /// one stop), none for the rest.
    fn reconcile(&mut self, id: &str) {
        let wanted: Vec<(String, ClientId, MediaKind)> = match self.clients.get(id) {
            Some(client) => self
                .tracks
                .iter()
                .filter(|(k, t)| t.publisher != id && client.subscription.wants(k))
                .map(|(k, t)| (k.clone(), t.publisher.clone(), t.kind))
                .collect(),
            None => return,
        };
        let Some(client) = self.clients.get_mut(id) else {
            return;
        };
        // Stop what is no longer wanted or published.
        let stale: Vec<String> = client
            .downlinks
            .keys()
            .filter(|k| !wanted.iter().any(|(w, ..)| w == *k))
            .cloned()
            .collect();
        for track in stale {
            if let Some(downlink) = client.downlinks.remove(&track) {
                // Receiving stays on: a client's addTrack may reuse this m-section to publish.
                if let Err(e) = client
                    .engine
                    .set_direction(downlink.transceiver, Direction::RecvOnly)
                {
                    log::warn!("{id}: stopping {track} on {}: {e}", downlink.transceiver);
                }
                client.spare.push(downlink);
            }
        }
        // Start what is wanted and not forwarded yet.
        let current: Vec<(TransceiverId, Option<Direction>)> = if wanted
            .iter()
            .any(|(k, ..)| !client.downlinks.contains_key(k))
        {
            client
                .engine
                .transceivers()
                .into_iter()
                .map(|t| (t.id, t.current_direction))
                .collect()
        } else {
            Vec::new()
        };
        for (track, publisher, kind) in wanted {
            if client.downlinks.contains_key(&track) {
                continue;
            }
            let label = TrackLabel {
                stream_id: publisher,
                track_id: track.clone(),
            };
            // A spare the client has seen stop sending, so the new track is a new `track`
            // event there rather than a silent change of msid on a live one.
            let stopped = |t: TransceiverId| {
                current
                    .iter()
                    .any(|(c, d)| *c == t && d.is_none_or(|d| !d.sends()))
            };
            let reusable = client
                .spare
                .iter()
                .position(|d| d.kind == kind && stopped(d.transceiver));
            let result = match reusable {
                Some(index) => {
                    let mut downlink = client.spare.remove(index);
                    downlink.needs_keyframe = true;
                    let t = downlink.transceiver;
                    client
                        .engine
                        .set_track_label(t, label)
                        .and_then(|()| client.engine.set_direction(t, Direction::SendRecv))
                        .map(|()| {
                            self.counters.transceivers_reused += 1;
                            downlink
                        })
                }
                None => client
                    .engine
                    .add_labelled_transceiver(kind, Direction::SendRecv, label)
                    .map(|transceiver| {
                        self.counters.transceivers_added += 1;
                        Downlink {
                            transceiver,
                            kind,
                            rewriter: Rewriter::default(),
                            needs_keyframe: true,
                        }
                    }),
            };
            match result {
                Ok(downlink) => {
                    client.downlinks.insert(track, downlink);
                }
                Err(e) => log::warn!("{id}: forwarding {track}: {e}"),
            }
        }
        self.dirty.insert(id.to_owned());
    }

    /// A publisher's packet, to every subscriber of its track.
    fn forward(&mut self, publisher: &str, packet: MediaPacket) {
        self.counters.packets_received += 1;
        let Some((track, kind)) = self
            .tracks
            .iter()
            .find(|(_, t)| t.publisher == publisher && t.transceiver == packet.transceiver)
            .map(|(k, t)| (k.clone(), t.kind))
        else {
            log::trace!(
                "{publisher}: RTP on {}, which carries no published track",
                packet.transceiver
            );
            return;
        };
        let mut keyframe = false;
        for (id, client) in &mut self.clients {
            let Some(downlink) = client.downlinks.get_mut(&track) else {
                continue;
            };
            let (sequence_number, timestamp) =
                downlink
                    .rewriter
                    .rewrite(&track, packet.sequence_number, packet.timestamp);
            let out = MediaPacket {
                transceiver: downlink.transceiver,
                sequence_number,
                timestamp,
                ..packet.clone()
            };
            match client.engine.write_rtp(downlink.transceiver, &out) {
                Ok(true) => {
                    self.counters.packets_forwarded += 1;
                    if downlink.needs_keyframe {
                        downlink.needs_keyframe = false;
                        keyframe |= kind == MediaKind::Video;
                    }
                    self.dirty.insert(id.clone());
                }
                Ok(false) => {
                    downlink.rewriter.not_sent();
                    self.counters.packets_not_sendable += 1;
                }
                Err(e) => {
                    downlink.rewriter.not_sent();
                    log::debug!("{id}: forwarding {track}: {e}");
                }
            }
        }
        if keyframe {
            self.request_keyframe(&track);
        }
    }

    /// A subscriber's decoder wants a keyframe of what its transceiver carries.
    fn keyframe_wanted_by(&mut self, id: &str, transceiver: TransceiverId) {
        let track = self.clients.get(id).and_then(|c| {
            c.downlinks
                .iter()
                .find(|(_, d)| d.transceiver == transceiver)
                .map(|(k, _)| k.clone())
        });
        if let Some(track) = track {
            self.request_keyframe(&track);
        }
    }

    /// Asks a track's publisher for a keyframe, at most once per interval.
    fn request_keyframe(&mut self, track: &str) {
        let Some(t) = self.tracks.get_mut(track) else {
            return;
        };
        let Some(publisher) = self.clients.get_mut(&t.publisher) else {
            return;
        };
        let now = self.now;
        if t.last_keyframe_request
            .is_some_and(|at| now.saturating_duration_since(at) < self.config.keyframe_interval)
        {
            self.counters.keyframe_requests_throttled += 1;
            return;
        }
        match publisher.engine.request_keyframe(t.transceiver) {
            Ok(true) => {
                t.last_keyframe_request = Some(now);
                self.counters.keyframe_requests += 1;
                self.dirty.insert(t.publisher.clone());
            }
            Ok(false) => {}
            Err(e) => log::debug!("keyframe of {track}: {e}"),
        }
    }

    fn channel_open(&mut self, id: &str, channel: ChannelId, label: &str, origin: Origin) {
        match origin {
            // The client's own channel: relayed to everyone else.
            Origin::Remote => {
                let Some(client) = self.clients.get_mut(id) else {
                    return;
                };
                client.channels.insert(channel, label.to_owned());
                for other in self.clients.keys().cloned().collect::<Vec<_>>() {
                    if other != id {
                        self.open_relay(&other, id, label);
                    }
                }
            }
            // One of the room's relays opened: what was held goes out.
            Origin::Local => {
                let Some(client) = self.clients.get_mut(id) else {
                    return;
                };
                let Some(relay) = client.relays.values_mut().find(|r| r.channel == channel) else {
                    return;
                };
                relay.open = true;
                while let Some((data, text)) = relay.held.pop_front() {
                    match client.engine.send(channel, &data, text) {
                        Ok(()) => self.counters.messages_relayed += 1,
                        Err(e) => log::debug!("{id}: relay on {channel}: {e}"),
                    }
                }
                self.dirty.insert(id.to_owned());
            }
        }
    }

    fn channel_closed(&mut self, id: &str, channel: ChannelId, reopens: bool) {
        let Some(client) = self.clients.get_mut(id) else {
            return;
        };
        if let Some(relay) = client.relays.values_mut().find(|r| r.channel == channel) {
            relay.open = false;
            if !reopens {
                client.relays.retain(|_, r| r.channel != channel);
            }
            return;
        }
        // A channel of the client's own closed for good: so do its relays.
        let Some(label) = client.channels.remove(&channel) else {
            return;
        };
        if client.channels.values().any(|l| *l == label) {
            return;
        }
        for other in self.clients.keys().cloned().collect::<Vec<_>>() {
            self.close_relay(&other, id, &label);
        }
    }

    /// Opens `<publisher>/<label>` on a client's connection, once.
    fn open_relay(&mut self, on: &str, publisher: &str, label: &str) {
        let Some(client) = self.clients.get_mut(on) else {
            return;
        };
        let key = (publisher.to_owned(), label.to_owned());
        if client.relays.contains_key(&key) {
            return;
        }
        let name = format!("{publisher}/{label}");
        match client.engine.create_data_channel(&name, Default::default()) {
            Ok(channel) => {
                client.relays.insert(
                    key,
                    Relay {
                        channel,
                        open: false,
                        held: VecDeque::new(),
                    },
                );
                self.dirty.insert(on.to_owned());
            }
            Err(e) => log::warn!("{on}: relaying {name}: {e}"),
        }
    }

    fn close_relay(&mut self, on: &str, publisher: &str, label: &str) {
        let Some(client) = self.clients.get_mut(on) else {
            return;
        };
        if let Some(relay) = client
            .relays
            .remove(&(publisher.to_owned(), label.to_owned()))
        {
            if let Err(e) = client.engine.close_data_channel(relay.channel) {
                log::debug!("{on}: closing {publisher}/{label}: {e}");
            }
            self.dirty.insert(on.to_owned());
        }
    }

    /// A message on a client's channel, to the same channel's relay at every other client.
    fn relay(&mut self, from: &str, channel: ChannelId, data: Vec<u8>, text: bool) {
        let Some(label) = self
            .clients
            .get(from)
            .and_then(|c| c.channels.get(&channel))
            .cloned()
        else {
            // On a channel the room opened: not relayed.
            return;
        };
        let key = (from.to_owned(), label);
        let limit = self.config.relay_queue;
        for (id, client) in &mut self.clients {
            let Some(relay) = client.relays.get_mut(&key) else {
                continue;
            };
            if relay.open {
                match client.engine.send(relay.channel, &data, text) {
                    Ok(()) => {
                        self.counters.messages_relayed += 1;
                        self.dirty.insert(id.clone());
                    }
                    Err(e) => log::debug!("{id}: relay of {}/{}: {e}", key.0, key.1),
                }
            } else if relay.held.len() < limit {
                relay.held.push_back((data.clone(), text));
            }
        }
    }
}

fn track_kind(kind: MediaKind) -> TrackKind {
    match kind {
        MediaKind::Audio => TrackKind::Audio,
        MediaKind::Video => TrackKind::Video,
    }
}
