//! Three hosts as Linux network namespaces joined by a bridge, two node
//! processes on each: one host's link is cut for 60 s, each side declares
//! the other dead, nobody declares a member of its own side dead, and once
//! the link is back everyone merges again without any external join.
//!
//! The test builds its own network (needs root, or CAP_SYS_ADMIN and
//! CAP_NET_ADMIN, and iproute2's `ip`) and removes it afterwards, even on
//! panic. Where namespaces cannot be created it says so and passes.
//!
//! Topology (all names carry the test's pid, so parallel runs never meet):
//!
//! ```text
//!   ns h0 (10.77.0.1) ─ eth0 ══ p0 ─┐
//!   ns h1 (10.77.0.2) ─ eth0 ══ p1 ─┼─ br0 (ns hub)
//!   ns h2 (10.77.0.3) ─ eth0 ══ p2 ─┘        the cut: `p2` down
//! ```

use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::{Nodes, BIN};
const HOSTS: usize = 3;
const PER_HOST: usize = 2;
/// The host whose link is cut.
const CUT: usize = 2;
/// What the issue asks: the link stays down this long.
const CUT_FOR: Duration = Duration::from_secs(60);
/// The issue's target for the merge after the link returns (printed, not asserted:
/// a loaded CI machine may be slower; the bound asserted is `HEAL_BOUND`).
const HEAL_TARGET: Duration = Duration::from_secs(10);
const HEAL_BOUND: Duration = Duration::from_secs(25);

/// Runs `ip ARGS`; the error holds its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`ip {}`: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn node_name(host: usize, k: usize) -> String {
    format!("h{host}n{k}")
}

fn host_of(node: &str) -> usize {
    node[1..2].parse().expect("names are h<host>n<k>")
}

/// Which side of the cut a node is on.
fn side(node: &str) -> bool {
    host_of(node) == CUT
}

struct Lab {
    prefix: String,
    /// Namespaces created, removed in `Drop`.
    namespaces: Vec<String>,
    nodes: Nodes,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.cleanup();
    }
}

impl Lab {
    fn new() -> Lab {
        Lab { prefix: format!("hans{}", std::process::id()), namespaces: Vec::new(), nodes: Nodes::new() }
    }

