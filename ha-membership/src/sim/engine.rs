//! The event loop of the simulator, its fault model and its measurements.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::Duration;

use ha_core::rng::FastRng;
use ha_core::Instant;
use serde::Serialize;

use super::latency::{Latency, Tail};
use super::scenario::{FaultKind, Scenario, ScenarioError};
use super::{addr_of, index_of, SimEvent, SimNode, ViewChange};

/// Builds node `i` at `now` with a seed and the seeds to join through.
pub type Spawn<'a, N> = dyn FnMut(usize, Instant, u64, &[SocketAddr]) -> N + 'a;

/// One run of a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// Cluster size.
    pub nodes: usize,
    /// Seed of the network, the faults' randomness and every node.
    pub seed: u64,
    /// Use the scenario's quick duration.
    pub quick: bool,
    /// Lifeguard on (off gives plain SWIM where the protocol supports it).
    pub lifeguard: bool,
}

/// What one run measured. Times are seconds of virtual time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// Cluster size.
    pub nodes: usize,
    /// Crash to the first suspicion (or death) of the crashed node by anyone;
    /// the latest over crashed nodes.
    pub first_suspect_s: Option<f64>,
    /// Crash to the moment every live node holds the crashed node dead; the
    /// latest over crashed nodes. `None` when some never did.
    pub all_dead_s: Option<f64>,
    /// Deaths declared, by any node, of nodes that were up and never paused.
    pub false_dead: u64,
    /// Suspicions raised, by any node, of nodes that were up and never paused.
    pub false_suspect: u64,
    /// Deaths declared of paused (starved but running) nodes.
    pub paused_dead: u64,
    /// Suspicions raised of paused nodes.
    pub paused_suspect: u64,
    /// Deaths declared of nodes on the other side of a partition.
    pub partitioned_dead: u64,
    /// From the end of the last partition to every live node seeing exactly the live set.
    pub heal_s: Option<f64>,
    /// Every live node's view equals the live set at the end.
    pub converged: bool,
    /// Fewest and most times a live node removed a crashed node from its
    /// view (a Discover's removals); `[1, 1]` is exactly once.
    pub removals: Option<[u32; 2]>,
    /// Bytes sent (datagrams and streams) per member per second, measured after the warm-up.
    pub bytes_per_member_per_s: f64,
    /// Datagrams and streams sent per member per second, after the warm-up.
    pub msgs_per_member_per_s: f64,
    /// Incarnations seen going back (must be 0).
    pub invariant_violations: u64,
    /// Events processed.
    pub steps: u64,
}

enum Ev {
    Deliver { to: usize, from: usize, bytes: Vec<u8>, epoch: u32, late: bool },
    Wake { node: usize, epoch: u32, late: bool },
    SyncReq { to: usize, from: usize, bytes: Vec<u8>, epoch: u32, late: bool },
    SyncResp { to: usize, from: usize, bytes: Vec<u8>, epoch: u32, late: bool },
    Fault { index: usize, start: bool },
    Check,
}

struct Item {
    at: Instant,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Item {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest first.
        other.at.cmp(&self.at).then(other.seq.cmp(&self.seq))
    }
}

const DOWN: u8 = 0;
const ALIVE: u8 = 1;
const SUSPECT: u8 = 2;

struct World<N> {
    n: usize,
    measure_from: Instant,
    end: Instant,
    nodes: Vec<Option<N>>,
    epoch: Vec<u32>,
    scheduled: Vec<Option<Instant>>,
    up: Vec<bool>,
    ever_paused: Vec<bool>,
    pause: Vec<Option<(u64, u64)>>,
    crashed_at: Vec<Option<Instant>>,
    first_detect: Vec<Option<Instant>>,
    all_dead_at: Vec<Option<Instant>>,
    view: Vec<u8>,
    last_inc: Vec<u64>,
    removals: Vec<u32>,
    correct: Vec<u32>,
    wrong: Vec<u32>,
    partitions: Vec<(usize, bool)>,
    extra_loss: Vec<f64>,
    heap: BinaryHeap<Item>,
    seq: u64,
    rng: FastRng,
    bytes: u64,
    msgs: u64,
    out: Outcome,
    heal_from: Option<Instant>,
    latency: Latency,
    latency_tail: Option<Tail>,
    loss: f64,
}

