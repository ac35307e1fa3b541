//! One peer connection: its handle, its events, and [`Peer`] for bring-your-own signaling.

use crate::channel::{DataChannel, Message};
use crate::config::PeerConfig;
use crate::driver::{Command, Driver, EventSink, Outgoing};
use crate::error::Error;
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use politely_core::{
    Certificate, ChannelInfo, ChannelOptions, ConnectionId, ConnectionState, Counters, Direction,
    Engine, MediaKind, MediaPacket, Recovery, ReplaceReason, Role, Signal, SignalingState,
    Timeline, TrackLabel, TransceiverId, TransceiverInfo, WatchdogCause,
};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Capacity of the queues of signals and commands between a driver and its handles.
pub(crate) const SIGNAL_QUEUE: usize = 256;

/// Something that happened on a peer connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum PeerEvent {
    /// ICE and DTLS are up.
    Connected,
    /// Connectivity was lost (`Disconnected` may recover by itself; `Failed` needs an ICE
    /// restart, which the engine's watchdog does).
    Disconnected {
        /// `Disconnected` or `Failed`.
        state: ConnectionState,
    },
    /// A data channel opened, on either side's initiative (see [`DataChannel::origin`]).
    ChannelOpen(DataChannel),
    /// A data channel closed for good.
    ChannelClosed(DataChannel),
    /// A message arrived (with [`Delivery::Events`](crate::Delivery::Events), the default).
    Message {
        /// The channel it arrived on.
        channel: DataChannel,
        /// The message.
        message: Message,
    },
    /// An offer/answer exchange completed and the connection is stable.
    Negotiated {
        /// Whether this side made the offer.
        local_offer: bool,
        /// The negotiation counters so far (offers, rollbacks, ignored offers, ...).
        counters: Counters,
    },
    /// The peer connection was replaced by a new one (new connection id); the application's
    /// channels and transceivers are re-created on it.
    Replaced {
        /// Why.
        reason: ReplaceReason,
    },
    /// The remote now sends on a transceiver (W3C `track`): reported when the description
    /// that says so is applied, before the first packet.
    TrackAdded {
        /// The transceiver, to match with [`PeerEvent::Media`] packets.
        transceiver: TransceiverId,
        /// Audio or video.
        kind: MediaKind,
        /// Its negotiated mid.
        mid: String,
        /// The remote's `a=msid` for it, if it gave one: through an SFU, the publisher's id
        /// (`stream_id`) and the room's track id (`track_id`).
        label: Option<TrackLabel>,
    },
    /// The remote stopped sending on a transceiver.
    TrackRemoved {
        /// The transceiver.
        transceiver: TransceiverId,
    },
    /// An RTP packet arrived on a remote track.
    Media(MediaPacket),
    /// The negotiation watchdog found no progress and acted.
    Watchdog {
        /// The likely cause.
        cause: WatchdogCause,
        /// What the engine did.
        recovery: Recovery,
    },
    /// An error the pattern does not expect: a malformed message from the peer.
    Error(politely_core::Error),
    /// The connection could not start: its sockets could not be bound, or gathering failed
    /// (with a relay-only policy, no TURN server gave an allocation). `Closed` follows.
    StartFailed(Error),
    /// The connection ended; its handle refuses further calls.
    Closed {
        /// True if the remote peer closed it (or left).
        by_remote: bool,
    },
}

/// A snapshot of a peer connection, for inspection and convergence checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    /// The current connection id.
    pub connection_id: ConnectionId,
    /// Whether this side is polite.
    pub polite: bool,
    /// The signaling state.
    pub signaling_state: SignalingState,
    /// The transport state.
    pub connection_state: ConnectionState,
    /// Whether this side's ICE agent controls (nominates the candidate pair); `None` before the
    /// transports start.
    pub ice_controlling: Option<bool>,
    /// Whether a description is pending (an offer in flight).
    pub has_pending_description: bool,
    /// Whether the engine wants to negotiate (a change is waiting for an offer).
    pub wants_to_negotiate: bool,
    /// The mids of the current descriptions.
    pub mids: Vec<String>,
    /// The data channels.
    pub channels: Vec<ChannelInfo>,
    /// The transceivers.
    pub transceivers: Vec<TransceiverInfo>,
    /// Negotiation counters.
    pub counters: Counters,
    /// When the current connection reached each step of its setup and of its latest exchange
    /// (where connection time goes; `politely bench connect` prints it by phase).
    pub timeline: Timeline,
}

