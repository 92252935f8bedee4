//! One configuration for the whole stack, with a section per layer.
//!
//! Every section has production defaults, so an empty file is a valid
//! configuration; unknown keys are rejected, and [`Config::validate`] names
//! the offending field of any value out of range.
//!
//! ```
//! use std::time::Duration;
//!
//! let config = ha::Config::from_toml_str(r#"
//!     [timeouts]
//!     attempt = "500ms"
//!
//!     [retry]
//!     max_attempts = 4
//!
//!     [balance.outlier]
//!     consecutive_failures = 3
//! "#).unwrap();
//! assert_eq!(config.timeouts.attempt, Some(Duration::from_millis(500)));
//! assert_eq!(config.retry.max_attempts, 4);
//!
//! let err = ha::Config::from_toml_str("[retry]\nmax_attempts = 0\n").unwrap_err();
//! assert_eq!(err.field(), "retry.max_attempts");
//! ```

use std::path::Path;
use std::time::Duration;

use ha_balance::BalanceConfig;
use ha_breaker::BreakerConfig;
use ha_retry::{HedgeConfig, RetryConfig};
use serde::{Deserialize, Serialize};

/// The standard stack's configuration. `Config::default()` is what a stack
/// built without one uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The most bytes of a request body kept so it can be sent again.
    /// A longer body is sent once and never retried. Default 64 KiB.
    pub max_replay_bytes: usize,
    /// The overall deadline and the per-try timeout.
    pub timeouts: TimeoutConfig,
    /// Retries: attempts, backoff, and the budget shared with hedging.
    /// Its `per_try_timeout` and `deadline` must stay unset: the stack takes
    /// them from `timeouts`.
    pub retry: RetryConfig,
    /// Hedging: off unless the section is present. Hedges draw on the retry
    /// budget (this section's own `budget` is ignored).
    pub hedge: Option<HedgeConfig>,
    /// Endpoint selection, priority tiers, outlier ejection, slow start.
    pub balance: BalanceConfig,
    /// The circuit breaker each endpoint gets. Its `reject_mode` is ignored:
    /// the stack's breakers are advisory (an open one takes its endpoint out
    /// of selection, unless the endpoint fails alike with its peers, so
    /// breakers that open together under a fleet-wide overload do not
    /// starve the fleet, or the endpoints left queue without it).
    pub breaker: BreakerConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_replay_bytes: ha_retry::body::DEFAULT_MAX_REPLAY_BYTES,
            timeouts: TimeoutConfig::default(),
            retry: RetryConfig::default(),
            hedge: None,
            balance: BalanceConfig::default(),
            breaker: BreakerConfig::default(),
        }
    }
}

/// How long a request and each of its attempts may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutConfig {
    /// The whole request, attempts and backoff included; `None` for no
    /// limit. Default 10 s.
    #[serde(with = "ha_core::config::opt_duration", alias = "request_ms")]
    pub request: Option<Duration>,
    /// One attempt at one endpoint; an attempt that takes longer fails with
    /// `AttemptTimedOut`, which the breaker and outlier detection count and
    /// the retry layer may retry elsewhere. `None` for no limit. Default 2 s.
    #[serde(with = "ha_core::config::opt_duration", alias = "attempt_ms")]
    pub attempt: Option<Duration>,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig { request: Some(Duration::from_secs(10)), attempt: Some(Duration::from_secs(2)) }
    }
}

impl Config {
    /// Parses and validates a TOML document.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| parse_error(text, e))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        Config::from_toml_str(&text)
    }

    /// Checks every value; the error names the field, as a dotted path
    /// from the top (`balance.outlier.interval`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_replay_bytes > 64 * 1024 * 1024 {
            return Err(ConfigError::new("max_replay_bytes", "must be at most 64 MiB"));
        }
        if self.timeouts.request == Some(Duration::ZERO) {
            return Err(ConfigError::new("timeouts.request", "must be positive"));
        }
        if self.timeouts.attempt == Some(Duration::ZERO) {
            return Err(ConfigError::new("timeouts.attempt", "must be positive"));
        }
        if self.retry.per_try_timeout.is_some() {
            return Err(ConfigError::new("retry.per_try_timeout", "is set by timeouts.attempt in a stack"));
        }
        if self.retry.deadline.is_some() {
            return Err(ConfigError::new("retry.deadline", "is set by timeouts.request in a stack"));
        }
        self.retry.validate().map_err(|e| e.in_section("retry"))?;
        if let Some(hedge) = &self.hedge {
            hedge.validate().map_err(|e| e.in_section("hedge"))?;
        }
        self.balance.validate().map_err(|e| e.in_section("balance"))?;
        self.breaker.validate().map_err(|e| e.in_section("breaker"))?;
        Ok(())
    }
}

