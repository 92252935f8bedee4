//! The tier plan's upkeep: recounting the available endpoints of each tier
//! into the snapshot's plan (which tier takes what share, panic mode), and
//! reporting restorations, spill and panic changes once each.

use ha_core::event::{Event, Events};
use ha_core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use ha_core::sync::{LockExt, Mutex};
use ha_core::Instant;

use crate::endpoint::EndpointState;
use crate::outlier::Host;
use crate::table::{Snapshot, LOAD_SCALE};
use crate::tiers::{degraded, spilled, tier_loads};

/// What was last reported about the plan, so that a recount reports only
/// changes. The plan itself lives in each snapshot.
pub(crate) struct TierPlanner {
    panic_reported: AtomicBool,
    /// Per tier, the share spilled from it as last reported, in permille.
    spill_reported: Box<[AtomicU32]>,
    /// The time requests spend in flight, by Little's law (see
    /// [`Waits`]), and its calm level.
    waits: Mutex<Waits>,
    /// Whether the endpoints queue (see [`QUEUEING_FACTOR`]).
    queueing: AtomicBool,
}

/// How far the time requests spend in flight may rise above its calm
/// level before the endpoints are taken to queue: the fleet is past its
/// capacity, and a retry of a failed attempt would only lengthen the
/// queues (see `AttemptContext::set_queueing`).
const QUEUEING_FACTOR: f64 = 8.0;

/// The fewest requests in flight at the median endpoint, on average over
/// a span, for the endpoints to be judged queueing (see `judge_queueing`).
const QUEUE_MIN_IN_FLIGHT: f64 = 2.0;

/// The fewest requests in flight at the median endpoint, on average over
/// a span, for the span to move the calm level.
const CALM_MIN_IN_FLIGHT: f64 = 0.5;

/// How long the calm level takes to rise most of the way (63%) to a
/// longer time in flight: five minutes. Slowly, so that a fleet held at
/// the threshold by the retries it withholds does not raise the threshold
/// with it; since only eight times the calm counts, a fleet that got
/// slower for good (a release, a bigger payload) is calm again within
/// seconds.
const CALM_RISE_NS: f64 = 300e9;

/// How long the calm level takes to fall most of the way (63%) to a
/// shorter time in flight: ten seconds.
const CALM_FALL_NS: f64 = 10e9;

/// The shortest span over which the time in flight is measured, and the
/// fewest requests sent in it: half a second and a hundred requests, below
/// which the mean is noise.
const WAIT_SPAN_NS: u64 = 500_000_000;
const WAIT_MIN_REQUESTS: u64 = 100;

/// The time requests spend in flight, measured by Little's law at the
/// plan recounts: at each endpoint, the mean number in flight over a span
/// divided by the rate it was sent requests at; the median over the
/// endpoints, so that one stalled endpoint holding requests does not make
/// the fleet look queued. Not the endpoints' PeakEWMA estimates, which a
/// heavy-tailed latency holds near its tail (a service answering 2% of
/// requests in 400 ms and the rest in 5 ms would look eighty times slower
/// than at its first answers): the mean in flight follows the mean
/// latency, and grows without end only while requests queue.
#[derive(Debug, Default)]
struct Waits {
    /// Per endpoint: requests sent (its counter) at the span's start, and
    /// the sum of its in-flight samples in the span.
    endpoints: Vec<(u64, u64)>,
    /// When the span began; 0 before the first recount.
    from_ns: u64,
    /// In-flight samples taken in the span.
    samples: u64,
    /// The calm level (ns): following a shorter time with time constant
    /// [`CALM_FALL_NS`], a longer one with [`CALM_RISE_NS`]; 0 before the
    /// first.
    calm_ns: f64,
    calm_at_ns: u64,
}

/// What a span ended with: the median time in flight (ns), its calm level
/// (ns) and the median endpoint's mean number in flight.
struct Span {
    wait: f64,
    calm: f64,
    in_flight: f64,
}

