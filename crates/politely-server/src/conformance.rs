//! The cases of the Autobahn WebSocket test suite, sections 1–7 and 9 (framing, pings and pongs,
//! reserved bits, opcodes, fragmentation, UTF-8, the closing handshake, limits), against the
//! server's own WebSocket layer: each case drives a real connection task, in its test-only echo
//! mode, over an in-memory stream, and checks what the client sees against what RFC 6455 asks.
//!
//! Each test is named after its case number (`case_5_19` is Autobahn's 5.19); the UTF-8 tables
//! of section 6 run one test per subsection and name each entry in its failures. Where the
//! suite accepts more than one behaviour, the server's is stated: it fails a fragmented text
//! message at the fragment that breaks its UTF-8 (6.4, "fail fast"), and answers the pings of
//! one read with one pong for the last of them (2.10, 2.11, which the RFC allows).

use crate::config::Config;
use crate::connection;
use crate::hub::Hub;
use crate::websocket::{self, Message, Opcode, Reader, Role};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const TEXT: u8 = 1;
const BINARY: u8 = 2;
const CLOSE: u8 = 8;
const PING: u8 = 9;
const PONG: u8 = 10;
const CONTINUATION: u8 = 0;

/// What the client saw, in order.
#[derive(Clone, PartialEq, Eq)]
enum Seen {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>),
    /// The server ended the TCP stream.
    Eof,
}

use Seen::{Binary, Close, Eof, Pong, Text};

impl fmt::Debug for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = |f: &mut fmt::Formatter<'_>, kind: &str, b: &[u8]| {
            if b.len() <= 40 {
                write!(f, "{kind}({:?})", String::from_utf8_lossy(b))
            } else {
                write!(f, "{kind}({} bytes)", b.len())
            }
        };
        match self {
            Text(b) => bytes(f, "Text", b),
            Binary(b) => bytes(f, "Binary", b),
            Pong(b) => bytes(f, "Pong", b),
            Close(code) => write!(f, "Close({code:?})"),
            Eof => f.write_str("Eof"),
        }
    }
}

/// A frame with every bit chosen by the test: `opcode` is the raw 4 bits, `rsv` the three
/// reserved bits (as 0b0RRR), and `fin` the final bit. Masked, as a client's.
fn frame(opcode: u8, payload: &[u8], fin: bool, rsv: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    // The header writer takes a known opcode; the first byte is then set as the case needs.
    websocket::write_header(&mut out, Opcode::Binary, payload.len(), Some(MASK));
    out[0] = (u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f);
    let start = out.len();
    out.extend_from_slice(payload);
    websocket::apply_mask(&mut out[start..], MASK);
    out
}

fn text(payload: &[u8]) -> Vec<u8> {
    frame(TEXT, payload, true, 0)
}

fn ping(payload: &[u8]) -> Vec<u8> {
    frame(PING, payload, true, 0)
}

fn close(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    frame(CLOSE, &payload, true, 0)
}

enum Send {
    Bytes(Vec<u8>),
    /// The bytes in pieces of this size, each its own write.
    Chopped(Vec<u8>, usize),
    Pause(Duration),
}

/// A client on one end of an in-memory stream, the server's echo connection on the other.
/// Writes go through a task of their own, so the client reads while it writes (an echo of a
/// large message comes back while the rest is still being sent).
struct Client {
    reader: Reader,
    read: ReadHalf<DuplexStream>,
    writes: mpsc::UnboundedSender<Send>,
    sent_close: bool,
}

impl Client {
    fn start() -> Client {
        let mut hub = Hub::new(Config {
            rate_limit: None,
            // Section 9 echoes messages of up to 16 MiB.
            max_frame_bytes: 16 << 20,
            join_timeout: Duration::from_secs(600),
            ping_interval: Duration::from_secs(600),
            ping_timeout: Duration::from_secs(600),
            ..Config::default()
        });
        hub.echo = true;
        let (client, server) = tokio::io::duplex(64 * 1024);
        let info = connection::ClientInfo::default();
        tokio::spawn(connection::run(Arc::new(hub), server, Vec::new(), info));
        let (read, write) = tokio::io::split(client);
        let (writes, queue) = mpsc::unbounded_channel();
        tokio::spawn(write_all(write, queue));
        Client {
            reader: Reader::new(Role::Client, 64 << 20, 64 << 20, 4096),
            read,
            writes,
            sent_close: false,
        }
    }

    fn send(&mut self, bytes: Vec<u8>) {
        if bytes.first().is_some_and(|b| b & 0x0f == CLOSE) {
            self.sent_close = true;
        }
        let _ = self.writes.send(Send::Bytes(bytes));
    }

    fn chopped(&mut self, bytes: Vec<u8>, size: usize) {
        let _ = self.writes.send(Send::Chopped(bytes, size));
    }

    fn pause(&mut self, ms: u64) {
        let _ = self.writes.send(Send::Pause(Duration::from_millis(ms)));
    }

    /// Sends `frames` in one write, one write each with pauses between, or in 1-byte writes.
    fn send_as(&mut self, frames: Vec<Vec<u8>>, how: How) {
        match how {
            How::Together => self.send(frames.concat()),
            How::FrameWise => {
                for f in frames {
                    self.send(f);
                    self.pause(20);
                }
            }
            How::Chopped => self.chopped(frames.concat(), 1),
        }
    }

