//! The state every clone of a balancer shares: the endpoint table, the
//! membership map behind its lock, the outlier detector, the tier plan's
//! bookkeeping and the in-flight counters.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use ha_core::event::{EjectionReason, Event, Events};
use ha_core::stats::PeakEwma;
use ha_core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use ha_core::sync::{LockExt, Mutex};
use ha_core::{Instant, Outcome};
use tokio::sync::Notify;
use tower::discover::Change;

use crate::config::BalanceConfig;
use crate::endpoint::{Counters, Endpoint, Slot};
use crate::health::{Health, HealthGate};
use crate::outlier::{Detector, Ejection, OutlierState, ProbeVerdict};
use crate::table::{Snapshot, LOAD_SCALE};
use crate::tiers::{degraded, spilled, tier_loads};
use crate::tuning::{Hot, Tuning};

/// Builds the health gate (a circuit breaker) of a new endpoint.
pub(crate) type GateFactory<K> = Arc<dyn Fn(&K, &Arc<str>) -> Arc<dyn HealthGate> + Send + Sync>;

/// How soon a due probe that could not be sent is looked at again.
const RESCAN_NS: u64 = 10_000_000;

/// In-flight counters: one per tier, and the total at `TOTAL`.
pub(crate) const TOTAL: usize = 256;

pub(crate) struct Core<K, S> {
    pub epoch: Instant,
    pub events: Events,
    pub cell: crate::snapshot::SnapshotCell<Snapshot<S>>,
    /// The settings the response path reads without a snapshot.
    pub hot: Hot,
    members: Mutex<HashMap<K, Arc<Slot<S>>>>,
    pub notify: Arc<Notify>,
    eject_lock: Mutex<()>,
    next_eval_ns: AtomicU64,
    /// The earliest time an ejection ends or a probe is due (`u64::MAX`:
    /// none): a pick at or after it recounts the plan first, so the
    /// restoration is reported before the endpoint serves, and looks for a
    /// probe to send. One atomic load per pick otherwise.
    pub health_due_ns: AtomicU64,
    pub pending: Box<[AtomicU64]>,
    panic_reported: AtomicBool,
    spill_reported: Box<[AtomicU32]>,
    pub seeds: AtomicU64,
    gate: Option<GateFactory<K>>,
    /// Dropped with the core, which tells the background tasks to stop.
    shutdown: Mutex<Vec<tokio::sync::oneshot::Sender<()>>>,
    /// A ring-hash picker may be configured (the balancer has a hash key).
    pub has_hash_key: bool,
}

impl<K, S> Core<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug,
{
    pub fn new(
        cfg: BalanceConfig,
        events: Events,
        seed: u64,
        gate: Option<GateFactory<K>>,
        has_hash_key: bool,
    ) -> Self {
        let epoch = Instant::now();
        let hot = Hot::new(&cfg);
        let next_eval_ns = AtomicU64::new(nanos(cfg.outlier.interval));
        let tuning = Tuning::new(cfg);
        let empty = ha_core::sync::Arc::new(Snapshot::build(Vec::new(), tuning));
        Core {
            health_due_ns: AtomicU64::new(u64::MAX),
            next_eval_ns,
            hot,
            epoch,
            events,
            cell: crate::snapshot::SnapshotCell::new(empty),
            members: Mutex::new(HashMap::new()),
            notify: Arc::new(Notify::new()),
            eject_lock: Mutex::new(()),
            pending: (0..=TOTAL).map(|_| AtomicU64::new(0)).collect(),
            panic_reported: AtomicBool::new(false),
            spill_reported: (0..TOTAL).map(|_| AtomicU32::new(0)).collect(),
            seeds: AtomicU64::new(seed),
            gate,
            shutdown: Mutex::new(Vec::new()),
            has_hash_key,
        }
    }

    /// Ties a background task's stop signal to this core's lifetime.
    pub fn on_drop(&self, stop: tokio::sync::oneshot::Sender<()>) {
        self.shutdown.lock_or_recover().push(stop);
    }

