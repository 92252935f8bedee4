//! What the balancer knows about one endpoint: the description discovery
//! hands in ([`Endpoint`]) and the counters a user reads back ([`EndpointStats`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ha_core::stats::PeakEwma;
use ha_core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use ha_core::{EndpointId, Instant};

use crate::clock::Clock;
use crate::health::{Health, HealthGate};
use crate::outlier::{Host, OutlierState};
use crate::tuning::Tuning;

/// The time constant over which a failure's cost fades. Short, unlike the
/// latency's: the cost only has to keep traffic off an endpoint while it
/// keeps failing, and an endpoint that recovers is tried again within a
/// few seconds (a penalty in the latency estimate itself would take tens
/// of seconds to wear off at its 10 s decay, and a crash would keep its
/// server idle long after it was back).
const FAILURE_DECAY: Duration = Duration::from_secs(1);

/// One endpoint as discovery describes it: its service and where it sits
/// (tier, zone, weight).
///
/// ```
/// use ha_balance::Endpoint;
/// let primary = Endpoint::new(tower::service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }))
///     .tier(0)
///     .zone("eu-west-1a")
///     .weight(2);
/// assert_eq!(primary.tier_ref(), 0);
/// ```
#[derive(Clone)]
pub struct Endpoint<S> {
    pub(crate) service: S,
    pub(crate) tier: u8,
    pub(crate) zone: Option<Arc<str>>,
    pub(crate) weight: u32,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) gate: Option<Arc<dyn HealthGate>>,
}

impl<S> Endpoint<S> {
    /// An endpoint of tier 0, weight 1, no zone, named after its key.
    pub fn new(service: S) -> Self {
        Endpoint { service, tier: 0, zone: None, weight: 1, name: None, gate: None }
    }

    /// Gives the endpoint a [`HealthGate`] (for example the
    /// [`BreakerGate`](crate::BreakerGate) of the breaker wrapped around its
    /// service): while it does not admit, the endpoint is out of selection.
    /// Overrides the builder's [`health_gate`](crate::BalanceBuilder::health_gate).
    pub fn health_gate(mut self, gate: impl HealthGate) -> Self {
        self.gate = Some(Arc::new(gate));
        self
    }

    /// Its priority tier: 0 is primary, 1 secondary, and so on.
    pub fn tier(mut self, tier: u8) -> Self {
        self.tier = tier;
        self
    }

    /// Its zone, as a label only: it is reported in
    /// [`EndpointStats::zone`] and routes nothing. To prefer the caller's
    /// zone, put that zone's endpoints in tier 0 and the others in lower
    /// tiers (the `ha` facade's `.cluster` does so from membership).
    pub fn zone(mut self, zone: impl Into<Arc<str>>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Its weight for the weighted pickers, round robin and ring hash
    /// (clamped to `1..=1000`).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight.clamp(1, 1000);
        self
    }

    /// The name used in events and stats (default: the key's `Debug` form,
    /// without the quotes of a string key).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Its tier, as set by [`tier`](Self::tier). Named like `http`'s builder
    /// getters (`method_ref`): the setter has the bare name.
    pub fn tier_ref(&self) -> u8 {
        self.tier
    }
}

impl<S: fmt::Debug> fmt::Debug for Endpoint<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("service", &self.service)
            .field("tier", &self.tier)
            .field("zone", &self.zone)
            .field("weight", &self.weight)
            .field("name", &self.name)
            .field("gate", &self.gate.is_some())
            .finish()
    }
}

/// Counters and state of one endpoint, read with
/// [`Balance::endpoint_stats`](crate::Balance::endpoint_stats).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// Its id (the one recorded in attempt contexts).
    pub id: EndpointId,
    /// Its name.
    pub name: Arc<str>,
    /// Its tier.
    pub tier: u8,
    /// Its zone.
    pub zone: Option<Arc<str>>,
    /// Its weight.
    pub weight: u32,
    /// Requests in flight now.
    pub pending: u64,
    /// Requests sent to it.
    pub requests: u64,
    /// Responses classified as successes.
    pub successes: u64,
    /// Responses classified as failures.
    pub failures: u64,
    /// Times it was ejected.
    pub ejections: u64,
    /// True while it is ejected.
    pub ejected: bool,
    /// True while its active health checks fail.
    pub health_check_failing: bool,
    /// True while its breaker keeps it out of selection.
    pub breaker_open: bool,
    /// Its PeakEWMA latency estimate.
    pub latency: Duration,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) successes: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) ejections: AtomicU64,
}

