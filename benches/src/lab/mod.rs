//! The scenario lab: balancing, retries and hedging measured side by side on
//! simulated backends, on virtual time.
//!
//! - [`scenario`]: scenario files (TOML) and their validation;
//! - [`dist`]: service-time distributions;
//! - [`sim`]: the simulated backends and the client-stack plumbing;
//! - [`contender`]: the registry of contenders (tower's balancers, retry and
//!   hedge, round robin, random, an oracle);
//! - [`ha`]: ha's own contenders (ha-balance, ha-retry);
//! - [`stacks`]: whole client stacks (ha's facade `Stack`, tower's
//!   retry/timeout/buffer/p2c), reaching the backends through [`remote`];
//! - [`settings`]: per-contender settings from the scenario file;
//! - [`run`]: runs one (scenario, contender, seed) and measures it;
//! - [`timeline`]: per-second success, p99 and backend shares;
//! - [`report`]: JSON lines, markdown tables and SVG latency plots.

pub mod contender;
pub mod discovery;
pub mod dist;
pub mod ha;
pub mod remote;
pub mod report;
pub mod run;
pub mod scenario;
pub mod settings;
pub mod share;
pub mod sim;
pub mod stacks;
pub mod timeline;
