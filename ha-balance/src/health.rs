//! Whether an endpoint may be selected: the one place that combines outlier
//! ejection, active health checks and an optional circuit breaker, so each
//! of them takes the endpoint out of selection the moment it says so.

use std::fmt;
use std::sync::Arc;

use ha_core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use ha_core::Instant;

/// A source of health outside the balancer that can veto selection (a
/// circuit breaker). Read on every pick, so it must be a few atomic loads.
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use ha_balance::HealthGate;
/// use ha_core::Instant;
///
/// /// Maintenance switch an operator flips.
/// struct Drain(AtomicBool);
/// impl HealthGate for Drain {
///     fn admits(&self, _now: Instant) -> bool {
///         !self.0.load(Ordering::Relaxed)
///     }
/// }
/// ```
pub trait HealthGate: Send + Sync + 'static {
    /// True while the endpoint may take requests.
    fn admits(&self, now: Instant) -> bool;

    /// The balancer picked the endpoint because the gate admitted it, but
    /// the endpoint's service was not ready and the gate's source says it is
    /// still rejecting (a breaker whose wait was longer than the gate
    /// thought); the request went elsewhere. The gate should stop admitting
    /// for a while.
    fn deferred(&self, now: Instant) {
        let _ = now;
    }

    /// True when the gate's veto is advice: the endpoint still takes calls,
    /// so the balancer sets the veto aside when the endpoint fails alike
    /// with its peers (a shared overload, which taking endpoints out only
    /// makes worse), as it refuses such an ejection. False (the default)
    /// when the endpoint cannot serve while the gate does not admit.
    fn advisory(&self) -> bool {
        false
    }

    /// Which run of vetoes the gate is in, when it can tell: a value that
    /// changes only once the endpoint recovered in between (a breaker that
    /// closed). The balancer's judgement of an advisory veto (set aside as
    /// a failure shared with the peers) then holds for the whole run, also
    /// while the gate admits for a moment within it (a breaker's open wait
    /// over, its half-open probe in flight, the probe failing and
    /// reopening it), so the endpoint does not idle each time until the
    /// next recount judges it again; a veto of a later run is judged anew.
    /// `None` (the default): a judgement lasts until the next recount that
    /// finds the gate admitting.
    fn veto_run(&self) -> Option<u64> {
        None
    }
}

/// An advisory gate's veto is set aside: the endpoint fails alike with its peers.
pub(crate) const SHARED: u8 = 1;
/// An advisory gate's veto is set aside in panic mode: the endpoint still
/// serves some requests (an endpoint that fails nearly all is left out).
pub(crate) const IN_PANIC: u8 = 2;
/// An advisory gate's veto stays set aside for the rest of a run that began
/// in a failure shared with the peers: the breaker's windows hold the
/// overload's failures and it tracked none of the calls set aside since, so
/// only an endpoint that now looks dead is left out; failing on its own
/// otherwise is for the outlier rules to judge, on fresh outcomes.
pub(crate) const SHARED_RUN: u8 = 4;

pub(crate) struct Health {
    /// Nanoseconds since the balancer's epoch until which the endpoint is
    /// ejected; `0` when it is not. Expiry needs no writer: a reader compares
    /// with its own clock reading.
    ejected_until: AtomicU64,
    probe_failing: AtomicBool,
    /// How far the advisory gate's veto is set aside (set at each plan
    /// recount): [`SHARED`] and [`SHARED_RUN`] always; [`IN_PANIC`] in
    /// panic mode, its endpoint still serving.
    gate_overridden: AtomicU8,
    /// `1 +` the gate's [`HealthGate::veto_run`] when `gate_overridden`
    /// was judged; 0 when the gate has no runs.
    judged_run: AtomicU64,
    gate: Option<Arc<dyn HealthGate>>,
}

impl Health {
    pub(crate) fn new(gate: Option<Arc<dyn HealthGate>>) -> Self {
        Health {
            ejected_until: AtomicU64::new(0),
            probe_failing: AtomicBool::new(false),
            gate_overridden: AtomicU8::new(0),
            judged_run: AtomicU64::new(0),
            gate,
        }
    }

    /// May the endpoint be picked at `now_ns`? In panic mode ejections and
    /// failing probes are overridden, but an open breaker is not: it would
    /// refuse the request anyway.
    #[inline]
    pub(crate) fn available(&self, now: Instant, now_ns: u64, panic: bool) -> bool {
        if !self.gate_admits(now) {
            let overridden = self.gate_overridden.load(Ordering::Relaxed);
            let set_aside = overridden & (SHARED | SHARED_RUN) != 0 || (panic && overridden & IN_PANIC != 0);
            if !(set_aside && self.gate_is_advisory() && self.judged_this_run()) {
                return false;
            }
        }
        panic || (self.ejected_until.load(Ordering::Acquire) <= now_ns && !self.probe_failing.load(Ordering::Acquire))
    }

