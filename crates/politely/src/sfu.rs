//! An SFU on a politely signaling server: [`politely_sfu::Room`] on tokio.
//!
//! [`Sfu::join`] joins a room as its SFU (`"sfu": true` in the `join`); every client of the
//! room then connects to it alone and is polite toward it. One task owns the room and its
//! engines; each client's connection has its own UDP sockets (gathered like a peer's), read
//! by a small task each that hands datagrams to the room's task.
//!
//! When the signaling connection drops, the room goes on (media and data flow peer to peer)
//! while the task reconnects and resumes its id, holding what it has to send meanwhile; the
//! clients never see the SFU leave.

use crate::config::PeerConfig;
use crate::error::Error;
use crate::session::{Member, Unconfirmed, Welcome, Ws, connect};
use crate::timer::DeadlineTimer;
use futures_util::{SinkExt, StreamExt};
use politely_core::{Certificate, Role};
use politely_proto::{ClientMessage, ServerMessage};
use politely_sfu::{Room, RoomConfig, RoomCounters, RoomOutput};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Datagrams waiting for the room's task, from all clients' sockets together.
const DATAGRAM_QUEUE: usize = 1024;

/// Signal frames held while the signaling connection is down; the oldest go first (an engine's
/// watchdog recovers what they carried).
const BACKLOG: usize = 4096;

/// How an [`Sfu`] runs.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// How each client's connection binds and gathers (the role is always impolite).
    pub peer: PeerConfig,
    /// The room's behaviour: subscription default, keyframe throttle.
    pub room: RoomConfig,
    /// A room token that grants the SFU role, when the server requires tokens.
    pub token: Option<String>,
    /// How long to wait for the server's `welcome`.
    pub join_timeout: Duration,
    /// Leave the room when its last client has left (an SFU a server starts per room).
    pub leave_when_empty: bool,
    /// How long to keep trying to get a dropped signaling connection back (resuming the SFU's
    /// id, within the server's resume grace) before the SFU ends.
    pub reconnect_for: Duration,
    /// For a `wss://` server: certificate authorities (DER) trusted besides the webpki roots.
    pub trusted_certificates: Vec<Vec<u8>>,
}

impl SfuConfig {
    /// Every connection on `127.0.0.1` only.
    pub fn loopback() -> Self {
        Self {
            peer: PeerConfig::loopback(),
            room: RoomConfig::default(),
            token: None,
            join_timeout: Duration::from_secs(10),
            leave_when_empty: false,
            reconnect_for: Duration::from_secs(60),
            trusted_certificates: Vec::new(),
        }
    }
}

/// A room's SFU, running until [`Sfu::leave`] or until its signaling connection ends.
pub struct Sfu {
    id: Arc<Mutex<String>>,
    counters: Arc<Mutex<RoomCounters>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl Sfu {
    /// Joins `room` on the server at `url` as its SFU. Returns once welcomed.
    pub async fn join(url: &str, room: &str, config: SfuConfig) -> Result<Sfu, Error> {
        let url = crate::session::ws_url(url)?;
        let tls = crate::session::tls_connector(&config.trusted_certificates)?;
        let (ws, welcome) = connect(
            &url,
            room,
            config.token.as_deref(),
            None,
            true,
            config.join_timeout,
            tls.clone(),
        )
        .await?;
        let certificate = Certificate::generate()?;
        let (datagrams_tx, datagrams_rx) = mpsc::channel(DATAGRAM_QUEUE);
        let counters = Arc::new(Mutex::new(RoomCounters::default()));
        let (stop_tx, stop_rx) = oneshot::channel();
        let id = Arc::new(Mutex::new(welcome.id.clone()));
        let mut task = SfuTask {
            room: Room::new(config.room.clone(), std::time::Instant::now()),
            url,
            tls,
            room_name: room.to_owned(),
            id: id.clone(),
            resume: welcome.resume.clone(),
            received: 0,
            unconfirmed: Unconfirmed::default(),
            backlog: VecDeque::new(),
            config,
            certificate,
            sockets: BTreeMap::new(),
            datagrams_tx,
            datagrams_rx,
            counters: counters.clone(),
        };
        for member in welcome.peers {
            task.add_client(member).await;
        }
        tracing::info!(room, id = %welcome.id, "joined as the room's SFU");
        Ok(Sfu {
            id,
            counters,
            stop: Some(stop_tx),
            task: Some(tokio::spawn(task.run(ws, stop_rx))),
        })
    }

    /// The SFU's peer id in the room (a new one only if the signaling connection came back
    /// too late to resume the old).
    pub fn id(&self) -> String {
        self.id.lock().expect("never poisoned").clone()
    }

    /// What the room did so far (packets forwarded, keyframe requests, ...).
    pub fn counters(&self) -> RoomCounters {
        *self.counters.lock().expect("never poisoned")
    }

    /// Leaves the room (every client is told `bye`) and waits until the task has ended.
    pub async fn leave(mut self) -> Result<(), Error> {
        self.finish().await
    }

    /// Waits until the SFU ends by itself (its signaling connection closed and did not come
    /// back within [`SfuConfig::reconnect_for`]).
    pub async fn wait(mut self) -> Result<(), Error> {
        match self.task.take() {
            Some(task) => task.await.map_err(|e| Error::Signaling(e.to_string()))?,
            None => Ok(()),
        }
    }

    async fn finish(&mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|e| Error::Signaling(e.to_string()))?,
            None => Ok(()),
        }
    }
}

