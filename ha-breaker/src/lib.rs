//! Circuit breakers and per-endpoint health gates for tower services.
//!
//! `ha-breaker` stops calling an endpoint that is failing (consecutive
//! failures, failure rate or slow-call rate over a sliding window), lets a
//! bounded number of probes through after a growing wait, and closes again
//! when they pass. Its hot path is lock-free.
//!
//! The public API lands with its issue; this crate has none yet.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
