//! A fast path for the frame a server sees most: a `signal` in the shape every politely client
//! writes, `{"type":"signal","to":"<id>","data":<JSON>}`, keys in that order, no whitespace
//! around them. [`signal_envelope`] finds `to` and `data` in one pass over the frame's bytes and
//! checks that `data` is one well-formed JSON value in valid UTF-8, so a server can relay it
//! without building a parse tree or checking the text twice.
//! Anything else (other key orders, whitespace, escapes in the id, malformed JSON) returns
//! `None` and goes to [`ClientMessage::from_json`](crate::ClientMessage::from_json), which
//! accepts or refuses it with a precise error. The fast path never accepts a frame the parser
//! refuses, and returns what the parser would.

/// The deepest nesting of `data` the fast path follows (the validator's stack is fixed); deeper
/// data goes to the full parser.
const MAX_DEPTH: usize = 128;

/// The `to` and the raw `data` of a canonical signal frame, if `frame` (a text frame's bytes,
/// not yet known to be UTF-8) is one. `data` is well-formed JSON and valid UTF-8.
pub fn signal_envelope(frame: &[u8]) -> Option<(&str, &[u8])> {
    let rest = frame.strip_prefix(br#"{"type":"signal","to":""#)?;
    // An id of plain ASCII up to its closing quote; escapes and other text go to the parser.
    let end = next_special(rest, 0);
    if rest.get(end) != Some(&b'"') {
        return None;
    }
    let to = std::str::from_utf8(&rest[..end]).ok()?;
    let data_and_brace = rest[end..].strip_prefix(br#"","data":"#)?;
    let data = data_and_brace.strip_suffix(b"}")?;
    let value_end = skip_value(data, 0)?;
    (value_end == data.len()).then_some((to, data))
}

/// Where the JSON value starting at `i` ends, or `None` if there is no well-formed value there.
/// Leading whitespace is not accepted (the canonical shape has none), so `data` is exactly the
/// value's text.
fn skip_value(bytes: &[u8], mut i: usize) -> Option<usize> {
    // The open containers as bits, innermost lowest: 1 for an object.
    let mut stack: u128 = 0;
    let mut depth = 0;
    loop {
        // A value.
        match *bytes.get(i)? {
            b'{' | b'[' => {
                let object = bytes[i] == b'{';
                if depth == MAX_DEPTH {
                    return None;
                }
                stack = stack << 1 | u128::from(object);
                depth += 1;
                i = skip_whitespace(bytes, i + 1);
                let close = if object { b'}' } else { b']' };
                if bytes.get(i) == Some(&close) {
                    stack >>= 1;
                    depth -= 1;
                    i += 1;
                } else {
                    if object {
                        i = skip_key(bytes, i)?;
                    }
                    continue;
                }
            }
            b'"' => i = skip_string(bytes, i)?,
            b't' => i = skip_literal(bytes, i, b"true")?,
            b'f' => i = skip_literal(bytes, i, b"false")?,
            b'n' => i = skip_literal(bytes, i, b"null")?,
            _ => i = skip_number(bytes, i)?,
        }
        // After a value: close containers, or go on to the next element.
        loop {
            if depth == 0 {
                return Some(i);
            }
            i = skip_whitespace(bytes, i);
            let object = stack & 1 == 1;
            match *bytes.get(i)? {
                b',' => {
                    i = skip_whitespace(bytes, i + 1);
                    if object {
                        i = skip_key(bytes, i)?;
                    }
                    break;
                }
                b'}' if object => {}
                b']' if !object => {}
                _ => return None,
            }
            stack >>= 1;
            depth -= 1;
            i += 1;
        }
    }
}

/// Skips `"key" :` and the whitespace after it.
fn skip_key(bytes: &[u8], i: usize) -> Option<usize> {
    if bytes.get(i) != Some(&b'"') {
        return None;
    }
    let i = skip_whitespace(bytes, skip_string(bytes, i)?);
    if bytes.get(i) != Some(&b':') {
        return None;
    }
    Some(skip_whitespace(bytes, i + 1))
}

fn skip_whitespace(bytes: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(i) {
        i += 1;
    }
    i
}

fn skip_literal(bytes: &[u8], i: usize, literal: &[u8]) -> Option<usize> {
    bytes[i..].starts_with(literal).then_some(i + literal.len())
}

fn skip_digits(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
fn skip_number(bytes: &[u8], mut i: usize) -> Option<usize> {
    if bytes.get(i) == Some(&b'-') {
        i += 1;
    }
    match bytes.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = skip_digits(bytes, i + 1),
        _ => return None,
    }
    if bytes.get(i) == Some(&b'.') {
        let start = i + 1;
        i = skip_digits(bytes, start);
        if i == start {
            return None;
        }
    }
    if let Some(b'e' | b'E') = bytes.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = bytes.get(i) {
            i += 1;
        }
        let start = i;
        i = skip_digits(bytes, start);
        if i == start {
            return None;
        }
    }
    Some(i)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The bytes of `word` that are `"`, `\\`, control characters (below 0x20) or not ASCII, as the
/// high bit of each. Bytes above a flagged one may be flagged wrongly (a borrow runs upward),
/// but the lowest flagged byte is always a real one.
fn special_bytes(word: u64) -> u64 {
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    quote | backslash | control | (word & HIGHS)
}

/// Whether a block is plain ASCII string content: no `"`, `\\`, control characters or bytes
/// above 0x7f. Written without an early exit so the compiler turns it into vector compares;
/// read as signed, control characters and bytes above 0x7f are the ones below 0x20, so three
/// compares per byte suffice.
fn plain_block(block: &[u8; 64]) -> bool {
    let mut special = 0u8;
    for &byte in block {
        special |= u8::from(byte == b'"') | u8::from(byte == b'\\') | u8::from((byte as i8) < 0x20);
    }
    special == 0
}

/// Where the next byte at or after `i` that ends plain string content is (`bytes.len()` if
/// none): eight bytes at a time, and 64 at a time once a run of plain words suggests a long
/// plain stretch (padding, a long SDP line).
fn next_special(bytes: &[u8], mut i: usize) -> usize {
    let mut plain_words = 0;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let found = special_bytes(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
        plain_words += 1;
        if plain_words == 2 {
            while let Some(block) = bytes.get(i..i + 64) {
                if !plain_block(block.try_into().expect("64 bytes")) {
                    break;
                }
                i += 64;
            }
        }
    }
    while let Some(&byte) = bytes.get(i) {
        if byte == b'"' || byte == b'\\' || !(0x20..0x80).contains(&byte) {
            return i;
        }
        i += 1;
    }
    i
}

/// Skips the string starting with the `"` at `i`, checking its escapes and its UTF-8 (the only
/// place in JSON where bytes above 0x7f may appear).
fn skip_string(bytes: &[u8], i: usize) -> Option<usize> {
    let mut i = i + 1;
    loop {
        i = next_special(bytes, i);
        match *bytes.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => {
                i += 1;
                match *bytes.get(i)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 1,
                    b'u' => {
                        let hex = bytes.get(i + 1..i + 5)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        i += 5;
                    }
                    _ => return None,
                }
            }
            0x80.. => i = skip_utf8(bytes, i)?,
            // A control character: never allowed raw in a string.
            _ => return None,
        }
    }
}

