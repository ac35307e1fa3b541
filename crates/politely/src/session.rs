//! A room of peers through a politely signaling server.

use crate::config::SessionConfig;
use crate::driver::{Command, EventSink, Outgoing};
use crate::error::Error;
use crate::peer::{self, PeerEvent, PeerHandle, SIGNAL_QUEUE};
use futures_util::{SinkExt, StreamExt};
use politely_core::{Certificate, IceServer, Role, Signal};
use politely_proto::room::RoomMessage;
use politely_proto::{ClientMessage, CloseCode, ErrorCode, ServerMessage, User};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Signals kept while the signaling connection is down, sent after the resume. Beyond this
/// the oldest are dropped (the engines' watchdogs recover what is lost).
const BACKLOG: usize = 1024;

/// Something that happened in a [`Session`].
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The room's SFU sent a room message: the tracks this session may subscribe to
    /// ([`RoomMessage::Tracks`], sent again whenever they change).
    Room {
        /// The SFU's id.
        sfu: String,
        /// The message.
        message: RoomMessage,
    },
    /// A peer is in the room (already there when we joined, or newly arrived); its connection
    /// is negotiating.
    PeerJoined(PeerHandle),
    /// A peer left the room (or its resume grace period ended); its connection is closed.
    PeerLeft {
        /// Its id.
        peer: String,
    },
    /// Something happened on the connection with a peer.
    Peer {
        /// The remote peer's id.
        peer: String,
        /// What happened.
        event: PeerEvent,
    },
    /// The signaling connection dropped; the session is trying to resume.
    SignalingLost {
        /// Why, as far as known.
        reason: String,
    },
    /// The signaling connection is back.
    Reconnected {
        /// True if the server gave our id back; false if the grace period was over and we
        /// joined afresh under a new id (every peer connection was replaced).
        resumed: bool,
        /// Our id now.
        id: String,
    },
    /// The server refused a frame of ours (the session goes on).
    ServerError {
        /// The server's code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The session is over: it could not resume in time, or another connection took over our
    /// id, or the server closed for good.
    Ended {
        /// Why.
        reason: String,
    },
}

/// What the session task and the [`Session`] share.
struct Shared {
    id: Mutex<String>,
    /// The handles of [`Peers`], for [`Session::peers`]; written by `Peers` alone.
    peers: Mutex<BTreeMap<String, PeerHandle>>,
}

/// The session task's peer connections. Every change goes through here, which keeps the
/// handles the [`Session`] reads in step.
struct Peers {
    entries: BTreeMap<String, PeerEntry>,
    shared: Arc<Shared>,
}