    /// Everything the server sends until it ends the stream. A close from the server is
    /// answered with the same code, as a client completes the closing handshake.
    async fn seen(&mut self) -> Vec<Seen> {
        let mut seen = Vec::new();
        let read = async {
            loop {
                loop {
                    let message = match self.reader.next_message() {
                        Ok(Some(message)) => message,
                        Ok(None) => break,
                        Err(e) => panic!("the server sent a malformed frame: {e:?} after {seen:?}"),
                    };
                    seen.push(match message {
                        Message::Text(t) => Text(t.as_bytes().to_vec()),
                        Message::Binary(b) => Binary(b.to_vec()),
                        Message::Pong(p) => Pong(p.to_vec()),
                        Message::Ping(p) => panic!("the echo server pinged: {p:?}"),
                        Message::TooLarge(n) => panic!("a message of {n} bytes"),
                        Message::Close(code) => {
                            if !self.sent_close {
                                let mut reply = Vec::new();
                                match code {
                                    Some(code) => {
                                        websocket::write_close(&mut reply, code, "", Some(MASK))
                                    }
                                    None => {
                                        websocket::write_masked_frame(
                                            &mut reply,
                                            Opcode::Close,
                                            b"",
                                            MASK,
                                        );
                                    }
                                }
                                self.sent_close = true;
                                let _ = self.writes.send(Send::Bytes(reply));
                            }
                            Close(code)
                        }
                    });
                }
                match self.read.read_buf(self.reader.buffer()).await {
                    Ok(0) | Err(_) => {
                        seen.push(Eof);
                        return;
                    }
                    Ok(n) => self.reader.did_read(n),
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .is_err()
        {
            panic!("the server did not end the connection; it sent {seen:?}");
        }
        seen
    }

    /// The client closes normally after its frames: the server echoes what `echoes` lists, in
    /// order, then the close.
    async fn expect_echo(mut self, case: &str, echoes: &[Seen]) {
        self.send(close(1000, b""));
        let mut expected = echoes.to_vec();
        expected.extend([Close(Some(1000)), Eof]);
        assert_eq!(self.seen().await, expected, "case {case}");
    }

    /// The server fails the connection with `code` after echoing what `echoes` lists (and
    /// nothing of what followed the offending frame).
    async fn expect_failure(mut self, case: &str, echoes: &[Seen], code: u16) {
        let mut expected = echoes.to_vec();
        expected.extend([Close(Some(code)), Eof]);
        assert_eq!(self.seen().await, expected, "case {case}");
    }
}

async fn write_all(mut write: WriteHalf<DuplexStream>, mut queue: mpsc::UnboundedReceiver<Send>) {
    while let Some(send) = queue.recv().await {
        // The server may end the stream before everything is written, as it should on a
        // failure; the rest is dropped.
        let written = match send {
            Send::Bytes(bytes) => write.write_all(&bytes).await,
            Send::Chopped(bytes, size) => {
                let mut result = Ok(());
                for piece in bytes.chunks(size) {
                    result = write.write_all(piece).await;
                    if result.is_err() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                result
            }
            Send::Pause(duration) => {
                tokio::time::sleep(duration).await;
                Ok(())
            }
        };
        if written.is_err() {
            return;
        }
    }
}

/// `len` bytes of printable ASCII (valid UTF-8 for text cases).
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'*' + (i % 64) as u8).collect()
}

// Section 1: framing. Text and binary messages of the lengths around each length encoding.

async fn echo_one(case: &str, opcode: u8, len: usize, chop: Option<usize>) {
    let mut c = Client::start();
    let data = payload(len);
    let bytes = frame(opcode, &data, true, 0);
    match chop {
        Some(size) => c.chopped(bytes, size),
        None => c.send(bytes),
    }
    let echo = if opcode == TEXT {
        Text(data)
    } else {
        Binary(data)
    };
    c.expect_echo(case, &[echo]).await;
}

macro_rules! echo_cases {
    ($($name:ident: $opcode:expr, $len:expr, $chop:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            echo_one(stringify!($name), $opcode, $len, $chop).await;
        }
    )*};
}

echo_cases! {
    case_1_1_1: TEXT, 0, None;
    case_1_1_2: TEXT, 125, None;
    case_1_1_3: TEXT, 126, None;
    case_1_1_4: TEXT, 127, None;
    case_1_1_5: TEXT, 128, None;
    case_1_1_6: TEXT, 65535, None;
    case_1_1_7: TEXT, 65536, None;
    case_1_1_8: TEXT, 65536, Some(997);
    case_1_2_1: BINARY, 0, None;
    case_1_2_2: BINARY, 125, None;
    case_1_2_3: BINARY, 126, None;
    case_1_2_4: BINARY, 127, None;
    case_1_2_5: BINARY, 128, None;
    case_1_2_6: BINARY, 65535, None;
    case_1_2_7: BINARY, 65536, None;
    case_1_2_8: BINARY, 65536, Some(997);
}

// Section 2: pings and pongs.

const SMALL_BINARY: &[u8] = &[0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff];

#[tokio::test]
async fn case_2_1() {
    let mut c = Client::start();
    c.send(ping(b""));
    c.expect_echo("2.1", &[Pong(vec![])]).await;
}

#[tokio::test]
async fn case_2_2() {
    let mut c = Client::start();
    c.send(ping(b"Hello, world!"));
    c.expect_echo("2.2", &[Pong(b"Hello, world!".to_vec())])
        .await;
}

#[tokio::test]
async fn case_2_3() {
    let mut c = Client::start();
    c.send(ping(SMALL_BINARY));
    c.expect_echo("2.3", &[Pong(SMALL_BINARY.to_vec())]).await;
}

#[tokio::test]
async fn case_2_4() {
    let mut c = Client::start();
    let data = vec![0xfe; 125];
    c.send(ping(&data));
    c.expect_echo("2.4", &[Pong(data)]).await;
}

#[tokio::test]
async fn case_2_5() {
    // A control frame's payload is at most 125 bytes.
    fails("2.5", ping(&[0xfe; 126]), 1002).await;
}

#[tokio::test]
async fn case_2_6() {
    let mut c = Client::start();
    let data = vec![0xfe; 125];
    c.chopped(ping(&data), 1);
    c.expect_echo("2.6", &[Pong(data)]).await;
}

#[tokio::test]
async fn case_2_7() {
    // An unsolicited pong is ignored.
    let mut c = Client::start();
    c.send(frame(PONG, b"", true, 0));
    c.expect_echo("2.7", &[]).await;
}

#[tokio::test]
async fn case_2_8() {
    let mut c = Client::start();
    c.send(frame(PONG, b"unsolicited pong payload", true, 0));
    c.expect_echo("2.8", &[]).await;
}

#[tokio::test]
async fn case_2_9() {
    let mut c = Client::start();
    c.send(frame(PONG, b"unsolicited pong payload", true, 0));
    c.send(ping(b"ping payload"));
    c.expect_echo("2.9", &[Pong(b"ping payload".to_vec())])
        .await;
}

/// Ten pings with payloads: the pongs answer them in order, the last one included (pings that
/// arrive in one read share one pong).
async fn ten_pings(case: &str, chop: Option<usize>) {
    let mut c = Client::start();
    let payloads: Vec<Vec<u8>> = (0..10)
        .map(|i| format!("payload-{i}").into_bytes())
        .collect();
    for p in &payloads {
        match chop {
            Some(size) => c.chopped(ping(p), size),
            None => c.send(ping(p)),
        }
    }
    c.send(close(1000, b""));
    let seen = c.seen().await;
    let (pongs, end) = seen.split_at(seen.len() - 2);
    assert_eq!(end, [Close(Some(1000)), Eof], "case {case}: {seen:?}");
    let answered: Vec<usize> = pongs
        .iter()
        .map(|pong| match pong {
            Pong(p) => payloads
                .iter()
                .position(|q| q == p)
                .expect("a pong for a ping"),
            other => panic!("case {case}: {other:?}"),
        })
        .collect();
    assert!(answered.is_sorted_by(|a, b| a < b), "case {case}: {seen:?}");
    assert_eq!(answered.last(), Some(&9), "case {case}: {seen:?}");
}

#[tokio::test]
async fn case_2_10() {
    ten_pings("2.10", None).await;
}

#[tokio::test]
async fn case_2_11() {
    ten_pings("2.11", Some(1)).await;
}

// Section 3: reserved bits, with no extension negotiated, fail the connection.

#[tokio::test]
async fn case_3_1() {
    fails("3.1", frame(TEXT, b"Hello, world!", true, 0b100), 1002).await;
}

/// A good text frame, a frame with reserved bits, then a ping: the first is echoed, the
/// connection fails at the second, the ping is never answered.
async fn echo_then_bad(case: &str, bad: Vec<u8>, how: How) {
    let mut c = Client::start();
    let frames = [text(b"Hello, world!"), bad, ping(b"")];
    c.send_as(frames.into(), how);
    c.expect_failure(case, &[Text(b"Hello, world!".to_vec())], 1002)
        .await;
}

/// One frame that fails the connection with `code`, and nothing echoed.
async fn fails(case: &str, bytes: Vec<u8>, code: u16) {
    let mut c = Client::start();
    c.send(bytes);
    c.expect_failure(case, &[], code).await;
}

#[derive(Clone, Copy)]
enum How {
    Together,
    FrameWise,
    Chopped,
}

#[tokio::test]
async fn case_3_2() {
    echo_then_bad(
        "3.2",
        frame(TEXT, b"Hello, world!", true, 0b010),
        How::Together,
    )
    .await;
}

#[tokio::test]
async fn case_3_3() {
    echo_then_bad(
        "3.3",
        frame(TEXT, b"Hello, world!", true, 0b001),
        How::FrameWise,
    )
    .await;
}

#[tokio::test]
async fn case_3_4() {
    echo_then_bad(
        "3.4",
        frame(TEXT, b"Hello, world!", true, 0b110),
        How::Chopped,
    )
    .await;
}

#[tokio::test]
async fn case_3_5() {
    fails("3.5", frame(BINARY, SMALL_BINARY, true, 0b101), 1002).await;
}

#[tokio::test]
async fn case_3_6() {
    fails("3.6", frame(PING, SMALL_BINARY, true, 0b011), 1002).await;
}

#[tokio::test]
async fn case_3_7() {
    fails(
        "3.7",
        frame(CLOSE, &1000u16.to_be_bytes(), true, 0b111),
        1002,
    )
    .await;
}

// Section 4: reserved opcodes fail the connection.

#[tokio::test]
async fn case_4_1_1() {
    fails("4.1.1", frame(3, b"", true, 0), 1002).await;
}

#[tokio::test]
async fn case_4_1_2() {
    fails("4.1.2", frame(4, b"reserved opcode payload", true, 0), 1002).await;
}

#[tokio::test]
async fn case_4_1_3() {
    echo_then_bad("4.1.3", frame(5, b"", true, 0), How::Together).await;
}

#[tokio::test]
async fn case_4_1_4() {
    echo_then_bad(
        "4.1.4",
        frame(6, b"reserved opcode payload", true, 0),
        How::FrameWise,
    )
    .await;
}

#[tokio::test]
async fn case_4_1_5() {
    echo_then_bad(
        "4.1.5",
        frame(7, b"reserved opcode payload", true, 0),
        How::Chopped,
    )
    .await;
}

#[tokio::test]
async fn case_4_2_1() {
    fails("4.2.1", frame(11, b"", true, 0), 1002).await;
}

#[tokio::test]
async fn case_4_2_2() {
    fails(
        "4.2.2",
        frame(12, b"reserved opcode payload", true, 0),
        1002,
    )
    .await;
}

#[tokio::test]
async fn case_4_2_3() {
    echo_then_bad("4.2.3", frame(13, b"", true, 0), How::Together).await;
}

#[tokio::test]
async fn case_4_2_4() {
    echo_then_bad(
        "4.2.4",
        frame(14, b"reserved opcode payload", true, 0),
        How::FrameWise,
    )
    .await;
}

#[tokio::test]
async fn case_4_2_5() {
    echo_then_bad(
        "4.2.5",
        frame(15, b"reserved opcode payload", true, 0),
        How::Chopped,
    )
    .await;
}

// Section 5: fragmentation.

#[tokio::test]
async fn case_5_1() {
    // Control frames cannot be fragmented.
    let mut c = Client::start();
    c.send(frame(PING, b"fragment1", false, 0));
    c.send(frame(CONTINUATION, b"fragment2", true, 0));
    c.expect_failure("5.1", &[], 1002).await;
}

#[tokio::test]
async fn case_5_2() {
    let mut c = Client::start();
    c.send(frame(PONG, b"fragment1", false, 0));
    c.send(frame(CONTINUATION, b"fragment2", true, 0));
    c.expect_failure("5.2", &[], 1002).await;
}

/// A text message in two fragments, optionally with a ping between them.
async fn two_fragments(case: &str, with_ping: bool, how: How) {
    let mut c = Client::start();
    let mut frames = vec![frame(TEXT, b"fragment1", false, 0)];
    if with_ping {
        frames.push(ping(b"pongme 2!"));
    }
    frames.push(frame(CONTINUATION, b"fragment2", true, 0));
    c.send_as(frames, how);
    let mut echoes = Vec::new();
    if with_ping {
        echoes.push(Pong(b"pongme 2!".to_vec()));
    }
    echoes.push(Text(b"fragment1fragment2".to_vec()));
    c.expect_echo(case, &echoes).await;
}

#[tokio::test]
async fn case_5_3() {
    two_fragments("5.3", false, How::Together).await;
}

#[tokio::test]
async fn case_5_4() {
    two_fragments("5.4", false, How::FrameWise).await;
}

#[tokio::test]
async fn case_5_5() {
    two_fragments("5.5", false, How::Chopped).await;
}

#[tokio::test]
async fn case_5_6() {
    two_fragments("5.6", true, How::Together).await;
}

#[tokio::test]
async fn case_5_7() {
    two_fragments("5.7", true, How::FrameWise).await;
}

#[tokio::test]
async fn case_5_8() {
    two_fragments("5.8", true, How::Chopped).await;
}

/// A continuation with nothing to continue, then a whole message in fragments: the connection
/// fails at the first frame.
async fn stray_continuation(case: &str, fin: bool, how: How) {
    let mut c = Client::start();
    let frames = [
        frame(CONTINUATION, b"fragment1", fin, 0),
        frame(TEXT, b"fragment2", false, 0),
        frame(CONTINUATION, b"fragment3", true, 0),
    ];
    c.send_as(frames.into(), how);
    c.expect_failure(case, &[], 1002).await;
}

#[tokio::test]
async fn case_5_9() {
    stray_continuation("5.9", true, How::Together).await;
}

#[tokio::test]
async fn case_5_10() {
    stray_continuation("5.10", true, How::FrameWise).await;
}

#[tokio::test]
async fn case_5_11() {
    stray_continuation("5.11", true, How::Chopped).await;
}

#[tokio::test]
async fn case_5_12() {
    stray_continuation("5.12", false, How::Together).await;
}

#[tokio::test]
async fn case_5_13() {
    stray_continuation("5.13", false, How::FrameWise).await;
}

#[tokio::test]
async fn case_5_14() {
    stray_continuation("5.14", false, How::Chopped).await;
}

#[tokio::test]
async fn case_5_15() {
    let mut c = Client::start();
    c.send(
        [
            frame(TEXT, b"fragment1", false, 0),
            frame(CONTINUATION, b"fragment2", true, 0),
            frame(CONTINUATION, b"fragment3", false, 0),
            frame(TEXT, b"fragment4", true, 0),
        ]
        .concat(),
    );
    c.expect_failure("5.15", &[Text(b"fragment1fragment2".to_vec())], 1002)
        .await;
}

#[tokio::test]
async fn case_5_16() {
    let mut c = Client::start();
    let round = [
        frame(CONTINUATION, b"fragment1", false, 0),
        frame(TEXT, b"fragment2", false, 0),
        frame(CONTINUATION, b"fragment3", true, 0),
    ]
    .concat();
    c.send([round.clone(), round].concat());
    c.expect_failure("5.16", &[], 1002).await;
}

#[tokio::test]
async fn case_5_17() {
    let mut c = Client::start();
    let round = [
        frame(CONTINUATION, b"fragment1", true, 0),
        frame(TEXT, b"fragment2", false, 0),
        frame(CONTINUATION, b"fragment3", true, 0),
    ]
    .concat();
    c.send([round.clone(), round].concat());
    c.expect_failure("5.17", &[], 1002).await;
}

#[tokio::test]
async fn case_5_18() {
    // A second text frame where a continuation must come.
    let mut c = Client::start();
    c.send(frame(TEXT, b"fragment1", false, 0));
    c.send(frame(TEXT, b"fragment2", true, 0));
    c.expect_failure("5.18", &[], 1002).await;
}

/// Five fragments with pings between them and pauses (shorter than the suite's 1 s).
async fn five_fragments(case: &str, frame_wise: bool) {
    let mut c = Client::start();
    let steps: Vec<Option<Vec<u8>>> = vec![
        Some(frame(TEXT, b"fragment1", false, 0)),
        Some(frame(CONTINUATION, b"fragment2", false, 0)),
        Some(ping(b"pongme 1!")),
        None,
        Some(frame(CONTINUATION, b"fragment3", false, 0)),
        Some(frame(CONTINUATION, b"fragment4", false, 0)),
        Some(ping(b"pongme 2!")),
        None,
        Some(frame(CONTINUATION, b"fragment5", true, 0)),
    ];
    for step in steps {
        match step {
            Some(bytes) => c.send(bytes),
            None => c.pause(200),
        }
        if frame_wise {
            c.pause(20);
        }
    }
    c.expect_echo(
        case,
        &[
            Pong(b"pongme 1!".to_vec()),
            Pong(b"pongme 2!".to_vec()),
            Text(b"fragment1fragment2fragment3fragment4fragment5".to_vec()),
        ],
    )
    .await;
}

#[tokio::test]
async fn case_5_19() {
    five_fragments("5.19", false).await;
}

#[tokio::test]
async fn case_5_20() {
    five_fragments("5.20", true).await;
}

// Section 6: UTF-8 in text messages. Each entry goes as one frame, and as three fragments split
// at thirds of its length (inside characters too): valid text comes back whole, invalid text
// fails with 1007.

async fn utf8_case(case: &str, bytes: &[u8], valid: bool) {
    for fragmented in [false, true] {
        let mut c = Client::start();
        if fragmented && bytes.len() >= 3 {
            let (a, rest) = bytes.split_at(bytes.len() / 3);
            let (b, tail) = rest.split_at(rest.len() / 2);
            c.send(frame(TEXT, a, false, 0));
            c.send(frame(CONTINUATION, b, false, 0));
            c.send(frame(CONTINUATION, tail, true, 0));
        } else {
            c.send(text(bytes));
        }
        let case = format!(
            "{case} ({})",
            if fragmented {
                "in fragments"
            } else {
                "one frame"
            }
        );
        if valid {
            c.expect_echo(&case, &[Text(bytes.to_vec())]).await;
        } else {
            c.expect_failure(&case, &[], 1007).await;
        }
    }
}

/// Runs a subsection's entries: (case number, bytes, valid).
async fn utf8_table(entries: &[(&str, &[u8], bool)]) {
    for (case, bytes, valid) in entries {
        utf8_case(case, bytes, *valid).await;
    }
}

#[tokio::test]
async fn case_6_1() {
    // Empty text: one frame, three empty fragments, and empty fragments around a non-empty one.
    let mut c = Client::start();
    c.send(text(b""));
    c.expect_echo("6.1.1", &[Text(vec![])]).await;
    let mut c = Client::start();
    c.send(frame(TEXT, b"", false, 0));
    c.send(frame(CONTINUATION, b"", false, 0));
    c.send(frame(CONTINUATION, b"", true, 0));
    c.expect_echo("6.1.2", &[Text(vec![])]).await;
    let mut c = Client::start();
    c.send(frame(TEXT, b"", false, 0));
    c.send(frame(CONTINUATION, b"middle frame payload", false, 0));
    c.send(frame(CONTINUATION, b"", true, 0));
    c.expect_echo("6.1.3", &[Text(b"middle frame payload".to_vec())])
        .await;
}

const HELLO: &str = "Hello-\u{b5}@\u{df}\u{f6}\u{e4}\u{fc}\u{e0}\u{e1}-UTF-8!!";
const KOSME: &[u8] = &[
    0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5,
];

#[tokio::test]
async fn case_6_2() {
    // Valid UTF-8: one frame, split at a character boundary, split inside a character, and
    // chopped into 1-byte frames (the suite's 6.2.4 chops "κόσμε" the same way).
    let mut c = Client::start();
    c.send(text(HELLO.as_bytes()));
    c.expect_echo("6.2.1", &[Text(HELLO.as_bytes().to_vec())])
        .await;
    for (case, bytes, at) in [
        ("6.2.2", HELLO.as_bytes(), 8),
        ("6.2.3", HELLO.as_bytes(), 7),
    ] {
        let mut c = Client::start();
        c.send(frame(TEXT, &bytes[..at], false, 0));
        c.send(frame(CONTINUATION, &bytes[at..], true, 0));
        c.expect_echo(case, &[Text(bytes.to_vec())]).await;
    }
    let mut c = Client::start();
    for (i, byte) in KOSME.iter().enumerate() {
        let opcode = if i == 0 { TEXT } else { CONTINUATION };
        c.send(frame(opcode, &[*byte], i == KOSME.len() - 1, 0));
    }
    c.expect_echo("6.2.4", &[Text(KOSME.to_vec())]).await;
}

#[tokio::test]
async fn case_6_3() {
    // "κόσμε", a UTF-16 surrogate, "edited": invalid, in one frame and chopped.
    let bytes = [KOSME, &[0xed, 0xa0, 0x80], b"edited"].concat();
    fails("6.3.1", text(&bytes), 1007).await;
    let mut c = Client::start();
    c.chopped(text(&bytes), 1);
    c.expect_failure("6.3.2", &[], 1007).await;
}

#[tokio::test]
async fn case_6_4() {
    // Fail fast: the fragment that breaks the text ends the connection before the message does.
    for (case, first, second) in [
        ("6.4.1", KOSME.to_vec(), vec![0xf4, 0x90, 0x80, 0x80]),
        (
            "6.4.2",
            [KOSME, &[0xf4][..]].concat(),
            vec![0x90, 0x80, 0x80],
        ),
    ] {
        let mut c = Client::start();
        c.send(frame(TEXT, &first, false, 0));
        c.send(frame(CONTINUATION, &second, false, 0));
        // The message's last fragment is never sent: a server that waited for it would not
        // close at all.
        assert_eq!(c.seen().await, [Close(Some(1007)), Eof], "case {case}");
    }
    // 6.4.3 and 6.4.4: the same message in one frame, chopped into 1-byte writes.
    let bytes = [KOSME, &[0xf4, 0x90, 0x80, 0x80], b"edited"].concat();
    let mut c = Client::start();
    c.chopped(text(&bytes), 1);
    c.expect_failure("6.4.3", &[], 1007).await;
    let mut c = Client::start();
    c.send(frame(TEXT, &bytes[..12], false, 0));
    c.chopped(frame(CONTINUATION, &bytes[12..], true, 0), 1);
    c.expect_failure("6.4.4", &[], 1007).await;
}

#[tokio::test]
async fn case_6_5() {
    utf8_table(&[
        ("6.5.1", KOSME, true),
        ("6.5.2", "\u{1}\u{7f}".as_bytes(), true),
        ("6.5.3", "\u{80}\u{7ff}".as_bytes(), true),
        ("6.5.4", "\u{800}\u{ffff}".as_bytes(), true),
        ("6.5.5", "\u{10000}\u{10ffff}".as_bytes(), true),
    ])
    .await;
}

#[tokio::test]
async fn case_6_6() {
    // "κόσμε" cut after each of its bytes: valid exactly where a character ends.
    let ends = [2, 5, 7, 9, 11];
    let entries: Vec<(String, &[u8], bool)> = (1..=KOSME.len())
        .map(|n| (format!("6.6.{n}"), &KOSME[..n], ends.contains(&n)))
        .collect();
    let table: Vec<(&str, &[u8], bool)> = entries
        .iter()
        .map(|(case, bytes, valid)| (case.as_str(), *bytes, *valid))
        .collect();
    utf8_table(&table).await;
}

#[tokio::test]
async fn case_6_7_to_6_11() {
    // The first and last sequences of each length, and other boundaries.
    utf8_table(&[
        ("6.7.1", &[0x00], true),
        ("6.7.2", &[0xc2, 0x80], true),
        ("6.7.3", &[0xe0, 0xa0, 0x80], true),
        ("6.7.4", &[0xf0, 0x90, 0x80, 0x80], true),
        ("6.8.1", &[0xf8, 0x88, 0x80, 0x80, 0x80], false),
        ("6.8.2", &[0xfc, 0x84, 0x80, 0x80, 0x80, 0x80], false),
        ("6.9.1", &[0x7f], true),
        ("6.9.2", &[0xdf, 0xbf], true),
        ("6.9.3", &[0xef, 0xbf, 0xbf], true),
        ("6.9.4", &[0xf4, 0x8f, 0xbf, 0xbf], true),
        ("6.10.1", &[0xf7, 0xbf, 0xbf, 0xbf], false),
        ("6.10.2", &[0xfb, 0xbf, 0xbf, 0xbf, 0xbf], false),
        ("6.10.3", &[0xfd, 0xbf, 0xbf, 0xbf, 0xbf, 0xbf], false),
        ("6.11.1", &[0xed, 0x9f, 0xbf], true),
        ("6.11.2", &[0xee, 0x80, 0x80], true),
        ("6.11.3", &[0xef, 0xbf, 0xbd], true),
        ("6.11.4", &[0xf4, 0x8f, 0xbf, 0xbf], true),
        ("6.11.5", &[0xf4, 0x90, 0x80, 0x80], false),
    ])
    .await;
}

#[tokio::test]
async fn case_6_12_to_6_16() {
    // Unexpected continuation bytes, lonely start bytes, sequences missing their last byte,
    // impossible bytes.
    utf8_table(&[
        ("6.12.1", &[0x80], false),
        ("6.12.2", &[0xbf], false),
        ("6.12.3", &[0x80, 0xbf], false),
        ("6.12.4", &[0x80, 0xbf, 0x80], false),
        ("6.12.5", &[0x80, 0xbf, 0x80, 0xbf], false),
        ("6.12.6", &[0x80, 0xbf, 0x80, 0xbf, 0x80], false),
        ("6.12.7", &[0x80, 0xbf, 0x80, 0xbf, 0x80, 0xbf], false),
        ("6.13.1", &[0xc0, 0x20, 0xc1, 0x20], false),
        ("6.13.2", &[0xe0, 0x20, 0xef, 0x20], false),
        ("6.13.3", &[0xf0, 0x20, 0xf7, 0x20], false),
        ("6.13.4", &[0xf8, 0x20, 0xfb, 0x20], false),
        ("6.13.5", &[0xfc, 0x20, 0xfd, 0x20], false),
        ("6.14.1", &[0xc0], false),
        ("6.14.2", &[0xe0, 0x80], false),
        ("6.14.3", &[0xf0, 0x80, 0x80], false),
        ("6.14.6", &[0xdf], false),
        ("6.14.7", &[0xef, 0xbf], false),
        ("6.14.8", &[0xf7, 0xbf, 0xbf], false),
        (
            "6.15.1",
            &[
                0xc0, 0xe0, 0x80, 0xf0, 0x80, 0x80, 0xdf, 0xef, 0xbf, 0xf7, 0xbf, 0xbf,
            ],
            false,
        ),
        ("6.16.1", &[0xfe], false),
        ("6.16.2", &[0xff], false),
        ("6.16.3", &[0xfe, 0xfe, 0xff, 0xff], false),
    ])
    .await;
}

#[tokio::test]
async fn case_6_17_to_6_23() {
    // Overlong forms, UTF-16 surrogates (single and paired) are invalid; noncharacters are
    // valid UTF-8.
    utf8_table(&[
        ("6.17.1", &[0xc0, 0xaf], false),
        ("6.17.2", &[0xe0, 0x80, 0xaf], false),
        ("6.17.3", &[0xf0, 0x80, 0x80, 0xaf], false),
        ("6.18.1", &[0xc1, 0xbf], false),
        ("6.18.2", &[0xe0, 0x9f, 0xbf], false),
        ("6.18.3", &[0xf0, 0x8f, 0xbf, 0xbf], false),
        ("6.19.1", &[0xc0, 0x80], false),
        ("6.19.2", &[0xe0, 0x80, 0x80], false),
        ("6.19.3", &[0xf0, 0x80, 0x80, 0x80], false),
        ("6.20.1", &[0xed, 0xa0, 0x80], false),
        ("6.20.4", &[0xed, 0xaf, 0xbf], false),
        ("6.20.5", &[0xed, 0xb0, 0x80], false),
        ("6.20.7", &[0xed, 0xbf, 0xbf], false),
        ("6.21.1", &[0xed, 0xa0, 0x80, 0xed, 0xb0, 0x80], false),
        ("6.21.8", &[0xed, 0xaf, 0xbf, 0xed, 0xbf, 0xbf], false),
        ("6.22.1", &[0xef, 0xbf, 0xbe], true),
        ("6.22.2", &[0xef, 0xbf, 0xbf], true),
        ("6.22.3", &[0xf0, 0x9f, 0xbf, 0xbe], true),
        ("6.22.34", &[0xf4, 0x8f, 0xbf, 0xbf], true),
        ("6.23.1", &[0xef, 0xbf, 0xbd], true),
        (
            "6.23.7",
            &[0x65, 0x64, 0x69, 0x74, 0x65, 0x64, 0xef, 0xbf, 0xbd],
            true,
        ),
    ])
    .await;
}

// Section 7: the closing handshake.

#[tokio::test]
async fn case_7_1_1() {
    let mut c = Client::start();
    c.send(text(b"Hello World!"));
    c.expect_echo("7.1.1", &[Text(b"Hello World!".to_vec())])
        .await;
}

#[tokio::test]
async fn case_7_1_2() {
    // A second close is not answered.
    let mut c = Client::start();
    c.send(close(1000, b""));
    c.send(close(1000, b""));
    assert_eq!(c.seen().await, [Close(Some(1000)), Eof], "case 7.1.2");
}

#[tokio::test]
async fn case_7_1_3() {
    // Nothing after a close is answered.
    let mut c = Client::start();
    c.send([close(1000, b""), ping(b"")].concat());
    assert_eq!(c.seen().await, [Close(Some(1000)), Eof], "case 7.1.3");
}

#[tokio::test]
async fn case_7_1_4() {
    let mut c = Client::start();
    c.send([close(1000, b""), text(b"Hello World!")].concat());
    assert_eq!(c.seen().await, [Close(Some(1000)), Eof], "case 7.1.4");
}

#[tokio::test]
async fn case_7_1_5() {
    // A close inside a fragmented message ends it; the rest is not read.
    let mut c = Client::start();
    c.send(frame(TEXT, b"fragment1", false, 0));
    c.send(close(1000, b""));
    c.send(frame(CONTINUATION, b"fragment2", true, 0));
    assert_eq!(c.seen().await, [Close(Some(1000)), Eof], "case 7.1.5");
}

#[tokio::test]
async fn case_7_1_6() {
    // A large message, a close, then a ping: the message is echoed, the ping is not answered.
    let mut c = Client::start();
    let data = payload(256 * 1024);
    c.send([text(&data), close(1000, b""), ping(b"")].concat());
    assert_eq!(
        c.seen().await,
        [Text(data), Close(Some(1000)), Eof],
        "case 7.1.6"
    );
}

#[tokio::test]
async fn case_7_3_1() {
    // A close without a code is answered without one.
    let mut c = Client::start();
    c.send(frame(CLOSE, b"", true, 0));
    assert_eq!(c.seen().await, [Close(None), Eof], "case 7.3.1");
}

#[tokio::test]
async fn case_7_3_2() {
    fails("7.3.2", frame(CLOSE, b"a", true, 0), 1002).await;
}

#[tokio::test]
async fn case_7_3_3_to_7_3_5() {
    for (case, reason) in [
        ("7.3.3", Vec::new()),
        ("7.3.4", b"Hello World!".to_vec()),
        ("7.3.5", vec![b'*'; 123]),
    ] {
        let mut c = Client::start();
        c.send(close(1000, &reason));
        assert_eq!(c.seen().await, [Close(Some(1000)), Eof], "case {case}");
    }
}

#[tokio::test]
async fn case_7_3_6() {
    // A 126-byte close payload is an over-long control frame.
    fails("7.3.6", close(1000, &[b'*'; 124]), 1002).await;
}

#[tokio::test]
async fn case_7_5_1() {
    let mut c = Client::start();
    c.send(close(
        1000,
        &[KOSME, &[0xed, 0xa0, 0x80], b"edited"].concat(),
    ));
    c.expect_failure("7.5.1", &[], 1007).await;
}

#[tokio::test]
async fn case_7_7() {
    // Codes a peer may send are echoed.
    for (n, code) in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = Client::start();
        c.send(close(code, b""));
        assert_eq!(
            c.seen().await,
            [Close(Some(code)), Eof],
            "case 7.7.{}",
            n + 1
        );
    }
}

