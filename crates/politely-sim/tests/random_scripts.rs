//! Random action scripts in the simulator end as webrtc-pc's rules say: the intent oracle's
//! counterpart for scripts, against `Script::expected`, the model the differential check
//! against Chromium also reports.
//!
//! 300 scripts of 10 rounds by default (seeds 1..=300), split in two tests so they run in
//! parallel; `POLITELY_SCRIPTS=N` runs seeds 1..=N. A differing script prints the command that
//! replays it. The browser half of the check is `web/test/differential.test.mjs`.

use politely_sim::Script;

fn run_half(half: u64) {
    let total: u64 = std::env::var("POLITELY_SCRIPTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut failures = Vec::new();
    for seed in (1..=total).filter(|s| s % 2 == half) {
        let script = Script::random(seed, 10);
        let (model, sim) = (script.expected(), script.run_in_sim());
        let differences = model.differences(&sim);
        if !differences.is_empty() {
            failures.push(format!(
                "script {seed}: {differences:?}\n  notes: {:?}\n  replay: cargo run --release -p politely-cli -- script --seed {seed} --rounds 10 | cargo run --release -p politely-cli -- sim --script -",
                sim.notes
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} differ from the model:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn random_scripts_even_seeds() {
    run_half(0);
}

#[test]
fn random_scripts_odd_seeds() {
    run_half(1);
}