impl Waits {
    /// Samples each endpoint's requests, `(sent so far, in flight now)`;
    /// at the end of a span, what it measured.
    fn sample(&mut self, now_ns: u64, now: &[(u64, u64)]) -> Option<Span> {
        let restart = self.from_ns == 0
            || now.is_empty()
            || now.len() != self.endpoints.len()
            || now.iter().zip(&self.endpoints).any(|(n, kept)| n.0 < kept.0);
        if restart {
            // The first recount, or a new table whose counters restarted.
            self.restart(now_ns, now);
            return None;
        }
        for (kept, n) in self.endpoints.iter_mut().zip(now) {
            kept.1 += n.1;
        }
        self.samples += 1;
        let span = now_ns.saturating_sub(self.from_ns);
        let total: u64 = now.iter().zip(&self.endpoints).map(|(n, kept)| n.0 - kept.0).sum();
        if span < WAIT_SPAN_NS || total < WAIT_MIN_REQUESTS {
            return None;
        }
        let samples = self.samples as f64;
        // Endpoints that were sent requests or held some; an endpoint
        // that held requests and was sent none has a wait without end.
        let mut measured: Vec<(f64, f64)> = now
            .iter()
            .zip(&self.endpoints)
            .filter_map(|(n, kept)| {
                let in_flight = kept.1 as f64 / samples;
                let sent = (n.0 - kept.0) as f64;
                match (sent > 0.0, in_flight > 0.0) {
                    (true, _) => Some((in_flight * span as f64 / sent, in_flight)),
                    (false, true) => Some((f64::INFINITY, in_flight)),
                    (false, false) => None,
                }
            })
            .collect();
        self.restart(now_ns, now);
        let mid = measured.len().checked_sub(1)? / 2;
        let wait = measured.select_nth_unstable_by(mid, |a, b| a.0.total_cmp(&b.0)).1 .0;
        let in_flight = measured.select_nth_unstable_by(mid, |a, b| a.1.total_cmp(&b.1)).1 .1;
        // A span whose median endpoint held under half a request on
        // average was sampled mostly at zero: its time in flight is noise,
        // not a level to judge a busier span by.
        if wait.is_finite() && in_flight >= CALM_MIN_IN_FLIGHT {
            self.calm_ns = if self.calm_ns == 0.0 {
                wait
            } else {
                let dt = now_ns.saturating_sub(self.calm_at_ns) as f64;
                let tau = if wait <= self.calm_ns { CALM_FALL_NS } else { CALM_RISE_NS };
                self.calm_ns + (wait - self.calm_ns) * (1.0 - (-dt / tau).exp())
            };
            self.calm_at_ns = now_ns;
        }
        Some(Span { wait, calm: self.calm_ns, in_flight })
    }

    /// Starts a span at `now_ns` from the endpoints' counts `now`.
    fn restart(&mut self, now_ns: u64, now: &[(u64, u64)]) {
        self.endpoints.clear();
        self.endpoints.extend(now.iter().map(|&(sent, _)| (sent, 0)));
        self.from_ns = now_ns.max(1);
        self.samples = 0;
    }
}

impl TierPlanner {
    pub(crate) fn new() -> Self {
        TierPlanner {
            panic_reported: AtomicBool::new(false),
            spill_reported: (0..=u8::MAX).map(|_| AtomicU32::new(0)).collect(),
            waits: Mutex::new(Waits::default()),
            queueing: AtomicBool::new(false),
        }
    }

