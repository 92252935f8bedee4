//! Endpoint selection for tower services.
//!
//! `ha-balance` picks the endpoint for each attempt of a request: P2C over
//! PeakEWMA latency (the default), least-pending, weighted round robin and
//! consistent hashing; it keeps traffic on the primary tier while that tier
//! is healthy and spills to secondary tiers as it degrades, ejects outliers
//! (Envoy's model) and skips endpoints whose `ha-breaker` is open. It reads
//! the `ha-core` attempt context so a retry never goes back to an endpoint
//! the request already tried.
//!
//! The public API lands with its issue; this crate has none yet.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