impl PeerStats {
    pub(crate) fn of(engine: &mut Engine) -> Self {
        Self {
            connection_id: engine.connection_id().clone(),
            polite: engine.is_polite(),
            signaling_state: engine.signaling_state(),
            connection_state: engine.connection_state(),
            ice_controlling: engine.ice_controlling(),
            has_pending_description: engine.has_pending_description(),
            wants_to_negotiate: engine.wants_to_negotiate(),
            mids: engine.negotiated_mids(),
            channels: engine.channels(),
            transceivers: engine.transceivers(),
            counters: engine.counters(),
            timeline: engine.timeline(),
        }
    }

    /// Stable, with nothing pending and nothing waiting to be negotiated.
    pub fn is_settled(&self) -> bool {
        self.signaling_state == SignalingState::Stable
            && !self.has_pending_description
            && !self.wants_to_negotiate
    }
}

/// A handle to one peer connection: cheap to clone, usable from any task. Every call fails
/// with [`Error::Closed`] once the connection has ended.
#[derive(Clone)]
pub struct PeerHandle {
    pub(crate) id: Arc<str>,
    pub(crate) commands: mpsc::Sender<Command>,
    /// Who the remote is, from its room token (in a [`Session`](crate::Session) whose server
    /// requires tokens).
    pub(crate) user: Option<Arc<politely_proto::User>>,
}

impl PeerHandle {
    /// Who the remote peer is, as its room token says: on a server that requires tokens (JWTs
    /// with `sub`, and `name` and `metadata` when given); `None` otherwise.
    pub fn user(&self) -> Option<&politely_proto::User> {
        self.user.as_deref()
    }

