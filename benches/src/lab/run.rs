//! Runs one contender on one scenario with one seed, on virtual time.
//!
//! Traffic is pre-drawn per (scenario, seed) as a [`Trace`] (the arrival
//! times) and replayed identically for every contender; service times and
//! errors are drawn from generators keyed by (seed, layer, request, attempt,
//! backend), so the same attempt meets the same backend behaviour whichever
//! contender sends it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use ha_core::rng::FastRng;
use tokio::time::Instant;

use super::contender::{BuildCtx, Contender};
use super::scenario::{rate_at, Scenario, Traffic};
use super::sim::{mix, Ejection, SimBackend, SimRequest, Stack, World};

/// The pre-drawn traffic of one (scenario, seed).
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The seed.
    pub seed: u64,
    /// Open loop: arrival times of user requests, ns from start (empty for
    /// closed loop, whose requests are issued as earlier ones finish).
    pub arrivals_ns: Vec<u64>,
}

impl Trace {
    /// Draws the traffic of `scenario` for `seed`.
    pub fn draw(scenario: &Scenario, seed: u64) -> Trace {
        let mut arrivals_ns = Vec::new();
        if let Traffic::Open { rate_per_s, duration_ns } = scenario.traffic {
            let mut rng = FastRng::new(mix(seed, 0x6172_7269_7661_6c73));
            let mean_gap_ns = 1e9 / rate_per_s;
            let mut t = 0.0f64;
            loop {
                // Exponential gaps: Poisson arrivals.
                t += -(1.0 - rng.unit_f64()).ln() * mean_gap_ns;
                if t >= duration_ns as f64 {
                    break;
                }
                // A varying rate by thinning: `rate_per_s` is the profile's
                // peak, and an arrival is kept with probability rate(t)/peak.
                // (The extra draw is only made with a profile.)
                if let Some(r) = rate_at(&scenario.profile, t as u64) {
                    if rng.unit_f64() * rate_per_s >= r {
                        continue;
                    }
                }
                arrivals_ns.push(t as u64);
            }
        }
        Trace { seed, arrivals_ns }
    }
}

/// What one user request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// When it was sent, ns from start.
    pub sent_ns: u64,
    /// How long until it succeeded, failed or timed out, ns.
    pub latency_ns: u64,
    /// Whether it succeeded.
    pub ok: bool,
}

/// The measurements of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// Scenario name.
    pub scenario: String,
    /// Contender name.
    pub contender: &'static str,
    /// Seed.
    pub seed: u64,
    /// One record per user request, in sending order.
    pub records: Vec<Record>,
    /// Attempts received by each backend of the last layer.
    pub last_layer_attempts: Vec<u64>,
    /// Attempts each backend of the last layer received, per second of
    /// virtual time (`[backend][second]`).
    pub arrivals_per_backend: Vec<Vec<u64>>,
    /// Attempts the last layer would receive with no retry and no hedge.
    pub needed_attempts: u64,
    /// Virtual time from the first request to the last answer, ns.
    pub makespan_ns: u64,
    /// Endpoints ejected by the contender (`None` when it has no outlier
    /// ejection).
    pub ejections: Option<u64>,
    /// For each backend ejected at least once, the failed answers it served
    /// before its first ejection (at the same virtual instant included);
    /// the largest of them. `None` when nothing was ejected.
    pub errors_before_ejection: Option<u64>,
    /// How the first backend of the last layer with scheduled changes was
    /// treated (`None` when no backend has any).
    pub faulted: Option<Faulted>,
}

/// How a balancer treated a backend with scheduled changes (a fault), from
/// the start of its first change to the end of its last (or of traffic).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faulted {
    /// Its share of the layer's attempts while a change was on, as a
    /// multiple of its fair share (1 = as many as any backend).
    pub share_on: Option<f64>,
    /// Its share while no change was on, within the same span (a flapping
    /// backend's up periods), as a multiple of its fair share.
    pub share_off: Option<f64>,
    /// From the end of its last change to its first successful answer, s
    /// (`None` when the changes never end or it never answered after).
    pub back_after_s: Option<f64>,
}

