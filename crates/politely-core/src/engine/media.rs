//! Media on transceivers: samples written out as RTP, packets received, and the W3C `track`
//! events that tell when the remote starts and stops sending.

use super::connection::rtc_internal;
use super::{Engine, Output};
use crate::error::{ApiError, Error};
use crate::event::{ConnectionState, Event};
use crate::media::{Direction, MediaKind, MediaPacket, TransceiverId};
use crate::rng::Rng;
use bytes::Bytes;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::event::RTCTrackEvent;
use rtc::rtp::codec::vp8::Vp8Payloader;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp::packetizer::Payloader;
use std::time::Duration;

/// Payload bytes per RTP packet. With the RTP header, the SRTP tag and IP/UDP headers a packet
/// stays under 1280 bytes, the smallest IPv6 path MTU, so nothing is fragmented.
pub(crate) const RTP_PAYLOAD_MAX: usize = 1200;

/// The send state of one transceiver's track: RTP numbering continues from sample to sample.
#[derive(Debug, Clone)]
pub(super) struct SampleWriter {
    sequence: u16,
    timestamp: u32,
    vp8: Vp8Payloader,
}

impl SampleWriter {
    /// Random initial sequence number and timestamp (RFC 3550 §5.1), from the engine's seed.
    fn new(rng: &mut Rng) -> Self {
        let r = rng.next_u64();
        Self {
            sequence: r as u16,
            timestamp: (r >> 32) as u32,
            vp8: Vp8Payloader::default(),
        }
    }
}

fn clock_rate(kind: MediaKind) -> u32 {
    match kind {
        MediaKind::Audio => 48_000,
        MediaKind::Video => 90_000,
    }
}

fn mime_type(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => MIME_TYPE_OPUS,
        MediaKind::Video => MIME_TYPE_VP8,
    }
}

