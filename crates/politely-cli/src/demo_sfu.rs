//! `politely demo --sfu`: three native clients and an SFU through an embedded server. They
//! publish at the same instant (their offers cross the SFU's), each prints what it receives,
//! one unpublishes, one shares a screen, and the others see it.

use crate::native::Embedded;
use politely::{
    AvailableTrack, Direction, MediaKind, PeerEvent, PeerHandle, RoomMessage, Session,
    SessionConfig, SessionEvent, Sfu, SfuConfig, Source, TrackLabel, TransceiverId,
};
use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const NAMES: [&str; 3] = ["ana", "ben", "cho"];

/// One demo client and what it saw.
struct Client {
    name: &'static str,
    session: Session,
    sfu: PeerHandle,
    tracks: Vec<AvailableTrack>,
    receiving: BTreeMap<TransceiverId, (String, String)>,
    packets: BTreeMap<TransceiverId, u64>,
}

impl Client {
    /// What it receives now: (publisher's name, source), for tracks that deliver packets.
    fn receives(&self, names: &BTreeMap<String, &'static str>) -> BTreeSet<(String, Source)> {
        self.receiving
            .iter()
            .filter(|(t, _)| self.packets.get(t).copied().unwrap_or(0) > 0)
            .filter_map(|(_, (publisher, track))| {
                let source = self.tracks.iter().find(|a| a.id == *track)?.source;
                Some((
                    names.get(publisher).copied().unwrap_or("?").to_owned(),
                    source,
                ))
            })
            .collect()
    }

    async fn pump_for(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(event)) =
            tokio::time::timeout_at(deadline, self.session.next_event()).await
        {
            match event {
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
                        self.packets.remove(&transceiver);
                    }
                    PeerEvent::TrackRemoved { transceiver } => {
                        self.receiving.remove(&transceiver);
                        self.packets.remove(&transceiver);
                    }
                    PeerEvent::Media(p) => *self.packets.entry(p.transceiver).or_default() += 1,
                    _ => {}
                },
                _ => {}
            }
        }
    }
}

pub(crate) async fn demo() -> anyhow::Result<ExitCode> {
    let server = Embedded::start().await?;
    println!("server   ws://{} (embedded, loopback only)", server.addr);
    let start = Instant::now();
    let sfu = Sfu::join(&server.url(), "demo", SfuConfig::loopback()).await?;
    println!(
        "sfu      joined as {} (every client is polite toward it)",
        sfu.id()
    );
    let mut clients = Vec::new();
    let mut names = BTreeMap::new();
    for name in NAMES {
        let mut session = Session::join(&server.url(), "demo", SessionConfig::loopback()).await?;
        let sfu_peer = loop {
            match session.next_event().await {
                Some(SessionEvent::PeerJoined(peer)) => break peer,
                Some(_) => {}
                None => anyhow::bail!("{name}'s session ended"),
            }
        };
        println!(
            "{name:<8} joined as {}, connected to the SFU only",
            session.id()
        );
        names.insert(session.id(), name);
        clients.push(Client {
            name,
            session,
            sfu: sfu_peer,
            tracks: Vec::new(),
            receiving: BTreeMap::new(),
            packets: BTreeMap::new(),
        });
    }
    // Everyone publishes a camera at the same instant: their offers cross the SFU's own.
    let mut writers = Vec::new();
    let mut cams = Vec::new();
    for c in &clients {
        let (id, writer) = publish(c, "cam", Source::Media).await?;
        cams.push(id);
        writers.push(writer);
    }
    println!("all      publish a camera at once");
    let all_settled = |clients: &[Client], names: &BTreeMap<String, &'static str>, want: usize| {
        clients.iter().all(|c| c.receives(names).len() == want)
    };
    settle(&mut clients, &names, |cs, n| all_settled(cs, n, 2)).await;
    print_receives(&clients, &names, start);

    // ben unpublishes; cho shares a screen at the same moment.
    writers[1].abort();
    clients[1].sfu.remove_track(cams[1]).await?;
    let (_, screen) = publish(&clients[2], "screen", Source::Screen).await?;
    writers.push(screen);
    println!("ben      stops his camera; cho shares a screen at the same moment");
    settle(&mut clients, &names, |cs, n| {
        cs[0].receives(n).len() == 2 && cs[1].receives(n).len() == 3 && cs[2].receives(n).len() == 1
    })
    .await;
    print_receives(&clients, &names, start);
    let counters = sfu.counters();
    println!(
        "sfu      {} packets in, {} forwarded, {} keyframe requests, {} transceivers added, {} reused",
        counters.packets_received,
        counters.packets_forwarded,
        counters.keyframe_requests,
        counters.transceivers_added,
        counters.transceivers_reused
    );
    for w in writers {
        w.abort();
    }
    for c in clients {
        c.session.leave().await;
    }
    sfu.leave().await?;
    server.stop().await?;
    Ok(ExitCode::SUCCESS)
}

/// Lets every client take events until `done` holds (or 10 s pass).
async fn settle(
    clients: &mut [Client],
    names: &BTreeMap<String, &'static str>,
    done: impl Fn(&[Client], &BTreeMap<String, &'static str>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(clients, names) && Instant::now() < deadline {
        for c in clients.iter_mut() {
            c.pump_for(Duration::from_millis(20)).await;
        }
    }
}

fn print_receives(clients: &[Client], names: &BTreeMap<String, &'static str>, start: Instant) {
    for c in clients {
        let list: Vec<String> = c
            .receives(names)
            .into_iter()
            .map(|(who, source)| format!("{who}'s {}", source.as_str()))
            .collect();
        println!(
            "{:<8} receives {} ({:.0} ms)",
            c.name,
            if list.is_empty() {
                "nothing".to_owned()
            } else {
                list.join(", ")
            },
            start.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// Says what the track shows, adds it, and writes a VP8 frame every 20 ms.
async fn publish(
    client: &Client,
    name: &str,
    source: Source,
) -> anyhow::Result<(TransceiverId, tokio::task::JoinHandle<()>)> {
    let track = format!("{}-{name}", client.session.id());
    client
        .session
        .send_room_message(RoomMessage::Publish {
            track: track.clone(),
            source,
        })
        .await?;
    let id = client
        .sfu
        .add_labelled_transceiver(
            MediaKind::Video,
            Direction::SendOnly,
            TrackLabel {
                stream_id: client.session.id(),
                track_id: track,
            },
        )
        .await?;
    let sfu = client.sfu.clone();
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
    Ok((id, writer))
}
