//! `politely bench connect` and `politely bench glare`: native peers through a politely server
//! on loopback (an embedded one unless `--url` names another).

use super::samples::{JsonArg, Samples};
use crate::native::{self, Change, Embedded, GLARE_PHASES, Pair, ms, percentile, phases};
use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use politely::{PeerEvent, Session, SessionConfig, SessionEvent};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub(crate) struct ConnectArgs {
    /// Connections to time, one after another.
    #[arg(long, default_value_t = 50)]
    count: u64,
    /// A politely server on loopback (ws://127.0.0.1:PORT); by default one runs in-process.
    #[arg(long)]
    url: Option<String>,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(Args, Debug)]
pub(crate) struct GlareArgs {
    /// Rounds per mode.
    #[arg(long, default_value_t = 200)]
    rounds: u64,
    /// Renegotiation on one live connection, fresh connections each round, or both.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    mode: Mode,
    /// Live rounds that add transceivers before the rest flip directions (which renegotiates
    /// without growing the descriptions).
    #[arg(long, default_value_t = 10)]
    add_rounds: u64,
    /// A politely server on loopback (ws://127.0.0.1:PORT); by default one runs in-process.
    #[arg(long)]
    url: Option<String>,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    Live,
    Fresh,
    Both,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// The server to use: the given loopback URL, or an embedded one.
async fn server(url: Option<&str>) -> anyhow::Result<(String, Option<Embedded>)> {
    match url {
        Some(url) => Ok((super::ws_url(url)?, None)),
        None => {
            let server = Embedded::start().await?;
            Ok((server.url(), Some(server)))
        }
    }
}

fn report(what: &str, times: &[Duration]) {
    let mut times = times.to_vec();
    times.sort();
    println!(
        "{what}: n={}  p50 {:.2} ms  p99 {:.2} ms  min {:.2} ms  max {:.2} ms",
        times.len(),
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(times.first().copied().unwrap_or_default()),
        ms(times.last().copied().unwrap_or_default()),
    );
}

/// The steps of a connect, in order, as `connect_once` times them from the joining side (B):
/// each phase ends at its milestone, or at the previous one when it was reached earlier.
const CONNECT_PHASES: [&str; 8] = [
    "join: WebSocket and welcome",
    "to the first offer sent",
    "offer to answer applied",
    "to ICE connected",
    "to DTLS done (connected)",
    "to SCTP association up",
    "to the channel open",
    "message and its echo",
];

pub(crate) fn connect(args: &ConnectArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let (url, embedded) = server(args.url.as_deref()).await?;
        let mut times = Vec::new();
        let mut phases: Vec<Vec<Duration>> = vec![Vec::new(); CONNECT_PHASES.len()];
        for i in 0..args.count {
            let timed = connect_once(&url, &format!("connect-{}-{i}", std::process::id()))
                .await
                .with_context(|| format!("connection {}", i + 1))?;
            times.push(timed.total);
            for (all, phase) in phases.iter_mut().zip(timed.phases) {
                all.push(phase);
            }
        }
        report("join to first echoed message", &times);
        println!("  by phase (the engine's timeline; p50 and p99 of each, so they do not add up):");
        for (name, phase) in CONNECT_PHASES.iter().zip(&phases) {
            report_phase(name, phase);
        }
        let mut samples = Samples::new("connect");
        samples.add("join to first echoed message", &times);
        for (name, phase) in CONNECT_PHASES.iter().zip(&phases) {
            samples.add_phase(*name, phase);
        }
        samples.write(&args.json)?;
        if let Some(server) = embedded {
            server.stop().await?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn report_phase(what: &str, times: &[Duration]) {
    let mut times = times.to_vec();
    times.sort();
    println!(
        "    {what:<28} p50 {:6.2} ms  p99 {:6.2} ms",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
    );
}

/// One connect: its total and its phases (`CONNECT_PHASES`).
struct Connected {
    total: Duration,
    phases: Vec<Duration>,
}

/// A is in the room; B joins, opens a channel and sends; A echoes. Timed from B's join to
/// B's receipt of the echo.
async fn connect_once(url: &str, room: &str) -> anyhow::Result<Connected> {
    let mut a = Session::join(url, room, SessionConfig::loopback()).await?;
    let start = Instant::now();
    let mut b = Session::join(url, room, SessionConfig::loopback()).await?;
    let joined = Instant::now();
    let to_a = b
        .peers()
        .into_iter()
        .next()
        .context("A is not in B's welcome")?;
    let channel = to_a.create_data_channel("echo", Default::default()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let elapsed = loop {
        let next = async {
            tokio::select! {
                e = a.next_event() => (true, e),
                e = b.next_event() => (false, e),
            }
        };
        let (at_a, event) = tokio::time::timeout_at(deadline, next)
            .await
            .context("no echo within 10 s")?;
        match event.context("a session ended")? {
            SessionEvent::Peer {
                event: PeerEvent::ChannelOpen(open),
                ..
            } if !at_a && open.id() == channel.id() => channel.send_text("ping").await?,
            SessionEvent::Peer {
                event: PeerEvent::Message { channel, message },
                ..
            } => {
                if !at_a {
                    break start.elapsed();
                }
                channel.send_binary(message.data).await?;
            }
            SessionEvent::Peer {
                event: PeerEvent::Error(e),
                ..
            } => bail!("{e}"),
            _ => {}
        }
    };
    let end = start + elapsed;
    let at_b = to_a.stats().await?.timeline;
    let at_a = match a.peers().into_iter().next() {
        Some(to_b) => to_b.stats().await?.timeline,
        None => bail!("B is not among A's peers"),
    };
    tokio::join!(a.leave(), b.leave());
    let first_offer = [at_a.first_offer_sent, at_b.first_offer_sent]
        .into_iter()
        .flatten()
        .min();
    // The offerer's first exchange completes when the answer is applied.
    let answered = if at_b.first_offer_sent == first_offer {
        at_b.first_negotiated
    } else {
        at_a.first_negotiated
    };
    let milestones = [
        Some(joined),
        first_offer,
        answered,
        at_b.ice_connected,
        at_b.connected,
        at_b.sctp_up,
        at_b.channel_open,
    ];
    Ok(Connected {
        total: elapsed,
        phases: phases(start, &milestones, end),
    })
}

pub(crate) fn glare(args: &GlareArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let (url, embedded) = server(args.url.as_deref()).await?;
        let mut failures = 0;
        let mut samples = Samples::new("glare");
        let tag = std::process::id();
        if matches!(args.mode, Mode::Live | Mode::Both) {
            let mut pair = Pair::join(&url, &format!("glare-live-{tag}")).await?;
            // The first round connects; rounds are timed on the live connection.
            pair.round(Change::AddTransceiver(politely::MediaKind::Audio), true)
                .await?;
            let mut times = Vec::new();
            let mut by_phase: Vec<Vec<Duration>> = vec![Vec::new(); GLARE_PHASES.len()];
            let mut glare = 0;
            for i in 0..args.rounds {
                match pair.round(native::change_of(i + 1, args.add_rounds), false).await {
                    Ok(round) => {
                        times.push(round.elapsed);
                        glare += u64::from(round.glare);
                        for (all, phase) in by_phase.iter_mut().zip(round.phases) {
                            all.push(phase);
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        eprintln!("live round {}: {e:#}", i + 1);
                        break;
                    }
                }
            }
            let (a, b) = pair.stats().await?;
            report("glare round, live connection", &times);
            samples.add("glare round, live connection", &times);
            println!("  by phase (the engines' timelines; p50 and p99 of each, so they do not add up):");
            for (name, phase) in GLARE_PHASES.iter().zip(&by_phase) {
                report_phase(name, phase);
                samples.add_phase(*name, phase);
            }
            println!(
                "  glare in {glare} of {} rounds; rollbacks {}, ignored offers {}, offers {}, watchdog firings {}",
                times.len(),
                a.counters.rollbacks + b.counters.rollbacks,
                a.counters.ignored_offers + b.counters.ignored_offers,
                a.counters.offers + b.counters.offers,
                a.counters.watchdog_firings + b.counters.watchdog_firings,
            );
            pair.leave().await;
        }
        if matches!(args.mode, Mode::Fresh | Mode::Both) {
            let mut times = Vec::new();
            let mut glare = 0;
            for i in 0..args.rounds {
                let start = Instant::now();
                let result = async {
                    let mut pair = Pair::join(&url, &format!("glare-fresh-{tag}-{i}")).await?;
                    let round = pair
                        .round(Change::AddTransceiver(politely::MediaKind::Audio), true)
                        .await?;
                    pair.leave().await;
                    anyhow::Ok(round)
                }
                .await;
                match result {
                    Ok(round) => {
                        // Timed from the first join to convergence, not to the end of the leave.
                        times.push(round.finished - start);
                        glare += u64::from(round.glare);
                    }
                    Err(e) => {
                        failures += 1;
                        eprintln!("fresh round {}: {e:#}", i + 1);
                    }
                }
            }
            report("glare round, fresh connections", &times);
            samples.add("glare round, fresh connections", &times);
            println!("  glare in {glare} of {} rounds", times.len());
        }
        println!("failures: {failures}");
        samples.write(&args.json)?;
        if let Some(server) = embedded {
            server.stop().await?;
        }
        Ok(if failures == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}
