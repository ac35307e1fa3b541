//! The negotiation engine: one remote peer, one (replaceable) rtc peer connection.

use crate::config::{Config, Negotiation as Mode};
use crate::error::{ApiError, ConfigError, Error, PeerError};
use crate::event::{
    ConnectionState, Counters, Diagnostic, Event, Recovery, ReplaceReason, Timeline, WatchdogCause,
    mark,
};
use crate::media::{
    ChannelId, ChannelInfo, ChannelOptions, Direction, MediaKind, Origin, TrackLabel,
    TransceiverId, TransceiverInfo,
};
use crate::rng::Rng;
use crate::sdp;
use crate::signaling::SignalingState;
use bytes::BytesMut;
use politely_proto::signal::{
    Candidate, ConnectionId, Description, Gate, Payload, SdpKind, Signal,
};
use rtc::peer_connection::event::{RTCDataChannelEvent, RTCPeerConnectionEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::{RTCIceCandidateInit, RTCIceRole};
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;
use rtc::sansio::Protocol;
use rtc::shared::error::Error as RtcError;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::statistics::StatsSelector;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod connection;
mod feedback;
mod gate;
mod media;
mod negotiation;

use connection::{ChannelSlot, Connection, RtcDirections, rtc_internal};
use negotiation::{Decision, Exchange, Negotiation, PendingOffer, Situation, Step};

/// How many retired connection ids are remembered, so late messages for them are recognised.
const RETIRED_IDS: usize = 32;
/// How many candidates are buffered before any remote description; more are dropped.
const EARLY_CANDIDATES: usize = 64;
/// The stream of the hidden channel that carries the data section (see
/// [`Config::data_section`]). High enough that no peer's in-band channels reach it.
pub(crate) const DATA_SECTION_STREAM: u16 = 1000;

/// restartIce(): the local credentials to replace (W3C `[[LocalIceCredentialsToReplace]]`).
/// It persists until an exchange completes that restarts both ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IceRestart {
    /// The local ufrags to replace: those of the current and the pending local description
    /// at each ask.
    pub(crate) local: Vec<String>,
}

impl IceRestart {
    /// Whether an exchange satisfies the restart: the local ufrag is none of those to replace,
    /// and the remote's changed in this exchange too. rtc applies a restart when the offer is
    /// set and does not undo it on rollback, so a polite side that rolled back its restart
    /// offer answers the colliding offer with new credentials while the other end keeps its
    /// own. That is not a restart of the pair (the transport stalls on it), so the engine
    /// offers the restart again.
    fn done(&self, local: Option<&str>, remote_changed: bool) -> bool {
        remote_changed && !self.local.iter().any(|old| Some(old.as_str()) == local)
    }
}

/// Something the application must act on, drained with [`Engine::poll_output`].
///
/// Deliberately exhaustive, unlike [`Event`]: every output must be acted on (a datagram not
/// sent is a connection lost), so a new kind of output should break a drain loop at compile
/// time rather than fall into a wildcard arm.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this to the remote peer over the signaling channel.
    Signal(Signal),
    /// Send this datagram.
    Transmit(Transmit),
    /// Tell the application.
    Event(Event),
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The local address to send from (one of [`Config::local_addrs`]).
    pub source: SocketAddr,
    /// Where to send it.
    pub destination: SocketAddr,
    /// The payload.
    pub contents: Vec<u8>,
}

/// A local transceiver or channel the application asked for, replayed onto a new connection
/// when the current one is replaced.
#[derive(Debug, Clone)]
enum Intent {
    Channel {
        label: String,
        options: ChannelOptions,
    },
    Transceiver {
        kind: MediaKind,
        direction: Direction,
        /// A track is attached (the application's direction alone does not say: a
        /// transceiver added without one may be set to send later, and sends nothing).
        track: bool,
        /// The track's `a=msid`, if the application named it.
        label: Option<TrackLabel>,
    },
}

/// The perfect-negotiation engine for one remote peer. See the [crate docs](crate) for the
/// drain loop.
pub struct Engine {
    config: Config,
    polite: bool,
    rng: Rng,
    now: Instant,
    conn: Connection,
    retired: VecDeque<ConnectionId>,
    /// The connection this side gave up when it adopted the remote's in a collision.
    abandoned: Option<ConnectionId>,
    intents: BTreeMap<u32, Intent>,
    next_object_id: u32,
    queue: VecDeque<Output>,
    counters: Counters,
    backoff_until: Option<Instant>,
    /// rtc has work queued that only its next timer would send: run its timers at once (see
    /// `pump`).
    rtc_kick: bool,
    /// The remote refused our offer (`on_refused`): ours wait for its offer until then.
    refused_hold: Option<Instant>,
}

impl Engine {
    /// Creates an engine; `now` is the current time.
    pub fn new(config: Config, now: Instant) -> Result<Self, ConfigError> {
        let polite = config.role.is_polite()?;
        let mut rng = Rng::new(config.seed);
        let id = config
            .connection_id
            .clone()
            .unwrap_or_else(|| random_connection_id(&mut rng));
        let conn = Connection::new(id, &config, now)?;
        let mut engine = Self {
            config,
            polite,
            rng,
            now,
            conn,
            retired: VecDeque::new(),
            abandoned: None,
            intents: BTreeMap::new(),
            next_object_id: 0,
            queue: VecDeque::new(),
            counters: Counters::default(),
            backoff_until: None,
            rtc_kick: false,
            refused_hold: None,
        };
        engine.pump();
        Ok(engine)
    }

    // ---------------------------------------------------------------- getters

    /// Whether this side yields in a collision.
    pub fn is_polite(&self) -> bool {
        self.polite
    }

    /// The id of the current connection.
    pub fn connection_id(&self) -> &ConnectionId {
        &self.conn.id
    }

    /// The signaling state of the current connection.
    pub fn signaling_state(&self) -> SignalingState {
        self.conn.negotiation.signaling()
    }

    /// The transport state of the current connection.
    pub fn connection_state(&self) -> ConnectionState {
        self.conn.connection_state
    }

    /// Whether a local or remote description is pending (an exchange is half done).
    pub fn has_pending_description(&self) -> bool {
        self.conn.pc.pending_local_description().is_some()
            || self.conn.pc.pending_remote_description().is_some()
    }

    /// Whether the engine will make an offer as soon as it is stable (and out of back-off):
    /// the W3C negotiation-needed flag, or a pending ICE restart. Exact once
    /// [`poll_output`](Self::poll_output) has returned `None`.
    pub fn wants_to_negotiate(&self) -> bool {
        self.conn.negotiation_needed || self.conn.ice_restart.is_some()
    }

    /// Whether the negotiation gate holds anything on this connection: a lease granted to the
    /// remote and not ended, a request of the remote's waiting, or a request or an unused grant
    /// of this side's own. False whenever both ends have settled.
    pub fn gate_busy(&self) -> bool {
        let g = &self.conn.gate;
        g.lease_out(self.now) || g.waiting.is_some() || g.asked.is_some() || g.granted.is_some()
    }

    /// Negotiation counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// When the current connection reached each step of its setup and of its latest exchange.
    pub fn timeline(&self) -> Timeline {
        self.conn.timeline
    }

    /// The ICE ufrag of the current local description.
    pub fn local_ufrag(&self) -> Option<String> {
        sdp::ice_ufrag(&self.conn.current.as_ref()?.local).map(str::to_owned)
    }

    /// The ICE ufrag of the current remote description.
    pub fn remote_ufrag(&self) -> Option<String> {
        sdp::ice_ufrag(&self.conn.current.as_ref()?.remote).map(str::to_owned)
    }

    /// Whether this side's ICE agent is the controlling one (it nominates the candidate pair),
    /// or `None` before the transports start. The offerer of the first exchange controls; an
    /// ICE restart gives the role to the restart's offerer, as Chromium does.
    pub fn ice_controlling(&mut self) -> Option<bool> {
        let report = self.conn.pc.get_stats(self.now, StatsSelector::None);
        match report.transport()?.ice_role {
            RTCIceRole::Controlling => Some(true),
            RTCIceRole::Controlled => Some(false),
            _ => None,
        }
    }