/// The balancer's shared record of one endpoint. Snapshots hold it by `Arc`,
/// so an in-flight request keeps it alive after the endpoint is removed.
pub(crate) struct EndpointState<S> {
    pub(crate) id: EndpointId,
    pub(crate) name: Arc<str>,
    pub(crate) service: S,
    pub(crate) tier: u8,
    pub(crate) zone: Option<Arc<str>>,
    pub(crate) weight: u32,
    /// Nanoseconds since the balancer's epoch when its slow start began:
    /// when it was added, or readmitted after an ejection. 0 when it has
    /// none (it joined an empty balancer).
    pub(crate) ramp_from_ns: AtomicU64,
    /// Nanoseconds since the balancer's epoch of its latest ejection; 0
    /// when it was never ejected. A readmission sets its ramp back by half
    /// the time it was out ([`EndpointState::readmission_ramp_from`]).
    pub(crate) ejected_at_ns: AtomicU64,
    /// Its latest failure was a request given up on (no answer in time)
    /// rather than an answer: an endpoint ejected that way was overloaded
    /// or stalled at the share it had, and is readmitted from the start of
    /// its ramp.
    pub(crate) unanswered: AtomicBool,
    /// It joined with a slow start and its latency estimate is still the
    /// prior (`default_rtt`): the next plan recount that knows its tier's
    /// warm latency starts it there instead (`planner::hold_cold_ramps`),
    /// so that it is priced like its peers, neither cheaper nor dearer,
    /// until it answers. Until then it is never judged cold. Its first
    /// successful answer clears it too, so a real estimate is never
    /// overwritten by a borrowed one.
    pub(crate) fresh: AtomicBool,
    /// Nanoseconds since the balancer's epoch when a run of consecutive
    /// failures crossed the threshold and its ejection was refused by the
    /// cap or the panic threshold (not for a failure its peers share); 0
    /// when not failing so. Its next success is a return from an outage
    /// it was not ejected for, and ramps it up as a readmission would
    /// (`Shared::on_outcome`).
    pub(crate) failing_since_ns: AtomicU64,
    /// Nanoseconds since the balancer's epoch when it last came back from
    /// an outage that held requests (see `came_back`); 0: never. Requests sent before then, answered or given up after, took
    /// as long as the outage did: their latency describes the outage, not
    /// the server it now is (a stall's queue drains in seconds-long
    /// answers), and is not taken into its estimate.
    pub(crate) back_at_ns: AtomicU64,
    pub(crate) pending: AtomicU64,
    /// When `pending` last rose from zero, on the balancer's clock: with
    /// the latency estimate's last observation, how long a busy endpoint
    /// has gone without answering.
    pub(crate) busy_since_ns: AtomicU64,
    pub(crate) ewma: PeakEwma,
    /// What its recent failures cost, on top of its latency: raised by each
    /// failure, decaying within seconds, cleared by a success.
    pub(crate) failure_cost: PeakEwma,
    pub(crate) health: Health,
    pub(crate) outlier: OutlierState,
    pub(crate) counters: Counters,
}

