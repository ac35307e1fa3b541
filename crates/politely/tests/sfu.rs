//! An SFU room through a real politely server on loopback: native clients publish, receive
//! each other's tracks through the SFU by publisher and source, relay chat, and unpublish.

mod util;

use politely::{
    AvailableTrack, Direction, HeaderExtension, MediaKind, MediaPacket, Negotiation, PeerEvent,
    PeerHandle, RoomMessage, Session, SessionConfig, SessionEvent, Sfu, SfuConfig, Source,
    TrackLabel, TransceiverId,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use util::TestServer;

/// A client of the room: its session, its connection to the SFU, and what it saw.
struct Client {
    session: Session,
    sfu: Option<PeerHandle>,
    /// The last track list the SFU sent.
    tracks: Vec<AvailableTrack>,
    /// Receiving transceivers and the (publisher, track) they carry.
    receiving: BTreeMap<TransceiverId, (String, String)>,
    /// Packets per receiving transceiver.
    packets: BTreeMap<TransceiverId, u64>,
    /// Messages by channel label.
    messages: BTreeMap<String, Vec<String>>,
    /// Peers it was told left.
    left: Vec<String>,
    /// The header extensions of the last packet received, per receiving transceiver.
    extensions: BTreeMap<TransceiverId, Vec<(HeaderExtension, Vec<u8>)>>,
}

impl Client {
    async fn join(server: &TestServer, gate: bool) -> Client {
        let mut config = SessionConfig::loopback();
        if gate {
            config.peer.negotiation = Negotiation::Gate {
                lease: Duration::from_millis(500),
            };
        }
        Client {
            session: Session::join(&server.url(), "call", config).await.unwrap(),
            sfu: None,
            tracks: Vec::new(),
            receiving: BTreeMap::new(),
            packets: BTreeMap::new(),
            messages: BTreeMap::new(),
            extensions: BTreeMap::new(),
            left: Vec::new(),
        }
    }

    fn id(&self) -> String {
        self.session.id()
    }

    /// Takes events for up to `wait`, or until `done` holds.
    async fn pump(&mut self, wait: Duration, done: impl Fn(&Client) -> bool) {
        let deadline = tokio::time::Instant::now() + wait;
        while !done(self) {
            let Ok(Some(event)) =
                tokio::time::timeout_at(deadline, self.session.next_event()).await
            else {
                return;
            };
            match event {
                SessionEvent::PeerJoined(peer) => self.sfu = Some(peer),
                SessionEvent::PeerLeft { peer } => self.left.push(peer),
                SessionEvent::Room {
                    message: RoomMessage::Tracks(list),
                    ..
                } => self.tracks = list,
                SessionEvent::Peer { event, .. } => match event {
                    PeerEvent::TrackAdded {
                        transceiver,
                        label: Some(label),
                        ..
                    } => {
                        self.receiving
                            .insert(transceiver, (label.stream_id, label.track_id));
                    }
                    PeerEvent::TrackRemoved { transceiver } => {
                        self.receiving.remove(&transceiver);
                        self.packets.remove(&transceiver);
                    }
                    PeerEvent::Media(packet) => {
                        *self.packets.entry(packet.transceiver).or_default() += 1;
                        self.extensions
                            .insert(packet.transceiver, packet.extensions);
                    }
                    PeerEvent::Message {
                        message, channel, ..
                    } => {
                        self.messages
                            .entry(channel.label().to_owned())
                            .or_default()
                            .push(message.as_text().unwrap_or_default().to_owned());
                    }
                    PeerEvent::Error(e) => panic!("{}: {e}", self.id()),
                    _ => {}
                },
                _ => {}
            }
        }
    }

    /// The (publisher, source) of every track it receives packets of.
    fn receives(&self) -> BTreeSet<(String, Source)> {
        self.receiving
            .iter()
            .filter(|(t, _)| self.packets.get(t).copied().unwrap_or(0) > 0)
            .filter_map(|(_, (publisher, track))| {
                let listed = self.tracks.iter().find(|a| a.id == *track)?;
                assert_eq!(listed.publisher, *publisher, "msid stream id = publisher");
                Some((publisher.clone(), listed.source))
            })
            .collect()
    }
}

/// Publishes a video track named `<id>-<name>` with its source, and writes a frame every
/// 20 ms until the task is aborted.
async fn publish(
    client: &Client,
    name: &str,
    source: Source,
) -> (TransceiverId, tokio::task::JoinHandle<()>) {
    let sfu = client.sfu.clone().expect("connected to the SFU");
    let track = format!("{}-{name}", client.id());
    client
        .session
        .send_room_message(RoomMessage::Publish {
            track: track.clone(),
            source,
        })
        .await
        .unwrap();
    let id = sfu
        .add_labelled_transceiver(
            MediaKind::Video,
            Direction::SendOnly,
            TrackLabel {
                stream_id: client.id(),
                track_id: track,
            },
        )
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            let frame = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0, 0, 0, 0];
            if sfu
                .write_sample(id, frame, Duration::from_millis(20))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    (id, writer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_receive_each_other_through_the_sfu_and_see_unpublish() {
    three_clients(false).await;
}

/// A publisher that packetizes its own audio (`write_rtp`) and names the audio level of each
/// packet: the subscriber gets the level it wrote, carried through the SFU by URI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audio_level_a_publisher_writes_reaches_the_subscriber() {
    let server = TestServer::start().await;
    let _sfu = Sfu::join(&server.url(), "call", SfuConfig::loopback())
        .await
        .unwrap();
    let mut a = Client::join(&server, false).await;
    a.pump(Duration::from_secs(5), |c| c.sfu.is_some()).await;
    let mut b = Client::join(&server, false).await;
    b.pump(Duration::from_secs(5), |c| c.sfu.is_some()).await;
    let sfu = a.sfu.clone().unwrap();
    let track = format!("{}-mic", a.id());
    a.session
        .send_room_message(RoomMessage::Publish {
            track: track.clone(),
            source: Source::Media,
        })
        .await
        .unwrap();
    let id = sfu
        .add_labelled_transceiver(
            MediaKind::Audio,
            Direction::SendOnly,
            TrackLabel {
                stream_id: a.id(),
                track_id: track,
            },
        )
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for n in 0u16.. {
            tick.tick().await;
            let packet = MediaPacket {
                transceiver: id,
                payload_type: 0,
                sequence_number: n,
                timestamp: u32::from(n) * 960,
                marker: false,
                extensions: vec![(HeaderExtension::AudioLevel, vec![0x80 | 42])],
                payload: vec![0xf8, 0xff, 0xfe],
            };
            if sfu.write_rtp(id, packet).await.is_err() {
                return;
            }
        }
    });
    let heard = |c: &Client| {
        c.extensions
            .values()
            .any(|e| *e == [(HeaderExtension::AudioLevel, vec![0x80 | 42])])
    };
    b.pump(Duration::from_secs(10), heard).await;
    writer.abort();
    assert!(heard(&b), "b received {:?}", b.extensions);
}

