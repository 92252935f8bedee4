//! The scenario lab: balancing, retries and hedging measured side by side on
//! simulated backends, on virtual time.
//!
//! - [`scenario`]: scenario files (TOML) and their validation;
//! - [`dist`]: service-time distributions;
//! - [`sim`]: the simulated backends and the client-stack plumbing;
//! - [`contender`]: the registry of contenders (tower's balancers, retry and
//!   hedge, round robin, random, an oracle);
//! - [`ha`]: ha's own contenders (ha-balance, ha-retry);
//! - [`run`]: runs one (scenario, contender, seed) and measures it;
//! - [`report`]: JSON lines, markdown tables and SVG latency plots.

pub mod contender;
pub mod dist;
pub mod ha;
pub mod report;
pub mod run;
pub mod scenario;
pub mod sim;
