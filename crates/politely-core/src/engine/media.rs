//! Media on transceivers: samples written out as RTP, packets received, and the W3C `track`
//! events that tell when the remote starts and stops sending.

use super::connection::rtc_internal;
use super::{Engine, Output};
use crate::error::{ApiError, Error};
use crate::event::{ConnectionState, Event};
use crate::media::{Direction, HeaderExtension, MediaKind, MediaPacket, TransceiverId};
use crate::rng::Rng;
use bytes::Bytes;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::codec::vp8::Vp8Payloader;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp::packetizer::Payloader;
use rtc::rtp_transceiver::rtp_sender::RTCRtpHeaderExtensionParameters;
use std::time::Duration;

/// Payload bytes per RTP packet. With the RTP header, the SRTP tag and IP/UDP headers a packet
/// stays under 1280 bytes, the smallest IPv6 path MTU, so nothing is fragmented.
pub(crate) const RTP_PAYLOAD_MAX: usize = 1200;

/// One RTP packet to send, before the track's SSRC and payload type are added.
struct RtpOut<'a> {
    sequence_number: u16,
    timestamp: u32,
    marker: bool,
    extensions: &'a [(HeaderExtension, Vec<u8>)],
    payload: Bytes,
}

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
        let count = payloads.len();
        let packets = payloads.into_iter().enumerate().map(|(i, payload)| RtpOut {
            sequence_number: sequence.wrapping_add(i as u16),
            timestamp,
            // The last packet of a video frame (RFC 7741 §4.1).
            marker: kind == MediaKind::Video && i + 1 == count,
            extensions: &[],
            payload,
        });
        let sent = self.send_rtp(index, packets)?;
        // Sequence numbers count packets sent (a gap is a loss to the receiver, which it asks
        // for again); the timestamp counts time, sent or not.
        if sent && let Some(writer) = self.conn.sample_writers.get_mut(&id) {
            writer.sequence = writer.sequence.wrapping_add(count as u16);
        }
        Ok(sent)
    }

    /// Sends one RTP packet as it is, on a transceiver's track: the payload, sequence number,
    /// timestamp and marker are the caller's; the SSRC and the payload type are the track's
    /// own on this connection (the payload type negotiated for the transceiver's codec).
    /// This is how an SFU forwards a packet it received from one peer to another, having
    /// rewritten the numbering for continuity; an application that encodes its own media
    /// uses [`write_sample`](Self::write_sample) instead.
    ///
    /// Like `write_sample`, `Ok(false)` means the packet was dropped because the track cannot
    /// send now (not connected, or the negotiated direction does not send).
    pub fn write_rtp(&mut self, id: TransceiverId, packet: &MediaPacket) -> Result<bool, Error> {
        self.check_open()?;
        let index = self.conn.index_of(id)?;
        if self.conn.transceivers[index].stream.is_none() {
            return Err(ApiError::InvalidArgument(format!("{id} has no track")).into());
        }
        if packet.payload.len() > RTP_PAYLOAD_MAX {
            return Err(ApiError::InvalidArgument(format!(
                "an RTP payload is at most {RTP_PAYLOAD_MAX} bytes, got {}",
                packet.payload.len()
            ))
            .into());
        }
        let out = RtpOut {
            sequence_number: packet.sequence_number,
            timestamp: packet.timestamp,
            marker: packet.marker,
            extensions: &packet.extensions,
            payload: Bytes::copy_from_slice(&packet.payload),
        };
        self.send_rtp(index, std::iter::once(out))
    }

    /// Writes packets on the sender of the transceiver at `index`, if it can send now.
    fn send_rtp<'a>(
        &mut self,
        index: usize,
        packets: impl Iterator<Item = RtpOut<'a>>,
    ) -> Result<bool, Error> {
        if self.conn.connection_state != ConnectionState::Connected {
            return Ok(false);
        }
        // rtc sends as soon as the local direction does; W3C waits for the negotiated one. A
        // packet sent before the remote applied the description that declares its SSRC is one
        // the remote cannot place.
        if !self
            .conn
            .sending
            .contains(&self.conn.transceivers[index].id)
        {
            return Ok(false);
        }
        let kind = self.conn.transceivers[index].kind;
        let sender_id = self.conn.sender_of(index)?;
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
        // This connection's id for each extension's URI, looked up once, when a packet has
        // extensions (forwarded ones); one this connection did not negotiate is left out.
        let mut ids: Option<Vec<(u8, HeaderExtension)>> = None;
        for out in packets {
            let mut header = Header {
                version: 2,
                marker: out.marker,
                payload_type,
                sequence_number: out.sequence_number,
                timestamp: out.timestamp,
                ssrc,
                ..Default::default()
            };
            if !out.extensions.is_empty() {
                let ids = ids.get_or_insert_with(|| {
                    negotiated_extensions(&sender.get_parameters().rtp_parameters.header_extensions)
                });
                for (extension, value) in out.extensions {
                    if let Some((id, _)) = ids.iter().find(|(_, e)| e == extension) {
                        header
                            .set_extension(*id, Bytes::copy_from_slice(value))
                            .map_err(rtc_internal)?;
                    }
                }
            }
            let packet = Packet {
                header,
                payload: out.payload,
            };
            sender.write_rtp(now, packet).map_err(rtc_internal)?;
        }
        Ok(true)
    }

    /// Asks the remote to send a keyframe on a transceiver it sends on (an RTCP picture loss
    /// indication, RFC 4585 §6.3.1): a decoder that joins a stream late, or lost a frame,
    /// needs one to start. `Ok(false)` when there is nothing to ask yet: the connection is not
    /// connected or no packet of the remote's track has arrived (its SSRC is not known).
    pub fn request_keyframe(&mut self, id: TransceiverId) -> Result<bool, Error> {
        self.check_open()?;
        let index = self.conn.index_of(id)?;
        if self.conn.connection_state != ConnectionState::Connected {
            return Ok(false);
        }
        let Some(receiver_id) = self
            .conn
            .pc
            .rtp_transceiver(index)
            .and_then(|t| t.receiver())
        else {
            return Ok(false);
        };
        let Some(mut receiver) = self.conn.pc.rtp_receiver(receiver_id) else {
            return Ok(false);
        };
        let Some(media_ssrc) = receiver.track().ssrcs().find(|&s| s != 0) else {
            return Ok(false);
        };
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        };
        receiver
            .write_rtcp(self.now, vec![Box::new(pli)])
            .map_err(rtc_internal)?;
        Ok(true)
    }

    /// RTCP from the remote: a picture loss indication or a full intra request about one of
    /// this side's tracks is the remote asking for a keyframe.
    pub(super) fn on_rtcp(&mut self, packets: &[Box<dyn rtc::rtcp::Packet>]) {
        let mut wanted = Vec::new();
        for packet in packets {
            let any = packet.as_any();
            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                wanted.push(pli.media_ssrc);
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                wanted.extend(fir.fir.iter().map(|e| e.ssrc));
                wanted.push(fir.media_ssrc);
            }
        }
        if wanted.is_empty() {
            return;
        }
        let mut found = Vec::new();
        for (index, slot) in self.conn.transceivers.iter().enumerate() {
            let Some(sender_id) = self.conn.pc.rtp_transceiver(index).and_then(|t| t.sender())
            else {
                continue;
            };
            let Some(sender) = self.conn.pc.rtp_sender(sender_id) else {
                continue;
            };
            if slot.stream.is_some() && sender.track().ssrcs().any(|s| wanted.contains(&s)) {
                found.push(slot.id);
            }
        }
        for transceiver in found {
            self.queue
                .push_back(Output::Event(Event::KeyframeRequested { transceiver }));
        }
    }

    /// An RTP packet of a remote track, for the application. It belongs to the transceiver
    /// whose receiving track has its SSRC by the descriptions applied (rtc tags packets with a
    /// track id, which is empty for a track the remote did not name and so may be shared by
    /// several, and stays the first one an SSRC had when the remote renames its track).
    pub(super) fn on_rtp(&mut self, packet: Packet) {
        let ssrc = packet.header.ssrc;
        let transceiver = match self.conn.remote_tracks.get(&ssrc) {
            Some(&transceiver) => transceiver,
            None => {
                let Some(transceiver) = self.transceiver_receiving(ssrc) else {
                    log::debug!("[{}] RTP of unknown SSRC {ssrc} dropped", self.conn.id);
                    return;
                };
                self.conn.remote_tracks.insert(ssrc, transceiver);
                transceiver
            }
        };
        let extensions = if packet.header.extensions.is_empty() {
            Vec::new()
        } else {
            let ids = self.extension_ids(transceiver);
            packet
                .header
                .extensions
                .iter()
                .filter_map(|e| {
                    let (_, extension) = ids.iter().find(|(id, _)| *id == e.id)?;
                    Some((*extension, e.payload.to_vec()))
                })
                .collect()
        };
        self.queue
            .push_back(Output::Event(Event::Media(MediaPacket {
                transceiver,
                payload_type: packet.header.payload_type,
                sequence_number: packet.header.sequence_number,
                timestamp: packet.header.timestamp,
                marker: packet.header.marker,
                extensions,
                payload: packet.payload.to_vec(),
            })));
    }

    /// The header extensions negotiated on a receiving transceiver, by the id they have on
    /// this connection.
    fn extension_ids(&mut self, transceiver: TransceiverId) -> &[(u8, HeaderExtension)] {
        if !self.conn.extension_ids.contains_key(&transceiver) {
            let receiver = self
                .conn
                .index_of(transceiver)
                .ok()
                .and_then(|index| self.conn.pc.rtp_transceiver(index)?.receiver());
            let ids = match receiver.and_then(|r| self.conn.pc.rtp_receiver(r)) {
                Some(mut receiver) => negotiated_extensions(
                    &receiver.get_parameters().rtp_parameters.header_extensions,
                ),
                None => Vec::new(),
            };
            self.conn.extension_ids.insert(transceiver, ids);
        }
        &self.conn.extension_ids[&transceiver]
    }

    /// The transceiver that receives the remote track with this SSRC now.
    fn transceiver_receiving(&mut self, ssrc: u32) -> Option<TransceiverId> {
        (0..self.conn.transceivers.len()).find_map(|i| {
            // Only a transceiver whose negotiated direction receives. rtc binds an SSRC that
            // arrives before any description declares it to the first transceiver of its kind
            // that may receive, whatever was negotiated there; once the offer that declares
            // it is applied, two receivers list it, and the first may be one the remote only
            // receives on (an SFU's downlink that a client could publish on).
            if !self.conn.receiving.contains(&self.conn.transceivers[i].id) {
                return None;
            }
            let receiver = self.conn.pc.rtp_transceiver(i)?.receiver()?;
            let receiver = self.conn.pc.rtp_receiver(receiver)?;
            let owns = receiver.track().ssrcs().any(|s| s == ssrc);
            owns.then(|| self.conn.transceivers[i].id)
        })
    }

    /// After an exchange: the W3C `track` event for every transceiver whose negotiated
    /// direction now receives, and its removal for every one that stopped receiving (the
    /// remote removed its track, or the m-section was rejected or stopped).
    /// The transceivers that send are noted too.
    pub(super) fn update_receiving(&mut self) {
        // The descriptions decide which SSRC arrives where; they just changed.
        self.conn.remote_tracks.clear();
        self.conn.extension_ids.clear();
        let transceivers = self.transceivers();
        self.conn.sending = transceivers
            .iter()
            .filter(|t| t.current_direction.is_some_and(Direction::sends))
            .map(|t| t.id)
            .collect();
        let now_receiving: Vec<_> = transceivers
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

/// The extensions the engine knows among those negotiated, by their id on this connection.
fn negotiated_extensions(
    negotiated: &[RTCRtpHeaderExtensionParameters],
) -> Vec<(u8, HeaderExtension)> {
    negotiated
        .iter()
        .filter_map(|h| Some((u8::try_from(h.id).ok()?, HeaderExtension::from_uri(&h.uri)?)))
        .collect()
}
