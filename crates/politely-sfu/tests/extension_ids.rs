//! A header extension crosses the room between connections that gave it different ids: the
//! publisher's connection negotiated RFC 6464's audio level under id 7, the subscriber's under
//! id 1 (the engine's own). On the wire (SRTP leaves the RTP header in the clear) the
//! publisher's packets carry id 7 and the subscriber's id 1, and the subscriber gets the
//! level the publisher wrote: the room rewrote the id by URI. Copied as it came, the extension
//! would reach the subscriber under an id it does not know and be dropped.

use politely_core::{
    Config, Direction, Engine, Event, HeaderExtension, MediaKind, MediaPacket, Output, Role,
    Signal, TrackLabel,
};
use politely_proto::signal::Payload;
use politely_sfu::{Room, RoomConfig, RoomOutput, ToClient};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// A client of the room and whether its signals are rewritten on the way, both ways.
struct Client {
    id: &'static str,
    engine: Engine,
    renumber: bool,
    events: Vec<Event>,
}

/// The audio level renumbered from 1 to 7 in a description; what a browser or another stack
/// that orders its extensions differently offers.
fn renumbered(mut signal: Signal) -> Signal {
    if let Payload::Description { description, .. } = &mut signal.payload {
        description.sdp = description.sdp.replace(
            &format!("a=extmap:1 {AUDIO_LEVEL}"),
            &format!("a=extmap:7 {AUDIO_LEVEL}"),
        );
    }
    signal
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// What was seen on the way: each description's audio-level `a=extmap` line, and the
/// extension ids of each RTP packet on the wire, by client.
#[derive(Default)]
struct Seen {
    extmaps: Vec<String>,
    wire_ids: Vec<(&'static str, Vec<u8>)>,
}

/// The one-byte header extension ids (RFC 8285) of an RTP packet; `None` for anything else
/// (STUN, DTLS, RTCP, an RTP packet without extensions).
fn extension_ids(datagram: &[u8]) -> Option<Vec<u8>> {
    let first = *datagram.first()?;
    let second = *datagram.get(1)?;
    if !(128..=191).contains(&first) || (192..=223).contains(&second) || first & 0x10 == 0 {
        return None;
    }
    let start = 12 + 4 * usize::from(first & 0x0f);
    let header = datagram.get(start..start + 4)?;
    if header[..2] != [0xbe, 0xde] {
        return None;
    }
    let words = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let body = datagram.get(start + 4..start + 4 + 4 * words)?;
    let mut ids = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let id = body[i] >> 4;
        if id == 0 {
            i += 1; // padding
            continue;
        }
        ids.push(id);
        i += 2 + usize::from(body[i] & 0x0f);
    }
    Some(ids)
}

/// Moves everything the room and the clients have for each other; whether anything moved.
fn deliver(room: &mut Room, clients: &mut [Client], now: Instant, seen: &mut Seen) -> bool {
    let mut moved = false;
    for client in clients.iter_mut() {
        while let Some(output) = client.engine.poll_output() {
            moved = true;
            match output {
                Output::Signal(signal) => {
                    let signal = if client.renumber {
                        renumbered(signal)
                    } else {
                        signal
                    };
                    note_extmap(&signal, client.id, "to the room", seen);
                    room.handle_signal(now, client.id, signal)
                        .expect("the client's signals are valid");
                }
                Output::Transmit(t) => {
                    if let Some(ids) = extension_ids(&t.contents) {
                        seen.wire_ids.push((client.id, ids));
                    }
                    room.handle_datagram(now, client.id, t.source, t.destination, &t.contents)
                }
                Output::Event(event) => client.events.push(event),
            }
        }
    }
    while let Some(output) = room.poll_output() {
        moved = true;
        match output {
            RoomOutput::Signal {
                to,
                message: ToClient::Negotiation(signal),
            } => {
                let client = clients.iter_mut().find(|c| c.id == to).expect("a client");
                let signal = if client.renumber {
                    renumbered(signal)
                } else {
                    signal
                };
                note_extmap(&signal, client.id, "from the room", seen);
                client
                    .engine
                    .handle_signal(now, signal)
                    .expect("the room's signals are valid");
            }
            RoomOutput::Signal { .. } | RoomOutput::Event { .. } => {}
            RoomOutput::Transmit { client, transmit } => {
                let client = clients
                    .iter_mut()
                    .find(|c| c.id == client)
                    .expect("a client");
                if let Some(ids) = extension_ids(&transmit.contents) {
                    seen.wire_ids.push((client.id, ids));
                }
                client.engine.handle_datagram(
                    now,
                    transmit.source,
                    transmit.destination,
                    &transmit.contents,
                );
            }
        }
    }
    moved
}

/// Records the audio level's `a=extmap` line of each description, by connection.
fn note_extmap(signal: &Signal, client: &str, way: &str, seen: &mut Seen) {
    if let Payload::Description { description, .. } = &signal.payload
        && let Some(line) = description
            .sdp
            .lines()
            .find(|l| l.starts_with("a=extmap:") && l.ends_with(AUDIO_LEVEL))
    {
        seen.extmaps.push(format!("{client} {way}: {line}"));
    }
}

/// The room, its clients and the virtual clock.
struct World {
    room: Room,
    clients: Vec<Client>,
    now: Instant,
    seen: Seen,
}

impl World {
    /// Runs everything for `span` of virtual time, in steps of at most 5 ms.
    fn run(&mut self, span: Duration) {
        let World {
            room,
            clients,
            now,
            seen,
        } = self;
        let end = *now + span;
        while *now < end {
            while deliver(room, clients, *now, seen) {}
            let mut next = (*now + Duration::from_millis(5)).min(end);
            if let Some(t) = room.poll_timeout() {
                next = next.min(t.max(*now));
            }
            for c in clients.iter_mut() {
                if let Some(t) = c.engine.poll_timeout() {
                    next = next.min(t.max(*now));
                }
            }
            *now = next.max(*now + Duration::from_micros(100)).min(end);
            room.handle_timeout(*now);
            for c in clients.iter_mut() {
                if c.engine.poll_timeout().is_some_and(|t| t <= *now) {
                    c.engine.handle_timeout(*now);
                }
            }
        }
        while deliver(room, clients, *now, seen) {}
    }
}

#[test]
fn the_room_rewrites_an_extension_id_between_connections() {
    // A test may read the clock once for its epoch; everything after is virtual.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut room = Room::new(RoomConfig::default(), now);
    let mut clients = Vec::new();
    for (i, (id, renumber)) in [("publisher", true), ("subscriber", false)]
        .into_iter()
        .enumerate()
    {
        let port = 5000 + i as u16;
        let mut config = Config::new(Role::Polite, vec![addr(port)]);
        config.seed = 10 + i as u64;
        let mut room_side = Config::new(Role::Impolite, vec![addr(port + 100)]);
        room_side.seed = 20 + i as u64;
        room.add_client(now, id.to_owned(), room_side).unwrap();
        let mut engine = Engine::new(config, now).unwrap();
        // A channel brings the connection up, as an application's chat would.
        engine
            .create_data_channel("chat", Default::default())
            .unwrap();
        clients.push(Client {
            id,
            engine,
            renumber,
            events: Vec::new(),
        });
    }
    let mut world = World {
        room,
        clients,
        now,
        seen: Seen::default(),
    };
    world.run(Duration::from_secs(2));
    assert!(
        world.clients.iter().all(|c| c
            .events
            .iter()
            .any(|e| matches!(e, Event::ChannelOpen { .. }))),
        "both clients connect (their chat channels open)"
    );

    let track = world.clients[0]
        .engine
        .add_labelled_transceiver(
            MediaKind::Audio,
            Direction::SendOnly,
            TrackLabel {
                stream_id: "publisher".into(),
                track_id: "mic".into(),
            },
        )
        .unwrap();
    world.run(Duration::from_secs(2));
    // The two connections did negotiate different ids: 7 on the publisher's, 1 on the
    // subscriber's.
    let extmaps = &world.seen.extmaps;
    assert!(
        extmaps
            .iter()
            .any(|l| l.starts_with("publisher") && l.contains("a=extmap:7 ")),
        "{extmaps:#?}"
    );
    assert!(
        extmaps
            .iter()
            .any(|l| l.starts_with("subscriber") && l.contains("a=extmap:1 ")),
        "{extmaps:#?}"
    );
    assert!(
        !extmaps
            .iter()
            .any(|l| l.starts_with("subscriber") && l.contains("a=extmap:7 ")),
        "{extmaps:#?}"
    );

    let levels: Vec<u8> = vec![0x80 | 42, 30, 127];
    for (n, level) in levels.iter().enumerate() {
        let packet = MediaPacket {
            transceiver: track,
            payload_type: 0,
            sequence_number: n as u16,
            timestamp: 960 * n as u32,
            marker: false,
            extensions: vec![(HeaderExtension::AudioLevel, vec![*level])],
            payload: vec![0xf8, 0xff, 0xfe],
        };
        assert!(world.clients[0].engine.write_rtp(track, &packet).unwrap());
        world.run(Duration::from_millis(20));
    }
    let heard: Vec<Vec<(HeaderExtension, Vec<u8>)>> = world.clients[1]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Media(p) => Some(p.extensions.clone()),
            _ => None,
        })
        .collect();
    let wanted: Vec<_> = levels
        .iter()
        .map(|l| vec![(HeaderExtension::AudioLevel, vec![*l])])
        .collect();
    assert_eq!(heard, wanted);
    // On the wire: every packet with extensions carries the audio level under its link's id.
    let on = |client: &str| -> Vec<Vec<u8>> {
        world
            .seen
            .wire_ids
            .iter()
            .filter(|(c, _)| *c == client)
            .map(|(_, ids)| ids.clone())
            .collect()
    };
    assert_eq!(on("publisher"), vec![vec![7]; levels.len()]);
    assert_eq!(on("subscriber"), vec![vec![1]; levels.len()]);
}