/// The treatment of the first backend of `layer` with scheduled changes.
fn faulted(layer: &super::sim::LayerRuntime, end_ns: u64) -> Option<Faulted> {
    let (b, model) = layer.model.backends.iter().enumerate().find(|(_, m)| !m.changes.is_empty())?;
    let from = model.changes.iter().map(|c| c.from_ns).min()?;
    let to = model.changes.iter().map(|c| c.to_ns).try_fold(0u64, |acc, t| t.map(|t| acc.max(t)));
    let span_end = to.unwrap_or(end_ns).min(end_ns);
    let (mut mine, mut all) = ([0u64; 2], [0u64; 2]);
    for (i, rt) in layer.backends.iter().enumerate() {
        for &t in rt.arrivals.borrow().iter().filter(|&&t| t >= from && t < span_end) {
            let on = usize::from(model.faulted_at(t));
            all[on] += 1;
            if i == b {
                mine[on] += 1;
            }
        }
    }
    let n = layer.backends.len() as f64;
    let share = |k: usize| (all[k] > 0).then(|| mine[k] as f64 / all[k] as f64 * n);
    let back_after_s = to.and_then(|to| {
        let first = layer.backends[b].successes_at.borrow().iter().copied().filter(|&t| t >= to).min()?;
        Some((first - to) as f64 / 1e9)
    });
    Some(Faulted { share_on: share(1), share_off: share(0), back_after_s })
}

/// Runs `contender` on `scenario` with the traffic of `trace`.
pub fn run(scenario: &Scenario, contender: &'static Contender, trace: &Trace) -> RunResult {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
    // A LocalSet, so that backends may detach the work a caller abandoned.
    tokio::task::LocalSet::new().block_on(&rt, simulate(scenario, contender, trace))
}

/// Builds the backends of every layer, innermost first, each backend with
/// its own client stack to the next layer (as each server instance has its
/// own client: its own balancer state and retry budget), and returns the
/// users' stack to layer 0.
fn build_stacks(scenario: &Scenario, contender: &'static Contender, world: &Rc<World>) -> Stack {
    let stack_to = |layer: usize, backends: &[SimBackend], client: usize| {
        let ctx = BuildCtx {
            world,
            layer,
            client,
            backends,
            base_balancer: scenario.base_balancer,
            settings: &scenario.settings,
        };
        (contender.build)(&ctx)
    };
    let mut below: Option<Vec<SimBackend>> = None;
    for (layer, l) in scenario.layers.iter().enumerate().rev() {
        let next_timeout = scenario.layers.get(layer + 1).and_then(|n| n.timeout_ns).map(Duration::from_nanos);
        let backends = (0..l.backends.len())
            .map(|i| {
                let downstream = below.as_deref().map(|b| (stack_to(layer + 1, b, i), next_timeout));
                SimBackend::new(world.clone(), layer, i, downstream)
            })
            .collect();
        below = Some(backends);
    }
    stack_to(0, &below.expect("a scenario has at least one layer"), 0)
}

/// Sends user request `i` (its `fanout` sub-requests) and waits for all of
/// them, the first failure, or the client timeout.
async fn user_request(
    stack: Stack,
    i: u64,
    fanout: u32,
    layer0_timeout: Option<Duration>,
    timeout: Option<Duration>,
    deadline_ns: Option<u64>,
) -> bool {
    let sub = move |f: u64| {
        let d = stack.dispatch(SimRequest::new(i * u64::from(fanout) + f, deadline_ns));
        async move {
            match layer0_timeout {
                Some(t) => tokio::time::timeout(t, d).await.is_ok_and(|r| r.is_ok()),
                None => d.await.is_ok(),
            }
        }
    };
    let all = async move {
        if fanout == 1 {
            return sub(0).await;
        }
        let mut subs: FuturesUnordered<_> = (0..u64::from(fanout)).map(sub).collect();
        while let Some(ok) = subs.next().await {
            if !ok {
                return false;
            }
        }
        true
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, all).await.unwrap_or(false),
        None => all.await,
    }
}