impl Engine {
    /// Sends one encoded sample on a transceiver's track: an Opus frame for audio, a VP8
    /// frame for video (split over several packets if it is large). `duration` is the
    /// sample's length in time; the RTP timestamp advances by it.
    ///
    /// Media is live: a sample written while the track cannot send (the connection is not
    /// connected yet, or the transceiver's negotiated direction does not send) is dropped and
    /// the call returns `Ok(false)`; the timestamp still advances, so the remote sees the gap
    /// as time passing. `Ok(true)` means the packets were handed to the transport.
    pub fn write_sample(
        &mut self,
        id: TransceiverId,
        data: &[u8],
        duration: Duration,
    ) -> Result<bool, Error> {
        self.check_open()?;
        let index = self.conn.index_of(id)?;
        let kind = self.conn.transceivers[index].kind;
        if kind == MediaKind::Audio && data.len() > RTP_PAYLOAD_MAX {
            return Err(ApiError::InvalidArgument(format!(
                "an audio sample must fit one packet ({RTP_PAYLOAD_MAX} bytes), got {}",
                data.len()
            ))
            .into());
        }
        // rtc keeps a sender after remove_track; the slot says whether a track is on.
        if self.conn.transceivers[index].stream.is_none() {
            return Err(ApiError::InvalidArgument(format!("{id} has no track")).into());
        }
        let sender_id = self
            .conn
            .pc
            .rtp_transceiver(index)
            .and_then(|t| t.sender())
            .ok_or_else(|| Error::Internal(format!("rtc has no sender for the track of {id}")))?;

        let rng = &mut self.rng;
        let writer = self
            .conn
            .sample_writers
            .entry(id)
            .or_insert_with(|| SampleWriter::new(rng));
        let payloads = match kind {
            MediaKind::Audio => vec![Bytes::copy_from_slice(data)],
            MediaKind::Video => writer
                .vp8
                .payload(RTP_PAYLOAD_MAX, &Bytes::copy_from_slice(data))
                .map_err(rtc_internal)?,
        };
        let ticks = duration.as_nanos() * u128::from(clock_rate(kind)) / 1_000_000_000;
        let timestamp = writer.timestamp;
        writer.timestamp = writer.timestamp.wrapping_add(ticks as u32);
        let sequence = writer.sequence;
        writer.sequence = writer.sequence.wrapping_add(payloads.len() as u16);

        if self.conn.connection_state != ConnectionState::Connected {
            return Ok(false);
        }
        let now = self.now;
        // None when the transceiver's direction does not send.
        let Some(mut sender) = self.conn.pc.rtp_sender(sender_id) else {
            return Ok(false);
        };
        let Some(ssrc) = sender.track().ssrcs().next() else {
            return Ok(false);
        };
        let Some(payload_type) = sender
            .get_parameters()
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime_type(kind)))
            .map(|c| c.payload_type)
        else {
            // Not negotiated on this transceiver (yet).
            return Ok(false);
        };
        let count = payloads.len();
        for (i, payload) in payloads.into_iter().enumerate() {
            let packet = Packet {
                header: Header {
                    version: 2,
                    // The last packet of a video frame (RFC 7741 §4.1).
                    marker: kind == MediaKind::Video && i + 1 == count,
                    payload_type,
                    sequence_number: sequence.wrapping_add(i as u16),
                    timestamp,
                    ssrc,
                    ..Default::default()
                },
                payload,
            };
            sender.write_rtp(now, packet).map_err(rtc_internal)?;
        }
        Ok(true)
    }

    /// rtc's track events: the first packet of a remote track tells which receiver it
    /// belongs to, so later packets (tagged with the track id only) find their transceiver.
    pub(super) fn on_track_event(&mut self, event: RTCTrackEvent) {
        match event {
            RTCTrackEvent::OnOpen(init) => {
                let index = (0..self.conn.transceivers.len()).find(|&i| {
                    self.conn
                        .pc
                        .rtp_transceiver(i)
                        .is_some_and(|t| t.receiver() == Some(init.receiver_id))
                });
                if let Some(index) = index {
                    let id = self.conn.transceivers[index].id;
                    self.conn.remote_tracks.insert(init.track_id, id);
                }
            }
            RTCTrackEvent::OnClose(track) => {
                self.conn.remote_tracks.remove(&track);
            }
            _ => {}
        }
    }

    /// An RTP packet of a remote track, for the application.
    pub(super) fn on_rtp(&mut self, track: &str, packet: Packet) {
        let Some(&transceiver) = self.conn.remote_tracks.get(track) else {
            return;
        };
        self.queue
            .push_back(Output::Event(Event::Media(MediaPacket {
                transceiver,
                payload_type: packet.header.payload_type,
                sequence_number: packet.header.sequence_number,
                timestamp: packet.header.timestamp,
                marker: packet.header.marker,
                payload: packet.payload.to_vec(),
            })));
    }

    /// After an exchange: the W3C `track` event for every transceiver whose negotiated
    /// direction now receives, and its removal for every one that stopped receiving (the
    /// remote removed its track, or the m-section was rejected or stopped).
    pub(super) fn update_receiving(&mut self) {
        let now_receiving: Vec<_> = self
            .transceivers()
            .into_iter()
            .filter(|t| {
                matches!(
                    t.current_direction,
                    Some(Direction::SendRecv | Direction::RecvOnly)
                )
            })
            .map(|t| (t.id, t.kind, t.mid.unwrap_or_default()))
            .collect();
        let gone: Vec<_> = self
            .conn
            .receiving
            .iter()
            .filter(|id| !now_receiving.iter().any(|(t, ..)| t == *id))
            .copied()
            .collect();
        for transceiver in gone {
            self.conn.receiving.remove(&transceiver);
            self.queue
                .push_back(Output::Event(Event::TrackRemoved { transceiver }));
        }
        for (transceiver, kind, mid) in now_receiving {
            if self.conn.receiving.insert(transceiver) {
                self.queue.push_back(Output::Event(Event::TrackAdded {
                    transceiver,
                    kind,
                    mid,
                }));
            }
        }
    }
}