/// Runs `scenario` once; `spawn(i, now, seed, seeds)` builds node `i`
/// (called again when it restarts).
pub fn run<N: SimNode>(
    scenario: &Scenario,
    spec: &RunSpec,
    spawn: &mut Spawn<'_, N>,
) -> Result<Outcome, ScenarioError> {
    let n = spec.nodes;
    scenario.validate(n)?;
    let duration =
        if spec.quick { scenario.quick_duration_s.unwrap_or(scenario.duration_s) } else { scenario.duration_s };
    // The only clock read: the origin of virtual time.
    let t0 = Instant::now();
    let measure_from = t0 + Duration::from_secs_f64(scenario.warmup_s);
    let end = measure_from + Duration::from_secs_f64(duration);
    let mut w = World {
        n,
        measure_from,
        end,
        nodes: (0..n).map(|_| None).collect(),
        epoch: vec![0; n],
        scheduled: vec![None; n],
        up: vec![false; n],
        ever_paused: vec![false; n],
        pause: vec![None; n],
        crashed_at: vec![None; n],
        first_detect: vec![None; n],
        all_dead_at: vec![None; n],
        view: vec![DOWN; n * n],
        last_inc: vec![0; n * n],
        removals: vec![0; n * n],
        correct: vec![0; n],
        wrong: vec![0; n],
        partitions: Vec::new(),
        extra_loss: Vec::new(),
        heap: BinaryHeap::new(),
        seq: 0,
        rng: FastRng::new(spec.seed ^ 0x5157_4d5f_5349_4d00),
        bytes: 0,
        msgs: 0,
        out: Outcome {
            nodes: n,
            first_suspect_s: None,
            all_dead_s: None,
            false_dead: 0,
            false_suspect: 0,
            paused_dead: 0,
            paused_suspect: 0,
            partitioned_dead: 0,
            heal_s: None,
            converged: false,
            removals: None,
            bytes_per_member_per_s: 0.0,
            msgs_per_member_per_s: 0.0,
            invariant_violations: 0,
            steps: 0,
        },
        heal_from: None,
        latency: scenario.network.latency_dist()?,
        latency_tail: scenario.network.latency_tail,
        loss: scenario.network.loss,
    };
    for (index, f) in scenario.faults.iter().enumerate() {
        if let FaultKind::Pause { nodes, .. } = &f.kind {
            for &i in nodes {
                w.ever_paused[i] = true;
            }
        }
        w.push(measure_from + Duration::from_secs_f64(f.at_s), Ev::Fault { index, start: true });
        if let Some(u) = f.until_s {
            w.push(measure_from + Duration::from_secs_f64(u), Ev::Fault { index, start: false });
        }
    }
    let mut t = measure_from;
    while t <= end {
        w.push(t, Ev::Check);
        t += Duration::from_secs(1);
    }
    // Node 0 first; the others join through it, a little apart.
    for i in 0..n {
        let at = if i == 0 { t0 } else { t0 + Duration::from_secs_f64(w.rng.unit_f64() * 2.0) };
        w.start_node(i, at, spec.seed, spawn, &[addr_of(0)]);
    }
    let mut restart_seed = spec.seed.wrapping_mul(31);
    while let Some(item) = w.heap.pop() {
        if item.at > end {
            break;
        }
        w.out.steps += 1;
        let now = item.at;
        match item.ev {
            Ev::Deliver { to, from, bytes, epoch, late } => {
                if !w.alive(to, epoch) {
                    continue;
                }
                if !late
                    && w.delay_if_paused(to, now, |late| Ev::Deliver { to, from, bytes: bytes.clone(), epoch, late })
                {
                    continue;
                }
                w.node(to).handle(now, addr_of(from), &bytes);
                w.after(to, now);
            }
            Ev::Wake { node, epoch, late } => {
                if !w.alive(node, epoch) || (!late && w.scheduled[node] != Some(now)) {
                    continue;
                }
                if !late && w.delay_if_paused(node, now, |late| Ev::Wake { node, epoch, late }) {
                    // Hold further wakes until the late one runs.
                    w.scheduled[node] = Some(w.end + Duration::from_secs(1));
                    continue;
                }
                w.scheduled[node] = None;
                w.node(node).tick(now);
                w.after(node, now);
            }
            Ev::SyncReq { to, from, bytes, epoch, late } => {
                if !w.up[to] || !w.up[from] {
                    continue;
                }
                if !late
                    && w.delay_if_paused(to, now, |late| Ev::SyncReq { to, from, bytes: bytes.clone(), epoch, late })
                {
                    continue;
                }
                w.node(to).handle_state(now, &bytes);
                let resp = w.node(to).local_state(false);
                w.count(now, resp.len());
                w.after(to, now);
                if !w.blocked(to, from) {
                    let at = now + w.latency();
                    w.push(at, Ev::SyncResp { to: from, from: to, bytes: resp, epoch, late: false });
                }
            }
            Ev::SyncResp { to, from, bytes, epoch, late } => {
                if !w.alive(to, epoch) {
                    continue;
                }
                if !late
                    && w.delay_if_paused(to, now, |late| Ev::SyncResp { to, from, bytes: bytes.clone(), epoch, late })
                {
                    continue;
                }
                w.node(to).handle_state(now, &bytes);
                w.after(to, now);
            }
            Ev::Fault { index, start } => {
                let f = &scenario.faults[index];
                match (&f.kind, start) {
                    (FaultKind::Crash { nodes }, true) => {
                        for &i in nodes {
                            w.crash(i, now);
                        }
                    }
                    (FaultKind::Crash { nodes }, false) => {
                        for &i in nodes {
                            restart_seed = restart_seed.wrapping_add(1);
                            let seeds: Vec<SocketAddr> =
                                (0..n).filter(|&j| j != i && w.up[j]).take(3).map(addr_of).collect();
                            w.start_node(i, now, restart_seed, spawn, &seeds);
                        }
                    }
                    (FaultKind::Leave { nodes }, true) => {
                        for &i in nodes {
                            if w.up[i] {
                                w.node(i).leave(now);
                                w.after(i, now);
                                w.crash(i, now);
                                // A departure is not a crash to detect.
                                w.crashed_at[i] = None;
                            }
                        }
                    }
                    (FaultKind::Leave { .. }, false) => {}
                    (FaultKind::Partition { split, one_way }, true) => w.partitions.push((*split, *one_way)),
                    (FaultKind::Partition { split, one_way }, false) => {
                        if let Some(p) = w.partitions.iter().position(|x| *x == (*split, *one_way)) {
                            w.partitions.remove(p);
                        }
                        w.heal_from = Some(now);
                        w.out.heal_s = None;
                    }
                    (FaultKind::Pause { nodes, min_ms, max_ms }, start) => {
                        for &i in nodes {
                            w.pause[i] = start.then_some((*min_ms, *max_ms));
                        }
                    }
                    (FaultKind::Loss { rate }, true) => w.extra_loss.push(*rate),
                    (FaultKind::Loss { rate }, false) => {
                        if let Some(p) = w.extra_loss.iter().position(|x| x == rate) {
                            w.extra_loss.remove(p);
                        }
                    }
                }
            }
            Ev::Check => {
                let ok = w.converged();
                if let Some(from) = w.heal_from {
                    if ok && w.partitions.is_empty() && w.out.heal_s.is_none() {
                        w.out.heal_s = Some((now - from).as_secs_f64());
                    }
                }
                w.out.converged = ok;
            }
        }
    }
    let secs = duration * n as f64;
    w.out.bytes_per_member_per_s = w.bytes as f64 / secs;
    w.out.msgs_per_member_per_s = w.msgs as f64 / secs;
    let mut removals: Option<[u32; 2]> = None;
    let mut all_dead = Some(0.0f64);
    let mut any_crash = false;
    for j in 0..n {
        let Some(at) = w.crashed_at[j] else { continue };
        any_crash = true;
        if let Some(d) = w.first_detect[j] {
            let s = (d - at).as_secs_f64();
            w.out.first_suspect_s = Some(w.out.first_suspect_s.map_or(s, |x: f64| x.max(s)));
        }
        all_dead = match (all_dead, w.all_dead_at[j]) {
            (Some(prev), Some(d)) => Some(prev.max((d - at).as_secs_f64())),
            _ => None,
        };
        for i in 0..n {
            if i != j && w.up[i] {
                let r = w.removals[i * n + j];
                removals = Some(removals.map_or([r, r], |[lo, hi]| [lo.min(r), hi.max(r)]));
            }
        }
    }
    w.out.removals = removals;
    w.out.all_dead_s = if any_crash { all_dead } else { None };
    Ok(w.out)
}

