//! W3C "check if negotiation is needed" (webrtc-pc §4.7.3), computed from the engine's own
//! record of what the application asked for and the current descriptions.
//!
//! rtc has its own version of this check, but it compares against rtc's transceiver
//! direction, which rtc overwrites with negotiated directions (like Pion). The engine keeps the
//! application's direction ([[Direction]]) itself, so it runs the check itself: this is what
//! decides whether an offer is made, so it is exact by the spec, step by step.

use crate::media::{Direction, TrackLabel};
use crate::sdp::Sections;

/// The current (last stable) descriptions.
pub(crate) struct Current<'a> {
    /// The current local description's m-sections, and whether it is an answer.
    pub(crate) local: &'a Sections,
    pub(crate) local_is_answer: bool,
    /// The current remote description's m-sections.
    pub(crate) remote: &'a Sections,
}

/// One transceiver as the check sees it.
pub(crate) struct Transceiver<'a> {
    /// Its mid, if associated.
    pub(crate) mid: Option<&'a str>,
    /// The application's direction ([[Direction]]).
    pub(crate) direction: Direction,
    /// The stream and track ids of its track, if it has one (the `a=msid` the m-section must
    /// carry).
    pub(crate) stream: Option<&'a TrackLabel>,
}

/// Whether negotiation is needed. `current` is `None` before the first exchange completed;
/// `has_channels` says whether any data channel exists.
pub(crate) fn check(
    current: Option<&Current<'_>>,
    has_channels: bool,
    transceivers: &[Transceiver<'_>],
) -> bool {
    // Step 3 (steps 1-2 concern the operations chain, which sans-I/O does not have): before
    // the first exchange, anything at all needs negotiating. Nothing at all needs nothing: an
    // offer without an m-section could not be applied by anyone.
    let Some(current) = current else {
        return has_channels || !transceivers.is_empty();
    };
    // Step 4: a data channel exists and no m-section for data was negotiated.
    if has_channels && !current.local.has_data() {
        return true;
    }
    for t in transceivers {
        // Step 5.1 concerns stopping transceivers, which the engine does not offer.
        // Step 5.2: not yet associated with an m-section.
        let Some(mid) = t.mid else {
            return true;
        };
        let Some(local) = current.local.direction(mid) else {
            return true;
        };
        // A rejected m-section stops its transceiver (JSEP 5.10); step 5.1 skips stopped ones.
        if current.local.rejected(mid) {
            continue;
        }
        // Step 5.3.1: a sending direction must carry the track's msid (W3C compares the
        // stream ids; the track id counts too, since an SFU relabels a sender for a new track
        // and the remote must learn it).
        if t.direction.sends()
            && let Some(label) = t.stream
            && current.local.msid(mid)
                != Some((label.stream_id.as_str(), Some(label.track_id.as_str())))
        {
            return true;
        }
        if current.local_is_answer {
            // Step 5.3.3: the answer's direction must be [[Direction]] intersected with the
            // reverse of the offered direction.
            let offered = current.remote.direction(mid).unwrap_or(Direction::Inactive);
            if local != t.direction.intersect(offered.reverse()) {
                return true;
            }
        } else {
            // Step 5.3.2: as offerer, neither the offer nor the (reversed) answer matches
            // [[Direction]].
            let answered = current.remote.direction(mid).map(Direction::reverse);
            if local != t.direction && answered != Some(t.direction) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::*;

    fn section(mid: &str, dir: Direction, msid: Option<&str>) -> String {
        let msid = msid
            .map(|s| format!("a=msid:{s} t\r\n"))
            .unwrap_or_default();
        format!("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:{mid}\r\na={dir}\r\n{msid}")
    }

    fn desc(sections: &[String]) -> String {
        format!("v=0\r\ns=-\r\n{}", sections.concat())
    }

    /// (label, local is answer, local direction, remote direction, [[Direction]], needed)
    #[test]
    fn direction_table() {
        let table: &[(&str, bool, Direction, Direction, Direction, bool)] = &[
            // Offerer: the offer or the reversed answer must match [[Direction]].
            (
                "offerer, offered sendrecv, answered sendrecv, wants sendrecv",
                false,
                SendRecv,
                SendRecv,
                SendRecv,
                false,
            ),
            (
                "offerer, offered sendrecv, answered recvonly, wants sendrecv",
                false,
                SendRecv,
                RecvOnly,
                SendRecv,
                false,
            ),
            (
                "offerer, offered sendrecv, answered recvonly, wants recvonly",
                false,
                SendRecv,
                RecvOnly,
                RecvOnly,
                true,
            ),
            (
                "offerer, offered sendrecv, answered sendonly, wants recvonly",
                false,
                SendRecv,
                SendOnly,
                RecvOnly,
                false,
            ),
            (
                "offerer, offered inactive, answered inactive, wants sendrecv",
                false,
                Inactive,
                Inactive,
                SendRecv,
                true,
            ),
            // Answerer: the answer must be [[Direction]] ∩ reverse(offered).
            (
                "answerer, offered sendrecv, answered sendonly, wants sendrecv",
                true,
                SendOnly,
                SendRecv,
                SendRecv,
                true,
            ),
            (
                "answerer, offered recvonly, answered sendonly, wants sendrecv",
                true,
                SendOnly,
                RecvOnly,
                SendRecv,
                false,
            ),
            (
                "answerer, offered recvonly, answered inactive, wants recvonly",
                true,
                Inactive,
                RecvOnly,
                RecvOnly,
                false,
            ),
            (
                "answerer, offered inactive, answered inactive, wants sendrecv",
                true,
                Inactive,
                Inactive,
                SendRecv,
                false,
            ),
            (
                "answerer, offered sendonly, answered recvonly, wants sendrecv",
                true,
                RecvOnly,
                SendOnly,
                SendRecv,
                false,
            ),
            (
                "answerer, offered sendonly, answered recvonly, wants inactive",
                true,
                RecvOnly,
                SendOnly,
                Inactive,
                true,
            ),
        ];
        for &(label, is_answer, local, remote, wanted, needed) in table {
            let local = desc(&[section("0", local, None)]);
            let remote = desc(&[section("0", remote, None)]);
            let (local, remote) = (Sections::parse(&local), Sections::parse(&remote));
            let current = Current {
                local: &local,
                local_is_answer: is_answer,
                remote: &remote,
            };
            let t = [Transceiver {
                mid: Some("0"),
                direction: wanted,
                stream: None,
            }];
            assert_eq!(check(Some(&current), false, &t), needed, "{label}");
        }
    }

    #[test]
    fn unassociated_msid_and_data() {
        let local = desc(&[section("0", SendRecv, Some("s1"))]);
        let remote = desc(&[section("0", SendRecv, None)]);
        let (local, remote) = (Sections::parse(&local), Sections::parse(&remote));
        let current = Current {
            local: &local,
            local_is_answer: false,
            remote: &remote,
        };
        let label = |stream: &str, track: &str| TrackLabel {
            stream_id: stream.to_owned(),
            track_id: track.to_owned(),
        };
        let (same, other_stream, other_track) =
            (label("s1", "t"), label("s2", "t"), label("s1", "u"));
        let t = |mid, stream| Transceiver {
            mid,
            direction: SendRecv,
            stream,
        };
        assert!(!check(Some(&current), false, &[t(Some("0"), Some(&same))]));
        assert!(
            check(Some(&current), false, &[t(Some("0"), Some(&other_stream))]),
            "another stream"
        );
        assert!(
            check(Some(&current), false, &[t(Some("0"), Some(&other_track))]),
            "another track of the same stream"
        );
        assert!(check(Some(&current), false, &[t(None, None)]), "no mid yet");
        assert!(
            check(Some(&current), false, &[t(Some("7"), None)]),
            "mid not negotiated"
        );
        assert!(
            check(Some(&current), true, &[]),
            "a channel and no data section"
        );
        assert!(!check(None, false, &[]), "nothing at all");
        assert!(check(None, true, &[]), "a first channel");
    }
}