    /// Recounts the available endpoints per tier when the plan is stale or
    /// old, and reports restorations, spill and panic changes. One caller
    /// at a time; the others keep using the current plan. True when an
    /// endpoint was restored (waiting requests may go on).
    pub(crate) fn refresh<S>(
        &self,
        snap: &Snapshot<S>,
        now: Instant,
        now_ns: u64,
        calm_ns: f64,
        events: &Events,
    ) -> bool {
        let plan = &snap.plan;
        let tuning = &*snap.tuning;
        let due = plan.stale.load(Ordering::Acquire)
            || now_ns >= plan.computed_ns.load(Ordering::Relaxed).saturating_add(tuning.refresh_ns);
        if !due || plan.busy.swap(true, Ordering::AcqRel) {
            return false;
        }
        plan.stale.store(false, Ordering::Release);
        judge_gates(snap, now, now_ns, calm_ns);
        hold_cold_ramps(snap, now, now_ns);
        note_floors(snap, now, now_ns);
        let mut counts = vec![(0u32, 0u32); snap.groups.len()];
        // Available endpoints weighted by their slow-start ramp: a whole
        // tier back from an outage (a zone) takes its traffic back over the
        // ramp, not at once.
        let mut ramped = vec![0.0f64; snap.groups.len()];
        let (window, min_factor) = (tuning.slow_start_ns, tuning.cfg.slow_start.min_factor);
        let mut restored = readmit_needed(snap, now, now_ns, calm_ns, events);
        for (endpoint, &g) in snap.endpoints.iter().zip(&snap.group_of) {
            if endpoint.health.clear_expired(now_ns) {
                restored = true;
                events.emit(Event::EndpointRestored { endpoint: endpoint.name.clone() });
            }
            let available = endpoint.health.available(now, now_ns, false);
            let c = &mut counts[g as usize];
            c.1 += 1;
            c.0 += u32::from(available);
            if available {
                ramped[g as usize] += endpoint.ramp(now_ns, window, min_factor);
            }
        }
        let available: u32 = counts.iter().map(|c| c.0).sum();
        let ramped_counts: Vec<(f64, u32)> = ramped.iter().zip(&counts).map(|(&r, &(_, total))| (r, total)).collect();
        let total = snap.endpoints.len() as u32;
        let panic = total > 0
            && f64::from(available) < tuning.cfg.tiers.panic_threshold * f64::from(total)
            && degraded(&ramped_counts, tuning.cfg.tiers.overprovisioning);
        let loads = tier_loads(&ramped_counts, tuning.cfg.tiers.overprovisioning);
        let mut cumulative = 0.0;
        for (i, load) in loads.iter().enumerate() {
            cumulative += load;
            let scaled = if i + 1 == loads.len() && cumulative > 0.0 {
                LOAD_SCALE
            } else {
                (cumulative * f64::from(LOAD_SCALE)) as u32
            };
            plan.cumulative_share[i].store(scaled.min(LOAD_SCALE), Ordering::Relaxed);
            plan.available[i].store(counts[i].0, Ordering::Relaxed);
        }
        plan.available_all.store(available, Ordering::Relaxed);
        self.judge_queueing(snap, now_ns, events);
        plan.panic.store(panic, Ordering::Release);
        if self.panic_reported.swap(panic, Ordering::AcqRel) != panic {
            events.emit(Event::PanicMode { entered: panic });
        }
        if available > 0 {
            for (i, g) in snap.groups.iter().enumerate() {
                let s = spilled(&loads, i);
                let permille = (s * 1000.0).round() as u32;
                let reported = &self.spill_reported[usize::from(g.tier)];
                // Report changes of a percent or more, and every return to zero.
                let before = reported.load(Ordering::Relaxed);
                if before.abs_diff(permille) >= 10 || (permille == 0 && before != 0) {
                    reported.store(permille, Ordering::Relaxed);
                    events.emit(Event::TierSpill { from_tier: g.tier, spilled: f64::from(permille) / 1000.0 });
                }
            }
        }
        plan.computed_ns.store(now_ns, Ordering::Relaxed);
        plan.busy.store(false, Ordering::Release);
        restored
    }
}

impl TierPlanner {
    /// Whether the endpoints queued at the last judgement (see [`Waits`]).
    #[inline]
    pub(crate) fn queueing(&self) -> bool {
        self.queueing.load(Ordering::Relaxed)
    }

