//! `politely serve` and `politely token`.

use crate::system;
use anyhow::Context as _;
use clap::Args;
use politely_server::{Config, RateLimit, Secret, Server};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// The address to listen on; 127.0.0.1 keeps the server on this machine, and opening it
    /// wider (0.0.0.0:8080) is a choice you make here.
    #[arg(long, env = "POLITELY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// A key of room tokens (JWT, HS256). With one, `join` needs a token from `politely token`
    /// (or any JWT library); without, anyone may join any room. Repeat it (comma-separate in
    /// the variable) to accept several keys while rotating.
    #[arg(
        long,
        env = "POLITELY_SECRET",
        hide_env_values = true,
        value_delimiter = ','
    )]
    secret: Vec<String>,
    /// The most peers in one room.
    #[arg(long, env = "POLITELY_MAX_ROOM_SIZE", default_value_t = 16)]
    max_room_size: usize,
    /// The largest frame accepted, in bytes.
    #[arg(long, env = "POLITELY_MAX_FRAME_BYTES", default_value_t = 256 * 1024)]
    max_frame_bytes: usize,
    /// Frames per second each connection may send on average; 0 turns the limit off.
    #[arg(long, env = "POLITELY_RATE_LIMIT", default_value_t = 200.0)]
    rate_limit: f64,
    /// Frames a connection may send in a burst.
    #[arg(long, env = "POLITELY_RATE_BURST", default_value_t = 400.0)]
    rate_burst: f64,
    /// How long a dropped connection keeps its id and queued frames for a resume.
    #[arg(long, env = "POLITELY_RESUME_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    resume_grace: Duration,
    /// The key of resume tokens. With one, peers resume their ids after the server restarts
    /// with the same key, and their calls go on; without, a restart gives everyone a new id.
    #[arg(long, env = "POLITELY_RESUME_SECRET", hide_env_values = true)]
    resume_secret: Option<String>,
    /// How old a resume token may be for a restarted server to take it.
    #[arg(long, env = "POLITELY_RESUME_MAX_AGE", default_value = "24h", value_parser = humantime::parse_duration)]
    resume_max_age: Duration,
    /// The most frames queued for one client.
    #[arg(long, env = "POLITELY_SEND_QUEUE_FRAMES", default_value_t = 1024)]
    send_queue_frames: usize,
    /// The most bytes queued for one client.
    #[arg(long, env = "POLITELY_SEND_QUEUE_BYTES", default_value_t = 4 * 1024 * 1024)]
    send_queue_bytes: usize,
    /// The most memory all clients' send queues may take together (twice their bytes, plus the
    /// read buffers large relayed frames keep alive); a frame that finds it spent disconnects
    /// its target as a slow consumer.
    #[arg(long, env = "POLITELY_MAX_QUEUED_BYTES", default_value_t = 256 * 1024 * 1024)]
    max_queued_bytes: usize,
    /// The most TCP connections open at once; more are answered 503.
    #[arg(long, env = "POLITELY_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// The most TCP connections open at once from one client address; more are answered 503.
    #[arg(
        long,
        env = "POLITELY_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 256
    )]
    max_connections_per_address: usize,
    /// How long a client has to send a whole HTTP request head.
    #[arg(long, env = "POLITELY_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// How often quiet connections are pinged.
    #[arg(long, env = "POLITELY_PING_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    ping_interval: Duration,
    /// How long a connection may stay silent before it counts as dropped.
    #[arg(long, env = "POLITELY_PING_TIMEOUT", default_value = "45s", value_parser = humantime::parse_duration)]
    ping_timeout: Duration,
    /// How long a new connection has to join a room.
    #[arg(long, env = "POLITELY_JOIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    join_timeout: Duration,
    /// An Origin browsers may connect from (repeat, or comma-separate in the variable); by
    /// default any Origin may connect.
    #[arg(
        long = "allow-origin",
        env = "POLITELY_ALLOW_ORIGINS",
        value_delimiter = ','
    )]
    allow_origins: Vec<String>,
    /// Each connection's initial WebSocket read size, in bytes: an idle connection holds this
    /// much; under load reads double up to 16 KiB, and shrink back once the connection is idle.
    #[arg(long, env = "POLITELY_READ_BUFFER_BYTES", default_value_t = 1024)]
    read_buffer_bytes: usize,
    /// Worker threads; 0 means one per CPU.
    #[arg(long, env = "POLITELY_THREADS", default_value_t = 0)]
    threads: usize,
    /// Logging (`info` by default; `debug` logs every join and leave).
    #[command(flatten)]
    log: crate::LogArgs,
    /// Run an SFU in this process for every room: it joins as a room's first client does,
    /// every client then connects to it alone, and it leaves when the room empties.
    #[arg(long, env = "POLITELY_SFU")]
    sfu: bool,
    /// A local address the SFUs gather candidates on (repeat for several). By default:
    /// 127.0.0.1 when the server listens on loopback, every interface otherwise.
    #[arg(long, requires = "sfu")]
    sfu_bind: Vec<std::net::IpAddr>,
    /// Terminate TLS in the server (wss:// and https://) with this PEM certificate chain, leaf
    /// first. A proxy in front terminating TLS is the usual deployment. Not with --sfu yet
    /// (its SFUs join over plain ws:// on the listen address).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "sfu"
    )]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// A TURN server handed to every client in `welcome`, e.g.
    /// `turn:turn.example.org:3478?transport=udp` (repeat for several URLs of servers that
    /// share --turn-secret).
    #[arg(long, value_name = "URL", requires = "turn_secret")]
    turn_url: Vec<String>,
    /// The TURN servers' shared secret (coturn's `static-auth-secret`): each client gets
    /// credentials made from it that expire after --turn-ttl (the TURN REST scheme).
    #[arg(
        long,
        env = "POLITELY_TURN_SECRET",
        requires = "turn_url",
        hide_env_values = true
    )]
    turn_secret: Option<String>,
    /// How long a client's TURN credentials stay valid; clients ask for new ones at half of it.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    turn_ttl: Duration,
    /// Share rooms with other nodes through this Redis (`redis://host:port/db` or
    /// `redis+unix:///path`): any node takes any client, and a room's members may sit on
    /// any nodes. Without it, one node keeps its rooms in memory.
    #[arg(long, env = "POLITELY_REDIS", value_name = "URL")]
    redis: Option<String>,
    /// This node's name among the nodes of --redis (random by default).
    #[arg(long, env = "POLITELY_NODE_ID", requires = "redis")]
    node_id: Option<String>,
    /// Exit when the process with this id is no longer our parent (for a server a benchmark
    /// starts: it goes with the benchmark however that ends).
    #[arg(long, hide = true)]
    exit_with_parent: Option<u32>,
}

