//! The `politely` command.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod bench;
mod serve;
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
    Serve(serve::ServeArgs),
    /// Mint a room token for a server started with --secret.
    Token(serve::TokenArgs),
    /// Benchmark a signaling server on loopback.
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
        Command::Bench(command) => bench::run(&command),
    }
}

// rtc allocates heavily in SDP, SCTP and DTLS; mimalloc measured 1.5-2x faster than the
// system allocator on the simulator (see the README's benchmark notes). The server allocates a
// frame or two per relayed message and benefits too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
