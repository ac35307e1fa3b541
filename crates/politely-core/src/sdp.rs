//! The few facts the engine reads from SDP text: ICE ufrag, mids, and per m-section its
//! direction and msid. Line-based on purpose: rtc has already validated any SDP these see.

use crate::media::{Direction, MediaKind};

/// The ICE ufrag of the first m-section or the session, whichever comes first (BUNDLE: one
/// transport).
pub(crate) fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
}

/// Whether a candidate line (`candidate:…`, the `a=` optional) hides its address behind an
/// mDNS name (`<uuid>.local`), as browsers do for host candidates unless the page may capture.
pub(crate) fn is_hidden_candidate(candidate: &str) -> bool {
    let line = candidate.trim_start_matches("a=");
    // foundation component transport priority address port typ type …
    let mut fields = line.split_ascii_whitespace();
    let address = fields.nth(4);
    let kind = fields.nth(2);
    address.is_some_and(|a| a.to_ascii_lowercase().ends_with(".local")) && kind == Some("host")
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

pub(crate) fn mids(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
/// The lines of the m-section with this mid, its `m=` line first.
fn section<'a>(sdp: &'a str, mid: &str) -> Option<Vec<&'a str>> {
    let mut lines = Vec::new();
    let mut found = false;
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            if found {
                break;
            }
            lines.clear();
        }
        if line.strip_prefix("a=mid:") == Some(mid) {
            found = true;
        }
        lines.push(line);
    }
    found.then_some(lines)
}

#[cfg(test)]
/// The direction attribute of the m-section with this mid (sendrecv when absent, inactive when
/// the section is rejected).
pub(crate) fn section_direction(sdp: &str, mid: &str) -> Option<Direction> {
    let lines = section(sdp, mid)?;
    Some(direction_of(&lines))
}

/// The direction of an m-section (its lines, `m=` first): its attribute, sendrecv when absent,
/// inactive when the section is rejected.
fn direction_of(lines: &[&str]) -> Direction {
    if rejected(lines) {
        return Direction::Inactive;
    }
    let direction = lines.iter().find_map(|line| match *line {
        "a=sendrecv" => Some(Direction::SendRecv),
        "a=sendonly" => Some(Direction::SendOnly),
        "a=recvonly" => Some(Direction::RecvOnly),
        "a=inactive" => Some(Direction::Inactive),
        _ => None,
    });
    direction.unwrap_or(Direction::SendRecv)
}

/// What the engine reads of each m-section of a description, read in one pass. The engine
/// asks a current description the same questions for every transceiver at every step (the
/// negotiation-needed check, `transceivers()`, directions after an exchange); asked of the
/// text, each answer rescans it, which made a description of 21 m-sections cost milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Sections {
    /// In m-line order.
    sections: Vec<Section>,
    /// Whether a data (`m=application`) section is there.
    has_data: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Section {
    mid: String,
    /// The direction attribute (sendrecv when absent), inactive when rejected.
    direction: Direction,
    rejected: bool,
    /// The `a=msid` stream id, and track id if given.
    msid: Option<(String, Option<String>)>,
}

impl Sections {
    pub(crate) fn parse(sdp: &str) -> Self {
        let mut out = Self {
            has_data: sdp.contains("\nm=application"),
            ..Self::default()
        };
        let mut lines: Vec<&str> = Vec::new();
        let mut flush = |lines: &mut Vec<&str>| {
            let mid = lines.iter().find_map(|line| line.strip_prefix("a=mid:"));
            if let (Some(mid), Some(first)) = (mid, lines.first())
                && first.starts_with("m=")
            {
                let msid = lines
                    .iter()
                    .find_map(|line| line.strip_prefix("a=msid:"))
                    .and_then(|value| {
                        let mut words = value.split_whitespace();
                        Some((words.next()?.to_owned(), words.next().map(str::to_owned)))
                    });
                out.sections.push(Section {
                    mid: mid.to_owned(),
                    direction: direction_of(lines),
                    rejected: rejected(lines),
                    msid,
                });
            }
            lines.clear();
        };
        for line in sdp.lines().map(str::trim_end) {
            if line.starts_with("m=") {
                flush(&mut lines);
            }
            lines.push(line);
        }
        flush(&mut lines);
        out
    }