    /// The remote peer's id (its server-assigned id in a [`Session`](crate::Session)).
    pub fn id(&self) -> &str {
        &self.id
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)
    }

    /// Creates a data channel; it opens once negotiated (see [`DataChannel::opened`]).
    /// Negotiation starts by itself, and glare with a change on the other side is resolved.
    pub async fn create_data_channel(
        &self,
        label: &str,
        options: ChannelOptions,
    ) -> Result<DataChannel, Error> {
        let label = label.to_owned();
        self.ask(|reply| Command::CreateChannel {
            label,
            options,
            reply,
        })
        .await?
    }

    /// Adds a transceiver of `kind` with `direction`.
    pub async fn add_transceiver(
        &self,
        kind: MediaKind,
        direction: Direction,
    ) -> Result<TransceiverId, Error> {
        self.ask(|reply| Command::AddTransceiver {
            kind,
            direction,
            reply,
        })
        .await?
    }

    /// Adds a transceiver with a sending track named by `label` (its `a=msid`): the remote's
    /// `track` event reports the label's stream and track ids. `direction` must send.
    pub async fn add_labelled_transceiver(
        &self,
        kind: MediaKind,
        direction: Direction,
        label: TrackLabel,
    ) -> Result<TransceiverId, Error> {
        self.ask(|reply| Command::AddLabelledTransceiver {
            kind,
            direction,
            label,
            reply,
        })
        .await?
    }

    /// Adds a sending track of `kind` (W3C addTrack).
    pub async fn add_track(&self, kind: MediaKind) -> Result<TransceiverId, Error> {
        self.ask(|reply| Command::AddTrack { kind, reply }).await?
    }

    /// Sends one encoded sample on a track: an Opus frame for audio, a VP8 frame for video
    /// (packetized as needed). `duration` is the sample's length; the RTP timestamp advances
    /// by it. Media is live: while the connection or the negotiated direction cannot carry
    /// the sample it is dropped and this returns `Ok(false)`.
    ///
    /// ```no_run
    /// # async fn run(peer: politely::PeerHandle) -> Result<(), politely::Error> {
    /// use politely::MediaKind;
    /// use std::time::Duration;
    ///
    /// let track = peer.add_track(MediaKind::Audio).await?;
    /// let frame = vec![0xf8, 0xff, 0xfe]; // an Opus frame of 20 ms (here: silence)
    /// let mut tick = tokio::time::interval(Duration::from_millis(20));
    /// loop {
    ///     tick.tick().await;
    ///     peer.write_sample(track, frame.clone(), Duration::from_millis(20)).await?;
    /// }
    /// # }
    /// ```
    pub async fn write_sample(
        &self,
        track: TransceiverId,
        data: impl Into<Bytes>,
        duration: Duration,
    ) -> Result<bool, Error> {
        let data = data.into();
        self.ask(|reply| Command::WriteSample {
            track,
            data,
            duration,
            reply,
        })
        .await?
    }

    /// Sends one RTP packet as it is on a transceiver's track: its numbering, marker, header
    /// extensions (by URI) and payload are the caller's; the SSRC, payload type and extension
    /// ids are this connection's. For media the application packetizes itself, or forwards;
    /// [`write_sample`](Self::write_sample) numbers and packetizes for you. `Ok(false)` when
    /// the track cannot send now.
    pub async fn write_rtp(
        &self,
        track: TransceiverId,
        packet: MediaPacket,
    ) -> Result<bool, Error> {
        self.ask(|reply| Command::WriteRtp {
            track,
            packet,
            reply,
        })
        .await?
    }

    /// Stops sending on a transceiver (W3C removeTrack).
    pub async fn remove_track(&self, id: TransceiverId) -> Result<(), Error> {
        self.ask(|reply| Command::RemoveTrack { id, reply }).await?
    }

    /// Gives the track on a transceiver new `a=msid` ids (W3C `sender.setStreams` with a
    /// replaced track); renegotiates. With [`set_direction`](Self::set_direction), this is how
    /// a client of an SFU publishes again on a transceiver it stopped (its direction without the
    /// send half) instead of adding an m-section each time.
    pub async fn set_track_label(&self, id: TransceiverId, label: TrackLabel) -> Result<(), Error> {
        self.ask(|reply| Command::SetTrackLabel { id, label, reply })
            .await?
    }

    /// Changes a transceiver's direction.
    pub async fn set_direction(
        &self,
        id: TransceiverId,
        direction: Direction,
    ) -> Result<(), Error> {
        self.ask(|reply| Command::SetDirection {
            id,
            direction,
            reply,
        })
        .await?
    }

    /// Restarts ICE (W3C restartIce): the next offer carries new credentials.
    pub async fn restart_ice(&self) -> Result<(), Error> {
        self.ask(|reply| Command::RestartIce { reply }).await?
    }

    /// A snapshot of the connection.
    pub async fn stats(&self) -> Result<PeerStats, Error> {
        self.ask(|reply| Command::Stats { reply }).await
    }

    /// Says `bye` to the peer and closes the connection.
    pub async fn close(&self) {
        // A driver that is gone is closed already.
        let _ = self.commands.send(Command::Close).await;
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.commands.is_closed()
    }
}

impl fmt::Debug for PeerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerHandle").field("id", &self.id).finish()
    }
}

/// What a spawned driver gives its owner.
pub(crate) struct Spawned {
    pub(crate) handle: PeerHandle,
    pub(crate) signals: mpsc::Sender<Signal>,
    pub(crate) task: JoinHandle<()>,
}

