//! Room messages between a client and a room's SFU: which tracks a client publishes and what
//! they are, which tracks are available, and which a client wants. They travel as a signal's
//! `data`, like the negotiation's own messages, but belong to no connection, so they carry no
//! `connectionId`:
//!
//! ```json
//! {"room":{"publish":{"track":"3f2a…","source":"screen"}}}
//! {"room":{"tracks":[{"id":"t4","publisher":"01JC…","kind":"video","source":"screen","mid":"2"}]}}
//! {"room":{"subscribe":["t4","t7"]}}
//! {"room":{"unsubscribe":["t4"]}}
//! ```
//!
//! `publish` names a track by the track id of its `a=msid`, or by its stream id (Chromium's msid
//! track id is not the `MediaStreamTrack.id`, so a page gives each published track a
//! `MediaStream` of its own and names that); it may come before or after the offer that carries
//! the track. `tracks` is the whole list of
//! tracks the client may subscribe to, sent again whenever it changes; each forwarded track then
//! arrives with the publisher's id as its stream id and the list's `id` as its track id.

use serde_json::{Map, Value, json};

/// What a published track shows (seed 003's track types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Source {
    /// A camera or a microphone.
    #[default]
    Media,
    /// A shared screen or window.
    Screen,
}

impl Source {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Media => "media",
            Source::Screen => "screen",
        }
    }

    fn parse(s: &str) -> Option<Source> {
        match s {
            "media" => Some(Source::Media),
            "screen" => Some(Source::Screen),
            _ => None,
        }
    }
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrackKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

impl TrackKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::Audio => "audio",
            TrackKind::Video => "video",
        }
    }
}

/// One track a client may subscribe to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AvailableTrack {
    /// The room's id of the track, also the track id of its `a=msid` on the subscriber's
    /// connection.
    pub id: String,
    /// The publisher's peer id, also the stream id of its `a=msid`.
    pub publisher: String,
    /// Audio or video.
    pub kind: TrackKind,
    /// What it shows.
    pub source: Source,
    /// For a track forwarded to this client, the mid of the m-section it arrives on, once
    /// negotiated. A page matches received tracks by it: a browser keeps a transceiver's
    /// receiving track (and its id) when the SFU reuses the m-section for another track.
    pub mid: Option<String>,
}

/// A room message, in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomMessage {
    /// Client to SFU: the track with this msid track id (or msid stream id) shows `source`.
    Publish {
        /// The msid track id, or the msid stream id, of the client's track.
        track: String,
        /// What it shows.
        source: Source,
    },
    /// Client to SFU: forward these tracks to me (by [`AvailableTrack::id`]).
    Subscribe(Vec<String>),
    /// Client to SFU: stop forwarding these tracks.
    Unsubscribe(Vec<String>),
    /// SFU to client: every track the client may subscribe to now.
    Tracks(Vec<AvailableTrack>),
}

/// A signal's data that is not a room message, or a malformed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomError(pub &'static str);

impl std::fmt::Display for RoomError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed room message: {}", self.0)
    }
}

impl std::error::Error for RoomError {}

impl RoomMessage {
    /// Whether a signal's data is a room message (has a `room` member), whatever its content.
    pub fn is_room(value: &Value) -> bool {
        value.get("room").is_some()
    }

    /// The message as a JSON value.
    pub fn to_json(&self) -> Value {
        let ids = |ids: &[String]| Value::from(ids.to_vec());
        let body = match self {
            RoomMessage::Publish { track, source } => {
                json!({"publish": {"track": track, "source": source.as_str()}})
            }
            RoomMessage::Subscribe(tracks) => json!({"subscribe": ids(tracks)}),
            RoomMessage::Unsubscribe(tracks) => json!({"unsubscribe": ids(tracks)}),
            RoomMessage::Tracks(tracks) => {
                let list: Vec<Value> = tracks
                    .iter()
                    .map(|t| {
                        let mut v = json!({
                            "id": t.id,
                            "publisher": t.publisher,
                            "kind": t.kind.as_str(),
                            "source": t.source.as_str(),
                        });
                        if let Some(mid) = &t.mid {
                            v["mid"] = json!(mid);
                        }
                        v
                    })
                    .collect();
                json!({ "tracks": list })
            }
        };
        json!({ "room": body })
    }

