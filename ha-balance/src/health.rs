//! Whether an endpoint may be selected: the one place that combines outlier
//! ejection, active health checks and an optional circuit breaker, so each
//! of them takes the endpoint out of selection the moment it says so.

use std::fmt;
use std::sync::Arc;

use ha_core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// changes only once the endpoint recovered (a breaker that closed; a
    /// run goes from one closing to the next). The balancer's judgement
    /// that a veto is a failure shared with the peers (set aside) then holds
    /// for the whole run, also while the gate admits for a moment within it
    /// (a breaker's open wait over, its half-open probe in flight, the probe
    /// failing and reopening it), so the endpoint does not idle each time
    /// until the next recount judges it again, and once the shared overload
    /// ends the veto stays aside unless the endpoint looks dead (the
    /// breaker's windows hold the overload's failures); a veto of a later
    /// run is judged anew. `None` (the default): each recount judges the
    /// veto afresh, and a judgement lasts until the next.
    fn veto_run(&self) -> Option<u64> {
        None
    }
}

/// An advisory gate's veto is set aside: the endpoint fails alike with its peers.
pub(crate) const SHARED: u8 = 1;
/// An advisory gate's veto is set aside in panic mode: the endpoint still
/// serves some requests (an endpoint that fails nearly all is left out).
pub(crate) const IN_PANIC: u8 = 2;
/// An advisory gate's veto stays set aside for the rest of a run (see
/// [`HealthGate::veto_run`]) in which it was set aside, for a failure shared
/// with the peers or for capacity ([`NEEDED`]): the breaker's windows hold
/// failures from before and it tracked none of the calls set aside since,
/// so only an endpoint that now looks dead is left out; failing on its own
/// otherwise is for the outlier rules to judge, on fresh outcomes, with
/// their own guards for capacity.
pub(crate) const SHARED_RUN: u8 = 4;
/// An advisory gate's veto is set aside because the endpoints in selection
/// cannot carry the endpoint's load (see
/// `Detector::veto_needed_for_capacity`).
pub(crate) const NEEDED: u8 = 8;
/// The flags that set a veto aside whether or not in panic mode.
const ASIDE: u8 = SHARED | SHARED_RUN | NEEDED;
/// The low bits of a judgement word hold the flags, the rest the run.
const FLAG_BITS: u32 = 4;

/// The balancer's judgement of an advisory gate's veto, as one word so no
/// reader sees the flags of one run under the stamp of another: the flags
/// ([`SHARED`], [`IN_PANIC`], [`SHARED_RUN`], [`NEEDED`]) and `1 +` the gate's run when
/// it was judged (0 for a gate without runs).
#[derive(Clone, Copy, PartialEq)]
struct Judgement(u64);

impl Judgement {
    fn new(flags: u8, run: Option<u64>) -> Self {
        let stamp = run.map_or(0, |r| r.wrapping_add(1));
        Judgement(stamp << FLAG_BITS | u64::from(flags))
    }

    fn flags(self) -> u8 {
        (self.0 & ((1 << FLAG_BITS) - 1)) as u8
    }

    /// Made in run `run` (always, for a gate without runs: its judgement is
    /// the last recount's).
    fn of(self, run: Option<u64>) -> bool {
        run.is_none_or(|r| self.0 >> FLAG_BITS == r.wrapping_add(1) & (u64::MAX >> FLAG_BITS))
    }
}

pub(crate) struct Health {
    /// Nanoseconds since the balancer's epoch until which the endpoint is
    /// ejected; `0` when it is not. Expiry needs no writer: a reader compares
    /// with its own clock reading.
    ejected_until: AtomicU64,
    probe_failing: AtomicBool,
    /// How far the advisory gate's veto is set aside, and in which of its
    /// runs that was judged (set at each plan recount): [`SHARED`] and
    /// [`SHARED_RUN`] always, [`IN_PANIC`] in panic mode.
    judgement: AtomicU64,
    gate: Option<Arc<dyn HealthGate>>,
}

impl Health {
    pub(crate) fn new(gate: Option<Arc<dyn HealthGate>>) -> Self {
        Health {
            ejected_until: AtomicU64::new(0),
            probe_failing: AtomicBool::new(false),
            judgement: AtomicU64::new(0),
            gate,
        }
    }

    /// May the endpoint be picked at `now_ns`? In panic mode ejections and
    /// failing probes are overridden, but an open breaker is not: it would
    /// refuse the request anyway.
    #[inline]
    pub(crate) fn available(&self, now: Instant, now_ns: u64, panic: bool) -> bool {
        if !self.gate_admits(now) && !self.veto_set_aside(panic) {
            return false;
        }
        panic || (self.ejected_until.load(Ordering::Acquire) <= now_ns && !self.probe_failing.load(Ordering::Acquire))
    }