    fn get(&self, mid: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.mid == mid)
    }

    /// The mids, in m-line order.
    pub(crate) fn mids(&self) -> impl Iterator<Item = &str> {
        self.sections.iter().map(|s| s.mid.as_str())
    }

    /// The direction of the m-section with this mid: its attribute (sendrecv when absent),
    /// inactive when the section is rejected.
    pub(crate) fn direction(&self, mid: &str) -> Option<Direction> {
        self.get(mid).map(|s| s.direction)
    }

    /// Whether the m-section with this mid is rejected (port 0 without `a=bundle-only`).
    pub(crate) fn rejected(&self, mid: &str) -> bool {
        self.get(mid).is_some_and(|s| s.rejected)
    }

    /// The stream and track ids of the `a=msid` line of the m-section with this mid; the track
    /// id is optional in the grammar (RFC 8830 §2).
    pub(crate) fn msid(&self, mid: &str) -> Option<(&str, Option<&str>)> {
        let (stream, track) = self.get(mid)?.msid.as_ref()?;
        Some((stream.as_str(), track.as_deref()))
    }

    /// Whether the description has a data section.
    pub(crate) fn has_data(&self) -> bool {
        self.has_data
    }
}

#[cfg(test)]
/// Whether the m-section with this mid is rejected.
pub(crate) fn section_rejected(sdp: &str, mid: &str) -> bool {
    section(sdp, mid).is_some_and(|lines| rejected(&lines))
}

/// Whether an m-section (its lines, `m=` first) is rejected: port 0 without `a=bundle-only`.
/// A bundle-only section also has port 0 (RFC 8843 §6): it lives on the BUNDLE transport and
/// is as much a part of the session as any other. Firefox writes every m-section but the first
/// of its later offers that way.
fn rejected(lines: &[&str]) -> bool {
    let port = lines[0]
        .strip_prefix("m=")
        .and_then(|m| m.split_whitespace().nth(1));
    port == Some("0") && !lines.contains(&"a=bundle-only")
}

#[cfg(test)]
/// The stream and track ids of the `a=msid` line of the m-section with this mid; the track id
/// is optional in the grammar (RFC 8830 §2).
pub(crate) fn section_msid<'a>(sdp: &'a str, mid: &str) -> Option<(&'a str, Option<&'a str>)> {
    let value = section(sdp, mid)?
        .iter()
        .find_map(|line| line.strip_prefix("a=msid:"))?;
    let mut words = value.split_whitespace();
    Some((words.next()?, words.next()))
}

