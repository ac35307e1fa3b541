//! Black-box tests of the `politely` binary (ripgrep's `TestCommand` style).

use std::process::{Command, Output};

fn politely(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_politely"))
        .args(args)
        .output()
        .expect("the politely binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sim_runs_seeds_and_ends_with_the_tally() {
    let out = politely(&["sim", "--seeds", "12", "--jobs", "2"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.lines().last(), Some("12 passed, 0 failed"), "{text}");
    assert!(text.contains("runs: 12, converged: 12"), "{text}");
}

#[test]
fn glare_rounds_cost_three_offers_and_two_answers() {
    let out = politely(&["sim", "--glare", "--rounds", "2", "--seeds", "6"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("offers per glare round: 3.000, answers per glare round: 2.000"),
        "{text}"
    );
}

/// Determinism across processes: the same seed gives the same negotiation-level trace.
#[test]
fn a_seed_replays_identically_in_another_process() {
    let args = ["sim", "--seed", "31", "--peers", "3", "--trace"];
    let (a, b) = (politely(&args), politely(&args));
    assert!(a.status.success() && b.status.success());
    let trace = |o: &Output| {
        stdout(o)
            .lines()
            .take_while(|l| !l.starts_with("runs:"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (ta, tb) = (trace(&a), trace(&b));
    assert!(ta.iter().any(|l| l.starts_with("trace hash ")));
    assert!(ta.len() > 20, "a trace is printed");
    assert_eq!(ta, tb);
}

#[test]
fn bad_arguments_are_refused() {
    let out = politely(&["sim", "--peers", "9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--peers must be 2 to 6"));
}
