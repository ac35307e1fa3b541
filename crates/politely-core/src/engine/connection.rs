//! One rtc peer connection with the pattern's per-connection state, and the engine's mirror
//! of its channels and transceivers.

use super::DATA_SECTION_STREAM;
use super::media::SampleWriter;
use super::negotiation::{Exchange, Negotiation};
use crate::config::{Config, IceTransportPolicy};
use crate::error::{ApiError, ConfigError, Error};
use crate::event::ConnectionState;
use crate::media::{
    ChannelId, ChannelOptions, Direction, HeaderExtension, MediaKind, Origin, TrackLabel,
    TransceiverId,
};
use crate::negotiation_needed;
use crate::sdp;
use politely_proto::signal::{Candidate, ConnectionId};
use rtc::data_channel::{RTCDataChannelId, RTCDataChannelInit, RTCDataChannelState};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCDataChannelEvent;
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, CandidateRelayConfig, CandidateServerReflexiveConfig,
    RTCIceCandidate, RTCIceCandidateInit, RTCIceServer,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverInit};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The engine's mirror of one entry of rtc's transceiver vector.
#[derive(Debug, Clone)]
pub(super) struct TransceiverSlot {
    pub(super) id: TransceiverId,
    pub(super) kind: MediaKind,
    pub(super) origin: Origin,
    /// Created by the remote offer that is pending now; rtc removes it on rollback unless a
    /// track was attached since (RFC 9429 §5.7).
    pub(super) pending_remote: bool,
    /// May be associated with a remote offer's m-section: created by add_track (W3C
    /// setRemoteDescription step "created by addTrack"), or by the remote itself.
    pub(super) reusable: bool,
    /// The application's preferred direction (W3C `[[Direction]]`). It changes only when the
    /// application calls set_direction, add_track or remove_track; one created by a remote
    /// offer starts `recvonly`. rtc keeps a direction of its own that negotiation overwrites,
    /// so this is the truth every offer and answer is made from.
    pub(super) direction: Direction,
    /// The stream and track ids of the attached track (the `a=msid` its m-section must
    /// carry); `None` when the application attached none or removed it. rtc keeps a sender once
    /// it had one (see `Engine::remove_track`), so this, not rtc's sender, says whether a track
    /// is on.
    pub(super) stream: Option<TrackLabel>,
    /// The ids of the track on rtc's sender, which rtc keeps once it has one.
    pub(super) rtc_stream: Option<TrackLabel>,
    /// A negotiated direction has sent (W3C: the sender "has been used to send"); `add_track`
    /// never reuses such a transceiver.
    pub(super) ever_sent: bool,
}

/// What rtc's transceiver directions are set to, for the description rtc is about to write or
/// for the time between exchanges. rtc writes its own direction into every offer and answer and
/// sends and receives media by it, so it is set from the engine's `[[Direction]]` at each step.
#[derive(Debug, Clone, Copy)]
pub(super) enum RtcDirections<'a> {
    /// An offer: every transceiver's `[[Direction]]` (JSEP, RFC 9429 §5.2.2).
    Offer,
    /// An answer to this offer: `[[Direction]]` intersected with the reverse of the offered
    /// direction (RFC 9429 §5.3.1), so the answer never widens the offer.
    Answer(&'a str),
    /// Between exchanges: the negotiated direction where one exists (media flows by it), the
    /// preferred one elsewhere.
    Settled,
}

#[derive(Debug, Clone)]
pub(super) struct ChannelSlot {
    pub(super) rtc: RTCDataChannelId,
    pub(super) label: String,
    pub(super) origin: Origin,
    pub(super) open: bool,
    /// Its SCTP stream, once known (rtc forgets it when the channel closes).
    pub(super) stream: Option<u16>,
}

/// One rtc peer connection with the pattern's per-connection state.
pub(super) struct Connection {
    pub(super) id: ConnectionId,
    pub(super) pc: RTCPeerConnection,
    /// A message carrying this id arrived from the remote.
    pub(super) heard_from_remote: bool,
    /// This side sent a message carrying this id.
    pub(super) sent: bool,
    /// Where negotiation stands; the signaling state is read from it.
    pub(super) negotiation: Negotiation,
    pub(super) connection_state: ConnectionState,
    /// ICE itself is connected (the transport may still be stuck above it, in DTLS or SCTP).
    pub(super) ice_connected: bool,
    /// When this connection reached each step ([`Engine::timeline`](super::Engine::timeline)).
    pub(super) timeline: crate::event::Timeline,

