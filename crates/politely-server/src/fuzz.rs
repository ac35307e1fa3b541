//! Property-based fuzzing of the code that reads untrusted bytes: the frame reader and the
//! handshake parser (the signal fast path is fuzzed in `politely-proto`). A short run by
//! default; `PROPTEST_CASES=100000 cargo test -p politely-server --lib fuzz` for a long one.

use crate::config::Config;
use crate::handshake;
use crate::hub::Hub;
use crate::websocket::{MAX_READ, Message, Opcode, Reader, Role, apply_mask, write_header};
use proptest::prelude::*;

const MAX_MESSAGE: usize = 4096;
const HARD_LIMIT: usize = 4 * MAX_MESSAGE;
const READ_SIZE: usize = 256;

/// One frame as a client might send it, valid or not: any opcode bits, reserved bits, final
/// bit, masking, and a payload (whose length the header states truthfully; lies come from
/// mutation).
#[derive(Debug, Clone)]
struct RawFrame {
    first: u8,
    masked: bool,
    payload: Vec<u8>,
}

fn raw_frame() -> impl Strategy<Value = RawFrame> {
    let opcode = prop_oneof![
        8 => prop::sample::select(vec![0u8, 1, 2, 8, 9, 10]),
        1 => 0u8..16,
    ];
    let payload = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..130),
        1 => prop::collection::vec(any::<u8>(), 0..(2 * MAX_MESSAGE)),
    ];
    (
        opcode,
        any::<bool>(),
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.95),
        payload,
    )
        .prop_map(|(opcode, fin, rsv, masked, payload)| RawFrame {
            first: (u8::from(fin) << 7) | (u8::from(rsv) << 6) | opcode,
            masked,
            payload,
        })
}

fn encode(frames: &[RawFrame]) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        let mask = frame.masked.then_some([1, 2, 3, 4]);
        let start = out.len();
        write_header(&mut out, Opcode::Binary, frame.payload.len(), mask);
        out[start] = frame.first;
        let body = out.len();
        out.extend_from_slice(&frame.payload);
        if let Some(mask) = mask {
            apply_mask(&mut out[body..], mask);
        }
    }
    out
}

