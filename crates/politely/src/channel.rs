//! Data-channel handles.

use crate::driver::Command;
use crate::error::Error;
use bytes::Bytes;
use politely_core::{ChannelId, Origin};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

const CONNECTING: u8 = 0;
const OPEN: u8 = 1;
const CLOSED: u8 = 2;

/// A message received on a data channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The payload.
    pub data: Bytes,
    /// Whether the sender sent it as text (then `data` is UTF-8).
    pub text: bool,
}

impl Message {
    /// The payload as text, if it was sent as text.
    pub fn as_text(&self) -> Option<&str> {
        self.text
            .then(|| std::str::from_utf8(&self.data).ok())
            .flatten()
    }
}

/// What the driver and every handle of one channel share.
pub(crate) struct ChannelShared {
    pub(crate) id: ChannelId,
    pub(crate) label: String,
    pub(crate) origin: Origin,
    state: AtomicU8,
    /// The application called `close`.
    closing: AtomicBool,
    buffered: AtomicUsize,
    high_water: usize,
    /// Woken on every change of state or buffered amount.
    changed: Notify,
    /// With [`Delivery::PerChannel`](crate::Delivery::PerChannel), the channel's messages.
    pub(crate) inbox: Option<Mutex<mpsc::Receiver<Message>>>,
}

impl ChannelShared {
    pub(crate) fn new(
        id: ChannelId,
        label: String,
        origin: Origin,
        high_water: usize,
        inbox: Option<mpsc::Receiver<Message>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            label,
            origin,
            state: AtomicU8::new(CONNECTING),
            closing: AtomicBool::new(false),
            buffered: AtomicUsize::new(0),
            high_water,
            changed: Notify::new(),
            inbox: inbox.map(Mutex::new),
        })
    }

    pub(crate) fn set_open(&self, open: bool) {
        let state = if open { OPEN } else { CONNECTING };
        self.state.store(state, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// The application closed the channel (W3C `closing`, until the driver says `CLOSED`).
    fn set_closing(&self) {
        self.closing.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Closed, or closing at the application's request: sends and waits for opening fail.
    fn refuses_sends(&self) -> bool {
        self.state() == CLOSED || self.closing.load(Ordering::Acquire)
    }

    pub(crate) fn set_closed(&self) {
        self.state.store(CLOSED, Ordering::Release);
        self.changed.notify_waiters();
    }

    pub(crate) fn set_buffered(&self, amount: usize) {
        let old = self.buffered.swap(amount, Ordering::AcqRel);
        if amount < old {
            self.changed.notify_waiters();
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state() == OPEN
    }

    pub(crate) fn is_open_or_connecting(&self) -> bool {
        self.state() != CLOSED
    }

    fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }
}

/// A data channel (W3C `RTCDataChannel`): cheap to clone, usable from any task.
///
/// It survives renegotiation, rollback and the replacement of the peer connection: the engine
/// re-creates a channel the application made on the new connection under the same handle.
/// A channel the application does not need any more is closed with
/// [`close`](Self::close); it also closes when its peer does.
#[derive(Clone)]
pub struct DataChannel {
    pub(crate) shared: Arc<ChannelShared>,
    pub(crate) commands: mpsc::Sender<Command>,
}

impl DataChannel {
    /// The channel's label.
    pub fn label(&self) -> &str {
        &self.shared.label
    }

    /// The engine's id of the channel.
    pub fn id(&self) -> ChannelId {
        self.shared.id
    }

    /// Which side created it.
    pub fn origin(&self) -> Origin {
        self.shared.origin
    }

    /// Whether the channel is open.
    pub fn is_open(&self) -> bool {
        self.shared.state() == OPEN
    }

    /// Whether the channel is closed for good.
    pub fn is_closed(&self) -> bool {
        self.shared.state() == CLOSED
    }

    /// Bytes sent but not yet acknowledged by the peer (W3C `bufferedAmount`), as of the
    /// driver's last pass.
    pub fn buffered_amount(&self) -> usize {
        self.shared.buffered.load(Ordering::Acquire)
    }

    /// Waits until the channel is open; fails if it closes first.
    pub async fn opened(&self) -> Result<(), Error> {
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.shared.refuses_sends() {
                return Err(Error::Closed);
            }
            match self.shared.state() {
                OPEN => return Ok(()),
                _ => changed.await,
            }
        }
    }

    /// Sends a text message. Waits while more than the configured high-water mark is
    /// buffered ([`PeerConfig::send_high_water`](crate::PeerConfig::send_high_water)).
    pub async fn send_text(&self, text: impl Into<String>) -> Result<(), Error> {
        self.send(Bytes::from(text.into()), true).await
    }

    /// Sends a binary message, with the same back-pressure as [`send_text`](Self::send_text).
    pub async fn send_binary(&self, data: impl Into<Bytes>) -> Result<(), Error> {
        self.send(data.into(), false).await
    }

    async fn send(&self, data: Bytes, text: bool) -> Result<(), Error> {
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.shared.refuses_sends() {
                return Err(Error::Closed);
            }
            match self.shared.state() {
                OPEN if self.buffered_amount() <= self.shared.high_water => break,
                _ => changed.await,
            }
        }
        let len = data.len();
        let (reply, result) = oneshot::channel();
        // Counted before the driver sees the message, whose next count replaces this one.
        self.shared.buffered.fetch_add(len, Ordering::AcqRel);
        let sent = self
            .commands
            .send(Command::Send {
                channel: self.shared.id,
                data,
                text,
                reply,
            })
            .await;
        let result = match sent {
            Ok(()) => result.await.unwrap_or(Err(Error::Closed)),
            Err(_) => Err(Error::Closed),
        };
        if result.is_err() {
            let _ = self
                .shared
                .buffered
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                    Some(b.saturating_sub(len))
                });
        }
        result
    }

    /// The next message, with [`Delivery::PerChannel`](crate::Delivery::PerChannel); `None`
    /// once the channel is closed and drained. With the default delivery, messages come as
    /// events instead and this returns `None` at once.
    pub async fn recv(&self) -> Option<Message> {
        let inbox = self.shared.inbox.as_ref()?;
        inbox.lock().await.recv().await
    }

    /// Closes the channel at both ends. Sends fail with [`Error::Closed`] from this call on.
    pub async fn close(&self) {
        // From now on sends fail with `Closed`, as a W3C channel in `closing` throws.
        self.shared.set_closing();
        // A closed driver has closed the channel already.
        let _ = self
            .commands
            .send(Command::CloseChannel(self.shared.id))
            .await;
    }
}

impl fmt::Debug for DataChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataChannel")
            .field("id", &self.shared.id)
            .field("label", &self.shared.label)
            .field("origin", &self.shared.origin)
            .field("open", &self.is_open())
            .finish()
    }
}