    fn ns(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    fn add_ns(&mut self, what: &str) -> Result<String, String> {
        let name = self.ns(what);
        // Left over from a crashed run that had our pid: start clean.
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        Ok(name)
    }

    /// The bridge namespace and one namespace per host, each host's `eth0`
    /// a veth whose peer `p<i>` sits on the bridge. Nothing is created in the
    /// root namespace: the veth pairs are made inside the hub and moved at once.
    fn build(&mut self) -> Result<(), String> {
        let hub = self.add_ns("hub")?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for i in 0..HOSTS {
            let host = self.add_ns(&format!("h{i}"))?;
            let port = format!("p{i}");
            ip(&["-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &host])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &host, "addr", "add", &format!("{}/24", host_ip(i)), "dev", "eth0"])?;
            ip(&["-n", &host, "link", "set", "eth0", "up"])?;
            ip(&["-n", &host, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    fn cleanup(&mut self) {
        self.nodes.stop_all();
        // Deleting a namespace destroys the veth ends in it, and with them their peers.
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }

    fn set_link(&self, host: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.ns("hub"), "link", "set", &format!("p{host}"), state]).expect("link state changes");
    }

    fn spawn(&mut self, host: usize, k: usize, seed: Option<&str>) {
        let name = node_name(host, k);
        let bind = format!("{}:{}", host_ip(host), 7946 + k);
        let mut cmd = Command::new("ip");
        // `ip netns exec` execs the binary in place, so the child's pid is the node's.
        cmd.args(["netns", "exec", &self.ns(&format!("h{host}")), BIN, &name, &bind]).args(seed);
        self.nodes.spawn(&name, cmd);
    }

    /// Every (observer, member) pair on one side ever reported dead.
    fn false_deaths(&self) -> Vec<&(String, String)> {
        self.nodes.deaths.iter().filter(|(who, n)| side(who) == side(n)).collect()
    }
}

/// Every node of `observers`' side sees every node of `about`'s side in `state`.
fn side_sees(nodes: &Nodes, observers: bool, about: bool, state: &str) -> bool {
    let names: Vec<&String> = nodes.names().collect();
    names
        .iter()
        .filter(|o| side(o) == observers)
        .all(|o| names.iter().filter(|n| side(n) == about && *n != o).all(|n| nodes.state(o, n) == Some(state)))
}

fn all_alive(nodes: &Nodes) -> bool {
    side_sees(nodes, false, false, "alive")
        && side_sees(nodes, false, true, "alive")
        && side_sees(nodes, true, true, "alive")
        && side_sees(nodes, true, false, "alive")
}

fn host_ip(host: usize) -> String {
    format!("10.77.0.{}", host + 1)
}

#[test]
fn three_hosts_link_cut_for_60s_then_merge() {
    let mut lab = Lab::new();
    if let Err(reason) = lab.build() {
        lab.cleanup();
        eprintln!("skipped: network namespaces not permitted here: {reason}");
        return;
    }

    let seed = format!("{}:7946", host_ip(0));
    lab.spawn(0, 0, None);
    for host in 0..HOSTS {
        for k in 0..PER_HOST {
            if (host, k) != (0, 0) {
                lab.spawn(host, k, Some(&seed));
            }
        }
    }
    let joined = lab.nodes.wait(Duration::from_secs(30), |n| all_alive(n) && n.views.values().all(|v| v.len() == 6));
    assert!(joined, "all six joined across three namespaces: {:?}", lab.nodes.views);

    // Cut h2's link at the bridge: its packets vanish, its interface stays up.
    lab.set_link(CUT, false);
    let cut = Instant::now();
    let (mut rest_sees_dead, mut cut_sees_dead) = (None, None);
    let both = lab.nodes.wait(CUT_FOR, |n| {
        if rest_sees_dead.is_none() && side_sees(n, false, true, "dead") {
            rest_sees_dead = Some(cut.elapsed());
        }
        if cut_sees_dead.is_none() && side_sees(n, true, false, "dead") {
            cut_sees_dead = Some(cut.elapsed());
        }
        rest_sees_dead.is_some() && cut_sees_dead.is_some()
    });
    assert!(
        both,
        "each side sees the other dead within the {CUT_FOR:?} cut \
         (h0+h1 saw h2 dead after {rest_sees_dead:?}, h2 saw h0+h1 dead after {cut_sees_dead:?}): {:?}",
        lab.nodes.views
    );
    // The cut lasts its full 60 s; output keeps being read for false deaths.
    let left = CUT_FOR.saturating_sub(cut.elapsed());
    lab.nodes.wait(left, |_| false);
    let apart = side_sees(&lab.nodes, false, true, "dead") && side_sees(&lab.nodes, true, false, "dead");
    assert!(apart, "still apart: {:?}", lab.nodes.views);

    lab.set_link(CUT, true);
    let restored = Instant::now();
    let merged = lab.nodes.wait(HEAL_BOUND, all_alive);
    let heal = restored.elapsed();
    assert!(merged, "merged within {HEAL_BOUND:?} of the link's return: {:?}", lab.nodes.views);
    assert!(lab.false_deaths().is_empty(), "no false death inside a side: {:?}", lab.false_deaths());
    for (who, view) in &lab.nodes.views {
        assert_eq!(view.len(), HOSTS * PER_HOST, "{who} holds everyone once: {view:?}");
    }
    eprintln!(
        "link of h2 cut for {CUT_FOR:?}: h0+h1 saw h2 dead after {:?}, h2 saw h0+h1 dead after {:?}; \
         merged {heal:?} after the link's return (target {HEAL_TARGET:?}{})",
        rest_sees_dead.unwrap(),
        cut_sees_dead.unwrap(),
        if heal <= HEAL_TARGET { ", met" } else { ", MISSED" }
    );

    let prefix = lab.prefix.clone();
    lab.cleanup();
    let list = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(!list.contains(&prefix), "namespaces removed: {list}");
}
