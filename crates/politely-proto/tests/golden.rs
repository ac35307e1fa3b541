//! Golden frames: the exact JSON of every frame of protocol v1. A rename in the types breaks
//! these tests instead of silently changing the wire.

use politely_proto::{
    ClientMessage, CloseCode, ErrorCode, IceServer, PeerInfo, ServerMessage, User, signal::Signal,
};
use serde_json::value::RawValue;
use std::borrow::Cow;

fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap()
}

/// Serializes to exactly `golden`, and parses back to the same frame.
fn client(message: ClientMessage<'_>, golden: &str) {
    assert_eq!(message.to_json(), golden);
    assert_eq!(ClientMessage::from_json(golden).unwrap().to_json(), golden);
}

fn server(message: ServerMessage<'_>, golden: &str) {
    assert_eq!(message.to_json(), golden);
    assert_eq!(ServerMessage::from_json(golden).unwrap().to_json(), golden);
}

#[test]
fn client_frames() {
    client(
        ClientMessage::Join {
            room: "lobby".into(),
            token: None,
            resume: None,
            sfu: false,
            peers: vec![],
            received: None,
        },
        r#"{"type":"join","room":"lobby"}"#,
    );
    client(
        ClientMessage::Join {
            room: "lobby".into(),
            token: None,
            resume: None,
            sfu: true,
            peers: vec![],
            received: None,
        },
        r#"{"type":"join","room":"lobby","sfu":true}"#,
    );
    client(
        ClientMessage::Join {
            room: "lobby".into(),
            token: Some("t.s".into()),
            resume: Some("01J.ab".into()),
            sfu: false,
            peers: vec![],
            received: None,
        },
        r#"{"type":"join","room":"lobby","token":"t.s","resume":"01J.ab"}"#,
    );
    client(
        ClientMessage::Join {
            room: "lobby".into(),
            token: None,
            resume: Some("01J.ab".into()),
            sfu: false,
            peers: vec!["01JA".into(), "01JC".into()],
            received: None,
        },
        r#"{"type":"join","room":"lobby","resume":"01J.ab","peers":["01JA","01JC"]}"#,
    );
    client(
        ClientMessage::Join {
            room: "lobby".into(),
            token: None,
            resume: Some("01J.ab".into()),
            sfu: false,
            peers: vec![],
            received: Some(17),
        },
        r#"{"type":"join","room":"lobby","resume":"01J.ab","received":17}"#,
    );
    client(
        ClientMessage::signal("01JB", raw(r#"{"connectionId":"c","bye":true}"#)),
        r#"{"type":"signal","to":"01JB","data":{"connectionId":"c","bye":true}}"#,
    );
    client(ClientMessage::Leave, r#"{"type":"leave"}"#);
    client(ClientMessage::Ping, r#"{"type":"ping"}"#);
    client(ClientMessage::IceServers, r#"{"type":"ice-servers"}"#);
}

#[test]
fn server_frames() {
    server(
        ServerMessage::Welcome {
            id: "01JB".into(),
            room: "lobby".into(),
            peers: vec![
                PeerInfo {
                    id: "01JA".into(),
                    polite: false,
                    sfu: false,
                    user: None,
                },
                PeerInfo {
                    id: "01JC".into(),
                    polite: true,
                    sfu: false,
                    user: Some(User {
                        sub: "carol".into(),
                        name: Some("Carol".into()),
                        metadata: Some(serde_json::json!({"seat": 3})),
                    }),
                },
            ],
            resume: "01JB.00ff".into(),
            resumed: false,
            taken: None,
            version: 1,
            ice_servers: Vec::new(),
            ice_ttl: None,
        },
        r#"{"type":"welcome","id":"01JB","room":"lobby","peers":[{"id":"01JA","polite":false},{"id":"01JC","polite":true,"user":{"sub":"carol","name":"Carol","metadata":{"seat":3}}}],"resume":"01JB.00ff","resumed":false,"version":1}"#,
    );
    let turn = IceServer {
        urls: vec!["turn:turn.example.org:3478?transport=udp".into()],
        username: Some("1767225600:01JB".into()),
        credential: Some("bWFjIGluIGJhc2U2NA==".into()),
    };
    server(
        ServerMessage::Welcome {
            id: "01JB".into(),
            room: "lobby".into(),
            peers: Vec::new(),
            resume: "01JB.00ff".into(),
            resumed: true,
            taken: Some(7),
            version: 1,
            ice_servers: vec![turn.clone()],
            ice_ttl: Some(3600),
        },
        r#"{"type":"welcome","id":"01JB","room":"lobby","peers":[],"resume":"01JB.00ff","resumed":true,"taken":7,"version":1,"iceServers":[{"urls":["turn:turn.example.org:3478?transport=udp"],"username":"1767225600:01JB","credential":"bWFjIGluIGJhc2U2NA=="}],"iceTtl":3600}"#,
    );
    server(
        ServerMessage::IceServers {
            ice_servers: vec![turn],
            ice_ttl: Some(3600),
        },
        r#"{"type":"ice-servers","iceServers":[{"urls":["turn:turn.example.org:3478?transport=udp"],"username":"1767225600:01JB","credential":"bWFjIGluIGJhc2U2NA=="}],"iceTtl":3600}"#,
    );
    server(
        ServerMessage::PeerJoined {
            id: "01JC".into(),
            polite: true,
            sfu: false,
            user: None,
        },
        r#"{"type":"peer-joined","id":"01JC","polite":true}"#,
    );
    server(
        ServerMessage::PeerJoined {
            id: "01JA".into(),
            polite: true,
            sfu: true,
            user: None,
        },
        r#"{"type":"peer-joined","id":"01JA","polite":true,"sfu":true}"#,
    );
    server(
        ServerMessage::PeerJoined {
            id: "01JC".into(),
            polite: true,
            sfu: false,
            user: Some(User {
                sub: "carol".into(),
                name: None,
                metadata: None,
            }),
        },
        r#"{"type":"peer-joined","id":"01JC","polite":true,"user":{"sub":"carol"}}"#,
    );
    server(
        ServerMessage::PeerLeft { id: "01JC".into() },
        r#"{"type":"peer-left","id":"01JC"}"#,
    );
    server(
        ServerMessage::Signal {
            from: "01JA".into(),
            data: Cow::Owned(raw(r#"{"connectionId":"c","candidate":null}"#)),
        },
        r#"{"type":"signal","from":"01JA","data":{"connectionId":"c","candidate":null}}"#,
    );
    server(
        ServerMessage::error(ErrorCode::NotJoined, "join a room first"),
        r#"{"type":"error","code":"not-joined","message":"join a room first"}"#,
    );
    server(
        ServerMessage::Error {
            code: ErrorCode::UnknownPeer,
            message: "gone".into(),
            peer: Some("01JZ".into()),
        },
        r#"{"type":"error","code":"unknown-peer","message":"gone","peer":"01JZ"}"#,
    );
    server(ServerMessage::Pong, r#"{"type":"pong"}"#);
}

#[test]
fn error_codes_are_kebab_case_and_match_their_serde_names() {
    let expected = [
        "invalid-json",
        "invalid-frame",
        "unknown-type",
        "binary-frame",
        "frame-too-large",
        "rate-limited",
        "not-joined",
        "already-joined",
        "unknown-peer",
        "invalid-room",
        "room-full",
        "token-required",
        "token-invalid",
        "token-expired",
        "token-wrong-room",
        "join-refused",
        "sfu-refused",
        "unavailable",
        "unknown",
    ];
    for (code, name) in ErrorCode::ALL.iter().zip(expected) {
        assert_eq!(code.as_str(), name);
        assert_eq!(serde_json::to_string(code).unwrap(), format!("\"{name}\""));
    }
    // A code from a newer server reads as Unknown instead of failing.
    let frame = ServerMessage::from_json(r#"{"type":"error","code":"brand-new","message":"m"}"#);
    assert!(matches!(
        frame,
        Ok(ServerMessage::Error {
            code: ErrorCode::Unknown,
            ..
        })
    ));
}

#[test]
fn close_codes_are_fixed() {
    let expected = [
        (1000, "left"),
        (1001, "server-shutting-down"),
        (1002, "protocol-error"),
        (1007, "invalid-utf8"),
        (1008, "too-many-errors"),
        (1009, "frame-too-large"),
        (4001, "replaced"),
        (4002, "slow-consumer"),
        (4003, "keepalive-timeout"),
        (4004, "join-timeout"),
    ];
    assert_eq!(CloseCode::ALL.len(), expected.len());
    for (close, (code, reason)) in CloseCode::ALL.iter().zip(expected) {
        assert_eq!((close.code(), close.reason()), (code, reason));
        assert_eq!(CloseCode::from_code(code), Some(*close));
    }
    assert_eq!(CloseCode::from_code(1006), None);
}

#[test]
fn parse_errors_carry_the_code_the_server_answers_with() {
    for (text, code) in [
        ("", ErrorCode::InvalidJson),
        ("{", ErrorCode::InvalidJson),
        ("nope", ErrorCode::InvalidJson),
        ("[]", ErrorCode::InvalidFrame),
        ("null", ErrorCode::InvalidFrame),
        (r#"{"room":"r"}"#, ErrorCode::InvalidFrame),
        (r#"{"type":5}"#, ErrorCode::InvalidFrame),
        (r#"{"type":"join"}"#, ErrorCode::InvalidFrame),
        (r#"{"type":"join","room":null}"#, ErrorCode::InvalidFrame),
        (
            r#"{"type":"signal","to":null,"data":1}"#,
            ErrorCode::InvalidFrame,
        ),
        (
            r#"{"type":"join","room":"r","token":1}"#,
            ErrorCode::InvalidFrame,
        ),
        (r#"{"type":"signal","data":1}"#, ErrorCode::InvalidFrame),
        (r#"{"type":"signal","to":"a"}"#, ErrorCode::InvalidFrame),
        (
            r#"{"type":"signal","to":"a","to":"b","data":1}"#,
            ErrorCode::InvalidFrame,
        ),
        (r#"{"type":"hello"}"#, ErrorCode::UnknownType),
    ] {
        let error = ClientMessage::from_json(text).unwrap_err();
        assert_eq!(error.code, code, "{text}: {error}");
    }
}

#[test]
fn null_optional_fields_read_as_absent_and_errors_name_no_internals() {
    let frame = r#"{"type":"join","room":"r","token":null,"resume":null}"#;
    let ClientMessage::Join { token, resume, .. } = ClientMessage::from_json(frame).unwrap() else {
        panic!("not a join")
    };
    assert_eq!((token, resume), (None, None));
    let error = ClientMessage::from_json("3").unwrap_err();
    assert_eq!(
        error.message,
        "invalid type: integer `3`, expected a frame: a JSON object with a `type` at line 1 column 1"
    );
}

#[test]
fn signal_data_borrows_and_keeps_its_bytes() {
    let text = r#"{"type":"signal","to":"p","from":"forged","data":{ "a" : [1,  2] }}"#;
    let ClientMessage::Signal { to, data } = ClientMessage::from_json(text).unwrap() else {
        panic!("not a signal")
    };
    assert!(matches!(to, Cow::Borrowed("p")));
    assert!(matches!(data, Cow::Borrowed(_)));
    assert_eq!(data.get(), r#"{ "a" : [1,  2] }"#);
    // `null` data is data, not a missing field.
    let ClientMessage::Signal { data, .. } =
        ClientMessage::from_json(r#"{"type":"signal","to":"p","data":null}"#).unwrap()
    else {
        panic!("not a signal")
    };
    assert_eq!(data.get(), "null");
}

#[test]
fn typed_signals_travel_as_signal_data() {
    let data =
        r#"{"connectionId":"c1","description":{"type":"offer","sdp":"v=0\r\n"},"offerId":3}"#;
    let signal = Signal::from_raw(&raw(data)).unwrap();
    let value = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
    assert_eq!(value(signal.to_raw().get()), value(data));
}
