//! Selection: which tier a request goes to, then which endpoint of it, by
//! the configured picker. Lock-free: it reads the snapshot, the plan's
//! atomics and each candidate's atomics, and draws from the caller's own
//! random generator.

use std::sync::Arc;

use ha_core::rng::FastRng;
use ha_core::sync::atomic::Ordering;
use ha_core::{AttemptContext, Instant};

use crate::config::Picker;
use crate::endpoint::EndpointState;
use crate::inflight::InFlight;
use crate::outlier::looks_dead;
use crate::planner::COLD_RATIO;
use crate::table::{Group, Snapshot, LOAD_SCALE};
use crate::tuning::Tuning;

/// What a pick needs to know about the request and the moment.
pub(crate) struct Request<'a> {
    pub(crate) now: Instant,
    pub(crate) now_ns: u64,
    pub(crate) tried: Option<&'a AttemptContext>,
    pub(crate) hash: Option<u64>,
}

/// Ring-hash probes before falling back to the least loaded endpoint.
const RING_PROBES: u64 = 8;
/// Random draws before scanning.
const DRAWS: usize = 3;

/// Picks an available endpoint by the configured picker, in the tier the
/// plan draws (any tier in panic mode).
pub(crate) fn pick_available<'s, S>(
    snap: &'s Snapshot<S>,
    req: &Request<'_>,
    rng: &mut FastRng,
    in_flight: &InFlight,
) -> Option<&'s Arc<EndpointState<S>>> {
    let panic = snap.plan.in_panic();
    let has_tried = req.tried.is_some_and(|c| c.tried_count() > 0);
    let passes: &[bool] = if has_tried { &[true, false] } else { &[false] };
    for &avoid_tried in passes {
        let ok = |i: u32| {
            let s = &snap.endpoints[i as usize];
            s.health.available(req.now, req.now_ns, panic)
                && !(avoid_tried && req.tried.is_some_and(|c| c.was_tried(s.id)))
                && !on_trial(s)
        };
        if panic {
            if let Some(i) = pick_in(snap, &snap.all, req, rng, in_flight, &ok) {
                return Some(&snap.endpoints[i as usize]);
            }
            continue;
        }
        let first = choose_group(snap, rng);
        if let Some(i) = pick_in(snap, &snap.groups[first], req, rng, in_flight, &ok) {
            if avoid_tried {
                if let Some(t) = retry_back(snap, req, i, panic) {
                    return Some(&snap.endpoints[t as usize]);
                }
            }
            return Some(&snap.endpoints[i as usize]);
        }
        // The plan sent us to a tier with nothing available: it is out of
        // date. Fall through the tiers in priority order meanwhile.
        if !avoid_tried {
            snap.plan.mark_stale();
        }
        for (g, group) in snap.groups.iter().enumerate() {
            if g != first {
                if let Some(i) = pick_in(snap, group, req, rng, in_flight, &ok) {
                    return Some(&snap.endpoints[i as usize]);
                }
            }
        }
    }
    None
}

/// A retry (not a hedge: its earlier attempts may still be in flight) of
/// a request whose last attempt failed goes back to the endpoint that
/// failed it when that one, its failure price included, costs at most
/// `1 / RETRY_BACK_FACTOR` of the pick among the untried: the untried ones
/// are queueing. Sent elsewhere whatever they hold, the retries of a busy
/// endpoint's scattered failures pile onto the rest of the fleet (one large
/// backend of four failing 20%: the small ones' p99 rose from 60 ms to
/// 230). PeakEWMA picker only: the others have no latency to compare.
///
/// At most once per request: an attempt that went back was recorded as no
/// new endpoint, so an attempt number past the endpoints tried plus one
/// says it happened. Sent back again, a request an endpoint fails half the
/// time would fail there on every attempt one time in four (a gray server
/// of three while the machine was loaded: a 503 the user saw).
fn retry_back<S>(snap: &Snapshot<S>, req: &Request<'_>, picked: u32, panic: bool) -> Option<u32> {
    let tuning = &*snap.tuning;
    if !matches!(tuning.cfg.picker, Picker::P2cPeakEwma) {
        return None;
    }
    let ctx = req.tried.filter(|c| !c.is_hedge())?;
    if ctx.attempt() as usize > ctx.tried_count() + 1 {
        return None;
    }
    let last = ctx.tried().last()?;
    let t = snap.endpoints.iter().position(|s| s.id == last)?;
    let s = &snap.endpoints[t];
    if !s.health.available(req.now, req.now_ns, panic) || on_trial(s) {
        return None;
    }
    let back = ewma_cost(tuning, s, req) * RETRY_BACK_FACTOR;
    (back <= ewma_cost(tuning, &snap.endpoints[picked as usize], req)).then_some(t as u32)
}

