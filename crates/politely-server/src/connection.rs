//! One task per WebSocket: it reads the client's frames (every whole frame of a read, parsed in
//! place), writes the client's queued frames in batches (one write per wake-up, however many
//! frames are queued), pings, and decides how the connection ends.

use crate::cluster::{Refusal, Relayed, Returning};
use crate::config::JoinRequest;
use crate::hub::{Batch, Hub, JoinError, Membership, Relay, Take};
use crate::token::{self, TokenError};
use crate::websocket::{self, FrameError, Message, Opcode, Reader, Role};
use politely_proto::{ClientMessage, CloseCode, ErrorCode, ServerMessage};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How a connection ends, which decides what happens to its room slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The server closes with this code.
    Close(CloseCode),
    /// The client sent a close frame (with this code): it left on purpose.
    ClientClosed(Option<u16>),
    /// The socket failed or reached EOF without a close frame: keep the slot for a resume.
    Dropped,
}

/// A token bucket on `tokio::time::Instant`.
struct Bucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_second: f64, burst: f64, now: Instant) -> Self {
        Bucket {
            tokens: burst,
            burst,
            per_second,
            at: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the server knows of a client from its request, for the join hook.
#[derive(Debug, Default)]
pub(crate) struct ClientInfo {
    pub(crate) address: Option<SocketAddr>,
    pub(crate) origin: Option<String>,
}

struct Connection {
    hub: Arc<Hub>,
    id: u64,
    client: ClientInfo,
    waker: Arc<Notify>,
    member: Option<Membership>,
    rate: Option<Bucket>,
    /// Refused frames; empty means the client is closed for abuse.
    strikes: Bucket,
    /// Whether the last frame was refused for the rate limit (only the first of a run of
    /// refusals is answered, so a flood does not double as a flood of error frames).
    limited: bool,
    /// Heard from the client since the last keepalive tick.
    heard: bool,
    last_heard: Instant,
    /// Frames on their way to the socket; swapped with the outbox's batch, so the two take
    /// turns and nothing is allocated per batch.
    out: Batch,
    /// A write of `out` was given up part way (the stream may end inside a frame): nothing more
    /// can be written, not even a close frame.
    torn: bool,
    /// `{"type":"signal","from":"<id>","data":` for this peer, once joined.
    signal_prefix: String,
    /// Frames received and relayed since the shared counters were last updated (updated once
    /// per read, not per frame).
    received: u64,
    relayed: u64,
    /// Text frames taken from the peer under its id since its `welcome` (all its connections),
    /// which its signals carry to the room: a resumed `welcome` tells the client.
    taken: u64,
    /// The payload of the last ping of this read, answered once the read's frames are handled:
    /// a burst of pings costs one pong, as RFC 6455 §5.5.3 allows.
    pong: Option<Vec<u8>>,
    /// The reader has the joined limits (before `join` a frame may be [`JOIN_FRAME_BYTES`]).
    full_limits: bool,
}

/// A `join` with a `resume` token, and what comes with it.
struct Resuming<'a> {
    token: &'a str,
    /// The peers the client is connected with.
    peers: &'a [Cow<'a, str>],
    /// How many frames it received under its id.
    received: Option<u64>,
}

/// The largest message a connection may send before it has joined; a larger one ends it (1009).
/// A `join` with the longest room name and a generous token fits many times over, and a client
/// that has not joined cannot make the server hold a signal-sized buffer.
pub(crate) const JOIN_FRAME_BYTES: usize = 16 * 1024;

/// Bytes of write buffer a connection keeps once idle (under load its two buffers keep the size
/// of its largest batch, so batches are not regrown each time).
const KEPT_BUFFER: usize = 64 * 1024;