    // The W3C pattern's makingOffer and isSettingRemoteAnswerPending are not kept: they guard
    // the awaits inside setLocalDescription and setRemoteDescription, and a sans-I/O engine
    // runs each step to completion before it takes the next input, so neither could be true
    // when an offer arrives. readyForOffer is "the state is stable".
    /// The W3C negotiation-needed flag, as last computed by `check_negotiation_needed`;
    /// cleared whenever the state leaves stable, re-checked on the return.
    pub(super) negotiation_needed: bool,
    /// Something changed that may change the flag (W3C "update the negotiation-needed flag"):
    /// recompute it before the next offer decision. Coalesces intents made back to back.
    pub(super) negotiation_check: bool,
    /// restartIce(): the credentials to replace, until an exchange replaced them at both ends.
    pub(super) ice_restart: Option<super::IceRestart>,

    /// The negotiation gate, both roles; a new connection starts with no lease.
    pub(super) gate: super::gate::GateState,

    pub(super) next_offer_id: u64,
    /// Our offers rolled back in a glare; an answer to one means the remote yielded too.
    pub(super) rolled_back: Vec<u64>,
    pub(super) last_remote_offer_id: Option<u64>,
    pub(super) last_remote_offer_sdp: Option<String>,

    pub(super) early_candidates: Vec<Candidate>,
    /// Set when an offer is ignored; cleared once the next remote description is applied
    /// (the newest WPT helper's `ignoreIceCandidateFailures`).
    pub(super) suppress_candidate_errors: bool,
    pub(super) old_remote_ufrags: Vec<String>,
    pub(super) local_candidates: Vec<RTCIceCandidateInit>,
    pub(super) trickled_ufrag: Option<String>,
    pub(super) last_local_ufrag: Option<String>,

    /// The last completed exchange; `None` before the first.
    pub(super) current: Option<Exchange>,

    pub(super) channels: BTreeMap<ChannelId, ChannelSlot>,
    /// Local channels held back while the SCTP association is handshaking (see
    /// `Connection::create_channel`).
    pub(super) deferred_channels: Vec<(ChannelId, String, ChannelOptions)>,
    /// The hidden channel that carries the data section, once created.
    pub(super) data_section: Option<RTCDataChannelId>,
    /// Hidden channels holding the SCTP streams of closed local channels (see
    /// `Connection::reserve_stream`), by rtc's id.
    pub(super) reserved_streams: BTreeMap<RTCDataChannelId, u16>,
    /// Local channels the application closed before they opened, by rtc's id, with their
    /// stream: rtc frees the stream when it reports the close, and it is reserved then.
    pub(super) closing_unopened: BTreeMap<RTCDataChannelId, u16>,
    /// A channel of this connection has opened, so an SCTP association is up.
    pub(super) sctp_ready: bool,
    pub(super) transceivers: Vec<TransceiverSlot>,
    /// Send state of the tracks that have written samples.
    pub(super) sample_writers: BTreeMap<TransceiverId, SampleWriter>,
    /// Transceivers whose negotiated direction receives (a `TrackAdded` was reported).
    pub(super) receiving: BTreeSet<TransceiverId>,
    /// Transceivers whose negotiated direction sends: only these write RTP.
    pub(super) sending: BTreeSet<TransceiverId>,
    /// Remote SSRCs to the transceivers that receive them, learnt at their first packet since
    /// the last exchange.
    pub(super) remote_tracks: BTreeMap<u32, TransceiverId>,
    /// The header extensions negotiated on a transceiver, by id, as the descriptions applied
    /// say; filled when a packet needs it and cleared with `remote_tracks`.
    pub(super) extension_ids: BTreeMap<TransceiverId, Vec<(u8, HeaderExtension)>>,

    /// In stable, the watchdog counts from here (the last exchange, firing or new channel,
    /// plus a random jitter) while the transport or a channel is awaited; `None` before the
    /// first exchange. In have-local-offer it counts from the pending offer.
    pub(super) watch_from: Option<Instant>,
    pub(super) negotiation_strikes: u32,
    pub(super) transport_strikes: u32,
    pub(super) channel_strikes: u32,
}