impl ServeArgs {
    fn config(&self) -> Config {
        Config {
            listen: self.listen,
            max_room_size: self.max_room_size,
            max_frame_bytes: self.max_frame_bytes,
            rate_limit: (self.rate_limit > 0.0).then_some(RateLimit {
                per_second: self.rate_limit,
                burst: self.rate_burst.max(1.0),
            }),
            secrets: self
                .secret
                .iter()
                .map(|s| Secret::new(s.as_str()))
                .collect(),
            resume_grace: self.resume_grace,
            resume_secret: self.resume_secret.as_deref().map(Secret::new),
            resume_max_age: self.resume_max_age,
            send_queue_frames: self.send_queue_frames,
            send_queue_bytes: self.send_queue_bytes,
            max_queued_bytes: self.max_queued_bytes,
            max_connections: self.max_connections,
            max_connections_per_address: self.max_connections_per_address,
            request_timeout: self.request_timeout,
            ping_interval: self.ping_interval,
            ping_timeout: self.ping_timeout,
            join_timeout: self.join_timeout,
            allowed_origins: (!self.allow_origins.is_empty()).then(|| self.allow_origins.clone()),
            read_buffer_bytes: self.read_buffer_bytes.max(256),
            turn: self
                .turn_secret
                .as_ref()
                .map(|secret| politely_server::Turn {
                    urls: self.turn_url.clone(),
                    secret: secret.clone(),
                    ttl: self.turn_ttl.max(Duration::from_secs(2)),
                }),
            redis: self.redis.as_ref().map(|url| politely_server::Redis {
                node: self.node_id.clone(),
                ..politely_server::Redis::new(url.as_str())
            }),
            ..Config::default()
        }
    }
}

