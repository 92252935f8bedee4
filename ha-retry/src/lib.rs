//! Retries, backoff, budgets, per-try timeouts and hedged requests.
//!
//! `ha-retry` sends a request again when `ha-core`'s classification says the
//! failure is retryable, with exponential backoff and jitter, within an
//! overall deadline, and hedges slow requests; retries and hedges draw on one
//! budget so a failing dependency never multiplies the load on it.
//!
//! The public API lands with its issue; this crate has none yet.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
