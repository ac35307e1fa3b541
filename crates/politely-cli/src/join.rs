//! `politely join`: an interactive peer that is easy to script.
//!
//! Each line of stdin goes to every connected peer over a `chat` data channel; each message
//! received is printed as `<sender id>: <text>` and flushed at once. Status goes to stderr.
//!
//! The script commands make the calls of an action script ([`politely_sim::Script`]) toward
//! every peer, and `/state` prints what the application sees in the shape the simulator and
//! the browser tests print it, so the same script can run against a browser and natively.

use anyhow::Context as _;
use clap::Args;
use politely::{
    DataChannel, Direction, HeaderExtension, MediaKind, MediaPacket, Origin, PeerEvent, PeerHandle,
    PeerStats, RoomMessage, Session, SessionConfig, SessionEvent, Source, TrackLabel,
    TransceiverId,
};
use politely_sim::{EndState, Op, ReadyState};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

#[derive(Args, Debug)]
pub(crate) struct JoinArgs {
    /// The server, e.g. ws://127.0.0.1:8080.
    url: String,
    /// The room.
    room: String,
    /// A room token, for a server started with --secret.
    #[arg(long, env = "POLITELY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// For a wss:// server: a PEM file of certificate authorities to trust besides the
    /// webpki roots (a private deployment's CA, a self-signed certificate).
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// A local address to gather candidates on (repeat for several). By default: 127.0.0.1
    /// when the server is on loopback, every interface otherwise.
    #[arg(long)]
    bind: Vec<IpAddr>,
    /// Open no chat channel toward each peer: for action scripts, whose channels are all
    /// their own (typed lines other than commands are then never sent).
    #[arg(long)]
    no_chat: bool,
    /// Ask each peer before renegotiating, for a lease of this many milliseconds (the
    /// negotiation gate), instead of offering at once.
    #[arg(long, value_name = "MS")]
    gate: Option<u64>,
    /// Publish an audio track toward every peer (in an SFU room: to the SFU, which forwards
    /// it): 20 ms Opus frames of silence, each carrying this audio level (RFC 6464: 0 to 127,
    /// in -dBov), which a browser shows as the receiver's `audioLevel`. A native test source.
    #[arg(long, value_name = "DBOV", value_parser = clap::value_parser!(u8).range(0..=127))]
    publish_audio: Option<u8>,
    /// A TURN server to relay through, `turn:host:port` (repeat for several), with
    /// --turn-username and --turn-credential. A server started with --turn-url hands its own
    /// out: this is for one that does not.
    #[arg(long, value_name = "URL", requires_all = ["turn_username", "turn_credential"])]
    turn: Vec<String>,
    /// The username of --turn.
    #[arg(long, requires = "turn")]
    turn_username: Option<String>,
    /// The credential of --turn.
    #[arg(
        long,
        env = "POLITELY_TURN_CREDENTIAL",
        hide_env_values = true,
        requires = "turn"
    )]
    turn_credential: Option<String>,
    /// Use relay candidates only: every packet goes through a TURN server (given with --turn
    /// or by the signaling server), and no peer learns this machine's addresses.
    #[arg(long)]
    relay_only: bool,
    /// Logging (warnings by default).
    #[command(flatten)]
    log: crate::LogArgs,
}

/// Lines typed before any chat is open wait here, up to this many.
const HELD_LINES: usize = 1000;

pub(crate) fn run(args: &JoinArgs) -> anyhow::Result<ExitCode> {
    // Logs go to stderr with the status lines (warnings by default).
    args.log.init("warn")?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(join(args))
}

/// The certificates of a PEM file, as DER; none without a file.
pub(crate) fn trusted_certificates(file: Option<&std::path::Path>) -> anyhow::Result<Vec<Vec<u8>>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let Some(file) = file else {
        return Ok(Vec::new());
    };
    let certificates = CertificateDer::pem_file_iter(file)
        .with_context(|| format!("reading {}", file.display()))?
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {}", file.display()))?;
    anyhow::ensure!(
        !certificates.is_empty(),
        "{} holds no PEM certificate",
        file.display()
    );
    Ok(certificates)
}