/// The SFU's signaling connection drops: it resumes its id, the clients never see it leave,
/// media keeps flowing, and a client that joins afterwards is served like the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sfu_whose_signaling_drops_resumes_and_serves_a_new_client() {
    let server = TestServer::start().await;
    let proxy = util::CutProxy::start(server.addr).await;
    let sfu = Sfu::join(&proxy.url(), "call", SfuConfig::loopback())
        .await
        .unwrap();
    let id = sfu.id();
    let mut a = Client::join(&server, false).await;
    a.pump(Duration::from_secs(5), |c| c.sfu.is_some()).await;
    let mut b = Client::join(&server, false).await;
    b.pump(Duration::from_secs(5), |c| c.sfu.is_some()).await;
    let (_, writer) = publish(&a, "cam", Source::Media).await;
    let from_a: BTreeSet<(String, Source)> = [(a.id(), Source::Media)].into();
    b.pump(Duration::from_secs(10), |c| c.receives() == from_a)
        .await;
    assert_eq!(b.receives(), from_a);

    proxy.cut();
    // A new client joins while the SFU may still be away; it is served once it is back.
    let mut c = Client::join(&server, false).await;
    c.pump(Duration::from_secs(10), |c| c.receives() == from_a)
        .await;
    assert_eq!(
        c.receives(),
        from_a,
        "the client that joined after the drop"
    );
    assert_eq!(sfu.id(), id, "the SFU resumed its id");
    // b never saw the SFU leave, and its track still carries packets.
    let before = b.packets.values().sum::<u64>();
    b.pump(Duration::from_millis(500), |_| false).await;
    assert!(
        b.packets.values().sum::<u64>() > before,
        "media after the drop"
    );
    assert_eq!(b.left, Vec::<String>::new(), "b saw the SFU leave");
    writer.abort();
}