impl Drop for Sfu {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A datagram that arrived on one client's socket.
struct Datagram {
    client: Arc<str>,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// One client's sockets: by local address, and their readers.
struct Sockets {
    by_addr: BTreeMap<SocketAddr, Arc<UdpSocket>>,
    readers: Vec<JoinHandle<()>>,
}

impl Drop for Sockets {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

struct SfuTask {
    room: Room,
    url: String,
    /// The TLS client for a `wss://` server, built once from the configuration.
    tls: Option<tokio_tungstenite::Connector>,
    room_name: String,
    id: Arc<Mutex<String>>,
    /// The latest welcome's resume token.
    resume: String,
    /// The `signal`, `peer-joined` and `peer-left` frames received under our id (see the
    /// session's).
    received: u64,
    /// What we wrote that a resume may say the server never took.
    unconfirmed: Unconfirmed,
    /// Signal frames not sent yet (while the signaling connection is down).
    backlog: VecDeque<String>,
    config: SfuConfig,
    certificate: Certificate,
    sockets: BTreeMap<String, Sockets>,
    datagrams_tx: mpsc::Sender<Datagram>,
    datagrams_rx: mpsc::Receiver<Datagram>,
    counters: Arc<Mutex<RoomCounters>>,
}

impl SfuTask {
    async fn run(mut self, ws: Ws, mut stop: oneshot::Receiver<()>) -> Result<(), Error> {
        let mut ws = Some(ws);
        let mut lost: Option<Lost> = None;
        let mut attempt: Option<JoinHandle<Result<(Ws, Welcome), Error>>> = None;
        let mut timer = DeadlineTimer::default();
        let result = loop {
            if let Err(e) = self.flush(ws.as_mut()).await {
                tracing::warn!("signaling lost ({e}); resuming");
                ws = None;
                lost.get_or_insert_with(Lost::now);
            }
            if let Some(l) = &lost
                && l.since.elapsed() > self.config.reconnect_for
            {
                break Err(Error::Signaling(format!(
                    "could not reconnect within {:?}",
                    self.config.reconnect_for
                )));
            }
            let retry_at = lost.as_ref().filter(|_| attempt.is_none()).map(|l| l.next);
            tokio::select! {
                _ = &mut stop => break Ok(()),
                () = timer.wait(self.room.poll_timeout()) => {
                    self.room.handle_timeout(std::time::Instant::now());
                }
                Some(d) = self.datagrams_rx.recv() => {
                    let now = std::time::Instant::now();
                    self.room.handle_datagram(now, &d.client, d.from, d.to, &d.bytes);
                    // Whatever else has arrived goes in before the outputs are sent.
                    while let Ok(d) = self.datagrams_rx.try_recv() {
                        self.room.handle_datagram(now, &d.client, d.from, d.to, &d.bytes);
                    }
                }
                frame = next_frame(&mut ws) => match frame {
                    Some(Ok(WsMessage::Text(text))) => {
                        self.server_frame(&text).await;
                        if self.config.leave_when_empty && self.room.clients().next().is_none() {
                            break Ok(());
                        }
                    }
                    Some(Ok(WsMessage::Close(_))) | None => {
                        tracing::warn!("the server closed the signaling connection; resuming");
                        ws = None;
                        lost.get_or_insert_with(Lost::now);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!("signaling lost ({e}); resuming");
                        ws = None;
                        lost.get_or_insert_with(Lost::now);
                    }
                },
                () = sleep_until_some(retry_at) => {
                    let (url, room, token) = (
                        self.url.clone(),
                        self.room_name.clone(),
                        self.config.token.clone(),
                    );
                    let resume = crate::session::Resume {
                        token: self.resume.clone(),
                        peers: self.room.clients().map(str::to_owned).collect(),
                        received: self.received,
                    };
                    let timeout = self.config.join_timeout.min(self.config.reconnect_for);
                    let tls = self.tls.clone();
                    attempt = Some(tokio::spawn(async move {
                        connect(&url, &room, token.as_deref(), Some(&resume), true, timeout, tls)
                            .await
                    }));
                }
                joined = async { attempt.as_mut().expect("guarded").await }, if attempt.is_some() => {
                    attempt = None;
                    match joined {
                        Ok(Ok((socket, welcome))) => {
                            tracing::info!(id = %welcome.id, resumed = welcome.resumed, "signaling back");
                            self.welcomed_again(welcome).await;
                            ws = Some(socket);
                            lost = None;
                        }
                        Ok(Err(e @ Error::Refused { .. })) => break Err(e),
                        Ok(Err(e)) => {
                            tracing::debug!("reconnect failed: {e}");
                            if let Some(l) = &mut lost {
                                l.retry_later();
                            }
                        }
                        Err(e) => break Err(Error::Signaling(e.to_string())),
                    }
                }
            }
        };
        if let Some(attempt) = attempt {
            attempt.abort();
        }
        // Leaving: every client is told `bye`.
        let clients: Vec<String> = self.room.clients().map(str::to_owned).collect();
        for client in clients {
            self.room.remove_client(&client);
        }
        if let Some(mut ws) = ws {
            let _ = self.flush(Some(&mut ws)).await;
            let _ = ws
                .send(WsMessage::text(ClientMessage::Leave.to_json()))
                .await;
            let _ = ws.close(None).await;
            // Until the server's close, so the `leave` is not lost to a reset (see the
            // session's `leave`).
            let drained = async {
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_close() {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), drained).await;
        }
        result
    }

