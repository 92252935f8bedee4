//! The event loop of the simulator, its fault model and its measurements.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::Duration;

use ha_core::rng::FastRng;
use ha_core::Instant;
use serde::Serialize;

use super::dist::Dist;
use super::latency::{self, Tail};
use super::scenario::{FaultKind, Scenario, ScenarioError};
use super::{addr_of, index_of, MemberState, SimEvent, SimNode};

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
    /// latest over crashes (a restarted node's crash counts if it was held
    /// dead everywhere before it came back). `None` when some never was.
    pub all_dead_s: Option<f64>,
    /// Restarts of crashed nodes.
    pub restarts: u32,
    /// Restarts that came before every live node held the crash dead: those
    /// crashes count in `first_suspect_s` but not in `all_dead_s`.
    pub back_before_dead: u32,
    /// Restart to the moment the restarted node is back in every view (every
    /// other live node holds it alive or suspect, and it holds them all) for
    /// good: a view that loses it again restarts the clock. The latest over
    /// restarts; `None` when some never was (or nothing restarted).
    pub rejoin_s: Option<f64>,
    /// Deaths declared, by any node, of nodes that were up and never paused
    /// (a restarted node's previous life excepted: see `old_life_dead`).
    pub false_dead: u64,
    /// Deaths declared of a restarted node's previous life, by nodes that
    /// had not yet heard of the new one: the crash being detected late, not
    /// a healthy node declared dead.
    pub old_life_dead: u64,
    /// Suspicions raised, by any node, of nodes that were up and never paused.
    pub false_suspect: u64,
    /// Deaths declared of paused (starved but running) nodes.
    pub paused_dead: u64,
    /// Suspicions raised of paused nodes.
    pub paused_suspect: u64,
    /// Deaths declared of nodes on the other side of a partition, or of any
    /// node while views settle after a partition heals (news and timers
    /// from the split still landing). Single link cuts do not count: a
    /// protocol is expected to reach around them.
    pub partitioned_dead: u64,
    /// From the end of the last partition or link cut to the moment every
    /// live node sees exactly the live set and keeps seeing it: a view that
    /// diverges again restarts the clock. `None` when views never settled.
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
    Deliver {
        to: usize,
        from: usize,
        bytes: Vec<u8>,
        epoch: u32,
        late: bool,
    },
    Wake {
        node: usize,
        epoch: u32,
        late: bool,
    },
    SyncReq {
        to: usize,
        from: usize,
        bytes: Vec<u8>,
        epoch: u32,
        late: bool,
    },
    SyncResp {
        to: usize,
        from: usize,
        bytes: Vec<u8>,
        epoch: u32,
        late: bool,
    },
    /// A stream connection `to` tried was refused (its target is down).
    Refused {
        to: usize,
        target: usize,
        token: u32,
        epoch: u32,
        late: bool,
    },
    Fault {
        index: usize,
        start: bool,
    },
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
    // (fault index, each node's group, one way)
    partitions: Vec<(usize, Vec<u32>, bool)>,
    // (fault index, from, to)
    cut_links: Vec<(usize, usize, usize)>,
    // (fault index, from, to, rate)
    link_loss: Vec<(usize, usize, usize, f64)>,
    extra_loss: Vec<(usize, f64)>,
    // Per (observer, subject): the observer has not yet heard of the
    // subject's life since its restart.
    stale: Vec<bool>,
    // Since when a restarted node is up, until it crashes again or the run ends.
    restarted_at: Vec<Option<Instant>>,
    // Since when it has been back in every view.
    rejoined_at: Vec<Option<Instant>>,
    rejoins: Vec<Option<f64>>,
    // (first suspicion, dead everywhere, counts for all_dead_s) of crashes
    // followed by a restart.
    past_crashes: Vec<(Option<f64>, Option<f64>, bool)>,
    heap: BinaryHeap<Item>,
    seq: u64,
    rng: FastRng,
    bytes: u64,
    msgs: u64,
    out: Outcome,
    heal_from: Option<Instant>,
    // A partition healed and views have not settled since.
    settling: bool,
    latency: Dist,
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
        cut_links: Vec::new(),
        link_loss: Vec::new(),
        extra_loss: Vec::new(),
        stale: vec![false; n * n],
        restarted_at: vec![None; n],
        rejoined_at: vec![None; n],
        rejoins: Vec::new(),
        past_crashes: Vec::new(),
        heap: BinaryHeap::new(),
        seq: 0,
        rng: FastRng::new(spec.seed ^ 0x5157_4d5f_5349_4d00),
        bytes: 0,
        msgs: 0,
        out: Outcome {
            nodes: n,
            first_suspect_s: None,
            all_dead_s: None,
            restarts: 0,
            back_before_dead: 0,
            rejoin_s: None,
            false_dead: 0,
            old_life_dead: 0,
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
        settling: false,
        latency: scenario.network.latency_dist()?,
        latency_tail: scenario.network.latency_tail.clone(),
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
            Ev::Refused { to, target, token, epoch, late } => {
                if !w.alive(to, epoch) {
                    continue;
                }
                if !late && w.delay_if_paused(to, now, |late| Ev::Refused { to, target, token, epoch, late }) {
                    continue;
                }
                w.node(to).stream_refused(now, addr_of(target), token);
                w.after(to, now);
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
                            if w.up[i] {
                                continue;
                            }
                            restart_seed = restart_seed.wrapping_add(1);
                            let seeds: Vec<SocketAddr> =
                                (0..n).filter(|&j| j != i && w.up[j]).take(3).map(addr_of).collect();
                            w.restart(i, now);
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
                    (FaultKind::Partition { one_way, .. }, true) => {
                        let groups = f.kind.partition_groups(n).expect("a partition has groups");
                        w.partitions.push((index, groups, *one_way));
                    }
                    (FaultKind::LinkCut { links, one_way }, true) => {
                        for &[a, b] in links {
                            w.cut_links.push((index, a, b));
                            if !one_way {
                                w.cut_links.push((index, b, a));
                            }
                        }
                    }
                    (FaultKind::Partition { .. } | FaultKind::LinkCut { .. }, false) => {
                        w.settling |= matches!(f.kind, FaultKind::Partition { .. });
                        w.partitions.retain(|p| p.0 != index);
                        w.cut_links.retain(|c| c.0 != index);
                        w.heal_from = Some(now);
                        w.out.heal_s = None;
                    }
                    (FaultKind::LinkLoss { links, rate, one_way }, true) => {
                        for &[a, b] in links {
                            w.link_loss.push((index, a, b, *rate));
                            if !one_way {
                                w.link_loss.push((index, b, a, *rate));
                            }
                        }
                    }
                    (FaultKind::LinkLoss { .. }, false) => w.link_loss.retain(|l| l.0 != index),
                    (FaultKind::Pause { nodes, min_ms, max_ms }, start) => {
                        for &i in nodes {
                            w.pause[i] = start.then_some((*min_ms, *max_ms));
                        }
                    }
                    (FaultKind::Loss { rate }, true) => w.extra_loss.push((index, *rate)),
                    (FaultKind::Loss { .. }, false) => w.extra_loss.retain(|l| l.0 != index),
                }
            }
            Ev::Check => {
                let ok = w.converged();
                if let Some(from) = w.heal_from {
                    if w.partitions.is_empty() && w.cut_links.is_empty() {
                        if !ok {
                            // Settled views that come apart again were not healed.
                            w.out.heal_s = None;
                        } else if w.out.heal_s.is_none() {
                            w.settling = false;
                            w.out.heal_s = Some((now - from).as_secs_f64());
                        }
                    }
                }
                for j in 0..n {
                    w.update_rejoin(j, now);
                }
                w.out.converged = ok;
            }
        }
    }
    let secs = duration * n as f64;
    w.out.bytes_per_member_per_s = w.bytes as f64 / secs;
    w.out.msgs_per_member_per_s = w.msgs as f64 / secs;
    let mut removals: Option<[u32; 2]> = None;
    let mut crashes = std::mem::take(&mut w.past_crashes);
    for j in 0..n {
        if w.crashed_at[j].is_none() {
            continue;
        }
        let (first, dead) = w.crash_record(j);
        crashes.push((first, dead, true));
        for i in 0..n {
            if i != j && w.up[i] {
                let r = w.removals[i * n + j];
                removals = Some(removals.map_or([r, r], |[lo, hi]| [lo.min(r), hi.max(r)]));
            }
        }
    }
    w.out.removals = removals;
    let latest = |a: Option<f64>, b: Option<f64>| Some(a?.max(b?));
    w.out.first_suspect_s = crashes.iter().filter_map(|c| c.0).reduce(f64::max);
    w.out.all_dead_s = crashes.iter().filter(|c| c.2).map(|c| c.1).reduce(latest).flatten();
    // A restart still waiting at the end never rejoined.
    for j in 0..n {
        let figure = w.rejoin_figure(j);
        if w.restarted_at[j].is_some() {
            w.rejoins.push(figure);
        }
    }
    w.out.rejoin_s = w.rejoins.iter().copied().reduce(latest).flatten();
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

    /// Whether `from` and `to` are on different sides of a partition (cut
    /// links aside).
    fn partitioned(&self, from: usize, to: usize) -> bool {
        self.partitions.iter().any(
            |(_, g, one_way)| {
                if *one_way {
                    g[from] == 0 && g[to] != 0
                } else {
                    g[from] != g[to]
                }
            },
        )
    }

    fn blocked(&self, from: usize, to: usize) -> bool {
        self.partitioned(from, to) || self.cut_links.iter().any(|&(_, a, b)| (a, b) == (from, to))
    }

    fn loss(&self, from: usize, to: usize) -> f64 {
        let links: f64 = self.link_loss.iter().filter(|l| (l.1, l.2) == (from, to)).map(|l| l.3).sum();
        self.loss + self.extra_loss.iter().map(|l| l.1).sum::<f64>() + links
    }

    /// (crash to first suspicion, crash to dead everywhere) of `j`'s current crash.
    fn crash_record(&self, j: usize) -> (Option<f64>, Option<f64>) {
        let Some(at) = self.crashed_at[j] else { return (None, None) };
        let since = |t: Option<Instant>| t.map(|t| (t - at).as_secs_f64());
        (since(self.first_detect[j]), since(self.all_dead_at[j]))
    }

    /// Crashed node `i` is about to start again: its crash is over, and
    /// every live node has yet to hear of its new life.
    fn restart(&mut self, i: usize, now: Instant) {
        let record = self.crash_record(i);
        if record.1.is_none() {
            self.out.back_before_dead += 1;
        }
        self.past_crashes.push((record.0, record.1, record.1.is_some()));
        self.out.restarts += 1;
        self.restarted_at[i] = Some(now);
        self.rejoined_at[i] = None;
        let n = self.n;
        for o in 0..n {
            self.stale[o * n + i] = o != i && self.up[o];
        }
    }

    /// Restarted node `j` is back in every view from `now` on, or not any more.
    fn update_rejoin(&mut self, j: usize, now: Instant) {
        if self.restarted_at[j].is_none() {
            return;
        }
        let n = self.n;
        let back =
            (0..n).all(|o| o == j || !self.up[o] || (self.view[o * n + j] != DOWN && self.view[j * n + o] != DOWN));
        match (back, self.rejoined_at[j]) {
            (true, None) => self.rejoined_at[j] = Some(now),
            (false, Some(_)) => self.rejoined_at[j] = None,
            _ => {}
        }
    }

    /// Restart to back in every view, for restarted node `j`.
    fn rejoin_figure(&self, j: usize) -> Option<f64> {
        Some((self.rejoined_at[j]? - self.restarted_at[j]?).as_secs_f64())
    }

    fn latency(&mut self) -> Duration {
        let mut ms = latency::sample_ms(&self.latency, &mut self.rng);
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
            self.stale[i * n + j] = false;
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
        if self.restarted_at[i].is_some() {
            let figure = self.rejoin_figure(i);
            self.rejoins.push(figure);
            self.restarted_at[i] = None;
            self.rejoined_at[i] = None;
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
            let loss = self.loss(i, to);
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
        while let Some((to, token)) = self.node(i).poll_stream_check() {
            // A host whose process is gone answers a connection with a reset;
            // a live, stopped or cut-off one with nothing the check can use.
            let Some(to) = index_of(to).filter(|&t| t < n) else { continue };
            if self.up[to] || self.blocked(i, to) || self.blocked(to, i) {
                continue;
            }
            let at = now + self.latency() + self.latency();
            let epoch = self.epoch[i];
            self.push(at, Ev::Refused { to: i, target: to, token, epoch, late: false });
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
        let next = match ev.state {
            MemberState::Alive => ALIVE,
            MemberState::Suspect => SUSPECT,
            MemberState::Dead | MemberState::Left => DOWN,
        };
        self.view[k] = next;
        if (prev == DOWN) != (next == DOWN) {
            self.update_rejoin(j, now);
            self.update_rejoin(i, now);
        }
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
        let newly_dead = ev.state == MemberState::Dead && prev != DOWN;
        // Across a partition, suspecting and declaring dead is the protocol doing its job.
        let cut_off = self.settling || self.partitioned(i, j) || self.partitioned(j, i);
        if self.up[j] && self.stale[k] {
            // News of the previous life, until this observer hears of the new one.
            if next == DOWN {
                self.stale[k] = false;
                if measuring && newly_dead {
                    self.out.old_life_dead += 1;
                }
            } else if next == ALIVE {
                self.stale[k] = false;
            }
        } else if self.up[j] && cut_off {
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
