//! Selection: which tier a request goes to, then which endpoint of it, by
//! the configured picker. Lock-free: it reads the snapshot, the plan's
//! atomics and each candidate's atomics, and draws from the caller's own
//! random generator.

use std::sync::Arc;

use ha_core::rng::FastRng;
use ha_core::sync::atomic::Ordering;
use ha_core::{AttemptContext, Instant};

use crate::config::Picker;
use crate::core::{Core, TOTAL};
use crate::endpoint::Slot;
use crate::table::{Group, Snapshot, LOAD_SCALE};
use crate::tuning::Tuning;

/// What a pick needs to know about the request and the moment.
pub(crate) struct Request<'a> {
    pub now: Instant,
    pub now_ns: u64,
    pub tried: Option<&'a AttemptContext>,
    pub hash: Option<u64>,
}

/// Ring-hash probes before falling back to the least loaded endpoint.
const RING_PROBES: u64 = 8;
/// Random draws before scanning.
const DRAWS: usize = 3;

impl<K, S> Core<K, S> {
    /// Picks an endpoint, or `None` when no endpoint is available. Avoids
    /// endpoints the request already tried while any other is available.
    /// The flag is true when the pick is a probe of an ejected endpoint.
    pub fn pick<'s>(
        &self,
        snap: &'s Snapshot<S>,
        req: &Request<'_>,
        rng: &mut FastRng,
    ) -> Option<(&'s Arc<Slot<S>>, bool)> {
        if snap.slots.is_empty() {
            return None;
        }
        let health_due = req.now_ns >= self.health_due_ns.load(Ordering::Acquire);
        if health_due {
            // An ejection ended: recount now, which reports the restoration
            // before the endpoint serves.
            snap.plan.mark_stale();
        }
        self.refresh_plan(snap, req.now, req.now_ns);
        self.maybe_evaluate(snap, req.now_ns);
        if health_due {
            let tried = |s: &Slot<S>| req.tried.is_some_and(|c| c.was_tried(s.id));
            if let Some(i) = self.due_probe(snap, req.now, req.now_ns, tried) {
                return Some((&snap.slots[i], true));
            }
        }
        self.pick_available(snap, req, rng).map(|s| (s, false))
    }

    fn pick_available<'s>(
        &self,
        snap: &'s Snapshot<S>,
        req: &Request<'_>,
        rng: &mut FastRng,
    ) -> Option<&'s Arc<Slot<S>>> {
        let panic = snap.plan.panic.load(Ordering::Acquire);
        let has_tried = req.tried.is_some_and(|c| c.tried_count() > 0);
        let passes: &[bool] = if has_tried { &[true, false] } else { &[false] };
        for &avoid_tried in passes {
            let ok = |i: u32| {
                let s = &snap.slots[i as usize];
                s.health.available(req.now, req.now_ns, panic)
                    && !(avoid_tried && req.tried.is_some_and(|c| c.was_tried(s.id)))
            };
            if panic {
                if let Some(i) = self.pick_in(snap, &snap.all, req, rng, &ok) {
                    return Some(&snap.slots[i as usize]);
                }
                continue;
            }
            let first = self.choose_group(snap, rng);
            if let Some(i) = self.pick_in(snap, &snap.groups[first], req, rng, &ok) {
                return Some(&snap.slots[i as usize]);
            }
            // The plan sent us to a tier with nothing available: it is out of
            // date. Fall through the tiers in priority order meanwhile.
            if !avoid_tried {
                snap.plan.mark_stale();
            }
            for (g, group) in snap.groups.iter().enumerate() {
                if g != first {
                    if let Some(i) = self.pick_in(snap, group, req, rng, &ok) {
                        return Some(&snap.slots[i as usize]);
                    }
                }
            }
        }
        None
    }

    fn choose_group(&self, snap: &Snapshot<S>, rng: &mut FastRng) -> usize {
        if snap.groups.len() == 1 {
            return 0;
        }
        let r = rng.below(u64::from(LOAD_SCALE)) as u32;
        snap.plan.cum.iter().position(|c| r < c.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// The pending pickers' price of recent failures: `1 + failure cost /
    /// default_rtt` (1 for an endpoint that has not failed lately).
    #[inline]
    fn failure_factor(tuning: &Tuning, slot: &Slot<S>, now: Instant) -> f64 {
        1.0 + slot.failure_cost.estimate_nanos(now) * tuning.failure_scale
    }

    #[inline]
    fn ramp(tuning: &Tuning, slot: &Slot<S>, now_ns: u64) -> f64 {
        slot.ramp(now_ns, tuning.slow_start_ns, tuning.cfg.slow_start.min_factor)
    }

    fn pick_in(
        &self,
        snap: &Snapshot<S>,
        group: &Group,
        req: &Request<'_>,
        rng: &mut FastRng,
        ok: &impl Fn(u32) -> bool,
    ) -> Option<u32> {
        let slots = &snap.slots;
        let tuning = &*snap.tuning;
        let ramp = |i: u32| Self::ramp(tuning, &slots[i as usize], req.now_ns);
        match tuning.cfg.picker {
            Picker::P2cPeakEwma => p2c(&group.members, rng, ok, &ramp, |i| {
                let s = &slots[i as usize];
                let pending = s.pending.load(Ordering::Relaxed) as f64;
                let latency = s.ewma.estimate_nanos(req.now).max(s.failure_cost.estimate_nanos(req.now));
                (latency + 1.0) * tuning.load_term.weigh(pending + 1.0)
            }),
            Picker::P2cPending => p2c(&group.members, rng, ok, &ramp, |i| {
                let s = &slots[i as usize];
                (s.pending.load(Ordering::Relaxed) as f64 + 1.0) * Self::failure_factor(tuning, s, req.now)
            }),
            Picker::WeightedP2c => p2c(&group.members, rng, ok, &ramp, |i| {
                let s = &slots[i as usize];
                (s.pending.load(Ordering::Relaxed) as f64 + 1.0) * Self::failure_factor(tuning, s, req.now)
                    / f64::from(s.weight)
            }),
            Picker::Random => {
                let m = &group.members;
                for _ in 0..DRAWS {
                    let i = *m.get(rng.below(m.len() as u64) as usize)?;
                    if ok(i) && rng.unit_f64() < Self::ramp(tuning, &slots[i as usize], req.now_ns) {
                        return Some(i);
                    }
                }
                scan(m, rng, ok)
            }
            Picker::RoundRobin => {
                let sched = &group.schedule;
                let len = sched.len();
                if len == 0 {
                    return None;
                }
                // A turn that lands on an unavailable endpoint takes the next
                // ticket instead of scanning on from its own: scanning would
                // hand every skipped turn to the same neighbour, doubling its
                // share, while fresh tickets keep each available endpoint at
                // its own share of the cycle.
                for _ in 0..len {
                    let ticket = group.cursor.fetch_add(1, Ordering::Relaxed);
                    let i = sched[ticket % len];
                    if ok(i) {
                        let ramp = Self::ramp(tuning, &slots[i as usize], req.now_ns);
                        if ramp >= 1.0 || rng.unit_f64() < ramp {
                            return Some(i);
                        }
                    }
                }
                scan(&group.members, rng, ok)
            }
            Picker::RingHash { load_factor, .. } => {
                let ring = group.ring.as_ref()?;
                let least_loaded = || {
                    group
                        .members
                        .iter()
                        .copied()
                        .filter(|&i| ok(i))
                        .min_by_key(|&i| slots[i as usize].pending.load(Ordering::Relaxed))
                };
                let Some(hash) = req.hash else {
                    let pending = |i: u32| slots[i as usize].pending.load(Ordering::Relaxed) as f64;
                    return p2c(&group.members, rng, ok, &|_| 1.0, pending);
                };
                let (in_flight, available) = if std::ptr::eq(group, &snap.all) {
                    (self.pending[TOTAL].load(Ordering::Relaxed), snap.plan.available_all.load(Ordering::Relaxed))
                } else {
                    let g = snap.groups.iter().position(|g| std::ptr::eq(g, group)).unwrap_or(0);
                    (
                        self.pending[usize::from(group.tier)].load(Ordering::Relaxed),
                        snap.plan.available[g].load(Ordering::Relaxed),
                    )
                };
                // Bounded loads: at most ceil(c x average) after this request.
                let cap = (load_factor * (in_flight + 1) as f64 / f64::from(available.max(1))).ceil() as u64;
                for probe in 0..RING_PROBES {
                    let node = ring.get(&(hash, probe))?;
                    let i = node.slot;
                    if ok(i) && slots[i as usize].pending.load(Ordering::Relaxed) < cap {
                        return Some(i);
                    }
                }
                least_loaded()
            }
        }
    }
}

/// The PeakEWMA picker's load factor `(pending + 1)^bias`, with the
/// exponents that have a cheaper form than `powf` (the default 0.5 is one
/// square root) resolved once when the balancer is built.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum LoadTerm {
    /// Bias 1: tower's and Finagle's `pending + 1`.
    Linear,
    /// Bias 0.5.
    Sqrt,
    /// Any other bias in `[0, 1)`.
    Pow(f64),
}

