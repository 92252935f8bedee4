//! Errors building a balancer.

/// A configuration value is out of its range, or the builder lacks
/// something the configuration needs: the one error type of every `ha`
/// config, re-exported from `ha-core`.
pub use ha_core::ConfigError;
