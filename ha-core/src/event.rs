//! State changes, delivered to your observer and to `tracing`.
//!
//! Every `ha` component that changes state (a breaker opens, an endpoint is
//! ejected, a member is suspected, the retry budget runs dry) describes the
//! change as an [`Event`] and hands it to its [`Events`] handle. The handle
//! always emits a `tracing` event (target `ha::<area>`, level `WARN` for
//! degradations and `INFO` for recoveries) and, when you installed one,
//! calls your [`Observer`], for metrics or alerting.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use ha_core::event::{BreakerState, Event, Events};
//!
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let sink = seen.clone();
//! let events = Events::new().with_observer(move |e: &Event| sink.lock().unwrap().push(e.clone()));
//!
//! events.emit(Event::BreakerStateChanged {
//!     breaker: "payments".into(),
//!     from: BreakerState::Closed,
//!     to: BreakerState::Open,
//! });
//! assert_eq!(seen.lock().unwrap().len(), 1);
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The states of a circuit breaker, as reported in events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow; outcomes are recorded.
    Closed,
    /// Calls are rejected until the wait is over.
    Open,
    /// A limited number of probe calls decide whether to close.
    HalfOpen,
    /// Held open by an operator.
    ForcedOpen,
    /// Never rejects and records nothing.
    Disabled,
    /// Records outcomes but never rejects.
    MetricsOnly,
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::ForcedOpen => "forced_open",
            BreakerState::Disabled => "disabled",
            BreakerState::MetricsOnly => "metrics_only",
        })
    }
}

/// Why a hedge layer stopped sending hedges for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HedgePause {
    /// Recent hedges mostly lost to the first attempt: load for nothing.
    Losing,
    /// Most requests are slow (the median latency rose): a fleet-wide
    /// slowdown or overload, where a hedge finds no faster endpoint.
    Slow,
}

/// Why an endpoint was ejected from load balancing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EjectionReason {
    /// Too many failures in a row.
    ConsecutiveFailures,
    /// Its success rate fell below the fleet's mean by more than the
    /// configured number of standard deviations.
    SuccessRate,
    /// Its failure percentage passed the configured threshold.
    FailurePercentage,
    /// Its active health checks failed.
    HealthCheck,
}