impl Peers {
    fn handles(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PeerHandle>> {
        self.shared.peers.lock().expect("never poisoned")
    }

    fn insert(&mut self, id: String, entry: PeerEntry) {
        self.handles().insert(id.clone(), entry.handle.clone());
        self.entries.insert(id, entry);
    }

    fn remove(&mut self, id: &str) -> Option<PeerEntry> {
        self.handles().remove(id);
        self.entries.remove(id)
    }

    fn take_all(&mut self) -> BTreeMap<String, PeerEntry> {
        self.handles().clear();
        std::mem::take(&mut self.entries)
    }

    fn get(&self, id: &str) -> Option<&PeerEntry> {
        self.entries.get(id)
    }

    fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    fn ids(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }
}

enum SessionCommand {
    Leave(oneshot::Sender<()>),
    /// A room message for the SFU.
    Room(RoomMessage),
}

/// A room on a politely server: one peer connection per other peer, negotiated with the
/// perfect-negotiation pattern, roles from the server's ids.
///
/// ```no_run
/// # async fn demo() -> Result<(), politely::Error> {
/// use politely::{ChannelOptions, PeerEvent, Session, SessionConfig, SessionEvent};
///
/// let mut session = Session::join("ws://127.0.0.1:8080", "lobby", SessionConfig::loopback()).await?;
/// while let Some(event) = session.next_event().await {
///     match event {
///         SessionEvent::PeerJoined(peer) => {
///             // One channel between the two ends: both create it with this id.
///             let options = ChannelOptions { negotiated: Some(0), ..Default::default() };
///             let chat = peer.create_data_channel("chat", options).await?;
///             tokio::spawn(async move {
///                 if chat.opened().await.is_ok() {
///                     let _ = chat.send_text("hello").await;
///                 }
///             });
///         }
///         SessionEvent::Peer { peer, event: PeerEvent::Message { message, .. } } => {
///             println!("{peer}: {}", message.as_text().unwrap_or("<binary>"));
///         }
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
///
/// Dropping the session leaves the room (every peer is told `bye`); [`Session::leave`] does
/// the same and waits until it is done.
pub struct Session {
    room: String,
    shared: Arc<Shared>,
    commands: mpsc::Sender<SessionCommand>,
    events: mpsc::Receiver<SessionEvent>,
    task: Option<JoinHandle<()>>,
}

impl Session {
    /// Connects to the server at `url` (`ws://host:port` or `wss://`; the protocol's path
    /// `/ws` is added when the URL has no path), joins `room`, and starts a connection with every peer there.
    /// Returns once the server has welcomed us.
    pub async fn join(url: &str, room: &str, config: SessionConfig) -> Result<Session, Error> {
        let url = ws_url(url)?;
        let tls = tls_connector(&config.trusted_certificates)?;
        let (ws, welcome) = connect(
            &url,
            room,
            config.token.as_deref(),
            None,
            false,
            config.join_timeout,
            tls.clone(),
        )
        .await?;
        // One DTLS identity for every connection of the session, as a browser keeps one per
        // origin: a key pair per connection would cost a millisecond each.
        let certificate = Certificate::generate()?;
        let capacity = config.peer.queue_capacity.max(1);
        let (events_tx, events_rx) = mpsc::channel(capacity);
        let (out_tx, out_rx) = mpsc::channel(SIGNAL_QUEUE);
        let (commands_tx, commands_rx) = mpsc::channel(4);
        let shared = Arc::new(Shared {
            id: Mutex::new(welcome.id.clone()),
            peers: Mutex::new(BTreeMap::new()),
        });
        let mut task = SessionTask {
            url,
            tls,
            room: room.to_owned(),
            config,
            certificate,
            ws: Some(ws),
            id: welcome.id.clone(),
            resume: welcome.resume.clone(),
            received: 0,
            unconfirmed: Unconfirmed::default(),
            members: Vec::new(),
            peers: Peers {
                entries: BTreeMap::new(),
                shared: shared.clone(),
            },
            out_tx,
            out_rx,
            backlog: VecDeque::new(),
            server_ice: Vec::new(),
            ice_refresh: None,
            events: events_tx,
            commands: commands_rx,
            shared: shared.clone(),
        };
        task.members = welcome.peers;
        task.set_ice_servers(welcome.ice_servers, welcome.ice_ttl);
        // Connections start now (`peers()` lists them once we return); their `PeerJoined`
        // events are queued by the task, so an event queue smaller than the room never
        // blocks `join`.
        let joined = task.start_wanted();
        Ok(Session {
            room: room.to_owned(),
            shared,
            commands: commands_tx,
            events: events_rx,
            task: Some(tokio::spawn(task.run(joined))),
        })
    }

    /// Our id in the room (it changes only if a resume fails and we join afresh).
    pub fn id(&self) -> String {
        self.shared.id.lock().expect("never poisoned").clone()
    }

    /// The room's name.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The peers we have a connection with, by id.
    pub fn peers(&self) -> Vec<PeerHandle> {
        let peers = self.shared.peers.lock().expect("never poisoned");
        peers.values().cloned().collect()
    }

    /// The connection with one peer.
    pub fn peer(&self, id: &str) -> Option<PeerHandle> {
        let peers = self.shared.peers.lock().expect("never poisoned");
        peers.get(id).cloned()
    }

    /// Sends a room message to the room's SFU (publish a track's source, subscribe,
    /// unsubscribe). It waits in the backlog while signaling reconnects; without an SFU in the
    /// room it is dropped.
    pub async fn send_room_message(&self, message: RoomMessage) -> Result<(), Error> {
        self.commands
            .send(SessionCommand::Room(message))
            .await
            .map_err(|_| Error::Closed)
    }

    /// The next event; `None` once the session has ended and every event was taken.
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        self.events.recv().await
    }