    /// Samples the requests in flight, and at the end of each span
    /// compares the median endpoint's time in flight with its calm level
    /// and notes whether the endpoints queue.
    fn judge_queueing<S>(&self, snap: &Snapshot<S>, now_ns: u64, events: &Events) {
        let now: Vec<(u64, u64)> = snap
            .endpoints
            .iter()
            .map(|e| (e.counters.requests.load(Ordering::Relaxed), e.pending.load(Ordering::Relaxed)))
            .collect();
        // One caller at a time (the plan's busy flag): never contended.
        let Some(Span { wait, calm, in_flight }) = self.waits.lock_or_recover().sample(now_ns, &now) else {
            return;
        };
        // A queue holds more requests than its servers serve at once: at
        // least two on average. Fewer, sampled ten times a second, are
        // mostly zeros and ones, and their ratios noise.
        let queueing = calm > 0.0 && in_flight >= QUEUE_MIN_IN_FLIGHT && wait >= QUEUEING_FACTOR * calm;
        if self.queueing.swap(queueing, Ordering::Relaxed) != queueing {
            tracing::debug!(target: "ha::balance", wait_ms = wait / 1e6, calm_ms = calm / 1e6, "queueing judged");
            events.emit(Event::Queueing { queueing });
        }
    }
}

/// A ramping endpoint whose latency estimate is more than this many times
/// its warm peers' median is not warm yet (see [`hold_cold_ramps`]).
pub(crate) const COLD_RATIO: f64 = 2.0;

/// When the warm endpoints' median latency reaches this many times its
/// lowest since the ramps began, they queue, and slow start ends (see
/// [`hold_cold_ramps`]).
const QUEUEING_RATIO: f64 = 2.0;

/// Readmits the ejected endpoints whose load the endpoints in service
/// cannot carry (see `Detector::needed_for_capacity`); true when one was.
fn readmit_needed<S>(snap: &Snapshot<S>, now: Instant, now_ns: u64, calm_ns: f64, events: &Events) -> bool {
    if !snap.endpoints.iter().any(|e| e.health.is_ejected(now_ns)) {
        return false;
    }
    let hosts = snap.hosts();
    let mut readmitted = false;
    for (i, endpoint) in snap.endpoints.iter().enumerate() {
        if snap.tuning.detector.needed_for_capacity(&hosts, i, now_ns, calm_ns) {
            endpoint.readmitted(now, now_ns, &snap.tuning);
            events.emit(Event::EndpointRestored { endpoint: endpoint.name.clone() });
            readmitted = true;
        }
    }
    readmitted
}

/// Each group's floor: the lowest latency estimate of its available
/// endpoints (PeakEWMA picker only; see `Group::floor_latency`).
fn note_floors<S>(snap: &Snapshot<S>, now: Instant, now_ns: u64) {
    let tracked = snap.tuning.cfg.picker.needs_latency();
    for group in &snap.groups {
        let floor = if tracked {
            group
                .members
                .iter()
                .map(|&i| &*snap.endpoints[i as usize])
                .filter(|s| s.health.available(now, now_ns, false))
                .map(|s| s.ewma.last_observed_nanos())
                .filter(|&l| l > 0.0)
                .fold(f64::INFINITY, f64::min)
        } else {
            0.0
        };
        group.floor_latency.store(if floor.is_finite() { floor.to_bits() } else { 0 }, Ordering::Relaxed);
    }
}

