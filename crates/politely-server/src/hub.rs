//! Rooms, peers and their send queues.
//!
//! Locks are taken in one order, hub → room → outbox, and never across an `.await`. The relay
//! path takes only the sender's room lock and the target's outbox lock; the hub lock is for
//! joining and removing peers.

use crate::cluster::Cluster;
use crate::config::Config;
use crate::id::{self as ids, IdGenerator, fill_random};
use crate::metrics::Metrics;
use crate::resume::{self, Claims, Tag};
use crate::websocket::{self, Opcode, Shared};
use bytes::Bytes;
use politely_proto::{CloseCode, IceServer, PeerInfo, ServerMessage, User};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The server's shared state.
pub(crate) struct Hub {
    pub(crate) config: Config,
    pub(crate) metrics: Arc<Metrics>,
    /// Cancelled when the server shuts down: every connection closes with 1001.
    pub(crate) shutdown: CancellationToken,
    /// Every connection task and grace timer, so shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
    state: Mutex<HubState>,
    next_connection: AtomicU64,
    /// The key of resume tokens ([`Config::resume_secret`], or random).
    resume_key: Vec<u8>,
    /// When this hub started, in milliseconds since the Unix epoch: a resume token issued
    /// earlier comes from a server that ran before (a restart) or elsewhere.
    started_ms: u64,
    /// Open TCP connections, in total and by client address.
    open: Mutex<OpenConnections>,
    /// The other nodes, through Redis ([`Config::redis`]); rooms are then kept there.
    pub(crate) cluster: Option<Arc<Cluster>>,
    /// Connections echo data messages instead of reading them as signaling (the WebSocket
    /// conformance cases).
    #[cfg(test)]
    pub(crate) echo: bool,
}

struct HubState {
    rooms: HashMap<Arc<str>, Arc<Room>>,
    ids: IdGenerator,
}

#[derive(Default)]
struct OpenConnections {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Why a TCP connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The server holds `max_connections` already.
    Total,
    /// The client's address holds `max_connections_per_address` already.
    Address,
}

/// A TCP connection's place within the connection limits, given back when dropped.
pub(crate) struct Admission {
    hub: Arc<Hub>,
    /// The client's address as the limits count it (IPv4-mapped addresses as IPv4).
    address: IpAddr,
    /// The client's address and port.
    pub(crate) peer: SocketAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut open = self.hub.lock_open();
        open.total -= 1;
        if let Some(n) = open.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                open.by_address.remove(&self.address);
            }
        }
    }
}

pub(crate) struct Room {
    name: Arc<str>,
    /// By id, so a `welcome` lists peers in id order for free.
    peers: Mutex<BTreeMap<Arc<str>, Slot>>,
}

/// A peer's place in its room, which outlives a dropped connection for the grace period.
struct Slot {
    outbox: Arc<Outbox>,
    /// The tag of the last resume token the peer was given; `None` for a place kept after a
    /// restart for a peer that has not resumed yet.
    resume_tag: Option<Tag>,
    /// The connection that owns the slot; a stale connection's leave or park is ignored.
    connection: u64,
    /// The connection dropped; the slot waits for a resume until its grace period ends.
    parked: bool,
    /// Who the peer is, from its room token.
    user: Option<User>,
    /// The peer is the room's SFU.
    sfu: bool,
    /// How many text frames its connections took from it since its `welcome`, counted up to
    /// its last signal that reached the room (a resumed `welcome` says so, and the client
    /// sends what came after again).
    taken: u64,
}

/// What a connection holds once it has joined.
#[derive(Clone)]
pub(crate) struct Membership {
    pub(crate) room: Arc<Room>,
    pub(crate) id: Arc<str>,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) connection: u64,
    /// The text frames taken from the peer under its id before this connection: where the
    /// connection's count starts.
    pub(crate) taken: u64,
}

/// Frames on their way to a socket, as the bytes that go on it: WebSocket frames encoded as
/// they are queued, except that large relayed payloads stay in the sender's read buffer and
/// are spliced in when written (one copy fewer, by the kernel straight from where they arrived).
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) encoded: Vec<u8>,
    /// Shared payloads, in order, each with the offset in `encoded` it goes before.
    pub(crate) shared: Vec<(usize, Bytes)>,
    /// The memory the shared payloads keep alive (counting a buffer once per payload from it).
    holds: usize,
}

