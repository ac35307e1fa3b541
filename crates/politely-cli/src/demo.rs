//! `politely demo`: an embedded server, two native peers, a chat, and glare rounds.

use crate::native::{self, Change, Embedded, Pair, Side, ms, percentile};
use clap::Args;
use politely::{MediaKind, PeerEvent, SessionEvent};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Glare rounds to run after the chat.
    #[arg(long, default_value_t = 20)]
    rounds: u64,
    /// Rounds that add transceivers before the rest flip directions.
    #[arg(long, default_value_t = 6)]
    add_rounds: u64,
    /// An SFU room instead: three clients and an SFU publish, unpublish and share a screen
    /// under glare, and each prints what it receives.
    #[arg(long)]
    sfu: bool,
    /// Logging (warnings by default).
    #[command(flatten)]
    log: crate::LogArgs,
}

pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    args.log.init("warn")?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async {
            if args.sfu {
                crate::demo_sfu::demo().await
            } else {
                demo(args).await
            }
        })
}

fn name(side: Side) -> &'static str {
    match side {
        Side::A => "alice",
        Side::B => "bob",
    }
}

async fn demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let server = Embedded::start().await?;
    println!("server   ws://{} (embedded, loopback only)", server.addr);
    let start = Instant::now();
    let mut pair = Pair::join(&server.url(), "demo").await?;
    let (a, b) = (pair.a.id(), pair.b.id());
    println!("alice    joined as {a} (polite: her id sorts lower)");
    println!("bob      joined as {b} (impolite)");

    // The chat: alice opens it, each side says hello once it is open at both ends.
    let chat = pair
        .to_b
        .create_data_channel("chat", Default::default())
        .await?;
    let mut bobs_chat = None;
    let mut heard = 0;
    chat.opened().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while heard < 2 {
        let (side, event) = tokio::time::timeout_at(deadline, pair.next()).await??;
        match event {
            SessionEvent::Peer {
                event: PeerEvent::Connected,
                ..
            } => println!(
                "{:<8} connected ({:.1} ms after joining)",
                name(side),
                native::ms(start.elapsed())
            ),
            SessionEvent::Peer {
                event: PeerEvent::ChannelOpen(channel),
                ..
            } if side == Side::B && channel.label() == "chat" => {
                println!(
                    "chat     open at both ends ({:.1} ms after joining)",
                    ms(start.elapsed())
                );
                chat.send_text("hello bob").await?;
                bobs_chat = Some(channel);
            }
            SessionEvent::Peer {
                event: PeerEvent::Message { message, .. },
                ..
            } => {
                let text = message.as_text().unwrap_or("<binary>");
                println!("{:<8} < {text}", name(side));
                heard += 1;
                if side == Side::B {
                    let reply = bobs_chat.as_ref().expect("a message comes after the open");
                    reply.send_text("hello alice").await?;
                }
            }
            _ => {}
        }
    }

    // Glare rounds: both sides change at the same instant.
    pair.on_event = Box::new(|side, event| match event {
        SessionEvent::Peer {
            event: PeerEvent::Watchdog { cause, recovery },
            ..
        } => println!("{:<8} watchdog: {cause:?}, {recovery:?}", name(side)),
        SessionEvent::Peer {
            event: PeerEvent::Message { message, .. },
            ..
        } => println!(
            "{:<8} < {}",
            name(side),
            message.as_text().unwrap_or("<binary>")
        ),
        _ => {}
    });
    let mut times = Vec::new();
    let mut glare = 0;
    let mut failed = 0;
    for i in 0..args.rounds {
        let change = native::change_of(i, args.add_rounds);
        let what = match change {
            Change::AddTransceiver(MediaKind::Audio) => "both add an audio transceiver",
            Change::AddTransceiver(MediaKind::Video) => "both add a video transceiver",
            Change::FlipDirection => "both flip a direction",
        };
        match pair.round(change, true).await {
            Ok(round) => {
                glare += u64::from(round.glare);
                times.push(round.elapsed);
                println!(
                    "round {:>3}/{}  {what:<30} + a channel each  {:<9} {:>6.1} ms",
                    i + 1,
                    args.rounds,
                    if round.glare { "glare" } else { "no glare" },
                    ms(round.elapsed)
                );
            }
            Err(e) => {
                failed += 1;
                println!("round {:>3}/{}  FAILED: {e:#}", i + 1, args.rounds);
                break;
            }
        }
    }
    let (sa, sb) = pair.stats().await?;
    pair.leave().await;
    server.stop().await?;

    times.sort();
    let (ca, cb) = (sa.counters, sb.counters);
    println!();
    println!(
        "rounds {}  glare seen {glare}  failed {failed}",
        times.len() as u64 + failed
    );
    println!(
        "offers {} (alice {}, bob {})  rollbacks {}  ignored offers {}  watchdog firings {}",
        ca.offers + cb.offers,
        ca.offers,
        cb.offers,
        ca.rollbacks + cb.rollbacks,
        ca.ignored_offers + cb.ignored_offers,
        ca.watchdog_firings + cb.watchdog_firings,
    );
    println!(
        "time per round  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(times.last().copied().unwrap_or_default()),
    );
    println!(
        "final: {} mids, {} transceivers at each side, both stable",
        sa.mids.len(),
        sa.transceivers.len()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