/// The description with `a=inactive` read as `a=recvonly` in the m-sections of these mids.
///
/// rtc stops a transceiver for good (sender and receiver) when a remote offer makes its
/// m-section inactive, so media never flows on it again, and `add_track` can no longer reuse
/// it. W3C only records the direction: the transceiver receives and sends again once a later
/// exchange allows it. For the remote's sending half, inactive and recvonly are the same, and
/// the engine makes the answer from the offer as the remote sent it, so rtc is handed this
/// text instead, which it does not stop on.
pub(crate) fn with_inactive_as_recvonly(sdp: &str, mids: &[String]) -> String {
    let mut out = String::with_capacity(sdp.len());
    let mut section: Vec<&str> = Vec::new();
    let flush = |section: &mut Vec<&str>, out: &mut String| {
        let listed = section.iter().any(|line| {
            line.trim_end()
                .strip_prefix("a=mid:")
                .is_some_and(|mid| mids.iter().any(|m| m == mid))
        });
        for line in section.drain(..) {
            match line.strip_prefix("a=inactive") {
                Some(end) if listed && end.trim().is_empty() => {
                    out.push_str("a=recvonly");
                    out.push_str(end);
                }
                _ => out.push_str(line),
            }
        }
    };
    for line in sdp.split_inclusive('\n') {
        if line.starts_with("m=") {
            flush(&mut section, &mut out);
        }
        section.push(line);
    }
    flush(&mut section, &mut out);
    out
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
    fn inactive_reads_as_recvonly_only_in_listed_sections() {
        let sdp = "v=0\r\ns=-\r\na=inactive\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=inactive\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\na=mid:1\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=inactive\r\n";
        let out = with_inactive_as_recvonly(sdp, &["0".to_owned(), "1".to_owned()]);
        assert_eq!(section_direction(&out, "0"), Some(Direction::RecvOnly));
        assert_eq!(section_direction(&out, "1"), Some(Direction::RecvOnly));
        assert_eq!(section_direction(&out, "2"), Some(Direction::Inactive));
        // The session-level line is no m-section's.
        assert!(out.starts_with("v=0\r\ns=-\r\na=inactive\r\n"));
        assert_eq!(out.matches("a=recvonly").count(), 2);
    }

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
    fn reads_ufrag_and_sections() {
        assert_eq!(ice_ufrag(SDP), Some("abcd"));
        assert_eq!(section_direction(SDP, "0"), Some(Direction::SendRecv));
        assert_eq!(section_msid(SDP, "0"), Some(("s1", Some("t1"))));
        // No direction attribute: sendrecv (RFC 4566 §6); no msid.
        assert_eq!(section_direction(SDP, "1"), Some(Direction::SendRecv));
        assert_eq!(section_msid(SDP, "1"), None);
        assert_eq!(section_direction(SDP, "2"), None);
        let rejected = SDP.replace("m=audio 9", "m=audio 0");
        assert_eq!(section_direction(&rejected, "0"), Some(Direction::Inactive));
        assert!(section_rejected(&rejected, "0"));
        // Port 0 with a=bundle-only is a live section on the BUNDLE transport (Firefox's
        // later offers), not a rejected one.
        let bundle_only = rejected.replace("a=mid:0\r\n", "a=mid:0\r\na=bundle-only\r\n");
        assert_eq!(
            section_direction(&bundle_only, "0"),
            Some(Direction::SendRecv)
        );
        assert!(!section_rejected(&bundle_only, "0"));
        let recvonly = SDP.replace("a=sendrecv", "a=recvonly");
        assert_eq!(section_direction(&recvonly, "0"), Some(Direction::RecvOnly));
    }

    /// The index reads every section as the functions on the text do.
    #[test]
    fn sections_read_as_the_text_does() {
        let rejected = SDP.replace("m=audio 9", "m=audio 0");
        let bundle_only = rejected.replace("a=mid:0\r\n", "a=mid:0\r\na=bundle-only\r\n");
        let cases = [
            SDP.to_owned(),
            rejected,
            bundle_only,
            SDP.replace("a=sendrecv", "a=inactive"),
            SDP.replace("a=msid:s1 t1", "a=msid:s1"),
            SDP.replace(
                "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n",
                "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n",
            ),
            // LF line ends, as some peers write.
            SDP.replace("\r\n", "\n"),
        ];
        for sdp in &cases {
            let index = Sections::parse(sdp);
            assert_eq!(index.mids().collect::<Vec<_>>(), mids(sdp), "{sdp}");
            assert_eq!(index.has_data(), sdp.contains("\nm=application"), "{sdp}");
            for mid in ["0", "1", "2"] {
                assert_eq!(
                    index.direction(mid),
                    section_direction(sdp, mid),
                    "{mid} in {sdp}"
                );
                assert_eq!(
                    index.rejected(mid),
                    section_rejected(sdp, mid),
                    "{mid} in {sdp}"
                );
                assert_eq!(index.msid(mid), section_msid(sdp, mid), "{mid} in {sdp}");
            }
        }
    }

    #[test]
    fn hidden_candidates_are_told_by_their_mdns_name() {
        let hidden = "candidate:1 1 udp 2122260223 4e0f3b6a-2a8f-4d3e-9c1a-0d2f7c8b9a11.local 54321 typ host generation 0";
        assert!(is_hidden_candidate(hidden));
        assert!(is_hidden_candidate(&format!("a={hidden}")));
        assert!(!is_hidden_candidate(
            "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host generation 0"
        ));
        // A reflexive candidate names the address it was seen from; only host ones are hidden.
        assert!(!is_hidden_candidate(
            "candidate:2 1 udp 1686052607 198.51.100.7 54321 typ srflx raddr 0.0.0.0 rport 0"
        ));
        assert!(!is_hidden_candidate(""));
    }
}
