//! What makes a breaker trip, how long it stays open, and how it recovers.
//!
//! [`BreakerConfig`] is plain data (serde, with production defaults) so it can
//! live in a config file; [`BreakerConfig::validate`] (called by every
//! constructor) rejects impossible values with a typed [`ConfigError`].
//!
//! ```
//! use ha_breaker::BreakerConfig;
//!
//! let config: BreakerConfig = serde_json::from_str(r#"{ "failure_rate": 0.25 }"#).unwrap();
//! assert_eq!(config.failure_rate, Some(0.25));
//! assert_eq!(config.window, BreakerConfig::default().window);
//! assert!(config.validate().is_ok());
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The window the failure and slow-call rates are computed over while closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowConfig {
    /// The last `size` calls. Needs no clock read on the success path: the
    /// fastest choice and the default.
    Count {
        /// Calls in the window.
        size: u32,
    },
    /// The calls of the last `span`, in `buckets` buckets. Costs one clock
    /// read per call.
    Time {
        /// How far back the window reaches.
        #[serde(with = "ha_core::config::duration")]
        span: Duration,
        /// How many buckets the span is cut into (the window slides by one
        /// bucket at a time).
        buckets: u32,
    },
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig::Count { size: 100 }
    }
}

/// Slow-call detection: calls slower than `threshold` count as slow, and the
/// breaker trips when the slow share of the window reaches `rate`.
///
/// Measuring a call's duration costs two clock reads per call (start and end).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlowCallConfig {
    /// A call that takes at least this long is slow.
    #[serde(with = "ha_core::config::duration")]
    pub threshold: Duration,
    /// The share of slow calls in the window, in `(0, 1]`, that trips.
    pub rate: f64,
}

impl Default for SlowCallConfig {
    fn default() -> Self {
        SlowCallConfig { threshold: Duration::from_secs(5), rate: 1.0 }
    }
}

/// How long the breaker stays open before it admits probes.
///
/// The `n`-th consecutive trip waits `base * multiplier^(n-1)`, capped at
/// `max`, then shortened by a random share of up to `jitter` (so a fleet of
/// clients does not probe in lockstep). The trip count goes back to zero once
/// the breaker has stayed closed for `reset_after`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenWaitConfig {
    /// The wait after a first trip.
    #[serde(with = "ha_core::config::duration")]
    pub base: Duration,
    /// The growth factor on each further trip, at least 1.
    pub multiplier: f64,
    /// The longest wait.
    #[serde(with = "ha_core::config::duration")]
    pub max: Duration,
    /// The largest share of the wait removed at random, in `[0, 1)`.
    pub jitter: f64,
    /// How long the breaker must stay closed for the wait to go back to `base`.
    #[serde(with = "ha_core::config::duration")]
    pub reset_after: Duration,
}

impl Default for OpenWaitConfig {
    fn default() -> Self {
        OpenWaitConfig {
            base: Duration::from_secs(5),
            multiplier: 2.0,
            max: Duration::from_secs(120),
            jitter: 0.2,
            reset_after: Duration::from_secs(60),
        }
    }
}

/// What a call whose response future is dropped before it finishes counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CancelledAs {
    /// Nothing: the caller gave up, which says nothing about the endpoint.
    #[default]
    Ignored,
    /// A failure (for callers whose timeouts drop the future).
    Failure,
}

/// What the service does while the breaker rejects calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RejectMode {
    /// `poll_ready` stays ready and `call` fails at once with
    /// [`BreakerOpen`](ha_core::BreakerOpen).
    #[default]
    FailFast,
    /// `poll_ready` returns `Pending` and wakes the task when a probe may be
    /// sent, so a balancer skips the endpoint meanwhile.
    NotReady,
    /// The breaker rejects nothing itself: an open breaker is advice to a
    /// balancer's health gate (`ha_balance::BreakerGate`) to route around
    /// the endpoint, and a call that comes anyway goes through, untracked
    /// (only the half-open probes decide when the breaker closes). The
    /// balancer then judges the advice against the fleet: a breaker open on
    /// an endpoint that fails alike with its peers (a fleet shedding load,
    /// where every breaker opens) is set aside rather than starving the
    /// fleet, and so is one whose endpoint still serves while the others
    /// queue without it. The `ha` stack's breakers use this.
    Advisory,
}