impl Connection {
    pub(super) fn new(
        id: ConnectionId,
        config: &Config,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        let media = media_engine().map_err(|e| ConfigError::Rtc(e.to_string()))?;
        // Answer as DTLS server (`a=setup:passive`), so that the peer that offered dials SCTP.
        // rtc's DTLS client dials once, when its DTLS handshake completes, and only if its
        // SCTP transport has started by then; a data section that arrives by a later
        // renegotiation (a browser's first offer had none) starts it too late, and as client
        // rtc refuses the browser's INITs (differential scripts 1004, 1216: every channel
        // `connecting` for good). As server it accepts them whenever they come.
        let settings = SettingEngineBuilder::new()
            .with_answering_dtls_role(RTCDtlsRole::Server)
            .with_ice_connection_attempts(Some(config.ice_check_interval), None)
            .with_host_acceptance_min_wait(Some(Duration::ZERO))
            .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
            // A browser's `.local` host candidates are not resolved (resolving needs a socket
            // on port 5353 of every interface); the engine drops them, and the browser's
            // checks to our candidates make the pair. rtc's default would queue queries that
            // no socket sends.
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .build();
        let mut rtc_config = RTCConfigurationBuilder::new();
        if let Some(cert) = &config.certificate {
            rtc_config = rtc_config.with_certificates(vec![cert.0.clone()]);
        }
        if !config.ice_servers.is_empty() {
            rtc_config = rtc_config.with_ice_servers(
                config
                    .ice_servers
                    .iter()
                    .map(|s| RTCIceServer {
                        urls: s.urls.clone(),
                        username: s.username.clone(),
                        credential: s.credential.clone(),
                    })
                    .collect(),
            );
        }
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(rtc_config.build())
            .with_media_engine(media)
            .with_interceptor_registry(super::feedback::registry())
            .with_setting_engine(settings)
            .build(now)
            .map_err(|e| ConfigError::Rtc(e.to_string()))?;
        let rtc_err = |e: rtc::shared::error::Error| ConfigError::Rtc(e.to_string());
        let udp = |addr: SocketAddr| CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        };
        let mut candidates = Vec::new();
        let all = config.ice_transport_policy == IceTransportPolicy::All;
        for &addr in config.local_addrs.iter().filter(|_| all) {
            let host = CandidateHostConfig {
                base_config: udp(addr),
                ..Default::default()
            };
            candidates.push(host.new_candidate_host().map_err(rtc_err)?);
        }
        for &(base, mapped) in config.reflexive_addrs.iter().filter(|_| all) {
            let srflx = CandidateServerReflexiveConfig {
                base_config: udp(mapped),
                rel_addr: base.ip().to_string(),
                rel_port: base.port(),
                url: None,
            };
            candidates.push(srflx.new_candidate_server_reflexive().map_err(rtc_err)?);
        }
        for &(base, relayed) in &config.relay_addrs {
            let relay = CandidateRelayConfig {
                base_config: udp(relayed),
                rel_addr: base.ip().to_string(),
                rel_port: base.port(),
                url: None,
            };
            candidates.push(relay.new_candidate_relay().map_err(rtc_err)?);
        }
        for candidate in &candidates {
            let init = RTCIceCandidate::from(candidate)
                .to_json()
                .map_err(rtc_err)?;
            pc.add_local_candidate(init).map_err(rtc_err)?;
        }
        if !config.local_addrs.is_empty() {
            // End of gathering: every candidate is known up front.
            pc.add_local_candidate(RTCIceCandidateInit::default())
                .map_err(|e| ConfigError::Rtc(e.to_string()))?;
        }
        Ok(Self {
            id,
            pc,
            heard_from_remote: false,
            sent: false,
            negotiation: Negotiation::Stable,
            gate: Default::default(),
            connection_state: ConnectionState::New,
            ice_connected: false,
            timeline: crate::event::Timeline::new(now),
            negotiation_needed: false,
            negotiation_check: false,
            ice_restart: None,
            next_offer_id: 0,
            rolled_back: Vec::new(),
            last_remote_offer_id: None,
            last_remote_offer_sdp: None,
            early_candidates: Vec::new(),
            suppress_candidate_errors: false,
            old_remote_ufrags: Vec::new(),
            local_candidates: Vec::new(),
            trickled_ufrag: None,
            last_local_ufrag: None,
            current: None,
            channels: BTreeMap::new(),
            deferred_channels: Vec::new(),
            data_section: None,
            reserved_streams: BTreeMap::new(),
            closing_unopened: BTreeMap::new(),
            sctp_ready: false,
            transceivers: Vec::new(),
            sample_writers: BTreeMap::new(),
            receiving: BTreeSet::new(),
            sending: BTreeSet::new(),
            remote_tracks: BTreeMap::new(),
            extension_ids: BTreeMap::new(),
            watch_from: None,
            negotiation_strikes: 0,
            transport_strikes: 0,
            channel_strikes: 0,
        })
    }

    pub(super) fn create_channel(
        &mut self,
        id: ChannelId,
        label: &str,
        options: &ChannelOptions,
    ) -> Result<(), Error> {
        // rtc 0.21 dials a channel at once when an SCTP association exists, even one still
        // handshaking, and such a channel never opens (seen in the simulator). Once the data
        // section is negotiated the association is on its way, so new channels wait for it to
        // be up; `flush_deferred_channels` then creates them. Before that, rtc itself defers
        // the dial to the end of the handshake, which works. rtc's `sctp().state()` cannot
        // tell: it reads the first of possibly several associations (rtc starts one per DTLS
        // handshake), so readiness is taken from the first channel that opens instead (the
        // negotiated data-section channel opens exactly when the association is up).
        let data_negotiated = self
            .current
            .as_ref()
            .is_some_and(|c| c.local.contains("\nm=application"));
        if data_negotiated && !self.sctp_ready {
            log::debug!("[{}] channel {label} waits for SCTP", self.id);
            self.deferred_channels
                .push((id, label.to_owned(), options.clone()));
            return Ok(());
        }
        let init = RTCDataChannelInit {
            ordered: options.ordered,
            max_packet_life_time: options.max_packet_life_time,
            max_retransmits: options.max_retransmits,
            protocol: options.protocol.clone(),
            negotiated: options.negotiated,
        };
        let dc = self
            .pc
            .create_data_channel(label, Some(init))
            .map_err(rtc_internal)?;
        let rtc_id = dc.id();
        let open = dc.ready_state() == RTCDataChannelState::Open;
        log::debug!(
            "[{}] channel {label} created: stream {:?}, {:?}",
            self.id,
            dc.stream_id(),
            dc.ready_state()
        );
        self.channels.insert(
            id,
            ChannelSlot {
                rtc: rtc_id,
                label: label.to_owned(),
                origin: Origin::Local,
                open,
                stream: dc.stream_id(),
            },
        );
        Ok(())
    }

    /// Creates the hidden channel that keeps a data section in this connection's descriptions
    /// and tells when the association is up (see [`Config::data_section`]). Both ends create it
    /// with the same stream id, out of band, so nothing is announced.
    pub(super) fn ensure_data_section(&mut self) -> Result<(), Error> {
        if self.data_section.is_some() {
            return Ok(());
        }
        let init = RTCDataChannelInit {
            negotiated: Some(DATA_SECTION_STREAM),
            ..Default::default()
        };
        let dc = self
            .pc
            .create_data_channel("politely", Some(init))
            .map_err(rtc_internal)?;
        self.data_section = Some(dc.id());
        Ok(())
    }

    /// Keeps a closed local channel's SCTP stream from being given to a new channel, for the
    /// life of the connection. rtc frees a stream id as soon as a channel closes and gives the
    /// lowest free one to the next channel, while the stream's reset may still be on its way
    /// in the other direction: that late reset then closes the new channel at both ends, or
    /// its opening never arrives (both seen in the simulator under loss). A browser does not
    /// reuse a stream before its reset completed both ways; never reusing one is the simple
    /// form of that. A hidden negotiated channel holds the stream; nothing goes on the wire
    /// for it. When the stream's late reset closes the holder, a new one takes its place
    /// (`renew_reserve`). Costs one id of the 32,767 per closed channel.
    pub(super) fn reserve_stream(&mut self, stream: u16) {
        let init = RTCDataChannelInit {
            negotiated: Some(stream),
            ..Default::default()
        };
        match self.pc.create_data_channel("politely-closed", Some(init)) {
            Ok(dc) => {
                self.reserved_streams.insert(dc.id(), stream);
            }
            Err(e) => log::debug!("[{}] stream {stream} not reserved: {e}", self.id),
        }
    }

    /// Whether `rtc_id` is a hidden channel of the engine's own (the data section's or a
    /// reserve), which the application never sees.
    pub(super) fn is_hidden_channel(&self, rtc_id: RTCDataChannelId) -> bool {
        self.data_section == Some(rtc_id) || self.reserved_streams.contains_key(&rtc_id)
    }

    /// A reserve closed (its stream's late reset arrived): hold the stream again.
    pub(super) fn renew_reserve(&mut self, rtc_id: RTCDataChannelId) {
        if let Some(stream) = self.reserved_streams.remove(&rtc_id) {
            self.reserve_stream(stream);
        }
    }

    /// Creates the channels held back by `create_channel` once the association is up.
    pub(super) fn flush_deferred_channels(&mut self) -> Result<bool, Error> {
        if self.deferred_channels.is_empty() || !self.sctp_ready {
            return Ok(false);
        }
        log::debug!("[{}] SCTP is up: creating deferred channels", self.id);
        for (id, label, options) in std::mem::take(&mut self.deferred_channels) {
            self.create_channel(id, &label, &options)?;
        }
        Ok(true)
    }

    /// Adds a transceiver, with a track of this SSRC if `track` is given, named by `label`
    /// or else after its SSRC.
    pub(super) fn add_transceiver(
        &mut self,
        id: TransceiverId,
        kind: MediaKind,
        direction: Direction,
        track: Option<u32>,
        label: Option<&TrackLabel>,
    ) -> Result<(), Error> {
        // rtc adds a transceiver with a track only as sendrecv or sendonly, and one without a
        // track only as recvonly; the wanted direction is set afterwards.
        let index = match track {
            Some(ssrc) => {
                let init = RTCRtpTransceiverInit {
                    direction: if direction.sends() {
                        to_rtc_direction(direction)
                    } else {
                        RTCRtpTransceiverDirection::Sendrecv
                    },
                    streams: vec![],
                    send_encodings: vec![],
                };
                self.pc
                    .add_transceiver_from_track(make_track(kind, ssrc, label), Some(init))
                    .map_err(rtc_internal)?
            }
            None => self
                .pc
                .add_transceiver_from_kind(to_rtc_kind(kind), None)
                .map_err(rtc_internal)?,
        };
        if let Some(mut t) = self.pc.rtp_transceiver(index)
            && t.direction() != to_rtc_direction(direction)
        {
            t.set_direction(to_rtc_direction(direction));
        }
        self.transceivers.push(TransceiverSlot {
            id,
            kind,
            origin: Origin::Local,
            pending_remote: false,
            reusable: false,
            direction,
            stream: track.map(|ssrc| track_label(ssrc, label)),
            rtc_stream: track.map(|ssrc| track_label(ssrc, label)),
            ever_sent: false,
        });
        Ok(())
    }

    /// Sets rtc's transceiver directions for the next step (see [`RtcDirections`]).
    pub(super) fn set_rtc_directions(&mut self, mode: RtcDirections<'_>) {
        let offered = match mode {
            RtcDirections::Answer(offer) => Some(sdp::Sections::parse(offer)),
            _ => None,
        };
        for index in 0..self.transceivers.len() {
            let slot = &self.transceivers[index];
            let preferred = slot.direction;
            let Some(mut t) = self.pc.rtp_transceiver(index) else {
                continue;
            };
            let mid = t.mid().clone();
            let wanted = match (mode, mid.as_deref()) {
                (RtcDirections::Answer(_), Some(mid)) => {
                    match offered.as_ref().and_then(|o| o.direction(mid)) {
                        Some(offered) => preferred.intersect(offered.reverse()),
                        None => preferred,
                    }
                }
                (RtcDirections::Settled, Some(mid)) => self
                    .current
                    .as_ref()
                    .and_then(|c| c.direction(mid))
                    .unwrap_or(preferred),
                _ => preferred,
            };
            let wanted = to_rtc_direction(wanted);
            if t.direction() != wanted {
                t.set_direction(wanted);
            }
        }
    }

    /// W3C setRemoteDescription associates a remote offer's new m-section only with a
    /// transceiver created by addTrack; rtc (like Pion) takes any unassociated transceiver of
    /// the same kind and a compatible direction, so two addTransceiver calls in a glare would
    /// share one m-line. rtc never matches an inactive transceiver, so the ones the remote may
    /// not take are made inactive for the duration of the setRemoteDescription.
    pub(super) fn shield_unmatchable_transceivers(
        &mut self,
    ) -> Vec<(usize, RTCRtpTransceiverDirection)> {
        let mut shielded = Vec::new();
        for (index, slot) in self.transceivers.iter().enumerate() {
            if slot.reusable {
                continue;
            }
            if let Some(mut t) = self.pc.rtp_transceiver(index)
                && t.mid().is_none()
                && t.direction() != RTCRtpTransceiverDirection::Inactive
            {
                shielded.push((index, t.direction()));
                t.set_direction(RTCRtpTransceiverDirection::Inactive);
            }
        }
        shielded
    }

    pub(super) fn unshield(&mut self, shielded: Vec<(usize, RTCRtpTransceiverDirection)>) {
        for (index, direction) in shielded {
            if let Some(mut t) = self.pc.rtp_transceiver(index) {
                t.set_direction(direction);
            }
        }
    }

    /// Mirrors the transceivers rtc appended on its own: those a remote offer created
    /// (`pending_remote`), or an add_track that found nothing to reuse.
    pub(super) fn sync_new_transceivers(
        &mut self,
        origin: Origin,
        pending_remote: bool,
        next_id: &mut u32,
    ) {
        let count = self.pc.get_transceivers().count();
        while self.transceivers.len() < count {
            *next_id += 1;
            let kind = self.kind_at(self.transceivers.len());
            self.transceivers.push(TransceiverSlot {
                id: TransceiverId(*next_id),
                kind,
                origin,
                pending_remote,
                reusable: true,
                // W3C setRemoteDescription: a transceiver created by a remote offer starts
                // recvonly; add_track sets its own.
                direction: Direction::RecvOnly,
                stream: None,
                rtc_stream: None,
                ever_sent: false,
            });
        }
    }

    /// The mids of the transceivers associated with an m-section.
    pub(super) fn associated_mids(&mut self) -> Vec<String> {
        (0..self.transceivers.len())
            .filter_map(|i| self.pc.rtp_transceiver(i).and_then(|t| t.mid().clone()))
            .collect()
    }

    pub(super) fn kind_at(&mut self, index: usize) -> MediaKind {
        let sdp = self
            .pc
            .remote_description()
            .map(|d| d.sdp.clone())
            .unwrap_or_default();
        let mid = self.pc.rtp_transceiver(index).and_then(|t| t.mid().clone());
        sdp::media_of_mid(&sdp, mid.as_deref()).unwrap_or(MediaKind::Video)
    }

    pub(super) fn index_of(&self, id: TransceiverId) -> Result<usize, ApiError> {
        self.transceivers
            .iter()
            .position(|s| s.id == id)
            .ok_or(ApiError::UnknownTransceiver(id))
    }

    /// Attaches a new track to the transceiver at `index`, which has none (W3C addTrack's
    /// reuse). rtc keeps a sender once it had one: its track comes back. Otherwise rtc's
    /// add_track attaches one, to the first transceiver of the kind without a sender, which
    /// may come before `index` (one the application set to send without a track, so it has
    /// been used to send); such a one keeps the track as rtc's alone and rtc is asked again.
    pub(super) fn attach_track(
        &mut self,
        index: usize,
        mut ssrc: impl FnMut() -> u32,
    ) -> Result<(), Error> {
        let kind = self.transceivers[index].kind;
        while self.transceivers[index].rtc_stream.is_none() {
            let ssrc = ssrc();
            let sender = self
                .pc
                .add_track(make_track(kind, ssrc, None))
                .map_err(rtc_internal)?;
            match self.index_of_sender(sender) {
                Some(at) if at <= index => {
                    self.transceivers[at].rtc_stream = Some(track_label(ssrc, None));
                }
                _ => return Err(Error::Internal("rtc attached a track out of order".into())),
            }
        }
        let slot = &mut self.transceivers[index];
        slot.stream.clone_from(&slot.rtc_stream);
        Ok(())
    }

    /// rtc's sender of the transceiver at `index`, which has a track.
    pub(super) fn sender_of(&mut self, index: usize) -> Result<RTCRtpSenderId, Error> {
        let id = self.transceivers[index].id;
        self.pc
            .rtp_transceiver(index)
            .and_then(|t| t.sender())
            .ok_or_else(|| Error::Internal(format!("rtc has no sender for the track of {id}")))
    }

    pub(super) fn index_of_sender(&mut self, sender: RTCRtpSenderId) -> Option<usize> {
        (0..self.transceivers.len()).find(|&i| {
            self.pc
                .rtp_transceiver(i)
                .is_some_and(|t| t.sender() == Some(sender))
        })
    }

    /// The `a=setup` value this side's answers must carry once a DTLS role is established:
    /// the one it answered with, or the opposite of what the remote answered to its offer.
    pub(super) fn established_setup(&self) -> Option<&'static str> {
        let current = self.current.as_ref()?;
        let own = if current.local_is_answer {
            sdp::setup(&current.local)?
        } else {
            match sdp::setup(&current.remote)? {
                "active" => "passive",
                "passive" => "active",
                _ => return None,
            }
        };
        matches!(own, "active" | "passive").then_some(own)
    }

    /// Marks the transceivers whose negotiated direction sends as used to send.
    pub(super) fn note_senders_used(&mut self) {
        for index in 0..self.transceivers.len() {
            let mid = self.pc.rtp_transceiver(index).and_then(|t| t.mid().clone());
            let sends = mid.is_some_and(|mid| {
                self.current
                    .as_ref()
                    .and_then(|c| c.direction(&mid))
                    .is_some_and(Direction::sends)
            });
            if sends {
                self.transceivers[index].ever_sent = true;
            }
        }
    }

    /// Asks for the negotiation-needed flag to be recomputed before the next offer decision.
    pub(super) fn negotiation_changed(&mut self) {
        self.negotiation_check = true;
    }

    /// W3C "check if negotiation is needed", from the application's directions and tracks and
    /// the current descriptions (see [`crate::negotiation_needed`]).
    pub(super) fn check_negotiation_needed(&mut self) -> bool {
        let mids: Vec<Option<String>> = (0..self.transceivers.len())
            .map(|i| self.pc.rtp_transceiver(i).and_then(|t| t.mid().clone()))
            .collect();
        let transceivers: Vec<negotiation_needed::Transceiver<'_>> = self
            .transceivers
            .iter()
            .zip(&mids)
            // One a remote offer created that is not part of a completed exchange (the offer
            // failed part way) is rtc's leftover, not something of the application's to offer.
            .filter(|(slot, mid)| {
                slot.origin == Origin::Local || (mid.is_some() && self.current.is_some())
            })
            .map(|(slot, mid)| negotiation_needed::Transceiver {
                mid: mid.as_deref(),
                direction: slot.direction,
                stream: slot.stream.as_ref(),
            })
            .collect();
        let current = self.current.as_ref().map(|c| negotiation_needed::Current {
            local: &c.local_sections,
            local_is_answer: c.local_is_answer,
            remote: &c.remote_sections,
        });
        let has_channels = !self.channels.is_empty() || !self.deferred_channels.is_empty();
        negotiation_needed::check(current.as_ref(), has_channels, &transceivers)
    }

    /// Whether the application has anything on this connection: a channel (open, pending or
    /// deferred) or a transceiver.
    pub(super) fn has_application_objects(&self) -> bool {
        !self.channels.is_empty()
            || !self.deferred_channels.is_empty()
            || !self.transceivers.is_empty()
    }

    /// Whether something still waits on the transport: the connection itself, or a local
    /// channel that has not opened. The watchdog stays armed while it does.
    pub(super) fn awaits_transport(&self) -> bool {
        self.connection_state != ConnectionState::Connected || self.has_unopened_local_channel()
    }

    /// A local channel has not opened: dialed, or held back until the association is up.
    pub(super) fn has_unopened_local_channel(&self) -> bool {
        !self.deferred_channels.is_empty()
            || self
                .channels
                .values()
                .any(|s| s.origin == Origin::Local && !s.open)
    }

    /// Whether the SCTP association is known to be up: the hidden data-section channel
    /// (which no application closes) is open.
    pub(super) fn association_alive(&mut self) -> bool {
        self.data_section.is_some_and(|rtc_id| {
            self.pc
                .data_channel(rtc_id)
                .is_some_and(|dc| dc.ready_state() == RTCDataChannelState::Open)
        })
    }

    /// Whether a local channel has not opened on a connected transport: dialed, or waiting
    /// for an SCTP association that has not come up (seen against Chromium: rtc, as the DTLS
    /// client, refused Chromium's INITs as it only dials, and its own dial never brought an
    /// association up; every channel stayed `connecting` at both ends).
    pub(super) fn has_stalled_channel(&self) -> bool {
        self.connection_state == ConnectionState::Connected && self.has_unopened_local_channel()
    }

    /// The SCTP stream of an rtc channel, for ordering; unassigned streams sort last.
    pub(super) fn stream_of(&mut self, rtc_id: RTCDataChannelId) -> u32 {
        self.pc
            .data_channel(rtc_id)
            .and_then(|dc| dc.stream_id())
            .map_or(u32::MAX, u32::from)
    }

    pub(super) fn stream_of_event(&mut self, event: &RTCDataChannelEvent) -> u32 {
        match event {
            RTCDataChannelEvent::OnOpen(id)
            | RTCDataChannelEvent::OnError(id)
            | RTCDataChannelEvent::OnClosing(id)
            | RTCDataChannelEvent::OnClose(id)
            | RTCDataChannelEvent::OnBufferedAmountLow(id)
            | RTCDataChannelEvent::OnBufferedAmountHigh(id) => self.stream_of(*id),
            _ => u32::MAX,
        }
    }

    pub(super) fn channel_by_rtc(&self, rtc_id: RTCDataChannelId) -> Option<ChannelId> {
        self.channels
            .iter()
            .find(|(_, s)| s.rtc == rtc_id)
            .map(|(id, _)| *id)
    }
}