fn status(line: std::fmt::Arguments<'_>) {
    eprintln!("politely: {line}");
}

async fn join(args: &JoinArgs) -> anyhow::Result<ExitCode> {
    let mut config = SessionConfig {
        token: args.token.clone(),
        trusted_certificates: trusted_certificates(args.ca.as_deref())?,
        ..SessionConfig::default()
    };
    if !args.turn.is_empty() {
        config.peer.ice_servers.push(politely::IceServer {
            urls: args.turn.clone(),
            username: args.turn_username.clone().unwrap_or_default(),
            credential: args.turn_credential.clone().unwrap_or_default(),
        });
    }
    if args.relay_only {
        config.peer.ice_transport_policy = politely::IceTransportPolicy::Relay;
    }
    if let Some(ms) = args.gate {
        config.peer.negotiation = politely::Negotiation::Gate {
            lease: std::time::Duration::from_millis(ms),
        };
    }
    config.peer.bind = crate::sfu::bind(&args.bind, &args.url);
    let mut session = Session::join(&args.url, &args.room, config).await?;
    status(format_args!("joined {} as {}", args.room, session.id()));

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    // Lines typed before any chat is open are held, and end of input waits for them.
    let mut stdin_open = true;
    // Our own chat channel toward each peer: where our lines go.
    let mut chats: BTreeMap<String, DataChannel> = BTreeMap::new();
    let mut held: Vec<String> = Vec::new();
    // What the script commands made toward each peer.
    let mut scripts: BTreeMap<String, Scripted> = BTreeMap::new();
    let mut stdout = std::io::stdout();
    // The audio we publish toward each peer, if asked: its writer, by peer.
    let mut published: BTreeMap<String, tokio::task::JoinHandle<()>> = BTreeMap::new();
    for peer in session.peers() {
        if !args.no_chat {
            open_chat(&peer, &mut chats).await;
        }
        if let Some(level) = args.publish_audio {
            publish_audio(&session, &peer, level, &mut published).await;
        }
    }
    loop {
        tokio::select! {
            line = lines.next_line(), if stdin_open => match line?.map(|l| (script_op(l.trim()), l)) {
                Some((Some(Ok(op)), _)) => act_on_all(&session, &mut scripts, &op).await,
                Some((Some(Err(e)), _)) => status(format_args!("act failed: {e}")),
                Some((None, line)) => match line.trim() {
                    "/quit" => break,
                    "/glare" => {
                        for peer in session.peers() {
                            renegotiate(&peer).await?;
                        }
                        status(format_args!("renegotiating with {} peer(s)", session.peers().len()));
                    }
                    "/stats" => {
                        for peer in session.peers() {
                            let stats = peer.stats().await?;
                            status(format_args!("stats {}", stats_json(peer.id(), &stats)));
                        }
                        status(format_args!("stats end"));
                    }
                    "/state" => {
                        for peer in session.peers() {
                            let stats = peer.stats().await?;
                            let scripted = scripts.entry(peer.id().to_owned()).or_default();
                            status(format_args!("state {}", state_json(peer.id(), &stats, scripted)));
                        }
                        status(format_args!("state end"));
                    }
                    "/restart" => {
                        for peer in session.peers() {
                            peer.restart_ice().await?;
                        }
                        status(format_args!("restarting ICE with {} peer(s)", session.peers().len()));
                    }
                    _ if line.is_empty() => {}
                    _ => {
                        let open: Vec<&DataChannel> = chats.values().filter(|c| c.is_open()).collect();
                        if open.is_empty() {
                            if held.len() < HELD_LINES {
                                held.push(line);
                            }
                        } else {
                            for chat in open {
                                chat.send_text(line.clone()).await?;
                            }
                        }
                    }
                },
                // End of input: once what was typed has gone out, leave.
                None => stdin_open = false,
            },
            event = session.next_event() => {
                let Some(event) = event else { break };
                match event {
                    SessionEvent::PeerJoined(peer) => {
                        status(format_args!("{} joined", peer.id()));
                        if !args.no_chat {
                            open_chat(&peer, &mut chats).await;
                        }
                        if let Some(level) = args.publish_audio {
                            publish_audio(&session, &peer, level, &mut published).await;
                        }
                    }
                    SessionEvent::PeerLeft { peer } => {
                        status(format_args!("{peer} left"));
                        chats.remove(&peer);
                        scripts.remove(&peer);
                        if let Some(writer) = published.remove(&peer) {
                            writer.abort();
                        }
                    }
                    SessionEvent::Peer { peer, event } => match event {
                        PeerEvent::Connected => status(format_args!("connected to {peer}")),
                        PeerEvent::Disconnected { state } => {
                            status(format_args!("{peer}: {state:?}"))
                        }
                        PeerEvent::ChannelOpen(channel) => {
                            status(format_args!("{peer}: channel {} open", channel.label()));
                            // A channel the peer made is known from here on, by its label.
                            scripts
                                .entry(peer.clone())
                                .or_default()
                                .channels
                                .entry(channel.label().to_owned())
                                .or_insert_with(|| channel.clone());
                            let ours = chats.get(&peer).is_some_and(|c| c.id() == channel.id());
                            if ours {
                                for line in held.drain(..) {
                                    channel.send_text(line).await?;
                                }
                            }
                        }
                        PeerEvent::Message { message, .. } => {
                            let text = match message.as_text() {
                                Some(text) => text.to_owned(),
                                None => format!("<{} bytes>", message.data.len()),
                            };
                            writeln!(stdout, "{peer}: {text}")?;
                            stdout.flush()?;
                        }
                        PeerEvent::Watchdog { cause, recovery } => {
                            status(format_args!("{peer}: watchdog {cause:?}, {recovery:?}"));
                            let note = format!("watchdog {cause:?}, {recovery:?}");
                            scripts.entry(peer).or_default().notes.push(note);
                        }
                        PeerEvent::Replaced { reason } => {
                            status(format_args!("{peer}: connection replaced ({reason:?})"))
                        }
                        PeerEvent::Error(e) => {
                            status(format_args!("{peer}: {e}"));
                            scripts.entry(peer).or_default().notes.push(e.to_string());
                        }
                        PeerEvent::StartFailed(e) => {
                            status(format_args!("{peer}: the connection could not start: {e}"))
                        }
                        _ => {}
                    },
                    SessionEvent::SignalingLost { reason } => {
                        status(format_args!("signaling lost ({reason}); resuming"))
                    }
                    SessionEvent::Reconnected { resumed, id } => {
                        status(format_args!("signaling back as {id} (resumed: {resumed})"))
                    }
                    SessionEvent::ServerError { code, message } => {
                        status(format_args!("server: {code}: {message}"))
                    }
                    SessionEvent::Ended { reason } => {
                        status(format_args!("session ended: {reason}"));
                        return Ok(ExitCode::FAILURE);
                    }
                    _ => {}
                }
            }
        }
        if !stdin_open && held.is_empty() {
            break;
        }
    }
    // What was sent reaches the peers before the `bye` does (bounded wait).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while chats
        .values()
        .any(|c| c.is_open() && c.buffered_amount() > 0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    session.leave().await;
    status(format_args!("left"));
    Ok(ExitCode::SUCCESS)
}

/// How many transceivers `/glare` adds toward a peer before it flips directions instead.
const GLARE_TRANSCEIVERS: usize = 2;

/// `/glare`: a change that renegotiates at once; typed on both sides at the same moment, the
/// offers collide. The first ones add a transceiver (audio, then video); later ones flip the
/// direction of one of ours, so any number of rounds keeps the session the same size.
async fn renegotiate(peer: &PeerHandle) -> anyhow::Result<()> {
    let stats = peer.stats().await?;
    let ours: Vec<_> = stats
        .transceivers
        .iter()
        .filter(|t| t.origin == Origin::Local)
        .collect();
    if ours.len() < GLARE_TRANSCEIVERS {
        let kind = if ours.is_empty() {
            MediaKind::Audio
        } else {
            MediaKind::Video
        };
        peer.add_transceiver(kind, Direction::SendRecv).await?;
    } else {
        let turn = stats.counters.offers + stats.counters.answers;
        let t = ours[turn as usize % ours.len()];
        let direction = if t.direction == Direction::SendRecv {
            Direction::RecvOnly
        } else {
            Direction::SendRecv
        };
        peer.set_direction(t.id, direction).await?;
    }
    Ok(())
}

/// `/stats`: one peer connection's state as one line of JSON, for scripts.
fn stats_json(peer: &str, stats: &PeerStats) -> serde_json::Value {
    let open: Vec<&str> = stats
        .channels
        .iter()
        .filter(|c| c.open)
        .map(|c| c.label.as_str())
        .collect();
    let c = &stats.counters;
    serde_json::json!({
        "peer": peer,
        "connectionId": stats.connection_id.to_string(),
        "polite": stats.polite,
        "settled": stats.is_settled(),
        "signalingState": format!("{:?}", stats.signaling_state),
        "connectionState": format!("{:?}", stats.connection_state),
        "iceControlling": stats.ice_controlling,
        "mids": stats.mids,
        "channels": open,
        "counters": {
            "offers": c.offers,
            "answers": c.answers,
            "rollbacks": c.rollbacks,
            "ignoredOffers": c.ignored_offers,
            "iceRestarts": c.ice_restarts,
            "hiddenCandidates": c.hidden_candidates,
            "watchdog": c.watchdog_firings,
            "replaced": c.connections_replaced,
            "leaseRequests": c.lease_requests,
            "leasesGranted": c.leases_granted,
            "leasesUsed": c.leases_used,
        },
    })
}

/// What the script commands made toward one peer.
#[derive(Default)]
struct Scripted {
    /// The transceivers they created, in call order: a script step's `index`.
    created: Vec<TransceiverId>,
    /// Every channel made here or by the peer, by label.
    channels: BTreeMap<String, DataChannel>,
    /// Errors and watchdog firings on the connection, shown by `/state`.
    notes: Vec<String>,
}

/// A script command, or `None` if the line is not one: a script step's JSON after `/act`
/// (`/act {"op":"addTrack","kind":"video"}`, what the browser tests send), or the same calls
/// as words, for people:
///
/// ```text
/// /add-transceiver audio|video [sendrecv|sendonly|recvonly|inactive]
/// /add-track audio|video
/// /remove-track INDEX
/// /direction INDEX sendrecv|sendonly|recvonly|inactive
/// /channel LABEL
/// /close-channel LABEL
/// ```
///
/// INDEX counts the transceivers this peer's commands created, from 0. Words are turned into
/// the step's JSON, so both forms are read by one parser.
fn script_op(line: &str) -> Option<Result<Op, String>> {
    let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
    if command == "/act" {
        return Some(serde_json::from_str(rest).map_err(|e| e.to_string()));
    }
    let words: Vec<&str> = rest.split_whitespace().collect();
    let index = |word: &str| -> Result<serde_json::Value, String> {
        word.parse::<u64>()
            .map(Into::into)
            .map_err(|_| format!("{word:?} is not a transceiver index"))
    };
    let json = match (command, words.as_slice()) {
        ("/add-transceiver", [kind]) => {
            Ok(serde_json::json!({"op": "addTransceiver", "kind": kind, "direction": "sendrecv"}))
        }
        ("/add-transceiver", [kind, direction]) => {
            Ok(serde_json::json!({"op": "addTransceiver", "kind": kind, "direction": direction}))
        }
        ("/add-track", [kind]) => Ok(serde_json::json!({"op": "addTrack", "kind": kind})),
        ("/remove-track", [i]) => {
            index(i).map(|i| serde_json::json!({"op": "removeTrack", "index": i}))
        }
        ("/direction", [i, direction]) => index(i)
            .map(|i| serde_json::json!({"op": "setDirection", "index": i, "direction": direction})),
        ("/channel", [label]) => Ok(serde_json::json!({"op": "createDataChannel", "label": label})),
        ("/close-channel", [label]) => {
            Ok(serde_json::json!({"op": "closeDataChannel", "label": label}))
        }
        (
            "/add-transceiver" | "/add-track" | "/remove-track" | "/direction" | "/channel"
            | "/close-channel",
            _,
        ) => Err(format!("{command}: wrong arguments")),
        _ => return None,
    };
    Some(json.and_then(|j| serde_json::from_value(j).map_err(|e| e.to_string())))
}

/// Makes one script call toward every peer; says `act ok` or `act failed: ...` on stderr,
/// once per command, so a script can wait for it.
async fn act_on_all(session: &Session, scripts: &mut BTreeMap<String, Scripted>, op: &Op) {
    let peers = session.peers();
    if peers.is_empty() {
        status(format_args!("act failed: no peer to act on"));
        return;
    }
    let mut failures = Vec::new();
    for peer in peers {
        let scripted = scripts.entry(peer.id().to_owned()).or_default();
        if let Err(e) = act(&peer, scripted, op).await {
            failures.push(format!("{}: {e}", peer.id()));
        }
    }
    if failures.is_empty() {
        status(format_args!("act ok"));
    } else {
        status(format_args!("act failed: {}", failures.join("; ")));
    }
}

async fn act(peer: &PeerHandle, scripted: &mut Scripted, op: &Op) -> anyhow::Result<()> {
    let index = |i: usize| {
        scripted
            .created
            .get(i)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("no transceiver {i}"))
    };
    match op {
        Op::AddTransceiver { kind, direction } => {
            let id = peer.add_transceiver(*kind, *direction).await?;
            scripted.created.push(id);
        }
        Op::AddTrack { kind } => {
            let id = peer.add_track(*kind).await?;
            scripted.created.push(id);
        }
        Op::RemoveTrack { index: i } => peer.remove_track(index(*i)?).await?,
        Op::SetDirection {
            index: i,
            direction,
        } => peer.set_direction(index(*i)?, *direction).await?,
        Op::CreateDataChannel { label } => {
            let channel = peer.create_data_channel(label, Default::default()).await?;
            scripted.channels.insert(label.clone(), channel);
        }
        Op::CloseDataChannel { label } => {
            let channel = scripted
                .channels
                .get(label)
                .ok_or_else(|| anyhow::anyhow!("no channel labelled {label}"))?;
            channel.close().await;
        }
        Op::RestartIce => peer.restart_ice().await?,
    }
    Ok(())
}