/// One state change somewhere in `ha`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A circuit breaker moved between states.
    BreakerStateChanged {
        /// The breaker's name (its endpoint or key).
        breaker: Arc<str>,
        /// The state it left.
        from: BreakerState,
        /// The state it entered.
        to: BreakerState,
    },
    /// An endpoint was taken out of selection.
    EndpointEjected {
        /// The endpoint.
        endpoint: Arc<str>,
        /// Why.
        reason: EjectionReason,
        /// For how long.
        duration: Duration,
    },
    /// An ejected endpoint returned to selection.
    EndpointRestored {
        /// The endpoint.
        endpoint: Arc<str>,
    },
    /// Traffic began to spill from a priority tier to the next one, or the
    /// share spilled changed.
    TierSpill {
        /// The tier that is degraded.
        from_tier: u8,
        /// The fraction of its traffic sent to lower tiers, in `[0, 1]`.
        spilled: f64,
    },
    /// Too few endpoints are healthy; the balancer routes over all of them
    /// (`entered`), or it left that mode.
    PanicMode {
        /// True on entering panic mode, false on leaving it.
        entered: bool,
    },
    /// The endpoints a balancer picks among began to queue (`queueing`:
    /// the time requests spend in flight many times its calm level, the
    /// fleet past its capacity), or stopped. While they queue, a retry
    /// layer above does not retry failed attempts that were sent.
    Queueing {
        /// True when they began to queue, false when they stopped.
        queueing: bool,
    },
    /// A member is known alive (joined, or refuted a suspicion).
    MemberAlive {
        /// The member's name.
        member: Arc<str>,
        /// Its incarnation number.
        incarnation: u64,
    },
    /// A member failed a probe and is suspected.
    MemberSuspected {
        /// The member's name.
        member: Arc<str>,
        /// The incarnation suspected.
        incarnation: u64,
    },
    /// A member was confirmed dead.
    MemberDead {
        /// The member's name.
        member: Arc<str>,
        /// The incarnation declared dead.
        incarnation: u64,
    },
    /// A live member published new metadata (service address, zone, tier,
    /// weight or user bytes).
    MemberUpdated {
        /// The member's name.
        member: Arc<str>,
        /// The incarnation that carries the new metadata.
        incarnation: u64,
    },
    /// A member left the cluster gracefully.
    MemberLeft {
        /// The member's name.
        member: Arc<str>,
    },
    /// A balancer's discovery failed or ended; its endpoints stay as they
    /// are.
    DiscoveryInterrupted {
        /// What happened.
        reason: Arc<str>,
        /// When the balancer subscribes again, if it can.
        resubscribe_in: Option<Duration>,
    },
    /// The retry budget had no token for a retry or hedge.
    BudgetExhausted {
        /// The budget's name.
        budget: Arc<str>,
    },
    /// A hedged attempt was sent while earlier ones were outstanding (one
    /// request's, traced at DEBUG: see [`Event::is_per_request`]).
    HedgeSent {
        /// The attempt number of the hedge.
        attempt: u32,
        /// How long after the first attempt it was sent.
        after: Duration,
    },
    /// A hedge layer stopped sending hedges for now, or pauses on for
    /// another `reason`; with `reason` `None`, it started again.
    HedgingPaused {
        /// The hedge layer's name.
        hedge: Arc<str>,
        /// Why, while paused; `None` when hedging resumed.
        reason: Option<HedgePause>,
    },
    /// A retry was scheduled after a failed attempt (one request's, traced
    /// at DEBUG: see [`Event::is_per_request`]).
    RetryScheduled {
        /// The attempt number of the retry.
        attempt: u32,
        /// The backoff before it is sent.
        backoff: Duration,
    },
}