pub(crate) fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    args.log.init("info")?;
    if let Some(parent) = args.exit_with_parent {
        // An orphan is adopted by another process: the parent that started us has gone.
        std::thread::spawn(move || {
            while std::os::unix::process::parent_id() == parent {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            std::process::exit(0);
        });
    }
    let files = system::raise_open_files_limit();
    // One thread runs every connection on tokio's single-threaded scheduler: no wake-up ever
    // crosses threads, which is the cheapest per frame when the cores are shared.
    let mut runtime = match args.threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if args.threads > 1 {
        runtime.worker_threads(args.threads);
    }
    let runtime = runtime.enable_all().build()?;
    let mut config = args.config();
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(politely_server::tls_from_pem(cert, key)?);
    }
    let scheme = if config.tls.is_some() { "wss" } else { "ws" };
    runtime.block_on(async {
        let sfu_joins = args.sfu.then(|| {
            let (hook, joins) = crate::sfu::join_hook();
            config.join_hook = Some(hook);
            joins
        });
        let sfu_token = config.secrets.first().map(|secret| crate::sfu::Token {
            secret: secret.clone(),
        });
        let auth = if !config.secrets.is_empty() {
            "room tokens required"
        } else {
            "none: anyone may join any room (set --secret to require tokens)"
        };
        let server = Server::bind(config)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let addr = server.local_addr();
        if let Some(joins) = sfu_joins {
            let url = format!("ws://{addr}");
            let mut sfu = politely::SfuConfig::loopback();
            sfu.peer.bind = crate::sfu::bind(&args.sfu_bind, &url);
            tokio::spawn(crate::sfu::per_room(joins, url, sfu, sfu_token));
        }
        // Listening for SIGTERM and SIGINT before saying we listen: a supervisor may stop us
        // as soon as it reads the line.
        let shutdown = shutdown_signal()?;
        tracing::info!(%addr, auth, open_files = files, "politely serve: {scheme}://{addr}/ws");
        // The one line on stdout, for scripts (and tests) that start the server on port 0.
        println!("listening on {addr}");
        server.serve(shutdown).await?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves on SIGINT or SIGTERM; both are caught from the call on.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        }
    })
}

#[derive(Args, Debug)]
pub(crate) struct TokenArgs {
    /// The room the token admits to.
    #[arg(long)]
    room: String,
    /// The user's identity (the JWT's `sub`), shown to the room's other peers.
    #[arg(long)]
    sub: String,
    /// A display name, shown to the room's other peers.
    #[arg(long)]
    name: Option<String>,
    /// Any JSON, shown to the room's other peers.
    #[arg(long)]
    metadata: Option<String>,
    /// The token grants the SFU role (`politely sfu --token`).
    #[arg(long)]
    sfu: bool,
    /// How long the token is valid, e.g. 1h, 30m, 7days.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// The server's secret (the first, if the variable lists several).
    #[arg(
        long,
        env = "POLITELY_SECRET",
        hide_env_values = true,
        value_delimiter = ','
    )]
    secret: Vec<String>,
}

pub(crate) fn token(args: &TokenArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        politely_proto::is_valid_room(&args.room),
        "a room name has 1 to 128 bytes and no control characters"
    );
    let expires = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + args.ttl.as_secs();
    let secret = args
        .secret
        .first()
        .ok_or_else(|| anyhow::anyhow!("--secret (or POLITELY_SECRET) is needed"))?;
    let mut claims = politely_server::token::Claims::new(&args.sub, &args.room, expires);
    claims.name.clone_from(&args.name);
    claims.sfu = args.sfu;
    claims.metadata = match &args.metadata {
        Some(json) => Some(serde_json::from_str(json).context("--metadata is not JSON")?),
        None => None,
    };
    let token = politely_server::token::mint(&Secret::new(secret.as_str()), &claims);
    anyhow::ensure!(
        token.len() <= politely_server::token::MAX_TOKEN_BYTES,
        "the token has {} bytes; the server takes at most {}",
        token.len(),
        politely_server::token::MAX_TOKEN_BYTES
    );
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
