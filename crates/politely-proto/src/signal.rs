//! Signaling messages between two peers: the W3C/MDN shapes plus a connection id.
//!
//! ```json
//! {"connectionId":"…","description":{"type":"offer","sdp":"…"},"offerId":3}
//! {"connectionId":"…","candidate":{"candidate":"…","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"…"}}
//! {"connectionId":"…","candidate":null}
//! {"connectionId":"…","bye":true}
//! ```
//!
//! With the negotiation gate (a client that asks before it offers, for an SFU), four more:
//!
//! ```json
//! {"connectionId":"…","gate":{"request":1,"leaseMs":2000}}
//! {"connectionId":"…","gate":{"grant":1,"leaseMs":2000}}
//! {"connectionId":"…","gate":{"wait":1}}
//! {"connectionId":"…","gate":{"release":1}}
//! ```
//!
//! and an offer made under a lease names it: `{"connectionId":"…","description":{…},"offerId":4,"lease":1}`.
//!
//! A side that yielded to a colliding offer and then could not apply it refuses it by number,
//! `{"connectionId":"…","refused":4}`, and offers its own: the refused side rolls its offer
//! back and takes that one (see [`Payload::Refused`]).
//!
//! `offerId` is politely's stale-answer guard: each side numbers its offers on a connection, and
//! an answer repeats the number of the offer it answers (LiveKit's offerId/answerId idea). It is
//! optional, so a page written with the plain MDN pattern interoperates; without it, the engine
//! falls back to the signaling state and to comparing SDP.

use serde_json::{Map, Value, json};
use std::fmt;

/// A signal's data that is not in the W3C shapes, or that politely does not support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalError {
    /// The data is not in the W3C shapes; the text names the offending field.
    Malformed(&'static str),
    /// A well-formed message that politely does not support (pranswer, rollback on the wire).
    Unsupported(&'static str),
}

impl fmt::Display for SignalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignalError::Malformed(what) => write!(f, "malformed signal: {what}"),
            SignalError::Unsupported(what) => write!(f, "unsupported: {what}"),
        }
    }
}

impl std::error::Error for SignalError {}

/// Identifies one peer connection between two peers (OWT's `connectionId`).
///
/// Every message of a connection carries it, so messages that belong to an older or another
/// connection are recognised and dropped instead of being applied to the current one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(String);

impl ConnectionId {
    /// Wraps an id chosen by the application or received from the peer.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The type of a session description on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpKind {
    /// An offer (JSEP `offer`).
    Offer,
    /// A final answer (JSEP `answer`).
    Answer,
}

impl SdpKind {
    /// The JSEP type string.
    pub fn as_str(self) -> &'static str {
        match self {
            SdpKind::Offer => "offer",
            SdpKind::Answer => "answer",
        }
    }
}

/// A session description as carried by `{"description": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// Offer or answer.
    pub kind: SdpKind,
    /// The SDP text.
    pub sdp: String,
}

/// An ICE candidate as carried by `{"candidate": {...}}` (W3C `RTCIceCandidateInit`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Candidate {
    /// The `candidate:` attribute; empty means end-of-candidates for that m-section.
    pub candidate: String,
    /// The media stream identification tag the candidate belongs to.
    pub sdp_mid: Option<String>,
    /// The index of the m-section the candidate belongs to.
    pub sdp_m_line_index: Option<u16>,
    /// The ICE ufrag of the generation the candidate belongs to.
    pub username_fragment: Option<String>,
}

/// What a signaling message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A session description, with the sender's offer number (see the module docs).
    Description {
        /// The description.
        description: Description,
        /// For an offer, its number; for an answer, the number of the offer it answers.
        offer_id: Option<u64>,
        /// For an offer made under a negotiation lease, the lease's id.
        lease: Option<u64>,
    },
    /// The negotiation gate: a client asking the other side whether it may offer now.
    Gate(Gate),
    /// A trickled candidate, or `None` for end-of-candidates (`"candidate": null`).
    Candidate(Option<Candidate>),
    /// The sender discarded this connection. With `reconnect`, it asks for a new one (its
    /// watchdog gave up on this one and it has nothing of its own to offer); without, it closed
    /// for good.
    Bye {
        /// Whether the sender wants a new connection.
        reconnect: bool,
    },
    /// The sender yielded to our offer `offer_id` in a glare and then could not apply it (a
    /// browser's own limit: Chromium refuses a Firefox offer whose header-extension ids differ
    /// from those of the offer it rolled back). It offers its own instead; we roll ours back
    /// and take that one, and our changes follow in our next offer.
    Refused {
        /// The refused offer's number.
        offer_id: u64,
    },
}

