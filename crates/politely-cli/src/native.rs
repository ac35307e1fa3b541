//! Two native peers in one process, through a politely server: what `politely demo` and the
//! native benchmarks drive.

use anyhow::{Context as _, bail};
use politely::{
    Direction, MediaKind, PeerEvent, PeerHandle, PeerStats, Session, SessionConfig, SessionEvent,
    TransceiverId,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long one round may take before it counts as a failure.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);

/// A politely server inside this process, on 127.0.0.1 with a port the system picks.
pub(crate) struct Embedded {
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Embedded {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let config = politely_server::Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            // Both peers are ours; the limit guards a public server against floods.
            rate_limit: None,
            ..Default::default()
        };
        let server = politely_server::Server::bind(config).await?;
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            stop: Some(stop),
            task,
        })
    }

    pub(crate) fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        Ok((&mut self.task).await??)
    }
}

/// Which side of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    A,
    B,
}

/// What a round changes on both sides at the same instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Each side adds a transceiver of this kind (and a data channel).
    AddTransceiver(MediaKind),
    /// Each side flips the direction of the transceiver it added first (and adds a channel).
    FlipDirection,
}

/// The outcome of one round.
#[derive(Debug, Clone)]
pub(crate) struct Round {
    pub(crate) elapsed: Duration,
    /// When it converged.
    pub(crate) finished: Instant,
    /// Whether the offers collided (a rollback or an ignored offer happened).
    pub(crate) glare: bool,
    /// The round by [`GLARE_PHASES`], from the two engines' timelines.
    pub(crate) phases: Vec<Duration>,
}

/// The steps of a glare round on a live connection, in the order they come when the offers
/// collide: the impolite side's offer wins, the polite side rolls its own back, answers, and
/// offers its change again once stable.
pub(crate) const GLARE_PHASES: [&str; 6] = [
    "to the impolite offer sent",
    "offer across; polite answers",
    "answer across",
    "polite's offer across",
    "answer back (settled)",
    "seen settled (the bench)",
];

/// Splits `start..end` at `milestones` (in the order they should come): each phase lasts from
/// the latest milestone before it to its own, or nothing if its milestone came earlier (or is
/// missing); the last phase ends at `end`.
pub(crate) fn phases(
    start: Instant,
    milestones: &[Option<Instant>],
    end: Instant,
) -> Vec<Duration> {
    let mut last = start;
    let mut out = Vec::new();
    for milestone in milestones.iter().copied().chain([Some(end)]) {
        let at = milestone.unwrap_or(last).max(last).min(end);
        out.push(at - last);
        last = at;
    }
    out
}

/// A round's phases ([`GLARE_PHASES`]) from the two sides' stats at its end.
fn glare_phases(start: Instant, a: &PeerStats, b: &PeerStats, end: Instant) -> Vec<Duration> {
    let (impolite, polite) = if a.polite {
        (&b.timeline, &a.timeline)
    } else {
        (&a.timeline, &b.timeline)
    };
    let milestones = [
        impolite.last_offer_sent,
        polite.last_answer_sent,
        impolite.last_answer_received,
        impolite.last_offer_received,
        polite.last_answer_received,
    ];
    phases(start, &milestones, end)
}

/// What a pair does with the events its rounds pass over.
pub(crate) type OnEvent = Box<dyn FnMut(Side, &SessionEvent) + Send + Sync>;

/// Two sessions in one room, each with its handle to the other.
pub(crate) struct Pair {
    pub(crate) a: Session,
    pub(crate) b: Session,
    pub(crate) to_b: PeerHandle,
    pub(crate) to_a: PeerHandle,
    transceivers: (Vec<TransceiverId>, Vec<TransceiverId>),
    sending: bool,
    rounds: u64,
    /// Called with every event neither the round nor the pair consumed (chat messages, ...).
    pub(crate) on_event: OnEvent,
}

