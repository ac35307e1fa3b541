//! The signal envelope's fast path against the full parser, on the frames a relay sees:
//! `cargo bench -p politely-proto --bench envelope`. Prints nanoseconds per frame; no
//! assertions (speed is reported, not tested).

use politely_proto::{ClientMessage, signal_envelope};
use std::hint::black_box;
use std::time::Instant;

/// A signal as the relay benchmark sends it: small numbers and padding up to `size`.
fn padded(size: usize) -> String {
    let head = r#"{"type":"signal","to":"01JD0000000000000000000000","data":{"s":123456,"t":99999999,"p":""#;
    format!(
        "{head}{}\"}}}}",
        "x".repeat(size.saturating_sub(head.len() + 3))
    )
}

/// A signal carrying an SDP offer: a JSON string with an escape every few dozen bytes.
fn sdp(size: usize) -> String {
    let line = r"a=candidate:1 1 udp 2122260223 127.0.0.1 54400 typ host generation 0\r\n";
    let lines = line.repeat(size / line.len());
    format!(
        r#"{{"type":"signal","to":"01JD0000000000000000000000","data":{{"connectionId":"c1","description":{{"type":"offer","sdp":"v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{lines}"}}}}}}"#
    )
}

/// Nanoseconds per frame: the best of `rounds` rounds of `frames` each, since on a shared
/// machine a round's time only ever grows (steal, interrupts), never shrinks.
fn time(rounds: u32, frames: u32, mut f: impl FnMut() -> bool) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let start = Instant::now();
        let mut accepted = 0;
        for _ in 0..frames {
            accepted += u32::from(f());
        }
        assert_eq!(accepted, frames, "every frame is well formed");
        best = best.min(start.elapsed().as_nanos() as f64 / f64::from(frames));
    }
    best
}

fn main() {
    for (name, frame) in [
        ("padded 200 B", padded(200)),
        ("padded 4 KiB", padded(4096)),
        ("SDP 1 KiB", sdp(1024)),
        ("SDP 4 KiB", sdp(4096)),
    ] {
        let bytes = frame.as_bytes();
        let fast = time(40, 5_000, || signal_envelope(black_box(bytes)).is_some());
        let parser = time(40, 5_000, || {
            std::str::from_utf8(black_box(bytes))
                .ok()
                .is_some_and(|text| ClientMessage::from_json(text).is_ok())
        });
        println!(
            "{name:>13} ({} bytes): envelope {fast:7.1} ns, UTF-8 check + parser {parser:7.1} ns, {:.2}x",
            bytes.len(),
            fast / parser
        );
    }
}