    /// Brings the room in line with the welcome of a new signaling connection: clients that
    /// left meanwhile go, new ones come. A welcome that did not resume our id (we came back
    /// after the server's grace) means every client saw us leave: start every connection anew.
    async fn welcomed_again(&mut self, welcome: Welcome) {
        if !welcome.resumed {
            let clients: Vec<String> = self.room.clients().map(str::to_owned).collect();
            for client in clients {
                self.room.remove_client(&client);
                self.sockets.remove(&client);
            }
            // Nothing the old id had to say reaches anyone now.
            while self.room.poll_output().is_some() {}
            self.backlog.clear();
            self.received = 0;
            self.unconfirmed = Unconfirmed::default();
        } else {
            // What the server never took (written to a node that died) goes first.
            for frame in self.unconfirmed.resumed(welcome.taken).into_iter().rev() {
                self.backlog.push_front(frame);
            }
        }
        *self.id.lock().expect("never poisoned") = welcome.id;
        self.resume = welcome.resume;
        let present: BTreeSet<&str> = welcome.peers.iter().map(|m| m.id.as_str()).collect();
        let gone: Vec<String> = self
            .room
            .clients()
            .filter(|c| !present.contains(c))
            .map(str::to_owned)
            .collect();
        for client in gone {
            self.room.remove_client(&client);
            self.sockets.remove(&client);
            tracing::info!(%client, "left while signaling was down");
        }
        for member in welcome.peers {
            self.add_client(member).await;
        }
    }

    /// Sends what the room has for the network and the clients.
    /// Signals go out on `ws`, or wait in the backlog while there is none (or it fails).
    async fn flush(&mut self, ws: Option<&mut Ws>) -> Result<(), Error> {
        while let Some(output) = self.room.poll_output() {
            match output {
                RoomOutput::Signal { to, message } => {
                    let data = serde_json::value::to_raw_value(&message.to_json())
                        .expect("a JSON value serializes");
                    if self.backlog.len() >= BACKLOG {
                        self.backlog.pop_front();
                    }
                    self.backlog
                        .push_back(ClientMessage::signal(to.as_str(), data).to_json());
                }
                RoomOutput::Transmit { client, transmit } => {
                    let socket = self
                        .sockets
                        .get(&client)
                        .and_then(|s| s.by_addr.get(&transmit.source));
                    if let Some(socket) = socket
                        && let Err(e) = socket.try_send_to(&transmit.contents, transmit.destination)
                    {
                        // UDP: a full buffer loses the datagram, as the network would.
                        tracing::trace!(%client, "send to {}: {e}", transmit.destination);
                    }
                }
                RoomOutput::Event { client, event } => {
                    tracing::debug!(%client, ?event, "client event");
                }
            }
        }
        *self.counters.lock().expect("never poisoned") = self.room.counters();
        let Some(ws) = ws else {
            return Ok(());
        };
        if self.backlog.is_empty() {
            return Ok(());
        }
        while let Some(frame) = self.backlog.front() {
            ws.feed(WsMessage::text(frame.clone()))
                .await
                .map_err(|e| Error::Signaling(e.to_string()))?;
            self.unconfirmed.wrote(frame);
            self.backlog.pop_front();
        }
        ws.flush()
            .await
            .map_err(|e| Error::Signaling(e.to_string()))
    }