/// Binds the sockets, gathers, builds the engine and spawns its driver; an error in any of
/// these is returned.
pub(crate) async fn spawn<E: Send + 'static>(
    role: Role,
    remote: Arc<str>,
    config: &PeerConfig,
    certificate: Option<Certificate>,
    signals_out: mpsc::Sender<Outgoing>,
    events: EventSink<E>,
) -> Result<Spawned, Error> {
    let gathered = crate::gather::gather(config).await?;
    let engine = engine(role, config, certificate, &gathered)?;
    let start = async move { Ok((engine, gathered)) };
    Ok(launch(
        remote,
        config.clone(),
        signals_out,
        events,
        start,
        None,
    ))
}

/// Returns the handle at once and does the rest in the connection's own task, so that the
/// caller (a session serving other peers) never waits for gathering: STUN and TURN servers
/// may take `stun_timeout` each to answer. Calls on the handle wait until the engine runs. If
/// the connection cannot start, its events are [`PeerEvent::StartFailed`] and
/// [`PeerEvent::Closed`]. Nothing is reported before `go` is sent (or dropped): the owner
/// announces the peer first.
pub(crate) fn spawn_gathering<E: Send + 'static>(
    role: Role,
    remote: Arc<str>,
    config: PeerConfig,
    certificate: Option<Certificate>,
    signals_out: mpsc::Sender<Outgoing>,
    events: EventSink<E>,
) -> (Spawned, oneshot::Sender<()>) {
    let start_config = config.clone();
    let start = async move {
        let gathered = crate::gather::gather(&start_config).await?;
        let engine = engine(role, &start_config, certificate, &gathered)?;
        Ok((engine, gathered))
    };
    let (go, ready) = oneshot::channel();
    let spawned = launch(remote, config, signals_out, events, start, Some(ready));
    (spawned, go)
}

fn engine(
    role: Role,
    config: &PeerConfig,
    certificate: Option<Certificate>,
    gathered: &crate::gather::Gathered,
) -> Result<Engine, Error> {
    let mut engine_config = politely_core::Config::new(role, gathered.local_addrs.clone());
    engine_config.reflexive_addrs = gathered.reflexive.clone();
    engine_config.relay_addrs = gathered.relay_addrs();
    engine_config.ice_transport_policy = config.ice_transport_policy;
    engine_config.ice_servers = config.ice_servers.clone();
    engine_config.seed = RandomState::new().hash_one(Instant::now());
    engine_config.watchdog_timeout = config.watchdog_timeout;
    engine_config.ice_check_interval = config.ice_check_interval;
    engine_config.negotiation = config.negotiation;
    engine_config.certificate = certificate;
    Ok(Engine::new(engine_config, Instant::now())?)
}

