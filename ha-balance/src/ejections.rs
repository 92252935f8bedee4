//! The ejection and probe schedule: when the interval rules of outlier
//! detection run next, when the earliest ejection ends or probe falls due,
//! and the lock that keeps ejection decisions one at a time.

use ha_core::event::{EjectionReason, Event, Events};
use ha_core::sync::atomic::{AtomicU64, Ordering};
use ha_core::sync::{LockExt, Mutex};
use ha_core::Instant;

use crate::clock::nanos;
use crate::endpoint::EndpointState;
use crate::outlier::{fleet_queues, serving_latency, Ejection};
use crate::table::Snapshot;

/// How soon a due probe that could not be sent is looked at again.
const RESCAN_NS: u64 = 10_000_000;

/// When ejections and probes need looking at, on the balancer's clock.
pub(crate) struct Ejections {
    /// Ejection decisions read every endpoint's counters; one at a time, so
    /// two of them never both take the last ejection the cap allows.
    serial: Mutex<()>,
    next_eval_ns: AtomicU64,
    /// The earliest time an ejection ends or a probe is due (`u64::MAX`:
    /// none): a pick at or after it recounts the plan first, so the
    /// restoration is reported before the endpoint serves, and looks for a
    /// probe to send. One atomic load per pick otherwise.
    due_ns: AtomicU64,
    /// The lowest median latency estimate (ns, `f64` bits) of the endpoints
    /// in service seen at an evaluation, let rise by `CALM_DRIFT` an
    /// interval; 0 before the first.
    calm_ns: AtomicU64,
}

/// How much the calm latency may rise per interval: slowly enough that an
/// overload of twice the calm latency keeps the guard it sets on ejection
/// for about six minutes at the default 10 s interval, and a fleet that got
/// slower for good (a release, a bigger payload) is calm again at its new
/// latency within as long.
const CALM_DRIFT: f64 = 1.02;

impl Ejections {
    /// A schedule whose first evaluation is one `interval` after the epoch.
    pub(crate) fn new(interval: std::time::Duration) -> Self {
        Ejections {
            serial: Mutex::new(()),
            next_eval_ns: AtomicU64::new(nanos(interval)),
            due_ns: AtomicU64::new(u64::MAX),
            calm_ns: AtomicU64::new(0),
        }
    }

    /// The fleet's calmest median latency estimate (ns) as of the last
    /// evaluation; 0 before the first.
    pub(crate) fn calm_ns(&self) -> f64 {
        f64::from_bits(self.calm_ns.load(Ordering::Relaxed))
    }

    /// True at or after the earliest ejection end or probe time.
    #[inline]
    pub(crate) fn health_due(&self, now_ns: u64) -> bool {
        now_ns >= self.due_ns.load(Ordering::Acquire)
    }

    /// Brings the next evaluation forward to `soonest` (a shorter interval
    /// was configured).
    pub(crate) fn evaluate_by(&self, soonest: u64) {
        self.next_eval_ns.fetch_min(soonest, Ordering::AcqRel);
    }

    /// A probe failed; the next one is due at `next_probe_ns`.
    pub(crate) fn probe_at(&self, next_probe_ns: u64) {
        self.due_ns.fetch_min(next_probe_ns, Ordering::AcqRel);
    }

    /// Runs the interval rules of outlier detection when an interval is over.
    pub(crate) fn maybe_evaluate<S>(&self, snap: &Snapshot<S>, now_ns: u64, events: &Events) {
        let next = self.next_eval_ns.load(Ordering::Relaxed);
        if now_ns < next {
            return;
        }
        let detector = &snap.tuning.detector;
        let following = now_ns.saturating_add(nanos(detector.interval()));
        if self.next_eval_ns.compare_exchange(next, following, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return;
        }
        let _serial = self.serial.lock_or_recover();
        let hosts = snap.hosts();
        // Judged against the calm as it was before this evaluation: the
        // median now is what may be queueing.
        let calm = f64::from_bits(self.calm_ns.load(Ordering::Relaxed));
        let median = serving_latency(&hosts, now_ns);
        if let Some(median) = median {
            let next = if calm > 0.0 { (calm * CALM_DRIFT).min(median) } else { median };
            self.calm_ns.store(next.to_bits(), Ordering::Relaxed);
        }
        for e in detector.evaluate(&hosts, now_ns, fleet_queues(median, calm)) {
            self.report(&snap.endpoints[e.host], e, now_ns, events);
        }
        snap.plan.mark_stale();
    }