/// Slow start by warmth as well as time, and from the start after an open
/// breaker. An endpoint ramping up that
/// answers more than [`COLD_RATIO`] times slower than the median of the
/// available endpoints of its tier that are not ramping (a server back
/// with cold caches, a JIT still compiling) has its ramp set back to its
/// start (`min_factor`), where it waits until it answers about as fast as
/// its peers; then it ramps over the window.
///
/// A time ramp alone cannot protect the tail from a batch of cold
/// endpoints: P2C compares two of them with each other as often as their
/// sampling share allows, and the ramp reaches full share after its window
/// however slow they still are (half the pool back with 5x the latency
/// took 20% of the traffic and set every second's p99 to theirs).
///
/// While it is held, the picker also scales its share by the fourth power of how
/// much slower than that it is (`pick::slow_start_share`): the ramp's start
/// is `min_factor` of a fair share, and a batch of cold endpoints at even
/// that share would still hold a percent or more of the traffic, the tail.
///
/// Latencies are compared as last observed, without the decay PeakEWMA
/// applies while an endpoint is not answering: an endpoint held at the
/// start of its ramp answers rarely, and its decayed estimate would let it
/// go before it is warm.
///
/// Only with the PeakEWMA picker (the only one that measures latency), and
/// only when the tier has a warm endpoint to compare with. A joiner's
/// estimate starts at that warm latency rather than the prior.
fn hold_cold_ramps<S>(snap: &Snapshot<S>, now: Instant, now_ns: u64) {
    let tuning = &*snap.tuning;
    let window = tuning.slow_start_ns;
    if window == 0 {
        return;
    }
    let ramping = |s: &EndpointState<S>| {
        let from = s.ramp_from_ns.load(Ordering::Relaxed);
        from != 0 && now_ns.saturating_sub(from) < window
    };
    // The ramp's start, as `ramp_from_ns`: share `min_factor` now.
    let start = now_ns.saturating_sub((tuning.cfg.slow_start.min_factor * window as f64) as u64).max(1);
    let panic = snap.plan.in_panic();
    let mut any_ramping = false;
    for s in &snap.endpoints {
        // Out of selection by its gate (an open breaker): when the gate lets
        // requests through again (a half-open breaker's trial calls), they
        // go at the start of a ramp, not all at once to an endpoint whose
        // latency estimate has decayed while it was out.
        if !s.health.gate_admits(now)
            && !s.health.available(now, now_ns, panic)
            && s.ramp_from_ns.load(Ordering::Relaxed) < start
        {
            s.ramp_from_ns.store(start, Ordering::Relaxed);
        }
        any_ramping |= ramping(s);
    }
    if !any_ramping || !tuning.cfg.picker.needs_latency() {
        for group in &snap.groups {
            group.warm_latency.store(0, Ordering::Relaxed);
            group.calm_latency.store(0, Ordering::Relaxed);
        }
        return;
    }
    let mut warm = Vec::new();
    for group in &snap.groups {
        let members = || group.members.iter().map(|&i| &*snap.endpoints[i as usize]);
        warm.clear();
        warm.extend(
            members()
                .filter(|s| !ramping(s) && s.health.available(now, now_ns, false))
                .map(|s| s.ewma.last_observed_nanos()),
        );
        if warm.is_empty() {
            group.warm_latency.store(0, Ordering::Relaxed);
            group.calm_latency.store(0, Ordering::Relaxed);
            continue;
        }
        let mid = warm.len() / 2;
        let reference = *warm.select_nth_unstable_by(mid, f64::total_cmp).1;
        group.warm_latency.store(reference.to_bits(), Ordering::Relaxed);
        let calm = f64::from_bits(group.calm_latency.load(Ordering::Relaxed));
        let calm = if calm > 0.0 { calm.min(reference) } else { reference };
        group.calm_latency.store(calm.to_bits(), Ordering::Relaxed);
        if reference >= QUEUEING_RATIO * calm {
            // The warm endpoints queue: the load needs every endpoint's
            // capacity now, warm or not, and P2C still prices a cold one by
            // its latency. Slow start yields, as an ejection does
            // (`Detector::needed_for_capacity`).
            for s in members().filter(|s| ramping(s)) {
                s.ramp_from_ns.store(0, Ordering::Relaxed);
                tracing::debug!(
                    target: "ha::balance",
                    endpoint = %s.name,
                    warm_ms = reference / 1e6,
                    calm_ms = calm / 1e6,
                    "slow start ended early: the warm endpoints queue"
                );
            }
            group.calm_latency.store(0, Ordering::Relaxed);
            continue;
        }
        for s in members() {
            if s.fresh.load(Ordering::Relaxed) && s.fresh.swap(false, Ordering::Relaxed) {
                // A joiner starts from its peers' latency, not the prior: a
                // 30 ms prior in a 1 ms fleet would take tens of seconds to
                // decay, holding it as cold meanwhile.
                s.ewma.reset(now, std::time::Duration::from_nanos(reference as u64));
                continue;
            }
            if ramping(s)
                && !s.fresh.load(Ordering::Relaxed)
                && s.ewma.last_observed_nanos() > COLD_RATIO * reference
                && s.ramp_from_ns.load(Ordering::Relaxed) < start
            {
                tracing::trace!(target: "ha::balance", endpoint = %s.name, "slow start held: slower than its warm peers");
                s.ramp_from_ns.store(start, Ordering::Relaxed);
            }
        }
    }
}