/// Serves one WebSocket whose handshake is done; `early` holds bytes the client sent after its
/// request.
pub(crate) async fn run<S>(hub: Arc<Hub>, mut stream: S, early: Vec<u8>, client: ClientInfo)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    hub.metrics.connections.fetch_add(1, Relaxed);
    hub.metrics.connections_total.fetch_add(1, Relaxed);
    let now = Instant::now();
    let config = &hub.config;
    // A frame up to four times the limit is skipped and refused with an error frame; past that
    // the connection ends (1009): a peer sending such frames is not a signaling client.
    // Before `join`: frames over the frame limit are refused as ever, and anything over
    // `JOIN_FRAME_BYTES` ends the connection.
    let mut reader = Reader::new(
        Role::Server,
        JOIN_FRAME_BYTES.min(config.max_frame_bytes),
        JOIN_FRAME_BYTES,
        config.read_buffer_bytes,
    );
    reader.feed(&early);
    let mut conn = Connection {
        id: hub.next_connection(),
        client,
        waker: Arc::new(Notify::new()),
        member: None,
        rate: config
            .rate_limit
            .map(|r| Bucket::new(r.per_second, r.burst, now)),
        strikes: Bucket::new(1.0, f64::from(config.max_strikes), now),
        limited: false,
        heard: false,
        last_heard: now,
        out: Batch::default(),
        torn: false,
        signal_prefix: String::new(),
        received: 0,
        relayed: 0,
        taken: 0,
        pong: None,
        full_limits: false,
        hub,
    };
    #[cfg(test)]
    if conn.hub.echo {
        conn.full_limits(&mut reader);
    }
    let end = conn.serve(&mut stream, &mut reader).await;
    conn.count();
    conn.finish(&mut stream, &mut reader, end).await;
    conn.hub.metrics.connections.fetch_sub(1, Relaxed);
}

fn close_code(error: FrameError) -> CloseCode {
    match error {
        FrameError::Protocol(_) => CloseCode::ProtocolError,
        FrameError::InvalidUtf8 => CloseCode::InvalidUtf8,
        FrameError::TooLarge => CloseCode::MessageTooBig,
    }
}

impl Connection {
    fn count(&mut self) {
        let metrics = &self.hub.metrics;
        if self.received > 0 {
            metrics.frames_received.fetch_add(self.received, Relaxed);
            self.received = 0;
        }
        if self.relayed > 0 {
            metrics.frames_relayed.fetch_add(self.relayed, Relaxed);
            self.relayed = 0;
        }
    }

    /// Gives the reader the limits of a joined connection.
    fn full_limits(&mut self, reader: &mut Reader) {
        let max = self.hub.config.max_frame_bytes;
        reader.set_limits(max, max.saturating_mul(4));
        self.full_limits = true;
    }

    fn joined(&mut self, member: Membership) {
        self.signal_prefix = signal_prefix(&member.id);
        self.taken = member.taken;
        self.member = Some(member);
    }