/// A message of the negotiation gate (seed 003's "may I negotiate now?"): the asking side
/// requests a lease, the other side grants it or tells it to wait (and grants it later), and the
/// asker offers under the lease or releases it. A lease ends with the answer to its offer, a
/// release, its expiry, or the connection's replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// May I offer? `lease_ms` is how long the asker wants the lease for.
    Request {
        /// The request's number, repeated by the grant, wait and release.
        id: u64,
        /// The lease wanted, in milliseconds.
        lease_ms: u64,
    },
    /// Yes, until `lease_ms` from now.
    Grant {
        /// The request granted.
        id: u64,
        /// How long the lease lasts, in milliseconds.
        lease_ms: u64,
    },
    /// Not now: the other side is negotiating; a grant follows when it is done.
    Wait {
        /// The request deferred.
        id: u64,
    },
    /// The asker no longer needs the lease (or the request).
    Release {
        /// The request or lease released.
        id: u64,
    },
}

/// One signaling message of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// The connection the message belongs to.
    pub connection_id: ConnectionId,
    /// What it says.
    pub payload: Payload,
}

impl Signal {
    /// The message as a JSON value, in the W3C shapes.
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("connectionId".into(), json!(self.connection_id.as_str()));
        match &self.payload {
            Payload::Description {
                description,
                offer_id,
                lease,
            } => {
                obj.insert(
                    "description".into(),
                    json!({"type": description.kind.as_str(), "sdp": description.sdp}),
                );
                if let Some(id) = offer_id {
                    obj.insert("offerId".into(), json!(id));
                }
                if let Some(lease) = lease {
                    obj.insert("lease".into(), json!(lease));
                }
            }
            Payload::Gate(gate) => {
                let body = match *gate {
                    Gate::Request { id, lease_ms } => json!({"request": id, "leaseMs": lease_ms}),
                    Gate::Grant { id, lease_ms } => json!({"grant": id, "leaseMs": lease_ms}),
                    Gate::Wait { id } => json!({"wait": id}),
                    Gate::Release { id } => json!({"release": id}),
                };
                obj.insert("gate".into(), body);
            }
            Payload::Candidate(None) => {
                obj.insert("candidate".into(), Value::Null);
            }
            Payload::Candidate(Some(c)) => {
                let mut cand = Map::new();
                cand.insert("candidate".into(), json!(c.candidate));
                cand.insert("sdpMid".into(), json!(c.sdp_mid));
                cand.insert("sdpMLineIndex".into(), json!(c.sdp_m_line_index));
                if let Some(ufrag) = &c.username_fragment {
                    cand.insert("usernameFragment".into(), json!(ufrag));
                }
                obj.insert("candidate".into(), Value::Object(cand));
            }
            Payload::Bye { reconnect } => {
                obj.insert("bye".into(), json!(true));
                if *reconnect {
                    obj.insert("reconnect".into(), json!(true));
                }
            }
            Payload::Refused { offer_id } => {
                obj.insert("refused".into(), json!(offer_id));
            }
        }
        Value::Object(obj)
    }

    /// The message as raw JSON, ready for [`crate::ClientMessage::signal`].
    pub fn to_raw(&self) -> Box<serde_json::value::RawValue> {
        // A Value always serializes.
        serde_json::value::to_raw_value(&self.to_json()).expect("a JSON value serializes")
    }

    /// Parses the `data` of a [`crate::ServerMessage::Signal`].
    pub fn from_raw(data: &serde_json::value::RawValue) -> Result<Signal, SignalError> {
        let value: Value =
            serde_json::from_str(data.get()).map_err(|_| SignalError::Malformed("not JSON"))?;
        Signal::from_json(&value)
    }

    /// Parses a message in the W3C shapes. Unknown fields are ignored, so peers may add their
    /// own; a message with none of `description`, `candidate` and `bye` is an error.
    pub fn from_json(value: &Value) -> Result<Signal, SignalError> {
        let obj = value
            .as_object()
            .ok_or(SignalError::Malformed("not a JSON object"))?;
        let connection_id = match obj.get("connectionId") {
            Some(Value::String(s)) if !s.is_empty() => ConnectionId::new(s.clone()),
            Some(Value::String(_)) => return Err(SignalError::Malformed("empty connectionId")),
            Some(_) => return Err(SignalError::Malformed("connectionId is not a string")),
            None => return Err(SignalError::Malformed("missing connectionId")),
        };
        let payload = if let Some(d) = obj.get("description") {
            let d = d
                .as_object()
                .ok_or(SignalError::Malformed("description is not an object"))?;
            let kind = match d.get("type").and_then(Value::as_str) {
                Some("offer") => SdpKind::Offer,
                Some("answer") => SdpKind::Answer,
                Some("pranswer") => return Err(SignalError::Unsupported("pranswer")),
                Some("rollback") => return Err(SignalError::Unsupported("rollback on the wire")),
                _ => return Err(SignalError::Malformed("description.type")),
            };
            let sdp = d
                .get("sdp")
                .and_then(Value::as_str)
                .ok_or(SignalError::Malformed("description.sdp"))?
                .to_owned();
            Payload::Description {
                description: Description { kind, sdp },
                offer_id: optional_number(obj, "offerId")?,
                lease: optional_number(obj, "lease")?,
            }
        } else if let Some(c) = obj.get("candidate") {
            match c {
                Value::Null => Payload::Candidate(None),
                Value::Object(c) => {
                    let opt_str = |key: &'static str| -> Result<Option<String>, SignalError> {
                        match c.get(key) {
                            None | Some(Value::Null) => Ok(None),
                            Some(Value::String(s)) => Ok(Some(s.clone())),
                            Some(_) => Err(SignalError::Malformed(key)),
                        }
                    };
                    let sdp_m_line_index = match c.get("sdpMLineIndex") {
                        None | Some(Value::Null) => None,
                        Some(v) => Some(
                            v.as_u64()
                                .and_then(|n| u16::try_from(n).ok())
                                .ok_or(SignalError::Malformed("sdpMLineIndex"))?,
                        ),
                    };
                    Payload::Candidate(Some(Candidate {
                        candidate: opt_str("candidate")?.unwrap_or_default(),
                        sdp_mid: opt_str("sdpMid")?,
                        sdp_m_line_index,
                        username_fragment: opt_str("usernameFragment")?,
                    }))
                }
                _ => {
                    return Err(SignalError::Malformed("candidate is not an object or null"));
                }
            }
        } else if let Some(g) = obj.get("gate") {
            let g = g
                .as_object()
                .ok_or(SignalError::Malformed("gate is not an object"))?;
            let lease_ms =
                || optional_number(g, "leaseMs")?.ok_or(SignalError::Malformed("gate.leaseMs"));
            let gate = if let Some(id) = optional_number(g, "request")? {
                Gate::Request {
                    id,
                    lease_ms: lease_ms()?,
                }
            } else if let Some(id) = optional_number(g, "grant")? {
                Gate::Grant {
                    id,
                    lease_ms: lease_ms()?,
                }
            } else if let Some(id) = optional_number(g, "wait")? {
                Gate::Wait { id }
            } else if let Some(id) = optional_number(g, "release")? {
                Gate::Release { id }
            } else {
                return Err(SignalError::Malformed(
                    "gate has none of request, grant, wait, release",
                ));
            };
            Payload::Gate(gate)
        } else if obj.get("bye").and_then(Value::as_bool) == Some(true) {
            Payload::Bye {
                reconnect: obj.get("reconnect").and_then(Value::as_bool) == Some(true),
            }
        } else if let Some(offer_id) = optional_number(obj, "refused")? {
            Payload::Refused { offer_id }
        } else {
            return Err(SignalError::Malformed(
                "none of description, candidate, gate, bye, refused",
            ));
        };
        Ok(Signal {
            connection_id,
            payload,
        })
    }
}

