//! The `politely` command.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod bench;
mod demo;
mod demo_sfu;
mod join;
mod native;
mod script;
mod serve;
mod sfu;
mod sim;
mod system;

#[derive(Parser)]
#[command(
    name = "politely",
    version,
    about = "WebRTC perfect negotiation for Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run seeded random negotiation scenarios in the deterministic simulator.
    Sim(sim::SimArgs),
    /// Run the signaling server (WebSocket at /ws, /health, /metrics).
    Serve(Box<serve::ServeArgs>),
    /// Mint a room token for a server started with --secret.
    Token(serve::TokenArgs),
    /// Two native peers through an embedded server: a chat, then glare rounds.
    Demo(demo::DemoArgs),
    /// Join a room as an interactive peer: stdin lines go out, messages come in on stdout.
    ///
    /// Commands: /glare renegotiates at once (adds an audio, then a video transceiver, then
    /// flips their directions), /restart restarts ICE, /stats prints each connection's state
    /// as JSON on stderr, /quit (or end of input) leaves. Script commands, toward every
    /// peer: /add-transceiver KIND [DIRECTION], /add-track KIND, /remove-track INDEX,
    /// /direction INDEX DIRECTION, /channel LABEL, /close-channel LABEL, /act STEP-JSON; each
    /// answers `act ok` or `act failed: ...` on stderr. /state prints each connection as its
    /// application sees it (the end state of `politely sim --script`), as JSON on stderr.
    Join(join::JoinArgs),
    /// Join a room as its SFU: every client of the room then connects to it alone, publishes
    /// to it and receives the others' tracks from it (Ctrl-C leaves).
    Sfu(sfu::SfuArgs),
    /// Print a random action script (JSON) for the differential check: `politely sim
    /// --script` runs it in the simulator, web/test/differential.test.mjs in Chromium.
    Script(script::ScriptArgs),
    /// Benchmark the signaling server and native peers on loopback.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("politely: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim(args) => sim::run(&args),
        Command::Serve(args) => serve::serve(&args),
        Command::Token(args) => serve::token(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Join(args) => join::run(&args),
        Command::Sfu(args) => sfu::run(&args),
        Command::Script(args) => script::print(&args),
        Command::Bench(command) => bench::run(&command),
    }
}

/// Where the logs go (stderr) and what they say: the options every long-running command has.
#[derive(clap::Args, Debug, Clone)]
struct LogArgs {
    /// Log filter (tracing's env-filter syntax, e.g. `debug` or `politely=debug,rtc=warn`).
    /// Without it: POLITELY_LOG, then RUST_LOG, then the command's default.
    #[arg(long, env = "POLITELY_LOG")]
    log: Option<String>,
    /// `text` for people, `json` for a log pipeline (one object per line).
    #[arg(long, env = "POLITELY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

impl LogArgs {
    /// Starts logging to stderr, with `default` as the filter when none is given.
    fn init(&self, default: &str) -> anyhow::Result<()> {
        let filter = match &self.log {
            Some(filter) => filter.clone(),
            None => std::env::var("RUST_LOG").unwrap_or_else(|_| default.to_owned()),
        };
        init_logs(&filter, self.log_format)
    }
}

/// Logs to stderr, filtered by `filter` (tracing's env-filter syntax); the `log` records of
/// the engine and rtc are included.
fn init_logs(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(filter)?)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    Ok(())
}

// rtc allocates heavily in SDP, SCTP and DTLS; mimalloc measured 1.5-2x faster than the
// system allocator on the simulator (see the README's benchmark notes). The server allocates a
// frame or two per relayed message and benefits too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