impl<S> EndpointState<S> {
    /// Back from an outage at `now_ns`. If the outage held requests (its
    /// latest failure went unanswered: a hang, a stall), its latency
    /// estimate, raised by them, is borrowed from its warm peers again at
    /// the next recount (as a joiner's is), until a request sent from now
    /// on answers. An outage that answered at once (refused connections)
    /// held nothing: its estimate stands, and the answers of requests sent
    /// just before the return (a server back, maybe cold) count.
    pub(crate) fn came_back(&self, now_ns: u64) {
        if self.unanswered.load(Ordering::Relaxed) {
            self.back_at_ns.store(now_ns, Ordering::Relaxed);
            self.fresh.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a request sent at `start_ns` was sent before its latest
    /// return from an outage (see `back_at_ns`).
    #[inline]
    pub(crate) fn sent_before_return(&self, start_ns: u64) -> bool {
        start_ns < self.back_at_ns.load(Ordering::Relaxed)
    }

    /// The state of a new endpoint described by `ep` (whose name and gate
    /// the caller resolved), admitted at `now` on the balancer's `clock`, its
    /// slow start from `ramp_from_ns` (0: none).
    pub(crate) fn new(
        id: EndpointId,
        name: Arc<str>,
        ep: Endpoint<S>,
        gate: Option<Arc<dyn HealthGate>>,
        (clock, now): (Clock, Instant),
        ramp_from_ns: u64,
        tuning: &Tuning,
    ) -> Self {
        EndpointState {
            id,
            name,
            service: ep.service,
            tier: ep.tier,
            zone: ep.zone,
            weight: ep.weight,
            ramp_from_ns: AtomicU64::new(ramp_from_ns),
            ejected_at_ns: AtomicU64::new(0),
            unanswered: AtomicBool::new(false),
            fresh: AtomicBool::new(ramp_from_ns != 0),
            failing_since_ns: AtomicU64::new(0),
            back_at_ns: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            busy_since_ns: AtomicU64::new(0),
            ewma: PeakEwma::with_epoch(clock.epoch(), now, tuning.cfg.load.default_rtt, tuning.cfg.load.decay),
            failure_cost: PeakEwma::with_epoch(clock.epoch(), now, Duration::ZERO, FAILURE_DECAY),
            health: Health::new(gate),
            outlier: OutlierState::default(),
            counters: Counters::default(),
        }
    }

    /// What the outlier rules judge of this endpoint, its requests in
    /// flight as they stand.
    pub(crate) fn host(&self) -> Host<'_> {
        Host {
            outlier: &self.outlier,
            health: &self.health,
            tier: self.tier,
            in_flight: self.pending.load(Ordering::Relaxed),
            latency_ns: self.ewma.last_observed_nanos(),
        }
    }

    pub(crate) fn stats(&self, now: Instant, now_ns: u64) -> EndpointStats {
        EndpointStats {
            id: self.id,
            name: self.name.clone(),
            tier: self.tier,
            zone: self.zone.clone(),
            weight: self.weight,
            pending: self.pending.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
            successes: self.counters.successes.load(Ordering::Relaxed),
            failures: self.counters.failures.load(Ordering::Relaxed),
            ejections: self.counters.ejections.load(Ordering::Relaxed),
            ejected: self.health.is_ejected(now_ns),
            health_check_failing: self.health.probe_failing(),
            breaker_open: !self.health.gate_admits(now),
            latency: self.ewma.estimate(now),
        }
    }

    /// The slow-start share in `[min_factor, 1]`.
    #[inline]
    pub(crate) fn ramp(&self, now_ns: u64, window_ns: u64, min_factor: f64) -> f64 {
        let from = self.ramp_from_ns.load(Ordering::Relaxed);
        if from == 0 || window_ns == 0 {
            return 1.0;
        }
        let elapsed = now_ns.saturating_sub(from);
        if elapsed >= window_ns {
            1.0
        } else {
            (elapsed as f64 / window_ns as f64).max(min_factor)
        }
    }

    /// Back in service before its ejection ran out (a probe answered, or
    /// its capacity is needed): its failure cost cleared, its latency
    /// estimate borrowed from its peers if the outage held requests
    /// ([`came_back`](Self::came_back)), its slow start set back by half
    /// the time it was out.
    pub(crate) fn readmitted(&self, now: Instant, now_ns: u64, tuning: &Tuning) {
        self.failure_cost.reset(now, Duration::ZERO);
        self.came_back(now_ns);
        if tuning.slow_start_ns > 0 {
            let from = self.readmission_ramp_from(now_ns, tuning.slow_start_ns, tuning.cfg.slow_start.min_factor);
            self.ramp_from_ns.store(from, Ordering::Relaxed);
        }
    }

    /// The start of the ramp of an endpoint readmitted at `now_ns`, for
    /// `ramp_from_ns`. Its ramp resumes where it stood at the ejection, set
    /// back by half the time it was out: warmth is lost half as fast as it
    /// is gained. A warm endpoint out for 5 s of a 10 s window comes back at
    /// 75% and is at full share 2.5 s later (a flapping endpoint serves
    /// while it is up); one out for twice the window or more (a crash and
    /// restart, a long partition) ramps from `min_factor` over the full
    /// window.
    /// An endpoint whose latest failure went unanswered (see `unanswered`)
    /// ramps from `min_factor` whatever the time out.
    pub(crate) fn readmission_ramp_from(&self, now_ns: u64, window_ns: u64, min_factor: f64) -> u64 {
        self.return_ramp_from(self.ejected_at_ns.load(Ordering::Relaxed), now_ns, window_ns, min_factor)
    }

    /// [`readmission_ramp_from`](Self::readmission_ramp_from) for an
    /// endpoint out of service since `out_since_ns` (its ejection, or the
    /// refused ejection of a run of failures that ended with a success).
    pub(crate) fn return_ramp_from(&self, out_since_ns: u64, now_ns: u64, window_ns: u64, min_factor: f64) -> u64 {
        if self.unanswered.load(Ordering::Relaxed) {
            return now_ns.max(1);
        }
        readmission_ramp_from(self.ramp_from_ns.load(Ordering::Relaxed), out_since_ns, now_ns, window_ns, min_factor)
    }
}

/// [`EndpointState::readmission_ramp_from`] over plain numbers: the ramp that began
/// at `ramp_from_ns` (0: none, full share), an ejection at `ejected_at_ns`
/// (0: unknown, a full ramp) and a readmission at `now_ns`.
pub(crate) fn readmission_ramp_from(
    ramp_from_ns: u64,
    ejected_at_ns: u64,
    now_ns: u64,
    window_ns: u64,
    min_factor: f64,
) -> u64 {
    if window_ns == 0 || ejected_at_ns == 0 || ejected_at_ns > now_ns {
        return now_ns.max(1);
    }
    let window = window_ns as f64;
    let at_ejection = if ramp_from_ns == 0 {
        1.0
    } else {
        (ejected_at_ns.saturating_sub(ramp_from_ns) as f64 / window).clamp(0.0, 1.0)
    };
    let out = (now_ns - ejected_at_ns) as f64 / window;
    let share = at_ejection - out / 2.0;
    if share <= min_factor {
        return now_ns.max(1);
    }
    // The ramp that stands at `share` now (a start before the epoch is
    // clamped to it: a little less share, never more).
    now_ns.saturating_sub((share * window) as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::readmission_ramp_from;

    const SEC: u64 = 1_000_000_000;
    const W: u64 = 10 * SEC;

    /// The share the ramp starting at `from` gives at `now`.
    fn share(from: u64, now: u64) -> f64 {
        ((now - from) as f64 / W as f64).clamp(0.1, 1.0)
    }

    #[test]
    fn a_readmission_sets_the_ramp_back_by_half_the_time_out() {
        // Warm (no ramp), out 5 s: back at 75%.
        let from = readmission_ramp_from(0, 100 * SEC, 105 * SEC, W, 0.1);
        assert!((share(from, 105 * SEC) - 0.75).abs() < 1e-9, "{}", share(from, 105 * SEC));
        // Half-way up its ramp (50%), out 2 s: back at 40%.
        let from = readmission_ramp_from(95 * SEC, 100 * SEC, 102 * SEC, W, 0.1);
        assert!((share(from, 102 * SEC) - 0.4).abs() < 1e-9, "{}", share(from, 102 * SEC));
        // Out for twice the window or more: a full ramp from now.
        assert_eq!(readmission_ramp_from(0, 100 * SEC, 120 * SEC, W, 0.1), 120 * SEC);
        assert_eq!(readmission_ramp_from(0, 100 * SEC, 200 * SEC, W, 0.1), 200 * SEC);
        // Never ejected as far as it knows: a full ramp.
        assert_eq!(readmission_ramp_from(0, 0, 7 * SEC, W, 0.1), 7 * SEC);
        // Early in the epoch the start is clamped, never 0 (no ramp).
        assert_eq!(readmission_ramp_from(0, SEC, 2 * SEC, W, 0.1), 1);
    }
}
