//! `politely script` and `politely sim --script`: action scripts for the differential check
//! against the browser (the same script in the simulator, Chromium ↔ native and Chromium ↔
//! Chromium, end states compared).

use clap::Args;
use politely_sim::Script;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub(crate) struct ScriptArgs {
    /// The seed; the same seed always gives the same script.
    #[arg(long)]
    seed: u64,
    /// Rounds of calls; both peers' calls of a round happen at the same instant.
    #[arg(long, default_value_t = 10)]
    rounds: u32,
}

/// Prints the random script of a seed, one step per line.
pub(crate) fn print(args: &ScriptArgs) -> anyhow::Result<ExitCode> {
    println!("{}", Script::random(args.seed, args.rounds));
    Ok(ExitCode::SUCCESS)
}

/// Runs a script in the simulator (or through the W3C model) and prints the outcome as JSON.
/// Exits non-zero if a round did not settle.
pub(crate) fn run_in_sim(path: &Path, model: bool) -> anyhow::Result<ExitCode> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(path)?;
    }
    let script: Script = serde_json::from_str(&text)?;
    anyhow::ensure!(
        script.polite < 2 && script.steps.iter().all(|s| s.peer < 2),
        "a script has two peers, 0 and 1"
    );
    let outcome = if model {
        script.expected()
    } else {
        script.run_in_sim()
    };
    println!("{}", serde_json::to_string_pretty(&outcome)?);
    Ok(if outcome.unsettled_rounds.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
