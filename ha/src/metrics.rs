//! What the stack decides, through the [`metrics`] crate facade (feature
//! `metrics`): install any `metrics` recorder (the Prometheus exporter,
//! StatsD, ...) and these series appear.
//!
//! Two sources feed them. [`MetricsObserver`] turns the stack's events into
//! counters as they happen (install it with `StackBuilder::events`, and in
//! a membership `ClusterBuilder::events`); [`record_stack`] and
//! [`record_cluster`] copy the current counters and gauges of a stack or a
//! cluster, so call them before each scrape or every second
//! ([`spawn_reporter`]). Every series has the label `stack` (or `cluster`):
//! the name you give.
//!
//! | series | kind | labels | unit | meaning |
//! |---|---|---|---|---|
//! | `ha_requests_total` | counter | stack | requests | requests the stack took (first attempts) |
//! | `ha_attempts_total` | counter | stack | attempts | attempts sent to endpoints, retries and hedges included |
//! | `ha_retries_total` | counter | stack | attempts | retries sent |
//! | `ha_retry_budget_refused_total` | counter | stack | retries | retries the budget refused |
//! | `ha_attempt_timeouts_total` | counter | stack | attempts | attempts cut by the per-try timeout |
//! | `ha_deadlines_exceeded_total` | counter | stack | requests | requests that ran out of time |
//! | `ha_hedges_total` | counter | stack | attempts | hedges sent |
//! | `ha_hedge_wins_total` | counter | stack | requests | requests a hedge answered first |
//! | `ha_hedges_paused_total` | counter | stack | attempts | hedges not sent while hedging paused (they mostly lost, or most requests were slow) |
//! | `ha_retry_budget_available` | gauge | stack | retries | retries the budget could pay for now |
//! | `ha_panic_mode` | gauge | stack | 0/1 | routing over every endpoint because too few are healthy |
//! | `ha_queueing` | gauge | stack | 0/1 | the endpoints queue (past capacity): failed attempts are not retried |
//! | `ha_retries_withheld_total` | counter | stack | attempts | failed attempts not retried because the endpoints queued |
//! | `ha_endpoints` | gauge | stack | endpoints | endpoints known |
//! | `ha_endpoint_in_flight` | gauge | stack, endpoint, tier | requests | requests in flight |
//! | `ha_endpoint_requests_total` | counter | stack, endpoint, tier | attempts | attempts sent |
//! | `ha_endpoint_failures_total` | counter | stack, endpoint, tier | attempts | attempts that failed |
//! | `ha_endpoint_latency_seconds` | gauge | stack, endpoint, tier | seconds | PeakEWMA latency estimate |
//! | `ha_endpoint_ejected` | gauge | stack, endpoint, tier | 0/1 | ejected by outlier detection |
//! | `ha_endpoint_breaker_open` | gauge | stack, endpoint, tier | 0/1 | its circuit breaker is open |
//! | `ha_endpoint_ejections_total` | counter | stack, endpoint, reason | ejections | ejections, by rule |
//! | `ha_endpoint_restorations_total` | counter | stack, endpoint | restorations | ejected endpoints let back in |
//! | `ha_breaker_transitions_total` | counter | stack, breaker, to | transitions | breaker state changes, by new state |
//! | `ha_tier_spill_ratio` | gauge | stack, tier | ratio | share of a tier's traffic spilled to the next |
//! | `ha_discovery_interruptions_total` | counter | stack | events | discovery failures or ends |
//! | `ha_retry_budget_exhausted_total` | counter | stack, budget | events | times the budget ran dry |
//! | `ha_membership_members` | gauge | cluster | members | live members (alive or suspect), this node included |
//! | `ha_membership_health_score` | gauge | cluster | score | Lifeguard local health (0 is healthy) |
//! | `ha_membership_suspicions_total` | counter | cluster | suspicions | suspicions raised |
//! | `ha_membership_deaths_total` | counter | cluster | deaths | members declared dead |
//! | `ha_membership_probes_total` | counter | cluster | probes | direct probes sent |
//! | `ha_membership_dropped_total` | counter | cluster | packets | malformed or refused packets dropped |
//!
//! ```
//! use ha::core::{Events, WithAttempt};
//! use ha::metrics::{record_stack, MetricsObserver};
//! use ha::{Stack, Target};
//! use tower::{service_fn, BoxError};
//!
//! let transport = |t: &Target| {
//!     let port = t.addr.port();
//!     service_fn(move |_r: WithAttempt<()>| async move { Ok::<_, BoxError>(port) })
//! };
//! let stack = Stack::<_, WithAttempt<()>>::builder(transport)
//!     .events(Events::new().with_observer(MetricsObserver::new("inventory")))
//!     .endpoints(["127.0.0.1:8081".parse::<std::net::SocketAddr>().unwrap()])
//!     .build()
//!     .unwrap();
//! record_stack("inventory", &stack); // before each scrape, or from `spawn_reporter`
//! ```

