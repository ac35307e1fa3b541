//! The driver: one task per peer connection, running the engine's drain loop on tokio.
//!
//! The loop never awaits while it holds engine outputs: signals and events go to local queues
//! that the `select!` flushes as the receivers make room, and datagrams are sent at once
//! (a datagram that finds the socket's buffer full is dropped, as a congested link would).
//! So a slow application or signaling channel delays only what it receives, never the
//! engine's timers or the commands of the application's own calls: no deadlock between a
//! task that waits for the driver and a driver that waits for that task.
//!
//! While the event queue is full, no new input (datagram, signal) is taken: the peer
//! connection waits for the application, as a socket that is not read does.

use crate::channel::{ChannelShared, DataChannel, Message};
use crate::config::{Delivery, PeerConfig};
use crate::error::Error;
use crate::peer::{PeerEvent, PeerStats};
use crate::timer::DeadlineTimer;
use crate::turn::Allocation;
use bytes::Bytes;
use bytes::BytesMut;
use politely_core::{
    ChannelId, ChannelOptions, ConnectionState, Direction, Engine, Event, MediaKind, MediaPacket,
    Origin, Output, Signal, TrackLabel, TransceiverId, Transmit,
};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// The largest datagram read; anything WebRTC sends fits.
const MAX_DATAGRAM: usize = 65_536;