/// Skips the UTF-8 sequence of a non-ASCII character at `i`.
fn skip_utf8(bytes: &[u8], i: usize) -> Option<usize> {
    let len = match bytes[i] {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    // The standard library knows the overlong forms, surrogates and the upper bound.
    std::str::from_utf8(bytes.get(i..i + len)?).ok()?;
    Some(i + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientMessage;

    /// What the full parser makes of `text`, as `(to, data)` for a signal.
    fn parsed(text: &str) -> Option<(String, String)> {
        match ClientMessage::from_json(text).ok()? {
            ClientMessage::Signal { to, data } => Some((to.into_owned(), data.get().to_owned())),
            _ => None,
        }
    }

    /// The fast path accepts `frame` only if it is UTF-8 and the parser gives the same.
    fn check(frame: &[u8]) {
        let Some((to, data)) = signal_envelope(frame) else {
            return;
        };
        let text = std::str::from_utf8(frame)
            .unwrap_or_else(|_| panic!("fast path accepted non-UTF-8 {frame:?}"));
        let data = std::str::from_utf8(data).unwrap().to_owned();
        assert_eq!(
            Some((to.to_owned(), data)),
            parsed(text),
            "fast path accepted {text:?}"
        );
    }

    const DATA: [&str; 24] = [
        "0",
        "-0.5e+10",
        "12345678901234567890",
        "true",
        "null",
        r#""plain""#,
        r#""esc \" \\ \/ \b \f \n \r \t \u00e9 \uD83D\uDE00 é 😀""#,
        "[]",
        "{}",
        r#"{"a":[1,2,{"b":null}],"c":"d"}"#,
        r#"{ "a" : [ 1 , 2 ] , "b" : { } }"#,
        r#"{"description":{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"},"connectionId":"x"}"#,
        "01",
        "1.",
        "-",
        "1e",
        "tru",
        r#""unterminated"#,
        "\"raw\ncontrol\"",
        r#""bad \x escape""#,
        r#""bad \u12 escape""#,
        "[1,]",
        r#"{"a" 1}"#,
        r#"{"a":1,}"#,
    ];

    #[test]
    fn canonical_signals_are_found_with_their_exact_data() {
        let text = r#"{"type":"signal","to":"01JD0000000000000000000000","data":{"s":1,"t":2}}"#;
        assert_eq!(
            signal_envelope(text.as_bytes()),
            Some(("01JD0000000000000000000000", &br#"{"s":1,"t":2}"#[..]))
        );
        for (i, data) in DATA.iter().enumerate() {
            let text = format!(r#"{{"type":"signal","to":"p","data":{data}}}"#);
            let fast = signal_envelope(text.as_bytes());
            // The first twelve are well formed; the rest are not.
            assert_eq!(fast.is_some(), i < 12, "{data}");
            assert_eq!(fast.is_some(), parsed(&text).is_some(), "{data}");
            if let Some((to, found)) = fast {
                assert_eq!((to, found), ("p", data.as_bytes()));
            }
        }
    }

    #[test]
    fn other_shapes_are_left_to_the_parser() {
        for text in [
            r#"{"type":"signal","data":1,"to":"p"}"#,
            r#"{"type": "signal","to":"p","data":1}"#,
            r#"{"type":"signal","to":"p\"q","data":1}"#,
            r#"{"type":"signal","to":"p","data":1 }"#,
            r#"{"type":"signal","to":"p","data":1}  "#,
            r#"{"type":"signal","to":"p","data":1,"extra":2}"#,
            r#"{"type":"signal","to":"p","data":}"#,
            r#"{"type":"join","room":"r"}"#,
        ] {
            assert_eq!(signal_envelope(text.as_bytes()), None, "{text}");
            check(text.as_bytes());
        }
    }

    #[test]
    fn deep_nesting_is_left_to_the_parser() {
        for depth in [1, 100, 126, 127, 128, 129, 130, 300] {
            let data = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let text = format!(r#"{{"type":"signal","to":"p","data":{data}}}"#);
            check(text.as_bytes());
            assert_eq!(
                signal_envelope(text.as_bytes()).is_some(),
                depth <= MAX_DEPTH,
                "{depth}"
            );
            let unbalanced = format!(r#"{{"type":"signal","to":"p","data":{data}]}}"#);
            assert_eq!(signal_envelope(unbalanced.as_bytes()), None, "{depth}");
        }
    }

    #[test]
    fn never_accepts_what_the_parser_refuses() {
        // Every truncation and every single-byte change of some well-formed frames: the fast
        // path either gives what the parser gives, or stays out of it.
        let frames: Vec<String> = DATA[..12]
            .iter()
            .map(|data| format!(r#"{{"type":"signal","to":"p","data":{data}}}"#))
            .collect();
        // Bytes that matter to JSON, and to UTF-8: a stray continuation, leads of two to four
        // bytes, the lead of a surrogate, bytes that never appear.
        let replacements = b"\"\\{}[],:0-.eE+tfnu \x01x\x80\xbf\xc0\xc3\xe0\xed\xf0\xf4\xf5\xff";
        for frame in &frames {
            let frame = frame.as_bytes();
            for cut in 0..frame.len() {
                check(&frame[..cut]);
            }
            for at in 0..frame.len() {
                for &byte in replacements {
                    let mut bytes = frame.to_vec();
                    bytes[at] = byte;
                    check(&bytes);
                    // And the byte after it, for the rest of a sequence.
                    for &second in replacements {
                        if let Some(next) = bytes.get_mut(at + 1) {
                            *next = second;
                            check(&bytes);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn long_strings_agree_with_the_parser_wherever_a_special_byte_falls() {
        // Long enough for the 64-byte blocks, with one special thing at every offset: whatever
        // the alignment of words and blocks, the fast path agrees with the parser.
        let specials: [&[u8]; 9] = [
            b"\"",
            b"\\n",
            b"\\u00e9",
            b"\\q",
            b"\x01",
            "é".as_bytes(),
            "😀".as_bytes(),
            b"\xc3",
            b"\xed\xa0\x80",
        ];
        for special in specials {
            for at in 0..200 {
                let mut string = vec![b'a'; 200];
                string.splice(at..at, special.iter().copied());
                let mut frame = br#"{"type":"signal","to":"p","data":""#.to_vec();
                frame.extend_from_slice(&string);
                frame.extend_from_slice(br#""}"#);
                check(&frame);
                let accepted = signal_envelope(&frame).is_some();
                let valid = std::str::from_utf8(&frame).is_ok_and(|text| parsed(text).is_some());
                assert_eq!(accepted, valid, "{special:?} at {at}");
            }
        }
    }

    #[test]
    fn the_word_scan_finds_every_special_byte_at_every_position() {
        for special in [b'"', b'\\', 0x00, 0x1f, 0x80, 0xff] {
            for at in 0..8 {
                let mut word = [b'a'; 8];
                word[at] = special;
                assert_eq!(
                    special_bytes(u64::from_le_bytes(word)).trailing_zeros() / 8,
                    at as u32,
                    "{special} at {at}"
                );
            }
            for at in 0..64 {
                let mut block = [b'a'; 64];
                block[at] = special;
                assert!(!plain_block(&block), "{special} at {at}");
                // And in a long string, wherever the block boundaries fall.
                let text = format!(
                    r#"{{"type":"signal","to":"p","data":"{}"}}"#,
                    "a".repeat(140)
                );
                let at = text.len() - 2 - at;
                if special == b'"' || special == b'\\' {
                    continue;
                }
                let mut bytes = text.into_bytes();
                bytes[at] = special;
                assert_eq!(signal_envelope(&bytes), None);
            }
        }
        assert!(plain_block(&[b'a'; 64]));
        for plain in [b' ', b'a', 0x7f, b'!', b'#', b'[', b']'] {
            assert_eq!(special_bytes(u64::from_le_bytes([plain; 8])), 0, "{plain}");
        }
    }

    /// Property-based fuzzing: generated, mutated and arbitrary frames. A short run by default;
    /// `PROPTEST_CASES=1000000 cargo test -p politely-proto --lib properties` for a long one.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// JSON text as clients might write it, well formed or nearly: strings with escapes and
        /// any characters, numbers of every form, nesting, and some whitespace.
        fn json() -> impl Strategy<Value = String> {
            let leaf = prop_oneof![
                Just("null".to_owned()),
                Just("true".to_owned()),
                Just("false".to_owned()),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|f| f.to_string()),
                "-?[0-9]{1,3}(\\.[0-9]{0,3})?([eE][+-]?[0-9]{0,3})?",
                any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
                // Raw string bodies: unescaped controls, stray backslashes, \u escapes.
                "\"([ -~]|\\\\u[0-9a-fA-F]{0,4}|[\u{0}-\u{1f}]|\\PC){0,16}\"",
            ];
            leaf.prop_recursive(5, 48, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6)
                        .prop_map(|items| format!("[{}]", items.join(","))),
                    prop::collection::vec(("[a-z\"\\\\]{0,4}", inner, " ?"), 0..6).prop_map(
                        |members| {
                            let members: Vec<String> = members
                                .iter()
                                .map(|(key, value, space)| format!("\"{key}\":{space}{value}"))
                                .collect();
                            format!("{{{}}}", members.join(","))
                        }
                    ),
                ]
            })
        }

        fn signal(to: &str, data: &str) -> Vec<u8> {
            format!(r#"{{"type":"signal","to":"{to}","data":{data}}}"#).into_bytes()
        }

        proptest! {
            #[test]
            fn generated_signals_agree_with_the_parser(to in "[ -~]{0,30}", data in json()) {
                let frame = signal(&to, &data);
                check(&frame);
                // And the fast path takes every well-formed one in the shape it is for (an id
                // without quotes or escapes), so the agreement above is not by abstention.
                let text = std::str::from_utf8(&frame).unwrap();
                if !to.contains(['"', '\\']) && parsed(text).is_some() {
                    prop_assert!(signal_envelope(&frame).is_some(), "{text}");
                }
            }

            #[test]
            fn mutated_signals_agree_with_the_parser(
                data in json(),
                edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6),
            ) {
                let mut frame = signal("01JD0000000000000000000000", &data);
                for (at, byte, kind) in edits {
                    let i = at.index(frame.len());
                    match kind {
                        0 => frame[i] = byte,
                        1 => frame.insert(i, byte),
                        _ => {
                            frame.remove(i);
                        }
                    }
                    if frame.is_empty() {
                        break;
                    }
                }
                check(&frame);
            }

            #[test]
            fn arbitrary_bytes_after_the_prefix_agree_with_the_parser(
                rest in prop::collection::vec(any::<u8>(), 0..200),
            ) {
                let mut frame = br#"{"type":"signal","to":""#.to_vec();
                frame.extend_from_slice(&rest);
                check(&frame);
            }
        }
    }
}