/// The codecs politely sends and receives: Opus, and VP8 with its retransmission codec, at
/// the payload types browsers use. Only these: the engine writes no other, and rtc's default
/// set (VP9 in two profiles, H264, AV1, ...) makes rtc answer some offers with a payload type
/// twice and an `rtx` whose `apt` names a codec the answer lacks, which Chromium refuses
/// ("Failed to set remote video description send parameters").
fn media_engine() -> Result<MediaEngine, rtc::shared::error::Error> {
    let mut media = MediaEngine::default();
    let codec = |mime_type: &str, clock_rate, channels, fmtp: &str, rtcp_feedback, payload_type| {
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: mime_type.to_owned(),
                clock_rate,
                channels,
                sdp_fmtp_line: fmtp.to_owned(),
                rtcp_feedback,
            },
            payload_type,
        }
    };
    let feedback = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    let video_feedback = vec![
        feedback("goog-remb", ""),
        feedback("ccm", "fir"),
        feedback("nack", ""),
        feedback("nack", "pli"),
    ];
    media.register_codec(
        codec(
            MIME_TYPE_OPUS,
            48_000,
            2,
            "minptime=10;useinbandfec=1",
            vec![],
            111,
        ),
        RtpCodecKind::Audio,
    )?;
    media.register_codec(
        codec(MIME_TYPE_VP8, 90_000, 0, "", video_feedback, 96),
        RtpCodecKind::Video,
    )?;
    media.register_codec(
        codec(MIME_TYPE_RTX, 90_000, 0, "apt=96", vec![], 97),
        RtpCodecKind::Video,
    )?;
    for extension in HeaderExtension::ALL {
        media.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: extension.uri().to_owned(),
            },
            to_rtc_kind(extension.kind()),
            None,
        )?;
    }
    Ok(media)
}