/// A byte stream: frames, mutated at a few places, or plain noise.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let frames = || prop::collection::vec(raw_frame(), 0..12).prop_map(|f| encode(&f));
    let mutated = (
        frames(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    )
        .prop_map(|(mut bytes, edits)| {
            if !bytes.is_empty() {
                for (at, byte) in edits {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
            }
            bytes
        });
    prop_oneof![
        2 => frames(),
        3 => mutated,
        1 => prop::collection::vec(any::<u8>(), 0..2048),
    ]
}

/// Feeds `bytes` as a socket would, in reads of the given sizes into the reader's own buffer,
/// calling `after` after each read (with the bytes fed so far), and shrinking the reader now and
/// then as a keepalive tick does. `after` returning `Ok(false)` stops the feeding.
fn feed_in_reads(
    reader: &mut Reader,
    bytes: &[u8],
    reads: &[usize],
    shrinks: &[bool],
    mut after: impl FnMut(&mut Reader, usize) -> Result<bool, TestCaseError>,
) -> Result<(), TestCaseError> {
    let mut fed = 0;
    for (i, &size) in reads.iter().cycle().enumerate() {
        if fed == bytes.len() {
            break;
        }
        let buf = reader.buffer();
        let n = size.min(buf.capacity() - buf.len()).min(bytes.len() - fed);
        prop_assert!(n > 0, "the reader offered no room to read into");
        buf.extend_from_slice(&bytes[fed..fed + n]);
        fed += n;
        reader.did_read(n);
        if !after(reader, fed)? {
            break;
        }
        if shrinks[i % shrinks.len()] {
            reader.shrink();
        }
    }
    Ok(())
}

/// Takes every message after each read (until an error, which ends a connection) and checks the
/// reader's memory after every read.
fn read_all(bytes: &[u8], reads: &[usize], shrinks: &[bool]) -> Result<(), TestCaseError> {
    let mut reader = Reader::new(Role::Server, MAX_MESSAGE, HARD_LIMIT, READ_SIZE);
    feed_in_reads(&mut reader, bytes, reads, shrinks, |reader, fed| {
        loop {
            match reader.next_message() {
                Ok(None) => break,
                Ok(Some(message)) => check_message(&message)?,
                Err(_) => return Ok(false),
            }
        }
        // Memory follows the bytes received, never a length a header announced, and stays
        // within the limits: twice the largest frame kept plus a read or two.
        let (buffer, assembled) = reader.memory();
        prop_assert!(
            buffer <= 2 * fed.min(HARD_LIMIT + 14) + 2 * MAX_READ,
            "{buffer} bytes of buffer after {fed} bytes"
        );
        prop_assert!(assembled <= 2 * MAX_MESSAGE, "{assembled} bytes assembled");
        Ok(true)
    })
}

fn check_message(message: &Message<'_>) -> Result<(), TestCaseError> {
    match message {
        Message::Text(text) => prop_assert!(text.as_bytes().len() <= MAX_MESSAGE),
        Message::Binary(bytes) => prop_assert!(bytes.len() <= MAX_MESSAGE),
        Message::Ping(payload) | Message::Pong(payload) => prop_assert!(payload.len() <= 125),
        Message::Close(Some(code)) => prop_assert!(crate::websocket::is_valid_close_code(*code)),
        Message::Close(None) => {}
        Message::TooLarge(len) => prop_assert!(*len > MAX_MESSAGE as u64),
    }
    Ok(())
}

/// A model of what the reader must return for a stream of well-formed frames: whole messages
/// in order, control frames where they fall.
#[derive(Debug, Clone, PartialEq)]
enum Expected {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    TooLarge,
}

/// Well-formed messages (fragmented or not, text always UTF-8, pings between fragments), the
/// frames that carry them, and what the reader must return.
fn messages() -> impl Strategy<Value = (Vec<RawFrame>, Vec<Expected>)> {
    let message = (
        any::<bool>(),
        prop_oneof![
            3 => ".{0,40}".prop_map(String::into_bytes),
            1 => ".{0,3000}".prop_map(String::into_bytes),
        ],
        prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        prop::option::weighted(0.3, prop::collection::vec(any::<u8>(), 0..20)),
    );
    prop::collection::vec(message, 0..10).prop_map(|messages| {
        let mut frames = Vec::new();
        let mut expected = Vec::new();
        for (is_text, payload, cuts, ping) in messages {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(payload.len() + 1)).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut parts = Vec::new();
            let mut at = 0;
            for cut in cuts {
                parts.push(&payload[at..cut]);
                at = cut;
            }
            parts.push(&payload[at..]);
            let count = parts.len();
            // The reader reports a message over the limit at the fragment that takes it over.
            let mut total = 0;
            let mut too_large = false;
            for (i, part) in parts.into_iter().enumerate() {
                let opcode = match (i, is_text) {
                    (0, true) => 1,
                    (0, false) => 2,
                    _ => 0,
                };
                frames.push(RawFrame {
                    first: (u8::from(i == count - 1) << 7) | opcode,
                    masked: true,
                    payload: part.to_vec(),
                });
                total += part.len();
                if total > MAX_MESSAGE && !too_large {
                    too_large = true;
                    expected.push(Expected::TooLarge);
                }
                if let (Some(ping), true) = (&ping, i == 0 && count > 1) {
                    frames.push(RawFrame {
                        first: 0x89,
                        masked: true,
                        payload: ping.clone(),
                    });
                    expected.push(Expected::Ping(ping.clone()));
                }
            }
            if !too_large {
                expected.push(if is_text {
                    Expected::Text(payload)
                } else {
                    Expected::Binary(payload)
                });
            }
        }
        (frames, expected)
    })
}

