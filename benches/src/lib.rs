//! Benchmarks and the scenario lab of the `ha` crates.
//!
//! Criterion micro-benchmarks (ns and allocations per call) and the scenario
//! lab, which replays the same seeded traffic against every contender
//! (ours, tower's, round robin, an oracle) on virtual time.
//!
//! # Example
//!
//! Run tower's PeakEWMA balancer and round robin on the same traffic, with
//! one of three backends slow for the middle of the run:
//!
//! ```
//! use ha_benches::lab::contender;
//! use ha_benches::lab::report::Summary;
//! use ha_benches::lab::run::{run, Trace};
//! use ha_benches::lab::scenario::Scenario;
//!
//! let scenario = Scenario::parse("slow_node", "inline", r#"
//!     contenders = ["round_robin", "tower_p2c_peak_ewma"]
//!     timeout_ms = 500
//!     [traffic]
//!     kind = "open"
//!     rate_per_s = 300
//!     duration_s = 10
//!     [[backends]]
//!     service = { kind = "normal", mean_ms = 20, stddev_ms = 2 }
//!     changes = [{ from_s = 2, to_s = 8, service = { kind = "constant", ms = 1000 } }]
//!     [[backends]]
//!     count = 2
//!     service = { kind = "normal", mean_ms = 20, stddev_ms = 2 }
//! "#).unwrap();
//! let trace = Trace::draw(&scenario, 1); // same traffic for every contender
//! let rr = Summary::of(&scenario, &run(&scenario, contender::find("round_robin").unwrap(), &trace));
//! let ewma = Summary::of(&scenario, &run(&scenario, contender::find("tower_p2c_peak_ewma").unwrap(), &trace));
//! assert!(ewma.success_rate > rr.success_rate);
//! println!("{}", ewma.to_json());
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod alloc;
pub mod lab;