    /// The mids of the current local description, in m-line order.
    pub fn negotiated_mids(&self) -> Vec<String> {
        self.conn
            .current
            .as_ref()
            .map(|c| c.local_sections.mids().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// A snapshot of every transceiver, in m-line creation order.
    pub fn transceivers(&mut self) -> Vec<TransceiverInfo> {
        let conn = &mut self.conn;
        let current = conn.current.as_ref();
        let mut out = Vec::with_capacity(conn.transceivers.len());
        for (index, slot) in conn.transceivers.iter().enumerate() {
            let Some(t) = conn.pc.rtp_transceiver(index) else {
                continue;
            };
            // Expose a mid only once it is negotiated, never a provisional one
            // (GetStream/stream-video-js PR #2344).
            let mid = t
                .mid()
                .clone()
                .filter(|m| current.is_some_and(|c| c.local_sections.mids().any(|n| n == m)));
            let current_direction = mid.as_deref().and_then(|m| current?.direction(m));
            let remote_label = mid.as_deref().and_then(|m| {
                let (stream, track) = current?.remote_sections.msid(m)?;
                Some(TrackLabel {
                    stream_id: stream.to_owned(),
                    track_id: track.unwrap_or_default().to_owned(),
                })
            });
            out.push(TransceiverInfo {
                id: slot.id,
                kind: slot.kind,
                mid,
                direction: slot.direction,
                current_direction,
                origin: slot.origin,
                has_track: slot.stream.is_some(),
                remote_label,
            });
        }
        out
    }

    /// A snapshot of every data channel.
    pub fn channels(&mut self) -> Vec<ChannelInfo> {
        let mut out = Vec::new();
        for (id, slot) in &self.conn.channels {
            let stream_id = self
                .conn
                .pc
                .data_channel(slot.rtc)
                .and_then(|dc| dc.stream_id());
            out.push(ChannelInfo {
                id: *id,
                label: slot.label.clone(),
                origin: slot.origin,
                open: slot.open,
                stream_id,
            });
        }
        for (id, label, _) in &self.conn.deferred_channels {
            out.push(ChannelInfo {
                id: *id,
                label: label.clone(),
                origin: Origin::Local,
                open: false,
                stream_id: None,
            });
        }
        out
    }

    // ---------------------------------------------------------------- inputs

    /// Handles a signaling message from the remote peer.
    ///
    /// A peer error leaves the engine as it was: the message is validated completely before
    /// anything changes. Expected anomalies (a colliding offer, a stale answer, a message for a
    /// retired connection) are not errors; they are reported as [`Diagnostic`] events.
    pub fn handle_signal(&mut self, now: Instant, signal: Signal) -> Result<(), PeerError> {
        self.now = now;
        if self.is_closed() {
            return Ok(());
        }
        let result = self.route(signal);
        self.pump();
        result
    }

    /// Handles a datagram that arrived from `source` on the local address `destination`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        self.now = now;
        if self.is_closed() {
            return;
        }
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: destination,
                peer_addr: source,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(contents),
        };
        // A datagram is untrusted input; one rtc cannot parse is dropped, as a network would.
        if let Err(e) = self.conn.pc.handle_read(msg) {
            log::debug!("[{}] dropped datagram from {source}: {e}", self.conn.id);
        }
        self.pump();
    }

