//! Endpoint selection for tower services.
//!
//! `ha-balance` picks the endpoint for each attempt of a request and keeps
//! picking well while endpoints slow down, fail, come and go:
//!
//! - **Pickers**: P2C over PeakEWMA latency x (pending + 1)^0.75 (the default), P2C
//!   least-pending, weighted P2C, smooth weighted round robin, random, and
//!   consistent hashing of a request key with virtual nodes and bounded
//!   loads ([`Picker`]).
//! - **Priority tiers**: traffic stays on tier 0 while it is healthy enough
//!   (overprovisioning factor 1.4) and spills to the next tiers in
//!   proportion as it degrades; below 50% healthy overall the balancer
//!   panics and routes over every endpoint. Zones are tiers: put the
//!   caller's zone in tier 0.
//! - **Health**: outlier ejection (Envoy's consecutive-failure,
//!   success-rate and failure-percentage rules, capped at 10% of the
//!   endpoints), optional active health checks, and an optional per-endpoint
//!   [`HealthGate`] such as a circuit breaker. Any of them takes an endpoint
//!   out of selection at once. Ejection judges an endpoint against its
//!   peers: a failure they share ejects nobody (an overloaded fleet shedding
//!   load everywhere), the failure-percentage rule (on by default, from two
//!   endpoints) asks for twice the peers' rate, and no ejection leaves less
//!   of a tier than the panic threshold, whatever the cap. An endpoint
//!   ejected for consecutive failures is probed with one real request per
//!   probe interval (1 s, doubling to 2 s while probes fail) and readmitted
//!   at the first success; one ejected for its failure rate is readmitted
//!   at once when the endpoints left in service queue, so an ejection never
//!   keeps out capacity the load needs ([`OutlierConfig`]).
//! - **No black hole**: a failure costs the PeakEWMA picker
//!   `failure_penalty` times the latency, compounding over a run of
//!   failures and fading within seconds, so an endpoint that fails fast
//!   never looks cheaper than one that answers slowly ([`LoadConfig`]).
//!   The first failure of a run that a retry absorbs costs its latency
//!   only: it costs the caller one more attempt, not the request.
//!   A busy endpoint silent for more than twice its latency estimate is
//!   priced at that silence, a lower bound on what it holds: a hang or a
//!   black hole is avoided before anything it holds times out.
//! - **Attempt context**: a retry or hedge carrying an
//!   [`AttemptContext`](ha_core::AttemptContext) never goes back to an
//!   endpoint it tried while another is available; the picked endpoint is
//!   recorded in it.
//! - **Slow start**: a new endpoint's share ramps up over a window; under
//!   P2C the ramp acts on the chance to be a candidate, so it also holds
//!   back a batch of new endpoints compared with each other. A readmitted
//!   endpoint resumes its ramp where it stood at its ejection, set back by
//!   half the time it was out: a brief ejection (a flap) costs it little of
//!   its share, an absence of twice the window or more (a crash and
//!   restart) ramps from the start, and so does an endpoint ejected for
//!   requests it left unanswered (overloaded or stalled at its share).
//!   With the PeakEWMA picker the ramp also waits for warmth: an endpoint
//!   ramping up that answers more than twice as slow as its tier's warm
//!   median (cold caches after a restart) stays at the ramp's start, its
//!   share scaled by the ratio to the fourth, until it is warm. An endpoint
//!   back from failures it was not ejected for, or from an open breaker,
//!   ramps up as a readmitted one does.
//! - **Fail fast**: with nothing available a request fails with
//!   [`NoHealthyEndpoint`](ha_core::NoHealthyEndpoint) after a bounded wait.
//!
//! [`Balance`] is `Clone` and shares its state between clones; selection
//! takes no lock. Endpoints come from a [`tower::discover::Discover`]
//! ([`BalanceBuilder::build_discover`]) or from the [`Endpoints`] handle
//! (insert, remove, batch, reset).
//!
//! # Example
//!
//! Two primary endpoints and a secondary one; the primary tier takes the
//! traffic while it is healthy:
//!
//! ```
//! use ha_balance::{Balance, BalanceConfig, Endpoint};
//! use ha_core::WithAttempt;
//! use tower::{service_fn, BoxError, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let backend = |name: &'static str| {
//!     service_fn(move |_req: WithAttempt<&'static str>| async move { Ok::<_, BoxError>(name) })
//! };
//! let mut balance = Balance::builder()
//!     .config(BalanceConfig::default())
//!     .build_with([
//!         ("10.0.0.1:80", Endpoint::new(backend("a")).tier(0)),
//!         ("10.0.0.2:80", Endpoint::new(backend("b")).tier(0)),
//!         ("10.0.1.1:80", Endpoint::new(backend("standby")).tier(1)),
//!     ])?;
//! for _ in 0..10 {
//!     let served_by = balance.ready().await?.call(WithAttempt::new("GET /")).await?;
//!     assert_ne!(served_by, "standby");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! - **Shared table, private views.** The endpoint set is an immutable
//!   snapshot in a shared cell: membership changes (a lock,
//!   rare) build a new snapshot and bump a generation counter; each clone
//!   of the balancer keeps its own `Arc` of the snapshot and only checks the
//!   counter per call. Health, load and counters are atomics in each
//!   endpoint, so selection never locks.
//! - **No `Buffer`.** The pick happens in `call` (it depends on the
//!   request: tried endpoints, hash key), so `poll_ready` is always ready.
//!   The response future drives the picked endpoint's `poll_ready` on a
//!   clone of its service (`S: Clone`, like `ServiceExt::oneshot`). A
//!   request is only ever sent to the endpoint it was picked for, even if
//!   that endpoint is removed meanwhile (tower#856); if a gated endpoint
//!   (an open breaker) turns out not ready before the request is sent, the
//!   request is picked again elsewhere.
//! - **Background tasks only for membership.** A `Discover` stream and
//!   active health checks are driven by tokio tasks that hold no strong
//!   reference to the balancer and stop when its last clone is dropped.
//! - **Time.** A call reads the clock once, for selection, EWMA decay, slow
//!   start, ejection expiry and the latency's start; the PeakEWMA picker
//!   reads it once more when the response arrives, to measure the latency.
//!   Tier plans are recounted every `tiers.refresh` (100 ms) or at once
//!   when an ejection or membership change marks them stale; ejections
//!   expire and probes fall due without a timer: one shared atomic holds
//!   the earliest such time, and the first pick at or after it recounts
//!   (reporting a restoration before the endpoint serves) and claims the
//!   due probe with a compare-and-swap on the endpoint's probe time.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

#[cfg(feature = "breaker")]
mod breaker;
mod builder;
mod clock;
pub mod config;
mod discover;
mod ejections;
mod endpoint;
mod error;
mod future;
mod health;
mod healthcheck;
mod inflight;
mod members;
mod outlier;
mod pick;
mod planner;
mod service;
mod shared;
// Not API: public, and hidden, only for its loom model in `tests/loom.rs`.
#[doc(hidden)]
pub mod snapshot;
mod table;
mod tiers;
mod tuning;

#[cfg(feature = "breaker")]
pub use breaker::BreakerGate;
pub use builder::BalanceBuilder;
pub use config::{
    BalanceConfig, FailurePercentageConfig, HealthCheckConfig, LoadConfig, OutlierConfig, Picker, SlowStartConfig,
    SuccessRateConfig, TierConfig,
};
pub use endpoint::{Endpoint, EndpointStats};
pub use error::ConfigError;
pub use future::ResponseFuture;
pub use health::HealthGate;
pub use service::{Balance, Endpoints};