use std::sync::Arc;
use std::time::Duration;

use ha_core::event::EjectionReason;
use ha_core::{Event, Observer};
use metrics::{counter, gauge};

use crate::request::StackRequest;
use crate::stack::Stack;
use crate::target::Transport;

/// An [`Observer`] that counts the stack's events as `metrics` series
/// labelled `stack = name`.
#[derive(Debug, Clone)]
pub struct MetricsObserver {
    name: Arc<str>,
}

impl MetricsObserver {
    /// An observer whose series carry `stack = name` (or `cluster = name`
    /// for membership events).
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        MetricsObserver { name: name.into() }
    }
}

fn reason(r: EjectionReason) -> &'static str {
    match r {
        EjectionReason::ConsecutiveFailures => "consecutive_failures",
        EjectionReason::SuccessRate => "success_rate",
        EjectionReason::FailurePercentage => "failure_percentage",
        EjectionReason::HealthCheck => "health_check",
    }
}

impl Observer for MetricsObserver {
    fn on_event(&self, event: &Event) {
        let stack = self.name.to_string();
        match event {
            Event::BreakerStateChanged { breaker, to, .. } => {
                counter!("ha_breaker_transitions_total", "stack" => stack, "breaker" => breaker.to_string(), "to" => to.to_string())
                    .increment(1);
            }
            Event::EndpointEjected { endpoint, reason: r, .. } => {
                counter!("ha_endpoint_ejections_total", "stack" => stack, "endpoint" => endpoint.to_string(), "reason" => reason(*r))
                    .increment(1);
            }
            Event::EndpointRestored { endpoint } => {
                counter!("ha_endpoint_restorations_total", "stack" => stack, "endpoint" => endpoint.to_string())
                    .increment(1);
            }
            Event::TierSpill { from_tier, spilled } => {
                gauge!("ha_tier_spill_ratio", "stack" => stack, "tier" => from_tier.to_string()).set(*spilled);
            }
            Event::PanicMode { entered } => {
                gauge!("ha_panic_mode", "stack" => stack).set(if *entered { 1.0 } else { 0.0 });
            }
            Event::Queueing { queueing } => {
                gauge!("ha_queueing", "stack" => stack).set(if *queueing { 1.0 } else { 0.0 });
            }
            Event::DiscoveryInterrupted { .. } => {
                counter!("ha_discovery_interruptions_total", "stack" => stack).increment(1);
            }
            Event::BudgetExhausted { budget } => {
                counter!("ha_retry_budget_exhausted_total", "stack" => stack, "budget" => budget.to_string())
                    .increment(1);
            }
            Event::MemberSuspected { .. } => {
                counter!("ha_membership_suspicion_events_total", "cluster" => stack).increment(1);
            }
            Event::MemberDead { .. } => {
                counter!("ha_membership_death_events_total", "cluster" => stack).increment(1);
            }
            _ => {}
        }
    }
}