    async fn serve<S>(&mut self, stream: &mut S, reader: &mut Reader) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = &self.hub.config;
        let join_deadline = Instant::now() + config.join_timeout;
        let first_tick = Instant::now() + config.ping_interval.min(config.join_timeout);
        let tick = tokio::time::sleep_until(first_tick);
        tokio::pin!(tick);
        let waker = self.waker.clone();
        let shutdown = self.hub.shutdown.clone();
        // Both futures stay registered across iterations instead of re-registering (a lock
        // each) every time round the loop.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let notified = waker.notified();
        tokio::pin!(notified);
        // Frames that came with the handshake.
        if let Some(end) = self.read_frames(stream, reader).await {
            return end;
        }
        loop {
            tokio::select! {
                biased;
                () = &mut cancelled => return End::Close(CloseCode::GoingAway),
                () = &mut notified => {
                    notified.set(waker.notified());
                    if let Some(end) = self.write_queued(stream).await {
                        return end;
                    }
                }
                read = stream.read_buf(reader.buffer()) => {
                    match read {
                        Ok(0) | Err(_) => return End::Dropped,
                        Ok(n) => reader.did_read(n),
                    }
                    if let Some(end) = self.read_frames(stream, reader).await {
                        return end;
                    }
                }
                () = &mut tick => {
                    let now = Instant::now();
                    if self.member.is_none() && now >= join_deadline {
                        return End::Close(CloseCode::JoinTimeout);
                    }
                    if self.heard {
                        self.heard = false;
                        self.last_heard = now;
                    }
                    if now.duration_since(self.last_heard) >= self.hub.config.ping_timeout {
                        return End::Close(CloseCode::KeepaliveTimeout);
                    }
                    // Between bursts, an idle connection gives back what a burst made it hold.
                    reader.shrink();
                    self.out.shrink(KEPT_BUFFER);
                    if let Some(member) = &self.member {
                        member.outbox.shrink(KEPT_BUFFER);
                    }
                    // A client that stopped reading cannot block the keepalive: its silence
                    // ends the connection when the timeout passes.
                    let mut ping = Vec::with_capacity(2);
                    websocket::write_frame(&mut ping, Opcode::Ping, b"");
                    if let Some(end) = self.write_direct(stream, &ping).await {
                        return end;
                    }
                    let mut next = now + self.hub.config.ping_interval;
                    if self.member.is_none() {
                        next = next.min(join_deadline);
                    }
                    tick.as_mut().reset(next);
                }
            }
        }
    }

    /// Handles every whole frame in the reader's buffer.
    async fn read_frames<S>(&mut self, stream: &mut S, reader: &mut Reader) -> Option<End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let end = loop {
            match reader.next_message() {
                Ok(None) => break None,
                Ok(Some(message)) => {
                    if let Some(end) = self.on_message(stream, message).await {
                        break Some(end);
                    }
                    if self.member.is_some() && !self.full_limits {
                        self.full_limits(reader);
                    }
                }
                Err(error) => {
                    tracing::debug!(connection = self.id, ?error, "protocol error");
                    break Some(End::Close(close_code(error)));
                }
            }
        };
        self.count();
        // Pings read before a close (or a frame that ends the connection) are answered too.
        let flushed = self.flush_pong(stream).await;
        end.or(flushed)
    }

    /// Owes a pong for a ping: answered after the other frames of this read, once for all its
    /// pings, with the last one's payload.
    fn owe_pong(&mut self, payload: &[u8]) {
        let pong = self.pong.get_or_insert_with(Vec::new);
        pong.clear();
        pong.extend_from_slice(payload);
    }

    /// Writes the pong owed for the pings read so far, if any; called before any other direct
    /// write too, so the pong keeps its place.
    async fn flush_pong<S>(&mut self, stream: &mut S) -> Option<End>
    where
        S: AsyncWrite + Unpin,
    {
        let payload = self.pong.take()?;
        let mut pong = Vec::with_capacity(2 + payload.len());
        websocket::write_frame(&mut pong, Opcode::Pong, &payload);
        self.write_direct(stream, &pong).await
    }

    /// Takes a token for a frame from the rate limit. A frame over the limit is dropped (`false`);
    /// the first of a run is answered with `rate-limited`, and each takes a strike, so a client
    /// that keeps on is closed (1008).
    async fn within_rate<S>(&mut self, stream: &mut S) -> Result<bool, End>
    where
        S: AsyncWrite + Unpin,
    {
        let Some(rate) = &mut self.rate else {
            return Ok(true);
        };
        if rate.take(Instant::now()) {
            self.limited = false;
            return Ok(true);
        }
        let first = !self.limited;
        self.limited = true;
        if !self.strikes.take(Instant::now()) {
            return Err(End::Close(CloseCode::PolicyViolation));
        }
        if first {
            self.hub.metrics.error(ErrorCode::RateLimited);
            let error = ServerMessage::error(
                ErrorCode::RateLimited,
                "too many frames; this one and the next ones over the limit are dropped",
            );
            if let Some(end) = self.send(stream, &error).await {
                return Err(end);
            }
        }
        Ok(false)
    }

    /// Writes a frame straight to the socket (a ping, a pong, a reply before joining); a client
    /// that stopped reading long ago ends the connection.
    async fn write_direct<S>(&mut self, stream: &mut S, bytes: &[u8]) -> Option<End>
    where
        S: AsyncWrite + Unpin,
    {
        let write = stream.write_all(bytes);
        match tokio::time::timeout(self.hub.config.ping_timeout, write).await {
            Ok(Ok(())) => None,
            Ok(Err(_)) => Some(End::Dropped),
            Err(_) => {
                self.torn = true;
                Some(End::Close(CloseCode::KeepaliveTimeout))
            }
        }
    }

    /// Writes everything queued for this peer with one write.
    ///
    /// A client that stops reading blocks the write once the socket buffers are full; the write
    /// is raced against eviction (the queue overflowed meanwhile), a resume elsewhere, shutdown
    /// and a stall timeout, so such a client cannot hold its task forever.
    async fn write_queued<S>(&mut self, stream: &mut S) -> Option<End>
    where
        S: AsyncWrite + Unpin,
    {
        let member = self.member.as_ref()?;
        let outbox = member.outbox.clone();
        match outbox.take(self.id, &mut self.out) {
            Take::Frames => {}
            Take::Closed(code) => return Some(End::Close(code)),
            Take::Replaced => return Some(End::Close(CloseCode::Replaced)),
        }
        if self.out.is_empty() {
            return None;
        }
        let end = {
            // What went out, so a write given up before its first byte leaves the stream whole
            // (atomic only so the task stays `Send`).
            let written = AtomicUsize::new(0);
            let write = write_batch(stream, &self.out, &written);
            tokio::pin!(write);
            let stall = tokio::time::sleep(self.hub.config.ping_timeout);
            tokio::pin!(stall);
            let mut more_queued = false;
            loop {
                tokio::select! {
                    biased;
                    result = &mut write => {
                        if more_queued {
                            // Frames arrived while writing: come back for them.
                            self.waker.notify_one();
                        }
                        break result.is_err().then_some(End::Dropped);
                    }
                    _ = self.hub.shutdown.cancelled() => {
                        // Finish the write in hand, briefly, so the close frame can follow it.
                        let finished = tokio::time::timeout(Duration::from_secs(1), &mut write);
                        let finished = matches!(finished.await, Ok(Ok(())));
                        self.torn = !finished && written.load(Relaxed) > 0;
                        break Some(End::Close(CloseCode::GoingAway));
                    }
                    _ = self.waker.notified() => match outbox.state(self.id) {
                        Take::Frames => more_queued = true,
                        Take::Closed(code) => {
                            self.torn = written.load(Relaxed) > 0;
                            break Some(End::Close(code));
                        }
                        Take::Replaced => {
                            self.torn = written.load(Relaxed) > 0;
                            break Some(End::Close(CloseCode::Replaced));
                        }
                    },
                    () = &mut stall => {
                        self.torn = written.load(Relaxed) > 0;
                        break Some(End::Close(CloseCode::SlowConsumer));
                    }
                }
            }
        };
        self.out.clear();
        end
    }

    async fn on_message<S>(&mut self, stream: &mut S, message: Message<'_>) -> Option<End>
    where
        S: AsyncWrite + Unpin,
    {
        self.heard = true;
        #[cfg(test)]
        if self.hub.echo {
            return self.echo(stream, message).await;
        }
        if matches!(message, Message::Text(_)) {
            self.received += 1;
        }
        // Every text frame the client wrote counts, refused ones (over the size limit, over
        // the rate) too: its count and this one must agree.
        if matches!(message, Message::Text(_) | Message::TooLarge(_)) && self.member.is_some() {
            self.taken += 1;
        }
        // Every frame but a close (and one over the size limit, refused anyway) takes a token:
        // pings and pongs cost the server as much as signals.
        if !matches!(message, Message::Close(_) | Message::TooLarge(_)) {
            match self.within_rate(stream).await {
                Ok(true) => {}
                Ok(false) => return None,
                Err(end) => return Some(end),
            }
        }
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                let message = "frames are JSON text".into();
                return self
                    .refuse(stream, ErrorCode::BinaryFrame, message, None)
                    .await;
            }
            Message::TooLarge(_) => {
                let max = self.hub.config.max_frame_bytes;
                let message = format!("a frame may have at most {max} bytes");
                return self
                    .refuse(stream, ErrorCode::FrameTooLarge, message.into(), None)
                    .await;
            }
            Message::Ping(payload) => {
                self.owe_pong(payload);
                return None;
            }
            // A pong only proves the client is alive.
            Message::Pong(_) => return None,
            Message::Close(code) => return Some(End::ClientClosed(code)),
        };
        // Nearly every frame is a signal in the shape clients write: found and checked (JSON and
        // UTF-8) in one pass. The parser takes the rest, and gives the precise error for
        // malformed frames.
        if let Some((to, data)) = politely_proto::signal_envelope(text.as_bytes()) {
            return self.signal(stream, to, data, text.share(data)).await;
        }
        let Ok(text) = std::str::from_utf8(text.as_bytes()) else {
            return Some(End::Close(CloseCode::InvalidUtf8));
        };
        let message = match ClientMessage::from_json(text) {
            Ok(message) => message,
            Err(e) => return self.refuse(stream, e.code, e.message.into(), None).await,
        };
        match message {
            ClientMessage::Signal { to, data } => {
                self.signal(stream, &to, data.get().as_bytes(), None).await
            }
            ClientMessage::Join {
                room,
                token,
                resume,
                sfu,
                peers,
                received,
            } => {
                let resume = resume.as_deref().map(|token| Resuming {
                    token,
                    peers: &peers,
                    received,
                });
                self.join(stream, &room, token.as_deref(), resume, sfu)
                    .await
            }
            ClientMessage::Leave => Some(End::Close(CloseCode::Normal)),
            ClientMessage::Ping => self.send(stream, &ServerMessage::Pong).await,
            ClientMessage::IceServers => {
                let Some(member) = &self.member else {
                    let message = "join a room first".into();
                    return self
                        .refuse(stream, ErrorCode::NotJoined, message, None)
                        .await;
                };
                let (ice_servers, ice_ttl) = crate::hub::ice_servers(&self.hub.config, &member.id);
                let reply = ServerMessage::IceServers {
                    ice_servers,
                    ice_ttl,
                };
                self.send(stream, &reply).await
            }
        }
    }

    /// The test-only echo endpoint of the WebSocket conformance cases: data messages come back
    /// as they were sent; everything else is handled as on a signaling connection.
    #[cfg(test)]
    async fn echo<S>(&mut self, stream: &mut S, message: Message<'_>) -> Option<End>
    where
        S: AsyncWrite + Unpin,
    {
        let (opcode, payload) = match message {
            Message::Text(text) => {
                if std::str::from_utf8(text.as_bytes()).is_err() {
                    return Some(End::Close(CloseCode::InvalidUtf8));
                }
                (Opcode::Text, text.as_bytes())
            }
            Message::Binary(bytes) => (Opcode::Binary, bytes),
            Message::Ping(payload) => {
                self.owe_pong(payload);
                return None;
            }
            Message::Pong(_) => return None,
            Message::Close(code) => return Some(End::ClientClosed(code)),
            Message::TooLarge(_) => return Some(End::Close(CloseCode::MessageTooBig)),
        };
        let mut frame = Vec::with_capacity(payload.len() + 10);
        websocket::write_frame(&mut frame, opcode, payload);
        if let Some(end) = self.flush_pong(stream).await {
            return Some(end);
        }
        self.write_direct(stream, &frame).await
    }

    /// Relays `data` (raw JSON, checked) to `to`; `shared` is `data` kept from its read, for a
    /// large one.
    async fn signal<S>(
        &mut self,
        stream: &mut S,
        to: &str,
        data: &[u8],
        shared: Option<websocket::Shared>,
    ) -> Option<End>
    where
        S: AsyncWrite + Unpin,
    {
        let Some(member) = &self.member else {
            let message = "join a room first".into();
            return self
                .refuse(stream, ErrorCode::NotJoined, message, None)
                .await;
        };
        // The same bytes as `ServerMessage::Signal { from, data }.to_json()` (a test holds them
        // equal), written straight into the target's queue.
        let parts = [self.signal_prefix.as_bytes(), data, b"}"];
        if let Some(cluster) = self.hub.cluster.clone() {
            let frame = parts.concat();
            return match cluster.relay(member, to, &frame, self.taken).await {
                Relayed::Sent => {
                    self.relayed += 1;
                    None
                }
                // Removed meanwhile (a slow consumer), or resumed on another connection.
                Relayed::Gone => Some(End::Close(CloseCode::Replaced)),
                Relayed::UnknownPeer => {
                    let message = "no other peer in your room has this id".into();
                    let to = Some(to.to_owned());
                    self.refuse(stream, ErrorCode::UnknownPeer, message, to)
                        .await
                }
                Relayed::Unavailable(e) => {
                    tracing::warn!("redis: relay: {e}");
                    let message = "the server cannot reach its other nodes now".into();
                    let to = Some(to.to_owned());
                    self.refuse(stream, ErrorCode::Unavailable, message, to)
                        .await
                }
            };
        }
        match self.hub.relay(member, to, parts, shared, self.taken) {
            Relay::Sent => {
                self.relayed += 1;
                None
            }
            // Resumed on another connection: this one is stale.
            Relay::Gone => Some(End::Close(CloseCode::Replaced)),
            Relay::TargetEvicted => None,
            Relay::UnknownPeer => {
                let message = "no other peer in your room has this id".into();
                let to = Some(to.to_owned());
                self.refuse(stream, ErrorCode::UnknownPeer, message, to)
                    .await
            }
        }
    }

    async fn join<S>(
        &mut self,
        stream: &mut S,
        room: &str,
        token: Option<&str>,
        resume: Option<Resuming<'_>>,
        sfu: bool,
    ) -> Option<End>
    where
        S: AsyncWrite + Unpin,
    {
        if self.member.is_some() {
            let message = "this connection already joined a room".into();
            return self
                .refuse(stream, ErrorCode::AlreadyJoined, message, None)
                .await;
        }
        if !politely_proto::is_valid_room(room) {
            let message = "a room name has 1 to 128 bytes and no control characters".into();
            return self
                .refuse(stream, ErrorCode::InvalidRoom, message, None)
                .await;
        }
        let hub = self.hub.clone();
        // An unknown or expired resume token makes an ordinary join: the welcome says
        // `resumed: false` and carries a new id.
        if let Some(cluster) = &hub.cluster {
            let received = resume.as_ref().and_then(|r| r.received);
            let claimed = resume.as_ref().map_or(&[][..], |r| r.peers);
            let verified = resume
                .as_ref()
                .and_then(|r| crate::resume::verify(hub.resume_key(), r.token))
                .filter(|(claims, _)| claims.room == room);
            if let Some((claims, tag)) = verified {
                let waker = self.waker.clone();
                let resumed = cluster
                    .resume(
                        &hub,
                        Returning {
                            claims: &claims,
                            tag: &tag,
                            received,
                            peers: claimed,
                        },
                        self.id,
                        waker,
                    )
                    .await;
                match resumed {
                    Ok(Some(member)) => {
                        self.joined(member);
                        return None;
                    }
                    Ok(None) => {}
                    // Not a new id: the client tries again and keeps its own.
                    Err(e) => {
                        tracing::warn!("redis: resume: {e}");
                        let message = "the server cannot reach its other nodes now".into();
                        return self
                            .refuse(stream, ErrorCode::Unavailable, message, None)
                            .await;
                    }
                }
            }
        } else if let Some(member) =
            resume.and_then(|r| hub.resume(room, r.token, self.id, self.waker.clone(), r.peers))
        {
            self.joined(member);
            return None;
        }
        let mut user = None;
        if !hub.config.secrets.is_empty() {
            let Some(token) = token else {
                let message = "this server needs a room token".into();
                return self
                    .refuse(stream, ErrorCode::TokenRequired, message, None)
                    .await;
            };
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            match token::verify(&hub.config.secrets, token, room, now) {
                Ok(_) if sfu && !token::grants_sfu(token) => {
                    let message = "the token does not grant the SFU role".into();
                    return self
                        .refuse(stream, ErrorCode::SfuRefused, message, None)
                        .await;
                }
                Ok(claimed) => user = claimed,
                Err(e) => {
                    let code = match e {
                        TokenError::Invalid => ErrorCode::TokenInvalid,
                        TokenError::Expired => ErrorCode::TokenExpired,
                        TokenError::WrongRoom => ErrorCode::TokenWrongRoom,
                    };
                    return self.refuse(stream, code, e.to_string().into(), None).await;
                }
            }
        }
        if let Some(hook) = &hub.config.join_hook {
            let request = JoinRequest {
                room,
                user: user.as_ref(),
                address: self.client.address,
                origin: self.client.origin.as_deref(),
            };
            if let Err(reason) = hook.decide(&request) {
                return self
                    .refuse(stream, ErrorCode::JoinRefused, reason.into(), None)
                    .await;
            }
        }
        if let Some(cluster) = &hub.cluster {
            let joined = cluster
                .join(&hub, room, self.id, self.waker.clone(), user, sfu)
                .await;
            let (code, message) = match joined {
                Ok(member) => {
                    self.joined(member);
                    return None;
                }
                Err(Refusal::RoomFull) => (
                    ErrorCode::RoomFull,
                    format!("the room has {} peers", hub.config.max_room_size),
                ),
                Err(Refusal::SfuTaken) => (
                    ErrorCode::SfuRefused,
                    "the room has an SFU already".to_owned(),
                ),
                Err(Refusal::Unavailable(e)) => {
                    tracing::warn!("redis: join: {e}");
                    (
                        ErrorCode::Unavailable,
                        "the server cannot reach its other nodes now".to_owned(),
                    )
                }
            };
            return self.refuse(stream, code, message.into(), None).await;
        }
        match hub.join(room, self.id, self.waker.clone(), user, sfu) {
            Ok(member) => {
                self.joined(member);
                None
            }
            Err(JoinError::RoomFull) => {
                let message = format!("the room has {} peers", hub.config.max_room_size);
                self.refuse(stream, ErrorCode::RoomFull, message.into(), None)
                    .await
            }
            Err(JoinError::SfuTaken) => {
                let message = "the room has an SFU already".into();
                self.refuse(stream, ErrorCode::SfuRefused, message, None)
                    .await
            }
        }
    }

    /// Answers a refused frame with an `error` frame, or closes a client that keeps sending them.
    async fn refuse<S>(
        &mut self,
        stream: &mut S,
        code: ErrorCode,
        message: Cow<'_, str>,
        peer: Option<String>,
    ) -> Option<End>
    where
        S: AsyncWrite + Unpin,
    {
        self.hub.metrics.error(code);
        // A signal to a peer that just left is a race every client runs into (trickled
        // candidates), not abuse: the rate limit bounds it, strikes do not count it.
        if code != ErrorCode::UnknownPeer && !self.strikes.take(Instant::now()) {
            return Some(End::Close(CloseCode::PolicyViolation));
        }
        let error = ServerMessage::Error {
            code,
            message,
            peer: peer.map(Cow::Owned),
        };
        self.send(stream, &error).await
    }

    /// Sends a reply (an error, a pong) to this client: through its queue once it has joined, so
    /// replies keep their place after the welcome and the frames queued before them.
    async fn send<S>(&mut self, stream: &mut S, message: &ServerMessage<'_>) -> Option<End>
    where
        S: AsyncWrite + Unpin,
    {
        let text = message.to_json();
        if let Some(member) = &self.member {
            return match member.outbox.push([text.as_bytes()]) {
                Ok(()) => None,
                Err(_) => Some(End::Close(CloseCode::SlowConsumer)),
            };
        }
        let mut frame = Vec::with_capacity(text.len() + 4);
        websocket::write_frame(&mut frame, Opcode::Text, text.as_bytes());
        if let Some(end) = self.flush_pong(stream).await {
            return Some(end);
        }
        match self.write_direct(stream, &frame).await {
            Some(End::Close(CloseCode::KeepaliveTimeout)) => {
                Some(End::Close(CloseCode::SlowConsumer))
            }
            other => other,
        }
    }

    /// Settles the room slot and says goodbye.
    async fn finish<S>(&mut self, stream: &mut S, reader: &mut Reader, end: End)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let hub = self.hub.clone();
        if let Some(member) = self.member.clone() {
            match (end, hub.cluster.clone()) {
                (End::Close(CloseCode::GoingAway), _) => {}
                (End::Dropped | End::Close(CloseCode::KeepaliveTimeout), Some(cluster)) => {
                    let hub = hub.clone();
                    self.hub
                        .tasks
                        .spawn(async move { cluster.park(&hub, &member).await });
                }
                (End::ClientClosed(_) | End::Close(_), Some(cluster)) => {
                    self.hub
                        .tasks
                        .spawn(async move { cluster.leave(&member).await });
                }
                (End::Dropped | End::Close(CloseCode::KeepaliveTimeout), None) => hub.park(&member),
                (End::ClientClosed(_) | End::Close(_), None) => hub.leave(&member),
            }
        }
        let (code, reason) = match end {
            End::Dropped => return,
            // Echo the client's close, as the closing handshake asks.
            End::ClientClosed(code) => (code, ""),
            End::Close(code) => {
                hub.metrics.close(code);
                tracing::debug!(
                    connection = self.id,
                    code = code.code(),
                    reason = code.reason(),
                    "closing"
                );
                (Some(code.code()), code.reason())
            }
        };
        // What is already queued for a client that is still reading (its last error frame, the
        // signals before a leave or a shutdown) goes out before the close.
        let readable = matches!(
            end,
            End::Close(
                CloseCode::Normal
                    | CloseCode::GoingAway
                    | CloseCode::PolicyViolation
                    | CloseCode::MessageTooBig
            )
        );
        self.out.clear();
        if let (true, Some(member)) = (readable, &self.member) {
            // Closed or replaced queues leave the buffer empty: nothing to send then.
            let _ = member.outbox.take(self.id, &mut self.out);
        }
        match code {
            Some(code) => websocket::write_close(&mut self.out.encoded, code, reason, None),
            None => websocket::write_frame(&mut self.out.encoded, Opcode::Close, b""),
        }
        let client_closed = matches!(end, End::ClientClosed(_));
        // A client that stopped reading must not hold the task: the close is best effort.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            if self.torn {
                // After part of a frame, any frame would be read as the rest of it.
                return stream.shutdown().await;
            }
            write_batch(stream, &self.out, &AtomicUsize::new(0)).await?;
            // Wait for the client's close frame, so the TCP connection ends cleanly.
            if !client_closed {
                'wait: while stream.read_buf(reader.buffer()).await? > 0 {
                    loop {
                        match reader.next_message() {
                            Ok(Some(Message::Close(_))) | Err(_) => break 'wait,
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                        }
                    }
                }
            }
            stream.shutdown().await
        })
        .await;
    }
}