    #[inline]
    pub(crate) fn gate_admits(&self, now: Instant) -> bool {
        self.gate.as_ref().is_none_or(|g| g.admits(now))
    }

    /// The gate may be overruled (see [`HealthGate::advisory`]).
    pub(crate) fn gate_is_advisory(&self) -> bool {
        self.gate.as_ref().is_some_and(|g| g.advisory())
    }

    /// The endpoint has an advisory gate whose veto, if it has one now,
    /// was not set aside at the last recount (nor judged since it began).
    #[inline]
    pub(crate) fn advisory_gate_unjudged(&self) -> bool {
        (self.gate_overridden.load(Ordering::Relaxed) == 0 || !self.judged_this_run()) && self.gate_is_advisory()
    }

    /// The gate's veto was judged in its current run (always, for a gate
    /// without runs: its judgement is the last recount's).
    fn judged_this_run(&self) -> bool {
        match self.gate.as_ref().and_then(|g| g.veto_run()) {
            Some(run) => self.judged_run.load(Ordering::Relaxed) == run.wrapping_add(1),
            None => true,
        }
    }

    /// The gate's veto was set aside (always, not only in panic mode) in
    /// its current run.
    pub(crate) fn set_aside_this_run(&self) -> bool {
        self.gate_overridden.load(Ordering::Relaxed) & (SHARED | SHARED_RUN) != 0 && self.judged_this_run()
    }

    /// A judgement that set the gate's veto aside, made in the gate's
    /// current run: it holds until the run ends, whatever the gate says
    /// for a moment within it.
    pub(crate) fn judgement_holds(&self) -> bool {
        self.gate_overridden.load(Ordering::Relaxed) != 0
            && self.gate.as_ref().is_some_and(|g| g.veto_run().is_some())
            && self.judged_this_run()
    }

    /// Sets how far an advisory gate's veto is set aside ([`SHARED`],
    /// [`SHARED_RUN`], [`IN_PANIC`], or 0), judged now in the gate's current run; true when
    /// that changed.
    pub(crate) fn override_gate(&self, overridden: u8) -> bool {
        let run = self.gate.as_ref().and_then(|g| g.veto_run()).map_or(0, |r| r.wrapping_add(1));
        self.judged_run.store(run, Ordering::Relaxed);
        self.gate_overridden.swap(overridden, Ordering::Relaxed) != overridden
    }

    pub(crate) fn gate(&self) -> Option<&Arc<dyn HealthGate>> {
        self.gate.as_ref()
    }

    pub(crate) fn is_ejected(&self, now_ns: u64) -> bool {
        self.ejected_until.load(Ordering::Acquire) > now_ns
    }

    pub(crate) fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Ordering::Acquire)
    }

    pub(crate) fn eject_until(&self, until_ns: u64) {
        self.ejected_until.store(until_ns.max(1), Ordering::Release);
    }

    /// Ends an ejection early (a probe succeeded); true for the one caller
    /// that ended it (who reports the restoration).
    pub(crate) fn readmit(&self) -> bool {
        let mut until = self.ejected_until.load(Ordering::Acquire);
        while until != 0 {
            match self.ejected_until.compare_exchange_weak(until, 0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(actual) => until = actual,
            }
        }
        false
    }

    /// Lengthens the current ejection to at least `until_ns`; does nothing
    /// when the endpoint is not ejected (a racing probe readmitted it).
    pub(crate) fn extend_until(&self, until_ns: u64) {
        let mut cur = self.ejected_until.load(Ordering::Acquire);
        while cur != 0 && cur < until_ns {
            match self.ejected_until.compare_exchange_weak(cur, until_ns, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Clears an ejection that has expired; true for the one caller that
    /// cleared it (who reports the restoration).
    pub(crate) fn clear_expired(&self, now_ns: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Acquire);
        until != 0
            && until <= now_ns
            && self.ejected_until.compare_exchange(until, 0, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    pub(crate) fn probe_failing(&self) -> bool {
        self.probe_failing.load(Ordering::Acquire)
    }

    /// Sets the probe verdict; true when it changed.
    pub(crate) fn set_probe_failing(&self, failing: bool) -> bool {
        self.probe_failing.swap(failing, Ordering::AcqRel) != failing
    }
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health")
            .field("ejected_until", &self.ejected_until.load(Ordering::Relaxed))
            .field("probe_failing", &self.probe_failing())
            .field("gate", &self.gate.is_some())
            .finish()
    }
}