#[tokio::test]
async fn case_7_9_and_7_13() {
    // Codes a peer may not send fail the connection.
    for (case, code) in [
        ("7.9.1", 0),
        ("7.9.2", 999),
        ("7.9.3", 1004),
        ("7.9.4", 1005),
        ("7.9.5", 1006),
        ("7.9.6", 1016),
        ("7.9.7", 1100),
        ("7.9.8", 2000),
        ("7.9.9", 2999),
        ("7.13.1", 5000),
        ("7.13.2", 65535),
    ] {
        let mut c = Client::start();
        c.send(close(code, b""));
        c.expect_failure(case, &[], 1002).await;
    }
}

// Section 9: limits. Large messages, in one frame, in fragments and in small writes, and many
// small messages in a row. (The suite's section 9 measures speed too; the benchmarks do that
// here, not the tests.)

const MIB: usize = 1 << 20;

async fn large(case: &str, opcode: u8, len: usize) {
    echo_one(case, opcode, len, None).await;
}

#[tokio::test]
async fn case_9_1() {
    for (n, len) in [64 * 1024, 256 * 1024, MIB, 4 * MIB, 8 * MIB, 16 * MIB]
        .into_iter()
        .enumerate()
    {
        large(&format!("9.1.{}", n + 1), TEXT, len).await;
    }
}

