//! The state every clone of a balancer shares, as parts that each hold one
//! thing: the endpoint table, the tier planner, the ejection and probe
//! schedule, the in-flight counts and the response path's settings. This
//! type wires them together: a pick, an outcome or a membership change
//! reaches each part it concerns in the order the balancer's guarantees
//! need (a restoration is reported before the endpoint serves, a new table
//! is planned before any pick sees it).

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use ha_core::event::{EjectionReason, Event, Events};
use ha_core::rng::{CloneSeeds, FastRng};
use ha_core::sync::atomic::Ordering;
use ha_core::sync::{LockExt, Mutex};
use ha_core::{Instant, Outcome};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{oneshot, Notify};
use tower::discover::Change;

use crate::clock::{nanos, Clock};
use crate::config::BalanceConfig;
use crate::ejections::Ejections;
use crate::endpoint::{Endpoint, EndpointState};
use crate::inflight::InFlight;
use crate::members::{EndpointTable, GateFactory};
use crate::outlier::{Detector, ProbeVerdict};
use crate::pick::{self, Request};
use crate::planner::TierPlanner;
use crate::table::Snapshot;
use crate::tuning::{Hot, Tuning};

/// A probe may take this many times its peers' median latency (see
/// `Shared::probe_limit`).
const PROBE_LIMIT_FACTOR: f64 = 8.0;

/// What every clone of one balancer shares.
pub(crate) struct Shared<K, S> {
    clock: Clock,
    events: Events,
    table: EndpointTable<K, S>,
    /// The settings the response path reads without a snapshot.
    hot: Hot,
    /// Woken when an endpoint may have become available.
    notify: Arc<Notify>,
    planner: TierPlanner,
    ejections: Ejections,
    in_flight: InFlight,
    /// Where the next clone's random sequence starts.
    seeds: CloneSeeds,
    /// Dropped with the state, which tells the background tasks to stop.
    shutdown: Mutex<Vec<oneshot::Sender<()>>>,
    /// A ring-hash picker may be configured (the balancer has a hash key).
    has_hash_key: bool,
    /// Whether the retry layer above refuses retries now (see
    /// `BalanceBuilder::retries_refused`).
    retries_refused: Option<RetriesRefused>,
}

/// See `BalanceBuilder::retries_refused`.
pub(crate) type RetriesRefused = Arc<dyn Fn() -> bool + Send + Sync>;

impl<K, S> Shared<K, S> {
    pub(crate) fn new(
        cfg: BalanceConfig,
        events: Events,
        seeds: CloneSeeds,
        gate: Option<GateFactory<K>>,
        has_hash_key: bool,
        retries_refused: Option<RetriesRefused>,
    ) -> Self {
        let clock = Clock::new();
        let hot = Hot::new(&cfg);
        let ejections = Ejections::new(cfg.outlier.interval);
        Shared {
            clock,
            events,
            table: EndpointTable::new(Tuning::new(cfg), gate, clock),
            hot,
            notify: Arc::new(Notify::new()),
            planner: TierPlanner::new(),
            ejections,
            in_flight: InFlight::new(),
            seeds,
            shutdown: Mutex::new(Vec::new()),
            has_hash_key,
            retries_refused,
        }
    }

    /// Whether the retry layer above refuses retries now (false when not told).
    pub(crate) fn retries_refused(&self) -> bool {
        self.retries_refused.as_ref().is_some_and(|f| f())
    }

    /// Ties a background task's stop signal to this state's lifetime.
    pub(crate) fn on_drop(&self, stop: oneshot::Sender<()>) {
        self.shutdown.lock_or_recover().push(stop);
    }

