//! Circuit breakers for tower services: stop calling an endpoint that is
//! failing, let a few probes through after a growing wait, close when they
//! pass.
//!
//! ```
//! use std::time::Duration;
//! use ha_breaker::{BreakerConfig, CircuitBreakerLayer};
//! use ha_core::BreakerOpen;
//! use tower::{service_fn, Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let config = BreakerConfig { consecutive_failures: Some(3), ..BreakerConfig::default() };
//! let layer = CircuitBreakerLayer::new(config).unwrap().name("inventory");
//! let mut svc = layer.layer(service_fn(|fail: bool| async move {
//!     if fail { Err("backend down") } else { Ok("ok") }
//! }));
//!
//! for _ in 0..3 {
//!     assert!(svc.ready().await.unwrap().call(true).await.is_err());
//! }
//! // Tripped: calls fail at once without reaching the backend.
//! let err = svc.ready().await.unwrap().call(false).await.unwrap_err();
//! let open = err.downcast_ref::<BreakerOpen>().expect("rejected by the breaker");
//! assert!(open.retry_after() <= Duration::from_secs(5));
//! assert!(svc.is_open());
//! # }
//! ```
//!
//! # What it does
//!
//! - Trips on consecutive failures, on the failure rate of a count-based or
//!   time-based sliding window once it holds `minimum_calls`, and on the
//!   slow-call rate ([`BreakerConfig`]). Outcomes come from ha-core's
//!   [`Classify`](ha_core::Classify); ignored outcomes and (by default)
//!   cancelled calls count for nothing.
//! - Open → half-open after a wait that grows on repeated trips, jittered and
//!   capped, and goes back to the base after staying closed for a while.
//!   Half-open admits at most `half_open_probes` calls at once and closes or
//!   reopens on their outcomes.
//! - While open, `call` fails with [`BreakerOpen`](ha_core::BreakerOpen)
//!   saying when a probe is allowed; or, with [`RejectMode::NotReady`],
//!   `poll_ready` stays pending and wakes the task when a probe may go, so a
//!   balancer skips the endpoint. [`Breaker::is_open`] is one atomic load.
//! - [`Breaker::force_open`], [`Breaker::disable`],
//!   [`Breaker::metrics_only`] and [`Breaker::reset`] control it;
//!   [`Breaker::metrics`] reads its counters; every transition is an
//!   ha-core [`Event`](ha_core::Event) and a `tracing` event.
//! - [`KeyedCircuitBreaker`] keeps one breaker per key of the request, with
//!   a bound on the number of keys and idle eviction.
//! - [`Breaker::reconfigure`] (and [`KeyedBreakers::reconfigure`](keyed::KeyedBreakers::reconfigure))
//!   change a running breaker's config: checked like a new one (a bad
//!   value is refused with the same [`ConfigError`] and the old config
//!   stays), applied to every later outcome without disturbing calls in
//!   flight, keeping the breaker's state, counters and, when the window's
//!   shape is unchanged, its window.
//!
//! ```
//! use ha_breaker::{BreakerConfig, CircuitBreakerLayer, ConfigError};
//! use tower::{service_fn, Layer};
//!
//! let layer = CircuitBreakerLayer::new(BreakerConfig::default()).unwrap();
//! let svc = layer.layer(service_fn(|()| async { Ok::<_, &str>(()) }));
//! let breaker = svc.breaker();
//!
//! let looser = BreakerConfig { failure_rate: Some(0.8), ..BreakerConfig::default() };
//! breaker.reconfigure(looser.clone()).unwrap();
//! assert_eq!(breaker.config(), looser);
//!
//! let broken = BreakerConfig { failure_rate: Some(1.5), ..BreakerConfig::default() };
//! let err = breaker.reconfigure(broken).unwrap_err();
//! assert_eq!(err, ConfigError::new("failure_rate", "must be in (0, 1], got 1.5"));
//! assert_eq!(breaker.config(), looser); // the old config stays in force
//! ```
//!
//! # Cost
//!
//! With the default config (count window, no slow-call detection) the
//! closed path reads no clock, takes no lock, allocates nothing and, in the
//! healthy steady state, performs no atomic read-modify-write: one load to
//! admit, one to find the window in force (it may have been replaced by a
//! reconfiguration), one to see that it is still full of successes, and a
//! per-thread stash ([`ha_core::lease`]) instead of an `Arc` clone for the
//! response future's reference to the breaker (a thread keeps up to four
//! recently used breakers referenced this way; a breaker whose services are
//! all dropped is freed once that thread's stash needs its slot, or when
//! the thread exits). Failures cost a few atomic
//! adds. A time window adds one clock read per call and slow-call detection
//! two; `benches/benches/breaker_overhead.rs` measures each.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod breaker;
pub mod config;
mod future;
pub mod keyed;
mod layer;
mod rules;
mod service;
mod state;
mod window;

#[allow(deprecated)]
pub use breaker::Metrics;
pub use breaker::{Breaker, BreakerStats, Permit};
pub use config::{BreakerConfig, CancelledAs, ConfigError, OpenWaitConfig, RejectMode, SlowCallConfig, WindowConfig};
pub use future::{ResponseFuture, TryOutput};
pub use keyed::{KeyedCircuitBreaker, KeyedConfig};
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreaker;