    /// Advances timers to `now`. Call it when [`poll_timeout`](Self::poll_timeout) is reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.is_closed() {
            return;
        }
        if let Err(e) = self.conn.pc.handle_timeout(now) {
            log::debug!("[{}] rtc timeout handling failed: {e}", self.conn.id);
        }
        if self.backoff_until.is_some_and(|t| t <= now) {
            self.backoff_until = None;
        }
        if self.refused_hold.is_some_and(|t| t <= now) {
            self.refused_hold = None;
        }
        if self.watchdog_deadline().is_some_and(|t| t <= now) {
            self.fire_watchdog();
        }
        self.gate_timeout();
        self.pump();
    }

    // ---------------------------------------------------------------- intents

    /// Creates a data channel. It opens once negotiated; [`Event::ChannelOpen`] tells when.
    pub fn create_data_channel(
        &mut self,
        label: &str,
        options: ChannelOptions,
    ) -> Result<ChannelId, Error> {
        self.check_open()?;
        let id = ChannelId(self.next_id());
        let idle = self.watchdog_deadline().is_none();
        self.conn.create_channel(id, label, &options)?;
        if idle {
            // The watchdog now waits for this channel to open, from now.
            self.watch_from_now();
        }
        self.intents.insert(
            id.0,
            Intent::Channel {
                label: label.to_owned(),
                options,
            },
        );
        self.conn.negotiation_changed();
        Ok(id)
    }

    /// Closes a data channel.
    pub fn close_data_channel(&mut self, id: ChannelId) -> Result<(), Error> {
        self.check_open()?;
        self.intents.remove(&id.0);
        if let Some(i) = self.conn.deferred_channels.iter().position(|d| d.0 == id) {
            self.conn.deferred_channels.remove(i);
            return Ok(());
        }
        let slot = self
            .conn
            .channels
            .get(&id)
            .ok_or(ApiError::UnknownChannel(id))?;
        let opened = slot.open;
        if let Some(mut dc) = self.conn.pc.data_channel(slot.rtc) {
            dc.close().map_err(rtc_internal)?;
        }
        if !opened {
            // W3C closes a connecting channel at once. rtc may never report the close of one
            // whose opening handshake it lost, and a channel that is not open must not keep
            // the watchdog waiting for it to open. Its stream may already be on the wire (a
            // dialed opening): it is reserved when rtc reports the close, like any other.
            if let Some(slot) = self.conn.channels.remove(&id)
                && let Some(stream) = slot.stream
            {
                self.conn.closing_unopened.insert(slot.rtc, stream);
            }
            self.queue
                .push_back(Output::Event(Event::ChannelClosed { id, reopens: false }));
        }
        Ok(())
    }

    /// Sends a message on an open data channel.
    pub fn send(&mut self, channel: ChannelId, data: &[u8], text: bool) -> Result<(), Error> {
        self.check_open()?;
        if self.conn.deferred_channels.iter().any(|d| d.0 == channel) {
            return Err(ApiError::ChannelNotOpen(channel).into());
        }
        let slot = self
            .conn
            .channels
            .get(&channel)
            .ok_or(ApiError::UnknownChannel(channel))?;
        if !slot.open {
            return Err(ApiError::ChannelNotOpen(channel).into());
        }
        let now = self.now;
        let mut dc = self
            .conn
            .pc
            .data_channel(slot.rtc)
            .ok_or(ApiError::UnknownChannel(channel))?;
        let sent = if text {
            let s = std::str::from_utf8(data)
                .map_err(|_| ApiError::InvalidArgument("text message is not UTF-8".into()))?;
            dc.send_text(now, s)
        } else {
            dc.send(now, BytesMut::from(data))
        };
        sent.map_err(|e| match e {
            RtcError::ErrOutboundPacketTooLarge => ApiError::InvalidArgument(e.to_string()).into(),
            RtcError::ErrDataChannelNotOpen | RtcError::ErrDataChannelClosed => {
                ApiError::ChannelNotOpen(channel).into()
            }
            e => rtc_internal(e),
        })
    }

    /// Bytes handed to [`send`](Self::send) on `channel` that SCTP has not yet released
    /// (acknowledged or abandoned): the W3C `bufferedAmount`, for send back-pressure. Zero for
    /// a channel that is not open.
    pub fn buffered_amount(&mut self, channel: ChannelId) -> usize {
        let Some(slot) = self.conn.channels.get(&channel) else {
            return 0;
        };
        self.conn
            .pc
            .data_channel(slot.rtc)
            .map_or(0, |dc| dc.outstanding_bytes())
    }

    /// Adds a transceiver. Sending directions get a track with one encoding (Opus or VP8)
    /// and an SSRC drawn from the engine's seed.
    pub fn add_transceiver(
        &mut self,
        kind: MediaKind,
        direction: Direction,
    ) -> Result<TransceiverId, Error> {
        self.add_transceiver_inner(kind, direction, None)
    }

    /// Adds a transceiver with a sending track named by `label` (W3C `addTransceiver(track,
    /// {direction, streams})`): the remote's `track` event reports the label's stream and track
    /// ids. An SFU names each forwarded track after its publisher this way. `direction` must
    /// send.
    pub fn add_labelled_transceiver(
        &mut self,
        kind: MediaKind,
        direction: Direction,
        label: TrackLabel,
    ) -> Result<TransceiverId, Error> {
        if !direction.sends() {
            return Err(ApiError::InvalidArgument(format!(
                "a labelled track sends; {direction} does not"
            ))
            .into());
        }
        if !label.is_valid() {
            return Err(ApiError::InvalidArgument(format!(
                "{label:?}: msid ids are 1 to 64 SDP token characters"
            ))
            .into());
        }
        self.add_transceiver_inner(kind, direction, Some(label))
    }

    fn add_transceiver_inner(
        &mut self,
        kind: MediaKind,
        direction: Direction,
        label: Option<TrackLabel>,
    ) -> Result<TransceiverId, Error> {
        self.check_open()?;
        let id = TransceiverId(self.next_id());
        let ssrc = self.rng.next_u64() as u32;
        let track = direction.sends();
        self.conn
            .add_transceiver(id, kind, direction, track.then_some(ssrc), label.as_ref())?;
        self.intents.insert(
            id.0,
            Intent::Transceiver {
                kind,
                direction,
                track,
                label,
            },
        );
        self.conn.negotiation_changed();
        Ok(id)
    }

    /// Adds a sending track (W3C addTrack): reuses the first transceiver of the same kind
    /// that has no track and has never been used to send (one created by a remote offer, or
    /// one added without a track or whose track was removed before it was negotiated), or
    /// adds a sendrecv transceiver.
    pub fn add_track(&mut self, kind: MediaKind) -> Result<TransceiverId, Error> {
        self.check_open()?;
        let reusable = self
            .conn
            .transceivers
            .iter()
            .position(|s| s.kind == kind && s.stream.is_none() && !s.ever_sent);
        let Some(index) = reusable else {
            let id = TransceiverId(self.next_id());
            let ssrc = self.rng.next_u64() as u32;
            self.conn
                .add_transceiver(id, kind, Direction::SendRecv, Some(ssrc), None)?;
            // W3C setRemoteDescription may associate a transceiver addTrack created with a
            // remote offer's new m-section.
            if let Some(slot) = self.conn.transceivers.last_mut() {
                slot.reusable = true;
            }
            self.intents.insert(
                id.0,
                Intent::Transceiver {
                    kind,
                    direction: Direction::SendRecv,
                    track: true,
                    label: None,
                },
            );
            self.conn.negotiation_changed();
            return Ok(id);
        };
        let rng = &mut self.rng;
        self.conn.attach_track(index, || rng.next_u64() as u32)?;
        let slot = &mut self.conn.transceivers[index];
        // A reused remote-created transceiver now carries our track: it survives rollback and
        // is ours to replay on a new connection.
        slot.origin = Origin::Local;
        slot.pending_remote = false;
        slot.reusable = true;
        // W3C addTrack: a reused transceiver gains the send half of its direction.
        slot.direction = Direction::from_send_recv(true, slot.direction.receives());
        let (id, direction) = (slot.id, slot.direction);
        self.intents.insert(
            id.0,
            Intent::Transceiver {
                kind,
                direction,
                track: true,
                label: None,
            },
        );
        // rtc widened its own direction at once; media waits for the exchange.
        self.conn.set_rtc_directions(RtcDirections::Settled);
        self.conn.negotiation_changed();
        Ok(id)
    }

    /// Stops sending on a transceiver (W3C removeTrack); it stays, receiving. Does nothing
    /// to a transceiver without a track.
    ///
    /// rtc's own remove_track is not used: W3C addTrack never reuses a transceiver that has
    /// sent, and rtc's reuses any without a sender, so rtc keeps the sender and the engine
    /// says whether a track is on. The direction stops the sending.
    pub fn remove_track(&mut self, id: TransceiverId) -> Result<(), Error> {
        self.check_open()?;
        let index = self.conn.index_of(id)?;
        let slot = &mut self.conn.transceivers[index];
        if slot.stream.is_none() {
            return Ok(());
        }
        // W3C removeTrack: the send half of the direction goes, the receive half stays.
        slot.direction = Direction::from_send_recv(false, slot.direction.receives());
        slot.stream = None;
        let direction = slot.direction;
        if let Some(Intent::Transceiver {
            direction: d,
            track,
            ..
        }) = self.intents.get_mut(&id.0)
        {
            *d = direction;
            *track = false;
        }
        self.conn.negotiation_changed();
        Ok(())
    }

    /// Gives the track on a transceiver new stream and track ids (W3C `sender.setStreams` with
    /// a replaced track): the next exchange carries the new `a=msid`, and the remote's `track`
    /// event reports it. An SFU reuses a transceiver whose forwarded track went away for the
    /// next one this way, instead of adding an m-section for every track that ever came.
    pub fn set_track_label(&mut self, id: TransceiverId, label: TrackLabel) -> Result<(), Error> {
        self.check_open()?;
        if !label.is_valid() {
            return Err(ApiError::InvalidArgument(format!(
                "{label:?}: msid ids are 1 to 64 SDP token characters"
            ))
            .into());
        }
        let index = self.conn.index_of(id)?;
        let slot = &self.conn.transceivers[index];
        if slot.stream.is_none() {
            return Err(ApiError::InvalidArgument(format!("{id} has no track")).into());
        }
        if slot.stream.as_ref() == Some(&label) {
            return Ok(());
        }
        let kind = slot.kind;
        let sender_id = self.conn.sender_of(index)?;
        // rtc hands out a sender only while its own direction sends; an SFU relabels a
        // transceiver it had set inactive, so the direction is widened for the replacement.
        let rtc_direction = self.conn.pc.rtp_transceiver(index).map(|t| t.direction());
        if let (Some(direction), Some(mut t)) = (rtc_direction, self.conn.pc.rtp_transceiver(index))
            && !direction.has_send()
        {
            t.set_direction(RTCRtpTransceiverDirection::Sendonly);
        }
        let replaced = match self.conn.pc.rtp_sender(sender_id) {
            Some(mut sender) => {
                let ssrc = sender.track().ssrcs().next().unwrap_or_default();
                sender.replace_track(connection::make_track(kind, ssrc, Some(&label)))
            }
            None => Ok(()),
        };
        if let (Some(direction), Some(mut t)) = (rtc_direction, self.conn.pc.rtp_transceiver(index))
            && t.direction() != direction
        {
            t.set_direction(direction);
        }
        replaced.map_err(rtc_internal)?;
        let slot = &mut self.conn.transceivers[index];
        slot.stream = Some(label.clone());
        slot.rtc_stream = Some(label.clone());
        if let Some(Intent::Transceiver { label: l, .. }) = self.intents.get_mut(&id.0) {
            *l = Some(label);
        }
        self.conn.negotiation_changed();
        Ok(())
    }

    /// Sets a transceiver's preferred direction; renegotiates if it changes.
    pub fn set_direction(&mut self, id: TransceiverId, direction: Direction) -> Result<(), Error> {
        self.check_open()?;
        let index = self.conn.index_of(id)?;
        // Only [[Direction]] changes; media keeps flowing by the negotiated direction until
        // the next exchange applies this one (W3C: the setter updates negotiation-needed only).
        self.conn.transceivers[index].direction = direction;
        if let Some(Intent::Transceiver { direction: d, .. }) = self.intents.get_mut(&id.0) {
            *d = direction;
        }
        self.conn.negotiation_changed();
        Ok(())
    }

    /// Restarts ICE (W3C restartIce): the next offer carries new credentials, and the request
    /// persists across rollback and lost glare until new credentials are applied. Before the
    /// first local description there is nothing to restart and it does nothing.
    pub fn restart_ice(&mut self) -> Result<(), Error> {
        self.check_open()?;
        // W3C: the credentials of the current and the pending local description are the ones
        // to replace; a restart asked while a restart offer is pending restarts again.
        let Some(pending) = self.conn.pc.local_description() else {
            return Ok(());
        };
        let pending = sdp::ice_ufrag(&pending.sdp).map(str::to_owned);
        let current = self.local_ufrag();
        let restart = self
            .conn
            .ice_restart
            .get_or_insert(IceRestart { local: Vec::new() });
        for ufrag in [current, pending].into_iter().flatten() {
            if !restart.local.contains(&ufrag) {
                restart.local.push(ufrag);
            }
        }
        Ok(())
    }

    /// Closes the engine: says `bye` to the peer and closes the connection.
    pub fn close(&mut self) {
        if self.is_closed() {
            return;
        }
        self.send_signal(Payload::Bye { reconnect: false });
        self.finish(false);
    }

    /// Closes for good, on local request or on the peer's plain `bye`.
    fn finish(&mut self, by_remote: bool) {
        self.shut_down_connection();
        self.transition(Step::Close, "closed");
        self.queue
            .push_back(Output::Event(Event::Closed { by_remote }));
    }

    // ---------------------------------------------------------------- outputs

    /// The next output, or `None` when there is nothing to do until the next input or
    /// [`poll_timeout`](Self::poll_timeout). Call it until it returns `None` after every input.
    ///
    /// Negotiation runs here, as a browser queues negotiationneeded as a task: intents made
    /// back to back before draining coalesce into one offer.
    pub fn poll_output(&mut self) -> Option<Output> {
        loop {
            if let Some(out) = self.queue.pop_front() {
                return Some(out);
            }
            if self.is_closed() {
                return None;
            }
            if self.pump() {
                continue;
            }
            if self.maybe_grant() {
                continue;
            }
            if self.maybe_offer() {
                continue;
            }
            // Events first, writes last: datagrams that events produce (SCTP INIT on DTLS up,
            // DCEP OPEN on association up) leave in this same drain, not a timer tick later.
            if let Some(w) = self.conn.pc.poll_write() {
                return Some(transmit(w));
            }
            return None;
        }
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next; `None` means no timer.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        [
            self.conn.pc.poll_timeout(),
            self.watchdog_deadline(),
            self.backoff_until,
            self.refused_hold,
            self.conn.gate.deadline(self.gate_patience()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---------------------------------------------------------------- routing

    fn route(&mut self, signal: Signal) -> Result<(), PeerError> {
        let Signal {
            connection_id,
            payload,
        } = signal;
        if connection_id != self.conn.id {
            let is_offer = matches!(
                &payload,
                Payload::Description { description, .. } if description.kind == SdpKind::Offer
            );
            // An offer on the connection this side gave up to adopt the remote's: the remote
            // had heard from this side before and took this side's new connection for a
            // restart (a reloaded page whose first offer crossed the remote's offer on the old
            // one), so it left the adopted one. The rtc connection it negotiated with is gone
            // here, so this side starts a new connection, which the remote takes as a restart
            // too; both ends then start afresh on it.
            if is_offer && self.abandoned.as_ref() == Some(&connection_id) {
                if let Payload::Description { description, .. } = &payload {
                    parse_description(description)?;
                }
                let id = random_connection_id(&mut self.rng);
                self.replace_connection(id, Some(ReplaceReason::Collision));
                self.diagnose(Diagnostic::UnknownConnection(connection_id));
                return Ok(());
            }
            if self.retired.contains(&connection_id) {
                self.diagnose(Diagnostic::UnknownConnection(connection_id));
                return Ok(());
            }
            if !is_offer {
                self.diagnose(Diagnostic::UnknownConnection(connection_id));
                return Ok(());
            }
            // Validate before replacing anything: a malformed offer must not cost us the
            // current connection.
            if let Payload::Description { description, .. } = &payload {
                parse_description(description)?;
            }
            if self.conn.heard_from_remote {
                // The peer restarted (page reload, new process): replace the stale connection.
                self.replace_connection(connection_id, Some(ReplaceReason::RemoteRestarted));
            } else if !self.conn.sent {
                // First contact: nothing of ours was sent, so there is nothing to collide with.
                self.replace_connection(connection_id, None);
            } else if self.polite {
                // Two brand-new connections collided: the polite side adopts the remote's id.
                let own = self.conn.id.clone();
                self.replace_connection(connection_id, Some(ReplaceReason::Collision));
                self.abandoned = Some(own);
            } else {
                // The impolite side keeps its own; the polite side will adopt it.
                self.remember_retired(connection_id);
                self.counters.ignored_offers += 1;
                self.diagnose(Diagnostic::IgnoredOffer);
                return Ok(());
            }
        }
        self.conn.heard_from_remote = true;
        match payload {
            Payload::Description {
                description,
                offer_id,
                lease,
            } => match description.kind {
                SdpKind::Offer => self.on_remote_offer(description, offer_id, lease),
                SdpKind::Answer => self.on_remote_answer(description, offer_id),
            },
            Payload::Gate(gate) => {
                self.on_gate(gate);
                Ok(())
            }
            Payload::Candidate(candidate) => self.on_remote_candidate(candidate),
            Payload::Bye { reconnect: true } => {
                let id = random_connection_id(&mut self.rng);
                self.replace_connection(id, Some(ReplaceReason::RemoteRequested));
                Ok(())
            }
            Payload::Bye { reconnect: false } => {
                self.finish(true);
                Ok(())
            }
            Payload::Refused { offer_id } => self.on_refused(offer_id),
        }
    }

    /// The remote yielded to our offer `offer_id` and could not apply it. Take its offer
    /// instead: the one we ignored for ours if there is one (it still stands by it), else roll
    /// ours back and hold our offers until its new one is applied, for at most a watchdog
    /// period. Our changes go in our next offer.
    fn on_refused(&mut self, offer_id: u64) -> Result<(), PeerError> {
        let Negotiation::LocalOffer(pending) = &mut self.conn.negotiation else {
            return Ok(());
        };
        if pending.id != offer_id {
            return Ok(());
        }
        let ignored = pending.ignored.take();
        self.diagnose(Diagnostic::OfferRefused);
        match ignored {
            Some((offer, offer_id)) => {
                self.note_remote_offer(offer_id, &offer);
                let parsed = parse_description(&offer)?;
                self.apply_remote_offer(parsed, offer_id)
            }
            None => {
                self.rollback_local_offer();
                self.refused_hold = Some(self.now + self.config.watchdog_timeout);
                Ok(())
            }
        }
    }

    // ---------------------------------------------------------------- descriptions

    fn on_remote_offer(
        &mut self,
        description: Description,
        offer_id: Option<u64>,
        lease: Option<u64>,
    ) -> Result<(), PeerError> {
        self.counters.offers_received += 1;
        let duplicate = match (offer_id, self.conn.last_remote_offer_id) {
            (Some(id), Some(last)) => id <= last,
            (None, _) => self.conn.last_remote_offer_sdp.as_deref() == Some(&description.sdp),
            (Some(_), None) => false,
        };
        if duplicate {
            self.counters.stale_descriptions += 1;
            self.diagnose(Diagnostic::DuplicateOffer);
            self.answer_again(offer_id);
            return Ok(());
        }

        // The gate: an offer under the lease that is out ends it (this step answers it). A
        // renegotiation offer without one, from a peer that asks, is answered only when this
        // side is idle: with a lease out (to an earlier request) it is not.
        let gate = &mut self.conn.gate;
        let mut gate_busy = false;
        if gate.is_current_lease(lease, self.now) {
            gate.lease = None;
            self.counters.leases_used += 1;
        } else if gate.remote_asks && self.conn.current.is_some() {
            self.counters.offers_without_lease += 1;
            gate_busy = gate.lease_out(self.now);
        }

        // W3C webrtc-pc, "Perfect Negotiation Example" (current form, PR #2572). makingOffer
        // and isSettingRemoteAnswerPending cannot be true here (see `Connection`), so
        // readyForOffer is "stable".
        let ready_for_offer = matches!(self.conn.negotiation, Negotiation::Stable) && !gate_busy;
        let offer_collision = !ready_for_offer;
        // ignoreOffer is a local here, as in the newest WPT helper: what must outlive this
        // message (suppressing the ignored offer's candidate failures) has its own flag.
        let ignore_offer = !self.polite && offer_collision;
        if ignore_offer {
            self.counters.ignored_offers += 1;
            self.conn.suppress_candidate_errors = true;
            if let Negotiation::LocalOffer(pending) = &mut self.conn.negotiation {
                pending.ignored = Some((description, offer_id));
            }
            self.diagnose(Diagnostic::IgnoredOffer);
            return Ok(());
        }
        // Seen only once taken up: an ignored offer that comes again (the offerer heard no
        // answer and sent it again) is not a duplicate, and is answered if it can be now.
        self.note_remote_offer(offer_id, &description);
        // A polite rollback comes before rtc's own parse, so validate first: a malformed offer
        // must not cost us our own. Otherwise rtc parses before it changes anything.
        let offer = if offer_collision {
            parse_description(&description)?
        } else {
            unparsed(&description)
        };
        self.apply_remote_offer(offer, offer_id)
    }

    /// Records the remote offer being taken up, so that a repeat of it is recognised.
    fn note_remote_offer(&mut self, offer_id: Option<u64>, description: &Description) {
        self.conn.last_remote_offer_id = offer_id.or(self.conn.last_remote_offer_id);
        self.conn.last_remote_offer_sdp = Some(description.sdp.clone());
    }

    /// A repeat of the offer our current exchange answered: its offerer's watchdog heard no
    /// answer, so ours was lost. Say it again; the offer itself changes nothing here.
    fn answer_again(&mut self, offer_id: Option<u64>) {
        let Some(current) = &self.conn.current else {
            return;
        };
        if !matches!(self.conn.negotiation, Negotiation::Stable)
            || !current.local_is_answer
            || offer_id.is_none()
            || current.offer_id != offer_id
        {
            return;
        }
        let sdp = current.local.clone();
        self.send_signal(Payload::Description {
            description: Description {
                kind: SdpKind::Answer,
                sdp,
            },
            offer_id,
            lease: None,
        });
    }

    /// The watchdog heard no answer to our offer: send it again, as it was, and count the
    /// wait from now.
    fn resend_pending_offer(&mut self) {
        let watch_from = self.jittered_now();
        let Negotiation::LocalOffer(pending) = &mut self.conn.negotiation else {
            return;
        };
        pending.watch_from = watch_from;
        let (id, sdp, lease) = (pending.id, pending.sdp.clone(), pending.lease);
        self.send_signal(Payload::Description {
            description: Description {
                kind: SdpKind::Offer,
                sdp,
            },
            offer_id: Some(id),
            lease,
        });
    }

    /// SRD(offer) with the implicit rollback rtc lacks, then SLD(answer) and send it. The
    /// rollback and the SRD are one step: no other input can run between them.
    fn apply_remote_offer(
        &mut self,
        mut offer: RTCSessionDescription,
        offer_id: Option<u64>,
    ) -> Result<(), PeerError> {
        if matches!(self.conn.negotiation, Negotiation::LocalOffer(_)) {
            self.rollback_local_offer();
            self.diagnose(Diagnostic::RolledBack);
        }
        let now = self.now;
        let remote_sdp = offer.sdp.clone();
        // rtc would stop the transceivers this offer makes inactive (see the helper).
        let associated = self.conn.associated_mids();
        offer.sdp = sdp::with_inactive_as_recvonly(&offer.sdp, &associated);
        let shielded = self.conn.shield_unmatchable_transceivers();
        let applied = self.conn.pc.set_remote_description(now, offer);
        self.conn.unshield(shielded);
        if let Err(e) = applied {
            self.undo_failed_remote_offer();
            return Err(PeerError::InvalidDescription(e.to_string()));
        }
        self.transition(Step::RemoteOffer, "remote offer");
        mark(&mut self.conn.timeline.first_offer_received, now);
        self.conn.timeline.last_offer_received = Some(now);
        // An offer taken up ends a hold on ours (`on_refused`).
        self.refused_hold = None;
        self.pump();
        // Mirror the transceivers the offer created; rtc removes them again on rollback.
        self.conn
            .sync_new_transceivers(Origin::Remote, true, &mut self.next_object_id);
        self.conn
            .set_rtc_directions(RtcDirections::Answer(&remote_sdp));
        self.after_remote_description();
        if self.config.data_section
            && remote_sdp.contains("\nm=application")
            && let Err(e) = self.conn.ensure_data_section()
        {
            self.surface(e);
        }

        // Parameterless SLD in have-remote-offer creates and applies an answer (JSEP 5.4).
        let answer = match self.conn.pc.create_answer(None) {
            Ok(a) => a,
            Err(e) => {
                self.undo_failed_remote_offer();
                return Err(PeerError::InvalidDescription(e.to_string()));
            }
        };
        // RFC 8842 §5.5 / JSEP 5.3.1: an answer in a renegotiation keeps the DTLS role already
        // in place. rtc answers with its configured answering role instead, which flips the
        // role whenever the offerer changes sides (a browser refuses that). rtc only accepts
        // the answer it created and never acts on a renegotiation's role, so it applies its
        // own text while the peer is sent the text with the established role.
        let sent_sdp = match self.conn.established_setup() {
            Some(role) => sdp::with_setup(&answer.sdp, role),
            None => answer.sdp.clone(),
        };
        if let Err(e) = self.conn.pc.set_local_description(now, answer) {
            self.undo_failed_remote_offer();
            return Err(PeerError::InvalidDescription(e.to_string()));
        }
        self.transition(Step::LocalAnswer, "local answer");
        log::trace!(
            "[{}] remote offer:\n{remote_sdp}\nlocal answer:\n{sent_sdp}",
            self.conn.id
        );
        self.pump();
        self.counters.answers += 1;
        self.conn.timeline.last_answer_sent = Some(self.now);
        self.send_signal(Payload::Description {
            description: Description {
                kind: SdpKind::Answer,
                sdp: sent_sdp.clone(),
            },
            offer_id,
            lease: None,
        });
        self.trickle_local_candidates(&sent_sdp);
        self.on_negotiated(false, sent_sdp, remote_sdp, offer_id);
        Ok(())
    }

    fn on_remote_answer(
        &mut self,
        description: Description,
        offer_id: Option<u64>,
    ) -> Result<(), PeerError> {
        let parsed = unparsed(&description);
        if let Some(id) = offer_id
            && self.conn.rolled_back.contains(&id)
        {
            // We rolled that offer back, yet the remote applied it: it yielded to us while we
            // yielded to it. Both sides are polite; break the symmetry with a random back-off.
            self.counters.stale_descriptions += 1;
            self.on_both_polite();
            return Ok(());
        }
        let Negotiation::LocalOffer(pending) = &self.conn.negotiation else {
            self.counters.stale_descriptions += 1;
            self.diagnose(Diagnostic::AnswerWithoutOffer);
            return Ok(());
        };
        let (pending, local_sdp) = (pending.id, pending.sdp.clone());
        if let Some(answers) = offer_id
            && answers != pending
        {
            self.counters.stale_descriptions += 1;
            self.diagnose(Diagnostic::StaleAnswer {
                answers,
                pending: Some(pending),
            });
            return Ok(());
        }
        let remote_sdp = parsed.sdp.clone();
        let result = self.conn.pc.set_remote_description(self.now, parsed);
        if let Err(e) = result {
            self.pump();
            return Err(PeerError::InvalidDescription(e.to_string()));
        }
        self.transition(Step::RemoteAnswer, "remote answer");
        log::trace!(
            "[{}] local offer:\n{local_sdp}\nremote answer:\n{remote_sdp}",
            self.conn.id
        );
        self.pump();
        self.counters.answers_applied += 1;
        self.conn.timeline.last_answer_received = Some(self.now);
        self.after_remote_description();
        self.on_negotiated(true, local_sdp, remote_sdp, Some(pending));
        Ok(())
    }

    /// rtc's setRemoteDescription is not atomic: it can fail after entering have-remote-offer
    /// (an offer without ICE credentials, say). Roll rtc back so it agrees with our state.
    fn undo_failed_remote_offer(&mut self) {
        if self.conn.pc.pending_remote_description().is_some() {
            let rollback = RTCSessionDescription::rollback(None)
                .expect("invariant: a rollback description without SDP always builds");
            match self.conn.pc.set_remote_description(self.now, rollback) {
                // The offer was applied and the answer failed: our state moves back too.
                Ok(()) if matches!(self.conn.negotiation, Negotiation::RemoteOffer) => {
                    self.transition(Step::RemoteRollback, "answer failed");
                }
                Ok(()) => {}
                Err(e) => {
                    log::warn!(
                        "[{}] could not undo a failed remote offer: {e}",
                        self.conn.id
                    );
                }
            }
        }
        // rtc removed the transceivers the offer created (RFC 9429 §5.7); drop their slots.
        let count = self.conn.pc.get_transceivers().count();
        while self.conn.transceivers.len() > count {
            match self
                .conn
                .transceivers
                .iter()
                .rposition(|t| t.pending_remote)
            {
                Some(i) => {
                    self.conn.transceivers.remove(i);
                }
                None => break,
            }
        }
        // A failure part-way may have left transceivers behind; mirror them so ids stay right.
        self.conn
            .sync_new_transceivers(Origin::Remote, false, &mut self.next_object_id);
        self.conn.set_rtc_directions(RtcDirections::Settled);
        self.conn.negotiation_changed();
        self.pump();
    }

    /// Rolls back our pending offer to yield to a colliding one (polite). Its id is kept: an
    /// answer to it later means the remote yielded too (both polite). The watchdog never rolls
    /// an offer back; it sends it again (`resend_pending_offer`).
    fn rollback_local_offer(&mut self) {
        let rollback = RTCSessionDescription::rollback(None)
            .expect("invariant: a rollback description without SDP always builds");
        // In have-local-offer no transceiver is pending-remote (the flags clear on stable), so
        // rtc removes none and the mirror keeps its indices.
        if let Err(e) = self.conn.pc.set_local_description(self.now, rollback) {
            self.surface(Error::Peer(PeerError::InvalidDescription(format!(
                "rollback failed: {e}"
            ))));
            return;
        }
        let pending = match &self.conn.negotiation {
            Negotiation::LocalOffer(offer) => Some(offer.id),
            _ => None,
        };
        self.transition(Step::LocalRollback, "remote offer collided");
        self.conn.set_rtc_directions(RtcDirections::Settled);
        self.pump();
        if let Some(id) = pending {
            self.conn.rolled_back.push(id);
            if self.conn.rolled_back.len() > 16 {
                self.conn.rolled_back.remove(0);
            }
        }
        self.counters.rollbacks += 1;
        self.conn.timeline.last_rollback = Some(self.now);
    }

    /// The one place the negotiation state changes, and so the signaling state: every step
    /// goes through here, which checks it against W3C's table and emits the event.
    fn transition(&mut self, step: Step, reason: &str) {
        let old = self.conn.negotiation.signaling();
        if !step.allowed_from(old) {
            // rtc accepted an operation W3C's table forbids, or the engine took a step out of
            // turn: a bug, not peer input. rtc's state is the truth, so follow it.
            self.surface(Error::Internal(format!(
                "{reason}: {step:?} is not allowed in {old}"
            )));
        }
        self.conn.negotiation = step.into_state();
        let new = self.conn.negotiation.signaling();
        log::debug!("[{}] signaling {old} -> {new} ({reason})", self.conn.id);
        // negotiationneeded fires only in stable, and the flag is re-checked on the return to
        // stable (W3C webrtc-pc §4.7.3).
        if new == SignalingState::Stable {
            self.conn.negotiation_changed();
        } else {
            self.conn.negotiation_needed = false;
        }
        if new != old {
            self.queue
                .push_back(Output::Event(Event::SignalingStateChange(new)));
        }
    }

    /// After a remote description was applied: buffered candidates, ICE generations, and the
    /// end of candidate-error suppression.
    fn after_remote_description(&mut self) {
        // The cached current remote description is still the previous exchange's here.
        let ufrag = self
            .conn
            .pc
            .remote_description()
            .and_then(|d| sdp::ice_ufrag(&d.sdp).map(str::to_owned));
        let prev = self
            .conn
            .current
            .as_ref()
            .and_then(|c| sdp::ice_ufrag(&c.remote))
            .map(str::to_owned);
        if let (Some(ufrag), Some(prev)) = (ufrag, prev)
            && prev != ufrag
            && !self.conn.old_remote_ufrags.contains(&prev)
        {
            self.conn.old_remote_ufrags.push(prev);
        }
        for candidate in std::mem::take(&mut self.conn.early_candidates) {
            if let Err(e) = self.apply_candidate(candidate) {
                self.surface(Error::Peer(e));
            }
        }
        self.conn.suppress_candidate_errors = false;
    }

    /// An exchange completed: `local_sdp` and `remote_sdp` are now the current descriptions.
    fn on_negotiated(
        &mut self,
        local_offer: bool,
        local_sdp: String,
        remote_sdp: String,
        offer_id: Option<u64>,
    ) {
        for slot in &mut self.conn.transceivers {
            slot.pending_remote = false;
        }
        let previous_remote = self.remote_ufrag();
        self.conn.current = Some(Exchange::new(local_sdp, remote_sdp, !local_offer, offer_id));
        let remote_changed = previous_remote.is_none() || previous_remote != self.remote_ufrag();
        let ufrag = self.local_ufrag();
        if ufrag != self.conn.last_local_ufrag {
            if self.conn.last_local_ufrag.is_some() {
                self.counters.ice_restarts += 1;
            }
            self.conn.last_local_ufrag = ufrag.clone();
        }
        if let Some(restart) = &self.conn.ice_restart
            && restart.done(ufrag.as_deref(), remote_changed)
        {
            self.conn.ice_restart = None;
        }
        self.conn.note_senders_used();
        self.conn.negotiation_strikes = 0;
        self.watch_from_now();
        self.conn.set_rtc_directions(RtcDirections::Settled);
        self.conn.negotiation_changed();
        self.update_receiving();
        let timeline = &mut self.conn.timeline;
        mark(&mut timeline.first_negotiated, self.now);
        timeline.last_negotiated = Some(self.now);
        self.queue
            .push_back(Output::Event(Event::Negotiated { local_offer }));
    }

    // ---------------------------------------------------------------- offers

    /// negotiationneeded: makes an offer if one is needed and the connection is stable (or,
    /// in gate mode, asks for a lease first).
    fn maybe_offer(&mut self) -> bool {
        if !matches!(self.conn.negotiation, Negotiation::Stable) {
            return false;
        }
        if self.conn.negotiation_check {
            self.conn.negotiation_check = false;
            self.conn.negotiation_needed = self.conn.check_negotiation_needed();
        }
        let c = &mut self.conn;
        if !(c.negotiation_needed || c.ice_restart.is_some()) {
            c.gate.unanswered = false;
            return false;
        }
        if self.backoff_until.is_some_and(|t| t > self.now)
            || self.refused_hold.is_some_and(|t| t > self.now)
            || c.gate.lease_out(self.now)
        {
            // (A lease out to the remote: its offer comes first, for at most the lease.)
            return false;
        }
        let mut lease = None;
        if let Mode::Gate { lease: length } = self.config.negotiation
            && self.conn.current.is_some()
        {
            let g = &mut self.conn.gate;
            match g.granted.take() {
                Some(id) => lease = Some(id),
                None if g.unanswered => g.unanswered = false,
                None if g.asked.is_none() => {
                    self.ask_for_lease(length);
                    return true;
                }
                None => return false,
            }
        }
        if let Err(e) = self.make_offer(lease) {
            self.conn.negotiation_needed = false;
            self.surface(e);
        }
        true
    }

    // ---------------------------------------------------------------- the gate

    /// Asker: may I offer?
    fn ask_for_lease(&mut self, length: Duration) {
        let id = self.conn.gate.ask(self.now);
        self.counters.lease_requests += 1;
        self.send_signal(Payload::Gate(Gate::Request {
            id,
            lease_ms: gate::millis(length),
        }));
    }

    /// Keeper: a request told to wait is granted once this side is stable again, before this
    /// side's own next offer.
    fn maybe_grant(&mut self) -> bool {
        if !matches!(self.conn.negotiation, Negotiation::Stable)
            || self.conn.gate.lease_out(self.now)
        {
            return false;
        }
        let Some((id, asked)) = self.conn.gate.waiting.take() else {
            return false;
        };
        self.grant_lease(id, asked);
        true
    }

    fn grant_lease(&mut self, id: u64, asked: Duration) {
        let length = self
            .conn
            .gate
            .grant(id, asked, self.config.max_lease, self.now);
        self.counters.leases_granted += 1;
        self.send_signal(Payload::Gate(Gate::Grant {
            id,
            lease_ms: gate::millis(length),
        }));
    }

    fn on_gate(&mut self, message: Gate) {
        let now = self.now;
        let g = &mut self.conn.gate;
        match message {
            // Keeper.
            Gate::Request { id, lease_ms } => {
                g.remote_asks = true;
                let asked = Duration::from_millis(lease_ms);
                if let Some(lease) = g.lease
                    && lease.id == id
                    && lease.until > now
                {
                    // A repeat (our grant was lost): the same lease, for the time it has left.
                    let left = gate::millis(lease.until - now);
                    self.send_signal(Payload::Gate(Gate::Grant { id, lease_ms: left }));
                } else if matches!(self.conn.negotiation, Negotiation::Stable) {
                    self.grant_lease(id, asked);
                } else {
                    if g.waiting.is_none_or(|(w, _)| w != id) {
                        self.counters.requests_deferred += 1;
                    }
                    g.waiting = Some((id, asked));
                    self.send_signal(Payload::Gate(Gate::Wait { id }));
                }
            }
            Gate::Release { id } => g.release(id),
            // Asker.
            Gate::Grant { id, .. } => {
                let ours = g.asked.is_some_and(|(a, _)| a == id);
                if ours {
                    g.asked = None;
                }
                if ours && self.wants_to_negotiate() {
                    // maybe_offer uses it in this drain; if a remote offer comes first, it is
                    // answered and the lease still serves the offer after it.
                    self.conn.gate.granted = Some(id);
                } else {
                    // Nothing to offer any more, or a grant we stopped waiting for: hand it back
                    // so the keeper need not wait for its expiry.
                    self.send_signal(Payload::Gate(Gate::Release { id }));
                }
            }
            Gate::Wait { id } => {
                // The grant follows when the keeper's exchange ends: wait for it as long again.
                if let Some((a, at)) = &mut g.asked
                    && *a == id
                {
                    *at = now;
                }
            }
        }
    }

    /// The gate's timers: a lease that ran out (keeper); a request that heard nothing for the
    /// lease's time (asker), after which the asker offers without a lease.
    fn gate_timeout(&mut self) {
        let (now, patience) = (self.now, self.gate_patience());
        let g = &mut self.conn.gate;
        if g.expire(now) {
            self.counters.leases_expired += 1;
        }
        if let Some((_, at)) = g.asked
            && at + patience <= now
        {
            g.asked = None;
            g.unanswered = true;
        }
    }

    /// How long the asker waits for an answer to its request: the lease it asks for.
    fn gate_patience(&self) -> Duration {
        match self.config.negotiation {
            Mode::Gate { lease } => lease,
            Mode::Perfect => self.config.watchdog_timeout,
        }
    }

    fn make_offer(&mut self, lease: Option<u64>) -> Result<(), Error> {
        if self.conn.current.is_none() && !self.conn.has_application_objects() {
            // Only an ICE restart asked before anything was negotiated gets here; W3C
            // restartIce does nothing then, and an offer without an m-section could not be
            // applied by anyone.
            self.conn.ice_restart = None;
            return Ok(());
        }
        if self.conn.ice_restart.is_some() {
            self.conn.pc.restart_ice();
        }
        if self.config.data_section && self.conn.current.is_none() {
            self.conn.ensure_data_section()?;
        }
        self.conn.set_rtc_directions(RtcDirections::Offer);
        let offer = match self.conn.pc.create_offer(None) {
            Ok(offer) => offer,
            Err(e) => {
                self.conn.set_rtc_directions(RtcDirections::Settled);
                return Err(rtc_internal(e));
            }
        };
        if let Err(e) = self.conn.pc.set_local_description(self.now, offer.clone()) {
            self.conn.set_rtc_directions(RtcDirections::Settled);
            return Err(rtc_internal(e));
        }
        self.conn.next_offer_id += 1;
        let id = self.conn.next_offer_id;
        let watch_from = self.jittered_now();
        self.transition(
            Step::LocalOffer(PendingOffer {
                id,
                sdp: offer.sdp.clone(),
                lease,
                ignored: None,
                watch_from,
            }),
            "local offer",
        );
        self.pump();
        self.counters.offers += 1;
        mark(&mut self.conn.timeline.first_offer_sent, self.now);
        self.conn.timeline.last_offer_sent = Some(self.now);
        self.send_signal(Payload::Description {
            description: Description {
                kind: SdpKind::Offer,
                sdp: offer.sdp.clone(),
            },
            offer_id: Some(id),
            lease,
        });
        self.trickle_local_candidates(&offer.sdp);
        Ok(())
    }

    // ---------------------------------------------------------------- candidates

    fn on_remote_candidate(&mut self, candidate: Option<Candidate>) -> Result<(), PeerError> {
        // `candidate: null` ends the remote's gathering; rtc needs nothing for it.
        let Some(candidate) = candidate else {
            return Ok(());
        };
        if self.conn.pc.remote_description().is_none() {
            // W3C would reject with InvalidStateError; with trickle over a relay that only
            // means the description is still on its way (webrtc-pc #2519). Keep it for later.
            if self.conn.early_candidates.len() < EARLY_CANDIDATES {
                self.conn.early_candidates.push(candidate);
                self.diagnose(Diagnostic::BufferedCandidate);
            }
            return Ok(());
        }
        self.apply_candidate(candidate)
    }

    /// addIceCandidate with the W3C checks rtc skips: ufrag and mid must match the applied
    /// remote description (webrtc-pc addIceCandidate steps, #1227/#1580).
    fn apply_candidate(&mut self, candidate: Candidate) -> Result<(), PeerError> {
        if candidate.candidate.is_empty() {
            return Ok(()); // end-of-candidates for one m-section
        }
        let remote_sdp = self
            .conn
            .pc
            .remote_description()
            .map(|d| d.sdp.clone())
            .unwrap_or_default();
        let refusal = if let Some(ufrag) = candidate.username_fragment.as_deref()
            && sdp::ice_ufrag(&remote_sdp) != Some(ufrag)
        {
            if self.conn.old_remote_ufrags.iter().any(|u| u == ufrag) {
                self.counters.old_generation_candidates += 1;
                self.diagnose(Diagnostic::OldGenerationCandidate);
                return Ok(());
            }
            Some(format!(
                "ufrag {ufrag} matches no applied remote description"
            ))
        } else if let Some(mid) = candidate.sdp_mid.as_deref()
            && !sdp::mids(&remote_sdp).iter().any(|m| m == mid)
        {
            Some(format!("mid {mid} matches no remote m-section"))
        } else if sdp::is_hidden_candidate(&candidate.candidate) {
            self.counters.hidden_candidates += 1;
            self.diagnose(Diagnostic::HiddenCandidate);
            return Ok(());
        } else {
            self.conn
                .pc
                .add_remote_candidate(RTCIceCandidateInit {
                    candidate: candidate.candidate,
                    sdp_mid: candidate.sdp_mid,
                    sdp_mline_index: candidate.sdp_m_line_index,
                    username_fragment: candidate.username_fragment,
                    url: None,
                })
                .err()
                .map(|e| e.to_string())
        };
        match refusal {
            None => Ok(()),
            // The pattern: errors of candidates that belong to an ignored offer are expected.
            Some(_) if self.conn.suppress_candidate_errors => {
                self.counters.suppressed_candidates += 1;
                self.diagnose(Diagnostic::SuppressedCandidateError);
                Ok(())
            }
            Some(e) => Err(PeerError::InvalidCandidate(e)),
        }
    }

    /// Trickles the local candidates once per local ICE generation, then `candidate: null`,
    /// after the description `local_sdp` was sent.
    fn trickle_local_candidates(&mut self, local_sdp: &str) {
        if !self.config.trickle {
            return;
        }
        let ufrag = sdp::ice_ufrag(local_sdp).map(str::to_owned);
        if ufrag.is_none() || ufrag == self.conn.trickled_ufrag {
            return;
        }
        let mid = sdp::mids(local_sdp).into_iter().next();
        self.conn.trickled_ufrag = ufrag.clone();
        for c in self.conn.local_candidates.clone() {
            self.send_signal(Payload::Candidate(Some(Candidate {
                candidate: c.candidate,
                sdp_mid: mid.clone(),
                sdp_m_line_index: Some(0),
                username_fragment: ufrag.clone(),
            })));
        }
        self.send_signal(Payload::Candidate(None));
    }

    // ---------------------------------------------------------------- watchdog

    /// The watchdog's deadline, read from the state: the pending offer's answer, or in
    /// stable, the transport or a local channel while either is awaited.
    fn watchdog_deadline(&self) -> Option<Instant> {
        let wait = self.config.watchdog_timeout;
        match &self.conn.negotiation {
            Negotiation::LocalOffer(offer) => Some(offer.watch_from + wait),
            Negotiation::Stable if self.conn.awaits_transport() => {
                self.conn.watch_from.map(|t| t + wait)
            }
            _ => None,
        }
    }

    /// Now, plus up to half the watchdog's timeout at random, so two peers that stall
    /// together do not fire together.
    fn jittered_now(&mut self) -> Instant {
        self.now + self.config.watchdog_timeout.mul_f64(self.rng.unit() * 0.5)
    }

    /// The stable watchdog counts from now (progress: an exchange, a firing, a new channel).
    fn watch_from_now(&mut self) {
        self.conn.watch_from = Some(self.jittered_now());
    }

    fn fire_watchdog(&mut self) {
        let c = &self.conn;
        let situation = Situation {
            signaling: c.negotiation.signaling(),
            negotiation_strikes: c.negotiation_strikes,
            ignored_offer: matches!(&c.negotiation, Negotiation::LocalOffer(o) if o.ignored.is_some()),
            local_candidates: !c.local_candidates.is_empty(),
            connected: c.connection_state == ConnectionState::Connected,
            ice_connected: c.ice_connected,
            transport_strikes: c.transport_strikes,
            stalled_channel: c.has_stalled_channel(),
            channel_strikes: c.channel_strikes,
        };
        let decision = negotiation::decide(&situation);
        if decision.is_negotiation_strike() {
            self.conn.negotiation_strikes += 1;
        }
        if decision.is_transport_strike() {
            self.conn.transport_strikes += 1;
        }
        if decision.is_channel_strike() {
            self.conn.channel_strikes += 1;
        }
        // Whatever it does, the stable watchdog counts again from this firing.
        self.watch_from_now();
        match decision {
            Decision::NewConnection(cause) => self.watchdog_new_connection(cause),
            Decision::Recover(cause, recovery) => {
                self.report_watchdog(cause, recovery);
                match recovery {
                    Recovery::YieldedToIgnoredOffer => {
                        let ignored = match &mut self.conn.negotiation {
                            Negotiation::LocalOffer(offer) => offer.ignored.take(),
                            _ => None,
                        };
                        if let Some((offer, offer_id)) = ignored {
                            self.note_remote_offer(offer_id, &offer);
                            let applied = parse_description(&offer)
                                .and_then(|parsed| self.apply_remote_offer(parsed, offer_id));
                            if let Err(e) = applied {
                                self.surface(Error::Peer(e));
                            }
                        }
                    }
                    Recovery::ResendOffer => self.resend_pending_offer(),
                    Recovery::RestartIce => {
                        let _ = self.restart_ice();
                    }
                    _ => {}
                }
            }
            Decision::Nothing => {}
        }
    }

    fn on_both_polite(&mut self) {
        self.report_watchdog(WatchdogCause::BothPolite, Recovery::BackOff);
        if self.backoff_until.is_none() {
            let base = self.config.watchdog_timeout;
            let delay = base.mul_f64(0.1 + 0.9 * self.rng.unit());
            self.backoff_until = Some(self.now + delay);
        }
    }

    fn watchdog_new_connection(&mut self, cause: WatchdogCause) {
        self.report_watchdog(cause, Recovery::NewConnection);
        let nothing_to_offer = self.intents.is_empty();
        if nothing_to_offer {
            // An offer needs at least one m-section; ask the remote, which has something, to
            // open the new connection. Our fresh connection adopts its id on first contact.
            self.send_signal(Payload::Bye { reconnect: true });
        }
        let id = random_connection_id(&mut self.rng);
        self.replace_connection(id, Some(ReplaceReason::Watchdog));
    }

    fn report_watchdog(&mut self, cause: WatchdogCause, recovery: Recovery) {
        self.counters.watchdog_firings += 1;
        log::info!("[{}] watchdog: {cause:?}, {recovery:?}", self.conn.id);
        self.queue
            .push_back(Output::Event(Event::Watchdog { cause, recovery }));
    }

    // ---------------------------------------------------------------- connections

    /// Replaces the current connection by a new one bound to `id`, replaying the
    /// application's channels and transceivers onto it.
    fn replace_connection(&mut self, id: ConnectionId, reason: Option<ReplaceReason>) {
        self.abandoned = None;
        let fresh = match Connection::new(id.clone(), &self.config, self.now) {
            Ok(c) => c,
            Err(e) => {
                self.surface(Error::Config(e));
                return;
            }
        };
        // The old connection's exchange, if any, is abandoned; the new one starts stable.
        self.transition(Step::Replace, "connection replaced");
        self.shut_down_connection();
        let old = std::mem::replace(&mut self.conn, fresh);
        for (channel, slot) in &old.channels {
            if slot.open {
                let reopens = self.intents.contains_key(&channel.0);
                self.queue.push_back(Output::Event(Event::ChannelClosed {
                    id: *channel,
                    reopens,
                }));
            }
        }
        for &transceiver in &old.receiving {
            self.queue
                .push_back(Output::Event(Event::TrackRemoved { transceiver }));
        }
        self.remember_retired(old.id.clone());
        self.conn.negotiation_changed();
        for (raw, intent) in self.intents.clone() {
            let result = match intent {
                Intent::Channel { label, options } => {
                    self.conn.create_channel(ChannelId(raw), &label, &options)
                }
                Intent::Transceiver {
                    kind,
                    direction,
                    track,
                    label,
                } => {
                    let ssrc = self.rng.next_u64() as u32;
                    self.conn.add_transceiver(
                        TransceiverId(raw),
                        kind,
                        direction,
                        track.then_some(ssrc),
                        label.as_ref(),
                    )
                }
            };
            if let Err(e) = result {
                self.surface(e);
            }
        }
        self.pump();
        if let Some(reason) = reason {
            self.counters.connections_replaced += 1;
            self.queue
                .push_back(Output::Event(Event::ConnectionReplaced {
                    old: old.id,
                    new: id,
                    reason,
                }));
        }
    }

    /// Closes the current rtc connection and queues its last datagrams (SCTP ABORT, DTLS
    /// close_notify) so the peer learns at once.
    fn shut_down_connection(&mut self) {
        let _ = self.conn.pc.close();
        while let Some(w) = self.conn.pc.poll_write() {
            self.queue.push_back(transmit(w));
        }
        while self.conn.pc.poll_event().is_some() {}
    }

    fn remember_retired(&mut self, id: ConnectionId) {
        if self.retired.len() == RETIRED_IDS {
            self.retired.pop_front();
        }
        self.retired.push_back(id);
    }

    // ---------------------------------------------------------------- rtc events

    /// Drains rtc's events and reads; returns whether anything was drained.
    fn pump(&mut self) -> bool {
        let mut any = false;
        loop {
            let mut progressed = false;
            // rtc walks some of its maps in a per-process random order, so channel events of
            // one drain come out in any order. Handle them by SCTP stream id, which is itself
            // deterministic, so the engine's channel ids and events are the same in every
            // process. Other events keep rtc's order.
            let mut channel_events = Vec::new();
            while let Some(event) = self.conn.pc.poll_event() {
                progressed = true;
                match event {
                    RTCPeerConnectionEvent::OnDataChannel(e) => channel_events.push(e),
                    other => self.on_rtc_event(other),
                }
            }
            channel_events.sort_by_key(|e| self.conn.stream_of_event(e));
            for e in channel_events {
                self.on_rtc_event(RTCPeerConnectionEvent::OnDataChannel(e));
            }
            // Messages likewise, by stream; the sort is stable, so each channel keeps its order.
            let mut messages = Vec::new();
            while let Some(read) = self.conn.pc.poll_read() {
                progressed = true;
                match read.message {
                    RTCMessage::DataChannelMessage(rtc_id, msg) => messages.push((rtc_id, msg)),
                    RTCMessage::RtpPacket(_, packet) => self.on_rtp(packet),
                    RTCMessage::RtcpPacket(_, packets) => self.on_rtcp(&packets),
                    _ => {}
                }
            }
            messages.sort_by_key(|(rtc_id, _)| self.conn.stream_of(*rtc_id));
            for (rtc_id, msg) in messages {
                if let Some(channel) = self.conn.channel_by_rtc(rtc_id) {
                    mark(&mut self.conn.timeline.first_message, self.now);
                    self.queue.push_back(Output::Event(Event::Message {
                        channel,
                        data: msg.data.to_vec(),
                        text: msg.is_string,
                    }));
                }
            }
            if !progressed && std::mem::take(&mut self.rtc_kick) {
                // rtc's DTLS client writes its first flight when ICE selects a pair, into a
                // queue that only its next read or timer empties: on a quiet connection that
                // is the next ICE tick, milliseconds later. Its timers are run now instead
                // (none is due, so only the queue moves).
                if let Err(e) = self.conn.pc.handle_timeout(self.now) {
                    log::debug!("[{}] rtc timeout handling failed: {e}", self.conn.id);
                }
                continue;
            }
            if !progressed {
                match self.conn.flush_deferred_channels() {
                    // The association came up: the channels' wait starts now.
                    Ok(true) => self.watch_from_now(),
                    Ok(false) => {}
                    Err(e) => self.surface(e),
                }
                return any;
            }
            any = true;
        }
    }

    fn on_rtc_event(&mut self, event: RTCPeerConnectionEvent) {
        match event {
            // rtc's negotiation-needed compares against directions rtc overwrote; the engine
            // runs the W3C check itself (see `negotiation_needed`), so rtc's event is not used.
            RTCPeerConnectionEvent::OnNegotiationNeededEvent => {}
            RTCPeerConnectionEvent::OnSignalingStateChangeEvent(state) => {
                log::trace!("[{}] rtc signaling {state}", self.conn.id);
            }
            RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(state) => {
                self.conn.ice_connected = matches!(
                    state,
                    RTCIceConnectionState::Connected | RTCIceConnectionState::Completed
                );
                if self.conn.ice_connected {
                    mark(&mut self.conn.timeline.ice_connected, self.now);
                    self.rtc_kick = true;
                }
            }
            RTCPeerConnectionEvent::OnIceCandidateEvent(e) => match e.candidate.to_json() {
                Ok(init) => self.conn.local_candidates.push(init),
                Err(err) => log::warn!("[{}] local candidate unusable: {err}", self.conn.id),
            },
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                let new = match state {
                    RTCPeerConnectionState::Connecting => ConnectionState::Connecting,
                    RTCPeerConnectionState::Connected => ConnectionState::Connected,
                    RTCPeerConnectionState::Disconnected => ConnectionState::Disconnected,
                    RTCPeerConnectionState::Failed => ConnectionState::Failed,
                    RTCPeerConnectionState::Closed => ConnectionState::Closed,
                    _ => ConnectionState::New,
                };
                if new != self.conn.connection_state {
                    self.conn.connection_state = new;
                    self.queue
                        .push_back(Output::Event(Event::ConnectionStateChange(new)));
                }
                match new {
                    ConnectionState::Connected => {
                        self.conn.transport_strikes = 0;
                        mark(&mut self.conn.timeline.connected, self.now);
                    }
                    // MDN: on failure, restart ICE.
                    ConnectionState::Failed => {
                        let _ = self.restart_ice();
                    }
                    _ => {}
                }
            }
            // A hidden channel (data section or reserve) opens only on a live association.
            RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnOpen(rtc_id))
                if self.conn.is_hidden_channel(rtc_id) =>
            {
                self.conn.sctp_ready = true;
                mark(&mut self.conn.timeline.sctp_up, self.now);
            }
            RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnClose(rtc_id))
                if self.conn.is_hidden_channel(rtc_id) =>
            {
                self.conn.renew_reserve(rtc_id);
            }
            RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnOpen(rtc_id)) => {
                self.conn.sctp_ready = true;
                mark(&mut self.conn.timeline.sctp_up, self.now);
                mark(&mut self.conn.timeline.channel_open, self.now);
                let id = match self.conn.channel_by_rtc(rtc_id) {
                    Some(id) => id,
                    None => {
                        let id = ChannelId(self.next_id());
                        let label = self
                            .conn
                            .pc
                            .data_channel(rtc_id)
                            .map(|dc| dc.label().to_owned())
                            .unwrap_or_default();
                        self.conn.channels.insert(
                            id,
                            ChannelSlot {
                                rtc: rtc_id,
                                label,
                                origin: Origin::Remote,
                                open: false,
                                stream: None,
                            },
                        );
                        id
                    }
                };
                let stream = self
                    .conn
                    .pc
                    .data_channel(rtc_id)
                    .and_then(|dc| dc.stream_id());
                if let Some(slot) = self.conn.channels.get_mut(&id)
                    && !slot.open
                {
                    slot.open = true;
                    slot.stream = slot.stream.or(stream);
                    let (label, origin) = (slot.label.clone(), slot.origin);
                    // Strikes count a stall: they end when no local channel is left waiting,
                    // not when another channel opens beside the one that is stuck.
                    if origin == Origin::Local && !self.conn.has_unopened_local_channel() {
                        self.conn.channel_strikes = 0;
                    }
                    self.queue
                        .push_back(Output::Event(Event::ChannelOpen { id, label, origin }));
                }
            }
            RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnClose(rtc_id)) => {
                if let Some(id) = self.conn.channel_by_rtc(rtc_id) {
                    self.on_channel_closed(id);
                } else if let Some(stream) = self.conn.closing_unopened.remove(&rtc_id) {
                    self.conn.reserve_stream(stream);
                }
            }
            _ => {}
        }
    }

    /// rtc closed a channel of the current connection. Who closed it decides what follows.
    fn on_channel_closed(&mut self, id: ChannelId) {
        let Some(slot) = self.conn.channels.get(&id) else {
            return;
        };
        if slot.origin == Origin::Local
            && let Some(stream) = slot.stream
        {
            self.conn.reserve_stream(stream);
        }
        let Some(slot) = self.conn.channels.get(&id) else {
            return;
        };
        let (local, opened) = (slot.origin == Origin::Local, slot.open);
        let connected = self.conn.connection_state == ConnectionState::Connected;
        if local && !opened && connected && self.intents.contains_key(&id.0) {
            // A local channel that closes before it ever opened, on a live connection and
            // without the application asking, is one whose opening handshake rtc gave up
            // (seen when it reuses the stream of a channel whose close had not yet gone
            // round). Keep it as a channel that has not opened, so the watchdog brings it back
            // on a new connection, as it does for one that never opens (the watchdog's
            // deadline already counts for it: it was awaited before it closed).
            self.queue
                .push_back(Output::Event(Event::ChannelClosed { id, reopens: true }));
            return;
        }
        self.conn.channels.remove(&id);
        // One that had opened and closes while the association lives on (the hidden
        // data-section channel is still open) was closed by an application: W3C closes it at
        // both ends, and it is not brought back. One that closes with its association (the
        // connection died or is being replaced) is the application's still, and a new
        // connection brings it back. Without the data section the engine cannot tell, and
        // keeps it.
        if opened && self.conn.association_alive() {
            self.intents.remove(&id.0);
        }
        let reopens = self.intents.contains_key(&id.0);
        self.queue
            .push_back(Output::Event(Event::ChannelClosed { id, reopens }));
    }

    // ---------------------------------------------------------------- helpers

    fn send_signal(&mut self, payload: Payload) {
        self.conn.sent = true;
        self.queue.push_back(Output::Signal(Signal {
            connection_id: self.conn.id.clone(),
            payload,
        }));
    }

    fn diagnose(&mut self, diagnostic: Diagnostic) {
        log::debug!("[{}] {diagnostic:?}", self.conn.id);
        self.queue
            .push_back(Output::Event(Event::Diagnostic(diagnostic)));
    }

    fn surface(&mut self, error: Error) {
        log::warn!("[{}] {error}", self.conn.id);
        self.queue.push_back(Output::Event(Event::Error(error)));
    }

    fn check_open(&self) -> Result<(), ApiError> {
        if self.is_closed() {
            Err(ApiError::Closed)
        } else {
            Ok(())
        }
    }

    /// Closed for good: the state says so (see `finish`).
    fn is_closed(&self) -> bool {
        matches!(self.conn.negotiation, Negotiation::Closed)
    }

    fn next_id(&mut self) -> u32 {
        self.next_object_id += 1;
        self.next_object_id
    }
}