/// The same with every client asking the SFU before it renegotiates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gated_clients_receive_each_other_through_the_sfu() {
    three_clients(true).await;
}

async fn three_clients(gate: bool) {
    let server = TestServer::start().await;
    let sfu = Sfu::join(&server.url(), "call", SfuConfig::loopback())
        .await
        .unwrap();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = Client::join(&server, gate).await;
        c.pump(Duration::from_secs(5), |c| c.sfu.is_some()).await;
        let peer = c.sfu.as_ref().expect("the session connects to the SFU");
        assert_eq!(peer.id(), sfu.id(), "and to nobody else");
        clients.push(c);
    }
    // Everyone publishes at once: a camera, and the last one a screen.
    let mut writers = Vec::new();
    let mut tracks = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let source = if i == 2 {
            Source::Screen
        } else {
            Source::Media
        };
        let (id, writer) = publish(c, "cam", source).await;
        tracks.push(id);
        writers.push(writer);
    }
    let ids: Vec<String> = clients.iter().map(Client::id).collect();
    let expected = |me: usize| -> BTreeSet<(String, Source)> {
        (0..3)
            .filter(|&i| i != me)
            .map(|i| {
                let source = if i == 2 {
                    Source::Screen
                } else {
                    Source::Media
                };
                (ids[i].clone(), source)
            })
            .collect()
    };
    for (i, c) in clients.iter_mut().enumerate() {
        let want = expected(i);
        c.pump(Duration::from_secs(10), |c| c.receives() == want)
            .await;
        assert_eq!(c.receives(), want, "client {i}");
    }
    // Chat through the SFU: each client's channel reaches the others as `<id>/chat`.
    let peer = clients[0].sfu.clone().unwrap();
    let chat = peer
        .create_data_channel("chat", Default::default())
        .await
        .unwrap();
    chat.opened().await.unwrap();
    let label = format!("{}/chat", ids[0]);
    // The relay opens when the room sees the channel; send until it has arrived.
    for c in clients.iter_mut().skip(1) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !c.messages.contains_key(&label) && tokio::time::Instant::now() < deadline {
            chat.send_text("hello room").await.unwrap();
            c.pump(Duration::from_millis(100), |c| {
                c.messages.contains_key(&label)
            })
            .await;
        }
        assert_eq!(
            c.messages
                .get(&label)
                .and_then(|m| m.first())
                .map(String::as_str),
            Some("hello room"),
            "{label} at {}",
            c.id()
        );
    }
    // Client 1 unpublishes: the others stop receiving it.
    writers[1].abort();
    clients[1]
        .sfu
        .as_ref()
        .unwrap()
        .remove_track(tracks[1])
        .await
        .unwrap();
    for i in [0, 2] {
        let mut want = expected(i);
        want.retain(|(p, _)| *p != ids[1]);
        let c = &mut clients[i];
        c.pump(Duration::from_secs(10), |c| {
            c.receives() == want && c.receiving.values().all(|(p, _)| *p != ids[1])
        })
        .await;
        assert_eq!(c.receives(), want, "after unpublish: client {i}");
        assert!(c.tracks.iter().all(|t| t.publisher != ids[1]));
    }
    let counters = sfu.counters();
    assert!(
        counters.packets_forwarded > 0 && counters.keyframe_requests > 0,
        "{counters:?}"
    );
    for w in writers {
        w.abort();
    }
    sfu.leave().await.unwrap();
}