    fn make_slot(&self, key: &K, ep: Endpoint<S>, now: Instant, initial: bool, tuning: &Tuning) -> Arc<Slot<S>> {
        let name: Arc<str> = ep.name.unwrap_or_else(|| {
            let debug = format!("{key:?}");
            // A string key reads better without its quotes.
            match debug.strip_prefix('"').and_then(|d| d.strip_suffix('"')) {
                Some(bare) => bare.into(),
                None => debug.into(),
            }
        });
        let gate = ep.gate.or_else(|| self.gate.as_ref().map(|f| f(key, &name)));
        Arc::new(Slot {
            id: ha_core::EndpointId::from_key(key),
            name,
            service: ep.service,
            tier: ep.tier,
            zone: ep.zone,
            weight: ep.weight,
            ramp_from_ns: AtomicU64::new(if initial { 0 } else { self.now_ns(now) }),
            ejected_at_ns: AtomicU64::new(0),
            unanswered: AtomicBool::new(false),
            pending: AtomicU64::new(0),
            ewma: PeakEwma::new(now, tuning.cfg.load.default_rtt, tuning.cfg.load.decay),
            failure_cost: PeakEwma::new(now, std::time::Duration::ZERO, crate::future::FAILURE_DECAY),
            health: Health::new(gate),
            outlier: OutlierState::default(),
            counters: Counters::default(),
        })
    }

    /// Applies a batch of changes with one table rebuild.
    pub fn apply(&self, changes: impl IntoIterator<Item = Change<K, Endpoint<S>>>) {
        let now = Instant::now();
        let mut members = self.members.lock_or_recover();
        let tuning = self.tuning();
        let initial = members.is_empty();
        for change in changes {
            match change {
                Change::Insert(key, ep) => {
                    let slot = self.make_slot(&key, ep, now, initial, &tuning);
                    members.insert(key, slot);
                }
                Change::Remove(key) => {
                    members.remove(&key);
                }
            }
        }
        self.install(&members, tuning, now);
    }

    /// Replaces the whole set; endpoints whose key stays keep their state.
    pub fn reset(&self, endpoints: impl IntoIterator<Item = (K, Endpoint<S>)>) {
        let now = Instant::now();
        let mut members = self.members.lock_or_recover();
        let tuning = self.tuning();
        let initial = members.is_empty();
        let mut next = HashMap::new();
        for (key, ep) in endpoints {
            let slot = match members.remove(&key) {
                Some(old) if old.tier == ep.tier && old.weight == ep.weight => old,
                _ => self.make_slot(&key, ep, now, initial, &tuning),
            };
            next.insert(key, slot);
        }
        *members = next;
        self.install(&members, tuning, now);
    }

    /// Puts `cfg` in force (validated by the caller): the endpoint table is
    /// rebuilt over the same slots, so every endpoint keeps its state.
    pub fn reconfigure(&self, cfg: BalanceConfig) {
        let members = self.members.lock_or_recover();
        let before = self.tuning();
        let interval_shortened = cfg.outlier.interval < before.cfg.outlier.interval;
        let hot = cfg.clone();
        self.install(&members, Tuning::new(cfg), Instant::now());
        // After the snapshot: a response that sees the new flags finds the new table.
        self.hot.set(&hot);
        if interval_shortened {
            // An evaluation scheduled under a longer interval comes sooner.
            let soonest = self.now_ns(Instant::now()).saturating_add(nanos(hot.outlier.interval));
            self.next_eval_ns.fetch_min(soonest, Ordering::AcqRel);
        }
        tracing::info!(target: "ha::balance", picker = ?hot.picker, "balancer reconfigured");
    }

    fn install(&self, members: &HashMap<K, Arc<Slot<S>>>, tuning: Arc<Tuning>, now: Instant) {
        let snap = ha_core::sync::Arc::new(Snapshot::build(members.values().cloned().collect(), tuning));
        self.refresh_plan(&snap, now, self.now_ns(now));
        self.cell.store(snap);
        self.notify.notify_waiters();
    }

    pub fn keys(&self) -> Vec<(K, Arc<Slot<S>>)> {
        let members = self.members.lock_or_recover();
        members.iter().map(|(k, s)| (k.clone(), s.clone())).collect()
    }
}

impl<K, S> Core<K, S> {
    /// The settings in force (a lock and a reference count: not for the request path).
    pub fn tuning(&self) -> Arc<Tuning> {
        self.cell.load().1.tuning.clone()
    }