/// A datagram rtc wants sent, as an output.
fn transmit(w: TaggedBytesMut) -> Output {
    Output::Transmit(Transmit {
        source: w.transport.local_addr,
        destination: w.transport.peer_addr,
        contents: w.message.to_vec(),
    })
}

/// A description for rtc, which parses it before changing any state.
fn unparsed(d: &Description) -> RTCSessionDescription {
    use rtc::peer_connection::sdp::RTCSdpType;
    let mut desc = RTCSessionDescription::default();
    desc.sdp_type = match d.kind {
        SdpKind::Offer => RTCSdpType::Offer,
        SdpKind::Answer => RTCSdpType::Answer,
    };
    desc.sdp.clone_from(&d.sdp);
    desc
}

/// Parses a description to validate it before a step that rtc's own parse would come too late
/// for (a rollback, a connection replacement).
fn parse_description(d: &Description) -> Result<RTCSessionDescription, PeerError> {
    let parsed = match d.kind {
        SdpKind::Offer => RTCSessionDescription::offer(d.sdp.clone()),
        SdpKind::Answer => RTCSessionDescription::answer(d.sdp.clone()),
    };
    parsed.map_err(|e| PeerError::InvalidDescription(e.to_string()))
}

fn random_connection_id(rng: &mut Rng) -> ConnectionId {
    ConnectionId::new(format!("{:016x}", rng.next_u64()))
}
