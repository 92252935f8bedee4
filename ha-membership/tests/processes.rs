//! Eight nodes as real OS processes on 127.0.0.1: a node stopped (SIGSTOP)
//! for 3 s is never declared dead; a killed one (SIGKILL) is dead in every
//! view; restarted under the same name and address it is alive everywhere,
//! with one entry each.

use std::time::{Duration, Instant};

mod support;
use support::Nodes;

#[test]
fn eight_processes_stop_kill_and_restart() {
    let mut p = Nodes::new();
    p.spawn("p0", Nodes::command("p0", "127.0.0.1:0", None));
    let seed = p.addrs["p0"].clone();
    for i in 1..8 {
        let name = format!("p{i}");
        p.spawn(&name, Nodes::command(&name, "127.0.0.1:0", Some(&seed)));
    }
    let names: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
    let everyone_alive = |p: &Nodes| names.iter().all(|n| p.all_see(n, "alive", &[]));
    assert!(p.wait(Duration::from_secs(30), everyone_alive), "all eight joined: {:?}", p.views);

    // SIGSTOP p3 for 3 s: suspected perhaps, never dead.
    p.signal("p3", "-STOP");
    let stopped = Instant::now();
    p.wait(Duration::from_secs(3), |_| false);
    p.signal("p3", "-CONT");
    let back = p.wait(Duration::from_secs(20), |p| p.all_see("p3", "alive", &[]));
    let p3_deaths: Vec<_> = p.deaths.iter().filter(|(_, n)| n == "p3").collect();
    assert!(p3_deaths.is_empty(), "p3 declared dead after a {:?} stop: {p3_deaths:?}", stopped.elapsed());
    assert!(back, "p3 alive everywhere again: {:?}", p.views);

    // SIGKILL p5: dead in every other view.
    let p5_addr = p.addrs["p5"].clone();
    p.signal("p5", "-KILL");
    let killed = Instant::now();
    p.reap("p5");
    assert!(p.wait(Duration::from_secs(20), |p| p.all_see("p5", "dead", &["p5"])), "p5 dead everywhere");
    let detection = killed.elapsed();

    // Restart p5 at the same address: alive everywhere, one entry each.
    let restarted = Instant::now();
    p.spawn("p5", Nodes::command("p5", &p5_addr, Some(&seed)));
    assert!(p.wait(Duration::from_secs(20), |p| p.all_see("p5", "alive", &[])), "p5 back: {:?}", p.views);
    let rejoin = restarted.elapsed();
    for (who, view) in &p.views {
        assert_eq!(view.iter().filter(|(n, _)| n == "p5").count(), 1, "{who} holds p5 once");
        assert_eq!(view.len(), 8, "{who}: {view:?}");
    }
    eprintln!("SIGKILL detected everywhere in {detection:?}; restart alive everywhere in {rejoin:?}");
}