/// See [`retry_back`]. At 1 a gray endpoint's retries return to it too
/// often (the lab's s42 lost 0.07 points of success), at 3 the piling
/// shows again (s44's p99 69 ms at 2, 81 at 3).
const RETRY_BACK_FACTOR: f64 = 2.0;

/// The PeakEWMA picker's cost of `s`.
#[inline]
fn ewma_cost<S>(tuning: &Tuning, s: &EndpointState<S>, req: &Request<'_>) -> f64 {
    let pending = s.pending.load(Ordering::Relaxed);
    let latency = answer_latency(s, req, s.failure_cost.estimate_nanos_at(req.now_ns), pending);
    (latency + 1.0) * tuning.load_term.weigh(pending as f64 + 1.0)
}

/// How long `s` takes to answer as the PeakEWMA picker sees it: its
/// estimate (at least `priced`, a failure cost), or how long it has gone
/// quiet while busy.
#[inline]
fn answer_latency<S>(s: &EndpointState<S>, req: &Request<'_>, priced: f64, pending: u64) -> f64 {
    let (estimate, silence) = s.ewma.estimate_and_silence_at(req.now_ns);
    let latency = estimate.max(priced);
    if pending > 0 {
        stalled(latency, quiet_nanos(s, silence, req.now_ns))
    } else {
        latency
    }
}

/// P2C over PeakEWMA cost that looks further when both candidates are far
/// slower than the group's fastest endpoint (`Group::floor_latency`): up
/// to `LOOK_FURTHER` more pairs, the cheapest of all kept. Two random
/// candidates are both from the slow part of a mixed fleet most of the
/// time (two of eight when six are small servers: 54%), and P2C hands one
/// of them the request however deep its queue: in a fleet of two large
/// and six small servers at 59% of its capacity (the lab's s46), the small
/// ones got half the requests and queued past the timeout (61% success,
/// tower's stack 59%); their latency estimates, many times the large
/// ones', say so.
#[inline]
fn p2c_ewma<S>(
    group: &Group,
    slots: &[Arc<EndpointState<S>>],
    tuning: &Tuning,
    req: &Request<'_>,
    rng: &mut FastRng,
    ok: &impl Fn(u32) -> bool,
    ramp: &impl Fn(u32) -> f64,
) -> Option<u32> {
    let cost = |i: u32| ewma_cost(tuning, &slots[i as usize], req);
    let mut best = p2c(&group.members, rng, ok, ramp, cost)?;
    let floor = f64::from_bits(group.floor_latency.load(Ordering::Relaxed));
    if floor <= 0.0 {
        return Some(best);
    }
    let mut best_cost = None;
    for _ in 0..LOOK_FURTHER {
        // Its latency, not its failure price, is compared: failing
        // endpoints are the cost's business, and looking past them would
        // pile their load onto the fastest. Nor is one in slow start looked
        // past: its ramp let it be picked, to see whether it has warmed up.
        let s = &slots[best as usize];
        if answer_latency(s, req, 0.0, s.pending.load(Ordering::Relaxed)) <= FLOOR_FACTOR * floor || ramp(best) < 1.0 {
            break;
        }
        let other = p2c(&group.members, rng, ok, ramp, cost)?;
        let (theirs, ours) = (cost(other), *best_cost.get_or_insert_with(|| cost(best)));
        if theirs < ours {
            (best, best_cost) = (other, Some(theirs));
        }
    }
    Some(best)
}

/// How many times slower than the group's fastest endpoint a P2C winner
/// may be before the picker looks further (see [`p2c_ewma`]). At 4 the
/// small servers of a mixed fleet queue to four times their latency
/// before it does (the lab's s46: p99 199 ms at 4, 112 at 2.5, 84 at 2);
/// at 2 no public scenario's p99 is more than 0.1 ms above its value at 4
/// (s2, tower's demo: 95 ms at 4, 46 at 2).
const FLOOR_FACTOR: f64 = 2.0;
/// The most further pairs [`p2c_ewma`] draws.
const LOOK_FURTHER: usize = 3;