    pub(crate) fn events(&self) -> &Events {
        &self.events
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    pub(crate) fn table(&self) -> &EndpointTable<K, S> {
        &self.table
    }

    pub(crate) fn hot(&self) -> &Hot {
        &self.hot
    }

    pub(crate) fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    pub(crate) fn has_hash_key(&self) -> bool {
        self.has_hash_key
    }

    /// A future that completes when an endpoint may have become available.
    pub(crate) fn changed(&self) -> OwnedNotified {
        self.notify.clone().notified_owned()
    }

    /// Whether the endpoints queued at the last judgement (see
    /// `TierPlanner::queueing`): the fleet is past its capacity.
    #[inline]
    pub(crate) fn queueing(&self) -> bool {
        self.planner.queueing()
    }

    /// The seed of a new random sequence: each clone, and each request
    /// that waits, draws its own, derived from the balancer's seed so a
    /// seeded balancer stays reproducible.
    pub(crate) fn next_seed(&self) -> u64 {
        self.seeds.next()
    }

    /// Recounts the tier plan if it is due (see [`TierPlanner::refresh`]).
    fn refresh_plan(&self, snap: &Snapshot<S>, now: Instant, now_ns: u64) {
        if self.planner.refresh(snap, now, now_ns, self.ejections.calm_ns(), &self.events) {
            self.notify.notify_waiters();
        }
    }

    /// Puts `cfg` in force (validated by the caller): the endpoint table is
    /// rebuilt over the same endpoints, so every endpoint keeps its state.
    pub(crate) fn reconfigure(&self, cfg: BalanceConfig) {
        let hot = cfg.clone();
        let now = Instant::now();
        let now_ns = self.clock.ns(now);
        let before = self.table.retune(Tuning::new(cfg), |snap| self.refresh_plan(snap, now, now_ns));
        self.notify.notify_waiters();
        // After the snapshot: a response that sees the new flags finds the new table.
        self.hot.set(&hot);
        if hot.outlier.interval < before.cfg.outlier.interval {
            // An evaluation scheduled under a longer interval comes sooner.
            let soonest = self.clock.ns(Instant::now()).saturating_add(nanos(hot.outlier.interval));
            self.ejections.evaluate_by(soonest);
        }
        tracing::info!(target: "ha::balance", picker = ?hot.picker, "balancer reconfigured");
    }

    /// Picks an endpoint, or `None` when no endpoint is available. Avoids
    /// endpoints the request already tried while any other is available.
    /// The flag is true when the pick is a probe of an ejected endpoint.
    pub(crate) fn pick<'s>(
        &self,
        snap: &'s Snapshot<S>,
        req: &Request<'_>,
        rng: &mut FastRng,
    ) -> Option<(&'s Arc<EndpointState<S>>, Option<Duration>)> {
        if snap.endpoints.is_empty() {
            return None;
        }
        let health_due = self.ejections.health_due(req.now_ns);
        if health_due {
            // An ejection ended: recount now, which reports the restoration
            // before the endpoint serves.
            snap.plan.mark_stale();
        }
        self.refresh_plan(snap, req.now, req.now_ns);
        self.ejections.maybe_evaluate(snap, req.now_ns, &self.events);
        if health_due {
            let tried = |s: &EndpointState<S>| req.tried.is_some_and(|c| c.was_tried(s.id));
            if let Some(i) = self.ejections.due_probe(snap, req.now, req.now_ns, tried) {
                return Some((&snap.endpoints[i], Some(self.probe_limit(snap, i, req.now_ns))));
            }
        }
        pick::pick_available(snap, req, rng, &self.in_flight).map(|s| (s, None))
    }

    /// How long a probe of `snap.endpoints[probed]` may take:
    /// `PROBE_LIMIT_FACTOR` times the median latency of the endpoints in
    /// service (their latest estimates), and at least that many times the
    /// prior (`load.default_rtt`). Slower than that, the endpoint is not
    /// back in shape, and the request is better retried elsewhere.
    #[cold]
    fn probe_limit(&self, snap: &Snapshot<S>, probed: usize, now_ns: u64) -> Duration {
        let mut latencies: Vec<f64> = snap
            .endpoints
            .iter()
            .enumerate()
            .filter(|&(i, e)| i != probed && !e.health.is_ejected(now_ns))
            .map(|(_, e)| e.ewma.last_observed_nanos())
            .collect();
        latencies.sort_by(f64::total_cmp);
        let (_, prior_ns) = self.hot().failure_pricing();
        let median = latencies.get(latencies.len().saturating_sub(1) / 2).copied().unwrap_or(prior_ns);
        Duration::from_nanos((PROBE_LIMIT_FACTOR * median.max(prior_ns)) as u64)
    }

    /// Counts a finished request. Reads the clock only on the failure path
    /// (an ejection's time stamp, a gate that opened, a return to service)
    /// and when the caller has no reading.
    pub(crate) fn on_outcome(&self, endpoint: &EndpointState<S>, outcome: Outcome, now: Option<Instant>) {
        if !outcome.counts() {
            return;
        }
        let failed = outcome.is_failure();
        if failed {
            endpoint.counters.failures.fetch_add(1, Ordering::Relaxed);
            if endpoint.health.advisory_gate_unjudged() {
                self.gate_may_have_opened(endpoint, now);
            }
        } else {
            endpoint.counters.successes.fetch_add(1, Ordering::Relaxed);
            if endpoint.failing_since_ns.load(Ordering::Relaxed) != 0 {
                self.returned(endpoint, now);
            }
        }
        if Detector::record(&endpoint.outlier, failed, self.hot.consecutive_failures()) {
            let now_ns = self.clock.ns(now.unwrap_or_else(Instant::now));
            let snap = self.table.snapshot();
            self.ejections.after_consecutive_failures(&snap, endpoint, now_ns, &self.events);
        }
    }