/// Writes a batch, counting in `written` the bytes that went out: with plain writes when it is
/// all encoded bytes, else with vectored writes.
async fn write_batch<S>(stream: &mut S, batch: &Batch, written: &AtomicUsize) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let (mut one, mut many);
    let mut slices: &mut [std::io::IoSlice<'_>] = if batch.shared.is_empty() {
        one = [std::io::IoSlice::new(&batch.encoded)];
        &mut one
    } else {
        many = batch.slices();
        &mut many
    };
    while !slices.is_empty() {
        // Linux takes at most 1024 slices at once.
        let n = match slices {
            [one] => stream.write(one).await?,
            _ => {
                let many = &slices[..slices.len().min(1024)];
                stream.write_vectored(many).await?
            }
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        written.fetch_add(n, Relaxed);
        std::io::IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// The start of every signal frame relayed from `id`.
fn signal_prefix(id: &str) -> String {
    let from = ServerMessage::Signal {
        from: Cow::Borrowed(id),
        data: Cow::Owned(serde_json::value::RawValue::from_string("0".into()).expect("0 is JSON")),
    }
    .to_json();
    // Everything but the `0}` of the placeholder data.
    from[..from.len() - 2].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signal_prefix_gives_the_same_bytes_as_the_serializer() {
        for id in ["01JD0000000000000000000000", "quote\"and\\slash"] {
            let data =
                serde_json::value::RawValue::from_string(r#"{"a": [1, "x"]}"#.into()).unwrap();
            let expected = ServerMessage::Signal {
                from: Cow::Borrowed(id),
                data: Cow::Borrowed(&data),
            }
            .to_json();
            assert_eq!(format!("{}{}}}", signal_prefix(id), data.get()), expected);
        }
    }
}