/// The most memory one batch keeps alive through shared payloads; later payloads are copied.
/// A shared payload keeps its whole read buffer alive, however small the payload, so this, not
/// the queue's byte limit, bounds what a peer that backs up (one that stopped reading, or one
/// waiting for a resume) holds beyond the bytes it counts: twice this at most, its queue's batch
/// and the batch being written.
const MAX_HELD: usize = 512 * 1024;

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.encoded.is_empty() && self.shared.is_empty()
    }

    /// Empties the batch, keeping its memory (and releasing the shared payloads).
    pub(crate) fn clear(&mut self) {
        self.encoded.clear();
        self.shared.clear();
        self.holds = 0;
    }

    /// Gives back the memory of a burst, if the batch is empty and holds more than `keep`
    /// bytes of buffer.
    pub(crate) fn shrink(&mut self, keep: usize) {
        let list = self.shared.capacity() * std::mem::size_of::<(usize, Bytes)>();
        if self.is_empty() && self.encoded.capacity() + list > keep {
            *self = Batch::default();
        }
    }

    /// The batch's bytes in order, for one vectored write.
    pub(crate) fn slices(&self) -> Vec<IoSlice<'_>> {
        let mut slices = Vec::with_capacity(2 * self.shared.len() + 1);
        let mut at = 0;
        for (offset, payload) in &self.shared {
            if *offset > at {
                slices.push(IoSlice::new(&self.encoded[at..*offset]));
            }
            slices.push(IoSlice::new(payload));
            at = *offset;
        }
        if self.encoded.len() > at {
            slices.push(IoSlice::new(&self.encoded[at..]));
        }
        slices
    }
}

/// A peer's bounded queue of frames to send. It belongs to the slot, not to a connection, so
/// frames addressed to a peer within its grace period wait here for the resume.
///
/// Besides its own limits, every queue draws on the server's budget for queued frames
/// (`Config::max_queued_bytes`), for the memory they can take (see `Outbox::admit`): it
/// reserves credit in steps, so the shared counter is touched once per step or batch rather
/// than once per frame, and gives it all back when its frames are taken or it closes.
pub(crate) struct Outbox {
    inner: Mutex<OutboxInner>,
    max_frames: usize,
    max_bytes: usize,
    budget: usize,
    metrics: Arc<Metrics>,
}

/// The budget credit a queue reserves at once.
const CREDIT_STEP: usize = 64 * 1024;

struct OutboxInner {
    batch: Batch,
    /// How many frames `batch` holds, and their payload bytes (what the limits count).
    frames: usize,
    bytes: usize,
    /// The connection currently attached, and how to wake it.
    owner: u64,
    waker: Arc<Notify>,
    closed: Option<CloseCode>,
    /// Bytes reserved from the server's budget; at least `bytes`.
    credit: usize,
}

/// What [`Outbox::take`] found.
pub(crate) enum Take {
    /// Frames were moved into the caller's buffer (perhaps none).
    Frames,
    /// The peer was removed (a slow consumer); close with this code.
    Closed(CloseCode),
    /// Another connection resumed this peer.
    Replaced,
}

/// A push that did not fit: the queue is full and its peer must go.
pub(crate) struct Overflow;