    /// Ejects `endpoint` after a run of consecutive failures, if the
    /// detector's guards allow it.
    pub(crate) fn after_consecutive_failures<S>(
        &self,
        snap: &Snapshot<S>,
        endpoint: &EndpointState<S>,
        now_ns: u64,
        events: &Events,
    ) {
        let Some(idx) = snap.index_of(endpoint) else { return };
        let _serial = self.serial.lock_or_recover();
        let hosts = snap.hosts();
        if let Some(e) = snap.tuning.detector.try_eject(&hosts, idx, now_ns, EjectionReason::ConsecutiveFailures) {
            self.report(endpoint, e, now_ns, events);
            snap.plan.mark_stale();
        } else if !endpoint.health.is_ejected(now_ns)
            && !snap.tuning.detector.deferred(&hosts, idx, now_ns)
            && !snap.tuning.detector.failure_shared(&hosts, idx, now_ns)
        {
            // Refused by the cap or the panic threshold (not merely ejected
            // already: failures of requests in flight still arrive): failing
            // on its own all the same, since the first crossing. (A failure
            // its peers share is the fleet's, not an outage of this endpoint;
            // nor is a run judged before its peers could tell.)
            let _ = endpoint.failing_since_ns.compare_exchange(0, now_ns.max(1), Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn report<S>(&self, endpoint: &EndpointState<S>, e: Ejection, now_ns: u64, events: &Events) {
        endpoint.counters.ejections.fetch_add(1, Ordering::Relaxed);
        endpoint.ejected_at_ns.store(now_ns.max(1), Ordering::Relaxed);
        // The ejection's readmission ramps it up from now on.
        endpoint.failing_since_ns.store(0, Ordering::Relaxed);
        let ends = now_ns.saturating_add(nanos(e.duration));
        self.due_ns.fetch_min(e.probe_at.unwrap_or(ends).min(ends), Ordering::AcqRel);
        events.emit(Event::EndpointEjected { endpoint: endpoint.name.clone(), reason: e.reason, duration: e.duration });
    }

    /// At or after the due time: claims a due probe (the endpoint to send
    /// this request to, if any) and computes the next due time. Rare: once
    /// per ejection end or probe time.
    pub(crate) fn due_probe<S>(
        &self,
        snap: &Snapshot<S>,
        now: Instant,
        now_ns: u64,
        skip: impl Fn(&EndpointState<S>) -> bool,
    ) -> Option<usize> {
        let seen = self.due_ns.load(Ordering::Acquire);
        let mut claimed = None;
        let mut next = u64::MAX;
        for (i, endpoint) in snap.endpoints.iter().enumerate() {
            let until = endpoint.health.ejected_until();
            if until <= now_ns {
                continue;
            }
            next = next.min(until);
            if claimed.is_none()
                && endpoint.health.gate_admits(now)
                && !skip(endpoint)
                && snap.tuning.detector.claim_probe(&endpoint.outlier, now_ns)
            {
                claimed = Some(i);
            }
            if let Some(at) = endpoint.outlier.next_probe() {
                // A due probe nobody could take (its breaker is open, this
                // request tried it) is looked at again shortly, not on every pick.
                next = next.min(at.max(now_ns.saturating_add(RESCAN_NS)));
            }
        }
        // Lost to a racing update (an ejection's fetch_min, another caller's
        // scan): leave theirs; at worst a later pick scans once more.
        let _ = self.due_ns.compare_exchange(seen, next, Ordering::AcqRel, Ordering::Relaxed);
        claimed
    }
}
