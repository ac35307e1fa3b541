//! RTP numbering on a subscriber's transceiver: one sequence and timestamp space, whichever
//! publisher's track it carries.

/// How far the timestamp moves on when the source changes: a frame at 30 fps in video's 90 kHz
/// clock (20 ms of Opus at 48 kHz is 960, less; a decoder only needs it to move forward).
const SWITCH_TIMESTAMP_GAP: u32 = 3_000;

/// Maps one source's sequence numbers and timestamps onto the numbering a subscriber's
/// transceiver has sent so far, so that a change of source looks like the same stream going
/// on (a jitter buffer that saw sequence numbers jump would wait for, or ask for, the gap).
///
/// Packets of the current source keep their spacing, so loss and reordering stay visible to
/// the subscriber (its NACKs name numbers this mapping gives back).
#[derive(Debug, Clone, Default)]
pub(crate) struct Rewriter {
    /// The source the offsets are for.
    source: Option<String>,
    sequence_offset: u16,
    timestamp_offset: u32,
    /// The newest sequence number and timestamp sent, in the subscriber's numbering.
    newest: Option<(u16, u32)>,
}

impl Rewriter {
    /// The packet just rewritten was not sent (the subscriber's transceiver could not send
    /// yet): the next one takes its sequence number, so the subscriber sees no gap to ask for.
    pub(crate) fn not_sent(&mut self) {
        if let Some((sequence, timestamp)) = self.newest {
            self.sequence_offset = self.sequence_offset.wrapping_sub(1);
            self.newest = Some((sequence.wrapping_sub(1), timestamp));
        }
    }

    /// The subscriber's sequence number and timestamp for a packet of `source`.
    pub(crate) fn rewrite(&mut self, source: &str, sequence: u16, timestamp: u32) -> (u16, u32) {
        if self.source.as_deref() != Some(source) {
            match self.newest {
                Some((newest_sequence, newest_timestamp)) => {
                    self.sequence_offset = newest_sequence.wrapping_add(1).wrapping_sub(sequence);
                    self.timestamp_offset = newest_timestamp
                        .wrapping_add(SWITCH_TIMESTAMP_GAP)
                        .wrapping_sub(timestamp);
                }
                None => {
                    self.sequence_offset = 0;
                    self.timestamp_offset = 0;
                }
            }
            self.source = Some(source.to_owned());
        }
        let out = (
            sequence.wrapping_add(self.sequence_offset),
            timestamp.wrapping_add(self.timestamp_offset),
        );
        // Newer by RFC 3550's serial arithmetic: a reordered older packet does not move it back.
        let newer = self
            .newest
            .is_none_or(|(newest, _)| (out.0.wrapping_sub(newest) as i16) > 0);
        if newer {
            self.newest = Some(out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_source_keeps_its_numbers() {
        let mut r = Rewriter::default();
        assert_eq!(r.rewrite("a", 100, 5_000), (100, 5_000));
        assert_eq!(r.rewrite("a", 101, 5_000), (101, 5_000));
        assert_eq!(
            r.rewrite("a", 103, 8_000),
            (103, 8_000),
            "a gap stays a gap"
        );
    }

    #[test]
    fn a_new_source_continues_the_numbering() {
        let mut r = Rewriter::default();
        r.rewrite("a", 65_535, 4_294_967_000);
        r.rewrite("a", 0, 4_294_967_000);
        // Another publisher's track, numbered from elsewhere.
        let (s, t) = r.rewrite("b", 7, 42);
        assert_eq!(s, 1, "the next sequence number after 0");
        assert_eq!(t, 4_294_967_000u32.wrapping_add(SWITCH_TIMESTAMP_GAP));
        assert_eq!(r.rewrite("b", 8, 3_042), (2, t.wrapping_add(3_000)));
    }

    #[test]
    fn a_packet_not_sent_leaves_no_gap() {
        let mut r = Rewriter::default();
        assert_eq!(r.rewrite("a", 10, 0).0, 10);
        assert_eq!(r.rewrite("a", 11, 0).0, 11);
        r.not_sent();
        assert_eq!(r.rewrite("a", 12, 0).0, 11);
        // A change of source after a packet not sent goes on from the last one sent.
        r.not_sent();
        assert_eq!(r.rewrite("b", 500, 0).0, 11);
    }

    #[test]
    fn a_late_packet_does_not_move_the_numbering_back() {
        let mut r = Rewriter::default();
        r.rewrite("a", 10, 0);
        r.rewrite("a", 12, 0);
        assert_eq!(r.rewrite("a", 11, 0), (11, 0));
        assert_eq!(r.rewrite("b", 0, 0).0, 13, "continues after the newest, 12");
    }
}