    /// The gate's veto is set aside: it is advisory, and judged so in its
    /// current run. Off the common path (only for a vetoing gate).
    #[cold]
    fn veto_set_aside(&self, panic: bool) -> bool {
        let judged = self.judgement();
        let flags = judged.flags();
        let aside = flags & ASIDE != 0 || (panic && flags & IN_PANIC != 0);
        aside && self.gate_is_advisory() && judged.of(self.gate_run())
    }

    #[inline]
    pub(crate) fn gate_admits(&self, now: Instant) -> bool {
        self.gate.as_ref().is_none_or(|g| g.admits(now))
    }

    /// The gate may be overruled (see [`HealthGate::advisory`]).
    pub(crate) fn gate_is_advisory(&self) -> bool {
        self.gate.as_ref().is_some_and(|g| g.advisory())
    }

    /// The gate's current run of vetoes, if it tells (see
    /// [`HealthGate::veto_run`]). Read once per judgement, so a run that
    /// ends while it is made leaves it stale rather than stamped anew.
    pub(crate) fn gate_run(&self) -> Option<u64> {
        self.gate.as_ref().and_then(|g| g.veto_run())
    }

    fn judgement(&self) -> Judgement {
        Judgement(self.judgement.load(Ordering::Relaxed))
    }

    /// The endpoint has an advisory gate whose veto, if it has one now,
    /// was not set aside at the last recount, or in another run.
    #[inline]
    pub(crate) fn advisory_gate_unjudged(&self) -> bool {
        let judged = self.judgement();
        (judged.flags() == 0 || !judged.of(self.gate_run())) && self.gate_is_advisory()
    }

    /// The gate's veto was set aside (always, not only in panic mode) in
    /// `run`, a run the gate tells.
    pub(crate) fn set_aside_in(&self, run: Option<u64>) -> bool {
        let judged = self.judgement();
        run.is_some() && judged.flags() & ASIDE != 0 && judged.of(run)
    }

    /// Sets how far an advisory gate's veto is set aside ([`SHARED`],
    /// [`SHARED_RUN`], [`NEEDED`], [`IN_PANIC`], or 0), judged in the gate's `run`;
    /// true when the flags changed.
    pub(crate) fn override_gate(&self, flags: u8, run: Option<u64>) -> bool {
        let before = Judgement(self.judgement.swap(Judgement::new(flags, run).0, Ordering::Relaxed));
        before.flags() != flags
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

/// `RUSTFLAGS="--cfg loom" cargo test --release -p ha-balance --lib loom_models`.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;

    /// A gate whose run a racing thread ends (its breaker closing).
    struct Runs(AtomicU64);

    impl HealthGate for Runs {
        fn admits(&self, _now: Instant) -> bool {
            false
        }
        fn advisory(&self) -> bool {
            true
        }
        fn veto_run(&self) -> Option<u64> {
            Some(self.0.load(Ordering::Relaxed))
        }
    }

    #[test]
    fn a_judgement_is_current_only_for_the_run_it_was_made_in() {
        loom::model(|| {
            // Two recounts judge (one sets the veto aside, one does not)
            // while the breaker closes: whatever the order, the judgement
            // in force is one of the two whole, and counts as this run's
            // only when it was made from this run's reading.
            let gate = Arc::new(Runs(AtomicU64::new(0)));
            let health = Arc::new(Health::new(Some(gate.clone())));
            let judge = |flags: u8| {
                let health = health.clone();
                loom::thread::spawn(move || {
                    let run = health.gate_run();
                    health.override_gate(flags, run);
                    run
                })
            };
            let (aside, kept) = (judge(SHARED), judge(0));
            let closer = {
                let gate = gate.clone();
                loom::thread::spawn(move || gate.0.fetch_add(1, Ordering::Relaxed))
            };
            let (aside_run, kept_run) = (aside.join().unwrap(), kept.join().unwrap());
            closer.join().unwrap();
            let now = health.gate_run();
            let judged = health.judgement();
            let made_in = if judged.flags() == SHARED { aside_run } else { kept_run };
            assert!(judged.flags() == SHARED || judged.flags() == 0, "a torn judgement: {:#x}", judged.0);
            assert_eq!(judged.of(now), made_in == now, "current iff made from the current run");
            assert_eq!(health.set_aside_in(now), judged.flags() == SHARED && made_in == now);
        });
    }
}
