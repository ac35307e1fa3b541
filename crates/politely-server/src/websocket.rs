//! WebSocket framing (RFC 6455) without I/O: the server reads masked client frames and writes
//! unmasked ones; a client (the CLI's load generator) does the reverse.
//!
//! The server relays small JSON text frames at high rates, so this is written for that case: a
//! [`Reader`] parses every complete frame already in its buffer, unmasks it in place and hands
//! out the text as borrowed bytes (checked for UTF-8 by the caller, who usually parses them
//! anyway: one pass instead of two); frames are written straight into a byte buffer that goes
//! to the socket in one write. Nothing is allocated per frame. Messages larger than the limit
//! are skipped as they arrive instead of being buffered. A large text message can be kept
//! without copying it ([`Text::share`]): it stays where it was read until its last holder lets
//! go, and the reader reads on into fresh memory.

// Private without the `internals` feature: the client half (the benchmarks') is then unused.
#![cfg_attr(not(feature = "internals"), allow(unreachable_pub, dead_code))]

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use sha1::{Digest, Sha1};

/// The key every `Sec-WebSocket-Accept` is derived with.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value answering a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key.trim().as_bytes());
    sha1.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

/// A frame's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// The next fragment of a text or binary message.
    Continuation,
    /// A UTF-8 text message (or its first fragment).
    Text,
    /// A binary message (or its first fragment).
    Binary,
    /// The closing handshake.
    Close,
    /// A keepalive request, answered with a pong carrying the same payload.
    Ping,
    /// A keepalive answer.
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0 => Opcode::Continuation,
            1 => Opcode::Text,
            2 => Opcode::Binary,
            8 => Opcode::Close,
            9 => Opcode::Ping,
            10 => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0,
            Opcode::Text => 1,
            Opcode::Binary => 2,
            Opcode::Close => 8,
            Opcode::Ping => 9,
            Opcode::Pong => 10,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// Appends the header of a final frame of `len` payload bytes; with a `mask` (a client's), the
/// caller appends the payload masked with [`apply_mask`].
pub fn write_header(out: &mut Vec<u8>, opcode: Opcode, len: usize, mask: Option<[u8; 4]>) {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.push(0x80 | opcode.bits());
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
}

/// Appends an unmasked final frame: what a server sends.
pub fn write_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    write_header(out, opcode, payload.len(), None);
    out.extend_from_slice(payload);
}