    /// Says `bye` to every peer, sends `leave`, and waits until the session has ended.
    pub async fn leave(mut self) {
        let (done, finished) = oneshot::channel();
        if self
            .commands
            .send(SessionCommand::Leave(done))
            .await
            .is_ok()
        {
            // Events are not read any more; close the queue so the task never waits on it.
            self.events.close();
            let _ = finished.await;
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The task sees its event queue closed and leaves the room.
        self.events.close();
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id())
            .field("room", &self.room)
            .finish_non_exhaustive()
    }
}

/// A connection just started, and what lets it report events once it is announced.
type Started = (PeerHandle, oneshot::Sender<()>);

struct PeerEntry {
    handle: PeerHandle,
    signals: mpsc::Sender<Signal>,
    task: JoinHandle<()>,
}

struct SessionTask {
    url: String,
    /// The TLS client for a `wss://` server, built once from the configuration.
    tls: Option<Connector>,
    room: String,
    config: SessionConfig,
    certificate: Certificate,
    ws: Option<Ws>,
    id: String,
    resume: String,
    /// The `signal`, `peer-joined` and `peer-left` frames received under our id, which a
    /// resume tells (a server of several nodes sends the rest again).
    received: u64,
    /// What we wrote that a resume may say the server never took.
    unconfirmed: Unconfirmed,
    /// The room's other peers, as the server last told.
    members: Vec<Member>,
    peers: Peers,
    out_tx: mpsc::Sender<Outgoing>,
    out_rx: mpsc::Receiver<Outgoing>,
    backlog: VecDeque<String>,
    /// The ICE servers the signaling server handed out (TURN with expiring credentials).
    server_ice: Vec<IceServer>,
    /// When to ask the signaling server for fresh credentials.
    ice_refresh: Option<Instant>,
    events: mpsc::Sender<SessionEvent>,
    commands: mpsc::Receiver<SessionCommand>,
    shared: Arc<Shared>,
}

/// Why the main loop stopped.
enum Stop {
    /// The application asked to leave (or dropped the session).
    Leave(Option<oneshot::Sender<()>>),
    /// The session cannot go on.
    Ended(String),
}