impl Outbox {
    pub(crate) fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        owner: u64,
        waker: Arc<Notify>,
    ) -> Self {
        Outbox {
            inner: Mutex::new(OutboxInner {
                batch: Batch::default(),
                frames: 0,
                bytes: 0,
                owner,
                waker,
                closed: None,
                credit: 0,
            }),
            max_frames: config.send_queue_frames,
            max_bytes: config.send_queue_bytes,
            budget: config.max_queued_bytes,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutboxInner> {
        // A panic while holding the lock cannot leave the queue inconsistent (every update is
        // a single push or swap), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The locked queue, if it takes a frame of `len` payload bytes, and whether a payload
    /// that can be shared (keeping a read buffer of `shared` bytes alive) is; `None` if the
    /// queue is closed (the frame is dropped quietly: its peer is gone).
    ///
    /// The budget is drawn for the memory the queue can come to with the frame, not only its
    /// bytes: its encoded bytes twice over (the buffer grows by doubling) and the read buffers
    /// its shared payloads keep alive.
    fn admit(
        &self,
        len: usize,
        shared: Option<usize>,
    ) -> Result<Option<(MutexGuard<'_, OutboxInner>, bool)>, Overflow> {
        let mut inner = self.lock();
        if inner.closed.is_some() {
            return Ok(None);
        }
        if inner.frames >= self.max_frames || inner.bytes + len > self.max_bytes {
            return Err(Overflow);
        }
        let share = shared.is_some_and(|holds| inner.batch.holds + holds <= MAX_HELD);
        let holds = inner.batch.holds + if share { shared.unwrap_or(0) } else { 0 };
        let footprint = 2 * (inner.bytes + len) + holds;
        if footprint > inner.credit {
            let need = footprint - inner.credit;
            let Some(grant) = self.reserve(need.max(CREDIT_STEP), need) else {
                self.metrics.queue_budget_refused.fetch_add(1, Relaxed);
                return Err(Overflow);
            };
            inner.credit += grant;
        }
        Ok(Some((inner, share)))
    }

    /// Reserves `want` bytes of the server's budget, or at least `need`; `None` if even that
    /// does not fit.
    fn reserve(&self, want: usize, need: usize) -> Option<usize> {
        let queued = &self.metrics.queued_bytes;
        for grant in [want, need] {
            let before = queued.fetch_add(grant, Relaxed);
            if before + grant <= self.budget {
                return Some(grant);
            }
            queued.fetch_sub(grant, Relaxed);
        }
        None
    }

    /// Queues one text frame made of `parts` end to end.
    pub(crate) fn push<const N: usize>(&self, parts: [&[u8]; N]) -> Result<(), Overflow> {
        let len = parts.iter().map(|part| part.len()).sum::<usize>();
        let Some((mut inner, _)) = self.admit(len, None)? else {
            return Ok(());
        };
        let encoded = &mut inner.batch.encoded;
        websocket::write_header(encoded, Opcode::Text, len, None);
        for part in parts {
            encoded.extend_from_slice(part);
        }
        inner.queued(len);
        Ok(())
    }

    /// Queues a relayed frame: `prefix`, `payload`, `suffix`. With `shared` (the payload's own
    /// bytes, kept from the read) the payload is not copied, while the batch can hold more.
    pub(crate) fn push_relayed(
        &self,
        [prefix, payload, suffix]: [&[u8]; 3],
        shared: Option<Shared>,
    ) -> Result<(), Overflow> {
        let Some(shared) = shared else {
            return self.push([prefix, payload, suffix]);
        };
        let len = prefix.len() + payload.len() + suffix.len();
        let Some((mut inner, share)) = self.admit(len, Some(shared.holds))? else {
            return Ok(());
        };
        let batch = &mut inner.batch;
        websocket::write_header(&mut batch.encoded, Opcode::Text, len, None);
        batch.encoded.extend_from_slice(prefix);
        if share {
            batch.holds += shared.holds;
            batch.shared.push((batch.encoded.len(), shared.bytes));
        } else {
            batch.encoded.extend_from_slice(payload);
        }
        batch.encoded.extend_from_slice(suffix);
        inner.queued(len);
        Ok(())
    }

    /// Moves every queued frame into `out` (empty on entry), if `connection` still owns the
    /// queue.
    pub(crate) fn take(&self, connection: u64, out: &mut Batch) -> Take {
        let mut inner = self.lock();
        if let Some(code) = inner.closed {
            return Take::Closed(code);
        }
        if inner.owner != connection {
            return Take::Replaced;
        }
        std::mem::swap(&mut inner.batch, out);
        inner.frames = 0;
        inner.bytes = 0;
        self.release(&mut inner);
        Take::Frames
    }

    /// Gives the queue's budget credit back.
    fn release(&self, inner: &mut OutboxInner) {
        if inner.credit > 0 {
            self.metrics.queued_bytes.fetch_sub(inner.credit, Relaxed);
            inner.credit = 0;
        }
    }

    /// Gives back the memory of a burst (called by an idle connection): an empty queue keeps at
    /// most `keep` bytes of buffer.
    pub(crate) fn shrink(&self, keep: usize) {
        self.lock().batch.shrink(keep);
    }

    /// Whether `connection` still owns the queue, without taking anything.
    pub(crate) fn state(&self, connection: u64) -> Take {
        let inner = self.lock();
        match inner.closed {
            Some(code) => Take::Closed(code),
            None if inner.owner != connection => Take::Replaced,
            None => Take::Frames,
        }
    }

    /// Puts `welcome` before every frame queued, and attaches `connection` (waking the one
    /// it replaces, if any, so it closes with 4001).
    pub(crate) fn welcome_first(&self, welcome: &str, connection: u64, waker: Arc<Notify>) {
        let mut inner = self.lock();
        let batch = &mut inner.batch;
        let mut encoded = Vec::with_capacity(welcome.len() + 4 + batch.encoded.len());
        websocket::write_frame(&mut encoded, Opcode::Text, welcome.as_bytes());
        let welcome_len = encoded.len();
        encoded.extend_from_slice(&batch.encoded);
        batch.encoded = encoded;
        for (offset, _) in &mut batch.shared {
            *offset += welcome_len;
        }
        inner.frames += 1;
        inner.bytes += welcome.len();
        inner.owner = connection;
        inner.waker.notify_one();
        inner.waker = waker;
        inner.waker.notify_one();
    }

    /// Drops every frame queued (a resume replays them from elsewhere).
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.batch = Batch::default();
        inner.frames = 0;
        inner.bytes = 0;
        self.release(&mut inner);
    }

    /// Ends the queue: its connection closes with `code`.
    pub(crate) fn close(&self, code: CloseCode) {
        let mut inner = self.lock();
        inner.closed = Some(code);
        inner.batch = Batch::default();
        inner.frames = 0;
        inner.bytes = 0;
        self.release(&mut inner);
        inner.waker.notify_one();
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // A peer removed with frames still queued (its grace period ended, say).
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        if inner.credit > 0 {
            self.metrics.queued_bytes.fetch_sub(inner.credit, Relaxed);
        }
    }
}

impl OutboxInner {
    /// Counts a frame just queued, of `len` payload bytes.
    fn queued(&mut self, len: usize) {
        self.frames += 1;
        self.bytes += len;
        // The connection takes everything at once, so only the first frame after a take needs
        // to wake it.
        if self.frames == 1 {
            self.waker.notify_one();
        }
    }
}

impl Room {
    /// A room known by name only: a cluster node keeps its rooms in Redis.
    pub(crate) fn detached(name: Arc<str>) -> Arc<Room> {
        Arc::new(Room {
            name,
            peers: Mutex::new(BTreeMap::new()),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Arc<str>, Slot>> {
        // Every update of the map is a single insert, remove or field store.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a join was refused.
pub(crate) enum JoinError {
    RoomFull,
    /// The join asked for the SFU role and the room has an SFU.
    SfuTaken,
}

/// Whether a peer is polite toward another: toward the room's SFU always, as the SFU never is;
/// otherwise the lower id is polite.
pub(crate) fn polite(me: &str, me_sfu: bool, other: &str, other_sfu: bool) -> bool {
    match (me_sfu, other_sfu) {
        (false, true) => true,
        (true, false) => false,
        _ => me < other,
    }
}

/// The result of relaying a frame.
pub(crate) enum Relay {
    Sent,
    UnknownPeer,
    /// The target's queue was full: the frame was dropped and the target disconnected (the
    /// sender sees `peer-left`).
    TargetEvicted,
    /// The sender's id is no longer this connection's (it resumed on another).
    Gone,
}

/// The `welcome` for `id`, listing the room's other peers in id order.
fn welcome(
    config: &Config,
    id: &Arc<str>,
    sfu: bool,
    room: &str,
    peers: &BTreeMap<Arc<str>, Slot>,
    resume: &str,
    (resumed, taken): (bool, Option<u64>),
) -> String {
    let (ice_servers, ice_ttl) = ice_servers(config, id);
    ServerMessage::Welcome {
        id: Cow::Borrowed(id),
        room: Cow::Borrowed(room),
        peers: peers
            .iter()
            .filter(|(peer, _)| *peer != id)
            .map(|(peer, slot)| PeerInfo {
                id: Cow::Borrowed(peer),
                polite: polite(id, sfu, peer, slot.sfu),
                sfu: slot.sfu,
                user: slot.user.clone(),
            })
            .collect(),
        resume: resume.into(),
        resumed,
        taken,
        version: politely_proto::VERSION,
        ice_servers,
        ice_ttl,
    }
    .to_json()
}

/// The ICE servers for `id` and how long their credentials last (none without
/// [`Config::turn`]).
pub(crate) fn ice_servers(config: &Config, id: &str) -> (Vec<IceServer>, Option<u64>) {
    match &config.turn {
        Some(turn) => (
            turn.ice_servers(id, std::time::SystemTime::now()),
            Some(turn.ttl.as_secs()),
        ),
        None => (Vec::new(), None),
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Hub {
    pub(crate) fn new(config: Config) -> Self {
        let resume_key = match &config.resume_secret {
            Some(secret) => secret.as_bytes().to_vec(),
            None => {
                let mut key = vec![0u8; 32];
                fill_random(&mut key);
                key
            }
        };
        Hub::with(config, resume_key, None)
    }

    /// A node of a cluster, with the resume key the nodes share.
    pub(crate) fn clustered(config: Config, resume_key: Vec<u8>, cluster: Arc<Cluster>) -> Self {
        Hub::with(config, resume_key, Some(cluster))
    }

    fn with(config: Config, resume_key: Vec<u8>, cluster: Option<Arc<Cluster>>) -> Self {
        Hub {
            config,
            metrics: Arc::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            state: Mutex::new(HubState {
                rooms: HashMap::new(),
                ids: IdGenerator::new(),
            }),
            next_connection: AtomicU64::new(1),
            resume_key,
            started_ms: now_ms(),
            open: Mutex::default(),
            cluster,
            #[cfg(test)]
            echo: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // Every update of the state is a single insert, remove or counter step.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_open(&self) -> MutexGuard<'_, OpenConnections> {
        // Every update is a counter step.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new TCP connection from `address` against the connection limits.
    pub(crate) fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<Admission, Refused> {
        let address = peer.ip().to_canonical();
        let mut open = self.lock_open();
        if open.total >= self.config.max_connections {
            return Err(Refused::Total);
        }
        let n = open.by_address.entry(address).or_insert(0);
        if *n >= self.config.max_connections_per_address {
            return Err(Refused::Address);
        }
        *n += 1;
        open.total += 1;
        Ok(Admission {
            hub: self.clone(),
            address,
            peer,
        })
    }

    /// The key of resume tokens.
    pub(crate) fn resume_key(&self) -> &[u8] {
        &self.resume_key
    }

    /// A number for a new connection, unique for the server's life.
    pub(crate) fn next_connection(&self) -> u64 {
        self.next_connection.fetch_add(1, Relaxed)
    }

    /// Adds a new peer to `room` (creating the room), queues its `welcome` and tells the others.
    pub(crate) fn join(
        &self,
        room_name: &str,
        connection: u64,
        waker: Arc<Notify>,
        user: Option<User>,
        sfu: bool,
    ) -> Result<Membership, JoinError> {
        let mut overflowed = Vec::new();
        let membership = {
            let mut state = self.lock();
            let room = self.room(&mut state, room_name);
            let mut peers = room.lock();
            let refused = if peers.len() >= self.config.max_room_size {
                Some(JoinError::RoomFull)
            } else if sfu && peers.values().any(|slot| slot.sfu) {
                Some(JoinError::SfuTaken)
            } else {
                None
            };
            if let Some(refused) = refused {
                let empty = peers.is_empty();
                drop(peers);
                if empty {
                    state.rooms.remove(room_name);
                    self.metrics.rooms.fetch_sub(1, Relaxed);
                }
                return Err(refused);
            }
            let id: Arc<str> = state.ids.next().into();
            let (resume, resume_tag) = self.issue(room_name, &id, sfu, user.clone());
            let outbox = Arc::new(Outbox::new(
                &self.config,
                self.metrics.clone(),
                connection,
                waker,
            ));
            let welcome = welcome(
                &self.config,
                &id,
                sfu,
                room_name,
                &peers,
                &resume,
                (false, None),
            );
            // The welcome is queued before anyone can learn the new id, so it comes first.
            let _ = outbox.push([welcome.as_bytes()]);
            self.announce(peers.iter(), &id, sfu, user.clone(), &mut overflowed);
            peers.insert(
                id.clone(),
                Slot {
                    outbox: outbox.clone(),
                    resume_tag: Some(resume_tag),
                    connection,
                    parked: false,
                    user,
                    sfu,
                    taken: 0,
                },
            );
            self.metrics.peers.fetch_add(1, Relaxed);
            drop(peers);
            Membership {
                room,
                id,
                outbox,
                connection,
                taken: 0,
            }
        };
        tracing::debug!(room = %room_name, id = %membership.id, "joined");
        for peer in overflowed {
            self.evict(&membership.room, &peer);
        }
        Ok(membership)
    }

    /// A resume token for `id` in `room`, and its tag.
    pub(crate) fn issue(
        &self,
        room: &str,
        id: &str,
        sfu: bool,
        user: Option<User>,
    ) -> (String, Tag) {
        let mut nonce = [0u8; 8];
        fill_random(&mut nonce);
        let claims = Claims {
            room: room.to_owned(),
            id: id.to_owned(),
            iat: now_ms(),
            n: u64::from_le_bytes(nonce),
            sfu,
            user,
        };
        resume::issue(&self.resume_key, &claims)
    }

    /// The room named `name`, made if it does not exist.
    fn room(&self, state: &mut HubState, name: &str) -> Arc<Room> {
        if let Some(room) = state.rooms.get(name) {
            return room.clone();
        }
        let name: Arc<str> = name.into();
        let room = Arc::new(Room {
            name: name.clone(),
            peers: Mutex::new(BTreeMap::new()),
        });
        state.rooms.insert(name, room.clone());
        self.metrics.rooms.fetch_add(1, Relaxed);
        room
    }

    /// Gives `connection` the id of an earlier one whose `resume` token it holds, if that id is
    /// still in `room`. The new `welcome` goes before the frames queued meanwhile.
    ///
    /// A token this server did not issue (it was restarted since, or the token comes from
    /// another server with the same key) and not older than [`Config::resume_max_age`] gets
    /// its id back even though the room no longer holds it, and `claimed`, the peers the
    /// client says it is connected with, get places kept for them for the grace period (each
    /// is announced to the room, and leaves as usual if it does not resume in time).
    pub(crate) fn resume(
        self: &Arc<Self>,
        room_name: &str,
        token: &str,
        connection: u64,
        waker: Arc<Notify>,
        claimed: &[Cow<'_, str>],
    ) -> Option<Membership> {
        let (claims, tag) = resume::verify(&self.resume_key, token)?;
        if claims.room != room_name {
            return None;
        }
        let max_age = u64::try_from(self.config.resume_max_age.as_millis()).unwrap_or(u64::MAX);
        let foreign =
            claims.iat < self.started_ms && now_ms().saturating_sub(claims.iat) <= max_age;
        let mut overflowed = Vec::new();
        let mut kept = Vec::new();
        let mut state = self.lock();
        let room = match state.rooms.get(room_name) {
            Some(room) => room.clone(),
            None if foreign => self.room(&mut state, room_name),
            None => return None,
        };
        let mut peers = room.lock();
        let id = match peers.get_key_value(claims.id.as_str()) {
            Some((id, slot)) => {
                let current = match &slot.resume_tag {
                    Some(last) => resume::constant_time_eq(last, &tag),
                    None => foreign,
                };
                if !current {
                    return None;
                }
                let id = id.clone();
                if slot.resume_tag.is_none() && (slot.sfu, &slot.user) != (claims.sfu, &claims.user)
                {
                    // A place kept for this peer by another's resume was announced without its
                    // role and user; the token has them. The others hear it again, rightly.
                    let slot = peers.get_mut(&id).expect("the slot found above");
                    slot.sfu = claims.sfu;
                    slot.user = claims.user.clone();
                    let others = peers.iter().filter(|(peer, _)| **peer != id);
                    self.announce(
                        others,
                        &id,
                        claims.sfu,
                        claims.user.clone(),
                        &mut overflowed,
                    );
                }
                id
            }
            None => {
                let fits = peers.len() < self.config.max_room_size
                    && !(claims.sfu && peers.values().any(|slot| slot.sfu));
                if !foreign || !fits {
                    if peers.is_empty() {
                        drop(peers);
                        state.rooms.remove(room_name);
                        self.metrics.rooms.fetch_sub(1, Relaxed);
                    }
                    return None;
                }
                let id: Arc<str> = claims.id.as_str().into();
                let outbox = Arc::new(Outbox::new(
                    &self.config,
                    self.metrics.clone(),
                    connection,
                    waker.clone(),
                ));
                self.announce(
                    peers.iter(),
                    &id,
                    claims.sfu,
                    claims.user.clone(),
                    &mut overflowed,
                );
                peers.insert(
                    id.clone(),
                    Slot {
                        outbox,
                        resume_tag: None,
                        connection,
                        parked: false,
                        user: claims.user.clone(),
                        sfu: claims.sfu,
                        taken: 0,
                    },
                );
                self.metrics.peers.fetch_add(1, Relaxed);
                id
            }
        };
        if foreign {
            for other in claimed {
                if peers.len() >= self.config.max_room_size {
                    break;
                }
                if !ids::is_valid(other) || peers.contains_key(&**other) {
                    continue;
                }
                let other: Arc<str> = (&**other).into();
                let place = self.next_connection.fetch_add(1, Relaxed);
                // Not to the peer resuming: its welcome lists the place.
                let others = peers.iter().filter(|(peer, _)| **peer != id);
                self.announce(others, &other, false, None, &mut overflowed);
                let outbox = Outbox::new(
                    &self.config,
                    self.metrics.clone(),
                    place,
                    Arc::new(Notify::new()),
                );
                peers.insert(
                    other.clone(),
                    Slot {
                        outbox: Arc::new(outbox),
                        resume_tag: None,
                        connection: place,
                        parked: true,
                        user: None,
                        sfu: false,
                        taken: 0,
                    },
                );
                self.metrics.peers.fetch_add(1, Relaxed);
                kept.push((other, place));
            }
        }
        drop(state);
        let slot = &peers[&id];
        let (sfu, user) = (slot.sfu, slot.user.clone());
        // What this server took from it, unless its place is new here (what it sent before
        // went to a server that is gone).
        let taken = slot.resume_tag.is_some().then_some(slot.taken);
        let (token, tag) = self.issue(room_name, &id, sfu, user);
        let welcome = welcome(
            &self.config,
            &id,
            sfu,
            room_name,
            &peers,
            &token,
            (true, taken),
        );
        // The lookup above found the slot and nothing released the lock since.
        let slot = peers.get_mut(&id).expect("the slot found above");
        slot.resume_tag = Some(tag);
        slot.connection = connection;
        slot.parked = false;
        let outbox = slot.outbox.clone();
        outbox.welcome_first(&welcome, connection, waker);
        drop(peers);
        self.metrics.resumes.fetch_add(1, Relaxed);
        tracing::debug!(room = %room_name, %id, kept = kept.len(), "resumed");
        for (other, place) in kept {
            self.expire_after_grace(room.clone(), other, place);
        }
        for peer in overflowed {
            self.evict(&room, &peer);
        }
        Some(Membership {
            room,
            id,
            outbox,
            connection,
            taken: taken.unwrap_or(0),
        })
    }

    /// Queues `peer-joined` for `id` to each of `peers` (but places kept after a restart);
    /// those whose queue overflowed go in `overflowed`.
    fn announce<'p>(
        &self,
        peers: impl IntoIterator<Item = (&'p Arc<str>, &'p Slot)>,
        id: &Arc<str>,
        sfu: bool,
        user: Option<User>,
        overflowed: &mut Vec<Arc<str>>,
    ) {
        // A place kept after a restart is left out: its welcome will list the room as it is.
        for (peer, slot) in peers
            .into_iter()
            .filter(|(_, slot)| slot.resume_tag.is_some())
        {
            let joined = ServerMessage::PeerJoined {
                id: Cow::Borrowed(id),
                polite: polite(peer, slot.sfu, id, sfu),
                sfu,
                user: user.clone(),
            };
            if slot.outbox.push([joined.to_json().as_bytes()]).is_err() {
                overflowed.push(peer.clone());
            }
        }
    }

    /// Relays a frame made of `parts` to `to`, another peer of the sender's room; `shared` is
    /// the middle part kept from its read, if it was large enough to share. `from`'s
    /// connection has taken `taken` text frames from it under its id (this one included).
    pub(crate) fn relay(
        &self,
        from: &Membership,
        to: &str,
        parts: [&[u8]; 3],
        shared: Option<Shared>,
        taken: u64,
    ) -> Relay {
        let overflowed = {
            let mut peers = from.room.lock();
            // Only the connection that has the id speaks for it; it counts what it took.
            match peers.get_mut(&*from.id) {
                Some(slot) if slot.connection == from.connection => {
                    slot.taken = slot.taken.max(taken);
                }
                _ => return Relay::Gone,
            }
            if to == &*from.id {
                return Relay::UnknownPeer;
            }
            let Some((peer, slot)) = peers.get_key_value(to) else {
                return Relay::UnknownPeer;
            };
            match slot.outbox.push_relayed(parts, shared) {
                Ok(()) => None,
                Err(Overflow) => Some(peer.clone()),
            }
        };
        match overflowed {
            None => Relay::Sent,
            Some(peer) => {
                self.evict(&from.room, &peer);
                self.metrics.queue_dropped_frames.fetch_add(1, Relaxed);
                Relay::TargetEvicted
            }
        }
    }

    /// The peer left for good (`leave`, a close frame, abuse): others see `peer-left` now.
    pub(crate) fn leave(&self, member: &Membership) {
        self.remove(&member.room, &member.id, |slot| {
            slot.connection == member.connection
        });
    }

    /// The connection dropped: keep the slot for the grace period, then remove it unless the
    /// peer resumed.
    pub(crate) fn park(self: &Arc<Self>, member: &Membership) {
        {
            let mut peers = member.room.lock();
            match peers.get_mut(&member.id) {
                Some(slot) if slot.connection == member.connection => slot.parked = true,
                _ => return,
            }
        }
        self.expire_after_grace(member.room.clone(), member.id.clone(), member.connection);
    }

    /// Removes `id`'s place when the grace period is over, unless a connection other than
    /// `connection` has it by then.
    fn expire_after_grace(self: &Arc<Self>, room: Arc<Room>, id: Arc<str>, connection: u64) {
        let hub = self.clone();
        let grace = self.config.resume_grace;
        self.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                _ = hub.shutdown.cancelled() => return,
            }
            let expired = hub.remove(&room, &id, |slot| {
                slot.parked && slot.connection == connection
            });
            if expired {
                hub.metrics.grace_expired.fetch_add(1, Relaxed);
            }
        });
    }

    /// Removes a peer whose queue overflowed, and closes its connection with 4002.
    fn evict(&self, room: &Arc<Room>, id: &Arc<str>) {
        let evicted = self.remove(room, id, |slot| {
            // Closed before the others are told, so the budget its queue held is free for
            // their `peer-left`.
            slot.outbox.close(CloseCode::SlowConsumer);
            true
        });
        if evicted {
            tracing::debug!(room = %room.name, %id, "slow consumer disconnected");
        }
    }

    /// Removes `id` from `room` if `should` agrees, tells the others, and drops the room when it
    /// empties. Returns whether it removed the peer.
    fn remove(&self, room: &Arc<Room>, id: &Arc<str>, should: impl FnOnce(&Slot) -> bool) -> bool {
        let mut overflowed = Vec::new();
        {
            let mut state = self.lock();
            let mut peers = room.lock();
            match peers.get(id) {
                Some(slot) if should(slot) => {}
                _ => return false,
            }
            peers.remove(id);
            self.metrics.peers.fetch_sub(1, Relaxed);
            let left = ServerMessage::PeerLeft {
                id: Cow::Borrowed(id),
            }
            .to_json();
            for (peer, slot) in peers.iter().filter(|(_, slot)| slot.resume_tag.is_some()) {
                if slot.outbox.push([left.as_bytes()]).is_err() {
                    overflowed.push(peer.clone());
                }
            }
            // The hub's entry may already be a newer room of the same name.
            if peers.is_empty()
                && state
                    .rooms
                    .get(&room.name)
                    .is_some_and(|r| Arc::ptr_eq(r, room))
            {
                state.rooms.remove(&room.name);
                self.metrics.rooms.fetch_sub(1, Relaxed);
            }
        }
        tracing::debug!(room = %room.name, %id, "left");
        for peer in overflowed {
            self.evict(room, &peer);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_payloads_keep_at_most_half_a_mebibyte_alive_and_later_ones_are_copied() {
        let outbox = Outbox::new(
            &Config::default(),
            Arc::default(),
            1,
            Arc::new(Notify::new()),
        );
        let payload = Bytes::from(vec![b'7'; 2000]);
        // Each payload keeps a 150 KiB read buffer alive: three fit in the budget.
        for _ in 0..10 {
            let shared = Shared {
                bytes: payload.clone(),
                holds: 150 * 1024,
            };
            let pushed = outbox.push_relayed([b"[", &payload, b"]"], Some(shared));
            assert!(pushed.is_ok());
        }
        let mut batch = Batch::default();
        assert!(matches!(outbox.take(1, &mut batch), Take::Frames));
        assert_eq!(batch.shared.len(), 3);
        // Shared or copied, the same ten frames go on the wire.
        let wire: Vec<u8> = batch.slices().iter().flat_map(|s| s.to_vec()).collect();
        let mut expected = Vec::new();
        for _ in 0..10 {
            websocket::write_frame(
                &mut expected,
                Opcode::Text,
                &[b"[", &payload[..], b"]"].concat(),
            );
        }
        assert_eq!(wire, expected);
        // Taking the batch gives the queue a fresh budget.
        let shared = Shared {
            bytes: payload.clone(),
            holds: 150 * 1024,
        };
        assert!(
            outbox
                .push_relayed([b"[", &payload, b"]"], Some(shared))
                .is_ok()
        );
        let mut next = Batch::default();
        assert!(matches!(outbox.take(1, &mut next), Take::Frames));
        assert_eq!(next.shared.len(), 1);
    }
}