/// An advisory gate (a stack's circuit breaker) that vetoes an endpoint
/// failing alike with its peers is set aside, as an ejection would be
/// refused: under a fleet-wide overload every breaker sees the same
/// failure rate, and taking endpoints out only loads the rest more. Once
/// the overload ends the peers stop failing, but the breaker, whose calls
/// went through untracked while it was set aside, is still open: the veto
/// stays aside until the breaker closes unless the endpoint looks dead, or
/// every endpoint whose breaker opened in the overload would leave
/// selection as the rates decay, one after the other, their load on the
/// few left (a breaker's judgement of an endpoint failing on its own, with
/// the overload's failures in its windows, is no better than the outlier
/// rules' on fresh outcomes).
///
/// A veto is set aside too, as an ejection is refused, when the endpoint
/// still serves and the endpoints in selection cannot carry its load: their
/// latency has risen by half since the veto began, or since the fleet's calmest (see
/// `Detector::veto_needed_for_capacity`); like a shared one, it then stays
/// aside for the rest of the breaker's run.
fn judge_gates<S>(snap: &Snapshot<S>, now: Instant, now_ns: u64, calm_ns: f64) {
    let vetoed = |s: &EndpointState<S>| s.health.gate_is_advisory() && !s.health.gate_admits(now);
    let detector = &snap.tuning.detector;
    if !snap.endpoints.iter().any(|s| vetoed(s)) {
        for endpoint in &snap.endpoints {
            let run = endpoint.health.gate_run();
            if !endpoint.health.set_aside_in(run) {
                endpoint.health.override_gate(0, run);
                detector.veto_ended(&endpoint.outlier);
            }
        }
        return;
    }
    let hosts = snap.hosts();
    let in_selection = selection_latency(snap, &hosts, now, now_ns);
    for (i, endpoint) in snap.endpoints.iter().enumerate() {
        // Read once: a run that ends while this judgement is made leaves
        // it stale, never stamped with the next run.
        let run = endpoint.health.gate_run();
        let aside = endpoint.health.set_aside_in(run);
        let mut overridden = 0;
        if vetoed(endpoint) {
            if detector.failure_shared(&hosts, i, now_ns) {
                overridden |= crate::health::SHARED;
            }
            if detector.veto_needed_for_capacity(&hosts[i], now_ns, in_selection, calm_ns) {
                overridden |= crate::health::NEEDED;
            }
            if !crate::outlier::looks_dead(&endpoint.outlier) {
                if aside {
                    overridden |= crate::health::SHARED_RUN;
                }
                overridden |= crate::health::IN_PANIC;
            }
        } else if aside {
            // Admitting for a moment within a run set aside (an open
            // wait over, a half-open probe about to go out): when the veto
            // returns, it is judged as it was.
            continue;
        } else {
            detector.veto_ended(&endpoint.outlier);
        }
        if endpoint.health.override_gate(overridden, run) {
            tracing::debug!(
                target: "ha::balance",
                endpoint = %endpoint.name,
                set_aside = overridden & !crate::health::IN_PANIC != 0,
                in_panic_only = overridden == crate::health::IN_PANIC,
                "open breaker's veto judged"
            );
        }
    }
}

/// The median latency estimate (ns) of the endpoints in selection as of the
/// last judgement: not ejected, and admitted by their gate or with its veto
/// set aside. `None` when none has an estimate.
fn selection_latency<S>(snap: &Snapshot<S>, hosts: &[Host<'_>], now: Instant, now_ns: u64) -> Option<f64> {
    let mut latency: Vec<f64> = snap
        .endpoints
        .iter()
        .zip(hosts)
        .filter(|(e, h)| h.latency_ns > 0.0 && e.health.available(now, now_ns, false))
        .map(|(_, h)| h.latency_ns)
        .collect();
    latency.sort_by(f64::total_cmp);
    latency.get(latency.len().saturating_sub(1) / 2).copied()
}
