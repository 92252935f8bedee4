//! Service-time distributions of simulated backends: the one distribution
//! module the lab shares with the membership simulator
//! ([`ha_membership_sim::dist`]), so a scenario file writes a shape the same
//! way in both (`kind = "normal"`, `mean_ms`, `stddev_ms`, ...).
//!
//! The lab seeds one generator per (backend, request, attempt), so every
//! contender sees the same service time for the same attempt.

pub use ha_membership_sim::dist::{Dist, Part};