impl<N: SimNode> World<N> {
    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.heap.push(Item { at, seq: self.seq, ev });
    }

    fn node(&mut self, i: usize) -> &mut N {
        self.nodes[i].as_mut().expect("only live nodes are stepped")
    }

    fn alive(&self, i: usize, epoch: u32) -> bool {
        self.up[i] && self.epoch[i] == epoch
    }

    fn delay_if_paused(&mut self, i: usize, now: Instant, ev: impl FnOnce(bool) -> Ev) -> bool {
        let Some((lo, hi)) = self.pause[i] else { return false };
        let ms = lo as f64 + self.rng.unit_f64() * (hi - lo) as f64;
        let ev = ev(true);
        self.push(now + Duration::from_secs_f64(ms / 1000.0), ev);
        true
    }

    fn blocked(&self, from: usize, to: usize) -> bool {
        self.partitions.iter().any(
            |&(split, one_way)| {
                if one_way {
                    from < split && to >= split
                } else {
                    (from < split) != (to < split)
                }
            },
        )
    }

    fn latency(&mut self) -> Duration {
        let mut ms = self.latency.sample_ms(&mut self.rng);
        if let Some(tail) = &self.latency_tail {
            ms += tail.sample_ms(&mut self.rng);
        }
        Duration::from_secs_f64(ms / 1000.0)
    }

    fn count(&mut self, now: Instant, len: usize) {
        if now >= self.measure_from {
            self.bytes += len as u64;
            self.msgs += 1;
        }
    }

    fn start_node(&mut self, i: usize, now: Instant, seed: u64, spawn: &mut Spawn<'_, N>, seeds: &[SocketAddr]) {
        let seeds: Vec<SocketAddr> = seeds.iter().copied().filter(|s| *s != addr_of(i)).collect();
        let node_seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(i as u64);
        self.nodes[i] = Some(spawn(i, now, node_seed, &seeds));
        self.epoch[i] += 1;
        self.up[i] = true;
        self.crashed_at[i] = None;
        let n = self.n;
        for j in 0..n {
            self.view[i * n + j] = DOWN;
            self.last_inc[i * n + j] = 0;
            if j != i && self.view[j * n + i] != DOWN {
                self.wrong[j] -= 1;
                self.correct[j] += 1;
            }
        }
        self.correct[i] = 0;
        self.wrong[i] = 0;
        self.scheduled[i] = None;
        self.after(i, now);
    }

    fn crash(&mut self, i: usize, now: Instant) {
        if !self.up[i] {
            return;
        }
        self.up[i] = false;
        self.epoch[i] += 1;
        self.nodes[i] = None;
        self.crashed_at[i] = Some(now);
        self.first_detect[i] = None;
        self.all_dead_at[i] = None;
        let n = self.n;
        for j in 0..n {
            self.removals[j * n + i] = 0;
            if j != i && self.view[j * n + i] != DOWN {
                self.correct[j] -= 1;
                self.wrong[j] += 1;
            }
        }
    }

    /// Collects what node `i` produced in its last step and schedules its next wake.
    fn after(&mut self, i: usize, now: Instant) {
        while let Some(ev) = self.node(i).poll_event() {
            self.observe(i, now, ev);
        }
        let wake = self.node(i).next_wake().max(now);
        let pending = self.scheduled[i];
        if pending.is_none_or(|p| wake < p) {
            self.scheduled[i] = Some(wake);
            let epoch = self.epoch[i];
            self.push(wake, Ev::Wake { node: i, epoch, late: false });
        }
        let n = self.n;
        while let Some((to, bytes)) = self.node(i).poll_transmit() {
            self.count(now, bytes.len());
            let Some(to) = index_of(to).filter(|&t| t < n) else { continue };
            let loss = self.loss + self.extra_loss.iter().sum::<f64>();
            if self.blocked(i, to) || self.rng.unit_f64() < loss {
                continue;
            }
            let at = now + self.latency();
            let epoch = self.epoch[to];
            self.push(at, Ev::Deliver { to, from: i, bytes, epoch, late: false });
        }
        while let Some(to) = self.node(i).poll_sync() {
            let req = self.node(i).local_state(true);
            self.count(now, req.len());
            let Some(to) = index_of(to).filter(|&t| t < n) else { continue };
            if self.blocked(i, to) {
                continue;
            }
            let at = now + self.latency();
            let epoch = self.epoch[i];
            self.push(at, Ev::SyncReq { to, from: i, bytes: req, epoch, late: false });
        }
    }

    fn observe(&mut self, i: usize, now: Instant, ev: SimEvent) {
        let n = self.n;
        let j = ev.subject;
        if j >= n || j == i {
            return;
        }
        let k = i * n + j;
        if let Some(inc) = ev.incarnation {
            if inc < self.last_inc[k] {
                self.out.invariant_violations += 1;
            }
            self.last_inc[k] = self.last_inc[k].max(inc);
        }
        let prev = self.view[k];
        let next = match ev.change {
            ViewChange::Alive => ALIVE,
            ViewChange::Suspect => SUSPECT,
            ViewChange::Dead | ViewChange::Left => DOWN,
        };
        self.view[k] = next;
        if (prev != DOWN) != (next != DOWN) {
            let (c, w) = (&mut self.correct[i], &mut self.wrong[i]);
            match (self.up[j], next != DOWN) {
                (true, true) => *c += 1,
                (true, false) => *c -= 1,
                (false, true) => *w += 1,
                (false, false) => *w -= 1,
            }
        }
        let measuring = now >= self.measure_from;
        let newly_suspect = next == SUSPECT && prev != SUSPECT;
        let newly_dead = ev.change == ViewChange::Dead && prev != DOWN;
        // Across a partition, suspecting and declaring dead is the protocol doing its job.
        let cut_off = self.blocked(i, j) || self.blocked(j, i);
        if self.up[j] && cut_off {
            if measuring && newly_dead {
                self.out.partitioned_dead += 1;
            }
        } else if self.up[j] {
            if measuring && newly_suspect {
                if self.ever_paused[j] {
                    self.out.paused_suspect += 1;
                } else {
                    self.out.false_suspect += 1;
                }
            }
            if measuring && newly_dead {
                if self.ever_paused[j] {
                    self.out.paused_dead += 1;
                } else {
                    self.out.false_dead += 1;
                }
            }
        } else if self.crashed_at[j].is_some() {
            if (newly_suspect || newly_dead) && self.first_detect[j].is_none() {
                self.first_detect[j] = Some(now);
            }
            if prev != DOWN && next == DOWN {
                self.removals[k] += 1;
                if self.all_dead_at[j].is_none()
                    && (0..n).all(|o| o == j || !self.up[o] || self.view[o * n + j] == DOWN)
                {
                    self.all_dead_at[j] = Some(now);
                }
            }
        }
    }

    fn converged(&self) -> bool {
        let live = self.up.iter().filter(|u| **u).count() as u32;
        (0..self.n).all(|i| !self.up[i] || (self.correct[i] + 1 == live && self.wrong[i] == 0))
    }
}