impl SessionTask {
    async fn run(mut self, joined: Vec<Started>) {
        for started in joined {
            self.announce(started).await;
        }
        let stop = loop {
            match self.ws.take() {
                Some(ws) => match self.serve(ws).await {
                    Ok(stop) => break stop,
                    Err(reason) => {
                        tracing::info!(room = %self.room, "signaling lost: {reason}");
                        self.emit(SessionEvent::SignalingLost { reason }).await;
                    }
                },
                None => match self.reconnect().await {
                    Ok(()) => {}
                    Err(stop) => break stop,
                },
            }
        };
        match stop {
            Stop::Leave(done) => {
                self.leave().await;
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Stop::Ended(reason) => {
                tracing::warn!(room = %self.room, "session ended: {reason}");
                for (_, entry) in self.peers.take_all() {
                    let _ = entry.handle.commands.send(Command::Abort).await;
                }
                self.emit(SessionEvent::Ended { reason }).await;
            }
        }
    }

    /// Relays between the server and the peers until the connection drops (`Err`) or the
    /// session stops (`Ok`).
    async fn serve(&mut self, mut ws: Ws) -> Result<Stop, String> {
        while let Some(frame) = self.backlog.pop_front() {
            if let Err(e) = ws.feed(WsMessage::text(self.wrote(frame))).await {
                return Err(e.to_string());
            }
        }
        ws.flush().await.map_err(|e| e.to_string())?;
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(SessionCommand::Room(message)) => {
                        if let Some(frame) = self.room_frame(&message) {
                            let frame = self.wrote(frame);
                            ws.send(WsMessage::text(frame)).await.map_err(|e| e.to_string())?;
                        }
                    }
                    Some(SessionCommand::Leave(done)) => {
                        self.ws = Some(ws);
                        return Ok(Stop::Leave(Some(done)));
                    }
                    None => {
                        self.ws = Some(ws);
                        return Ok(Stop::Leave(None));
                    }
                },
                () = self.events.closed() => {
                    self.ws = Some(ws);
                    return Ok(Stop::Leave(None));
                }
                () = sleep_until(self.ice_refresh), if self.ice_refresh.is_some() => {
                    // Asked once; the answer schedules the next.
                    self.ice_refresh = None;
                    let ask = self.wrote(ClientMessage::IceServers.to_json());
                    ws.send(WsMessage::text(ask)).await.map_err(|e| e.to_string())?;
                }
                outgoing = self.out_rx.recv() => {
                    // The task holds a sender itself, so the queue never ends.
                    let Some(outgoing) = outgoing else { continue };
                    let frame = outgoing.frame();
                    let frame = self.wrote(frame);
                    ws.feed(WsMessage::text(frame)).await.map_err(|e| e.to_string())?;
                    // Whatever else is ready goes out with the same flush.
                    while let Ok(outgoing) = self.out_rx.try_recv() {
                        let frame = outgoing.frame();
                        let frame = self.wrote(frame);
                        ws.feed(WsMessage::text(frame)).await.map_err(|e| e.to_string())?;
                    }
                    ws.flush().await.map_err(|e| e.to_string())?;
                }
                frame = ws.next() => match frame {
                    Some(Ok(WsMessage::Text(text))) => {
                        if let Some(stop) = self.server_frame(&text).await {
                            return Ok(stop);
                        }
                    }
                    Some(Ok(WsMessage::Close(close))) => {
                        let code = close.as_ref().map(|c| u16::from(c.code));
                        return match code.and_then(CloseCode::from_code) {
                            Some(CloseCode::Replaced) => Ok(Stop::Ended(
                                "another connection resumed our id".to_owned(),
                            )),
                            _ => Err(format!("the server closed the connection ({code:?})")),
                        };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("the connection ended".to_owned()),
                },
            }
        }
    }

    async fn server_frame(&mut self, text: &str) -> Option<Stop> {
        let message = match ServerMessage::from_json(text) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!("unreadable frame from the server: {e}");
                return None;
            }
        };
        if message.counts_as_received() {
            self.received += 1;
        }
        match message {
            ServerMessage::Signal { from, data } => {
                if self.members.iter().any(|m| m.sfu && *m.id == *from)
                    && let Ok(value) = serde_json::from_str::<serde_json::Value>(data.get())
                    && RoomMessage::is_room(&value)
                {
                    match RoomMessage::from_json(&value) {
                        Ok(message) => {
                            self.emit(SessionEvent::Room {
                                sfu: from.into_owned(),
                                message,
                            })
                            .await;
                        }
                        Err(e) => tracing::debug!(%from, "unreadable room message: {e}"),
                    }
                    return None;
                }
                let Some(entry) = self.peers.get(&from) else {
                    tracing::debug!(%from, "signal from a peer we do not know");
                    return None;
                };
                match Signal::from_raw(&data) {
                    // A driver always makes progress on its input queue (see driver.rs).
                    Ok(signal) => {
                        let _ = entry.signals.send(signal).await;
                    }
                    Err(e) => tracing::debug!(%from, "unreadable signal: {e}"),
                }
            }
            ServerMessage::PeerJoined {
                id,
                polite,
                user,
                sfu,
            } => {
                self.members.retain(|m| *m.id != *id);
                self.members.push(Member {
                    id: id.into_owned(),
                    polite,
                    user,
                    sfu,
                });
                self.sync_peers().await;
            }
            ServerMessage::PeerLeft { id } => {
                self.members.retain(|m| *m.id != *id);
                self.remove_peer(&id).await;
                self.sync_peers().await;
            }
            ServerMessage::Error { code, message, .. } => {
                tracing::debug!(%code, %message, "the server refused a frame");
                self.emit(SessionEvent::ServerError {
                    code,
                    message: message.into_owned(),
                })
                .await;
            }
            ServerMessage::IceServers {
                ice_servers,
                ice_ttl,
            } => {
                self.set_ice_servers(ice_servers.into_iter().map(ice_server).collect(), ice_ttl);
            }
            ServerMessage::Welcome { .. } | ServerMessage::Pong => {}
        }
        None
    }

    /// Takes the ICE servers the signaling server handed out, for the connections started
    /// from now on, and schedules asking for new credentials at half their lifetime. (A TURN
    /// allocation keeps the credentials it was made with: see `turn::Allocation::allocate`.)
    fn set_ice_servers(&mut self, servers: Vec<IceServer>, ttl: Option<u64>) {
        self.server_ice = servers;
        self.ice_refresh = ttl
            .filter(|_| !self.server_ice.is_empty())
            .map(|ttl| Instant::now() + Duration::from_secs(ttl) / 2);
    }

    /// Connects to the peers the room calls for: its SFU alone when it has one, every other
    /// peer otherwise.
    async fn sync_peers(&mut self) {
        let wanted = self.wanted();
        let unwanted = self
            .peers
            .ids()
            .into_iter()
            .filter(|id| !wanted.iter().any(|m| m.id == *id));
        for id in unwanted {
            self.remove_peer(&id).await;
        }
        for started in self.start_wanted() {
            self.announce(started).await;
        }
    }

    /// `PeerJoined`, then the connection may report its own events.
    async fn announce(&self, (handle, go): Started) {
        self.emit(SessionEvent::PeerJoined(handle)).await;
        let _ = go.send(());
    }

    /// The members the room calls for a connection with.
    fn wanted(&self) -> Vec<Member> {
        let sfu = self.members.iter().find(|m| m.sfu).map(|m| m.id.clone());
        self.members
            .iter()
            .filter(|m| sfu.as_ref().is_none_or(|sfu| m.id == *sfu))
            .cloned()
            .collect()
    }

    /// Starts a connection with each wanted member we have none with, and returns them, to
    /// be announced.
    fn start_wanted(&mut self) -> Vec<Started> {
        let mut started = Vec::new();
        for m in self.wanted() {
            if !self.peers.contains(&m.id) {
                started.push(self.add_peer(m.id, m.polite, m.user));
            }
        }
        started
    }

    /// A room message as a `signal` frame to the SFU, if the room has one.
    fn room_frame(&self, message: &RoomMessage) -> Option<String> {
        let sfu = self.members.iter().find(|m| m.sfu)?;
        Some(ClientMessage::signal(&*sfu.id, message.to_raw()).to_json())
    }

    /// Starts a connection with a peer: at once, its gathering runs in its own task.
    fn add_peer(&mut self, id: String, polite: bool, user: Option<User>) -> Started {
        let role = if polite { Role::Polite } else { Role::Impolite };
        let mut config = self.config.peer.clone();
        config.ice_servers.extend(self.server_ice.iter().cloned());
        let (mut spawned, go) = peer::spawn_gathering(
            role,
            Arc::from(id.as_str()),
            config,
            Some(self.certificate.clone()),
            self.out_tx.clone(),
            EventSink {
                sender: self.events.clone(),
                wrap: |peer, event| SessionEvent::Peer {
                    peer: peer.to_string(),
                    event,
                },
            },
        );
        spawned.handle.user = user.map(Arc::new);
        let handle = spawned.handle.clone();
        self.peers.insert(
            id,
            PeerEntry {
                handle: spawned.handle,
                signals: spawned.signals,
                task: spawned.task,
            },
        );
        (handle, go)
    }

    async fn remove_peer(&mut self, id: &str) {
        let Some(entry) = self.peers.remove(id) else {
            return;
        };
        let _ = entry.handle.commands.send(Command::Abort).await;
        self.emit(SessionEvent::PeerLeft {
            peer: id.to_owned(),
        })
        .await;
    }

    async fn emit(&self, event: SessionEvent) {
        // A closed queue means the application is leaving; the main loop sees it.
        let _ = self.events.send(event).await;
    }

    /// Tries to resume until `reconnect_for` has passed; signals meanwhile wait in the
    /// backlog.
    async fn reconnect(&mut self) -> Result<(), Stop> {
        let deadline = Instant::now() + self.config.reconnect_for;
        let mut delay = Duration::from_millis(50);
        loop {
            let (url, room, token) = (
                self.url.clone(),
                self.room.clone(),
                self.config.token.clone(),
            );
            let resume = Resume {
                token: self.resume.clone(),
                peers: self.peers.ids(),
                received: self.received,
            };
            let attempt = connect(
                &url,
                &room,
                token.as_deref(),
                Some(&resume),
                false,
                self.config.join_timeout.min(self.config.reconnect_for),
                self.tls.clone(),
            );
            tokio::pin!(attempt);
            let result = loop {
                tokio::select! {
                    result = &mut attempt => break result,
                    command = self.commands.recv() => match command {
                        Some(SessionCommand::Room(message)) => {
                            if let Some(frame) = self.room_frame(&message) {
                                self.backlog.push_back(frame);
                            }
                        }
                        Some(SessionCommand::Leave(done)) => return Err(Stop::Leave(Some(done))),
                        None => return Err(Stop::Leave(None)),
                    },
                    () = self.events.closed() => return Err(Stop::Leave(None)),
                    Some(outgoing) = self.out_rx.recv() => keep(&mut self.backlog, outgoing),
                }
            };
            match result {
                Ok((ws, welcome)) => {
                    self.welcomed_again(welcome).await;
                    self.ws = Some(ws);
                    return Ok(());
                }
                Err(e @ Error::Refused { .. }) => return Err(Stop::Ended(e.to_string())),
                Err(e) => tracing::debug!("reconnect failed: {e}"),
            }
            if Instant::now() + delay > deadline {
                return Err(Stop::Ended(format!(
                    "could not reconnect within {:?}",
                    self.config.reconnect_for
                )));
            }
            let pause = tokio::time::sleep(delay);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    () = &mut pause => break,
                    Some(outgoing) = self.out_rx.recv() => keep(&mut self.backlog, outgoing),
                }
            }
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// Counts a frame about to be written, and keeps it until a resume says it was taken.
    fn wrote(&mut self, frame: String) -> String {
        self.unconfirmed.wrote(&frame);
        frame
    }

    /// Brings the peers in line with a new welcome.
    async fn welcomed_again(&mut self, welcome: Welcome) {
        self.resume = welcome.resume;
        self.set_ice_servers(welcome.ice_servers, welcome.ice_ttl);
        if welcome.resumed {
            let again = self.unconfirmed.resumed(welcome.taken);
            if !again.is_empty() {
                tracing::info!(
                    frames = again.len(),
                    "sending again what the server never took"
                );
            }
            for frame in again.into_iter().rev() {
                self.backlog.push_front(frame);
            }
        } else {
            // A new id: every relationship starts over, and what was queued for the old
            // ones is moot.
            self.backlog.clear();
            self.received = 0;
            self.unconfirmed = Unconfirmed::default();
            for id in self.peers.ids() {
                self.remove_peer(&id).await;
            }
            self.id = welcome.id.clone();
            *self.shared.id.lock().expect("never poisoned") = welcome.id.clone();
        }
        // Peers gone while we were away are dropped, newcomers connected.
        // A restarted server lists a peer that has not resumed yet without its role or user
        // (it keeps the place for it); an id's role never changes, so what we knew stands.
        let mut members = welcome.peers;
        if welcome.resumed {
            for m in &mut members {
                if let Some(known) = self.members.iter().find(|k| k.id == m.id) {
                    m.sfu |= known.sfu;
                    if m.user.is_none() {
                        m.user.clone_from(&known.user);
                    }
                }
            }
        }
        self.members = members;
        self.sync_peers().await;
        tracing::info!(id = %self.id, resumed = welcome.resumed, "signaling reconnected");
        self.emit(SessionEvent::Reconnected {
            resumed: welcome.resumed,
            id: self.id.clone(),
        })
        .await;
    }

    /// Says `bye` to every peer, lets the byes out, then sends `leave`.
    async fn leave(&mut self) {
        let peers = self.peers.take_all();
        for entry in peers.values() {
            let _ = entry.handle.commands.send(Command::Close).await;
        }
        let Some(mut ws) = self.ws.take() else {
            return;
        };
        // Each driver sends its `bye` and ends; relay until all have, for a bounded time.
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut tasks: Vec<JoinHandle<()>> = peers.into_values().map(|e| e.task).collect();
        {
            let all = futures_util::future::join_all(tasks.iter_mut());
            tokio::pin!(all);
            loop {
                tokio::select! {
                    _ = &mut all => break,
                    Some(outgoing) = self.out_rx.recv() => {
                        let frame = outgoing.frame();
                        if ws.feed(WsMessage::text(frame)).await.is_err() {
                            break;
                        }
                    }
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        while let Ok(outgoing) = self.out_rx.try_recv() {
            let frame = outgoing.frame();
            let _ = ws.feed(WsMessage::text(frame)).await;
        }
        for task in &tasks {
            task.abort();
        }
        let _ = ws
            .send(WsMessage::text(ClientMessage::Leave.to_json()))
            .await;
        let _ = ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: WsCloseCode::Normal,
                reason: "".into(),
            }))
            .await;
        // Read on until the server's close: a socket closed with frames unread is reset, and
        // a reset can lose the `leave` still waiting in the server's receive queue, which the
        // server then takes for a dropped connection (the others would hear we left only
        // after the resume grace period).
        let drained = async {
            while let Some(Ok(message)) = ws.next().await {
                if message.is_close() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drained).await;
    }
}

