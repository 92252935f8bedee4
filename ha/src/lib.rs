//! High availability from inside a Rust service.
//!
//! `ha` puts one standard stack in front of your hyper, tonic, reqwest or
//! any tower client: requests are spread over your endpoints (P2C over
//! PeakEWMA, priority tiers that fail over to secondary servers and zones),
//! failed ones are retried with backoff and slow ones optionally hedged
//! within one budget, failing endpoints are cut off by circuit breakers and
//! outlier ejection and let back in carefully, and endpoints come from a
//! list, any `Discover`, or SWIM membership.
//!
//! # Example
//!
//! Any tower client becomes the transport of a stack; a retry goes to an
//! endpoint the request has not tried:
//!
//! ```
//! use std::net::SocketAddr;
//! use ha::core::WithAttempt;
//! use ha::{Stack, Target};
//! use tower::{service_fn, BoxError, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ha::Error> {
//! let down = SocketAddr::from(([127, 0, 0, 1], 9001));
//! let up = SocketAddr::from(([127, 0, 0, 1], 9002));
//! // Stand-in for a real client: the endpoint at `down` refuses every request.
//! let transport = move |target: &Target| {
//!     let addr = target.addr;
//!     service_fn(move |_req: WithAttempt<&'static str>| async move {
//!         if addr == down { Err(BoxError::from("connection reset")) } else { Ok(addr) }
//!     })
//! };
//! let stack = Stack::builder(transport).endpoints([down, up]).build().expect("valid config");
//! for _ in 0..10 {
//!     assert_eq!(stack.clone().oneshot(WithAttempt::new("GET /")).await?, up);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! With a real client the adapters do the wiring, each behind the feature
//! of its name (`hyper`, `tonic`, `reqwest`):
//!
#![cfg_attr(feature = "hyper", doc = "- [`ha::hyper`](crate::hyper): a shared `hyper_util` client.")]
#![cfg_attr(feature = "tonic", doc = "- [`ha::tonic`](crate::tonic): the stack under generated tonic clients.")]
#![cfg_attr(feature = "reqwest", doc = "- [`ha::reqwest`](crate::reqwest): a shared `reqwest::Client`.")]
//!
//! # What is in here
//!
//! - [`Stack`] and [`StackBuilder`]: the composed stack, built from one
//!   [`Config`] (loadable from TOML) and one classifier.
//! - [`Target`] and [`Transport`]: what an endpoint is, and how its client
//!   is made.
//! - [`Error`]: what the stack decided (no healthy endpoint, breaker open,
//!   deadline, budget, retries exhausted), with the transport's error as
//!   its source.
//! - The crates themselves, to use on their own: [`core`], [`balance`],
//!   [`retry`], [`breaker`], `membership` (feature `membership`).
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
pub mod config;
#[cfg(feature = "dns")]
pub mod dns;
pub mod error;
pub mod request;
pub mod stack;
pub mod target;

#[cfg(any(feature = "hyper", feature = "reqwest"))]
mod addressing;

#[cfg(feature = "hyper")]
pub mod hyper;
#[cfg(feature = "membership")]
pub mod membership;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "reqwest")]
pub mod reqwest;
#[cfg(feature = "tonic")]
pub mod tonic;

pub use body::Body;
pub use config::{Config, ConfigError, TimeoutConfig};
pub use error::{Error, ErrorKind};
pub use request::StackRequest;
pub use stack::{Stack, StackBuilder};
pub use target::{Target, Transport};

/// The shared vocabulary: classification, attempt context, events, errors
/// (the `ha-core` crate).
pub mod core {
    pub use ha_core::*;
}

/// Endpoint selection, tiers, outlier ejection (the `ha-balance` crate).
pub mod balance {
    pub use ha_balance::*;
}

/// Retries, backoff, budgets, hedging (the `ha-retry` crate).
pub mod retry {
    pub use ha_retry::*;
}

/// Circuit breakers (the `ha-breaker` crate).
pub mod breaker {
    pub use ha_breaker::*;
}