/// What handles ask of the driver.
pub(crate) enum Command {
    CreateChannel {
        label: String,
        options: ChannelOptions,
        reply: oneshot::Sender<Result<DataChannel, Error>>,
    },
    Send {
        channel: ChannelId,
        data: Bytes,
        text: bool,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    CloseChannel(ChannelId),
    AddTransceiver {
        kind: MediaKind,
        direction: Direction,
        reply: oneshot::Sender<Result<TransceiverId, Error>>,
    },
    AddLabelledTransceiver {
        kind: MediaKind,
        direction: Direction,
        label: TrackLabel,
        reply: oneshot::Sender<Result<TransceiverId, Error>>,
    },
    AddTrack {
        kind: MediaKind,
        reply: oneshot::Sender<Result<TransceiverId, Error>>,
    },
    RemoveTrack {
        id: TransceiverId,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    WriteSample {
        track: TransceiverId,
        data: Bytes,
        duration: Duration,
        reply: oneshot::Sender<Result<bool, Error>>,
    },
    WriteRtp {
        track: TransceiverId,
        packet: MediaPacket,
        reply: oneshot::Sender<Result<bool, Error>>,
    },
    SetDirection {
        id: TransceiverId,
        direction: Direction,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    SetTrackLabel {
        id: TransceiverId,
        label: TrackLabel,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    RestartIce {
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Stats {
        reply: oneshot::Sender<PeerStats>,
    },
    /// Say `bye` and end.
    Close,
    /// End without a word: the remote peer is gone (it left the room).
    Abort,
}

/// A signal to send, with the remote peer's id (the session addresses it by that).
pub(crate) struct Outgoing {
    pub(crate) to: Arc<str>,
    pub(crate) signal: Signal,
}

impl Outgoing {
    /// The server's `signal` frame that carries it.
    pub(crate) fn frame(&self) -> String {
        politely_proto::ClientMessage::signal(&*self.to, self.signal.to_raw()).to_json()
    }
}

/// Where a driver's events go: the [`Peer`](crate::Peer)'s own queue, or the session's queue
/// with the remote id attached.
pub(crate) struct EventSink<E> {
    pub(crate) sender: mpsc::Sender<E>,
    pub(crate) wrap: fn(&Arc<str>, PeerEvent) -> E,
}

pub(crate) struct Driver<E> {
    engine: Engine,
    remote: Arc<str>,
    sockets: Vec<UdpSocket>,
    local_addrs: Vec<SocketAddr>,
    /// Local addresses whose sends fail as if the address or its network were gone (a path
    /// change); each loss restarts ICE once.
    lost_addrs: Vec<SocketAddr>,
    /// `(base, mapped)`: a transmit from a mapped address leaves through its base socket.
    reflexive: Vec<(SocketAddr, SocketAddr)>,
    /// TURN allocations: a transmit from a relayed address goes through its client.
    relays: Vec<Allocation>,
    /// What the TURN clients relayed from peers, waiting to be fed to the engine.
    relayed: Vec<(SocketAddr, BytesMut)>,
    commands: mpsc::Receiver<Command>,
    /// For the handles the driver creates (channels opened by the remote); weak so that the
    /// driver alone never keeps itself alive.
    self_commands: mpsc::WeakSender<Command>,
    signals_in: Option<mpsc::Receiver<Signal>>,
    signals_out: mpsc::Sender<Outgoing>,
    events: EventSink<E>,
    pending_events: VecDeque<E>,
    pending_signals: VecDeque<Outgoing>,
    /// Per-channel messages waiting for room in their channel's queue, in arrival order.
    stalled: VecDeque<(mpsc::Sender<Message>, Message)>,
    channels: HashMap<ChannelId, ChannelEntry>,
    delivery: Delivery,
    capacity: usize,
    high_water: usize,
    buf: Vec<u8>,
    done: bool,
}

struct ChannelEntry {
    shared: Arc<ChannelShared>,
    inbox: Option<mpsc::Sender<Message>>,
}

impl<E: Send + 'static> Driver<E> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        engine: Engine,
        remote: Arc<str>,
        gathered: crate::gather::Gathered,
        config: &PeerConfig,
        commands: mpsc::Receiver<Command>,
        self_commands: mpsc::WeakSender<Command>,
        signals_in: mpsc::Receiver<Signal>,
        signals_out: mpsc::Sender<Outgoing>,
        events: EventSink<E>,
    ) -> Self {
        Self {
            engine,
            remote,
            sockets: gathered.sockets,
            local_addrs: gathered.local_addrs,
            lost_addrs: Vec::new(),
            reflexive: gathered.reflexive,
            relays: gathered.relays,
            relayed: Vec::new(),
            commands,
            self_commands,
            signals_in: Some(signals_in),
            signals_out,
            events,
            pending_events: VecDeque::new(),
            pending_signals: VecDeque::new(),
            stalled: VecDeque::new(),
            channels: HashMap::new(),
            delivery: config.delivery,
            capacity: config.queue_capacity.max(1),
            high_water: config.send_high_water,
            buf: vec![0; MAX_DATAGRAM],
            done: false,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut timer = DeadlineTimer::default();
        loop {
            self.drain();
            if self.done && self.pending_events.is_empty() && self.pending_signals.is_empty() {
                break;
            }
            let timeout = self.poll_timeout();
            let accept_input =
                !self.done && self.pending_events.len() < self.capacity && self.stalled.is_empty();
            let stalled = self.stalled.front().map(|(sender, _)| sender.clone());
            let wake = tokio::select! {
                biased;
                command = self.commands.recv(), if !self.done => Wake::Command(command),
                permit = self.events.sender.reserve(), if !self.pending_events.is_empty() => {
                    match permit {
                        Ok(permit) => {
                            permit.send(self.pending_events.pop_front().expect("not empty"));
                            Wake::Delivered
                        }
                        Err(_) => Wake::ReceiverGone,
                    }
                }
                permit = self.signals_out.reserve(), if !self.pending_signals.is_empty() => {
                    match permit {
                        Ok(permit) => {
                            permit.send(self.pending_signals.pop_front().expect("not empty"));
                        }
                        // The signaling is gone; what it would carry is moot.
                        Err(_) => self.pending_signals.clear(),
                    }
                    Wake::Delivered
                }
                permit = reserve_owned(stalled), if !self.stalled.is_empty() => Wake::Stalled(permit),
                () = self.events.sender.closed(), if !self.done => Wake::ReceiverGone,
                signal = recv_signal(&mut self.signals_in), if accept_input => Wake::Signal(signal),
                received = recv_any(&self.sockets, &mut self.buf), if accept_input => Wake::Datagram(received),
                () = timer.wait(timeout) => Wake::Timeout,
            };
            match wake {
                Wake::Command(Some(command)) => {
                    // The engine stamps what a change starts (an offer, in its timeline) with
                    // the time it was last told: tell it the time now. Not for the commands
                    // that carry data, which come in streams and start no negotiation.
                    if !matches!(
                        command,
                        Command::Send { .. }
                            | Command::WriteSample { .. }
                            | Command::WriteRtp { .. }
                    ) {
                        self.engine.handle_timeout(Instant::now());
                    }
                    self.command(command);
                }
                // Every handle is gone: nobody can use this connection any more.
                Wake::Command(None) => self.engine.close(),
                Wake::Delivered => {}
                Wake::ReceiverGone => self.receiver_gone(),
                Wake::Stalled(permit) => {
                    let (_, message) = self.stalled.pop_front().expect("not empty");
                    if let Some(permit) = permit {
                        permit.send(message);
                    }
                }
                Wake::Signal(Some(signal)) => {
                    if let Err(e) = self.engine.handle_signal(Instant::now(), signal) {
                        tracing::debug!(peer = %self.remote, "refused a signal: {e}");
                        self.push_event(PeerEvent::Error(e.into()));
                    }
                }
                // The signaling channel ended; the connection may live on without it.
                Wake::Signal(None) => self.signals_in = None,
                Wake::Datagram(Ok((index, len, source))) => self.datagram(index, len, source),
                Wake::Datagram(Err(e)) => tracing::debug!(peer = %self.remote, "UDP receive: {e}"),
                Wake::Timeout => {
                    let now = Instant::now();
                    self.engine.handle_timeout(now);
                    for relay in &mut self.relays {
                        relay.handle_timeout(now);
                        relay.flush(&self.sockets[relay.socket]);
                    }
                }
            }
        }
        for relay in &mut self.relays {
            relay.release(&self.sockets[relay.socket]);
        }
        for entry in self.channels.values() {
            entry.shared.set_closed();
        }
        tracing::debug!(peer = %self.remote, "driver ended");
    }

    /// The engine's next timer, or a TURN client's.
    fn poll_timeout(&mut self) -> Option<Instant> {
        let engine = self.engine.poll_timeout();
        self.relays
            .iter_mut()
            .filter_map(Allocation::poll_timeout)
            .chain(engine)
            .min()
    }

    /// A datagram on socket `index`: the TURN server's goes to its client (and what it
    /// relays to the engine, as received on the relayed address), any other to the engine.
    fn datagram(&mut self, index: usize, len: usize, source: SocketAddr) {
        let now = Instant::now();
        let contents = &self.buf[..len];
        let local = self.local_addrs[index];
        let Some(relay) = self
            .relays
            .iter_mut()
            .find(|r| r.socket == index && r.server == source)
        else {
            self.engine.handle_datagram(now, source, local, contents);
            return;
        };
        relay.handle_read(local, contents, &mut self.relayed);
        relay.flush(&self.sockets[index]);
        let relayed_addr = relay.relayed;
        for (peer, data) in self.relayed.drain(..) {
            self.engine.handle_datagram(now, peer, relayed_addr, &data);
        }
    }

    /// The application dropped its end: close politely and stop delivering.
    fn receiver_gone(&mut self) {
        self.pending_events.clear();
        self.stalled.clear();
        self.engine.close();
        self.drain();
        self.pending_events.clear();
    }

    /// Takes every output the engine has: events first, datagrams last (the engine orders them
    /// so; see its `poll_output`).
    fn drain(&mut self) {
        while let Some(output) = self.engine.poll_output() {
            match output {
                Output::Signal(signal) => self.pending_signals.push_back(Outgoing {
                    to: self.remote.clone(),
                    signal,
                }),
                Output::Transmit(transmit) => self.transmit(transmit),
                Output::Event(event) => self.event(event),
            }
        }
        for (id, entry) in &self.channels {
            if entry.shared.is_open_or_connecting() {
                entry.shared.set_buffered(self.engine.buffered_amount(*id));
            }
        }
    }

    fn transmit(&mut self, transmit: Transmit) {
        if let Some(relay) = self
            .relays
            .iter_mut()
            .find(|r| r.relayed == transmit.source)
        {
            relay.send_to(Instant::now(), &transmit.contents, transmit.destination);
            relay.flush(&self.sockets[relay.socket]);
            return;
        }
        let source = self
            .reflexive
            .iter()
            .find(|(_, mapped)| *mapped == transmit.source)
            .map_or(transmit.source, |(base, _)| *base);
        let Some(index) = self.local_addrs.iter().position(|a| *a == source) else {
            tracing::debug!(peer = %self.remote, %source, "no socket for a transmit");
            return;
        };
        match self.sockets[index].try_send_to(&transmit.contents, transmit.destination) {
            Ok(_) if !self.lost_addrs.is_empty() => self.lost_addrs.retain(|a| *a != source),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tracing::trace!(peer = %self.remote, "socket buffer full; datagram dropped");
            }
            Err(e) if !self.lost_addrs.contains(&source) && address_gone(&e, source) => {
                // The address went away (an interface down, a network left). rtc keeps the
                // pair it selected as long as the peer's packets arrive on any pair, and a
                // browser that moved to another one keeps sending: without a restart this end
                // would go on sending into the void. New checks find a path that works.
                tracing::info!(peer = %self.remote, %source, "sends fail ({e}): restarting ICE");
                self.lost_addrs.push(source);
                if let Err(e) = self.engine.restart_ice() {
                    tracing::debug!(peer = %self.remote, "ICE restart: {e}");
                }
            }
            Err(e) => {
                tracing::debug!(peer = %self.remote, to = %transmit.destination, "UDP send: {e}")
            }
        }
    }

    fn push_event(&mut self, event: PeerEvent) {
        self.pending_events
            .push_back((self.events.wrap)(&self.remote, event));
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::ConnectionStateChange(state) => match state {
                ConnectionState::Connected => self.push_event(PeerEvent::Connected),
                ConnectionState::Disconnected | ConnectionState::Failed => {
                    self.push_event(PeerEvent::Disconnected { state })
                }
                _ => {}
            },
            Event::ChannelOpen { id, label, origin } => {
                let channel = match self.channels.get(&id) {
                    Some(entry) => self.handle_of(&entry.shared),
                    None => self.new_channel(id, label, origin),
                };
                let Some(channel) = channel else { return };
                channel.shared.set_open(true);
                self.push_event(PeerEvent::ChannelOpen(channel));
            }
            Event::ChannelClosed { id, reopens } => {
                let Some(entry) = self.channels.get(&id) else {
                    return;
                };
                if reopens {
                    // The engine re-creates the application's channels on a replacement
                    // connection; the handle stays and opens again.
                    entry.shared.set_open(false);
                    return;
                }
                let entry = self.channels.remove(&id).expect("just found");
                entry.shared.set_closed();
                if let Some(channel) = self.handle_of(&entry.shared) {
                    self.push_event(PeerEvent::ChannelClosed(channel));
                }
            }
            Event::Message {
                channel,
                data,
                text,
            } => {
                let Some(entry) = self.channels.get(&channel) else {
                    return;
                };
                let message = Message {
                    data: Bytes::from(data),
                    text,
                };
                match &entry.inbox {
                    Some(inbox) => {
                        if !self.stalled.is_empty() {
                            self.stalled.push_back((inbox.clone(), message));
                            return;
                        }
                        match inbox.try_send(message) {
                            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                            Err(mpsc::error::TrySendError::Full(message)) => {
                                self.stalled.push_back((inbox.clone(), message))
                            }
                        }
                    }
                    None => {
                        let shared = entry.shared.clone();
                        if let Some(channel) = self.handle_of(&shared) {
                            self.push_event(PeerEvent::Message { channel, message });
                        }
                    }
                }
            }
            Event::Negotiated { local_offer } => {
                let counters = self.engine.counters();
                self.push_event(PeerEvent::Negotiated {
                    local_offer,
                    counters,
                });
            }
            Event::ConnectionReplaced { reason, .. } => {
                self.push_event(PeerEvent::Replaced { reason })
            }
            Event::TrackAdded {
                transceiver,
                kind,
                mid,
            } => {
                let label = self
                    .engine
                    .transceivers()
                    .into_iter()
                    .find(|t| t.id == transceiver)
                    .and_then(|t| t.remote_label);
                self.push_event(PeerEvent::TrackAdded {
                    transceiver,
                    kind,
                    mid,
                    label,
                })
            }
            Event::TrackRemoved { transceiver } => {
                self.push_event(PeerEvent::TrackRemoved { transceiver })
            }
            Event::Media(packet) => self.push_event(PeerEvent::Media(packet)),
            Event::Watchdog { cause, recovery } => {
                tracing::info!(peer = %self.remote, ?cause, ?recovery, "negotiation watchdog");
                self.push_event(PeerEvent::Watchdog { cause, recovery });
            }
            Event::Error(e) => {
                tracing::debug!(peer = %self.remote, "engine error: {e}");
                self.push_event(PeerEvent::Error(e));
            }
            Event::Closed { by_remote } => {
                self.done = true;
                self.push_event(PeerEvent::Closed { by_remote });
            }
            Event::Diagnostic(d) => tracing::debug!(peer = %self.remote, ?d, "negotiation"),
            Event::SignalingStateChange(s) => tracing::trace!(peer = %self.remote, ?s, "signaling"),
            other => tracing::debug!(peer = %self.remote, ?other, "engine event"),
        }
    }

    fn handle_of(&self, shared: &Arc<ChannelShared>) -> Option<DataChannel> {
        Some(DataChannel {
            shared: shared.clone(),
            commands: self.self_commands.upgrade()?,
        })
    }

    fn new_channel(&mut self, id: ChannelId, label: String, origin: Origin) -> Option<DataChannel> {
        let (inbox, receiver) = match self.delivery {
            Delivery::Events => (None, None),
            Delivery::PerChannel => {
                let (tx, rx) = mpsc::channel(self.capacity);
                (Some(tx), Some(rx))
            }
        };
        let shared = ChannelShared::new(id, label, origin, self.high_water, receiver);
        self.channels.insert(
            id,
            ChannelEntry {
                shared: shared.clone(),
                inbox,
            },
        );
        self.handle_of(&shared)
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::CreateChannel {
                label,
                options,
                reply,
            } => {
                let result = self
                    .engine
                    .create_data_channel(&label, options)
                    .map_err(Error::from)
                    .and_then(|id| {
                        self.new_channel(id, label, Origin::Local)
                            .ok_or(Error::Closed)
                    });
                let _ = reply.send(result);
            }
            Command::Send {
                channel,
                data,
                text,
                reply,
            } => {
                let result = self.engine.send(channel, &data, text);
                if let Err(e) = &result {
                    tracing::debug!(peer = %self.remote, %channel, "send failed: {e}");
                }
                let _ = reply.send(result.map_err(Error::from));
            }
            Command::CloseChannel(id) => {
                let result = self.engine.close_data_channel(id);
                let never_opened = self
                    .channels
                    .get(&id)
                    .is_some_and(|entry| !entry.shared.is_open());
                if result.is_err() || never_opened {
                    // Nothing will report this close: it is final now.
                    if let Some(entry) = self.channels.remove(&id) {
                        entry.shared.set_closed();
                    }
                }
            }
            Command::AddLabelledTransceiver {
                kind,
                direction,
                label,
                reply,
            } => {
                let _ = reply.send(
                    self.engine
                        .add_labelled_transceiver(kind, direction, label)
                        .map_err(Error::from),
                );
            }
            Command::AddTransceiver {
                kind,
                direction,
                reply,
            } => {
                let _ = reply.send(
                    self.engine
                        .add_transceiver(kind, direction)
                        .map_err(Error::from),
                );
            }
            Command::AddTrack { kind, reply } => {
                let _ = reply.send(self.engine.add_track(kind).map_err(Error::from));
            }
            Command::RemoveTrack { id, reply } => {
                let _ = reply.send(self.engine.remove_track(id).map_err(Error::from));
            }
            Command::WriteSample {
                track,
                data,
                duration,
                reply,
            } => {
                let written = self.engine.write_sample(track, &data, duration);
                let _ = reply.send(written.map_err(Error::from));
            }
            Command::WriteRtp {
                track,
                packet,
                reply,
            } => {
                let written = self.engine.write_rtp(track, &packet);
                let _ = reply.send(written.map_err(Error::from));
            }
            Command::SetTrackLabel { id, label, reply } => {
                let _ = reply.send(self.engine.set_track_label(id, label).map_err(Error::from));
            }
            Command::SetDirection {
                id,
                direction,
                reply,
            } => {
                let _ = reply.send(
                    self.engine
                        .set_direction(id, direction)
                        .map_err(Error::from),
                );
            }
            Command::RestartIce { reply } => {
                let _ = reply.send(self.engine.restart_ice().map_err(Error::from));
            }
            Command::Stats { reply } => {
                let _ = reply.send(PeerStats::of(&mut self.engine));
            }

            Command::Close => self.engine.close(),
            Command::Abort => {
                self.done = true;
                self.pending_signals.clear();
                self.push_event(PeerEvent::Closed { by_remote: true });
            }
        }
    }
}

/// What woke the driver.
enum Wake {
    Command(Option<Command>),
    Delivered,
    ReceiverGone,
    Stalled(Option<mpsc::OwnedPermit<Message>>),
    Signal(Option<Signal>),
    Datagram(io::Result<(usize, usize, SocketAddr)>),
    Timeout,
}

/// Room in the channel queue of the first stalled message; `None` if that queue is gone.
async fn reserve_owned(
    sender: Option<mpsc::Sender<Message>>,
) -> Option<mpsc::OwnedPermit<Message>> {
    sender?.reserve_owned().await.ok()
}

async fn recv_signal(signals: &mut Option<mpsc::Receiver<Signal>>) -> Option<Signal> {
    match signals {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Whether a send from `source` failed because that local address is gone. A send to a
/// remote candidate that has no route fails the same way (`ENETUNREACH`), with the local
/// address still there: only an address that can no longer be bound counts.
fn address_gone(e: &io::Error, source: SocketAddr) -> bool {
    let unreachable = matches!(
        e.kind(),
        io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkDown
    );
    unreachable
        && std::net::UdpSocket::bind((source.ip(), 0))
            .is_err_and(|e| e.kind() == io::ErrorKind::AddrNotAvailable)
}

/// The first datagram on any of the sockets: `(socket index, length, source)`.
async fn recv_any(sockets: &[UdpSocket], buf: &mut [u8]) -> io::Result<(usize, usize, SocketAddr)> {
    poll_fn(|cx| {
        for (index, socket) in sockets.iter().enumerate() {
            let mut read = ReadBuf::new(buf);
            if let Poll::Ready(result) = socket.poll_recv_from(cx, &mut read) {
                let len = read.filled().len();
                return Poll::Ready(result.map(|source| (index, len, source)));
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::address_gone;
    use std::io;

    #[test]
    fn only_a_lost_local_address_counts_as_gone() {
        let unreachable = || io::Error::from(io::ErrorKind::NetworkUnreachable);
        // No route to a remote candidate: the local address is still here.
        assert!(!address_gone(
            &unreachable(),
            "127.0.0.1:5000".parse().unwrap()
        ));
        // An address this machine does not have (documentation range): gone.
        assert!(address_gone(
            &unreachable(),
            "192.0.2.77:5000".parse().unwrap()
        ));
        // Any other failure is not about the address.
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(!address_gone(&refused, "192.0.2.77:5000".parse().unwrap()));
    }
}
