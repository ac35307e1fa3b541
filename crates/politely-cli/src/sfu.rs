//! `politely sfu`: join a room as its SFU; and the SFUs `politely serve --sfu` runs for every
//! room.

use clap::Args;
use politely::{Bind, Sfu, SfuConfig};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Args, Debug)]
pub(crate) struct SfuArgs {
    /// The server, e.g. ws://127.0.0.1:8080.
    url: String,
    /// The room.
    room: String,
    /// A room token that grants the SFU role, for a server started with --secret (mint it
    /// with `politely token --sfu`).
    #[arg(long, env = "POLITELY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// For a wss:// server: a PEM file of certificate authorities to trust besides the
    /// webpki roots.
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// A local address to gather candidates on (repeat for several). By default: 127.0.0.1
    /// when the server is on loopback, every interface otherwise.
    #[arg(long)]
    bind: Vec<IpAddr>,
    /// Forward nothing to a client until it subscribes (the default is every track).
    #[arg(long)]
    subscribe_none: bool,
    /// Logging (`info` by default).
    #[command(flatten)]
    log: crate::LogArgs,
}

pub(crate) fn run(args: &SfuArgs) -> anyhow::Result<ExitCode> {
    args.log.init("info")?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async {
            let mut config = SfuConfig::loopback();
            config.peer.bind = bind(&args.bind, &args.url);
            config.token.clone_from(&args.token);
            config.trusted_certificates =
                crate::join::trusted_certificates(args.ca.as_deref())?;
            config.room.subscribe_all = !args.subscribe_none;
            let sfu = Sfu::join(&args.url, &args.room, config).await?;
            eprintln!("politely: the SFU of {} as {}", args.room, sfu.id());
            let counters = {
                let sfu = &sfu;
                async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(10));
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        let c = sfu.counters();
                        eprintln!(
                            "politely: {} packets in, {} forwarded, {} keyframe requests, {} messages relayed",
                            c.packets_received, c.packets_forwarded, c.keyframe_requests, c.messages_relayed
                        );
                    }
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = counters => {}
            }
            sfu.leave().await?;
            Ok(ExitCode::SUCCESS)
        })
}

/// The addresses a client or an SFU gathers on: those given, or the loopback address of a
/// loopback server (`::1` for one on `[::1]`), or every interface.
pub(crate) fn bind(addrs: &[IpAddr], url: &str) -> Bind {
    if !addrs.is_empty() {
        Bind::Addrs(addrs.to_vec())
    } else if let Some(loopback) = crate::join::loopback_of_url(url) {
        Bind::Addrs(vec![loopback])
    } else {
        Bind::Interfaces
    }
}

/// The join hook of `politely serve --sfu`: it admits every join and tells [`per_room`] the
/// room.
pub(crate) fn join_hook() -> (
    politely_server::JoinHook,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let hook = politely_server::JoinHook::new(move |request| {
        let _ = tx.send(request.room.to_owned());
        Ok(())
    });
    (hook, rx)
}

/// Starts an SFU for each room as its first client joins (the joins [`join_hook`] reports),
/// on the server at `url`; each leaves when its room empties.
pub(crate) async fn per_room(
    mut joins: tokio::sync::mpsc::UnboundedReceiver<String>,
    url: String,
    config: SfuConfig,
    token: Option<Token>,
) {
    let running = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    while let Some(room) = joins.recv().await {
        if !running.lock().expect("never poisoned").insert(room.clone()) {
            continue;
        }
        let mut config = config.clone();
        config.leave_when_empty = true;
        config.token = token.as_ref().map(|t| t.mint(&room));
        let (url, running) = (url.clone(), running.clone());
        tokio::spawn(async move {
            match Sfu::join(&url, &room, config).await {
                Ok(sfu) => {
                    tracing::info!(%room, id = sfu.id(), "SFU started");
                    if let Err(e) = sfu.wait().await {
                        tracing::warn!(%room, "SFU ended: {e}");
                    }
                }
                Err(e) => tracing::warn!(%room, "SFU could not join: {e}"),
            }
            running.lock().expect("never poisoned").remove(&room);
        });
    }
}

/// Mints the in-process SFUs' tokens on a server with secrets.
pub(crate) struct Token {
    pub(crate) secret: politely_server::Secret,
}

impl Token {
    fn mint(&self, room: &str) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 3600;
        let mut claims = politely_server::token::Claims::new("sfu", room, exp);
        claims.sfu = true;
        politely_server::token::mint(&self.secret, &claims)
    }
}