/// A field that, when present and not null, must be a non-negative integer.
fn optional_number(
    obj: &Map<String, Value>,
    key: &'static str,
) -> Result<Option<u64>, SignalError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or(SignalError::Malformed(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> Signal {
        let value: Value = serde_json::from_str(text).unwrap();
        let signal = Signal::from_json(&value).unwrap();
        assert_eq!(signal.to_json(), value, "golden shape changed for {text}");
        signal
    }

    #[test]
    fn golden_description() {
        let s = round_trip(
            r#"{"connectionId":"c1","description":{"type":"offer","sdp":"v=0\r\n"},"offerId":3}"#,
        );
        assert!(matches!(
            s.payload,
            Payload::Description {
                offer_id: Some(3),
                ..
            }
        ));
        round_trip(r#"{"connectionId":"c1","description":{"type":"answer","sdp":"v=0\r\n"}}"#);
    }

    #[test]
    fn golden_candidate_and_end_of_candidates_and_bye() {
        round_trip(
            r#"{"connectionId":"c","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}}"#,
        );
        let end = round_trip(r#"{"connectionId":"c","candidate":null}"#);
        assert_eq!(end.payload, Payload::Candidate(None));
        assert_eq!(
            round_trip(r#"{"connectionId":"c","bye":true}"#).payload,
            Payload::Bye { reconnect: false }
        );
        assert_eq!(
            round_trip(r#"{"connectionId":"c","bye":true,"reconnect":true}"#).payload,
            Payload::Bye { reconnect: true }
        );
        assert_eq!(
            round_trip(r#"{"connectionId":"c","refused":4}"#).payload,
            Payload::Refused { offer_id: 4 }
        );
    }

    #[test]
    fn golden_gate_messages_and_leased_offer() {
        let s = round_trip(
            r#"{"connectionId":"c","description":{"type":"offer","sdp":"v=0\r\n"},"offerId":4,"lease":2}"#,
        );
        assert!(matches!(
            s.payload,
            Payload::Description {
                offer_id: Some(4),
                lease: Some(2),
                ..
            }
        ));
        for (text, gate) in [
            (
                r#"{"connectionId":"c","gate":{"request":1,"leaseMs":2000}}"#,
                Gate::Request {
                    id: 1,
                    lease_ms: 2000,
                },
            ),
            (
                r#"{"connectionId":"c","gate":{"grant":1,"leaseMs":1500}}"#,
                Gate::Grant {
                    id: 1,
                    lease_ms: 1500,
                },
            ),
            (
                r#"{"connectionId":"c","gate":{"wait":1}}"#,
                Gate::Wait { id: 1 },
            ),
            (
                r#"{"connectionId":"c","gate":{"release":1}}"#,
                Gate::Release { id: 1 },
            ),
        ] {
            assert_eq!(round_trip(text).payload, Payload::Gate(gate));
        }
    }

    #[test]
    fn malformed_signals_are_errors() {
        for text in [
            "3",
            r#"{"description":{"type":"offer","sdp":""}}"#,
            r#"{"connectionId":"","bye":true}"#,
            r#"{"connectionId":7,"bye":true}"#,
            r#"{"connectionId":"c"}"#,
            r#"{"connectionId":"c","description":{"type":"bogus","sdp":""}}"#,
            r#"{"connectionId":"c","description":{"type":"offer"}}"#,
            r#"{"connectionId":"c","description":{"type":"pranswer","sdp":""}}"#,
            r#"{"connectionId":"c","description":{"type":"offer","sdp":""},"offerId":-1}"#,
            r#"{"connectionId":"c","candidate":{"candidate":5}}"#,
            r#"{"connectionId":"c","candidate":{"candidate":"x","sdpMLineIndex":70000}}"#,
            r#"{"connectionId":"c","candidate":"x"}"#,
            r#"{"connectionId":"c","description":{"type":"offer","sdp":""},"lease":"x"}"#,
            r#"{"connectionId":"c","gate":{}}"#,
            r#"{"connectionId":"c","gate":{"request":1}}"#,
            r#"{"connectionId":"c","gate":{"grant":-1,"leaseMs":5}}"#,
            r#"{"connectionId":"c","gate":true}"#,
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            assert!(Signal::from_json(&value).is_err(), "accepted {text}");
        }
    }
}