/// Copies the counters and gauges of `stack` into the `metrics` series
/// labelled `stack = name`. Cheap enough to call before every scrape.
pub fn record_stack<T, Req, C>(name: &str, stack: &Stack<T, Req, C>)
where
    Req: StackRequest,
    T: Transport<Req::Sent>,
{
    let label = || name.to_owned();
    let endpoints = stack.endpoint_stats();
    let retry = stack.retry_stats();
    let hedge = stack.hedge_stats().unwrap_or_default();
    let attempts: u64 = endpoints.iter().map(|e| e.requests).sum();
    let requests = attempts.saturating_sub(retry.retries).saturating_sub(hedge.hedges);
    counter!("ha_requests_total", "stack" => label()).absolute(requests);
    counter!("ha_attempts_total", "stack" => label()).absolute(attempts);
    counter!("ha_retries_total", "stack" => label()).absolute(retry.retries);
    counter!("ha_retry_budget_refused_total", "stack" => label()).absolute(retry.budget_refused + hedge.budget_refused);
    counter!("ha_retries_withheld_total", "stack" => label()).absolute(retry.withheld_queueing);
    counter!("ha_attempt_timeouts_total", "stack" => label()).absolute(retry.attempt_timeouts);
    counter!("ha_deadlines_exceeded_total", "stack" => label()).absolute(retry.deadlines_exceeded);
    counter!("ha_hedges_total", "stack" => label()).absolute(hedge.hedges);
    counter!("ha_hedge_wins_total", "stack" => label()).absolute(hedge.hedge_wins);
    counter!("ha_hedges_paused_total", "stack" => label()).absolute(hedge.paused);
    gauge!("ha_retry_budget_available", "stack" => label()).set(stack.budget().available(ha_core::Instant::now()));
    gauge!("ha_panic_mode", "stack" => label()).set(if stack.in_panic_mode() { 1.0 } else { 0.0 });
    gauge!("ha_queueing", "stack" => label()).set(if stack.is_queueing() { 1.0 } else { 0.0 });
    gauge!("ha_endpoints", "stack" => label()).set(endpoints.len() as f64);
    for e in &endpoints {
        let labels = [("stack", label()), ("endpoint", e.name.to_string()), ("tier", e.tier.to_string())];
        gauge!("ha_endpoint_in_flight", &labels).set(e.pending as f64);
        counter!("ha_endpoint_requests_total", &labels).absolute(e.requests);
        counter!("ha_endpoint_failures_total", &labels).absolute(e.failures);
        gauge!("ha_endpoint_latency_seconds", &labels).set(e.latency.as_secs_f64());
        gauge!("ha_endpoint_ejected", &labels).set(if e.ejected { 1.0 } else { 0.0 });
        gauge!("ha_endpoint_breaker_open", &labels).set(if e.breaker_open { 1.0 } else { 0.0 });
    }
}

/// Copies the membership view and counters of `cluster` into the
/// `metrics` series labelled `cluster = name`.
#[cfg(feature = "membership")]
pub fn record_cluster(name: &str, cluster: &crate::membership::Cluster) {
    let label = || name.to_owned();
    let c = cluster.counters();
    gauge!("ha_membership_members", "cluster" => label()).set(cluster.members().len() as f64);
    gauge!("ha_membership_health_score", "cluster" => label()).set(f64::from(cluster.health_score()));
    counter!("ha_membership_suspicions_total", "cluster" => label()).absolute(c.suspicions);
    counter!("ha_membership_deaths_total", "cluster" => label()).absolute(c.deaths);
    counter!("ha_membership_probes_total", "cluster" => label()).absolute(c.probes);
    counter!("ha_membership_dropped_total", "cluster" => label()).absolute(c.dropped);
}

/// Runs `record` every `every` on a tokio task, until the returned handle
/// is aborted or dropped with the runtime.
///
/// ```no_run
/// # fn f(stack: ha::hyper::Client<ha::Body>) {
/// let reporter = ha::metrics::spawn_reporter(std::time::Duration::from_secs(1), move || {
///     ha::metrics::record_stack("inventory", &stack)
/// });
/// # drop(reporter);
/// # }
/// ```
pub fn spawn_reporter(every: Duration, mut record: impl FnMut() + Send + 'static) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            record();
        }
    })
}
