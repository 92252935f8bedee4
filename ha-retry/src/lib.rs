//! Retries, backoff, budgets, per-try timeouts and hedged requests.
//!
//! `ha-retry` sends a request again when `ha-core`'s [`Classify`](ha_core::Classify)
//! says the failure is retryable, with exponential backoff and jitter, within
//! an overall deadline, and hedges slow requests; retries and hedges draw on
//! one lock-free [`RetryBudget`], so a failing dependency never multiplies
//! the load on it by more than the budget's ratio.
//!
//! # Example
//!
//! Retry a flaky service, each attempt bounded to 100 ms and the whole
//! request to 1 s:
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use ha_retry::{RetryConfig, RetryLayer};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let config = RetryConfig {
//!     max_attempts: 3,
//!     per_try_timeout: Some(Duration::from_millis(100)),
//!     deadline: Some(Duration::from_secs(1)),
//!     ..RetryConfig::default()
//! };
//! let layer = RetryLayer::new(config).expect("a valid config");
//!
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = calls.clone();
//! let flaky = service_fn(move |name: &'static str| {
//!     let n = counter.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         match n {
//!             0 => Err(std::io::Error::other("connection reset")),
//!             1 => {
//!                 tokio::time::sleep(Duration::from_secs(5)).await; // cut at 100 ms
//!                 Ok(format!("late {name}"))
//!             }
//!             _ => Ok(format!("hello {name}")),
//!         }
//!     }
//! });
//!
//! let svc = layer.layer(flaky);
//! assert_eq!(svc.oneshot("ha").await.unwrap(), "hello ha");
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! assert_eq!(layer.stats().retries, 2);
//! assert_eq!(layer.stats().attempt_timeouts, 1);
//! # }
//! ```
//!
//! # What is in here
//!
//! - [`retry`]: [`RetryLayer`] / [`Retry`]: attempts, per-try timeout,
//!   deadline, backoff, `Retry-After`, the budget.
//! - [`hedge`]: [`HedgeLayer`] / [`Hedge`]: extra attempts after a latency
//!   quantile, first success wins.
//! - [`budget`]: the lock-free [`RetryBudget`], shareable across layers and
//!   services.
//! - [`backoff`] and [`policy`]: the sans-IO backoff and retry decision.
//! - [`replay`] and [`body`]: how requests are copied for another attempt
//!   (`Req: Clone`, attempt tracking for balancers, HTTP bodies buffered up
//!   to a cap).
//! - [`interop`]: `tower::retry::Policy` in our layer, and our policy in
//!   `tower::retry::Retry`.
//! - [`config`]: serde configs with production defaults, validated.
//!
//! Retries and hedges go to a different endpoint when the request carries
//! an [`AttemptContext`](ha_core::AttemptContext): use
//! `RetryLayer::builder(config).track_attempts()` (for `Req: HasAttemptContext`, such
//! as [`WithAttempt<R>`](ha_core::WithAttempt)) or [`RetryLayer::http`].
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backoff;
#[cfg(feature = "http")]
pub mod body;
pub mod budget;
// Not public: its one generic type is named through `RetryLayerBuilder`
// and `HedgeLayerBuilder`, whose configuration parameter it hides.
mod builder;
pub mod config;
pub mod hedge;
pub mod interop;
pub mod policy;
pub mod replay;
pub mod retry;
mod timer;

pub use budget::RetryBudget;
pub use config::{
    BackoffConfig, BudgetConfig, ConfigError, HedgeConfig, HedgeDelay, Jitter, RetryAfterScope, RetryConfig,
};
pub use hedge::{Hedge, HedgeLayer, HedgeLayerBuilder, HedgeStats};
pub use retry::{Retry, RetryLayer, RetryLayerBuilder, RetryStats};
