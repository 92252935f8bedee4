//! Outlier detection, Envoy's model, as a sans-IO core: it is handed
//! outcomes and the time, and answers which endpoints to eject and for how
//! long. The balancer applies the answers and emits the events.
//!
//! Rules: consecutive failures (checked on every outcome), success rate
//! below `mean - k x stdev` of the fleet and failure percentage above a
//! threshold (both checked once per interval over that interval's counts).
//! An ejection lasts `base x times ejected`, capped; an endpoint that stays
//! healthy for an interval has its count lowered by one. Never more than
//! `max_ejection_percent` of the endpoints are ejected at once, but one
//! endpoint always may be.
//!
//! Two checks guard every ejection, whatever the rule (see [`Detector::try_eject`]):
//!
//! - **No cascade**: an endpoint whose failures its peers share is not
//!   ejected (an overloaded fleet sheds load everywhere; ejecting one
//!   endpoint moves its load onto the others, which then shed more).
//! - **Capacity**: an ejection never leaves fewer than `keep_available`
//!   (the balancer passes its panic threshold) of the endpoint's tier in
//!   selection, whatever `max_ejection_percent` allows, unless the endpoint
//!   fails nearly everything (a dead endpoint carries no load). Capacity is counted
//!   in endpoints: the balancer cannot see how much load a server can take,
//!   only how many servers its tier has, so it assumes them alike and never
//!   ejects its way into panic mode.
//!
//! An endpoint ejected for consecutive failures is probed: once its probe
//! time comes, the picker that claims it (a compare-and-swap on the probe
//! time, so one request per probe time whatever the number of callers)
//! sends it one real request, and a success readmits it at once.

use std::time::Duration;

/// A recent failure rate at which an endpoint serves nothing worth keeping.
const DEAD_FAILURE_RATE: f64 = 0.9;

use ha_core::event::EjectionReason;
use ha_core::rng::FastRng;
use ha_core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::config::OutlierConfig;
use crate::health::Health;

/// The recent failure rate is fixed point, this much being 100%.
const RATE_ONE: u32 = 1 << 16;
/// Each outcome moves the recent failure rate by 1/32 of the way: it
/// reflects about the last 32 outcomes, so a fleet that starts failing at
/// once shows it within milliseconds, unlike the interval's counts.
const RATE_SHIFT: u32 = 5;
/// An endpoint failing at least this many times as often as its peers (by
/// the interval rules' counts) is not sharing their failure, however much
/// they fail.
const SHARED_FACTOR: f64 = 2.0;
/// Each failure moves the given-up share by 1/8 of the way.
const GIVEN_UP_SHIFT: u32 = 3;
/// A peer's counts of the current interval say something once they hold
/// this many outcomes.
const PEER_VOLUME: u64 = 20;
/// A peer's recent rate says something once it has seen this many outcomes.
const PEER_MIN_OUTCOMES: u32 = 4;
/// Outcomes are counted up to this many: past it the recent rate's start
/// from zero no longer matters (`(31/32)^128` is under 2%).
const OUTCOMES_CAP: u32 = 128;

/// Per-endpoint counters of the detector.
#[derive(Debug, Default)]
pub(crate) struct OutlierState {
    consecutive: AtomicU32,
    interval_ok: AtomicU64,
    interval_failed: AtomicU64,
    /// Ejections not yet forgiven: the multiplier of the next ejection time.
    multiplier: AtomicU32,
    /// Failure rate over about the last 32 outcomes, scaled to `RATE_ONE`.
    recent_failure: AtomicU32,
    /// Outcomes `recent_failure` has seen, up to `OUTCOMES_CAP`: the rate
    /// starts at zero, so over its first outcomes it must be scaled up to
    /// say what they said.
    outcomes: AtomicU32,
    /// The median latency estimate (ns, `f64` bits) of the endpoints left in
    /// service when this one was ejected while it still served; 0 when the
    /// ejection removed no capacity. See [`Detector::needed_for_capacity`].
    watch_latency: AtomicU64,
    /// Until then (balancer ns) it is not ejected unless it looks dead: it
    /// was readmitted because the others could not carry its load.
    needed_until_ns: AtomicU64,
    /// The median latency estimate (ns, `f64` bits) of the endpoints in
    /// selection when an advisory gate (its breaker) was first seen keeping
    /// this one out while it still served; 0 while no gate does. See
    /// [`Detector::veto_needed_for_capacity`].
    veto_watch: AtomicU64,
    /// The current ejection ends early when a probe succeeds.
    probing: AtomicBool,
    /// Probes failed since the ejection: the spacing of the next one doubles with each.
    probe_failures: AtomicU32,
    /// Nanoseconds since the balancer's epoch when the next probe may go; 0 when none.
    next_probe_ns: AtomicU64,
    /// A failure of the current run took at least half the latency
    /// estimate, or was given up on: not a full queue turning requests
    /// away at once (see [`Detector::try_eject`]).
    slow_in_run: AtomicBool,
    /// A slow failure of the current run came back as an answer (an error
    /// after the usual latency), not a request given up on.
    answered_in_run: AtomicBool,
    /// The share of recent failures (about the last 8) that were requests
    /// given up on: cancelled by the caller or timed out, scaled to
    /// `RATE_ONE`. See [`Detector::slowest_of_a_loaded_fleet`].
    given_up: AtomicU32,
    /// An ejection for a first run of fast failures was deferred as the
    /// onset of an overload in this interval: the next run is judged (with
    /// a threshold of 1 every run is a first one).
    onset_deferred: AtomicBool,
}

impl OutlierState {
    /// Records that a failure of the current run was slow (or given up on);
    /// a success ends the run.
    #[inline]
    pub(crate) fn failed_slowly(&self) {
        if !self.slow_in_run.load(Ordering::Relaxed) {
            self.slow_in_run.store(true, Ordering::Relaxed);
        }
    }

    /// Records that a failure of the current run was slow and came back as
    /// an answer (an error after the usual latency); a success ends the run.
    #[inline]
    pub(crate) fn answered_slowly(&self) {
        self.failed_slowly();
        if !self.answered_in_run.load(Ordering::Relaxed) {
            self.answered_in_run.store(true, Ordering::Relaxed);
        }
    }

    /// Records what kind of failure the endpoint's latest was: a request
    /// given up on (cancelled, timed out) or an answer. Failures only: the
    /// response path of a success does not pay for it.
    #[inline]
    pub(crate) fn failed_given_up(&self, given_up: bool) {
        let cur = self.given_up.load(Ordering::Relaxed);
        let next = if given_up { cur + ((RATE_ONE - cur) >> GIVEN_UP_SHIFT) } else { cur - (cur >> GIVEN_UP_SHIFT) };
        if next != cur {
            // A lost race loses one step of an estimate: not worth a loop.
            let _ = self.given_up.compare_exchange(cur, next, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Are most of its recent failures requests given up on?
    fn gives_up_mostly(&self) -> bool {
        self.given_up.load(Ordering::Relaxed) >= RATE_ONE / 2
    }

    /// The failure rate of about the last 32 outcomes, in `[0, 1]`.
    pub(crate) fn recent_failure_rate(&self) -> f64 {
        f64::from(self.recent_failure.load(Ordering::Relaxed)) / f64::from(RATE_ONE)
    }

    /// The recent failure rate corrected for its start from zero (as Adam
    /// corrects its moments): over the first outcomes, their plain failure
    /// share. `None` before `PEER_MIN_OUTCOMES` outcomes. Without it, a
    /// fleet that starts shedding at once looks healthy for its first
    /// outcomes, just when one endpoint's first run of failures is judged.
    fn estimated_failure_rate(&self) -> Option<f64> {
        let n = self.outcomes.load(Ordering::Relaxed);
        if n < PEER_MIN_OUTCOMES {
            return None;
        }
        self.corrected_rate(n)
    }

    /// The recent rate over its first `n` outcomes scaled to their plain
    /// share; `None` for none.
    fn corrected_rate(&self, n: u32) -> Option<f64> {
        if n == 0 {
            return None;
        }
        let weight = 1.0 - (1.0 - 1.0 / f64::from(1u32 << RATE_SHIFT)).powi(n.min(OUTCOMES_CAP) as i32);
        Some((self.recent_failure_rate() / weight).min(1.0))
    }

    /// The failure rate as a peer: the larger of the recent rate (quick to
    /// see a fleet start failing at once) and the current interval's (less
    /// noisy once it holds enough outcomes). A peer that has seen too few
    /// outcomes to correct its rate counts with its raw one, near zero,
    /// while it is idle: an endpoint with nothing in flight (a standby tier
    /// while the first serves) has not failed, and a whole tier failing
    /// while it stands by is a failover to make, not a failure its peers
    /// share. A busy one (`in_flight` requests) is serving, and its first
    /// outcomes are on their way: it counts with its rate corrected for its
    /// start over however few it has, and is unknown (`None`) before the
    /// first.
    fn peer_failure_rate(&self, in_flight: u64) -> Option<f64> {
        let ok = self.interval_ok.load(Ordering::Relaxed);
        let failed = self.interval_failed.load(Ordering::Relaxed);
        let recent = match self.estimated_failure_rate() {
            Some(rate) => rate,
            None if in_flight == 0 => self.recent_failure_rate(),
            None => self.corrected_rate(self.outcomes.load(Ordering::Relaxed))?,
        };
        if ok + failed >= PEER_VOLUME {
            Some(recent.max(failed as f64 / (ok + failed) as f64))
        } else {
            Some(recent)
        }
    }

    /// When this endpoint's next probe is due; `None` when it is not being probed.
    pub(crate) fn next_probe(&self) -> Option<u64> {
        if !self.probing.load(Ordering::Acquire) {
            return None;
        }
        Some(self.next_probe_ns.load(Ordering::Acquire)).filter(|&t| t != 0)
    }

    #[inline]
    fn observe_rate(&self, failed: bool) {
        // A healthy endpoint's usual case once warm: one load, nothing written.
        let n = self.outcomes.load(Ordering::Relaxed);
        if n < OUTCOMES_CAP {
            self.outcomes.fetch_add(1, Ordering::Relaxed);
        }
        let mut cur = self.recent_failure.load(Ordering::Relaxed);
        loop {
            let next = if failed { cur + ((RATE_ONE - cur) >> RATE_SHIFT) } else { cur - (cur >> RATE_SHIFT) };
            // A healthy endpoint's usual case: nothing to write.
            if next == cur {
                return;
            }
            match self.recent_failure.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }
}

/// One endpoint as the detector sees it.
#[derive(Clone, Copy)]
pub(crate) struct Host<'a> {
    pub(crate) outlier: &'a OutlierState,
    pub(crate) health: &'a Health,
    pub(crate) tier: u8,
    /// Its requests in flight.
    pub(crate) in_flight: u64,
    /// Its latency estimate in ns, as last updated.
    pub(crate) latency_ns: f64,
}

/// A decision: eject `host` (an index into the slice given) for `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ejection {
    pub(crate) host: usize,
    pub(crate) reason: EjectionReason,
    pub(crate) duration: Duration,
    /// When its first probe is due, if it is probed.
    pub(crate) probe_at: Option<u64>,
}

/// What a probe's outcome did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ProbeVerdict {
    /// The endpoint is back in selection.
    Readmitted,
    /// Still ejected; the next probe is due then.
    Failed { next_probe_ns: u64 },
    /// The ejection had already ended.
    Stale,
}

#[derive(Debug, Clone)]
pub(crate) struct Detector {
    cfg: OutlierConfig,
    keep_available: f64,
    /// The picker prices latency (P2C PeakEWMA): endpoints' latency
    /// estimates are measured, and the slowest of a loaded fleet is priced
    /// rather than ejected (see [`Detector::slowest_of_a_loaded_fleet`]).
    prices_latency: bool,
}

impl Detector {
    pub(crate) fn new(cfg: OutlierConfig) -> Self {
        Detector { cfg, keep_available: 0.0, prices_latency: true }
    }

