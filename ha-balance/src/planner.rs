//! The tier plan's upkeep: recounting the available endpoints of each tier
//! into the snapshot's plan (which tier takes what share, panic mode), and
//! reporting restorations, spill and panic changes once each.

use ha_core::event::{Event, Events};
use ha_core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use ha_core::Instant;

use crate::endpoint::EndpointState;
use crate::table::{Snapshot, LOAD_SCALE};
use crate::tiers::{degraded, spilled, tier_loads};

/// What was last reported about the plan, so that a recount reports only
/// changes. The plan itself lives in each snapshot.
pub(crate) struct TierPlanner {
    panic_reported: AtomicBool,
    /// Per tier, the share spilled from it as last reported, in permille.
    spill_reported: Box<[AtomicU32]>,
}

impl TierPlanner {
    pub(crate) fn new() -> Self {
        TierPlanner {
            panic_reported: AtomicBool::new(false),
            spill_reported: (0..=u8::MAX).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// Recounts the available endpoints per tier when the plan is stale or
    /// old, and reports restorations, spill and panic changes. One caller
    /// at a time; the others keep using the current plan. True when an
    /// endpoint was restored (waiting requests may go on).
    pub(crate) fn refresh<S>(&self, snap: &Snapshot<S>, now: Instant, now_ns: u64, events: &Events) -> bool {
        let plan = &snap.plan;
        let tuning = &*snap.tuning;
        let due = plan.stale.load(Ordering::Acquire)
            || now_ns >= plan.computed_ns.load(Ordering::Relaxed).saturating_add(tuning.refresh_ns);
        if !due || plan.busy.swap(true, Ordering::AcqRel) {
            return false;
        }
        plan.stale.store(false, Ordering::Release);
        judge_gates(snap, now, now_ns);
        let mut counts = vec![(0u32, 0u32); snap.groups.len()];
        let mut restored = false;
        for (endpoint, &g) in snap.endpoints.iter().zip(&snap.group_of) {
            if endpoint.health.clear_expired(now_ns) {
                restored = true;
                events.emit(Event::EndpointRestored { endpoint: endpoint.name.clone() });
            }
            let c = &mut counts[g as usize];
            c.1 += 1;
            c.0 += u32::from(endpoint.health.available(now, now_ns, false));
        }
        let available: u32 = counts.iter().map(|c| c.0).sum();
        let total = snap.endpoints.len() as u32;
        let panic = total > 0
            && f64::from(available) < tuning.cfg.tiers.panic_threshold * f64::from(total)
            && degraded(&counts, tuning.cfg.tiers.overprovisioning);
        let loads = tier_loads(&counts, tuning.cfg.tiers.overprovisioning);
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

/// An advisory gate (a stack's circuit breaker) that vetoes an endpoint
/// failing alike with its peers is set aside, as an ejection would be
/// refused: under a fleet-wide overload every breaker sees the same
/// failure rate, and taking endpoints out only loads the rest more.
fn judge_gates<S>(snap: &Snapshot<S>, now: Instant, now_ns: u64) {
    let vetoed = |s: &EndpointState<S>| s.health.gate_is_advisory() && !s.health.gate_admits(now);
    if !snap.endpoints.iter().any(|s| vetoed(s)) {
        for endpoint in &snap.endpoints {
            endpoint.health.override_gate(0);
        }
        return;
    }
    let hosts = snap.hosts();
    for (i, endpoint) in snap.endpoints.iter().enumerate() {
        let mut overridden = 0;
        if vetoed(endpoint) {
            if snap.tuning.detector.failure_shared(&hosts, i, now_ns) {
                overridden |= crate::health::SHARED;
            }
            if !crate::outlier::looks_dead(&endpoint.outlier) {
                overridden |= crate::health::IN_PANIC;
            }
        }
        if endpoint.health.override_gate(overridden) {
            tracing::debug!(
                target: "ha::balance",
                endpoint = %endpoint.name,
                overridden,
                "open breaker on an endpoint failing alike with its peers"
            );
        }
    }
}
