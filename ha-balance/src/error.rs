//! Errors building a balancer.

use std::fmt;

/// A configuration value is out of its range, or the builder lacks
/// something the configuration needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: &'static str,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, reason: &'static str) -> Self {
        ConfigError { field, reason }
    }

    /// The offending field, as a dotted path (`outlier.interval`).
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid balancer configuration: `{}` {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}