    /// Whether the picker measures and prices latency (the default).
    pub(crate) fn prices_latency(mut self, prices: bool) -> Self {
        self.prices_latency = prices;
        self
    }

    /// Never eject below this fraction of a tier's endpoints (the capacity check).
    pub(crate) fn keep_available(mut self, fraction: f64) -> Self {
        self.keep_available = fraction;
        self
    }

    pub(crate) fn interval(&self) -> Duration {
        self.cfg.interval
    }

    /// Counts one outcome; true when it made the endpoint cross the
    /// consecutive-failure threshold, or another multiple of it (exactly one
    /// caller sees each crossing). The later crossings ask again when an
    /// ejection was refused because the peers seemed to share the failure:
    /// an endpoint that keeps failing while they recover is then ejected.
    /// `threshold` is the configured `consecutive_failures` (0: off), passed
    /// in because the response path reads it from the balancer's live
    /// settings, not from a detector.
    #[inline]
    pub(crate) fn record(state: &OutlierState, failed: bool, threshold: u32) -> bool {
        state.observe_rate(failed);
        if failed {
            state.interval_failed.fetch_add(1, Ordering::Relaxed);
            let n = state.consecutive.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
            let t = threshold;
            t != 0 && n >= t && (n - t) % t == 0
        } else {
            state.interval_ok.fetch_add(1, Ordering::Relaxed);
            if state.consecutive.load(Ordering::Relaxed) != 0 {
                state.consecutive.store(0, Ordering::Release);
                state.slow_in_run.store(false, Ordering::Relaxed);
                state.answered_in_run.store(false, Ordering::Relaxed);
            }
            false
        }
    }

    /// [`record`](Self::record) with this detector's own threshold.
    #[cfg(test)]
    pub(crate) fn record_own(&self, state: &OutlierState, failed: bool) -> bool {
        Detector::record(state, failed, self.cfg.consecutive_failures)
    }

    /// The spacing of the probe after `failed` failed ones.
    fn probe_spacing(&self, failed: u32) -> Duration {
        self.cfg.probe_interval.saturating_mul(1u32 << failed.min(16)).min(self.cfg.max_probe_interval)
    }

    /// The spacing after a failed probe at `now_ns`: [`probe_spacing`](Self::probe_spacing),
    /// drawn down by up to half at random. At fixed spacings the probes of
    /// an endpoint that goes down and up on a period (a flapping link, a
    /// crash loop) keep the same phase against it: each found it back
    /// late, or each just before it was (1 + 2 + 2 s of probes against a
    /// 5 s down period missed its end by milliseconds, and the endpoint
    /// lost 2 s of every 5 s up). Drawn, they find it back within the
    /// spacing on average as often early as late, and never later than
    /// the spacing allows.
    fn jittered_spacing(&self, failed: u32, now_ns: u64) -> Duration {
        let spacing = self.probe_spacing(failed);
        let draw = FastRng::new(now_ns ^ PROBE_JITTER_SALT).unit_f64();
        spacing.mul_f64(1.0 - 0.5 * draw)
    }