impl Event {
    /// The area of `ha` this event is about: `breaker`, `balance`,
    /// `membership` or `retry`.
    pub fn area(&self) -> &'static str {
        match self {
            Event::BreakerStateChanged { .. } => "breaker",
            Event::EndpointEjected { .. }
            | Event::EndpointRestored { .. }
            | Event::TierSpill { .. }
            | Event::PanicMode { .. }
            | Event::Queueing { .. }
            | Event::DiscoveryInterrupted { .. } => "balance",
            Event::MemberAlive { .. }
            | Event::MemberSuspected { .. }
            | Event::MemberDead { .. }
            | Event::MemberUpdated { .. }
            | Event::MemberLeft { .. } => "membership",
            Event::BudgetExhausted { .. }
            | Event::HedgeSent { .. }
            | Event::HedgingPaused { .. }
            | Event::RetryScheduled { .. } => "retry",
        }
    }

    /// True for changes that degrade availability (opened, ejected,
    /// suspected, dead, exhausted, panic).
    pub fn is_degradation(&self) -> bool {
        match self {
            Event::BreakerStateChanged { to, .. } => {
                matches!(to, BreakerState::Open | BreakerState::ForcedOpen)
            }
            Event::EndpointEjected { .. }
            | Event::MemberSuspected { .. }
            | Event::MemberDead { .. }
            | Event::DiscoveryInterrupted { .. }
            | Event::BudgetExhausted { .. } => true,
            Event::TierSpill { spilled, .. } => *spilled > 0.0,
            Event::PanicMode { entered } => *entered,
            Event::Queueing { queueing } => *queueing,
            _ => false,
        }
    }

    /// True for what one request does (a retry scheduled, a hedge sent)
    /// rather than a change of state. Traced at DEBUG, not INFO: at a
    /// thousand requests a second and a few percent retried, they would be
    /// most of a production log kept at INFO, and the state changes (WARN
    /// for degradations, INFO otherwise) would drown in them.
    pub fn is_per_request(&self) -> bool {
        matches!(self, Event::HedgeSent { .. } | Event::RetryScheduled { .. })
    }

    fn trace(&self) {
        macro_rules! emit {
            ($target:literal, $($fields:tt)*) => {
                if self.is_degradation() {
                    tracing::warn!(target: $target, $($fields)*)
                } else if self.is_per_request() {
                    tracing::debug!(target: $target, $($fields)*)
                } else {
                    tracing::info!(target: $target, $($fields)*)
                }
            };
        }
        match self {
            Event::BreakerStateChanged { breaker, from, to } => {
                emit!("ha::breaker", breaker = %breaker, from = %from, to = %to, "breaker state changed")
            }
            Event::EndpointEjected { endpoint, reason, duration } => {
                emit!("ha::balance", endpoint = %endpoint, reason = ?reason, duration = ?duration, "endpoint ejected")
            }
            Event::EndpointRestored { endpoint } => emit!("ha::balance", endpoint = %endpoint, "endpoint restored"),
            Event::TierSpill { from_tier, spilled } => {
                emit!("ha::balance", from_tier, spilled, "tier spill changed")
            }
            Event::PanicMode { entered } => emit!("ha::balance", entered, "panic mode"),
            Event::Queueing { queueing } => {
                emit!("ha::balance", queueing, "endpoints queueing: sent attempts that fail are not retried")
            }
            Event::DiscoveryInterrupted { reason, resubscribe_in } => {
                emit!("ha::balance", reason = %reason, resubscribe_in = ?resubscribe_in, "discovery interrupted; endpoints kept")
            }
            Event::MemberAlive { member, incarnation } => {
                emit!("ha::membership", member = %member, incarnation, "member alive")
            }
            Event::MemberSuspected { member, incarnation } => {
                emit!("ha::membership", member = %member, incarnation, "member suspected")
            }
            Event::MemberDead { member, incarnation } => {
                emit!("ha::membership", member = %member, incarnation, "member dead")
            }
            Event::MemberUpdated { member, incarnation } => {
                emit!("ha::membership", member = %member, incarnation, "member metadata updated")
            }
            Event::MemberLeft { member } => emit!("ha::membership", member = %member, "member left"),
            Event::BudgetExhausted { budget } => emit!("ha::retry", budget = %budget, "retry budget exhausted"),
            Event::HedgeSent { attempt, after } => {
                emit!("ha::retry", attempt, after = ?after, "hedge sent")
            }
            Event::HedgingPaused { hedge, reason: Some(reason) } => {
                emit!("ha::retry", hedge = %hedge, reason = ?reason, "hedging paused")
            }
            Event::HedgingPaused { hedge, reason: None } => emit!("ha::retry", hedge = %hedge, "hedging resumed"),
            Event::RetryScheduled { attempt, backoff } => {
                emit!("ha::retry", attempt, backoff = ?backoff, "retry scheduled")
            }
        }
    }
}

/// Receives every [`Event`] of the components it is installed in.
///
/// Called synchronously on the thread that caused the change, so keep it
/// quick (update a counter, send on a channel). Closures `Fn(&Event)`
/// implement it.
pub trait Observer: Send + Sync + 'static {
    /// Handles one event.
    fn on_event(&self, event: &Event);
}

impl<F> Observer for F
where
    F: Fn(&Event) + Send + Sync + 'static,
{
    fn on_event(&self, event: &Event) {
        self(event)
    }
}

/// Where a component sends its events: always to `tracing`, and to an
/// [`Observer`] when one is installed. Cheap to clone.
#[derive(Clone, Default)]
pub struct Events {
    observer: Option<Arc<dyn Observer>>,
}

impl Events {
    /// A handle that only emits `tracing` events.
    pub fn new() -> Self {
        Events { observer: None }
    }