    async fn server_frame(&mut self, text: &str) {
        let message = match ServerMessage::from_json(text) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!("unreadable frame from the server: {e}");
                return;
            }
        };
        if message.counts_as_received() {
            self.received += 1;
        }
        match message {
            ServerMessage::Signal { from, data } => {
                let value: serde_json::Value = match serde_json::from_str(data.get()) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::debug!(%from, "unreadable signal: {e}");
                        return;
                    }
                };
                let now = std::time::Instant::now();
                if let Err(e) = self.room.handle_data(now, &from, &value) {
                    tracing::debug!(%from, "refused a signal: {e}");
                }
            }
            ServerMessage::PeerJoined { id, user, sfu, .. } => {
                self.add_client(Member {
                    id: id.into_owned(),
                    polite: false,
                    user,
                    sfu,
                })
                .await;
            }
            ServerMessage::PeerLeft { id } => {
                self.room.remove_client(&id);
                self.sockets.remove(&*id);
                tracing::info!(client = %id, "left");
            }
            ServerMessage::Error { code, message, .. } => {
                tracing::debug!(%code, %message, "the server refused a frame");
            }
            // An SFU listens on its own addresses: it gathers no relay candidates.
            ServerMessage::Welcome { .. }
            | ServerMessage::Pong
            | ServerMessage::IceServers { .. } => {}
        }
    }

    async fn add_client(&mut self, member: Member) {
        if member.sfu || self.sockets.contains_key(&member.id) {
            return;
        }
        let gathered = match crate::gather::gather(&self.config.peer).await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(client = %member.id, "cannot gather: {e}");
                return;
            }
        };
        let mut engine = politely_core::Config::new(Role::Impolite, gathered.local_addrs.clone());
        engine.reflexive_addrs = gathered.reflexive.clone();
        engine.ice_servers = self.config.peer.ice_servers.clone();
        engine.seed = rand_seed(&member.id);
        engine.watchdog_timeout = self.config.peer.watchdog_timeout;
        engine.ice_check_interval = self.config.peer.ice_check_interval;
        engine.certificate = Some(self.certificate.clone());
        let client: Arc<str> = member.id.as_str().into();
        let mut sockets = Sockets {
            by_addr: BTreeMap::new(),
            readers: Vec::new(),
        };
        for (socket, addr) in gathered.sockets.into_iter().zip(gathered.local_addrs) {
            let socket = Arc::new(socket);
            sockets.by_addr.insert(addr, socket.clone());
            let (tx, client) = (self.datagrams_tx.clone(), client.clone());
            sockets.readers.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                    let datagram = Datagram {
                        client: client.clone(),
                        from,
                        to: addr,
                        bytes: buf[..n].to_vec(),
                    };
                    if tx.send(datagram).await.is_err() {
                        break;
                    }
                }
            }));
        }
        if let Err(e) = self
            .room
            .add_client(std::time::Instant::now(), member.id.clone(), engine)
        {
            tracing::error!(client = %member.id, "cannot start its connection: {e}");
            return;
        }
        tracing::info!(client = %member.id, "joined");
        self.sockets.insert(member.id, sockets);
    }
}

/// A seed for a client's engine: its SSRCs and connection ids must differ between runs.
fn rand_seed(id: &str) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one((id, std::time::Instant::now()))
}

/// A dropped signaling connection: since when, and when to try again.
struct Lost {
    since: Instant,
    next: Instant,
    delay: Duration,
}

impl Lost {
    fn now() -> Self {
        let now = Instant::now();
        Self {
            since: now,
            next: now,
            delay: Duration::from_millis(50),
        }
    }

    /// After a failed attempt: the next one after a doubled pause, at most a second.
    fn retry_later(&mut self) {
        self.next = Instant::now() + self.delay;
        self.delay = (self.delay * 2).min(Duration::from_secs(1));
    }
}

/// The next frame of the signaling connection; never, while there is none.
async fn next_frame(
    ws: &mut Option<Ws>,
) -> Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>> {
    match ws {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`; never, without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