/// `/state`: one peer connection as its application sees it, in the shape of
/// [`EndState`] (what `politely sim --script` prints per peer and the browser tests' page
/// reports), plus whether it is settled.
fn state_json(peer: &str, stats: &PeerStats, scripted: &Scripted) -> serde_json::Value {
    let channels = scripted.channels.iter().map(|(label, c)| {
        let state = if c.is_closed() {
            ReadyState::Closed
        } else if c.is_open() {
            ReadyState::Open
        } else {
            ReadyState::Connecting
        };
        (label.clone(), state)
    });
    let state = EndState::observe(
        stats.signaling_state,
        &stats.transceivers,
        &scripted.created,
        channels,
    );
    let mut json =
        serde_json::to_value(&state).expect("invariant: an end state has only string keys");
    json["peer"] = peer.into();
    json["polite"] = stats.polite.into();
    json["busy"] = (!stats.is_settled()).into();
    json["connectionState"] = format!("{:?}", stats.connection_state)
        .to_lowercase()
        .into();
    json["notes"] = scripted.notes.clone().into();
    json
}

/// Opens our chat channel toward `peer`.
/// `--publish-audio`: says the track's source (for an SFU; dropped in a room without one), adds
/// it and writes a frame every 20 ms until the connection goes.
async fn publish_audio(
    session: &Session,
    peer: &PeerHandle,
    level: u8,
    published: &mut BTreeMap<String, tokio::task::JoinHandle<()>>,
) {
    if published.contains_key(peer.id()) {
        return;
    }
    let track = format!("{}-audio", session.id());
    let publish = RoomMessage::Publish {
        track: track.clone(),
        source: Source::Media,
    };
    if let Err(e) = session.send_room_message(publish).await {
        status(format_args!("cannot publish: {e}"));
        return;
    }
    let label = TrackLabel {
        stream_id: session.id(),
        track_id: track,
    };
    let id = match peer
        .add_labelled_transceiver(MediaKind::Audio, Direction::SendOnly, label)
        .await
    {
        Ok(id) => id,
        Err(e) => {
            status(format_args!("{}: cannot publish: {e}", peer.id()));
            return;
        }
    };
    status(format_args!("publishing audio to {}", peer.id()));
    let name = peer.id().to_owned();
    let peer = peer.clone();
    let writer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for n in 0u32.. {
            tick.tick().await;
            let packet = MediaPacket {
                transceiver: id,
                payload_type: 0,
                sequence_number: n as u16,
                timestamp: n.wrapping_mul(960),
                marker: n == 0,
                // The voice-activity bit, and the level.
                extensions: vec![(HeaderExtension::AudioLevel, vec![0x80 | level])],
                // An Opus frame of 20 ms of silence (RFC 6716 §3.1: config 31, one frame).
                payload: vec![0xf8, 0xff, 0xfe],
            };
            if peer.write_rtp(id, packet).await.is_err() {
                return;
            }
        }
    });
    published.insert(name, writer);
}