/// A track with one Opus or VP8 encoding; its stream and track ids are the label's, or named
/// after its SSRC, which the engine draws from its seed.
pub(super) fn make_track(
    kind: MediaKind,
    ssrc: u32,
    label: Option<&TrackLabel>,
) -> MediaStreamTrack {
    let (mime_type, clock_rate, channels) = match kind {
        MediaKind::Audio => (MIME_TYPE_OPUS, 48_000, 2),
        MediaKind::Video => (MIME_TYPE_VP8, 90_000, 0),
    };
    let TrackLabel {
        stream_id,
        track_id,
    } = track_label(ssrc, label);
    MediaStreamTrack::new(
        stream_id,
        track_id,
        format!("{kind:?}").to_lowercase(),
        to_rtc_kind(kind),
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: mime_type.to_owned(),
                clock_rate,
                channels,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    )
}

/// The ids of the track `make_track` makes for this SSRC and label.
fn track_label(ssrc: u32, label: Option<&TrackLabel>) -> TrackLabel {
    match label {
        Some(label) => label.clone(),
        None => TrackLabel {
            stream_id: format!("stream-{ssrc:08x}"),
            track_id: format!("track-{ssrc:08x}"),
        },
    }
}

pub(super) fn to_rtc_kind(kind: MediaKind) -> RtpCodecKind {
    match kind {
        MediaKind::Audio => RtpCodecKind::Audio,
        MediaKind::Video => RtpCodecKind::Video,
    }
}

pub(super) fn to_rtc_direction(d: Direction) -> RTCRtpTransceiverDirection {
    match d {
        Direction::SendRecv => RTCRtpTransceiverDirection::Sendrecv,
        Direction::SendOnly => RTCRtpTransceiverDirection::Sendonly,
        Direction::RecvOnly => RTCRtpTransceiverDirection::Recvonly,
        Direction::Inactive => RTCRtpTransceiverDirection::Inactive,
    }
}

/// A failure of rtc that nothing the application or the peer did explains.
pub(super) fn rtc_internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}