proptest! {
    #[test]
    fn the_reader_never_panics_and_holds_no_more_than_its_limits(
        bytes in stream(),
        reads in prop::collection::vec(1usize..5000, 1..16),
        shrinks in prop::collection::vec(prop::bool::weighted(0.2), 1..8),
    ) {
        read_all(&bytes, &reads, &shrinks)?;
    }

    #[test]
    fn the_reader_returns_well_formed_messages_whole_however_they_are_split(
        (frames, expected) in messages(),
        reads in prop::collection::vec(1usize..3000, 1..16),
        shrinks in prop::collection::vec(prop::bool::weighted(0.2), 1..8),
    ) {
        let bytes = encode(&frames);
        let mut reader = Reader::new(Role::Server, MAX_MESSAGE, usize::MAX / 2, READ_SIZE);
        let mut seen = Vec::new();
        feed_in_reads(&mut reader, &bytes, &reads, &shrinks, |reader, _| {
            while let Some(message) = reader.next_message().map_err(|e| {
                TestCaseError::fail(format!("{e:?} on well-formed frames"))
            })? {
                seen.push(match message {
                    Message::Text(text) => Expected::Text(text.as_bytes().to_vec()),
                    Message::Binary(bytes) => Expected::Binary(bytes.to_vec()),
                    Message::Ping(payload) => Expected::Ping(payload.to_vec()),
                    Message::TooLarge(_) => Expected::TooLarge,
                    other => return Err(TestCaseError::fail(format!("{other:?}"))),
                });
            }
            Ok(true)
        })?;
        prop_assert_eq!(seen, expected);
    }

    #[test]
    fn the_handshake_parser_never_panics_and_accepts_only_a_well_formed_upgrade(
        head in handshake_head(),
    ) {
        let hub = Hub::new(Config::default());
        if handshake::answer(&hub, &head).is_ok() {
            // Accepted: then it is HTTP/1.1 with the headers the RFC asks for.
            let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
            prop_assert!(text.contains(" http/1.1\r\n"), "{text}");
            prop_assert_eq!(text.matches("\r\nsec-websocket-key:").count(), 1, "{}", text);
            prop_assert_eq!(text.matches("\r\nsec-websocket-version:").count(), 1, "{}", text);
            prop_assert!(text.contains("websocket"), "{text}");
        }
    }
}

/// Request heads: a valid upgrade request, mutated (bytes changed, lines repeated or dropped),
/// or noise ending in a blank line.
fn handshake_head() -> impl Strategy<Value = Vec<u8>> {
    let lines = vec![
        "Host: 127.0.0.1:8080".to_owned(),
        "Upgrade: websocket".to_owned(),
        "Connection: Upgrade".to_owned(),
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".to_owned(),
        "Sec-WebSocket-Version: 13".to_owned(),
        "Origin: https://app.example".to_owned(),
        "Sec-WebSocket-Protocol: politely.v1".to_owned(),
    ];
    let edited = (
        prop::collection::vec(prop::sample::select(lines), 0..10),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    )
        .prop_map(|(lines, edits)| {
            let mut head =
                format!("GET /ws HTTP/1.1\r\n{}\r\n\r\n", lines.join("\r\n")).into_bytes();
            let len = head.len() - 4;
            for (at, byte) in edits {
                head[at.index(len)] = byte;
            }
            head
        });
    prop_oneof![
        3 => edited,
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(|mut bytes| {
            bytes.extend_from_slice(b"\r\n\r\n");
            bytes
        }),
    ]
}

#[test]
fn an_unmodified_request_is_accepted() {
    // The generator's base request is valid, so the property above is not vacuous.
    let hub = Hub::new(Config::default());
    let head = "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert!(handshake::answer(&hub, head.as_bytes()).is_ok());
}