async fn open_chat(peer: &PeerHandle, chats: &mut BTreeMap<String, DataChannel>) {
    if chats.contains_key(peer.id()) {
        return;
    }
    match peer.create_data_channel("chat", Default::default()).await {
        Ok(channel) => {
            chats.insert(peer.id().to_owned(), channel);
        }
        Err(e) => status(format_args!("{}: cannot open a chat: {e}", peer.id())),
    }
}

/// The loopback address a URL's host is on (`::1` for `[::1]`, `127.0.0.1` for `127.x` and
/// `localhost`), or `None` for any other host (or no URL).
pub(crate) fn loopback_of_url(url: &str) -> Option<IpAddr> {
    match politely_proto::server_url(url).ok()?.host()? {
        url::Host::Domain(name) => (name == "localhost").then(|| IpAddr::from([127, 0, 0, 1])),
        url::Host::Ipv4(ip) => ip.is_loopback().then(|| IpAddr::from([127, 0, 0, 1])),
        url::Host::Ipv6(ip) => ip.is_loopback().then_some(IpAddr::V6(ip)),
    }
}

#[cfg(test)]
mod tests {
    use super::{loopback_of_url, trusted_certificates};

    #[test]
    fn loopback_urls() {
        let v4 = Some("127.0.0.1".parse().unwrap());
        assert_eq!(loopback_of_url("ws://127.0.0.1:8080"), v4);
        assert_eq!(loopback_of_url("ws://127.0.0.2:8080/ws"), v4);
        assert_eq!(loopback_of_url("wss://localhost/ws"), v4);
        assert_eq!(
            loopback_of_url("ws://[::1]:8080/ws"),
            Some("::1".parse().unwrap())
        );
        assert_eq!(loopback_of_url("ws://[2001:db8::1]:8080"), None);
        assert_eq!(loopback_of_url("ws://example.org:8080"), None);
    }

    #[test]
    fn a_pem_file_gives_its_certificates() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let dir = std::env::temp_dir().join(format!("politely-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = dir.join("ca.pem");
        std::fs::write(&pem, certificate.pem()).unwrap();
        assert_eq!(
            trusted_certificates(Some(&pem)).unwrap(),
            vec![certificate.der().to_vec()]
        );
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        assert!(trusted_certificates(Some(&empty)).is_err());
        assert!(trusted_certificates(None).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