/// Appends a masked final frame: what a client sends.
pub fn write_masked_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], mask: [u8; 4]) {
    write_header(out, opcode, payload.len(), Some(mask));
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// Appends a close frame with `code` and `reason` (at most 123 bytes of it).
pub fn write_close(out: &mut Vec<u8>, code: u16, reason: &str, mask: Option<[u8; 4]>) {
    let mut reason = reason;
    while reason.len() > 123 {
        let mut end = 123;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason = &reason[..end];
    }
    let mut payload = [0u8; 125];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
    let payload = &payload[..2 + reason.len()];
    match mask {
        Some(mask) => write_masked_frame(out, Opcode::Close, payload, mask),
        None => write_frame(out, Opcode::Close, payload),
    }
}

/// XORs `data` with the masking key (masking and unmasking are the same operation).
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    // 32 bytes at a time against the key repeated: the compiler makes vector XORs of it.
    let mut wide = [0u8; 32];
    for (i, byte) in wide.iter_mut().enumerate() {
        *byte = mask[i % 4];
    }
    let mut chunks = data.chunks_exact_mut(32);
    for chunk in &mut chunks {
        for (byte, key) in chunk.iter_mut().zip(&wide) {
            *byte ^= key;
        }
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// Why the peer broke the protocol; each ends the connection with its close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A malformed frame (1002): reserved bits or opcodes, wrong masking, a fragmented or
    /// oversized control frame, a continuation out of place.
    Protocol(&'static str),
    /// A close reason, or a fragment of a text message, that is not UTF-8 (1007). (Whole text
    /// messages are the caller's to check, and close the same way.)
    InvalidUtf8,
    /// A message above the hard limit (1009): too large even to skip.
    TooLarge,
}

/// A message read by a [`Reader`], borrowing its buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A whole text message, not yet checked for UTF-8: a reader of text must check it and close
    /// with 1007 if it is not.
    Text(Text<'a>),
    /// A whole binary message.
    Binary(&'a [u8]),
    /// A ping and its payload, to be echoed in a pong.
    Ping(&'a [u8]),
    /// A pong and its payload.
    Pong(&'a [u8]),
    /// A close frame and its code, if it had one (always a code a peer may send: see
    /// [`is_valid_close_code`]).
    Close(Option<u16>),
    /// A data message larger than the reader's limit: its bytes are being skipped unread.
    /// Reported once, when the size is first known to be over.
    TooLarge(u64),
}

/// Text messages of at least this many bytes (unfragmented) can be shared instead of copied.
pub const SHARED_TEXT: usize = 1024;

/// The bytes of a text message.
#[derive(Debug, Clone, Copy)]
pub struct Text<'a> {
    bytes: &'a [u8],
    /// The read that holds the message, when it is large enough to be shared, and the size of
    /// the allocation it is in.
    read: Option<(&'a Bytes, usize)>,
}

/// Part of a message kept without copying it.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The part's bytes.
    pub bytes: Bytes,
    /// The memory they keep alive: the whole buffer the message was read into, which is freed
    /// (or read into again) only when every part shared from it is dropped.
    pub holds: usize,
}

impl<'a> Text<'a> {
    /// The message's bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// `part` of the message (a subslice of [`Text::as_bytes`]) as bytes that outlive the
    /// reader's next read, without copying them; `None` for messages under [`SHARED_TEXT`]
    /// bytes and for fragmented ones, which are cheaper to copy.
    ///
    /// # Panics
    ///
    /// If `part` is not within the message.
    pub fn share(&self, part: &[u8]) -> Option<Shared> {
        self.read.map(|(read, holds)| Shared {
            bytes: read.slice_ref(part),
            holds,
        })
    }
}

impl PartialEq for Text<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Text<'_> {}

/// Which side of the connection a reader is on, which decides the masking it requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads a client's frames, which must be masked.
    Server,
    /// Reads a server's frames, which must not be.
    Client,
}

/// The message being assembled from fragments.
enum Fragments {
    None,
    Collecting(Opcode),
    /// Over the limit: the rest of the message is skipped.
    Skipping,
}

/// Frames from a byte stream: fill [`Reader::buffer`] from the socket, then take messages with
/// [`Reader::next_message`] until it returns `None`.
pub struct Reader {
    buf: BytesMut,
    /// Where the unparsed bytes of `buf` start.
    start: usize,
    /// The read holding the last large text message, split off `buf` so it can be shared;
    /// released at the next call, so the reader itself does not keep it.
    shared: Bytes,
    /// The size of the allocation `buf` is in.
    allocation: usize,
    role: Role,
    /// Data messages above this are skipped and reported as [`Message::TooLarge`].
    max_message: usize,
    /// Data messages above this end the connection.
    hard_limit: usize,
    /// The smallest read.
    read_size: usize,
    /// The next read's size: it doubles while reads fill it, up to 64 KiB.
    next_read: usize,
    /// Payload bytes of a skipped message still to discard.
    skip: u64,
    fragments: Fragments,
    /// The size of the fragmented message so far, skipped fragments included: the hard limit
    /// holds for the whole message, not for each fragment.
    message_len: u64,
    assembled: Vec<u8>,
    /// How much of a fragmented text message in `assembled` is known to be UTF-8, so an invalid
    /// one fails at the fragment that breaks it and each byte is checked once.
    utf8_checked: usize,
}

/// The most a reader reads at once under load.
pub(crate) const MAX_READ: usize = 16 * 1024;

impl Reader {
    /// A reader for `role`, refusing data messages above `max_message` bytes and ending the
    /// connection for messages above `hard_limit`; it reads at least `read_size` bytes at once
    /// (256 at the least).
    pub fn new(role: Role, max_message: usize, hard_limit: usize, read_size: usize) -> Self {
        let read_size = read_size.max(256);
        Reader {
            buf: BytesMut::with_capacity(read_size),
            start: 0,
            shared: Bytes::new(),
            allocation: read_size,
            role,
            max_message,
            hard_limit: hard_limit.max(max_message),
            read_size,
            next_read: read_size,
            skip: 0,
            fragments: Fragments::None,
            message_len: 0,
            assembled: Vec::new(),
            utf8_checked: 0,
        }
    }

    /// Changes the limits (see [`Reader::new`]) for the messages that follow.
    pub fn set_limits(&mut self, max_message: usize, hard_limit: usize) {
        self.max_message = max_message;
        self.hard_limit = hard_limit.max(max_message);
    }

    /// The buffer to read into, with room for the next read: append to its spare capacity only
    /// (as `read_buf` does), or bytes from elsewhere with [`Reader::feed`].
    pub fn buffer(&mut self) -> &mut BytesMut {
        // Room for a read of the usual size, or for the rest of the frame at the front if that
        // is not much more (skipped frames are not buffered). A larger frame's room grows with
        // what has arrived of it, doubling: memory follows the bytes received, not the length a
        // header announces (a 14-byte header alone would otherwise reserve a whole frame).
        let frame = self.pending_frame_len();
        let buffered = self.buffered();
        let rest = frame.saturating_sub(buffered);
        let step = self.next_read.max(buffered);
        let want = rest.max(self.next_read);
        let (need, want) = if rest > step {
            // Room for a usual read now; when the buffer has to move, twice what has arrived.
            (self.next_read, step)
        } else if frame > self.next_read {
            // The rest of a large frame: all of it, so it is not moved again near its end.
            (rest, want)
        } else {
            (want, want)
        };
        self.make_room(need, want);
        &mut self.buf
    }

    /// Appends bytes that arrived some other way (with an HTTP request, say).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.make_room(bytes.len(), bytes.len().max(self.next_read));
        self.buf.extend_from_slice(bytes);
    }

    /// Makes `need` bytes of spare capacity, `want` if it has to move or allocate. The reader
    /// allocates its buffers itself, so it knows how much memory a shared message keeps alive.
    fn make_room(&mut self, need: usize, want: usize) {
        self.shared = Bytes::new();
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        if self.buf.capacity() - self.buf.len() >= need {
            return;
        }
        if self.start > 0 {
            drop(self.buf.split_to(self.start));
            self.start = 0;
        }
        // The same memory again once nothing shares it any more (the unparsed bytes move to its
        // front); otherwise a new allocation of just the size needed, so a shared part never
        // keeps more alive than the one buffer it was read into.
        if !self.buf.try_reclaim(want) {
            let mut fresh = BytesMut::with_capacity(self.buf.len() + want);
            fresh.extend_from_slice(&self.buf);
            self.buf = fresh;
            self.allocation = self.buf.capacity();
        }
    }

    /// Tells the reader how many bytes the last read appended, to size the next one.
    pub fn did_read(&mut self, n: usize) {
        if n >= self.next_read {
            self.next_read = (self.next_read * 2).min(MAX_READ);
        }
    }

    /// Gives back the memory of a burst: an idle connection keeps only its initial buffer.
    pub fn shrink(&mut self) {
        self.next_read = self.read_size;
        self.shared = Bytes::new();
        if self.start == self.buf.len() && self.allocation > self.read_size {
            self.buf = BytesMut::with_capacity(self.read_size);
            self.start = 0;
            self.allocation = self.read_size;
        }
        // A fragmented message being assembled keeps its bytes, however long its sender waits
        // between fragments.
        if self.assembled.capacity() > self.read_size
            && !matches!(self.fragments, Fragments::Collecting(_))
        {
            self.assembled = Vec::new();
        }
    }

    /// The capacity of the read buffer and of the fragment buffer, for the fuzz tests.
    #[cfg(test)]
    pub(crate) fn memory(&self) -> (usize, usize) {
        (self.buf.capacity(), self.assembled.capacity())
    }

    /// Bytes read but not yet parsed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The size of the frame at the front of the buffer, header included, if its header is there.
    fn pending_frame_len(&self) -> usize {
        if self.skip > 0 {
            // What follows is the payload being skipped, not a header.
            return 0;
        }
        match parse_header(&self.buf[self.start..]) {
            Ok(Some(header)) if header.len <= self.max_message as u64 => {
                header.header_len + header.len as usize
            }
            _ => 0,
        }
    }

    /// The next whole message in the buffer, or `None` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message<'_>>, FrameError> {
        self.shared = Bytes::new();
        loop {
            if self.skip > 0 {
                let available = (self.buf.len() - self.start) as u64;
                let n = self.skip.min(available);
                self.start += n as usize;
                self.skip -= n;
                if self.skip > 0 {
                    return Ok(None);
                }
            }
            let Some(header) = parse_header(&self.buf[self.start..])? else {
                return Ok(None);
            };
            if header.masked != (self.role == Role::Server) {
                return Err(FrameError::Protocol(match self.role {
                    Role::Server => "client frames must be masked",
                    Role::Client => "server frames must not be masked",
                }));
            }
            let control = header.opcode.is_control();
            if control && (!header.fin || header.len > 125) {
                return Err(FrameError::Protocol("control frames are final and short"));
            }
            match (&self.fragments, header.opcode) {
                (Fragments::None, Opcode::Continuation) => {
                    return Err(FrameError::Protocol(
                        "a continuation with nothing to continue",
                    ));
                }
                (Fragments::Collecting(_) | Fragments::Skipping, Opcode::Text | Opcode::Binary) => {
                    return Err(FrameError::Protocol(
                        "a new message inside a fragmented one",
                    ));
                }
                _ => {}
            }
            // The size of the message this frame belongs to, with this frame.
            let total = match header.opcode {
                Opcode::Continuation => self.message_len.saturating_add(header.len),
                _ => header.len,
            };
            if !control {
                if total > self.hard_limit as u64 {
                    return Err(FrameError::TooLarge);
                }
                let over = total > self.max_message as u64;
                if over || matches!(self.fragments, Fragments::Skipping) {
                    self.start += header.header_len;
                    self.skip = header.len;
                    self.message_len = total;
                    let first_report = !matches!(self.fragments, Fragments::Skipping);
                    self.fragments = if header.fin {
                        Fragments::None
                    } else {
                        Fragments::Skipping
                    };
                    if first_report {
                        return Ok(Some(Message::TooLarge(total)));
                    }
                    continue;
                }
            }
            let payload_start = self.start + header.header_len;
            let payload_end = payload_start + header.len as usize;
            if self.buf.len() < payload_end {
                return Ok(None);
            }
            if let Some(mask) = header.mask {
                apply_mask(&mut self.buf[payload_start..payload_end], mask);
            }
            self.start = payload_end;
            if !control {
                self.message_len = total;
            }
            let payload = payload_start..payload_end;
            match header.opcode {
                Opcode::Text | Opcode::Binary if !header.fin => {
                    self.assembled.clear();
                    self.assembled.extend_from_slice(&self.buf[payload]);
                    self.utf8_checked = 0;
                    self.fragments = Fragments::Collecting(header.opcode);
                    if header.opcode == Opcode::Text {
                        self.check_fragment_utf8(false)?;
                    }
                }
                Opcode::Continuation => {
                    self.assembled.extend_from_slice(&self.buf[payload]);
                    if matches!(self.fragments, Fragments::Collecting(Opcode::Text)) {
                        self.check_fragment_utf8(header.fin)?;
                    }
                    if header.fin {
                        let Fragments::Collecting(opcode) =
                            std::mem::replace(&mut self.fragments, Fragments::None)
                        else {
                            unreachable!("skipped continuations are handled above");
                        };
                        // The assembled text stays until the next fragmented message.
                        return match opcode {
                            Opcode::Binary => Ok(Some(Message::Binary(&self.assembled))),
                            _ => Ok(Some(Message::Text(Text {
                                bytes: &self.assembled,
                                read: None,
                            }))),
                        };
                    }
                }
                Opcode::Text if payload.len() >= SHARED_TEXT => {
                    // Split off everything parsed so far, this message last: one reference
                    // count for the message, however many parts of it are shared.
                    let holds = self.allocation;
                    self.shared = self.buf.split_to(payload_end).freeze();
                    self.start = 0;
                    return Ok(Some(Message::Text(Text {
                        bytes: &self.shared[payload_start..],
                        read: Some((&self.shared, holds)),
                    })));
                }
                Opcode::Text => {
                    return Ok(Some(Message::Text(Text {
                        bytes: &self.buf[payload],
                        read: None,
                    })));
                }
                Opcode::Binary => return Ok(Some(Message::Binary(&self.buf[payload]))),
                Opcode::Ping => return Ok(Some(Message::Ping(&self.buf[payload]))),
                Opcode::Pong => return Ok(Some(Message::Pong(&self.buf[payload]))),
                Opcode::Close => {
                    let body = &self.buf[payload];
                    return match body.len() {
                        0 => Ok(Some(Message::Close(None))),
                        1 => Err(FrameError::Protocol("a close frame with a one-byte body")),
                        _ => {
                            let code = u16::from_be_bytes([body[0], body[1]]);
                            if !is_valid_close_code(code) {
                                return Err(FrameError::Protocol(
                                    "a close code a peer may not send",
                                ));
                            }
                            std::str::from_utf8(&body[2..]).map_err(|_| FrameError::InvalidUtf8)?;
                            Ok(Some(Message::Close(Some(code))))
                        }
                    };
                }
            }
        }
    }
}

impl Reader {
    /// Checks the text assembled since the last check: an invalid sequence fails now, one cut
    /// at the fragment's end waits for the next fragment, unless this one is the last.
    fn check_fragment_utf8(&mut self, last: bool) -> Result<(), FrameError> {
        match std::str::from_utf8(&self.assembled[self.utf8_checked..]) {
            Ok(_) => {
                self.utf8_checked = self.assembled.len();
                Ok(())
            }
            Err(e) if e.error_len().is_none() && !last => {
                self.utf8_checked += e.valid_up_to();
                Ok(())
            }
            Err(_) => Err(FrameError::InvalidUtf8),
        }
    }
}

/// Whether a peer may send `code` in a close frame (RFC 6455 §7.4 and the IANA registry):
/// the defined codes except those reserved for reporting (1005, 1006, 1015), and the ranges
/// for libraries (3000–3999) and applications (4000–4999).
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

struct Header {
    fin: bool,
    opcode: Opcode,
    masked: bool,
    mask: Option<[u8; 4]>,
    len: u64,
    header_len: usize,
}

fn parse_header(data: &[u8]) -> Result<Option<Header>, FrameError> {
    let [b0, b1, ..] = *data else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Protocol("reserved bits set"));
    }
    let opcode = Opcode::from_bits(b0 & 0x0f).ok_or(FrameError::Protocol("unknown opcode"))?;
    let masked = b1 & 0x80 != 0;
    let (len, mut header_len) = match b1 & 0x7f {
        126 => {
            let Some(bytes) = data.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4)
        }
        127 => {
            let Some(bytes) = data.get(2..10) else {
                return Ok(None);
            };
            let len = u64::from_be_bytes(bytes.try_into().expect("8 bytes"));
            if len >> 63 != 0 {
                return Err(FrameError::Protocol("a length with its top bit set"));
            }
            (len, 10)
        }
        len => (u64::from(len), 2),
    };
    let mask = if masked {
        let Some(bytes) = data.get(header_len..header_len + 4) else {
            return Ok(None);
        };
        header_len += 4;
        Some([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        None
    };
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        opcode,
        masked,
        mask,
        len,
        header_len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

    /// A text message as a reader returns it (equality looks at the bytes only).
    fn text(bytes: &[u8]) -> Message<'_> {
        Message::Text(Text { bytes, read: None })
    }

    fn server_reader() -> Reader {
        Reader::new(Role::Server, 1000, 4000, 256)
    }

    fn feed(reader: &mut Reader, bytes: &[u8]) {
        reader.feed(bytes);
    }

    fn fragment(opcode: Opcode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_masked_frame(&mut out, opcode, payload, MASK);
        if !fin {
            out[0] &= 0x7f;
        }
        out
    }

    #[test]
    fn a_large_frame_grows_its_buffer_as_it_arrives() {
        let mut reader = Reader::new(Role::Server, 1 << 20, 1 << 20, 256);
        let payload = vec![b'a'; 100_000];
        let frame = fragment(Opcode::Text, true, &payload);
        let mut sent = 0;
        let mut allocations = vec![reader.allocation];
        while sent < frame.len() {
            let buf = reader.buffer();
            let spare = buf.capacity() - buf.len();
            assert!(spare > 0);
            // Never much more than twice what has arrived, plus one usual read.
            assert!(
                buf.capacity() <= 2 * sent + 2 * MAX_READ,
                "{} bytes of buffer after {sent}",
                buf.capacity()
            );
            let n = spare.min(7000).min(frame.len() - sent);
            buf.extend_from_slice(&frame[sent..sent + n]);
            sent += n;
            reader.did_read(n);
            allocations.push(reader.allocation);
            if sent < frame.len() {
                assert_eq!(reader.next_message(), Ok(None));
            }
        }
        // Each move doubles the buffer: a handful of moves, not one per read.
        allocations.dedup();
        assert!(allocations.len() <= 12, "{allocations:?}");
        let Some(Message::Text(text)) = reader.next_message().unwrap() else {
            panic!("the frame")
        };
        assert_eq!(text.as_bytes(), payload);
    }

    #[test]
    fn a_header_alone_reserves_no_more_than_a_usual_read() {
        // Before the fix the reader reserved the whole announced frame (256 KiB here) as soon as
        // its 14-byte header arrived.
        let mut reader = Reader::new(Role::Server, 256 * 1024, 1 << 20, 1024);
        let mut header = Vec::new();
        write_header(&mut header, Opcode::Text, 256 * 1024, Some(MASK));
        feed(&mut reader, &header);
        assert_eq!(reader.next_message(), Ok(None));
        let capacity = reader.buffer().capacity();
        assert!(
            capacity <= 4 * 1024,
            "{capacity} bytes reserved for a header"
        );
    }

    #[test]
    fn a_fragmented_message_survives_a_shrink_between_its_fragments() {
        // A keepalive tick between two fragments used to empty the assembled first part.
        let mut reader = server_reader();
        let first = vec![b'a'; 600];
        feed(&mut reader, &fragment(Opcode::Text, false, &first));
        assert_eq!(reader.next_message(), Ok(None));
        reader.shrink();
        feed(&mut reader, &fragment(Opcode::Continuation, true, b"bc"));
        let expected = [&first[..], b"bc"].concat();
        assert_eq!(reader.next_message().unwrap(), Some(text(&expected)));
        // Once the message is out, a shrink gives the memory back.
        reader.shrink();
        assert_eq!(reader.assembled.capacity(), 0);
    }

    #[test]
    fn the_hard_limit_holds_for_a_whole_fragmented_message() {
        // Fragments each under the frame limit, skipped once the message passes it: the whole
        // message passing the hard limit ends the connection (it used to go on forever).
        let mut reader = server_reader();
        let part = vec![b'x'; 900];
        feed(&mut reader, &fragment(Opcode::Text, false, &part));
        feed(&mut reader, &fragment(Opcode::Continuation, false, &part));
        assert_eq!(
            reader.next_message().unwrap(),
            Some(Message::TooLarge(1800))
        );
        for _ in 0..2 {
            feed(&mut reader, &fragment(Opcode::Continuation, false, &part));
        }
        assert_eq!(reader.next_message(), Ok(None));
        feed(&mut reader, &fragment(Opcode::Continuation, false, &part));
        assert_eq!(reader.next_message(), Err(FrameError::TooLarge));
    }

    #[test]
    fn close_codes_a_peer_may_not_send_are_protocol_errors() {
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            let mut reader = server_reader();
            feed(
                &mut reader,
                &fragment(Opcode::Close, true, &code.to_be_bytes()),
            );
            assert!(
                matches!(reader.next_message(), Err(FrameError::Protocol(_))),
                "{code}"
            );
        }
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            let mut reader = server_reader();
            feed(
                &mut reader,
                &fragment(Opcode::Close, true, &code.to_be_bytes()),
            );
            assert_eq!(reader.next_message(), Ok(Some(Message::Close(Some(code)))));
        }
    }

    #[test]
    fn invalid_utf8_in_a_fragment_fails_at_that_fragment() {
        // "κόσμε" split inside a character is fine; a byte that can start nothing is not.
        let word = "κόσμε".as_bytes();
        let mut reader = server_reader();
        feed(&mut reader, &fragment(Opcode::Text, false, &word[..3]));
        feed(
            &mut reader,
            &fragment(Opcode::Continuation, true, &word[3..]),
        );
        assert_eq!(reader.next_message().unwrap(), Some(text(word)));
        let mut reader = server_reader();
        feed(&mut reader, &fragment(Opcode::Text, false, b"ok \xff"));
        // Before the message ends.
        assert_eq!(reader.next_message(), Err(FrameError::InvalidUtf8));
        // A sequence cut at the end of the last fragment.
        let mut reader = server_reader();
        feed(&mut reader, &fragment(Opcode::Text, false, b"a"));
        feed(
            &mut reader,
            &fragment(Opcode::Continuation, true, &word[..1]),
        );
        assert_eq!(reader.next_message(), Err(FrameError::InvalidUtf8));
    }

    #[test]
    fn large_text_is_shared_and_outlives_the_reads_after_it() {
        let mut reader = Reader::new(Role::Server, 1 << 20, 1 << 20, 256);
        let large: Vec<Vec<u8>> = (0..6)
            .map(|i| vec![b'a' + i as u8; SHARED_TEXT + i * 3000])
            .collect();
        let mut kept = Vec::new();
        for payload in &large {
            feed(&mut reader, &fragment(Opcode::Text, true, payload));
            feed(&mut reader, &fragment(Opcode::Text, true, b"small"));
            while let Some(message) = reader.next_message().unwrap() {
                let Message::Text(text) = message else {
                    panic!("{message:?}")
                };
                let bytes = text.as_bytes();
                match text.share(&bytes[1..bytes.len() - 1]) {
                    Some(part) => kept.push(part),
                    None => assert_eq!(bytes, b"small"),
                }
            }
        }
        // The reader read on while every part was held, and none of them changed.
        assert_eq!(kept.len(), large.len());
        for (payload, part) in large.iter().zip(&kept) {
            assert_eq!(&part.bytes[..], &payload[1..payload.len() - 1]);
            // Each part accounts for the whole buffer its message was read into.
            assert!(
                part.holds >= payload.len() + 4,
                "{} for {}",
                part.holds,
                payload.len()
            );
        }
        // Just under the threshold, and assembled from fragments: copied, not shared.
        feed(&mut reader, &fragment(Opcode::Text, true, &large[0][1..]));
        feed(
            &mut reader,
            &fragment(Opcode::Text, false, &large[1][..2000]),
        );
        feed(
            &mut reader,
            &fragment(Opcode::Continuation, true, &large[1][2000..]),
        );
        for expected in [&large[0][1..], &large[1][..]] {
            let Some(Message::Text(text)) = reader.next_message().unwrap() else {
                panic!("a text message")
            };
            assert_eq!(text.as_bytes(), expected);
            assert!(text.share(text.as_bytes()).is_none());
        }
    }

    #[test]
    fn the_accept_key_of_the_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn masking_twice_gives_the_input_back_at_every_length() {
        for len in 0..80 {
            let original: Vec<u8> = (0..len as u8).collect();
            let mut data = original.clone();
            apply_mask(&mut data, MASK);
            if len > 0 {
                assert_ne!(data, original);
            }
            // Byte by byte, as the RFC states it.
            for (i, byte) in data.iter().enumerate() {
                assert_eq!(*byte, original[i] ^ MASK[i % 4]);
            }
            apply_mask(&mut data, MASK);
            assert_eq!(data, original);
        }
    }

    #[test]
    fn headers_use_the_shortest_length_form() {
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let mut out = Vec::new();
            write_header(&mut out, Opcode::Text, len, None);
            assert_eq!(out.len(), header_len, "{len}");
            let header = parse_header(&out).unwrap().unwrap();
            assert_eq!((header.len, header.header_len), (len as u64, header_len));
            assert!(header.fin && !header.masked);
        }
    }

    #[test]
    fn frames_split_anywhere_read_back_whole() {
        let mut stream = Vec::new();
        let long = "é".repeat(300);
        write_masked_frame(&mut stream, Opcode::Text, b"hello", MASK);
        write_masked_frame(&mut stream, Opcode::Ping, b"p", MASK);
        write_masked_frame(&mut stream, Opcode::Text, long.as_bytes(), MASK);
        write_close(&mut stream, 1000, "bye", Some(MASK));
        for split in 0..stream.len() {
            let mut reader = server_reader();
            let mut seen = Vec::new();
            for part in [&stream[..split], &stream[split..]] {
                feed(&mut reader, part);
                while let Some(message) = reader.next_message().unwrap() {
                    seen.push(match message {
                        Message::Text(text) => {
                            format!("Text({:?})", std::str::from_utf8(text.as_bytes()).unwrap())
                        }
                        other => format!("{other:?}"),
                    });
                }
            }
            assert_eq!(
                seen,
                [
                    r#"Text("hello")"#.to_owned(),
                    "Ping([112])".to_owned(),
                    format!("Text({long:?})"),
                    "Close(Some(1000))".to_owned(),
                ],
                "split at {split}"
            );
            assert_eq!(reader.buffered(), 0);
        }
    }

    #[test]
    fn fragments_are_joined_around_control_frames() {
        let mut reader = server_reader();
        feed(&mut reader, &fragment(Opcode::Text, false, b"hel"));
        feed(&mut reader, &fragment(Opcode::Ping, true, b""));
        feed(&mut reader, &fragment(Opcode::Continuation, false, b"l"));
        feed(&mut reader, &fragment(Opcode::Continuation, true, b"o"));
        assert_eq!(reader.next_message().unwrap(), Some(Message::Ping(b"")));
        assert_eq!(reader.next_message().unwrap(), Some(text(b"hello")));
        assert_eq!(reader.next_message().unwrap(), None);
    }

    #[test]
    fn a_message_over_the_limit_is_reported_once_and_skipped() {
        let mut reader = server_reader();
        let big = vec![b'x'; 1500];
        let mut stream = Vec::new();
        write_masked_frame(&mut stream, Opcode::Text, &big, MASK);
        write_masked_frame(&mut stream, Opcode::Text, b"after", MASK);
        // In pieces smaller than the frame: nothing of it is buffered.
        for chunk in stream.chunks(100) {
            feed(&mut reader, chunk);
            while let Some(message) = reader.next_message().unwrap() {
                match message {
                    Message::TooLarge(len) => assert_eq!(len, 1500),
                    Message::Text(text) => assert_eq!(text.as_bytes(), b"after"),
                    other => panic!("{other:?}"),
                }
                assert!(reader.buf.capacity() < 1000);
            }
        }
        // Fragments that together pass the limit.
        let mut reader = server_reader();
        feed(&mut reader, &fragment(Opcode::Text, false, &big[..800]));
        feed(
            &mut reader,
            &fragment(Opcode::Continuation, false, &big[..800]),
        );
        feed(
            &mut reader,
            &fragment(Opcode::Continuation, true, &big[..800]),
        );
        feed(&mut reader, &fragment(Opcode::Text, true, b"after"));
        assert_eq!(
            reader.next_message().unwrap(),
            Some(Message::TooLarge(1600))
        );
        assert_eq!(reader.next_message().unwrap(), Some(text(b"after")));
    }

    #[test]
    fn protocol_violations_are_errors() {
        let cases: [(Vec<u8>, FrameError); 7] = [
            (
                {
                    let mut out = Vec::new();
                    write_frame(&mut out, Opcode::Text, b"unmasked");
                    out
                },
                FrameError::Protocol("client frames must be masked"),
            ),
            (
                {
                    let mut out = fragment(Opcode::Text, true, b"x");
                    out[0] |= 0x40;
                    out
                },
                FrameError::Protocol("reserved bits set"),
            ),
            (
                {
                    let mut out = fragment(Opcode::Text, true, b"x");
                    out[0] = 0x83;
                    out
                },
                FrameError::Protocol("unknown opcode"),
            ),
            (
                fragment(Opcode::Ping, false, b""),
                FrameError::Protocol("control frames are final and short"),
            ),
            (
                fragment(Opcode::Continuation, true, b"x"),
                FrameError::Protocol("a continuation with nothing to continue"),
            ),
            (
                fragment(Opcode::Close, true, &[0x03, 0xe8, 0xff]),
                FrameError::InvalidUtf8,
            ),
            (
                fragment(Opcode::Binary, true, &[0; 4001]),
                FrameError::TooLarge,
            ),
        ];
        for (bytes, error) in cases {
            let mut reader = server_reader();
            feed(&mut reader, &bytes);
            assert_eq!(reader.next_message().unwrap_err(), error);
        }
        let mut reader = server_reader();
        feed(&mut reader, &fragment(Opcode::Text, false, b"a"));
        feed(&mut reader, &fragment(Opcode::Text, true, b"b"));
        assert_eq!(
            reader.next_message().unwrap_err(),
            FrameError::Protocol("a new message inside a fragmented one")
        );
    }

    #[test]
    fn a_client_reads_unmasked_frames() {
        let mut reader = Reader::new(Role::Client, 1000, 1000, 256);
        let mut stream = Vec::new();
        write_frame(&mut stream, Opcode::Text, b"hi");
        write_close(&mut stream, 4002, &"x".repeat(200), None);
        feed(&mut reader, &stream);
        assert_eq!(reader.next_message().unwrap(), Some(text(b"hi")));
        assert_eq!(
            reader.next_message().unwrap(),
            Some(Message::Close(Some(4002)))
        );
    }
}