/// The handle and queues of a connection whose driver runs once `start` has made its engine
/// (and `ready` has come, if given).
fn launch<E: Send + 'static>(
    remote: Arc<str>,
    config: PeerConfig,
    signals_out: mpsc::Sender<Outgoing>,
    events: EventSink<E>,
    start: impl std::future::Future<Output = Result<(Engine, crate::gather::Gathered), Error>>
    + Send
    + 'static,
    ready: Option<oneshot::Receiver<()>>,
) -> Spawned {
    let (commands_tx, commands_rx) = mpsc::channel(SIGNAL_QUEUE);
    let (signals_tx, signals_rx) = mpsc::channel(SIGNAL_QUEUE);
    let self_commands = commands_tx.downgrade();
    let id = remote.clone();
    let task = tokio::spawn(async move {
        let ready = async move {
            if let Some(ready) = ready {
                let _ = ready.await;
            }
        };
        let (started, ()) = tokio::join!(start, ready);
        match started {
            Ok((engine, gathered)) => {
                Driver::new(
                    engine,
                    remote,
                    gathered,
                    &config,
                    commands_rx,
                    self_commands,
                    signals_rx,
                    signals_out,
                    events,
                )
                .run()
                .await
            }
            Err(e) => {
                tracing::error!(peer = %remote, "the connection could not start: {e}");
                // Calls on the handle fail from now on.
                drop(commands_rx);
                let wrap = events.wrap;
                for event in [
                    PeerEvent::StartFailed(e),
                    PeerEvent::Closed { by_remote: false },
                ] {
                    if events.sender.send(wrap(&remote, event)).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    Spawned {
        handle: PeerHandle {
            id,
            commands: commands_tx,
            user: None,
        },
        signals: signals_tx,
        task,
    }
}

/// A peer connection over a signaling channel you bring: any [`Sink`] and [`Stream`] of
/// [`Signal`]s (the W3C shapes with a `connectionId`, see [`Signal::to_json`] and
/// [`Signal::from_json`]).
///
/// Dropping it closes the connection (the peer is told `bye`); its handles then refuse
/// further calls with [`Error::Closed`].
///
/// ```no_run
/// # async fn demo(signaling: impl futures_util::Sink<politely::Signal, Error = std::io::Error>
/// #     + futures_util::Stream<Item = politely::Signal> + Send + 'static) -> Result<(), politely::Error> {
/// use politely::{Peer, PeerConfig, PeerEvent, Role};
///
/// let mut peer = Peer::connect(Role::Polite, signaling, PeerConfig::loopback()).await?;
/// let chat = peer.create_data_channel("chat", Default::default()).await?;
/// chat.opened().await?;
/// chat.send_text("hello").await?;
/// while let Some(event) = peer.next_event().await {
///     if let PeerEvent::Message { message, .. } = event {
///         println!("{}", message.as_text().unwrap_or("<binary>"));
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Peer {
    handle: PeerHandle,
    events: mpsc::Receiver<PeerEvent>,
    task: JoinHandle<()>,
    pump: JoinHandle<()>,
}

impl Peer {
    /// Binds sockets, starts the engine, and begins negotiating over `signaling`.
    pub async fn connect<S, E>(role: Role, signaling: S, config: PeerConfig) -> Result<Peer, Error>
    where
        S: Sink<Signal, Error = E> + Stream<Item = Signal> + Send + 'static,
        E: fmt::Display + Send,
    {
        let (out_tx, mut out_rx) = mpsc::channel::<Outgoing>(SIGNAL_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(config.queue_capacity.max(1));
        let spawned = spawn(
            role,
            Arc::from("peer"),
            &config,
            None,
            out_tx,
            EventSink {
                sender: events_tx,
                wrap: |_, event| event,
            },
        )
        .await?;
        let signals_in = spawned.signals;
        // Moves signals between the driver's queues and the caller's channel; ends with
        // the driver (its queues close) or the caller's channel.
        let pump = tokio::spawn(async move {
            let (mut sink, mut stream) = signaling.split();
            let mut stream_open = true;
            loop {
                tokio::select! {
                    outgoing = out_rx.recv() => match outgoing {
                        Some(outgoing) => {
                            if let Err(e) = sink.send(outgoing.signal).await {
                                tracing::debug!("signaling sink: {e}");
                                return;
                            }
                        }
                        None => return,
                    },
                    incoming = stream.next(), if stream_open => match incoming {
                        Some(signal) => {
                            if signals_in.send(signal).await.is_err() {
                                return;
                            }
                        }
                        None => stream_open = false,
                    },
                }
            }
        });
        Ok(Peer {
            handle: spawned.handle,
            events: events_rx,
            task: spawned.task,
            pump,
        })
    }

    /// The next event; `None` once the connection has ended and every event was taken.
    pub async fn next_event(&mut self) -> Option<PeerEvent> {
        self.events.recv().await
    }

    /// A handle to the connection, to use from other tasks.
    pub fn handle(&self) -> PeerHandle {
        self.handle.clone()
    }

    /// Says `bye`, and waits until the connection has ended.
    pub async fn close(mut self) {
        self.handle.close().await;
        while self.events.recv().await.is_some() {}
        let _ = (&mut self.task).await;
        self.pump.abort();
    }
}

impl std::ops::Deref for Peer {
    type Target = PeerHandle;

    fn deref(&self) -> &PeerHandle {
        &self.handle
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // The driver sees its event queue closed and says `bye`; the pump ends with it.
        self.events.close();
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer").finish_non_exhaustive()
    }
}
