//! Node processes for the real-process tests: spawns the `ha-member-node`
//! binary (directly, or through a wrapper such as `ip netns exec`), reads
//! what each prints (`ADDR <addr>` once, `VIEW name=state ...` on every
//! change), and kills every child when dropped, even on panic.

// Each test file uses the part it needs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The node binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_ha-member-node");

/// Running node processes and what they last said.
pub struct Nodes {
    children: HashMap<String, Child>,
    /// The address each node printed.
    pub addrs: HashMap<String, String>,
    /// Each node's latest view: member name and state, in table order.
    pub views: HashMap<String, Vec<(String, String)>>,
    /// Every (observer, member) pair ever reported dead, in order.
    pub deaths: Vec<(String, String)>,
    tx: mpsc::Sender<(String, String)>,
    rx: mpsc::Receiver<(String, String)>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.stop_all();
    }
}

impl Nodes {
    pub fn new() -> Nodes {
        let (tx, rx) = mpsc::channel();
        Nodes { children: HashMap::new(), addrs: HashMap::new(), views: HashMap::new(), deaths: Vec::new(), tx, rx }
    }

    /// `ha-member-node NAME BIND [SEED]`, started directly.
    pub fn command(name: &str, bind: &str, seed: Option<&str>) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args([name, bind]).args(seed);
        cmd
    }

    /// Starts `cmd` as node `name` and waits (10 s at most) for its first line.
    pub fn spawn(&mut self, name: &str, mut cmd: Command) {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("node starts");
        let out = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let (tx, who) = (self.tx.clone(), name.to_string());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send((who.clone(), line)).is_err() {
                    return;
                }
            }
        });
        self.children.insert(name.into(), child);
        let up = self.wait(Duration::from_secs(10), |n| n.addrs.contains_key(name) || n.views.contains_key(name));
        assert!(up, "{name} started");
    }

    /// The names of the running nodes.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.children.keys()
    }

    /// Sends `sig` (`-STOP`, `-CONT`, `-KILL`) to node `name`.
    pub fn signal(&self, name: &str, sig: &str) {
        let pid = self.children[name].id().to_string();
        assert!(Command::new("kill").args([sig, &pid]).status().expect("kill runs").success());
    }

    /// Reaps node `name` after it was killed.
    pub fn reap(&mut self, name: &str) {
        if let Some(c) = self.children.get_mut(name) {
            let _ = c.wait();
        }
    }

    /// Kills and reaps every node.
    pub fn stop_all(&mut self) {
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }

    /// Takes in output until `pred` holds or `within` passed; false on timeout.
    pub fn wait(&mut self, within: Duration, mut pred: impl FnMut(&Nodes) -> bool) -> bool {
        let end = Instant::now() + within;
        loop {
            if pred(self) {
                return true;
            }
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((who, line)) => self.take(who, &line),
                Err(_) => return pred(self),
            }
        }
    }

    fn take(&mut self, who: String, line: &str) {
        if let Some(a) = line.strip_prefix("ADDR ") {
            self.addrs.insert(who, a.to_string());
        } else if let Some(v) = line.strip_prefix("VIEW ") {
            let view: Vec<(String, String)> = v
                .split_whitespace()
                .filter_map(|e| e.split_once('='))
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .collect();
            for (n, s) in &view {
                if s == "dead" && self.state(&who, n) != Some("dead") {
                    self.deaths.push((who.clone(), n.clone()));
                }
            }
            self.views.insert(who, view);
        }
    }

    /// What node `of` last said of member `about`.
    pub fn state(&self, of: &str, about: &str) -> Option<&str> {
        self.views.get(of)?.iter().find(|(n, _)| n == about).map(|(_, s)| s.as_str())
    }

    /// Every running node but those in `except` holds `about` in `state`.
    pub fn all_see(&self, about: &str, state: &str, except: &[&str]) -> bool {
        self.names().filter(|n| !except.contains(&n.as_str())).all(|n| self.state(n, about) == Some(state))
    }
}
