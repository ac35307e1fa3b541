//! Random scenarios over many seeds, across 2 to 4 peers: every run must converge.
//!
//! 2,000 seeds by default, split in four tests so they run in parallel. Set `POLITELY_SEEDS`
//! to run more (seeds 0..N); `politely sim` runs any number with a progress bar. A failing
//! seed prints the command that replays it alone.

fn run_chunk(chunk: u64) {
    const CHUNKS: u64 = 4;
    let total: u64 = std::env::var("POLITELY_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    let failures = politely_sim::failing_seeds((0..total).filter(|s| s % CHUNKS == chunk), None);
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn random_seeds_chunk_0() {
    run_chunk(0);
}

#[test]
fn random_seeds_chunk_1() {
    run_chunk(1);
}

#[test]
fn random_seeds_chunk_2() {
    run_chunk(2);
}

#[test]
fn random_seeds_chunk_3() {
    run_chunk(3);
}
