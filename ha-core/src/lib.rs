//! The shared vocabulary of the `ha` crates.
//!
//! Every `ha` middleware speaks the same small language so that they compose
//! along the request path (retry/hedge → balance → breaker → transport):
//!
//! - [`classify`]: one [`Classify`] decides whether a response or error is a
//!   success, a retryable failure, a failure that must not be retried, or
//!   ignored. Breakers, budgets, outlier detection and retries all read it.
//! - [`attempt`]: the [`AttemptContext`] a logical request carries across its
//!   attempts (attempt number, endpoints tried, overall deadline).
//! - [`event`]: one [`Event`] enum for every state change, delivered to an
//!   [`Observer`] you install and emitted as a `tracing` event.
//! - [`stats`]: lock-free statistics primitives taking time as an argument: a
//!   peak-sensitive EWMA and count- and time-based outcome windows.
//! - [`config`]: the one [`ConfigError`] every config validates into, and
//!   the one duration format of config files.
//! - [`error`]: the typed errors every crate returns, downcastable from
//!   [`tower::BoxError`].
//! - [`hash`]: a hash that is the same in every build, for ring positions.
//! - [`live`]: a value replaced at run time (a live config) that readers
//!   check with one atomic load per call.
//!
//! # Example
//!
//! Classify an HTTP response and keep a latency estimate:
//!
//! ```
//! use std::time::Duration;
//! use ha_core::classify::{Classify, HttpClassifier, Outcome};
//! use ha_core::stats::PeakEwma;
//! use tokio::time::Instant;
//!
//! let classifier = HttpClassifier::default();
//! let request = http::Request::get("http://svc/items").body(()).unwrap();
//! let info = Classify::<_, http::Response<()>, tower::BoxError>::request_info(&classifier, &request);
//! let response = http::Response::builder().status(503).body(()).unwrap();
//! let outcome = Classify::<http::Request<()>, _, tower::BoxError>::classify(&classifier, &info, Ok(&response));
//! assert!(outcome.is_retryable());
//!
//! let start = Instant::now();
//! let ewma = PeakEwma::new(start, Duration::from_millis(30), Duration::from_secs(10));
//! ewma.observe(start, Duration::from_millis(120));
//! assert!(ewma.estimate(start) >= Duration::from_millis(119));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod attempt;
pub mod classify;
pub mod config;
pub mod error;
pub mod event;
pub mod hash;
// `lease`, `rng` and `sync` are the other `ha` crates' plumbing (response
// futures' `Arc` reuse, the pickers' and jitter's generator, the loom
// shim), not API: public only because those crates are built apart, and
// hidden so that they can change in any release.
#[doc(hidden)]
pub mod lease;
pub mod live;
#[doc(hidden)]
pub mod rng;
pub mod stats;
#[doc(hidden)]
pub mod sync;
pub mod time;

pub use attempt::{AttemptContext, EndpointId, HasAttemptContext, WithAttempt};
pub use classify::{Classify, Outcome};
pub use config::ConfigError;
pub use error::{
    AttemptTimedOut, BreakerOpen, BudgetExhausted, DeadlineExceeded, NoHealthyEndpoint, NotSent, RetriesExhausted,
};
pub use event::{Event, Events, Observer};
pub use time::Now;

/// The instant type used everywhere in `ha`: tokio's, so that tests can run
/// on paused virtual time.
pub use tokio::time::Instant;