    /// Claims the probe of an ejected endpoint whose probe time has come:
    /// true for exactly one caller per probe time, who sends the endpoint
    /// one request. Until that request's outcome is known, the next probe
    /// is due one spacing later (so a probe that never returns is not the last).
    pub(crate) fn claim_probe(&self, state: &OutlierState, now_ns: u64) -> bool {
        let Some(at) = state.next_probe() else { return false };
        if at > now_ns {
            return false;
        }
        let spacing = self.probe_spacing(state.probe_failures.load(Ordering::Relaxed));
        let next = now_ns.saturating_add(nanos(spacing)).max(1);
        state.next_probe_ns.compare_exchange(at, next, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// A probe's outcome: a success readmits the endpoint (for the one
    /// caller that ends the ejection); a failure spaces the next probe
    /// further and extends the ejection past it, so the endpoint is not let
    /// back unprobed while it still fails.
    pub(crate) fn probe_outcome(&self, host: Host<'_>, success: bool, now_ns: u64) -> ProbeVerdict {
        let state = host.outlier;
        if !state.probing.load(Ordering::Acquire) || !host.health.is_ejected(now_ns) {
            return ProbeVerdict::Stale;
        }
        if success {
            if !host.health.readmit() {
                return ProbeVerdict::Stale;
            }
            state.probing.store(false, Ordering::Release);
            state.next_probe_ns.store(0, Ordering::Release);
            state.probe_failures.store(0, Ordering::Relaxed);
            state.consecutive.store(0, Ordering::Release);
            state.recent_failure.store(0, Ordering::Relaxed);
            state.outcomes.store(0, Ordering::Relaxed);
            return ProbeVerdict::Readmitted;
        }
        let failed = state.probe_failures.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        let spacing = nanos(self.jittered_spacing(failed, now_ns));
        let next = now_ns.saturating_add(spacing).max(1);
        state.next_probe_ns.store(next, Ordering::Release);
        host.health.extend_until(next.saturating_add(spacing));
        ProbeVerdict::Failed { next_probe_ns: next }
    }

    /// An ejected endpoint that still served when it was ejected, whose
    /// load the endpoints left in service cannot carry: their median
    /// latency estimate has reached `CAPACITY_LATENCY_FACTOR` times what it
    /// was at the ejection, or times the fleet's calmest (`calm_ns`, see
    /// `Ejections`; 0: not known) if that was lower (they queue).
    /// Ejection must not remove capacity the current load needs, whatever
    /// the rules judged of the endpoint: it is readmitted at once, and kept
    /// from ejection (unless it looks dead) for `base_ejection_time`. True
    /// for the one caller that readmitted it.
    pub(crate) fn needed_for_capacity(&self, hosts: &[Host<'_>], idx: usize, now_ns: u64, calm_ns: f64) -> bool {
        let host = hosts[idx];
        let watch = f64::from_bits(host.outlier.watch_latency.load(Ordering::Relaxed));
        if watch <= 0.0 || !host.health.is_ejected(now_ns) || looks_dead(host.outlier) {
            return false;
        }
        let Some(now) = serving_latency(hosts, now_ns) else { return false };
        // Against the fleet's calmest too: ejected while the others already
        // queued, half again the watched latency may lie past the client's
        // timeout, and the endpoint would stay out while they drown.
        let base = if calm_ns > 0.0 { watch.min(calm_ns) } else { watch };
        if now < CAPACITY_LATENCY_FACTOR * base || !host.health.readmit() {
            return false;
        }
        let state = host.outlier;
        state.watch_latency.store(0, Ordering::Relaxed);
        state.needed_until_ns.store(now_ns.saturating_add(nanos(self.cfg.base_ejection_time)), Ordering::Relaxed);
        state.probing.store(false, Ordering::Release);
        state.next_probe_ns.store(0, Ordering::Release);
        state.consecutive.store(0, Ordering::Release);
        tracing::info!(
            target: "ha::balance",
            latency_ms = now / 1e6,
            at_ejection_ms = watch / 1e6,
            "ejected endpoint readmitted: the endpoints in service cannot carry its load"
        );
        true
    }

    /// Whether the load needs `host` back although its advisory gate (its
    /// circuit breaker) keeps it out of selection: it still
    /// serves (not [`looks_dead`]), and the endpoints in selection, whose
    /// median latency estimate is `in_selection`, queue: it has reached
    /// `CAPACITY_LATENCY_FACTOR` times what it was when the gate was first
    /// seen keeping this one out, or times the fleet's calmest (`calm_ns`,
    /// see `Ejections`) if that was lower. A breaker's veto is an ejection by
    /// another name, and must no more remove capacity the load needs: two
    /// of four endpoints failing 40% of their requests open their breakers
    /// within a second of each other, and the two left queue without end
    /// under three quarters of the fleet's load. Once needed, the endpoint
    /// is kept (from ejection too) for `base_ejection_time`, as one
    /// [readmitted from an ejection](Self::needed_for_capacity) is, so
    /// that the next half-open probe that fails does not take it out again
    /// at once. Called at each plan recount for each vetoed endpoint.
    pub(crate) fn veto_needed_for_capacity(
        &self,
        host: &Host<'_>,
        now_ns: u64,
        in_selection: Option<f64>,
        calm_ns: f64,
    ) -> bool {
        let state = host.outlier;
        if looks_dead(state) {
            state.veto_watch.store(0, Ordering::Relaxed);
            return false;
        }
        if now_ns < state.needed_until_ns.load(Ordering::Relaxed) {
            return true;
        }
        let Some(latency) = in_selection.filter(|l| *l > 0.0) else { return false };
        let watch = f64::from_bits(state.veto_watch.load(Ordering::Relaxed));
        if watch <= 0.0 {
            state.veto_watch.store(latency.to_bits(), Ordering::Relaxed);
            return false;
        }
        // The fleet's calmest, if lower: a veto that began while the fleet
        // already queued (a second breaker opening as the first one's load
        // arrived) is judged against the fleet at rest.
        let base = if calm_ns > 0.0 { watch.min(calm_ns) } else { watch };
        if latency < CAPACITY_LATENCY_FACTOR * base {
            return false;
        }
        state.veto_watch.store(0, Ordering::Relaxed);
        state.needed_until_ns.store(now_ns.saturating_add(nanos(self.cfg.base_ejection_time)), Ordering::Relaxed);
        tracing::info!(
            target: "ha::balance",
            latency_ms = latency / 1e6,
            at_veto_ms = watch / 1e6,
            calm_ms = calm_ns / 1e6,
            "open breaker's veto set aside: the endpoints in selection cannot carry its load"
        );
        true
    }

    /// No gate keeps the endpoint out any more: the next veto is watched
    /// from its own start.
    pub(crate) fn veto_ended(&self, state: &OutlierState) {
        if state.veto_watch.load(Ordering::Relaxed) != 0 {
            state.veto_watch.store(0, Ordering::Relaxed);
        }
    }

    fn max_ejected(&self, hosts: usize) -> usize {
        if self.cfg.max_ejection_percent <= 0.0 || hosts == 0 {
            return 0;
        }
        ((hosts as f64 * self.cfg.max_ejection_percent / 100.0).floor() as usize).max(1)
    }

    /// Ejects `hosts[idx]` at `now_ns` for a run of consecutive failures
    /// (see [`Detector::eject_judged`]), unless its peers fail too: more
    /// than `max_peer_failure_rate` of their requests (the lower median of
    /// the other non-ejected endpoints, of every tier). A run of failures is
    /// then what their failure rate produces by chance; the interval rules
    /// still eject an endpoint much worse than such peers.
    pub(crate) fn try_eject(
        &self,
        hosts: &[Host<'_>],
        idx: usize,
        now_ns: u64,
        reason: EjectionReason,
    ) -> Option<Ejection> {
        if reason == EjectionReason::ConsecutiveFailures && self.chance_run(hosts[idx].outlier) {
            tracing::debug!(target: "ha::balance", "ejection refused: a run its own failure rate makes by chance");
            return None;
        }
        if reason == EjectionReason::ConsecutiveFailures && self.short_answered_run(hosts[idx].outlier) {
            tracing::debug!(target: "ha::balance", "ejection deferred: a run of errors answered at the usual latency");
            return None;
        }
        let peer_rate = match peer_failure_rate(hosts, idx, now_ns) {
            Peers::Unknown if self.first_run(hosts[idx].outlier) => {
                // A run of failures in a fleet's first milliseconds, before
                // busy peers' first outcomes tell whether they fail too:
                // the next run asks again, and is judged without them.
                tracing::debug!(target: "ha::balance", ?reason, "ejection deferred: the peers' first outcomes are on their way");
                return None;
            }
            Peers::Rate(_)
                if self.overload_onset(hosts, idx, now_ns, reason)
                    || self.slowest_of_a_loaded_fleet(hosts, idx, now_ns) =>
            {
                hosts[idx].outlier.onset_deferred.store(true, Ordering::Relaxed);
                // The first of an overloaded fleet to fail, by
                // milliseconds, or its slowest: judged again at its next run.
                tracing::debug!(target: "ha::balance", ?reason, "ejection deferred: its peers are as loaded as it is");
                return None;
            }
            Peers::Rate(p) => Some(p),
            Peers::Unknown | Peers::None => None,
        };
        let shared = peer_rate.is_some_and(|p| p > self.cfg.max_peer_failure_rate);
        if shared {
            tracing::debug!(target: "ha::balance", peer_rate, ?reason, "ejection refused: the peers share the failure");
            return None;
        }
        self.eject_judged(hosts, idx, now_ns, reason)
    }

    /// A run of failures the endpoint's own failure rate before it makes
    /// by chance, not a change: an endpoint that fails a quarter of its
    /// requests (a gray failure) fails five in a row once in a thousand,
    /// several times a minute at a hundred requests a second, and each
    /// such run would take out capacity that still serves three requests
    /// in four, which its peers may not be able to spare. The picker prices
    /// its failures, and the interval rules judge its rate against the
    /// fleet's, with their guards for capacity; a run the rate makes less
    /// often than once in `CHANCE_RUN` (a longer run, or the same run after
    /// a healthy spell: a crash) is judged as usual. Only for the P2C
    /// PeakEWMA picker, which sends such an endpoint less (pickers that do
    /// not price failures have only ejection to shed it), and only while an
    /// interval rule is on to judge the rate (with the consecutive rule
    /// alone, its runs are all the judgement there is).
    fn chance_run(&self, state: &OutlierState) -> bool {
        let judged_by_rate = self.cfg.interval_rules();
        let run = state.consecutive.load(Ordering::Relaxed);
        if !self.prices_latency
            || !judged_by_rate
            || self.cfg.consecutive_failures < CHANCE_MIN_RUN
            // Too few outcomes before the run to say what its rate was.
            || state.outcomes.load(Ordering::Relaxed) < run.saturating_add(OUTCOMES_CAP / 4)
            // Failing nearly everything, it serves nothing: no capacity to keep.
            || looks_dead(state)
        {
            return false;
        }
        // The recent rate as it was before the run: each failure of the run
        // moved it `1 / 2^RATE_SHIFT` of the way to 1.
        let keep = (1.0 - 1.0 / f64::from(1u32 << RATE_SHIFT)).powi(run as i32);
        let before = (1.0 - (1.0 - state.recent_failure_rate()) / keep).max(0.0);
        before.powi(run as i32) >= CHANCE_RUN
    }

    /// A run of errors that came back as answers after the usual latency,
    /// shorter than `ANSWERED_RUN_FACTOR` times the threshold. A crash
    /// refuses or resets connections (fast failures) and a hang is given up
    /// on; an endpoint that answers errors at its usual pace still serves,
    /// and a run of five is what an error rate of a half makes every 32
    /// requests: judged at once, such a run takes out half an endpoint's
    /// capacity at the start of the fault, when no latency yet says whether
    /// its peers can spare it (the lab's s47: one of three backends at 80%
    /// load answering half its requests with errors; the peers took its
    /// load and queued for seconds: 99.23% success, p99 239 ms, against
    /// 99.98% and 142 ms judged at 15, 10 seeds). A longer run (15 in a row at the default threshold:
    /// once in 30,000 at that rate) is an endpoint answering nothing but
    /// errors, and is judged as usual, as the interval rules judge its rate.
    /// Only for the P2C PeakEWMA picker, which times failures (to the
    /// others, an untimed failure is not known to be fast, and counts as
    /// slow) and prices them, and only while an interval rule is on to
    /// judge the rate (as for [`Self::chance_run`]).
    fn short_answered_run(&self, state: &OutlierState) -> bool {
        self.prices_latency
            && self.cfg.interval_rules()
            && state.answered_in_run.load(Ordering::Relaxed)
            && self.cfg.consecutive_failures >= CHANCE_MIN_RUN
            && state.consecutive.load(Ordering::Relaxed)
                < self.cfg.consecutive_failures.saturating_mul(ANSWERED_RUN_FACTOR)
    }

    /// The endpoint's current run of consecutive failures is its first
    /// crossing of the threshold.
    fn first_run(&self, state: &OutlierState) -> bool {
        state.consecutive.load(Ordering::Relaxed) < self.cfg.consecutive_failures.saturating_mul(2)
    }

    /// A run of failures that may be the first sign of a fleet-wide
    /// overload rather than a fault of the endpoint: it holds requests, and
    /// its peers (lower median, not ejected) hold at least half as many,
    /// their outcomes on their way. An overload shows first on one
    /// endpoint, by milliseconds: its queue is the first to fill and turn
    /// requests away (a first run of fast failures, deferred once an
    /// interval: with a threshold of 1 every run is a first one), or its
    /// queued requests the first to reach the callers' timeout, one by one,
    /// while its peers' still wait (failures slow and given up on, run after
    /// run, while the peers answer as slowly: their latency estimate at
    /// least a quarter of its own). Errors that come back after the usual
    /// latency are the endpoint's own, whatever its load. Ejected, its load
    /// would go to peers about to fail alike, and once the overload ends it
    /// would come back through slow start while they drain. A crashed endpoint holds nothing; a slow or hung one
    /// holds far more than its peers, or fails slowly while they answer
    /// fast (P2C evens out requests in flight where latency estimates do
    /// not tell endpoints apart, as while a hang's first requests wait).
    fn overload_onset(&self, hosts: &[Host<'_>], idx: usize, now_ns: u64, reason: EjectionReason) -> bool {
        let host = hosts[idx];
        // Slow, and given up on: a queue past its callers' patience. Slow
        // answers (an error after the usual latency) are a fault of its own.
        let slow =
            host.outlier.slow_in_run.load(Ordering::Relaxed) && !host.outlier.answered_in_run.load(Ordering::Relaxed);
        if reason != EjectionReason::ConsecutiveFailures
            || host.in_flight < ONSET_IN_FLIGHT
            || (!slow && !self.first_run(host.outlier))
        {
            return false;
        }
        if slow {
            loaded_alike(hosts, idx, now_ns)
        } else {
            !host.outlier.onset_deferred.load(Ordering::Relaxed) && peers_hold_as_many(hosts, idx, now_ns)
        }
    }

    /// An ejection of `hosts[idx]` for its run of failures would be
    /// deferred: its busy peers have not answered enough to say whether
    /// they fail too, or it is the first of an overloaded fleet to fail.
    pub(crate) fn deferred(&self, hosts: &[Host<'_>], idx: usize, now_ns: u64) -> bool {
        if self.chance_run(hosts[idx].outlier) || self.short_answered_run(hosts[idx].outlier) {
            return true;
        }
        match peer_failure_rate(hosts, idx, now_ns) {
            Peers::Unknown => self.first_run(hosts[idx].outlier),
            Peers::Rate(_) => {
                self.overload_onset(hosts, idx, now_ns, EjectionReason::ConsecutiveFailures)
                    || self.slowest_of_a_loaded_fleet(hosts, idx, now_ns)
            }
            Peers::None => false,
        }
    }

    /// The slowest endpoint of a loaded fleet, not a broken one: most of
    /// its failures are requests given up on (its callers' patience ran
    /// out while it queued them), and its peers are as loaded (see
    /// [`loaded_alike`]). Its failures are its share of an overload, and
    /// what it serves is capacity the others cannot spare: ejected, its
    /// load tips them past theirs, and with queues that serve what their
    /// callers gave up on, goodput collapses where it only thinned. The
    /// picker's latency pricing sends it less; a picker that does not
    /// price latency (and does not measure it) has only ejection to shed
    /// it, and keeps it. A hung endpoint's peers answer fast; a broken one
    /// fails with answers.
    fn slowest_of_a_loaded_fleet(&self, hosts: &[Host<'_>], idx: usize, now_ns: u64) -> bool {
        self.prices_latency && hosts[idx].outlier.gives_up_mostly() && loaded_alike(hosts, idx, now_ns)
    }

    /// Whether the interval rules leave `hosts[idx]` in because the fleet
    /// needs what it serves: it is the slowest of a loaded fleet (see
    /// [`Self::slowest_of_a_loaded_fleet`]), or it still serves (not
    /// [`looks_dead`]) while the fleet queues (see [`fleet_queues`]). Its
    /// load would go to endpoints already queueing, where the picker's
    /// price of its failures sends it less without taking all of it. Logs
    /// why, for `reason`.
    fn loaded(&self, hosts: &[Host<'_>], idx: usize, now_ns: u64, reason: EjectionReason, queueing: bool) -> bool {
        if self.slowest_of_a_loaded_fleet(hosts, idx, now_ns) {
            tracing::debug!(target: "ha::balance", ?reason, "ejection refused: the slowest of a loaded fleet");
            return true;
        }
        if queueing && !looks_dead(hosts[idx].outlier) {
            tracing::debug!(target: "ha::balance", ?reason, "ejection refused: it still serves, and the fleet queues");
            return true;
        }
        false
    }

    /// Does `hosts[idx]` fail alike with its peers (of every tier, not
    /// ejected): they fail more than `max_peer_failure_rate` (lower median)
    /// and it less than twice as often? Then a circuit breaker that opened
    /// on it judged a shared overload, not a bad endpoint.
    pub(crate) fn failure_shared(&self, hosts: &[Host<'_>], idx: usize, now_ns: u64) -> bool {
        if self.slowest_of_a_loaded_fleet(hosts, idx, now_ns) {
            return true;
        }
        let Peers::Rate(peer_rate) = peer_failure_rate(hosts, idx, now_ns) else { return false };
        let own =
            hosts[idx].outlier.estimated_failure_rate().unwrap_or_else(|| hosts[idx].outlier.recent_failure_rate());
        peer_rate > self.cfg.max_peer_failure_rate && own < SHARED_FACTOR * peer_rate
    }

    /// For the interval rules: is an endpoint failing `own_rate` of its
    /// requests sharing its peers' failure (`peer_rate`)? When they fail
    /// more than `max_peer_failure_rate` and it fails less than twice as often.
    fn shares(&self, own_rate: f64, peer_rate: Option<f64>, reason: EjectionReason) -> bool {
        let shared = peer_rate.is_some_and(|p| p > self.cfg.max_peer_failure_rate && own_rate < SHARED_FACTOR * p);
        if shared {
            tracing::debug!(
                target: "ha::balance",
                own_rate,
                peer_rate,
                ?reason,
                "ejection refused: the peers share the failure"
            );
        }
        shared
    }

    /// Ejects `hosts[idx]` at `now_ns` unless it is already ejected, the cap
    /// forbids it, or it would leave too little of its tier (capacity).
    /// Callers serialise ejections (a lock on this rare path) so two of them
    /// cannot both take the last place.
    fn eject_judged(&self, hosts: &[Host<'_>], idx: usize, now_ns: u64, reason: EjectionReason) -> Option<Ejection> {
        let host = hosts[idx];
        if host.health.is_ejected(now_ns) {
            return None;
        }
        let ejected = hosts.iter().filter(|h| h.health.is_ejected(now_ns)).count();
        if ejected >= self.max_ejected(hosts.len()) {
            return None;
        }
        // An endpoint that fails nearly everything carries no load, so taking
        // it out removes no capacity: only endpoints that still serve count.
        let dead = looks_dead(host.outlier);
        // Whether it still serves a share of its requests: the interval
        // rules judge a failure rate; a run of consecutive failures is a
        // crash's signature (the endpoint serves nothing now).
        let serves = !dead && reason != EjectionReason::ConsecutiveFailures;
        if !dead && now_ns < host.outlier.needed_until_ns.load(Ordering::Relaxed) {
            tracing::debug!(target: "ha::balance", ?reason, "ejection refused: its capacity is needed");
            return None;
        }
        if self.keep_available > 0.0 && !dead {
            let (tier_size, tier_ejected) = hosts
                .iter()
                .filter(|h| h.tier == host.tier)
                .fold((0usize, 0usize), |(n, e), h| (n + 1, e + usize::from(h.health.is_ejected(now_ns))));
            let left = tier_size - tier_ejected - 1;
            if (left as f64) < self.keep_available * tier_size as f64 {
                tracing::debug!(
                    target: "ha::balance",
                    tier = host.tier,
                    left,
                    tier_size,
                    ?reason,
                    "ejection refused: too little of the tier would remain"
                );
                return None;
            }
        }
        let times = host.outlier.multiplier.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        let duration = self
            .cfg
            .base_ejection_time
            .saturating_mul(times)
            .min(self.cfg.max_ejection_time.max(self.cfg.base_ejection_time));
        host.health.eject_until(now_ns.saturating_add(nanos(duration)));
        host.outlier.consecutive.store(0, Ordering::Release);
        let probing = reason == EjectionReason::ConsecutiveFailures && !self.cfg.probe_interval.is_zero();
        let probe_at = probing.then(|| now_ns.saturating_add(nanos(self.cfg.probe_interval)));
        host.outlier.probe_failures.store(0, Ordering::Relaxed);
        host.outlier.next_probe_ns.store(probe_at.unwrap_or(0), Ordering::Release);
        host.outlier.probing.store(probing, Ordering::Release);
        let watch = if serves { serving_latency(hosts, now_ns).unwrap_or(0.0) } else { 0.0 };
        host.outlier.watch_latency.store(watch.to_bits(), Ordering::Relaxed);
        Some(Ejection { host: idx, reason, duration, probe_at })
    }

    /// The interval rules over the counts since the last evaluation; resets
    /// those counts and forgives one ejection of every endpoint that was
    /// healthy through the interval. `queueing`: the fleet queues (see
    /// [`fleet_queues`]).
    pub(crate) fn evaluate(&self, hosts: &[Host<'_>], now_ns: u64, queueing: bool) -> Vec<Ejection> {
        let counts: Vec<(u64, u64)> = hosts
            .iter()
            .map(|h| {
                (h.outlier.interval_ok.swap(0, Ordering::AcqRel), h.outlier.interval_failed.swap(0, Ordering::AcqRel))
            })
            .collect();
        let mut out = Vec::new();
        if let Some(sr) = &self.cfg.success_rate {
            let judged: Vec<(usize, f64)> = counts
                .iter()
                .enumerate()
                .filter(|(i, (ok, failed))| ok + failed >= sr.request_volume && !hosts[*i].health.is_ejected(now_ns))
                .map(|(i, (ok, failed))| (i, *ok as f64 / (ok + failed) as f64))
                .collect();
            if judged.len() >= sr.minimum_hosts as usize && !judged.is_empty() {
                let n = judged.len() as f64;
                let mean = judged.iter().map(|(_, r)| r).sum::<f64>() / n;
                let var = judged.iter().map(|(_, r)| (r - mean) * (r - mean)).sum::<f64>() / n;
                let threshold = (mean - sr.stdev_factor * var.sqrt()).min(mean - sr.min_deficit);
                for &(i, rate) in &judged {
                    if rate < threshold {
                        let peers = peer_median(&judged, i, hosts, |r| 1.0 - r);
                        if !self.shares(1.0 - rate, peers, EjectionReason::SuccessRate)
                            && !self.loaded(hosts, i, now_ns, EjectionReason::SuccessRate, queueing)
                        {
                            out.extend(self.eject_judged(hosts, i, now_ns, EjectionReason::SuccessRate));
                        }
                    }
                }
            }
        }
        if let Some(fp) = &self.cfg.failure_percentage {
            let judged: Vec<(usize, f64)> = counts
                .iter()
                .enumerate()
                .filter(|(i, (ok, failed))| ok + failed >= fp.request_volume && !hosts[*i].health.is_ejected(now_ns))
                .map(|(i, (ok, failed))| (i, 100.0 * *failed as f64 / (ok + failed) as f64))
                .collect();
            if judged.len() >= fp.minimum_hosts as usize {
                for &(i, pct) in &judged {
                    let peers = peer_median(&judged, i, hosts, |p| p / 100.0);
                    // Against the whole tier, itself counted: when most of
                    // the fleet fails alike, that is the fleet's rate, not
                    // an outlier's (two of three failing 25%: ejecting one
                    // puts its load on the other and the one healthy
                    // endpoint, and they queue). One that serves next to
                    // nothing carries no load: judged against its peers.
                    let against = if pct / 100.0 >= DEAD_FAILURE_RATE {
                        peers
                    } else {
                        tier_median(&judged, i, hosts, |p| p / 100.0)
                    };
                    let relative = against.is_none_or(|p| pct / 100.0 >= self.cfg.peer_failure_factor * p);
                    let reason = EjectionReason::FailurePercentage;
                    if pct > fp.threshold
                        && relative
                        && !self.shares(pct / 100.0, peers, reason)
                        && !self.loaded(hosts, i, now_ns, reason, queueing)
                    {
                        out.extend(self.eject_judged(hosts, i, now_ns, reason));
                    }
                }
            }
        }
        for (i, h) in hosts.iter().enumerate() {
            // One deferred onset per interval.
            h.outlier.onset_deferred.store(false, Ordering::Relaxed);
            let ejected_now = out.iter().any(|e| e.host == i);
            if !ejected_now && !h.health.is_ejected(now_ns) {
                let m = h.outlier.multiplier.load(Ordering::Acquire);
                if m > 0 {
                    let _ = h.outlier.multiplier.compare_exchange(m, m - 1, Ordering::AcqRel, Ordering::Acquire);
                }
            }
        }
        out
    }
}

#[inline]
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The lower median failure rate of `hosts[idx]`'s peers: the others not
/// ejected, in every tier (when a whole tier fails, a zone lost, while the
/// next one serves, that is not a shared overload but a failover to make).
/// A busy peer that has not answered yet could be either: the median is
/// known only when it comes out the same with such peers counted as
/// failing everything and as failing nothing.
fn peer_failure_rate(hosts: &[Host<'_>], idx: usize, now_ns: u64) -> Peers {
    let mut known = Vec::with_capacity(hosts.len());
    let mut unknown = 0;
    for (_, h) in hosts.iter().enumerate().filter(|(i, h)| *i != idx && !h.health.is_ejected(now_ns)) {
        match h.outlier.peer_failure_rate(h.in_flight) {
            Some(rate) => known.push(rate),
            None => unknown += 1,
        }
    }
    if unknown == 0 {
        return lower_median(&mut known).map_or(Peers::None, Peers::Rate);
    }
    let with = |rate: f64| {
        let mut all = known.clone();
        all.extend(std::iter::repeat_n(rate, unknown));
        lower_median(&mut all)
    };
    match (with(0.0), with(1.0)) {
        (Some(low), Some(high)) if low == high => Peers::Rate(low),
        _ => Peers::Unknown,
    }
}

/// What an endpoint's peers say about their failures.
enum Peers {
    /// The lower median of their failure rates.
    Rate(f64),
    /// Busy peers that have not answered yet decide the median.
    Unknown,
    /// It has no peer (none other, or all ejected).
    None,
}

/// The median latency estimate of the endpoints in service, if any.
pub(crate) fn serving_latency(hosts: &[Host<'_>], now_ns: u64) -> Option<f64> {
    let mut latency: Vec<f64> =
        hosts.iter().filter(|h| !h.health.is_ejected(now_ns) && h.latency_ns > 0.0).map(|h| h.latency_ns).collect();
    latency.sort_by(f64::total_cmp);
    latency.get(latency.len().saturating_sub(1) / 2).copied()
}

/// Are `hosts[idx]`'s peers (lower median, not ejected) as loaded as it
/// is: holding at least half as many requests, and answering at least a
/// quarter as fast? A black hole or a server stuck on a queue of its own
/// holds far more than they do; a hung one answers far slower.
fn loaded_alike(hosts: &[Host<'_>], idx: usize, now_ns: u64) -> bool {
    if !peers_hold_as_many(hosts, idx, now_ns) {
        return false;
    }
    let mut latency: Vec<f64> = peers(hosts, idx, now_ns).map(|h| h.latency_ns).collect();
    lower_median(&mut latency).is_some_and(|m| LOADED_LATENCY_FACTOR * m >= hosts[idx].latency_ns)
}

/// Do `hosts[idx]`'s peers (lower median, not ejected) hold at least half
/// as many requests as it does?
fn peers_hold_as_many(hosts: &[Host<'_>], idx: usize, now_ns: u64) -> bool {
    let mut in_flight: Vec<f64> = peers(hosts, idx, now_ns).map(|h| h.in_flight as f64).collect();
    lower_median(&mut in_flight).is_some_and(|m| 2.0 * m >= hosts[idx].in_flight as f64)
}

/// The endpoints other than `hosts[idx]` that are not ejected.
fn peers<'a, 'h>(hosts: &'a [Host<'h>], idx: usize, now_ns: u64) -> impl Iterator<Item = &'a Host<'h>> {
    hosts.iter().enumerate().filter(move |&(i, h)| i != idx && !h.health.is_ejected(now_ns)).map(|(_, h)| h)
}

/// How many times slower than its peers an endpoint whose requests are
/// given up on may be and still be one of a loaded fleet (see
/// [`Detector::slowest_of_a_loaded_fleet`]): the factor a run of slow failures is
/// judged by too (`Detector::overload_onset`).
const LOADED_LATENCY_FACTOR: f64 = 4.0;

/// How far the latency of the endpoints in service may rise, against its
/// level when an endpoint that still served was ejected, before that
/// endpoint is readmitted for its capacity (see
/// [`Detector::needed_for_capacity`]). Half again: the median of the
/// peers' estimates rises so far only when they queue, and every
/// millisecond spent waiting for more is a queue on every one of them
/// (at twice, the lab's gray pools near capacity paid 4.5 to 7 ms more p99).
const CAPACITY_LATENCY_FACTOR: f64 = 1.5;

/// How much slower than at its calmest the fleet answers (median latency
/// estimate of the endpoints in service) when the interval rules stop
/// ejecting endpoints that still serve: it queues, and the others could
/// not carry their load.
const CARRY_FACTOR: f64 = 1.25;

/// Does the fleet queue: its median latency estimate now (`median`, see
/// [`serving_latency`]) `CARRY_FACTOR` times its calmest (`calm_ns`, kept
/// by the caller; 0: not known yet)?
pub(crate) fn fleet_queues(median: Option<f64>, calm_ns: f64) -> bool {
    calm_ns > 0.0 && median.is_some_and(|m| m >= CARRY_FACTOR * calm_ns)
}

/// An endpoint failing nearly everything: it carries no load, so leaving it
/// out removes no capacity.
pub(crate) fn looks_dead(state: &OutlierState) -> bool {
    state.recent_failure_rate() >= DEAD_FAILURE_RATE
}

/// How likely a run of failures must be, given the endpoint's failure
/// rate before it, to be judged chance (see [`Detector::chance_run`]):
/// once in ten thousand. A run of five is chance at a rate above 16%.
const CHANCE_RUN: f64 = 1e-4;

/// Mixed into a failed probe's time to draw the next one's jitter.
const PROBE_JITTER_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

/// The lowest consecutive-failure threshold [`Detector::chance_run`] acts
/// under: with a threshold of one or two, every failure counts as the
/// user asked.
const CHANCE_MIN_RUN: u32 = 3;

/// How many times the consecutive-failure threshold a run of errors
/// answered at the usual latency must reach before it is judged (see
/// [`Detector::short_answered_run`]).
const ANSWERED_RUN_FACTOR: u32 = 3;

/// Requests in flight from which a run of failures may be the first sign
/// of a fleet-wide overload rather than a fault of the endpoint (see
/// [`Detector::try_eject`]).
const ONSET_IN_FLIGHT: u64 = 4;

/// The lower median: with two peers, the better one, so that one bad peer
/// cannot make an endpoint's failure look shared.
fn lower_median(rates: &mut [f64]) -> Option<f64> {
    if rates.is_empty() {
        return None;
    }
    rates.sort_by(f64::total_cmp);
    Some(rates[(rates.len() - 1) / 2])
}

/// The lower median failure rate of the judged endpoints other than `idx`
/// in its tier; `failure` turns a judged value into a failure rate.
fn peer_median(judged: &[(usize, f64)], idx: usize, hosts: &[Host<'_>], failure: impl Fn(f64) -> f64) -> Option<f64> {
    median_in_tier(judged, idx, hosts, failure, false)
}

/// The lower median failure rate of the judged endpoints in `idx`'s tier,
/// `idx` included.
fn tier_median(judged: &[(usize, f64)], idx: usize, hosts: &[Host<'_>], failure: impl Fn(f64) -> f64) -> Option<f64> {
    median_in_tier(judged, idx, hosts, failure, true)
}

fn median_in_tier(
    judged: &[(usize, f64)],
    idx: usize,
    hosts: &[Host<'_>],
    failure: impl Fn(f64) -> f64,
    with_idx: bool,
) -> Option<f64> {
    let tier = hosts[idx].tier;
    let mut rates: Vec<f64> = judged
        .iter()
        .filter(|(i, _)| (with_idx || *i != idx) && hosts[*i].tier == tier)
        .map(|&(_, v)| failure(v))
        .collect();
    lower_median(&mut rates)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::config::{FailurePercentageConfig, SuccessRateConfig};

    const SEC: u64 = 1_000_000_000;

    struct Fleet {
        outlier: Vec<OutlierState>,
        health: Vec<Health>,
    }

    impl Fleet {
        fn new(n: usize) -> Self {
            Fleet {
                outlier: (0..n).map(|_| OutlierState::default()).collect(),
                health: (0..n).map(|_| Health::new(None)).collect(),
            }
        }
        fn hosts(&self) -> Vec<Host<'_>> {
            self.outlier
                .iter()
                .zip(&self.health)
                .map(|(outlier, health)| Host { outlier, health, tier: 0, in_flight: 0, latency_ns: 0.0 })
                .collect()
        }
    }

    /// One rule at a time: the interval rules are off unless a test turns one on.
    fn cfg() -> OutlierConfig {
        OutlierConfig { success_rate: None, failure_percentage: None, ..OutlierConfig::default() }
    }

    #[test]
    fn consecutive_failures_trip_once_at_the_threshold_and_success_resets() {
        let d = Detector::new(cfg());
        let s = OutlierState::default();
        for _ in 0..4 {
            assert!(!d.record_own(&s, true));
        }
        assert!(!d.record_own(&s, false));
        for _ in 0..4 {
            assert!(!d.record_own(&s, true));
        }
        assert!(d.record_own(&s, true), "fifth failure in a row");
        assert!(!d.record_own(&s, true), "the crossing is reported once");
    }

    #[test]
    fn ejection_time_grows_with_count_and_is_capped_and_forgiven() {
        let d = Detector::new(OutlierConfig { max_ejection_time: Duration::from_secs(70), ..cfg() });
        let f = Fleet::new(1);
        let hosts = f.hosts();
        let e = d.try_eject(&hosts, 0, SEC, EjectionReason::ConsecutiveFailures).unwrap();
        assert_eq!(e.duration, Duration::from_secs(30));
        assert!(f.health[0].is_ejected(SEC + 29 * SEC));
        assert!(!f.health[0].is_ejected(SEC + 30 * SEC));
        assert!(d.try_eject(&hosts, 0, 2 * SEC, EjectionReason::ConsecutiveFailures).is_none(), "already ejected");
        let e = d.try_eject(&hosts, 0, 40 * SEC, EjectionReason::ConsecutiveFailures).unwrap();
        assert_eq!(e.duration, Duration::from_secs(60));
        let e = d.try_eject(&hosts, 0, 200 * SEC, EjectionReason::ConsecutiveFailures).unwrap();
        assert_eq!(e.duration, Duration::from_secs(70), "capped");
        // Three healthy intervals forgive the three ejections.
        for k in 0..3 {
            assert!(d.evaluate(&hosts, 300 * SEC + k * 10 * SEC, false).is_empty());
        }
        let e = d.try_eject(&hosts, 0, 400 * SEC, EjectionReason::ConsecutiveFailures).unwrap();
        assert_eq!(e.duration, Duration::from_secs(30));
    }

    #[test]
    fn at_most_max_ejection_percent_but_always_one() {
        let d = Detector::new(cfg());
        let f = Fleet::new(25);
        let hosts = f.hosts();
        let ejected = (0..25).filter(|&i| d.try_eject(&hosts, i, SEC, EjectionReason::ConsecutiveFailures).is_some());
        assert_eq!(ejected.count(), 2, "10% of 25");
        let f = Fleet::new(3);
        let hosts = f.hosts();
        let ejected = (0..3).filter(|&i| d.try_eject(&hosts, i, SEC, EjectionReason::ConsecutiveFailures).is_some());
        assert_eq!(ejected.count(), 1, "one host even though 10% of 3 is 0");
        let zero = Detector::new(OutlierConfig { max_ejection_percent: 0.0, ..cfg() });
        assert!(zero.try_eject(&hosts, 2, SEC, EjectionReason::ConsecutiveFailures).is_none());
    }

    fn feed(d: &Detector, s: &OutlierState, ok: u64, failed: u64) {
        for _ in 0..ok {
            d.record_own(s, false);
        }
        for _ in 0..failed {
            d.record_own(s, true);
        }
    }

    #[test]
    fn success_rate_ejects_the_outlier_only_with_enough_hosts_and_volume() {
        let c = OutlierConfig {
            consecutive_failures: 0,
            max_ejection_percent: 50.0,
            success_rate: Some(SuccessRateConfig::default()),
            ..cfg()
        };
        let d = Detector::new(c);
        let f = Fleet::new(10);
        let hosts = f.hosts();
        for i in 0..9 {
            feed(&d, &f.outlier[i], 198, 2);
        }
        feed(&d, &f.outlier[9], 140, 60);
        let out = d.evaluate(&hosts, SEC, false);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].host, out[0].reason), (9, EjectionReason::SuccessRate));

        // Too little volume: nobody is judged.
        let f = Fleet::new(10);
        let hosts = f.hosts();
        for i in 0..9 {
            feed(&d, &f.outlier[i], 50, 0);
        }
        feed(&d, &f.outlier[9], 0, 50);
        assert!(d.evaluate(&hosts, SEC, false).is_empty());

        // Too few hosts: nobody is judged.
        let f = Fleet::new(4);
        let hosts = f.hosts();
        for i in 0..3 {
            feed(&d, &f.outlier[i], 200, 0);
        }
        feed(&d, &f.outlier[3], 0, 200);
        assert!(d.evaluate(&hosts, SEC, false).is_empty());
    }

    #[test]
    fn a_fleet_failing_one_percent_at_random_ejects_nobody() {
        // Ten endpoints at ~1% failures with binomial noise: 0.4% .. 1.8%.
        let d = Detector::new(OutlierConfig {
            consecutive_failures: 0,
            max_ejection_percent: 100.0,
            success_rate: Some(SuccessRateConfig::default()),
            ..cfg()
        });
        let f = Fleet::new(10);
        let hosts = f.hosts();
        for (i, failed) in [10u64, 4, 18, 9, 11, 7, 13, 10, 8, 10].into_iter().enumerate() {
            feed(&d, &f.outlier[i], 1000 - failed, failed);
        }
        assert!(d.evaluate(&hosts, SEC, false).is_empty());
        // Envoy's rule alone (no floor) ejects the unlucky one.
        let envoy = Detector::new(OutlierConfig {
            consecutive_failures: 0,
            max_ejection_percent: 100.0,
            success_rate: Some(SuccessRateConfig { min_deficit: 0.0, ..SuccessRateConfig::default() }),
            ..cfg()
        });
        let f = Fleet::new(10);
        let hosts = f.hosts();
        for (i, failed) in [10u64, 4, 18, 9, 11, 7, 13, 10, 8, 10].into_iter().enumerate() {
            feed(&envoy, &f.outlier[i], 1000 - failed, failed);
        }
        assert_eq!(envoy.evaluate(&hosts, SEC, false).iter().map(|e| e.host).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn the_counts_restart_every_interval() {
        let c = OutlierConfig { consecutive_failures: 0, success_rate: Some(SuccessRateConfig::default()), ..cfg() };
        let d = Detector::new(c);
        let f = Fleet::new(5);
        let hosts = f.hosts();
        for i in 0..4 {
            feed(&d, &f.outlier[i], 100, 0);
        }
        feed(&d, &f.outlier[4], 50, 50);
        assert_eq!(d.evaluate(&hosts, SEC, false).len(), 1);
        // Next interval: nothing new recorded, so nothing to judge.
        assert!(d.evaluate(&hosts, 11 * SEC, false).is_empty());
    }

    #[test]
    fn an_endpoint_that_still_serves_is_not_ejected_while_the_fleet_queues() {
        // Five endpoints in service answering in 30 ms; the first fails
        // `permille` of its requests. Ejected by the success-rate rule when
        // the fleet was at its calmest at `calm_ms`?
        let ejected = |permille: u64, calm_ms: f64| {
            let c =
                OutlierConfig { consecutive_failures: 0, success_rate: Some(SuccessRateConfig::default()), ..cfg() };
            let d = Detector::new(c);
            let f = Fleet::new(5);
            let hosts: Vec<Host<'_>> = f.hosts().into_iter().map(|h| Host { latency_ns: 30e6, ..h }).collect();
            for i in 1..5 {
                feed(&d, &f.outlier[i], 100, 0);
            }
            let failed = permille / 10;
            feed(&d, &f.outlier[0], 100 - failed, failed);
            let queueing = fleet_queues(serving_latency(&hosts, SEC), calm_ms * 1e6);
            !d.evaluate(&hosts, SEC, queueing).is_empty()
        };
        // Calm at 20 ms, the fleet queues: one that serves half its requests
        // is capacity the others cannot spare...
        assert!(!ejected(500, 20.0));
        // ...one that serves none carries no load.
        assert!(ejected(1000, 20.0));
        // Calm at 28 ms, or not known: judged as usual.
        assert!(ejected(500, 28.0));
        assert!(ejected(500, 0.0));
    }

    #[test]
    fn failure_percentage_rule() {
        let c = OutlierConfig {
            consecutive_failures: 0,
            max_ejection_percent: 100.0,
            failure_percentage: Some(FailurePercentageConfig {
                minimum_hosts: 3,
                ..FailurePercentageConfig::default()
            }),
            ..cfg()
        };
        let d = Detector::new(c);
        let f = Fleet::new(3);
        let hosts = f.hosts();
        feed(&d, &f.outlier[0], 50, 0);
        feed(&d, &f.outlier[1], 10, 90);
        feed(&d, &f.outlier[2], 9, 41); // 82%: under the 85% threshold
        let out = d.evaluate(&hosts, SEC, false);
        assert_eq!(
            out.iter().map(|e| (e.host, e.reason)).collect::<Vec<_>>(),
            vec![(1, EjectionReason::FailurePercentage)]
        );
    }
}

#[cfg(all(test, not(loom)))]
mod judgement_tests {
    //! The guards of issue 13, on the sans-IO detector with explicit times.
    use super::*;
    use crate::config::{FailurePercentageConfig, SuccessRateConfig};

    const SEC: u64 = 1_000_000_000;

    type Fleet = (Vec<OutlierState>, Vec<Health>);

    fn fleet(n: usize) -> Fleet {
        ((0..n).map(|_| OutlierState::default()).collect(), (0..n).map(|_| Health::new(None)).collect())
    }

    fn hosts(f: &Fleet) -> Vec<Host<'_>> {
        f.0.iter()
            .zip(&f.1)
            .map(|(outlier, health)| Host { outlier, health, tier: 0, in_flight: 0, latency_ns: 0.0 })
            .collect()
    }

    /// A detector on consecutive failures and a fleet of `n` whose first
    /// endpoint has just failed five times in a row, each of the others
    /// having seen `outcomes` outcomes, failing `permille` of them.
    fn first_fails_five_in_a_row(n: usize, outcomes: u64, permille: u64) -> (Detector, Fleet) {
        let d = Detector::new(consecutive_only());
        let f = fleet(n);
        for s in &f.0[1..] {
            feed(&d, s, outcomes, permille);
        }
        feed(&d, &f.0[0], 5, 1000);
        (d, f)
    }

    /// The hosts of `f`, the first with `own` requests in flight, the others `peers` each.
    fn loaded(f: &Fleet, own: u64, peers: u64) -> Vec<Host<'_>> {
        hosts(f)
            .into_iter()
            .enumerate()
            .map(|(i, h)| Host { in_flight: if i == 0 { own } else { peers }, ..h })
            .collect()
    }

    /// Feeds `n` outcomes, failing `fail_permille` of them, evenly spread.
    fn feed(d: &Detector, s: &OutlierState, n: u64, fail_permille: u64) -> bool {
        let mut crossed = false;
        for k in 0..n {
            crossed |= d.record_own(s, (k * fail_permille) % 1000 + fail_permille >= 1000);
        }
        crossed
    }

    fn consecutive_only() -> OutlierConfig {
        OutlierConfig {
            success_rate: None,
            failure_percentage: None,
            max_ejection_percent: 100.0,
            ..Default::default()
        }
    }

    #[test]
    fn a_run_of_failures_that_the_peers_share_ejects_nobody() {
        let d = Detector::new(consecutive_only());
        let f = fleet(5);
        let h = hosts(&f);
        for s in &f.0 {
            feed(&d, s, 200, 400);
        }
        // Five in a row at 40%: what the fleet's rate produces by chance.
        for _ in 0..5 {
            d.record_own(&f.0[0], true);
        }
        assert!(d.try_eject(&h, 0, SEC, EjectionReason::ConsecutiveFailures).is_none());
        // The same run while the peers succeed: ejected.
        let f = fleet(5);
        let h = hosts(&f);
        for s in &f.0[1..] {
            feed(&d, s, 200, 0);
        }
        assert!(d.try_eject(&h, 0, SEC, EjectionReason::ConsecutiveFailures).is_some());
    }

    #[test]
    fn a_whole_tier_failing_while_an_idle_one_stands_by_is_not_a_shared_failure() {
        // A zone lost: its three endpoints fail everything; the standby
        // tier has served nothing yet. Its idle endpoints have not failed,
        // so the failure is not shared and the breakers' veto stands.
        let d = Detector::new(consecutive_only());
        let f = fleet(6);
        let h: Vec<Host<'_>> =
            hosts(&f).into_iter().enumerate().map(|(i, h)| Host { tier: u8::from(i >= 3), ..h }).collect();
        for s in &f.0[..3] {
            feed(&d, s, 40, 1000);
        }
        assert!(!d.failure_shared(&h, 0, SEC), "the standby tier's endpoints are peers that do not fail");
    }

    #[test]
    fn a_fleet_shedding_from_its_first_requests_ejects_nobody() {
        // Five failures in a row on one endpoint, while each peer has seen
        // only its first `n` outcomes, failing `permille` of them: ejected?
        let ejected = |n: u64, permille: u64| {
            let (d, f) = first_fails_five_in_a_row(5, n, permille);
            d.try_eject(&hosts(&f), 0, SEC, EjectionReason::ConsecutiveFailures).is_some()
        };
        // Peers shedding 3 of their first 8: the failure is shared (on the
        // raw recent rate, which starts at zero, they read about 0.1).
        assert!(!ejected(8, 375));
        // Peers that have seen almost nothing count as not failing: a crash
        // at start is still ejected.
        assert!(ejected(1, 1000));
    }

    #[test]
    fn a_run_of_errors_answered_at_the_usual_latency_is_judged_once_it_is_long() {
        // Five failures in a row among healthy, idle peers; `answered`: each
        // came back as an error after the usual latency. Then `more` runs
        // of five. Ejected?
        // With an interval rule on to judge the rate (the defaults).
        let ejected = |answered: bool, more: u32| {
            let d = Detector::new(OutlierConfig { max_ejection_percent: 100.0, ..Default::default() });
            let f = fleet(4);
            for s in &f.0[1..] {
                feed(&d, s, 40, 0);
            }
            feed(&d, &f.0[0], 5, 1000);
            let h = loaded(&f, 2, 2);
            if answered {
                f.0[0].answered_slowly();
            }
            let mut out = d.try_eject(&h, 0, SEC, EjectionReason::ConsecutiveFailures).is_some();
            for _ in 0..more {
                feed(&d, &f.0[0], 5, 1000);
                out |= d.try_eject(&h, 0, SEC, EjectionReason::ConsecutiveFailures).is_some();
            }
            out
        };
        // A crash's refusals: ejected at the threshold.
        assert!(ejected(false, 0));
        // Errors answered at the usual pace: a run of five or ten is what
        // an endpoint failing half its requests makes by chance...
        assert!(!ejected(true, 0));
        assert!(!ejected(true, 1));
        // ...fifteen is one answering nothing but errors.
        assert!(ejected(true, 2));
    }

    #[test]
    fn the_first_endpoint_to_fail_in_an_overloaded_fleet_is_not_ejected() {
        // `runs` runs of five failures in a row (`slow`: given up on after
        // the callers' timeout) on an endpoint holding `own` requests,
        // whose latency estimate is 1 s, its peers (healthy so far: their
        // outcomes are on their way) each holding `peers` and answering in
        // `peer_ms`. Ejected?
        #[derive(PartialEq, Clone, Copy)]
        enum Failures {
            Fast,
            SlowAnswers,
            GivenUp,
        }
        use Failures::*;
        let ejected = |own: u64, peers: u64, slow: Failures, runs: u32, peer_ms: f64| {
            let (d, f) = first_fails_five_in_a_row(4, 40, 0);
            let h: Vec<Host<'_>> = loaded(&f, own, peers)
                .into_iter()
                .enumerate()
                .map(|(i, h)| Host { latency_ns: if i == 0 { 1e9 } else { peer_ms * 1e6 }, ..h })
                .collect();
            let mut out = false;
            for run in 0..runs {
                if run > 0 {
                    feed(&d, &f.0[0], 5, 1000);
                }
                match slow {
                    Fast => {}
                    SlowAnswers => f.0[0].answered_slowly(),
                    GivenUp => f.0[0].failed_slowly(),
                }
                out |= d.try_eject(&h, 0, SEC, EjectionReason::ConsecutiveFailures).is_some();
            }
            out
        };
        // The first queue to fill turns requests away while its peers are
        // as loaded: the onset of an overload, not a failure of its own...
        assert!(!ejected(8, 7, Fast, 1, 20.0));
        // ...but a second run of fast failures is judged on the peers'
        // outcomes, which say they do not fail.
        assert!(ejected(8, 7, Fast, 2, 20.0));
        // The first queue whose requests reach the callers' timeout, run
        // after run, while its peers hold as many and answer as slowly
        // (their queues about to time out too): not ejected.
        assert!(!ejected(200, 230, GivenUp, 4, 700.0));
        // Errors after the usual latency, among peers as loaded: its own
        // fault, judged at the second run.
        assert!(ejected(200, 230, SlowAnswers, 2, 700.0));
        // Its peers idle beside it, a crash (nothing in flight), a black
        // hole (far more in flight than its peers), a hang whose requests
        // P2C kept as few as its peers' while they answer in 20 ms: its own
        // failure.
        assert!(ejected(8, 2, Fast, 1, 20.0));
        assert!(ejected(0, 7, Fast, 1, 20.0));
        assert!(ejected(40, 7, GivenUp, 1, 20.0));
        assert!(ejected(8, 7, GivenUp, 1, 20.0));
    }

    #[test]
    fn the_slowest_endpoint_of_a_loaded_fleet_is_not_ejected() {
        // Ten endpoints; the first fails 80% of an interval's requests, its
        // latency estimate 1 s, its peers none, answering in `peer_ms`.
        // `given_up`: its failures are requests its callers gave up on.
        // Ejected by the success-rate rule? Shared, for its breaker?
        let judged = |peer_ms: f64, given_up: bool| {
            let d =
                Detector::new(OutlierConfig { success_rate: Some(SuccessRateConfig::default()), ..consecutive_only() });
            let f = fleet(10);
            for s in &f.0[1..] {
                feed(&d, s, 200, 0);
            }
            for k in 0..200u64 {
                let failed = k % 5 != 0;
                Detector::record(&f.0[0], failed, 0);
                if failed {
                    f.0[0].failed_given_up(given_up);
                }
            }
            let h: Vec<Host<'_>> = hosts(&f)
                .into_iter()
                .enumerate()
                .map(|(i, h)| Host { latency_ns: if i == 0 { 1e9 } else { peer_ms * 1e6 }, ..h })
                .collect();
            let shared = d.failure_shared(&h, 0, SEC);
            (!d.evaluate(&h, 10 * SEC, false).is_empty(), shared)
        };
        // Its peers queue too (880 ms): it is the slowest of an overloaded
        // fleet, whose load the others cannot take.
        assert_eq!(judged(880.0, true), (false, true));
        // A hang: its peers answer in 20 ms.
        assert_eq!(judged(20.0, true), (true, false));
        // It fails with answers: broken, however slow the others.
        assert_eq!(judged(880.0, false), (true, false));
    }

    #[test]
    fn a_run_of_failures_its_own_failure_rate_makes_by_chance_does_not_eject() {
        // Three endpoints, the peers healthy. The first fails `permille` of
        // 200 requests spread evenly, then `run` in a row: ejected? `rates`:
        // an interval rule is on.
        let ejected = |permille: u64, run: u64, prices_latency: bool, rates: bool| {
            let fleet_relative = rates.then(FailurePercentageConfig::fleet_relative);
            let cfg = OutlierConfig { failure_percentage: fleet_relative, ..consecutive_only() };
            let d = Detector::new(cfg).prices_latency(prices_latency);
            let f = fleet(3);
            for s in &f.0[1..] {
                feed(&d, s, 200, 0);
            }
            feed(&d, &f.0[0], 200, permille);
            // Ends the spread's own run, if it ended on a failure.
            d.record_own(&f.0[0], false);
            let mut out = false;
            for _ in 0..run {
                if d.record_own(&f.0[0], true) {
                    out |= d.try_eject(&hosts(&f), 0, SEC, EjectionReason::ConsecutiveFailures).is_some();
                }
            }
            out
        };
        // A gray failure of a quarter of its requests: five in a row happen
        // once in a thousand, by chance, and do not eject it...
        assert!(!ejected(250, 5, true, true));
        assert!(!ejected(400, 5, true, true));
        // ...ten do (as a crash of it would: the run goes on).
        assert!(ejected(250, 10, true, true));
        // One failing nearly everything serves nothing: no capacity to keep.
        assert!(ejected(950, 5, true, true));
        // A healthy endpoint's first run, or one failing 5%: a change.
        assert!(ejected(0, 5, true, true));
        assert!(ejected(50, 5, true, true));
        // A picker that does not price failures sheds it only by ejection.
        assert!(ejected(250, 5, false, true));
        // With no interval rule to judge its rate, its runs are all there is.
        assert!(ejected(250, 5, true, false));
    }

    #[test]
    fn busy_peers_count_from_their_first_outcome() {
        // Five failures in a row on one endpoint in a fleet's first
        // milliseconds, while each peer, with `in_flight` requests, has seen
        // only its first `n` outcomes, failing `permille` of them: ejected?
        let ejected = |n: u64, permille: u64, in_flight: u64| {
            let (d, f) = first_fails_five_in_a_row(5, n, permille);
            // The failing endpoint refuses at once: nothing in flight.
            d.try_eject(&loaded(&f, 0, in_flight), 0, SEC, EjectionReason::ConsecutiveFailures).is_some()
        };
        // Busy peers that shed one of their first three: the failure is
        // shared (an overloaded fleet from its first requests). Idle ones
        // with the same few outcomes read as not failing.
        assert!(!ejected(3, 334, 4));
        assert!(ejected(3, 334, 0));
        // Busy peers none of whose requests has answered yet: deferred...
        assert!(!ejected(0, 0, 4));
        // Busy peers whose first answers succeed: a crash at start is
        // ejected at once.
        assert!(ejected(2, 0, 4));
    }

    #[test]
    fn a_deferred_ejection_is_decided_at_the_next_run() {
        // ...and the endpoint's next run of failures is judged without them.
        let d = Detector::new(consecutive_only());
        let f = fleet(5);
        let h: Vec<Host<'_>> = hosts(&f).into_iter().map(|h| Host { in_flight: 4, ..h }).collect();
        feed(&d, &f.0[0], 5, 1000);
        assert!(d.try_eject(&h, 0, SEC, EjectionReason::ConsecutiveFailures).is_none(), "deferred");
        assert!(d.deferred(&h, 0, SEC));
        feed(&d, &f.0[0], 5, 1000);
        assert!(!d.deferred(&h, 0, SEC));
        assert!(d.try_eject(&h, 0, SEC, EjectionReason::ConsecutiveFailures).is_some(), "the next run ejects");
    }

    #[test]
    fn a_lost_tier_is_no_shared_failure_while_the_next_takes_its_first_requests() {
        // A zone lost: its three endpoints fail everything, and failover
        // has just sent the standby tier its first requests, none answered.
        // Its endpoints could fail or not: the lost tier's failure is not
        // judged shared on its own peers' word.
        let d = Detector::new(consecutive_only());
        let f = fleet(6);
        let h: Vec<Host<'_>> = hosts(&f)
            .into_iter()
            .enumerate()
            .map(|(i, h)| Host { tier: u8::from(i >= 3), in_flight: u64::from(i >= 3), ..h })
            .collect();
        for s in &f.0[..3] {
            feed(&d, s, 40, 1000);
        }
        assert!(!d.failure_shared(&h, 0, SEC), "the breakers' vetoes stand");
        // Once the standby tier answers, it is a peer that does not fail.
        for s in &f.0[3..] {
            feed(&d, s, 4, 0);
        }
        assert!(!d.failure_shared(&h, 0, SEC));
        assert!(d.try_eject(&h, 0, SEC, EjectionReason::ConsecutiveFailures).is_some());
    }

    #[test]
    fn the_lower_median_keeps_one_bad_peer_from_shielding_another() {
        // Two of three endpoints dead: the better peer of each succeeds.
        let d = Detector::new(consecutive_only());
        let f = fleet(3);
        let h = hosts(&f);
        feed(&d, &f.0[0], 100, 1000);
        feed(&d, &f.0[1], 100, 1000);
        feed(&d, &f.0[2], 100, 0);
        assert!(d.try_eject(&h, 0, SEC, EjectionReason::ConsecutiveFailures).is_some());
    }

    #[test]
    fn later_multiples_of_the_threshold_ask_again() {
        let d = Detector::new(consecutive_only());
        let s = OutlierState::default();
        let crossings: Vec<u32> = (1..=16).filter(|_| d.record_own(&s, true)).collect::<Vec<_>>();
        assert_eq!(crossings, vec![5, 10, 15]);
    }

    #[test]
    fn ejections_stop_at_the_capacity_floor_whatever_the_cap() {
        let d = Detector::new(consecutive_only()).keep_available(0.5);
        let f = fleet(10);
        let h = hosts(&f);
        let ejected = (0..10).filter(|&i| d.try_eject(&h, i, SEC, EjectionReason::ConsecutiveFailures).is_some());
        assert_eq!(ejected.count(), 5, "half the tier stays");
        // The only endpoint of a tier is never ejected.
        let f = fleet(1);
        assert!(d.try_eject(&hosts(&f), 0, SEC, EjectionReason::ConsecutiveFailures).is_none());
        // Tiers count apart: a full tier 1 does not shield tier 0.
        let f = fleet(4);
        let mut h = hosts(&f);
        h[2].tier = 1;
        h[3].tier = 1;
        assert!(d.try_eject(&h, 0, SEC, EjectionReason::ConsecutiveFailures).is_some());
        assert!(d.try_eject(&h, 1, SEC, EjectionReason::ConsecutiveFailures).is_none());
        assert!(d.try_eject(&h, 2, SEC, EjectionReason::ConsecutiveFailures).is_some());
    }

    #[test]
    fn probes_are_spaced_out_while_they_fail_and_a_success_readmits() {
        let d = Detector::new(consecutive_only());
        let f = fleet(3);
        let h = hosts(&f);
        let e = d.try_eject(&h, 0, 10 * SEC, EjectionReason::ConsecutiveFailures).unwrap();
        assert_eq!(e.probe_at, Some(11 * SEC), "first probe one probe_interval after the ejection");
        assert!(!d.claim_probe(&f.0[0], 11 * SEC - 1), "not before its time");
        assert!(d.claim_probe(&f.0[0], 11 * SEC));
        assert!(!d.claim_probe(&f.0[0], 11 * SEC), "one probe per probe time");
        // Failed probes: spaced by half to all of `max_probe_interval`
        // (drawn down by up to half), and the ejection outlives the next probe.
        let max = nanos(d.cfg.max_probe_interval);
        let next = |v: ProbeVerdict| match v {
            ProbeVerdict::Failed { next_probe_ns } => next_probe_ns,
            other => panic!("{other:?}"),
        };
        let mut t = 11 * SEC;
        let mut spacings = Vec::new();
        // Past the 30 s ejection, still ejected while its probes fail.
        while t < 60 * SEC {
            // The probe at 11 s is claimed above.
            assert!(t == 11 * SEC || d.claim_probe(&f.0[0], t), "{t}");
            let at = next(d.probe_outcome(h[0], false, t));
            assert!((max / 2..=max).contains(&(at - t)), "{}", at - t);
            assert!(f.1[0].is_ejected(at), "ejected until its next probe");
            assert!(!d.claim_probe(&f.0[0], at - 1), "not before its time");
            spacings.push(at - t);
            t = at;
        }
        // Drawn, not fixed: probes do not keep one phase against a fault
        // that comes and goes on a period.
        assert!(spacings.iter().any(|&s| s != spacings[0]), "{spacings:?}");
        assert!(d.claim_probe(&f.0[0], t));
        assert_eq!(d.probe_outcome(h[0], true, t), ProbeVerdict::Readmitted);
        assert!(!f.1[0].is_ejected(t));
        assert_eq!(f.0[0].next_probe(), None);
        assert_eq!(d.probe_outcome(h[0], true, t), ProbeVerdict::Stale, "readmitted once");
    }

    #[test]
    fn an_ejection_while_the_others_already_queue_is_undone_against_their_calmest() {
        // Endpoint 0 of two is ejected while endpoint 1 already answers in
        // 300 ms (its calmest: 20 ms). Half again 300 ms may never come before
        // the client's timeout; 100 ms, five times its calmest, is queueing.
        let run = |calm_ns: f64| {
            let d = Detector::new(consecutive_only());
            let f = fleet(2);
            let at = |ms: f64| -> Vec<Host<'_>> {
                hosts(&f).into_iter().map(|h| Host { latency_ns: ms * 1e6, ..h }).collect()
            };
            assert!(d.try_eject(&at(300.0), 0, SEC, EjectionReason::FailurePercentage).is_some());
            d.needed_for_capacity(&at(100.0), 0, 2 * SEC, calm_ns)
        };
        assert!(run(20e6), "not readmitted although the other answers five times slower than at its calmest");
        // Calmest not known yet: the watched latency alone decides.
        assert!(!run(0.0));
    }

    #[test]
    fn an_ejection_the_others_cannot_carry_is_undone() {
        // Endpoint 0 of three is ejected at 1 s while its peers answer in
        // 20 ms; at 2 s they answer in `later_ms`. Readmitted for its
        // capacity? Ejected again at 3 s?
        let run = |reason: EjectionReason, later_ms: f64, dead: bool| {
            let d = Detector::new(consecutive_only());
            let f = fleet(3);
            if dead {
                feed(&d, &f.0[0], 200, 1000);
            }
            let at = |ms: f64| -> Vec<Host<'_>> {
                hosts(&f).into_iter().map(|h| Host { latency_ns: ms * 1e6, ..h }).collect()
            };
            assert!(d.try_eject(&at(20.0), 0, SEC, reason).is_some());
            let readmitted = d.needed_for_capacity(&at(later_ms), 0, 2 * SEC, 0.0);
            assert_eq!(readmitted, !f.1[0].is_ejected(2 * SEC));
            let again = d.try_eject(&at(later_ms), 0, 3 * SEC, reason).is_some();
            (readmitted, again)
        };
        // A gray endpoint (judged on its failure rate, serving the rest)
        // whose load queues on the two left: back at once, and kept in
        // while its capacity is needed.
        assert_eq!(run(EjectionReason::FailurePercentage, 40.0, false), (true, false));
        assert_eq!(run(EjectionReason::SuccessRate, 40.0, false), (true, false));
        // The others carry it (their latency up by less than half): it stays out.
        assert_eq!(run(EjectionReason::FailurePercentage, 28.0, false), (false, false));
        // A crash (a run of consecutive failures) or an endpoint failing
        // nearly everything adds no capacity: never readmitted for it.
        assert_eq!(run(EjectionReason::ConsecutiveFailures, 100.0, false), (false, false));
        assert_eq!(run(EjectionReason::FailurePercentage, 100.0, true), (false, false));
    }

    #[test]
    fn a_breakers_veto_is_set_aside_when_the_endpoints_in_selection_queue() {
        // Endpoint 0's breaker keeps it out from 1 s, when the endpoints in
        // selection answer in `at_veto_ms` (the fleet's calmest: 20 ms); at
        // 2 s they answer in `later_ms`. Set aside for capacity? And at 3 s,
        // once they are calm again?
        let run = |at_veto_ms: f64, later_ms: f64, dead: bool| {
            let d = Detector::new(consecutive_only());
            let f = fleet(3);
            if dead {
                feed(&d, &f.0[0], 200, 1000);
            }
            let h = hosts(&f);
            let calm = 20e6;
            assert!(!d.veto_needed_for_capacity(&h[0], SEC, Some(at_veto_ms * 1e6), calm), "watched from its start");
            let needed = d.veto_needed_for_capacity(&h[0], 2 * SEC, Some(later_ms * 1e6), calm);
            let held = d.veto_needed_for_capacity(&h[0], 3 * SEC, Some(20e6), calm);
            (needed, held)
        };
        // Their latency up by half or more: taken back, and kept while base_ejection_time runs.
        assert_eq!(run(20.0, 30.0, false), (true, true));
        assert_eq!(run(20.0, 40.0, false), (true, true));
        // They carry its load (up by less than half): the veto holds.
        assert_eq!(run(20.0, 28.0, false), (false, false));
        // A veto that began as they already queued is judged against the fleet's calmest.
        assert_eq!(run(35.0, 45.0, false), (true, true));
        // An endpoint failing nearly everything adds no capacity.
        assert_eq!(run(20.0, 100.0, true), (false, false));
        // The veto ended: the next one is watched from its own start.
        let d = Detector::new(consecutive_only());
        let f = fleet(3);
        let h = hosts(&f);
        assert!(!d.veto_needed_for_capacity(&h[0], SEC, Some(20e6), 0.0));
        d.veto_ended(&f.0[0]);
        assert!(!d.veto_needed_for_capacity(&h[0], 2 * SEC, Some(40e6), 0.0), "a new watch, not the old one");
        assert!(d.veto_needed_for_capacity(&h[0], 3 * SEC, Some(80e6), 0.0));
    }

    #[test]
    fn interval_rule_ejections_are_not_probed() {
        let d = Detector::new(consecutive_only());
        let f = fleet(3);
        let e = d.try_eject(&hosts(&f), 0, SEC, EjectionReason::FailurePercentage).unwrap();
        assert_eq!(e.probe_at, None);
        assert!(!d.claim_probe(&f.0[0], 100 * SEC));
    }

    /// The fleet-relative failure-percentage rule alone.
    fn failure_percentage_only() -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: 0,
            success_rate: None,
            failure_percentage: Some(FailurePercentageConfig::fleet_relative()),
            ..OutlierConfig::default()
        }
    }

    #[test]
    fn failure_percentage_is_judged_against_the_peers() {
        let d = Detector::new(failure_percentage_only());
        // One of three failing 20%, the others 1%: ejected.
        let f = fleet(3);
        feed(&d, &f.0[0], 500, 200);
        feed(&d, &f.0[1], 500, 10);
        feed(&d, &f.0[2], 500, 10);
        let out = d.evaluate(&hosts(&f), 10 * SEC, false);
        assert_eq!(
            out.iter().map(|e| (e.host, e.reason)).collect::<Vec<_>>(),
            vec![(0, EjectionReason::FailurePercentage)]
        );
        // All three failing 20%: nobody.
        let f = fleet(3);
        for s in &f.0 {
            feed(&d, s, 500, 200);
        }
        assert!(d.evaluate(&hosts(&f), 10 * SEC, false).is_empty());
        // Two endpoints suffice.
        let f = fleet(2);
        feed(&d, &f.0[0], 500, 200);
        feed(&d, &f.0[1], 500, 0);
        assert_eq!(d.evaluate(&hosts(&f), 10 * SEC, false).len(), 1);
    }

    #[test]
    fn failure_percentage_spares_a_rate_most_of_the_fleet_shares() {
        let d = Detector::new(OutlierConfig { max_ejection_percent: 100.0, ..failure_percentage_only() });
        // Two of three failing 25%, the third healthy: the fleet's rate, not
        // an outlier's; ejecting one would load the other and the healthy one.
        let f = fleet(3);
        feed(&d, &f.0[0], 400, 250);
        feed(&d, &f.0[1], 400, 250);
        feed(&d, &f.0[2], 400, 0);
        assert!(d.evaluate(&hosts(&f), 10 * SEC, false).is_empty());
        // One serving next to nothing is ejected all the same.
        let f = fleet(3);
        feed(&d, &f.0[0], 400, 950);
        feed(&d, &f.0[1], 400, 250);
        feed(&d, &f.0[2], 400, 0);
        assert_eq!(d.evaluate(&hosts(&f), 10 * SEC, false).iter().map(|e| e.host).collect::<Vec<_>>(), vec![0]);
    }
}

/// Loom models of the counters above; run by CI with
/// `RUSTFLAGS="--cfg loom" cargo test --release -p ha-balance --lib loom_models`.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn at_most_one_of_racing_failures_crosses_the_consecutive_threshold() {
        loom::model(|| {
            // Threshold 3, four failures from two threads and a success racing
            // with them: no two callers may both see the crossing (both would
            // try to eject the endpoint).
            let detector =
                Arc::new(Detector::new(OutlierConfig { consecutive_failures: 3, ..OutlierConfig::default() }));
            let state = Arc::new(OutlierState::default());
            let racer = |success: bool| {
                let (detector, state) = (detector.clone(), state.clone());
                loom::thread::spawn(move || {
                    if success {
                        detector.record_own(&state, false);
                    }
                    (0..2).map(|_| usize::from(detector.record_own(&state, true))).sum::<usize>()
                })
            };
            let (a, b) = (racer(false), racer(true));
            let crossed = a.join().unwrap() + b.join().unwrap();
            assert!(crossed <= 1, "{crossed} callers saw the crossing");
        });
    }

    const SEC: u64 = 1_000_000_000;

    /// An endpoint ejected at 1 s for consecutive failures, first probe due at 2 s.
    fn ejected() -> (Arc<Detector>, Arc<OutlierState>, Arc<Health>) {
        let detector = Arc::new(Detector::new(OutlierConfig { consecutive_failures: 1, ..OutlierConfig::default() }));
        let (state, health) = (Arc::new(OutlierState::default()), Arc::new(Health::new(None)));
        let hosts = [Host { outlier: &state, health: &health, tier: 0, in_flight: 0, latency_ns: 0.0 }];
        assert!(detector.try_eject(&hosts, 0, SEC, EjectionReason::ConsecutiveFailures).is_some());
        (detector, state, health)
    }

    #[test]
    fn exactly_one_of_racing_pickers_claims_a_due_probe() {
        loom::model(|| {
            // Two pickers see the probe due at the same time: one request
            // goes to the ejected endpoint, not two.
            let (detector, state, _health) = ejected();
            let picker = || {
                let (detector, state) = (detector.clone(), state.clone());
                loom::thread::spawn(move || detector.claim_probe(&state, 3 * SEC))
            };
            let (a, b) = (picker(), picker());
            let claimed = usize::from(a.join().unwrap()) + usize::from(b.join().unwrap());
            assert_eq!(claimed, 1);
        });
    }

    #[test]
    fn a_readmission_is_not_undone_by_a_racing_failed_probe() {
        loom::model(|| {
            // Two probes outstanding (the first one outlived its spacing):
            // one succeeds, one fails, at the same time. The success
            // readmits; the failure must not extend the ended ejection.
            let (detector, state, health) = ejected();
            let probe = |success: bool| {
                let (detector, state, health) = (detector.clone(), state.clone(), health.clone());
                loom::thread::spawn(move || {
                    let host = Host { outlier: &state, health: &health, tier: 0, in_flight: 0, latency_ns: 0.0 };
                    detector.probe_outcome(host, success, 3 * SEC)
                })
            };
            let (ok, failed) = (probe(true), probe(false));
            let (ok, failed) = (ok.join().unwrap(), failed.join().unwrap());
            assert_eq!(ok, ProbeVerdict::Readmitted);
            assert!(matches!(failed, ProbeVerdict::Failed { .. } | ProbeVerdict::Stale), "{failed:?}");
            assert!(!health.is_ejected(3 * SEC), "readmitted for good");
            assert_eq!(state.next_probe(), None, "no probe pending after the readmission");
        });
    }
}