    /// Installs `observer`, replacing any earlier one.
    pub fn with_observer(mut self, observer: impl Observer) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Emits `event` to `tracing` and to the observer.
    pub fn emit(&self, event: Event) {
        event.trace();
        if let Some(o) = &self.observer {
            o.on_event(&event);
        }
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events").field("observer", &self.observer.is_some()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    #[derive(Default, Clone)]
    struct Captured(Arc<Mutex<Vec<(String, tracing::Level, String)>>>);

    struct Fields(String);
    impl tracing::field::Visit for Fields {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
            self.0.push_str(&format!("{}={:?};", field.name(), value));
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Captured {
        fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            let meta = event.metadata();
            self.0.lock().unwrap().push((meta.target().to_string(), *meta.level(), fields.0));
        }
    }

    fn all_events() -> Vec<Event> {
        vec![
            Event::BreakerStateChanged { breaker: "b".into(), from: BreakerState::Closed, to: BreakerState::Open },
            Event::BreakerStateChanged { breaker: "b".into(), from: BreakerState::HalfOpen, to: BreakerState::Closed },
            Event::EndpointEjected {
                endpoint: "10.0.0.1:80".into(),
                reason: EjectionReason::ConsecutiveFailures,
                duration: Duration::from_secs(30),
            },
            Event::EndpointRestored { endpoint: "10.0.0.1:80".into() },
            Event::TierSpill { from_tier: 0, spilled: 0.25 },
            Event::PanicMode { entered: true },
            Event::MemberAlive { member: "n1".into(), incarnation: 2 },
            Event::MemberSuspected { member: "n1".into(), incarnation: 2 },
            Event::MemberDead { member: "n1".into(), incarnation: 2 },
            Event::MemberUpdated { member: "n1".into(), incarnation: 3 },
            Event::MemberLeft { member: "n1".into() },
            Event::BudgetExhausted { budget: "api".into() },
            Event::HedgeSent { attempt: 2, after: Duration::from_millis(12) },
            Event::HedgingPaused { hedge: "hedge".into(), reason: Some(HedgePause::Slow) },
            Event::HedgingPaused { hedge: "hedge".into(), reason: None },
            Event::RetryScheduled { attempt: 2, backoff: Duration::from_millis(40) },
        ]
    }

    #[test]
    fn every_event_reaches_tracing_and_the_observer() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(captured.clone());
        let observed = Arc::new(Mutex::new(Vec::new()));
        let sink = observed.clone();
        let events = Events::new().with_observer(move |e: &Event| sink.lock().unwrap().push(e.clone()));

        tracing::subscriber::with_default(subscriber, || {
            for e in all_events() {
                events.emit(e);
            }
        });

        assert_eq!(*observed.lock().unwrap(), all_events());
        let traced = captured.0.lock().unwrap();
        assert_eq!(traced.len(), all_events().len());
        for ((target, level, fields), event) in traced.iter().zip(all_events()) {
            assert_eq!(target, &format!("ha::{}", event.area()));
            let expected = match &event {
                Event::HedgeSent { .. } | Event::RetryScheduled { .. } => tracing::Level::DEBUG,
                e if e.is_degradation() => tracing::Level::WARN,
                _ => tracing::Level::INFO,
            };
            assert_eq!(*level, expected, "{event:?}");
            assert!(fields.contains("message="), "{fields}");
        }
        assert!(traced[0].2.contains("from=closed") && traced[0].2.contains("to=open"), "{}", traced[0].2);
        assert!(traced[2].2.contains("ConsecutiveFailures"), "{}", traced[2].2);
    }

    #[test]
    fn events_without_observer_still_trace() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(captured.clone());
        tracing::subscriber::with_default(subscriber, || {
            Events::new().emit(Event::PanicMode { entered: false });
        });
        let traced = captured.0.lock().unwrap();
        assert_eq!(traced.len(), 1);
        assert_eq!(traced[0].1, tracing::Level::INFO);
    }
}