/// An endpoint in a run of failures it was not ejected for (the cap or the
/// panic threshold kept it) is on trial, as a probed one is: one request
/// at a time until it answers well. Its failure cost keeps it from being
/// picked often, but once the cost fades, requests would pile onto it
/// faster than its first answer (slow, from a server just back) could
/// tell they should not.
#[inline]
fn on_trial<S>(s: &EndpointState<S>) -> bool {
    s.failing_since_ns.load(Ordering::Relaxed) != 0 && s.pending.load(Ordering::Relaxed) > 0
}

fn choose_group<S>(snap: &Snapshot<S>, rng: &mut FastRng) -> usize {
    if snap.groups.len() == 1 {
        return 0;
    }
    let r = rng.below(u64::from(LOAD_SCALE)) as u32;
    snap.plan.cumulative_share.iter().position(|c| r < c.load(Ordering::Relaxed)).unwrap_or(0)
}

/// How long a busy endpoint has gone without an answer: since its latest
/// latency observation (`silence`), or since it became busy if that is
/// later. A lower bound on the latency of the requests it holds, known
/// before any of them answers: an endpoint that stalls, hangs or
/// black-holes requests is priced by it (see [`stalled`]) within a few
/// latencies, where its estimate would move only when they end.
#[inline]
fn quiet_nanos<S>(s: &EndpointState<S>, silence: f64, now_ns: u64) -> f64 {
    let busy = now_ns.saturating_sub(s.busy_since_ns.load(Ordering::Relaxed)) as f64;
    silence.min(busy)
}

/// The latency a busy endpoint is priced at: its estimate, or how long it
/// has gone without answering once that is over `STALL_FACTOR` times the
/// estimate. Priced at every quiet spell, a heavy tail's slow requests
/// would make a busy endpoint look dearer than peers whose estimates
/// average theirs out (a lab scenario with log-normal sigma 1 lost a
/// point of success); a stall, a hang or a black hole outlasts the
/// estimate many times over within a few latencies.
#[inline]
fn stalled(latency: f64, quiet: f64) -> f64 {
    if quiet > STALL_FACTOR * latency {
        quiet
    } else {
        latency
    }
}

/// See [`stalled`].
const STALL_FACTOR: f64 = 2.0;

/// The pending pickers' price of recent failures: `1 + failure cost /
/// default_rtt` (1 for an endpoint that has not failed lately).
#[inline]
fn failure_factor<S>(tuning: &Tuning, slot: &EndpointState<S>, now_ns: u64) -> f64 {
    1.0 + slot.failure_cost.estimate_nanos_at(now_ns) * tuning.failure_scale
}

/// The slow-start share of `slot` in `group`: its ramp, and while it
/// ramps and answers more than `COLD_RATIO` times slower than the group's
/// warm endpoints (`warm_latency`, known with the PeakEWMA picker only),
/// that times the ratio to the fourth: cold endpoints held at the start
/// of their ramp take a trickle, enough to see them warm up (half the
/// pool back five times slower: at most 0.3% of picks in any second of
/// the unit test `half_the_pool_back_with_cold_caches_waits_until_it_is_warm`,
/// 0.3% to 0.7% with the square; a joining batch up to 0.5%, 1.4% with
/// the square, and a second whose picks are 1% theirs has their p99).
#[inline]
fn slow_start_share<S>(tuning: &Tuning, slot: &EndpointState<S>, now_ns: u64, group: &Group) -> f64 {
    let ramp = slot.ramp(now_ns, tuning.slow_start_ns, tuning.cfg.slow_start.min_factor);
    if ramp >= 1.0 {
        return ramp;
    }
    let warm = f64::from_bits(group.warm_latency.load(Ordering::Relaxed));
    if warm <= 0.0 || slot.fresh.load(Ordering::Relaxed) {
        return ramp;
    }
    let limit = COLD_RATIO * warm;
    let own = slot.ewma.last_observed_nanos();
    if own <= limit {
        ramp
    } else {
        let r = limit / own;
        ramp * (r * r) * (r * r)
    }
}