#[tokio::test]
async fn case_9_2() {
    for (n, len) in [64 * 1024, 256 * 1024, MIB, 4 * MIB, 8 * MIB, 16 * MIB]
        .into_iter()
        .enumerate()
    {
        large(&format!("9.2.{}", n + 1), BINARY, len).await;
    }
}

/// A 4 MiB message in fragments of `size`.
async fn fragmented(case: &str, opcode: u8, size: usize) {
    let mut c = Client::start();
    let data = payload(4 * MIB);
    let count = data.len().div_ceil(size);
    let mut bytes = Vec::with_capacity(data.len() + count * 14);
    for (i, part) in data.chunks(size).enumerate() {
        let first = if i == 0 { opcode } else { CONTINUATION };
        bytes.extend(frame(first, part, i == count - 1, 0));
    }
    c.send(bytes);
    let echo = if opcode == TEXT {
        Text(data)
    } else {
        Binary(data)
    };
    c.expect_echo(case, &[echo]).await;
}

const FRAGMENT_SIZES: [usize; 9] = [64, 256, 1024, 4096, 16384, 65536, 256 * 1024, MIB, 4 * MIB];

#[tokio::test]
async fn case_9_3() {
    for (n, size) in FRAGMENT_SIZES.into_iter().enumerate() {
        fragmented(&format!("9.3.{}", n + 1), TEXT, size).await;
    }
}