/// Keeps a signal for after the resume.
fn keep(backlog: &mut VecDeque<String>, outgoing: Outgoing) {
    if backlog.len() == BACKLOG {
        tracing::warn!("signaling backlog full; dropping its oldest signal");
        backlog.pop_front();
    }
    backlog.push_back(outgoing.frame());
}

/// The text frames written under an id since its first `welcome`, and the last of them (up
/// to [`BACKLOG`]): a resume says how many the server took, and the rest (in flight when the
/// connection dropped, or written to a node that died) go again.
#[derive(Default)]
pub(crate) struct Unconfirmed {
    written: u64,
    frames: VecDeque<String>,
}

impl Unconfirmed {
    pub(crate) fn wrote(&mut self, frame: &str) {
        self.written += 1;
        if self.frames.len() == BACKLOG {
            self.frames.pop_front();
        }
        self.frames.push_back(frame.to_owned());
    }

    /// A resume said the server took `taken` of our frames: the ones after, to send again
    /// first (counted when written). Without a number (the server does not know) nothing can
    /// be told apart, and the count starts over, as the server's does.
    pub(crate) fn resumed(&mut self, taken: Option<u64>) -> Vec<String> {
        let frames = std::mem::take(&mut self.frames);
        let Some(taken) = taken else {
            self.written = 0;
            return Vec::new();
        };
        let first = self.written + 1 - frames.len() as u64;
        self.written = taken;
        frames
            .into_iter()
            .zip(first..)
            .filter(|(_, n)| *n > taken)
            .map(|(frame, _)| frame)
            .collect()
    }
}