fn pick_in<S>(
    snap: &Snapshot<S>,
    group: &Group,
    req: &Request<'_>,
    rng: &mut FastRng,
    in_flight: &InFlight,
    ok: &impl Fn(u32) -> bool,
) -> Option<u32> {
    let slots = &snap.endpoints;
    let tuning = &*snap.tuning;
    let ramp = |i: u32| slow_start_share(tuning, &slots[i as usize], req.now_ns, group);
    match tuning.cfg.picker {
        Picker::P2cPeakEwma => p2c_ewma(group, slots, tuning, req, rng, ok, &ramp),
        Picker::P2cPending => p2c(&group.members, rng, ok, &ramp, |i| {
            let s = &slots[i as usize];
            (s.pending.load(Ordering::Relaxed) as f64 + 1.0) * failure_factor(tuning, s, req.now_ns)
        }),
        Picker::WeightedP2c => p2c(&group.members, rng, ok, &ramp, |i| {
            let s = &slots[i as usize];
            (s.pending.load(Ordering::Relaxed) as f64 + 1.0) * failure_factor(tuning, s, req.now_ns)
                / f64::from(s.weight)
        }),
        Picker::Random => {
            let m = &group.members;
            for _ in 0..DRAWS {
                let i = *m.get(rng.below(m.len() as u64) as usize)?;
                if ok(i) && rng.unit_f64() < slow_start_share(tuning, &slots[i as usize], req.now_ns, group) {
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
                    let ramp = slow_start_share(tuning, &slots[i as usize], req.now_ns, group);
                    if ramp >= 1.0 || rng.unit_f64() < ramp {
                        return Some(i);
                    }
                }
            }
            scan(&group.members, rng, ok)
        }
        Picker::RingHash { load_factor, .. } => {
            let ring = group.ring.as_ref()?;
            let failing = |i: u32| {
                let s = &slots[i as usize];
                looks_dead(&s.outlier)
                    && s.failure_cost.estimate_nanos_at(req.now_ns) * tuning.failure_scale >= RING_SKIP_PRICE
            };
            let least_loaded = || {
                group
                    .members
                    .iter()
                    .copied()
                    .filter(|&i| ok(i))
                    .min_by_key(|&i| (failing(i), slots[i as usize].pending.load(Ordering::Relaxed)))
            };
            let Some(hash) = req.hash else {
                let pending = |i: u32| slots[i as usize].pending.load(Ordering::Relaxed) as f64;
                return p2c(&group.members, rng, ok, &|_| 1.0, pending);
            };
            let (in_flight, available) = if std::ptr::eq(group, &snap.all) {
                (in_flight.total(), snap.plan.available_all.load(Ordering::Relaxed))
            } else {
                let g = snap.groups.iter().position(|g| std::ptr::eq(g, group)).unwrap_or(0);
                (in_flight.in_tier(group.tier), snap.plan.available[g].load(Ordering::Relaxed))
            };
            // Bounded loads: at most ceil(c x average) after this request.
            let cap = (load_factor * (in_flight + 1) as f64 / f64::from(available.max(1))).ceil() as u64;
            for probe in 0..RING_PROBES {
                let node = ring.get(&(hash, probe))?;
                let i = node.endpoint;
                if ok(i) && slots[i as usize].pending.load(Ordering::Relaxed) < cap && !failing(i) {
                    return Some(i);
                }
            }
            least_loaded()
        }
    }
}

/// The ring hash picker walks past an endpoint that fails nearly
/// everything (`looks_dead`) while its failure cost, in multiples of the
/// latency prior, is at least this: three failures in a row at the default
/// penalty (two cost four times the prior, which fades below it at once).
/// An endpoint that refuses connections holds nothing pending, so the
/// bounded load never moved its keys: with seven of ten refusing, ring
/// hash served 59% where round robin served 65%, 96% now. The cost fades
/// (1 s time constant), so the keys go back to it within a second or two
/// and stay if it answers. A gray endpoint, which still serves, keeps its
/// keys: skipped for each run of failures, its keys' load piled onto its
/// ring neighbours (two of five failing 40%: p99 33 ms -> 80).
const RING_SKIP_PRICE: f64 = 4.5;

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
            // Most members are unavailable, or ramping and not kept:
            // compare the first two found at full share, so that a batch of
            // ramping endpoints gets no more than sampling lets through
            // (half the pool back cold drew every 64th pick here, each
            // second's p99 their latency); with one such, that one; with
            // none (a batch ramping alone), the first two found.
            let start = rng.below(n as u64) as usize;
            let cheaper = |a: u32, b: u32| if cost(a) <= cost(b) { a } else { b };
            let (mut found, mut full) = ([None; 2], None);
            for k in 0..n {
                let i = members[(start + k) % n];
                if !ok(i) {
                    continue;
                }
                if found[0].is_none() {
                    found[0] = Some(i);
                } else if found[1].is_none() {
                    found[1] = Some(i);
                }
                if ramp(i) >= 1.0 {
                    match full {
                        None => full = Some(i),
                        Some(f) => return Some(cheaper(f, i)),
                    }
                }
            }
            match (full, found) {
                (Some(f), _) => Some(f),
                (None, [Some(a), Some(b)]) => Some(cheaper(a, b)),
                (None, [a, _]) => a,
            }
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