impl Pair {
    /// A joins `room`, then B; returns once each has the other as a peer.
    pub(crate) async fn join(url: &str, room: &str) -> anyhow::Result<Pair> {
        let mut a = Session::join(url, room, SessionConfig::loopback()).await?;
        let mut b = Session::join(url, room, SessionConfig::loopback()).await?;
        let to_b = wait_joined(&mut a).await?;
        let to_a = wait_joined(&mut b).await?;
        Ok(Pair {
            a,
            b,
            to_b,
            to_a,
            transceivers: (Vec::new(), Vec::new()),
            sending: true,
            rounds: 0,
            on_event: Box::new(|_, _| {}),
        })
    }

    /// The next event of either session.
    pub(crate) async fn next(&mut self) -> anyhow::Result<(Side, SessionEvent)> {
        let (side, event) = tokio::select! {
            e = self.a.next_event() => (Side::A, e),
            e = self.b.next_event() => (Side::B, e),
        };
        let event = event.with_context(|| format!("session {side:?} ended"))?;
        if let SessionEvent::Peer {
            event: PeerEvent::Error(e),
            ..
        } = &event
        {
            bail!("{side:?}: {e}");
        }
        Ok((side, event))
    }

    /// Both sides' statistics.
    pub(crate) async fn stats(&self) -> anyhow::Result<(PeerStats, PeerStats)> {
        Ok((self.to_b.stats().await?, self.to_a.stats().await?))
    }

    /// Makes `change` on both sides at once, each with a new data channel too when
    /// `channels`, and waits until both are stable with the same mids and the new channels
    /// are open at both ends.
    ///
    /// Channels are never closed between rounds: rtc 0.21 frees a closed channel's stream id
    /// on the first stream reset, and a channel created at once gets that id and is then
    /// closed by the peer's own reset of the stream, still in flight.
    pub(crate) async fn round(&mut self, change: Change, channels: bool) -> anyhow::Result<Round> {
        self.rounds += 1;
        let (before_a, before_b) = self.stats().await?;
        let (label_a, label_b) = (format!("a{}", self.rounds), format!("b{}", self.rounds));
        let start = Instant::now();
        let (to_b, to_a) = (self.to_b.clone(), self.to_a.clone());
        let sending = self.sending;
        let first = (
            self.transceivers.0.first().copied(),
            self.transceivers.1.first().copied(),
        );
        let (at_a, at_b) = tokio::join!(
            make(
                &to_b,
                change,
                channels.then_some(&*label_a),
                first.0,
                sending
            ),
            make(
                &to_a,
                change,
                channels.then_some(&*label_b),
                first.1,
                sending
            ),
        );
        let tr_a = at_a?;
        let tr_b = at_b?;
        if let Change::AddTransceiver(_) = change {
            self.transceivers.0.extend(tr_a);
            self.transceivers.1.extend(tr_b);
        } else {
            self.sending = !self.sending;
        }
        let expected_mids = 1 + 2 * self.transceivers.0.len();
        // (side, label) of every open still to be seen.
        let mut opens = if channels {
            vec![
                (Side::A, label_a.clone()),
                (Side::A, label_b.clone()),
                (Side::B, label_a),
                (Side::B, label_b),
            ]
        } else {
            Vec::new()
        };
        let deadline = tokio::time::Instant::now() + ROUND_TIMEOUT;
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, self.next()).await else {
                let (a, b) = self.stats().await?;
                bail!(
                    "round {} did not converge within {ROUND_TIMEOUT:?}: opens missing {opens:?}; \
                     A {:?} pending {} wants {} mids {}; B {:?} pending {} wants {} mids {}",
                    self.rounds,
                    a.signaling_state,
                    a.has_pending_description,
                    a.wants_to_negotiate,
                    a.mids.len(),
                    b.signaling_state,
                    b.has_pending_description,
                    b.wants_to_negotiate,
                    b.mids.len(),
                );
            };
            let (side, event) = next?;
            let check = match &event {
                SessionEvent::Peer {
                    event: PeerEvent::ChannelOpen(channel),
                    ..
                } => {
                    opens.retain(|(s, l)| !(*s == side && l == channel.label()));
                    opens.is_empty()
                }
                SessionEvent::Peer {
                    event: PeerEvent::Negotiated { .. },
                    ..
                } => opens.is_empty(),
                SessionEvent::PeerLeft { .. } | SessionEvent::Ended { .. } => {
                    bail!("{side:?} lost its peer: {event:?}")
                }
                _ => false,
            };
            (self.on_event)(side, &event);
            if check {
                let (a, b) = self.stats().await?;
                if a.is_settled()
                    && b.is_settled()
                    && a.mids == b.mids
                    && a.mids.len() == expected_mids
                {
                    // Settled is only right if each side negotiated what both asked for.
                    if let Some(wrong) = directions_not_as_asked(&a, &b) {
                        bail!("round {} settled with {wrong}", self.rounds);
                    }
                    let glare = a.counters.rollbacks + a.counters.ignored_offers
                        > before_a.counters.rollbacks + before_a.counters.ignored_offers
                        || b.counters.rollbacks + b.counters.ignored_offers
                            > before_b.counters.rollbacks + before_b.counters.ignored_offers;
                    let finished = Instant::now();
                    return Ok(Round {
                        elapsed: finished - start,
                        finished,
                        glare,
                        phases: glare_phases(start, &a, &b, finished),
                    });
                }
            }
        }
    }

    pub(crate) async fn leave(self) {
        tokio::join!(self.a.leave(), self.b.leave());
    }
}