/// The whole configuration of one breaker. Every field has a production
/// default; `None` turns a trip condition off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Trip after this many failures in a row (default 20): catches an
    /// endpoint that died before the window holds `minimum_calls`, or
    /// whose time window is thin.
    pub consecutive_failures: Option<u32>,
    /// Trip when the failure share of the window reaches this rate, in
    /// `(0, 1]` (default 0.5).
    pub failure_rate: Option<f64>,
    /// Trip on slow calls (default off: it costs clock reads).
    pub slow_calls: Option<SlowCallConfig>,
    /// The window rates are computed over (default the last 100 calls).
    pub window: WindowConfig,
    /// Rates are only judged once the window holds this many calls (default 20).
    pub minimum_calls: u32,
    /// How long the breaker stays open.
    pub open_wait: OpenWaitConfig,
    /// How many probe calls half-open admits at once, and how many outcomes
    /// it waits for before deciding (default 5). It closes when fewer than
    /// `failure_rate` of them failed (half when `failure_rate` is unset) and,
    /// with slow-call detection, fewer than its rate were slow; it reopens
    /// otherwise, with a longer wait. Ignored and cancelled probes give their
    /// slot back.
    pub half_open_probes: u32,
    /// What a dropped response future counts as (default nothing).
    pub cancelled: CancelledAs,
    /// What `poll_ready` does while rejecting (default: stays ready, `call` fails fast).
    pub reject_mode: RejectMode,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: Some(20),
            failure_rate: Some(0.5),
            slow_calls: None,
            window: WindowConfig::default(),
            minimum_calls: 20,
            open_wait: OpenWaitConfig::default(),
            half_open_probes: 5,
            cancelled: CancelledAs::Ignored,
            reject_mode: RejectMode::FailFast,
        }
    }
}

/// The largest count window.
pub const MAX_WINDOW_CALLS: u32 = 1 << 19;
/// The most buckets in a time window.
pub const MAX_WINDOW_BUCKETS: u32 = 4096;
/// The most concurrent half-open probes.
pub const MAX_HALF_OPEN_PROBES: u32 = 1000;

impl BreakerConfig {
    /// Checks every value; the breaker constructors call it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.consecutive_failures == Some(0) {
            return Err(ConfigError::new("consecutive_failures", "must be at least 1 (or unset to disable it)"));
        }
        if let Some(r) = self.failure_rate {
            check_rate("failure_rate", r)?;
        }
        if let Some(s) = &self.slow_calls {
            check_rate("slow_calls.rate", s.rate)?;
            if s.threshold.is_zero() {
                return Err(ConfigError::new("slow_calls.threshold", "must be positive"));
            }
        }
        match self.window {
            WindowConfig::Count { size } => {
                if size == 0 || size > MAX_WINDOW_CALLS {
                    return Err(window_size_error(size, MAX_WINDOW_CALLS));
                }
                if self.minimum_calls > size {
                    return Err(ConfigError::new(
                        "minimum_calls",
                        format!("({}) exceeds the window size ({size})", self.minimum_calls),
                    ));
                }
            }
            WindowConfig::Time { span, buckets } => {
                if buckets == 0 || buckets > MAX_WINDOW_BUCKETS {
                    return Err(window_size_error(buckets, MAX_WINDOW_BUCKETS));
                }
                if span.as_nanos() < u128::from(buckets) * 1_000_000 {
                    return Err(ConfigError::new("window.span", "must be at least 1 ms per bucket"));
                }
            }
        }
        if self.minimum_calls == 0 {
            return Err(ConfigError::new("minimum_calls", "must be at least 1"));
        }
        let w = &self.open_wait;
        if w.base.is_zero() {
            return Err(ConfigError::new("open_wait.base", "must be positive"));
        }
        if w.max < w.base {
            return Err(ConfigError::new("open_wait.max", "must be at least open_wait.base"));
        }
        if w.max > Duration::from_secs(86_400 * 365) {
            return Err(ConfigError::new("open_wait.max", "must be at most a year"));
        }
        if !(w.multiplier.is_finite() && w.multiplier >= 1.0) {
            return Err(ConfigError::new(
                "open_wait.multiplier",
                format!("must be finite and at least 1, got {}", w.multiplier),
            ));
        }
        if !(0.0..1.0).contains(&w.jitter) {
            return Err(ConfigError::new("open_wait.jitter", format!("must be in [0, 1), got {}", w.jitter)));
        }
        if self.half_open_probes == 0 || self.half_open_probes > MAX_HALF_OPEN_PROBES {
            return Err(ConfigError::new(
                "half_open_probes",
                format!("{} must be in 1..={MAX_HALF_OPEN_PROBES}", self.half_open_probes),
            ));
        }
        Ok(())
    }

    /// True when a call's duration must be measured (two clock reads per call).
    pub fn measures_duration(&self) -> bool {
        self.slow_calls.is_some()
    }
}