/// What a `welcome` tells.
pub(crate) struct Welcome {
    pub(crate) id: String,
    pub(crate) peers: Vec<Member>,
    pub(crate) resume: String,
    pub(crate) resumed: bool,
    /// With `resumed`: how many of our frames the server took.
    pub(crate) taken: Option<u64>,
    /// STUN and TURN servers for this client, and how long their credentials last (s).
    pub(crate) ice_servers: Vec<IceServer>,
    pub(crate) ice_ttl: Option<u64>,
}

/// A server's ICE server entry in the engine's terms.
fn ice_server(server: politely_proto::IceServer) -> IceServer {
    IceServer {
        urls: server.urls,
        username: server.username.unwrap_or_default(),
        credential: server.credential.unwrap_or_default(),
    }
}

/// Another peer of the room.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) id: String,
    /// Whether this side is polite toward it.
    pub(crate) polite: bool,
    pub(crate) user: Option<User>,
    /// It is the room's SFU.
    pub(crate) sfu: bool,
}

/// The server's WebSocket URL ([`politely_proto::server_url`]: `ws://host:port` and
/// `ws://host:port/ws` are the same server).
pub(crate) fn ws_url(url: &str) -> Result<String, Error> {
    politely_proto::server_url(url)
        .map(String::from)
        .map_err(|e| Error::Signaling(e.to_string()))
}