    #[inline]
    pub fn now_ns(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.epoch)).max(1)
    }

    /// Recounts the available endpoints per tier when the plan is stale or
    /// old, reports restorations, spill and panic changes. One caller at a
    /// time; the others keep using the current plan.
    pub fn refresh_plan(&self, snap: &Snapshot<S>, now: Instant, now_ns: u64) {
        let plan = &snap.plan;
        let tuning = &*snap.tuning;
        let due = plan.stale.load(Ordering::Acquire)
            || now_ns >= plan.computed_ns.load(Ordering::Relaxed).saturating_add(tuning.refresh_ns);
        if !due || plan.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        plan.stale.store(false, Ordering::Release);
        self.judge_gates(snap, now, now_ns);
        let mut counts = vec![(0u32, 0u32); snap.groups.len()];
        let mut restored = false;
        for (slot, &g) in snap.slots.iter().zip(&snap.slot_group) {
            if slot.health.clear_expired(now_ns) {
                restored = true;
                self.events.emit(Event::EndpointRestored { endpoint: slot.name.clone() });
            }
            let c = &mut counts[g as usize];
            c.1 += 1;
            c.0 += u32::from(slot.health.available(now, now_ns, false));
        }
        let available: u32 = counts.iter().map(|c| c.0).sum();
        let total = snap.slots.len() as u32;
        let panic = total > 0
            && f64::from(available) < tuning.cfg.tiers.panic_threshold * f64::from(total)
            && degraded(&counts, tuning.cfg.tiers.overprovisioning);
        let loads = tier_loads(&counts, tuning.cfg.tiers.overprovisioning);
        let mut cum = 0.0;
        for (i, load) in loads.iter().enumerate() {
            cum += load;
            let scaled =
                if i + 1 == loads.len() && cum > 0.0 { LOAD_SCALE } else { (cum * f64::from(LOAD_SCALE)) as u32 };
            plan.cum[i].store(scaled.min(LOAD_SCALE), Ordering::Relaxed);
            plan.available[i].store(counts[i].0, Ordering::Relaxed);
        }
        plan.available_all.store(available, Ordering::Relaxed);
        plan.panic.store(panic, Ordering::Release);
        if self.panic_reported.swap(panic, Ordering::AcqRel) != panic {
            self.events.emit(Event::PanicMode { entered: panic });
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
                    self.events.emit(Event::TierSpill { from_tier: g.tier, spilled: f64::from(permille) / 1000.0 });
                }
            }
        }
        plan.computed_ns.store(now_ns, Ordering::Relaxed);
        plan.busy.store(false, Ordering::Release);
        if restored {
            self.notify.notify_waiters();
        }
    }

    /// An advisory gate (a stack's circuit breaker) that vetoes an endpoint
    /// failing alike with its peers is set aside, as an ejection would be
    /// refused: under a fleet-wide overload every breaker sees the same
    /// failure rate, and taking endpoints out only loads the rest more.
    fn judge_gates(&self, snap: &Snapshot<S>, now: Instant, now_ns: u64) {
        let vetoed = |s: &Slot<S>| s.health.gate_is_advisory() && !s.health.gate_admits(now);
        if !snap.slots.iter().any(|s| vetoed(s)) {
            for slot in &snap.slots {
                slot.health.override_gate(0);
            }
            return;
        }
        let hosts = snap.hosts();
        for (i, slot) in snap.slots.iter().enumerate() {
            let mut overridden = 0;
            if vetoed(slot) {
                if snap.tuning.detector.failure_shared(&hosts, i, now_ns) {
                    overridden |= crate::health::SHARED;
                }
                if !crate::outlier::looks_dead(&slot.outlier) {
                    overridden |= crate::health::IN_PANIC;
                }
            }
            if slot.health.override_gate(overridden) {
                tracing::debug!(
                    target: "ha::balance",
                    endpoint = %slot.name,
                    overridden,
                    "open breaker on an endpoint failing alike with its peers"
                );
            }
        }
    }

    /// Runs the interval rules of outlier detection when an interval is over.
    pub fn maybe_evaluate(&self, snap: &Snapshot<S>, now_ns: u64) {
        let next = self.next_eval_ns.load(Ordering::Relaxed);
        if now_ns < next {
            return;
        }
        let detector = &snap.tuning.detector;
        let following = now_ns.saturating_add(nanos(detector.interval()));
        if self.next_eval_ns.compare_exchange(next, following, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return;
        }
        let _serial = self.eject_lock.lock_or_recover();
        let hosts = snap.hosts();
        for e in detector.evaluate(&hosts, now_ns) {
            self.report_ejection(&snap.slots[e.host], e, now_ns);
        }
        snap.plan.mark_stale();
    }

    fn report_ejection(&self, slot: &Slot<S>, e: Ejection, now_ns: u64) {
        slot.counters.ejections.fetch_add(1, Ordering::Relaxed);
        slot.ejected_at_ns.store(now_ns.max(1), Ordering::Relaxed);
        let ends = now_ns.saturating_add(nanos(e.duration));
        self.health_due_ns.fetch_min(e.probe_at.unwrap_or(ends).min(ends), Ordering::AcqRel);
        self.events.emit(Event::EndpointEjected {
            endpoint: slot.name.clone(),
            reason: e.reason,
            duration: e.duration,
        });
    }

    /// Counts a finished request. Reads the clock only when an ejection
    /// needs a time stamp and the caller has none.
    pub fn on_outcome(&self, slot: &Slot<S>, outcome: Outcome, now: Option<Instant>) {
        if !outcome.counts() {
            return;
        }
        let failed = outcome.is_failure();
        if failed {
            slot.counters.failures.fetch_add(1, Ordering::Relaxed);
        } else {
            slot.counters.successes.fetch_add(1, Ordering::Relaxed);
        }
        if Detector::record(&slot.outlier, failed, self.hot.consecutive_failures()) {
            let now_ns = self.now_ns(now.unwrap_or_else(Instant::now));
            let (_, snap) = self.cell.load();
            let Some(idx) = snap.index_of(slot) else { return };
            let _serial = self.eject_lock.lock_or_recover();
            let hosts = snap.hosts();
            if let Some(e) = snap.tuning.detector.try_eject(&hosts, idx, now_ns, EjectionReason::ConsecutiveFailures) {
                self.report_ejection(slot, e, now_ns);
                snap.plan.mark_stale();
            }
        }
    }

    /// The outcome of a probe sent to an ejected endpoint: a success
    /// readmits it with its failure cost cleared and its slow start set back
    /// by half the time it was out (`Slot::readmission_ramp_from`); a
    /// failure schedules the next probe. (Its latency estimate is kept:
    /// failures never lowered it, and resetting it to the prior would
    /// handicap it against peers that converged.)
    pub fn on_probe_outcome(&self, slot: &Slot<S>, success: bool, now: Instant) {
        let now_ns = self.now_ns(now);
        let host = crate::outlier::Host { outlier: &slot.outlier, health: &slot.health, tier: slot.tier };
        let (_, snap) = self.cell.load();
        let tuning = &*snap.tuning;
        match tuning.detector.probe_outcome(host, success, now_ns) {
            ProbeVerdict::Readmitted => {
                slot.failure_cost.reset(now, std::time::Duration::ZERO);
                if tuning.slow_start_ns > 0 {
                    let from =
                        slot.readmission_ramp_from(now_ns, tuning.slow_start_ns, tuning.cfg.slow_start.min_factor);
                    slot.ramp_from_ns.store(from, Ordering::Relaxed);
                }
                self.events.emit(Event::EndpointRestored { endpoint: slot.name.clone() });
                snap.plan.mark_stale();
                self.notify.notify_waiters();
            }
            ProbeVerdict::Failed { next_probe_ns } => {
                tracing::debug!(target: "ha::balance", endpoint = %slot.name, "probe failed; endpoint stays ejected");
                self.health_due_ns.fetch_min(next_probe_ns, Ordering::AcqRel);
            }
            ProbeVerdict::Stale => {}
        }
    }

    /// At or after `health_due_ns`: claims a due probe (the endpoint to
    /// send this request to, if any) and computes the next due time. Rare:
    /// once per ejection end or probe time.
    pub fn due_probe(
        &self,
        snap: &Snapshot<S>,
        now: Instant,
        now_ns: u64,
        skip: impl Fn(&Slot<S>) -> bool,
    ) -> Option<usize> {
        let seen = self.health_due_ns.load(Ordering::Acquire);
        let mut claimed = None;
        let mut next = u64::MAX;
        for (i, slot) in snap.slots.iter().enumerate() {
            let until = slot.health.ejected_until();
            if until <= now_ns {
                continue;
            }
            next = next.min(until);
            if claimed.is_none()
                && slot.health.gate_admits(now)
                && !skip(slot)
                && snap.tuning.detector.claim_probe(&slot.outlier, now_ns)
            {
                claimed = Some(i);
            }
            if let Some(at) = slot.outlier.next_probe() {
                // A due probe nobody could take (its breaker is open, this
                // request tried it) is looked at again shortly, not on every pick.
                next = next.min(at.max(now_ns.saturating_add(RESCAN_NS)));
            }
        }
        // Lost to a racing update (an ejection's fetch_min, another caller's
        // scan): leave theirs; at worst a later pick scans once more.
        let _ = self.health_due_ns.compare_exchange(seen, next, Ordering::AcqRel, Ordering::Relaxed);
        claimed
    }

    /// The active health checker's verdict on one endpoint.
    pub fn set_probe_verdict(&self, slot: &Slot<S>, failing: bool) {
        if slot.health.set_probe_failing(failing) {
            let (_, snap) = self.cell.load();
            if failing {
                self.events.emit(Event::EndpointEjected {
                    endpoint: slot.name.clone(),
                    reason: EjectionReason::HealthCheck,
                    duration: snap.tuning.cfg.health_check.interval,
                });
            } else {
                self.events.emit(Event::EndpointRestored { endpoint: slot.name.clone() });
                self.notify.notify_waiters();
            }
            snap.plan.mark_stale();
        }
    }
}

#[inline]
pub(crate) fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
