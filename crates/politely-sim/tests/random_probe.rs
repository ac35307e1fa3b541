#[test]
fn probe() {
    let n: u64 = std::env::var("N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let start = std::time::Instant::now();
    let mut failed = 0;
    for seed in 0..n {
        let peers: usize = std::env::var("PEERS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2 + (seed % 3) as usize);
        let (v, trace) = politely_sim::run_seed(seed, peers, None);
        if !v.passed() {
            failed += 1;
            if failed <= 3 {
                println!("seed {seed} peers {peers}: {:?}", v.failures);
                if std::env::var("TRACE").is_ok() {
                    for l in &trace {
                        println!("{l}");
                    }
                }
            }
        }
    }
    println!("{n} seeds, {failed} failed, {:?}", start.elapsed());
}

#[test]
fn one() {
    let Ok(seed) = std::env::var("SEED").map(|s| s.parse::<u64>().unwrap()) else {
        return;
    };
    let peers: usize = std::env::var("PEERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let (c, s) = politely_sim::Scenario::random(seed, peers);
    println!("{c:?}\n{s:#?}");
    let mut sim = politely_sim::Sim::with_scenario(c, &s);
    let v = sim.run();
    for l in sim.trace() {
        if !l.contains("candidate") {
            println!("{l}");
        }
    }
    for a in 0..peers {
        for b in 0..peers {
            if a != b {
                println!("p{a}>p{b} {:#?}", sim.engine(a, b).transceivers());
            }
        }
    }
    println!("{:?}", v.failures);
}

struct L;
impl log::Log for L {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Debug
    }
    fn log(&self, r: &log::Record<'_>) {
        let t = r.target();
        if t.contains("ice")
            || t.contains("dtls")
            || t.contains("politely")
            || t.contains("peer_connection")
        {
            println!("LOG {} {} {}", r.level(), t, r.args());
        }
    }
    fn flush(&self) {}
}

#[test]
fn one_logged() {
    if std::env::var("SEED").is_err() {
        return;
    }
    log::set_logger(&L).unwrap();
    log::set_max_level(log::LevelFilter::Debug);
    one();
}