/// The first transceiver whose negotiated direction at either end is not what the two
/// applications asked for: A's preferred direction and B's, seen from A, intersected.
pub(crate) fn directions_not_as_asked(a: &PeerStats, b: &PeerStats) -> Option<String> {
    for (ours, theirs, side) in [(a, b, "A"), (b, a, "B")] {
        for t in &ours.transceivers {
            let Some(mid) = &t.mid else { continue };
            let Some(other) = theirs
                .transceivers
                .iter()
                .find(|o| o.mid.as_ref() == Some(mid))
            else {
                return Some(format!("mid {mid} at {side} only"));
            };
            let asked = t.direction.intersect(other.direction.reverse());
            if t.current_direction != Some(asked) {
                return Some(format!(
                    "mid {mid} at {side} negotiated {:?}, asked {asked:?} ({:?} here, {:?} there)",
                    t.current_direction, t.direction, other.direction
                ));
            }
        }
    }
    None
}

/// One side's part of a round: the change, and a channel labelled `label` if given.
async fn make(
    peer: &PeerHandle,
    change: Change,
    label: Option<&str>,
    first: Option<TransceiverId>,
    sending: bool,
) -> anyhow::Result<Option<TransceiverId>> {
    let transceiver = match change {
        Change::AddTransceiver(kind) => {
            Some(peer.add_transceiver(kind, Direction::SendRecv).await?)
        }
        Change::FlipDirection => {
            let id = first.context("no transceiver to flip yet")?;
            let direction = if sending {
                Direction::RecvOnly
            } else {
                Direction::SendRecv
            };
            peer.set_direction(id, direction).await?;
            None
        }
    };
    if let Some(label) = label {
        peer.create_data_channel(label, Default::default()).await?;
    }
    Ok(transceiver)
}

async fn wait_joined(session: &mut Session) -> anyhow::Result<PeerHandle> {
    if let Some(peer) = session.peers().into_iter().next() {
        return Ok(peer);
    }
    let deadline = tokio::time::Instant::now() + ROUND_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, session.next_event()).await {
            Ok(Some(SessionEvent::PeerJoined(peer))) => return Ok(peer),
            Ok(Some(_)) => continue,
            Ok(None) => bail!("the session ended before the other peer joined"),
            Err(_) => bail!("the other peer did not join within {ROUND_TIMEOUT:?}"),
        }
    }
}

/// The round kinds of a run: transceivers for the first `add` rounds (audio and video in
/// turn), then direction flips, which renegotiate without growing the descriptions.
pub(crate) fn change_of(round: u64, add: u64) -> Change {
    if round < add {
        Change::AddTransceiver(if round.is_multiple_of(2) {
            MediaKind::Audio
        } else {
            MediaKind::Video
        })
    } else {
        Change::FlipDirection
    }
}

pub(crate) fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
