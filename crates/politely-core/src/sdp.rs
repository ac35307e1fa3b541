//! The few facts the engine reads from SDP text: ICE ufrag, mids, and a summary of what an
//! offer would negotiate. Line-based on purpose: rtc has already validated any SDP these see.

use crate::media::{Direction, MediaKind};

/// The ICE ufrag of the first m-section or the session, whichever comes first (BUNDLE: one
/// transport).
pub(crate) fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
}

/// The first `a=setup` value (the DTLS role: active, passive or actpass).
pub(crate) fn setup(sdp: &str) -> Option<&'static str> {
    let value = sdp
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("a=setup:"))?;
    ["active", "passive", "actpass", "holdconn"]
        .into_iter()
        .find(|v| *v == value.trim())
}

/// The description with every `a=setup` line set to `role`.
pub(crate) fn with_setup(sdp: &str, role: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        if line.starts_with("a=setup:") {
            out.push_str("a=setup:");
            out.push_str(role);
            out.push_str(if line.ends_with("\r\n") { "\r\n" } else { "\n" });
        } else {
            out.push_str(line);
        }
    }
    out
}

/// The negotiable content of a description: per m-section its media, mid, direction and send
/// stream, plus the ICE ufrag. Two descriptions with equal summaries negotiate the same thing,
/// so an offer whose summary equals the current local description's was not needed.
pub(crate) fn summary(sdp: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(ufrag) = ice_ufrag(sdp) {
        out.push(format!("ufrag={ufrag}"));
    }
    let mut section: Option<String> = None;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            out.extend(section.take());
            // Media type and whether the section is rejected (port 0).
            let mut parts = m.split_whitespace();
            let media = parts.next().unwrap_or("");
            let rejected = parts.next() == Some("0");
            section = Some(format!("m={media} rejected={rejected}"));
        } else if let Some(s) = section.as_mut() {
            for key in ["a=mid:", "a=msid:"] {
                if let Some(v) = line.strip_prefix(key) {
                    // Only the stream id of an msid matters to negotiation-needed (W3C 5.3.1).
                    let v = v.split_whitespace().next().unwrap_or("");
                    s.push_str(&format!(" {key}{v}"));
                }
            }
            if matches!(
                line,
                "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive"
            ) {
                s.push(' ');
                s.push_str(line);
            }
        }
    }
    out.extend(section);
    out
}

pub(crate) fn mids(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .map(str::to_owned)
        .collect()
}

/// W3C `currentDirection`: the direction negotiated by the last completed exchange, the
/// answer's for the answerer and its reverse for the offerer. Read from the SDP rather than
/// from rtc's `current_direction()`, which reports `inactive` for a transceiver created by a
/// remote recvonly offer while rtc's answer for it says `sendonly` (a local bookkeeping choice
/// so that `add_track` can reuse it); the SDP is what both ends agreed on.
pub(crate) fn negotiated_direction(
    local: &Option<(bool, String)>,
    remote: &Option<String>,
    mid: &str,
) -> Option<Direction> {
    let (local_is_answer, local) = local.as_ref()?;
    if *local_is_answer {
        section_direction(local, mid)
    } else {
        section_direction(remote.as_ref()?, mid).map(Direction::reverse)
    }
}

/// The direction attribute of the m-section with this mid (sendrecv when absent, inactive when
/// the section is rejected).
pub(crate) fn section_direction(sdp: &str, mid: &str) -> Option<Direction> {
    let mut in_section = false;
    let mut rejected = false;
    let mut direction = None;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            if in_section {
                break;
            }
            rejected = m.split_whitespace().nth(1) == Some("0");
            direction = None;
        } else if line.strip_prefix("a=mid:") == Some(mid) {
            in_section = true;
        } else {
            direction = match line {
                "a=sendrecv" => Some(Direction::SendRecv),
                "a=sendonly" => Some(Direction::SendOnly),
                "a=recvonly" => Some(Direction::RecvOnly),
                "a=inactive" => Some(Direction::Inactive),
                _ => direction,
            };
        }
    }
    if !in_section {
        return None;
    }
    if rejected {
        return Some(Direction::Inactive);
    }
    Some(direction.unwrap_or(Direction::SendRecv))
}

pub(crate) fn media_of_mid(sdp: &str, mid: Option<&str>) -> Option<MediaKind> {
    let mid = mid?;
    let mut media = None;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            media = match m.split_whitespace().next() {
                Some("audio") => Some(MediaKind::Audio),
                Some("video") => Some(MediaKind::Video),
                _ => None,
            };
        } else if line.strip_prefix("a=mid:") == Some(mid) {
            return media;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:abcd\r\na=mid:0\r\na=sendrecv\r\na=msid:s1 t1\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=ice-ufrag:abcd\r\na=mid:1\r\n";

    #[test]
    fn reads_and_rewrites_setup() {
        let sdp = "v=0\r\nm=audio 9 X 0\r\na=setup:active\r\nm=video 9 X 0\r\na=setup:active\r\n";
        assert_eq!(setup(sdp), Some("active"));
        let passive = with_setup(sdp, "passive");
        assert_eq!(passive.matches("a=setup:passive\r\n").count(), 2);
        assert_eq!(setup(&passive), Some("passive"));
        assert_eq!(passive.len(), sdp.len() + 2);
    }

    #[test]
    fn reads_ufrag_and_summary() {
        assert_eq!(ice_ufrag(SDP), Some("abcd"));
        assert_eq!(
            summary(SDP),
            vec![
                "ufrag=abcd".to_owned(),
                "m=audio rejected=false a=mid:0 a=sendrecv a=msid:s1".to_owned(),
                "m=application rejected=false a=mid:1".to_owned(),
            ]
        );
        let changed = SDP.replace("a=sendrecv", "a=recvonly");
        assert_ne!(summary(SDP), summary(&changed));
        let reversioned = SDP.replace("o=- 1 2", "o=- 1 3");
        assert_eq!(summary(SDP), summary(&reversioned));
    }
}