#[tokio::test]
async fn case_9_4() {
    for (n, size) in FRAGMENT_SIZES.into_iter().enumerate() {
        fragmented(&format!("9.4.{}", n + 1), BINARY, size).await;
    }
}

#[tokio::test]
async fn case_9_5_and_9_6() {
    // A 1 MiB message written in pieces of 64 to 2048 bytes.
    for (section, opcode) in [("9.5", TEXT), ("9.6", BINARY)] {
        for (n, chop) in [64, 128, 256, 512, 1024, 2048].into_iter().enumerate() {
            echo_one(&format!("{section}.{}", n + 1), opcode, MIB, Some(chop)).await;
        }
    }
}

#[tokio::test]
async fn case_9_7_and_9_8() {
    // A thousand messages in a row, each echoed, in order.
    for (section, opcode) in [("9.7", TEXT), ("9.8", BINARY)] {
        for (n, len) in [0, 16, 64, 256, 1024, 4096].into_iter().enumerate() {
            let mut c = Client::start();
            let mut echoes = Vec::new();
            let mut bytes = Vec::new();
            for i in 0..1000 {
                let mut data = payload(len);
                if let Some(first) = data.first_mut() {
                    *first = b'0' + (i % 10) as u8;
                }
                bytes.extend(frame(opcode, &data, true, 0));
                echoes.push(if opcode == TEXT {
                    Text(data)
                } else {
                    Binary(data)
                });
            }
            c.send(bytes);
            c.expect_echo(&format!("{section}.{}", n + 1), &echoes)
                .await;
        }
    }
}
