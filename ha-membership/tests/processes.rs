//! Eight nodes as real OS processes on 127.0.0.1: a node stopped (SIGSTOP)
//! for 3 s is never declared dead; a killed one (SIGKILL) is dead in every
//! view; restarted under the same name and address it is alive everywhere,
//! with one entry each.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ha-member-node");

struct Procs {
    children: HashMap<String, Child>,
    addrs: HashMap<String, String>,
    /// Each node's latest view: member name and state, in table order.
    views: HashMap<String, Vec<(String, String)>>,
    tx: mpsc::Sender<(String, String)>,
    rx: mpsc::Receiver<(String, String)>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Procs {
    fn new() -> Procs {
        let (tx, rx) = mpsc::channel();
        Procs { children: HashMap::new(), addrs: HashMap::new(), views: HashMap::new(), tx, rx }
    }

    fn spawn(&mut self, name: &str, bind: &str, seed: Option<&str>) {
        let mut cmd = Command::new(BIN);
        cmd.args([name, bind]).args(seed).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("node binary starts");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, who) = (self.tx.clone(), name.to_string());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send((who.clone(), line)).is_err() {
                    return;
                }
            }
        });
        self.children.insert(name.into(), child);
        let addr = self.wait(Duration::from_secs(10), |p| p.addrs.contains_key(name)).then_some(());
        addr.expect("the node printed its address");
    }

    fn signal(&self, name: &str, sig: &str) {
        let pid = self.children[name].id().to_string();
        assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }

    /// Takes in output until `pred` holds or `within` passed; false on timeout.
    fn wait(&mut self, within: Duration, mut pred: impl FnMut(&Procs) -> bool) -> bool {
        let end = Instant::now() + within;
        loop {
            if pred(self) {
                return true;
            }
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((who, line)) => {
                    if let Some(a) = line.strip_prefix("ADDR ") {
                        self.addrs.insert(who, a.to_string());
                    } else if let Some(v) = line.strip_prefix("VIEW ") {
                        let view = v
                            .split_whitespace()
                            .filter_map(|e| e.split_once('='))
                            .map(|(n, s)| (n.to_string(), s.to_string()))
                            .collect();
                        self.views.insert(who, view);
                    }
                }
                Err(_) => return pred(self),
            }
        }
    }

    fn state(&self, of: &str, about: &str) -> Option<&str> {
        self.views.get(of)?.iter().find(|(n, _)| n == about).map(|(_, s)| s.as_str())
    }

    fn all_see(&self, about: &str, state: &str, except: &[&str]) -> bool {
        self.children.keys().filter(|n| !except.contains(&n.as_str())).all(|n| self.state(n, about) == Some(state))
    }
}

#[test]
fn eight_processes_stop_kill_and_restart() {
    let mut p = Procs::new();
    p.spawn("p0", "127.0.0.1:0", None);
    let seed = p.addrs["p0"].clone();
    for i in 1..8 {
        p.spawn(&format!("p{i}"), "127.0.0.1:0", Some(&seed));
    }
    let names: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
    let everyone_alive = |p: &Procs| names.iter().all(|n| p.all_see(n, "alive", &[]));
    assert!(p.wait(Duration::from_secs(30), everyone_alive), "all eight joined: {:?}", p.views);

    // SIGSTOP p3 for 3 s: suspected perhaps, never dead.
    p.signal("p3", "-STOP");
    let stopped = Instant::now();
    let mut dead_seen = false;
    p.wait(Duration::from_secs(3), |p| {
        dead_seen |= p.children.keys().any(|n| p.state(n, "p3") == Some("dead"));
        false
    });
    p.signal("p3", "-CONT");
    let back = p.wait(Duration::from_secs(20), |p| {
        dead_seen |= p.children.keys().any(|n| p.state(n, "p3") == Some("dead"));
        p.all_see("p3", "alive", &[])
    });
    assert!(!dead_seen, "p3 declared dead after a {:?} stop", stopped.elapsed());
    assert!(back, "p3 alive everywhere again: {:?}", p.views);

    // SIGKILL p5: dead in every other view.
    let p5_addr = p.addrs["p5"].clone();
    p.signal("p5", "-KILL");
    let killed = Instant::now();
    let _ = p.children.get_mut("p5").unwrap().wait();
    assert!(p.wait(Duration::from_secs(20), |p| p.all_see("p5", "dead", &["p5"])), "p5 dead everywhere");
    let detection = killed.elapsed();

    // Restart p5 at the same address: alive everywhere, one entry each.
    let restarted = Instant::now();
    p.spawn("p5", &p5_addr, Some(&seed));
    assert!(p.wait(Duration::from_secs(20), |p| p.all_see("p5", "alive", &[])), "p5 back: {:?}", p.views);
    let rejoin = restarted.elapsed();
    for (who, view) in &p.views {
        assert_eq!(view.iter().filter(|(n, _)| n == "p5").count(), 1, "{who} holds p5 once");
        assert_eq!(view.len(), 8, "{who}: {view:?}");
    }
    eprintln!("SIGKILL detected everywhere in {detection:?}; restart alive everywhere in {rejoin:?}");
}