async fn simulate(scenario: &Scenario, contender: &'static Contender, trace: &Trace) -> RunResult {
    let world = Rc::new(World::new(scenario, trace.seed));
    let stack = build_stacks(scenario, contender, &world);
    let start = world.start;
    let fanout = scenario.fanout;
    let timeout = scenario.timeout_ns.map(Duration::from_nanos);
    let layer0_timeout = scenario.layers[0].timeout_ns.map(Duration::from_nanos);
    let since = move |t: Instant| t.saturating_duration_since(start).as_nanos() as u64;

    let timed = |i: u64| {
        let stack = stack.clone();
        async move {
            let sent = Instant::now();
            let deadline =
                [timeout, layer0_timeout].into_iter().flatten().min().map(|t| since(sent) + t.as_nanos() as u64);
            let ok = user_request(stack, i, fanout, layer0_timeout, timeout, deadline).await;
            Record { sent_ns: since(sent), latency_ns: sent.elapsed().as_nanos() as u64, ok }
        }
    };

    let mut records: Vec<Record> = Vec::new();
    match scenario.traffic {
        Traffic::Open { .. } => {
            let arrivals = &trace.arrivals_ns;
            let mut slots: Vec<Option<Record>> = vec![None; arrivals.len()];
            let mut inflight = FuturesUnordered::new();
            let mut next = 0usize;
            let sleep = tokio::time::sleep_until(start + Duration::from_nanos(arrivals.first().copied().unwrap_or(0)));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    biased;
                    Some((i, r)) = inflight.next(), if !inflight.is_empty() => {
                        slots[i] = Some(r);
                    }
                    () = &mut sleep, if next < arrivals.len() => {
                        let i = next;
                        let f = timed(i as u64);
                        inflight.push(async move { (i, f.await) });
                        next += 1;
                        if let Some(&at) = arrivals.get(next) {
                            sleep.as_mut().reset(start + Duration::from_nanos(at));
                        }
                    }
                    else => break,
                }
            }
            records.extend(slots.into_iter().map(|r| r.expect("every request finished")));
        }
        Traffic::Closed { concurrency, requests } => {
            let counter = Rc::new(Cell::new(0u64));
            let done: Rc<RefCell<Vec<(u64, Record)>>> = Rc::new(RefCell::new(Vec::with_capacity(requests as usize)));
            let mut users: FuturesUnordered<_> = (0..concurrency)
                .map(|_| {
                    let counter = counter.clone();
                    let done = done.clone();
                    let timed = &timed;
                    async move {
                        loop {
                            let i = counter.get();
                            if i >= requests {
                                break;
                            }
                            counter.set(i + 1);
                            let r = timed(i).await;
                            done.borrow_mut().push((i, r));
                        }
                    }
                })
                .collect();
            while users.next().await.is_some() {}
            let mut done = done.take();
            done.sort_unstable_by_key(|(i, _)| *i);
            records.extend(done.into_iter().map(|(_, r)| r));
        }
    }

    let makespan_ns = records.iter().map(|r| r.sent_ns + r.latency_ns).max().unwrap_or(0);
    let last = world.layers.last().expect("at least one layer");
    let ejections = world.ejections.lock().expect("the ejection log is never poisoned").clone();
    let mut first: Vec<Ejection> = Vec::new();
    for e in ejections.iter() {
        if !first.iter().any(|f| f.layer == e.layer && f.backend == e.backend) {
            first.push(*e);
        }
    }
    let errors_before_ejection =
        first.iter().map(|e| world.layers[e.layer].backends[e.backend].failures_by(e.at_ns)).max();
    let end_ns = match scenario.traffic {
        super::scenario::Traffic::Open { duration_ns, .. } => duration_ns,
        super::scenario::Traffic::Closed { .. } => makespan_ns,
    };
    RunResult {
        faulted: faulted(last, end_ns),
        ejections: contender.ejects.then_some(ejections.len() as u64),
        errors_before_ejection,
        scenario: scenario.name.clone(),
        contender: contender.name,
        seed: trace.seed,
        needed_attempts: records.len() as u64 * u64::from(fanout),
        records,
        last_layer_attempts: last.backends.iter().map(|b| b.attempts.get()).collect(),
        arrivals_per_backend: last
            .backends
            .iter()
            .map(|b| {
                let mut per = Vec::new();
                for &t in b.arrivals.borrow().iter() {
                    let w = (t / 1_000_000_000) as usize;
                    if per.len() <= w {
                        per.resize(w + 1, 0);
                    }
                    per[w] += 1;
                }
                per
            })
            .collect(),
        makespan_ns,
    }
}