    /// A failure may have opened the endpoint's advisory gate (its
    /// breaker): if it did, the plan is recounted at the next pick, which
    /// judges whether the endpoint fails alike with its peers, so the veto
    /// of a shared overload is set aside at once rather than keeping the
    /// endpoint idle until the plan's next refresh (up to `tiers.refresh`,
    /// while its peers shed the load it would have served).
    #[cold]
    fn gate_may_have_opened(&self, endpoint: &EndpointState<S>, now: Option<Instant>) {
        if !endpoint.health.gate_admits(now.unwrap_or_else(Instant::now)) {
            self.table.snapshot().plan.mark_stale();
        }
    }

    /// The first success of an endpoint after a run of failures it was not
    /// ejected for (the cap or the panic threshold kept it, its failure
    /// cost kept traffic off it): it is back from an outage all the same,
    /// and ramps up as a readmitted endpoint does, which also lets slow
    /// start hold it while it answers much slower than its peers (a server
    /// restarted with cold caches).
    #[cold]
    fn returned(&self, endpoint: &EndpointState<S>, now: Option<Instant>) {
        let since = endpoint.failing_since_ns.swap(0, Ordering::Relaxed);
        let snap = self.table.snapshot();
        let tuning = &*snap.tuning;
        if since == 0 {
            return;
        }
        let now_ns = self.clock.ns(now.unwrap_or_else(Instant::now));
        endpoint.came_back(now_ns);
        if tuning.slow_start_ns == 0 {
            return;
        }
        let from = endpoint.return_ramp_from(since, now_ns, tuning.slow_start_ns, tuning.cfg.slow_start.min_factor);
        endpoint.ramp_from_ns.store(from, Ordering::Relaxed);
        snap.plan.mark_stale();
    }

    /// The outcome of a probe sent to an ejected endpoint: a success
    /// readmits it with its failure cost cleared and its slow start set back
    /// by half the time it was out (`EndpointState::readmission_ramp_from`);
    /// a failure schedules the next probe. Its latency estimate is borrowed
    /// from its warm peers until a request sent from now on answers
    /// (`EndpointState::came_back`): requests given up on while it was out
    /// raised it to the outage's length, and the prior would handicap it
    /// against peers that converged.
    pub(crate) fn on_probe_outcome(&self, endpoint: &EndpointState<S>, success: bool, now: Instant) {
        let now_ns = self.clock.ns(now);
        let host = endpoint.host();
        let snap = self.table.snapshot();
        let tuning = &*snap.tuning;
        match tuning.detector.probe_outcome(host, success, now_ns) {
            ProbeVerdict::Readmitted => {
                endpoint.readmitted(now, now_ns, tuning);
                self.events.emit(Event::EndpointRestored { endpoint: endpoint.name.clone() });
                snap.plan.mark_stale();
                self.notify.notify_waiters();
            }
            ProbeVerdict::Failed { next_probe_ns } => {
                tracing::debug!(target: "ha::balance", endpoint = %endpoint.name, "probe failed; endpoint stays ejected");
                self.ejections.probe_at(next_probe_ns);
            }
            ProbeVerdict::Stale => {}
        }
    }

    /// The active health checker's verdict on one endpoint.
    pub(crate) fn set_probe_verdict(&self, endpoint: &EndpointState<S>, failing: bool) {
        if endpoint.health.set_probe_failing(failing) {
            let snap = self.table.snapshot();
            if failing {
                self.events.emit(Event::EndpointEjected {
                    endpoint: endpoint.name.clone(),
                    reason: EjectionReason::HealthCheck,
                    duration: snap.tuning.cfg.health_check.interval,
                });
            } else {
                self.events.emit(Event::EndpointRestored { endpoint: endpoint.name.clone() });
                self.notify.notify_waiters();
            }
            snap.plan.mark_stale();
        }
    }
}

impl<K, S> Shared<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug,
{
    /// Applies a batch of changes with one table rebuild.
    pub(crate) fn apply(&self, changes: impl IntoIterator<Item = Change<K, Endpoint<S>>>) {
        let now = Instant::now();
        let now_ns = self.clock.ns(now);
        self.table.apply(changes, now, now_ns, |snap| self.refresh_plan(snap, now, now_ns));
        self.notify.notify_waiters();
    }

    /// Replaces the whole set; endpoints whose key stays keep their state.
    pub(crate) fn reset(&self, endpoints: impl IntoIterator<Item = (K, Endpoint<S>)>) {
        let now = Instant::now();
        let now_ns = self.clock.ns(now);
        self.table.reset(endpoints, now, now_ns, |snap| self.refresh_plan(snap, now, now_ns));
        self.notify.notify_waiters();
    }
}