/// The TLS client for `wss://` servers: the webpki roots, and `trusted` (DER) beside them.
/// `None` when nothing is added, which is tokio-tungstenite's own default.
pub(crate) fn tls_connector(trusted: &[Vec<u8>]) -> Result<Option<Connector>, Error> {
    if trusted.is_empty() {
        return Ok(None);
    }
    let mut roots =
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in trusted {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| Error::Signaling(format!("a trusted certificate: {e}")))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Signaling(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Some(Connector::Rustls(Arc::new(config))))
}

/// What a `join` that resumes carries: the token of the last `welcome`, and the peers we are
/// connected with (a server restarted since keeps their places).
pub(crate) struct Resume {
    pub(crate) token: String,
    pub(crate) peers: Vec<String>,
    pub(crate) received: u64,
}

/// Opens the WebSocket (over TLS for `wss://`, with `tls` if given), sends `join` (as the
/// room's SFU if `sfu`) and waits for the `welcome`.
pub(crate) async fn connect(
    url: &str,
    room: &str,
    token: Option<&str>,
    resume: Option<&Resume>,
    sfu: bool,
    timeout: Duration,
    tls: Option<Connector>,
) -> Result<(Ws, Welcome), Error> {
    let signaling = |e: &dyn fmt::Display| Error::Signaling(e.to_string());
    let mut request = url.into_client_request().map_err(|e| signaling(&e))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(politely_proto::SUBPROTOCOL),
    );
    let handshake = async {
        // Nagle's algorithm would hold small signals back for an acknowledgement.
        let (mut ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, tls)
                .await
                .map_err(|e| signaling(&e))?;
        let join = ClientMessage::Join {
            room: room.into(),
            token: token.map(Into::into),
            resume: resume.map(|r| r.token.as_str().into()),
            sfu,
            peers: resume.map_or_else(Vec::new, |r| {
                r.peers.iter().map(|p| p.as_str().into()).collect()
            }),
            received: resume.map(|r| r.received),
        };
        ws.send(WsMessage::text(join.to_json()))
            .await
            .map_err(|e| signaling(&e))?;
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Text(text))) => match ServerMessage::from_json(&text) {
                    Ok(ServerMessage::Welcome {
                        id,
                        peers,
                        resume,
                        resumed,
                        taken,
                        ice_servers,
                        ice_ttl,
                        ..
                    }) => {
                        let welcome = Welcome {
                            id: id.into_owned(),
                            peers: peers
                                .into_iter()
                                .map(|p| Member {
                                    id: p.id.into_owned(),
                                    polite: p.polite,
                                    user: p.user,
                                    sfu: p.sfu,
                                })
                                .collect(),
                            resume: resume.into_owned(),
                            resumed,
                            taken,
                            ice_servers: ice_servers.into_iter().map(ice_server).collect(),
                            ice_ttl,
                        };
                        return Ok((ws, welcome));
                    }
                    // A server that cannot reach its other nodes now may take us later.
                    Ok(ServerMessage::Error { code, message, .. })
                        if code == politely_proto::ErrorCode::Unavailable =>
                    {
                        return Err(Error::Signaling(format!("{code}: {message}")));
                    }
                    Ok(ServerMessage::Error { code, message, .. }) => {
                        return Err(Error::Refused {
                            code,
                            message: message.into_owned(),
                        });
                    }
                    Ok(_) => continue,
                    Err(e) => return Err(signaling(&e)),
                },
                Some(Ok(WsMessage::Close(close))) => {
                    return Err(Error::Signaling(format!(
                        "closed before the welcome: {close:?}"
                    )));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(signaling(&e)),
                None => return Err(Error::Signaling("closed before the welcome".into())),
            }
        }
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| Error::Signaling("no welcome in time".into()))?
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrote(unconfirmed: &mut Unconfirmed, frames: std::ops::RangeInclusive<u64>) {
        for n in frames {
            unconfirmed.wrote(&n.to_string());
        }
    }

    #[test]
    fn a_resume_gives_back_what_the_server_never_took_and_counts_on_from_there() {
        let mut unconfirmed = Unconfirmed::default();
        wrote(&mut unconfirmed, 1..=5);
        assert_eq!(unconfirmed.resumed(Some(3)), ["4", "5"]);
        // Written again as the sixth frame on: the server's count is ours.
        wrote(&mut unconfirmed, 4..=5);
        assert_eq!(unconfirmed.resumed(Some(5)), Vec::<String>::new());
        wrote(&mut unconfirmed, 6..=6);
        assert_eq!(unconfirmed.resumed(Some(5)), ["6"]);
        // A server that does not know: nothing again, and the count starts over.
        assert_eq!(unconfirmed.resumed(None), Vec::<String>::new());
        wrote(&mut unconfirmed, 1..=2);
        assert_eq!(unconfirmed.resumed(Some(1)), ["2"]);
        // More than are kept went missing: what is kept goes again.
        let mut unconfirmed = Unconfirmed::default();
        wrote(&mut unconfirmed, 1..=(BACKLOG as u64 + 10));
        let again = unconfirmed.resumed(Some(2));
        assert_eq!(again.len(), BACKLOG);
        assert_eq!(again[0], "11");
    }
}
