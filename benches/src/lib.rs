//! Benchmarks and the scenario lab of the `ha` crates.
//!
//! Criterion micro-benchmarks (ns and allocations per call) and the scenario
//! lab, which replays the same seeded traffic against every contender
//! (ours, tower's, round robin, an oracle) on virtual time.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod alloc;
pub mod lab;