    /// The message as raw JSON, ready for [`crate::ClientMessage::signal`].
    pub fn to_raw(&self) -> Box<serde_json::value::RawValue> {
        serde_json::value::to_raw_value(&self.to_json()).expect("a JSON value serializes")
    }

    /// Parses a room message. Unknown fields are ignored.
    pub fn from_json(value: &Value) -> Result<RoomMessage, RoomError> {
        let room = value
            .get("room")
            .and_then(Value::as_object)
            .ok_or(RoomError("no room object"))?;
        if let Some(p) = room.get("publish") {
            let p = p.as_object().ok_or(RoomError("publish"))?;
            let track = string(p, "track")?;
            let source = Source::parse(&string(p, "source")?).ok_or(RoomError("source"))?;
            return Ok(RoomMessage::Publish { track, source });
        }
        if let Some(ids) = room.get("subscribe") {
            return Ok(RoomMessage::Subscribe(strings(ids, "subscribe")?));
        }
        if let Some(ids) = room.get("unsubscribe") {
            return Ok(RoomMessage::Unsubscribe(strings(ids, "unsubscribe")?));
        }
        if let Some(list) = room.get("tracks") {
            let list = list.as_array().ok_or(RoomError("tracks"))?;
            let mut tracks = Vec::with_capacity(list.len());
            for t in list {
                let t = t.as_object().ok_or(RoomError("tracks[]"))?;
                let kind = match string(t, "kind")?.as_str() {
                    "audio" => TrackKind::Audio,
                    "video" => TrackKind::Video,
                    _ => return Err(RoomError("kind")),
                };
                tracks.push(AvailableTrack {
                    id: string(t, "id")?,
                    publisher: string(t, "publisher")?,
                    kind,
                    source: Source::parse(&string(t, "source")?).ok_or(RoomError("source"))?,
                    mid: t.get("mid").and_then(Value::as_str).map(str::to_owned),
                });
            }
            return Ok(RoomMessage::Tracks(tracks));
        }
        Err(RoomError("none of publish, subscribe, unsubscribe, tracks"))
    }
}

fn string(obj: &Map<String, Value>, key: &'static str) -> Result<String, RoomError> {
    obj.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(RoomError(key))
}

fn strings(value: &Value, what: &'static str) -> Result<Vec<String>, RoomError> {
    value
        .as_array()
        .ok_or(RoomError(what))?
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or(RoomError(what)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> RoomMessage {
        let value: Value = serde_json::from_str(text).unwrap();
        assert!(RoomMessage::is_room(&value));
        let message = RoomMessage::from_json(&value).unwrap();
        assert_eq!(message.to_json(), value, "golden shape changed for {text}");
        message
    }

    #[test]
    fn golden_room_messages() {
        assert_eq!(
            round_trip(r#"{"room":{"publish":{"track":"a1","source":"screen"}}}"#),
            RoomMessage::Publish {
                track: "a1".into(),
                source: Source::Screen
            }
        );
        assert_eq!(
            round_trip(r#"{"room":{"subscribe":["t1","t2"]}}"#),
            RoomMessage::Subscribe(vec!["t1".into(), "t2".into()])
        );
        round_trip(r#"{"room":{"unsubscribe":[]}}"#);
        let tracks = round_trip(
            r#"{"room":{"tracks":[{"id":"t4","publisher":"p1","kind":"video","source":"media"}]}}"#,
        );
        round_trip(
            r#"{"room":{"tracks":[{"id":"t5","publisher":"p2","kind":"audio","source":"screen","mid":"3"}]}}"#,
        );
        assert_eq!(
            tracks,
            RoomMessage::Tracks(vec![AvailableTrack {
                id: "t4".into(),
                publisher: "p1".into(),
                kind: TrackKind::Video,
                source: Source::Media,
                mid: None,
            }])
        );
    }

    #[test]
    fn malformed_room_messages_are_errors() {
        for text in [
            r#"{"room":{}}"#,
            r#"{"room":{"publish":{"track":"a"}}}"#,
            r#"{"room":{"publish":{"track":"a","source":"window"}}}"#,
            r#"{"room":{"subscribe":"t1"}}"#,
            r#"{"room":{"tracks":[{"id":"t","publisher":"p","kind":"data","source":"media"}]}}"#,
            r#"{"connectionId":"c","bye":true}"#,
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            assert!(RoomMessage::from_json(&value).is_err(), "{text}");
        }
    }
}
