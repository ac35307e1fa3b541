use politely_core::{Direction, MediaKind};
use politely_sim::{Action, Scenario, Sim, SimConfig};

#[test]
fn smoke_setup_then_glare() {
    let scenario = Scenario::default()
        .at(0, 0, 1, Action::CreateChannel("chat".into()))
        .both(
            500,
            0,
            1,
            Action::AddTransceiver(MediaKind::Video, Direction::SendOnly),
        );
    let mut sim = Sim::with_scenario(SimConfig::default(), &scenario);
    let verdict = sim.run();
    for l in sim.trace() {
        println!("{l}");
    }
    println!("{:?}", verdict.stats);
    assert!(verdict.passed(), "{:?}", verdict.failures);
}
