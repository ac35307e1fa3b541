//! One task per WebSocket: it reads the client's frames, writes the client's queued frames in
//! batches (one flush per wake-up, however many frames are queued), pings, and decides how the
//! connection ends.

use crate::hub::{Hub, JoinError, Membership, Relay, Take};
use crate::token::{self, TokenError};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{FutureExt, SinkExt};
use politely_proto::{ClientMessage, CloseCode, ErrorCode, ServerMessage};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How a connection ends, which decides what happens to its room slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The server closes with this code.
    Close(CloseCode),
    /// The client sent a close frame: it left on purpose.
    ClientClosed,
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

struct Connection {
    hub: Arc<Hub>,
    id: u64,
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
    batch: VecDeque<Utf8Bytes>,
    /// `{"type":"signal","from":"<id>","data":` for this peer, once joined.
    signal_prefix: String,
    /// Frames received and relayed since the shared counters were last updated (updated once
    /// per batch of frames, not per frame).
    received: u64,
    relayed: u64,
}

pub(crate) async fn run(hub: Arc<Hub>, mut ws: WebSocket) {
    hub.metrics.connections.fetch_add(1, Relaxed);
    hub.metrics.connections_total.fetch_add(1, Relaxed);
    let now = Instant::now();
    let mut conn = Connection {
        id: hub.next_connection(),
        waker: Arc::new(Notify::new()),
        member: None,
        rate: hub
            .config
            .rate_limit
            .map(|r| Bucket::new(r.per_second, r.burst, now)),
        strikes: Bucket::new(1.0, f64::from(hub.config.max_strikes), now),
        limited: false,
        heard: false,
        last_heard: now,
        batch: VecDeque::new(),
        signal_prefix: String::new(),
        received: 0,
        relayed: 0,
        hub,
    };
    let end = conn.serve(&mut ws).await;
    conn.count();
    conn.finish(&mut ws, end).await;
    conn.hub.metrics.connections.fetch_sub(1, Relaxed);
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

    fn joined(&mut self, member: Membership) {
        self.signal_prefix = signal_prefix(&member.id);
        self.member = Some(member);
    }

    async fn serve(&mut self, ws: &mut WebSocket) -> End {
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
        loop {
            tokio::select! {
                biased;
                () = &mut cancelled => return End::Close(CloseCode::GoingAway),
                () = &mut notified => {
                    notified.set(waker.notified());
                    if let Some(end) = self.write_queued(ws).await {
                        return end;
                    }
                }
                message = ws.recv() => {
                    let mut message = message;
                    // Handle every frame already read before waiting again.
                    let end = loop {
                        let next = match message {
                            None => break Some(End::Dropped),
                            Some(Ok(next)) => next,
                            Some(Err(e)) => break Some(end_of_error(e)),
                        };
                        if let Some(end) = self.on_message(ws, next).await {
                            break Some(end);
                        }
                        match ws.recv().now_or_never() {
                            Some(next) => message = next,
                            None => break None,
                        }
                    };
                    self.count();
                    if let Some(end) = end {
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
                    // A client that stopped reading cannot block the keepalive: its silence
                    // ends the connection when the timeout passes.
                    let ping = ws.send(Message::Ping(Default::default()));
                    match tokio::time::timeout(self.hub.config.ping_timeout, ping).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return End::Dropped,
                        Err(_) => return End::Close(CloseCode::KeepaliveTimeout),
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

    /// Writes everything queued for this peer with one flush.
    ///
    /// A client that stops reading blocks the flush once the socket buffers are full; the write
    /// is raced against eviction (the queue overflowed meanwhile), a resume elsewhere, shutdown
    /// and a stall timeout, so such a client cannot hold its task forever.
    async fn write_queued(&mut self, ws: &mut WebSocket) -> Option<End> {
        let member = self.member.as_ref()?;
        let outbox = member.outbox.clone();
        match outbox.take(self.id, &mut self.batch) {
            Take::Frames => {}
            Take::Closed(code) => return Some(End::Close(code)),
            Take::Replaced => return Some(End::Close(CloseCode::Replaced)),
        }
        if self.batch.is_empty() {
            return None;
        }
        let mut batch = std::mem::take(&mut self.batch);
        let end = {
            let write = async {
                for frame in batch.drain(..) {
                    ws.feed(Message::Text(frame)).await?;
                }
                ws.flush().await
            };
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
                        break Some(End::Close(CloseCode::GoingAway));
                    }
                    _ = self.waker.notified() => match outbox.state(self.id) {
                        Take::Frames => more_queued = true,
                        Take::Closed(code) => break Some(End::Close(code)),
                        Take::Replaced => break Some(End::Close(CloseCode::Replaced)),
                    },
                    () = &mut stall => break Some(End::Close(CloseCode::SlowConsumer)),
                }
            }
        };
        // Keep the buffer for the next batch, unless a burst made it large.
        if batch.capacity() <= 64 {
            batch.clear();
            self.batch = batch;
        }
        end
    }

    async fn on_message(&mut self, ws: &mut WebSocket, message: Message) -> Option<End> {
        self.heard = true;
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                return self
                    .refuse(
                        ws,
                        ErrorCode::BinaryFrame,
                        "frames are JSON text".into(),
                        None,
                    )
                    .await;
            }
            // tungstenite answers pings itself; a pong only proves the client is alive.
            Message::Ping(_) | Message::Pong(_) => return None,
            Message::Close(_) => return Some(End::ClientClosed),
        };
        self.received += 1;
        let max = self.hub.config.max_frame_bytes;
        if text.len() > max {
            let message = format!("a frame may have at most {max} bytes");
            return self
                .refuse(ws, ErrorCode::FrameTooLarge, message.into(), None)
                .await;
        }
        if let Some(rate) = &mut self.rate {
            if !rate.take(Instant::now()) {
                let first = !self.limited;
                self.limited = true;
                if !self.strikes.take(Instant::now()) {
                    return Some(End::Close(CloseCode::PolicyViolation));
                }
                if first {
                    self.hub.metrics.error(ErrorCode::RateLimited);
                    let error = ServerMessage::error(
                        ErrorCode::RateLimited,
                        "too many frames; this one and the next ones over the limit are dropped",
                    );
                    return self.send(ws, &error).await;
                }
                return None;
            }
            self.limited = false;
        }
        let message = match ClientMessage::from_json(text.as_str()) {
            Ok(message) => message,
            Err(e) => return self.refuse(ws, e.code, e.message.into(), None).await,
        };
        match message {
            ClientMessage::Signal { to, data } => {
                let Some(member) = &self.member else {
                    let message = "join a room first".into();
                    return self.refuse(ws, ErrorCode::NotJoined, message, None).await;
                };
                // The same bytes as `ServerMessage::Signal { from, data }.to_json()` (a test
                // holds them equal), without a serializer pass over the id each time.
                let data = data.get();
                let mut frame = String::with_capacity(self.signal_prefix.len() + data.len() + 1);
                frame.push_str(&self.signal_prefix);
                frame.push_str(data);
                frame.push('}');
                match self.hub.relay(member, &to, Utf8Bytes::from(frame)) {
                    Relay::Sent => {
                        self.relayed += 1;
                        None
                    }
                    Relay::TargetEvicted => None,
                    Relay::UnknownPeer => {
                        let message = "no other peer in your room has this id".into();
                        let to = Some(to.into_owned());
                        self.refuse(ws, ErrorCode::UnknownPeer, message, to).await
                    }
                }
            }
            ClientMessage::Join {
                room,
                token,
                resume,
            } => {
                self.join(ws, &room, token.as_deref(), resume.as_deref())
                    .await
            }
            ClientMessage::Leave => Some(End::Close(CloseCode::Normal)),
            ClientMessage::Ping => self.send(ws, &ServerMessage::Pong).await,
        }
    }

    async fn join(
        &mut self,
        ws: &mut WebSocket,
        room: &str,
        token: Option<&str>,
        resume: Option<&str>,
    ) -> Option<End> {
        if self.member.is_some() {
            let message = "this connection already joined a room".into();
            return self
                .refuse(ws, ErrorCode::AlreadyJoined, message, None)
                .await;
        }
        if !politely_proto::is_valid_room(room) {
            let message = "a room name has 1 to 128 bytes and no control characters".into();
            return self.refuse(ws, ErrorCode::InvalidRoom, message, None).await;
        }
        let hub = self.hub.clone();
        // An unknown or expired resume token makes an ordinary join: the welcome says
        // `resumed: false` and carries a new id.
        if let Some(member) =
            resume.and_then(|resume| hub.resume(room, resume, self.id, self.waker.clone()))
        {
            self.joined(member);
            return None;
        }
        if let Some(secret) = &hub.config.secret {
            let Some(token) = token else {
                let message = "this server needs a room token".into();
                return self
                    .refuse(ws, ErrorCode::TokenRequired, message, None)
                    .await;
            };
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if let Err(e) = token::verify(secret, token, room, now) {
                let code = match e {
                    TokenError::Invalid => ErrorCode::TokenInvalid,
                    TokenError::Expired => ErrorCode::TokenExpired,
                    TokenError::WrongRoom => ErrorCode::TokenWrongRoom,
                };
                return self.refuse(ws, code, e.to_string().into(), None).await;
            }
        }
        match hub.join(room, self.id, self.waker.clone()) {
            Ok(member) => {
                self.joined(member);
                None
            }
            Err(JoinError::RoomFull) => {
                let message = format!("the room has {} peers", hub.config.max_room_size);
                self.refuse(ws, ErrorCode::RoomFull, message.into(), None)
                    .await
            }
        }
    }

    /// Answers a refused frame with an `error` frame, or closes a client that keeps sending them.
    async fn refuse(
        &mut self,
        ws: &mut WebSocket,
        code: ErrorCode,
        message: Cow<'_, str>,
        peer: Option<String>,
    ) -> Option<End> {
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
        self.send(ws, &error).await
    }

    /// Sends a reply (an error, a pong) to this client: through its queue once it has joined, so
    /// replies keep their place after the welcome and the frames queued before them.
    async fn send(&mut self, ws: &mut WebSocket, message: &ServerMessage<'_>) -> Option<End> {
        let text = Utf8Bytes::from(message.to_json());
        if let Some(member) = &self.member {
            return match member.outbox.push(text) {
                Ok(()) => None,
                Err(_) => Some(End::Close(CloseCode::SlowConsumer)),
            };
        }
        let send = ws.send(Message::Text(text));
        match tokio::time::timeout(self.hub.config.ping_timeout, send).await {
            Ok(Ok(())) => None,
            Ok(Err(_)) => Some(End::Dropped),
            // The client stopped reading long ago.
            Err(_) => Some(End::Close(CloseCode::SlowConsumer)),
        }
    }

    /// Settles the room slot and says goodbye.
    async fn finish(&mut self, ws: &mut WebSocket, end: End) {
        let hub = self.hub.clone();
        if let Some(member) = &self.member {
            match end {
                End::Dropped | End::Close(CloseCode::KeepaliveTimeout) => hub.park(member),
                End::Close(CloseCode::GoingAway) => {}
                End::ClientClosed | End::Close(_) => hub.leave(member),
            }
        }
        let End::Close(code) = end else { return };
        hub.metrics.close(code);
        tracing::debug!(
            connection = self.id,
            code = code.code(),
            reason = code.reason(),
            "closing"
        );
        let close = Message::Close(Some(CloseFrame {
            code: code.code(),
            reason: Utf8Bytes::from_static(code.reason()),
        }));
        // What is already queued for a client that is still reading (its last error frame, the
        // signals before a leave or a shutdown) goes out before the close.
        let readable = matches!(
            code,
            CloseCode::Normal
                | CloseCode::GoingAway
                | CloseCode::PolicyViolation
                | CloseCode::MessageTooBig
        );
        if let (true, Some(member)) = (readable, &self.member) {
            // Closed or replaced queues leave the batch empty: nothing to send then.
            let _ = member.outbox.take(self.id, &mut self.batch);
        }
        let batch = std::mem::take(&mut self.batch);
        // A client that stopped reading must not hold the task: the close is best effort.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            for frame in batch {
                ws.feed(Message::Text(frame)).await?;
            }
            ws.send(close).await?;
            // Wait for the client's close frame, so the TCP connection ends cleanly.
            while let Some(Ok(_)) = ws.recv().await {}
            Ok::<(), axum::Error>(())
        })
        .await;
    }
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

fn end_of_error(error: axum::Error) -> End {
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => End::Close(CloseCode::MessageTooBig),
        _ => End::Dropped,
    }
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