impl LoadTerm {
    pub fn new(bias: f64) -> Self {
        if bias == 1.0 {
            LoadTerm::Linear
        } else if bias == 0.5 {
            LoadTerm::Sqrt
        } else {
            LoadTerm::Pow(bias)
        }
    }

    /// `load^bias`, for `load = pending + 1 >= 1`.
    #[inline]
    pub fn weigh(self, load: f64) -> f64 {
        match self {
            LoadTerm::Linear => load,
            LoadTerm::Sqrt => load.sqrt(),
            LoadTerm::Pow(bias) => load.powf(bias),
        }
    }
}

/// Keeps a sampled P2C candidate ramping up with share `f` with
/// probability `f / (2 - f)`. P2C hands an endpoint up to twice its
/// sampling share (when it wins every comparison, as a new endpoint with no
/// requests pending tends to), so halving the keep probability bounds a
/// ramping endpoint's share by about `f` times its fair share; the
/// `2 - f` makes it reach exactly 1 at the end of the ramp.
#[inline]
fn keep(rng: &mut FastRng, ramp: f64) -> bool {
    ramp >= 1.0 || rng.unit_f64() * (2.0 - ramp) < ramp
}

/// Power of two choices: the cheaper of two random available members.
///
/// Slow start acts on sampling: a candidate ramping up with share `f` is
/// kept with probability about `f` (see `keep`), else drawn again. Dividing its cost by `f`
/// instead cannot hold back a batch of new endpoints: whenever both
/// candidates are new, one of them wins whatever the ramp says (5 cold of
/// 10 took 22% of picks at once).
#[inline]
fn p2c(
    members: &[u32],
    rng: &mut FastRng,
    ok: &impl Fn(u32) -> bool,
    ramp: &impl Fn(u32) -> f64,
    cost: impl Fn(u32) -> f64,
) -> Option<u32> {
    let n = members.len();
    match n {
        0 => None,
        1 => ok(members[0]).then_some(members[0]),
        _ => {
            let mut first = None;
            for _ in 0..2 * DRAWS {
                let a = rng.below(n as u64) as usize;
                let i = members[a];
                if ok(i) && keep(rng, ramp(i)) {
                    first = Some(a);
                    break;
                }
            }
            if let Some(a) = first {
                let ia = members[a];
                for _ in 0..2 * DRAWS {
                    let mut b = rng.below(n as u64 - 1) as usize;
                    if b >= a {
                        b += 1;
                    }
                    let ib = members[b];
                    if ok(ib) && keep(rng, ramp(ib)) {
                        return Some(if cost(ia) <= cost(ib) { ia } else { ib });
                    }
                }
                // No second candidate would stay: the first one it is.
                return Some(ia);
            }
            // Most members are unavailable: compare the first two found.
            let start = rng.below(n as u64) as usize;
            let mut first = None;
            for k in 0..n {
                let i = members[(start + k) % n];
                if ok(i) {
                    match first {
                        None => first = Some(i),
                        Some(f) => return Some(if cost(f) <= cost(i) { f } else { i }),
                    }
                }
            }
            first
        }
    }
}

fn scan(members: &[u32], rng: &mut FastRng, ok: &impl Fn(u32) -> bool) -> Option<u32> {
    let n = members.len();
    if n == 0 {
        return None;
    }
    let start = rng.below(n as u64) as usize;
    (0..n).map(|k| members[(start + k) % n]).find(|&i| ok(i))
}