/// A configuration that cannot be used: a value out of range, an unknown
/// key, a wrong type, or a file that cannot be read. The one error type of
/// every `ha` config, re-exported from `ha-core`; a layer's error reaches
/// here with its field under the layer's section (`retry.max_attempts`).
pub use ha_core::ConfigError;

/// A change a running stack cannot take: `what` is fixed at build time.
pub(crate) fn fixed(field: &'static str, what: &str) -> ConfigError {
    ConfigError::new(field, format!("{what} is fixed when the stack is built; build a new stack to change it"))
}

/// A TOML error, as the key it names (the whole message when it names
/// none) and the line it is on.
fn parse_error(text: &str, err: toml::de::Error) -> ConfigError {
    let reason = err.message().to_owned();
    let field = field_of(&reason).unwrap_or_default();
    let at = err.span().map(|s| {
        let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
        format!(" (line {line})")
    });
    ConfigError::new(field, format!("{reason}{}", at.unwrap_or_default()))
}

/// The key a TOML error message names (`unknown field `retries``).
fn field_of(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let config = Config::default();
        config.validate().unwrap();
        let text = toml::to_string(&config).unwrap();
        assert_eq!(Config::from_toml_str(&text).unwrap(), config);
        assert_eq!(Config::from_toml_str("").unwrap(), config);
    }

    #[test]
    fn every_invalid_field_is_named() {
        let cases = [
            ("max_replay_bytes = 1000000000", "max_replay_bytes"),
            ("[timeouts]\nrequest = 0", "timeouts.request"),
            ("[timeouts]\nattempt = \"0s\"", "timeouts.attempt"),
            // The `*_ms` names of earlier releases are still read.
            ("[timeouts]\nrequest_ms = 0", "timeouts.request"),
            ("[timeouts]\nattempt_ms = 0", "timeouts.attempt"),
            ("[retry]\nper_try_timeout = 100", "retry.per_try_timeout"),
            ("[retry]\ndeadline = 100", "retry.deadline"),
            ("[retry]\nmax_attempts = 0", "retry.max_attempts"),
            ("[retry.budget]\nratio = -1.0", "retry.budget.ratio"),
            ("[hedge]\nmax_hedges = 100", "hedge.max_hedges"),
            ("[balance.tiers]\noverprovisioning = 0.5", "balance.tiers.overprovisioning"),
            ("[breaker]\nconsecutive_failures = 0", "breaker.consecutive_failures"),
            ("[breaker.open_wait]\njitter = 2.0", "breaker.open_wait.jitter"),
            ("[retry]\nmax_attemps = 3", "max_attemps"),
            ("[breaker]\nfailure_rte = 0.5", "failure_rte"),
            ("[retries]\nmax_attempts = 3", "retries"),
        ];
        for (text, field) in cases {
            let err = Config::from_toml_str(text).expect_err(text);
            assert_eq!(err.field(), field, "{text}: {err}");
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn parse_errors_say_the_line() {
        let err = Config::from_toml_str("max_replay_bytes = 10\n\n[retry]\nmax_attempts = \"three\"\n").unwrap_err();
        assert!(err.reason().contains("line 4"), "{err}");
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    #[test]
    fn the_committed_example_parses_to_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/ha.example.toml");
        let config = Config::from_file(path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config, Config::default());
    }

    #[test]
    fn the_examples_hedge_section_uncommented_is_the_hedge_default() {
        let text = include_str!("../ha.example.toml");
        let section: String = text
            .lines()
            .skip_while(|l| *l != "# [hedge]")
            .take_while(|l| !l.is_empty())
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
            .collect();
        assert!(section.starts_with("[hedge]"), "{section}");
        let config = Config::from_toml_str(&section).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.hedge, Some(ha_retry::config::HedgeConfig::default()));
    }

    #[test]
    fn a_missing_file_is_an_error_not_a_panic() {
        let err = Config::from_file("/nonexistent/ha.toml").unwrap_err();
        assert!(err.reason().contains("cannot read"), "{err}");
    }
}