fn check_rate(field: &'static str, rate: f64) -> Result<(), ConfigError> {
    if rate > 0.0 && rate <= 1.0 {
        Ok(())
    } else {
        Err(ConfigError::new(field, format!("must be in (0, 1], got {rate}")))
    }
}

/// A window of `size` calls or buckets, outside `1..=max`.
pub(crate) fn window_size_error(size: u32, max: u32) -> ConfigError {
    ConfigError::new("window", format!("size {size} must be in 1..={max}"))
}

/// A [`BreakerConfig`] value that cannot work: the one error type of every
/// `ha` config, re-exported from `ha-core`. Its field names the value
/// (`open_wait.max`) and its reason carries what was asked for and the
/// limit (`size 0 must be in 1..=524288`).
pub use ha_core::ConfigError;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let c = BreakerConfig::default();
        c.validate().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        let back: BreakerConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        assert!(!c.measures_duration());
    }

    #[test]
    fn a_typo_is_an_error_not_the_default() {
        // Every level of a breaker config, the window's variants included:
        // a misspelt key must not silently leave the default in force.
        for text in [
            r#"{ "failure_rte": 0.25 }"#,
            r#"{ "window": { "count": { "size": 50, "sise": 5 } } }"#,
            r#"{ "window": { "time": { "span": 10000, "buckets": 10, "bucket": 5 } } }"#,
            r#"{ "open_wait": { "bse": 100 } }"#,
            r#"{ "slow_calls": { "threshold": 100, "rate": 0.5, "rte": 0.1 } }"#,
        ] {
            assert!(serde_json::from_str::<BreakerConfig>(text).is_err(), "{text}");
        }
        let keyed = serde_json::from_str::<crate::KeyedConfig>(r#"{ "max_key": 10 }"#);
        assert!(keyed.is_err(), "{keyed:?}");
        let fine: BreakerConfig = serde_json::from_str(r#"{ "window": { "count": { "size": 50 } } }"#).unwrap();
        assert_eq!(fine.window, WindowConfig::Count { size: 50 });
    }

    #[test]
    fn bad_values_get_typed_errors() {
        let bad = |f: fn(&mut BreakerConfig)| {
            let mut c = BreakerConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        let field = |f: fn(&mut BreakerConfig)| bad(f).field().to_owned();
        assert_eq!(
            bad(|c| c.consecutive_failures = Some(0)),
            ConfigError::new("consecutive_failures", "must be at least 1 (or unset to disable it)")
        );
        assert_eq!(bad(|c| c.failure_rate = Some(0.0)), ConfigError::new("failure_rate", "must be in (0, 1], got 0"));
        assert_eq!(field(|c| c.failure_rate = Some(f64::NAN)), "failure_rate");
        assert_eq!(
            bad(|c| c.window = WindowConfig::Count { size: 0 }),
            ConfigError::new("window", format!("size 0 must be in 1..={MAX_WINDOW_CALLS}"))
        );
        assert_eq!(
            bad(|c| c.minimum_calls = 101),
            ConfigError::new("minimum_calls", "(101) exceeds the window size (100)")
        );
        assert_eq!(bad(|c| c.minimum_calls = 0), ConfigError::new("minimum_calls", "must be at least 1"));
        assert_eq!(bad(|c| c.open_wait.base = Duration::ZERO), ConfigError::new("open_wait.base", "must be positive"));
        assert_eq!(
            bad(|c| c.open_wait.max = Duration::from_secs(1)),
            ConfigError::new("open_wait.max", "must be at least open_wait.base")
        );
        assert_eq!(field(|c| c.open_wait.multiplier = 0.5), "open_wait.multiplier");
        assert!(bad(|c| c.open_wait.multiplier = 0.5).reason().contains("got 0.5"));
        assert_eq!(field(|c| c.open_wait.jitter = 1.0), "open_wait.jitter");
        assert_eq!(field(|c| c.half_open_probes = 0), "half_open_probes");
        assert_eq!(
            field(|c| c.slow_calls = Some(SlowCallConfig { threshold: Duration::ZERO, rate: 0.5 })),
            "slow_calls.threshold"
        );
        assert_eq!(
            field(|c| c.window = WindowConfig::Time { span: Duration::from_millis(5), buckets: 10 }),
            "window.span"
        );
        assert!(bad(|c| c.failure_rate = Some(2.0)).to_string().contains("failure_rate"));
    }
}
