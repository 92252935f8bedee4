//! The settings of retries, backoff, budgets and hedging, with production
//! defaults, serde support and validation.
//!
//! Durations are integers of milliseconds or strings with a unit in config
//! files (`per_try_timeout = 500`, `per_try_timeout = "500ms"`), as in every
//! `ha` config ([`ha_core::config`]). Every config is checked by its `validate`
//! method, which the layers' builders call, so a bad value is a
//! [`ConfigError`] when the service is built, never a panic while serving.
//!
//! ```
//! use ha_retry::config::{Jitter, RetryConfig};
//!
//! let cfg: RetryConfig = serde_json::from_str(r#"{
//!     "max_attempts": 4,
//!     "deadline": 2000,
//!     "backoff": { "base": 20, "max": 500, "jitter": "decorrelated" }
//! }"#).unwrap();
//! assert_eq!(cfg.backoff.jitter, Jitter::Decorrelated);
//! assert_eq!(cfg.budget.ratio, 0.2); // left at its default
//! cfg.validate().unwrap();
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a retry's backoff is randomised, so that clients that failed together
/// do not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// No randomness: exactly the exponential delay.
    None,
    /// Uniform in `[0, d]` where `d` is the exponential delay (AWS "full jitter").
    Full,
    /// Uniform in `[d/2, d]` (AWS "equal jitter").
    Equal,
    /// Uniform in `[base, 3 × previous delay]`, capped (AWS "decorrelated jitter").
    Decorrelated,
}

/// Exponential backoff between retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// Whether the first retry is sent at once, without a delay. Default
    /// true: a balancer sends a retry to an endpoint the request has not
    /// tried (ha-balance does), so the first retry adds no load to the
    /// target that failed, and the budget bounds the extra load on the
    /// fleet whatever the timing; waiting would only add latency (Linkerd
    /// and Finagle's requeues retry at once). Later retries wait the
    /// backoff, which starts at `base`; so does the first when the attempt
    /// never reached a server (a refused connection is often a zone's, not
    /// one host's: the wait lets the balancer fail over). Set it to false
    /// when every attempt goes to the same target.
    pub immediate_first: bool,
    /// The delay before the first retry that waits, before jitter. Default
    /// 25 ms.
    #[serde(with = "ha_core::config::duration")]
    pub base: Duration,
    /// The cap: no backoff is ever longer. Default 1 s.
    #[serde(with = "ha_core::config::duration")]
    pub max: Duration,
    /// Each retry's delay is the previous one times this. Default 2.
    pub multiplier: f64,
    /// How the delay is randomised. Default [`Jitter::Full`].
    pub jitter: Jitter,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            immediate_first: true,
            base: Duration::from_millis(25),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: Jitter::Full,
        }
    }
}

impl BackoffConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.base > self.max {
            return Err(ConfigError::new("backoff.base", "must not exceed backoff.max"));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(ConfigError::new("backoff.multiplier", "must be a finite number >= 1"));
        }
        Ok(())
    }
}

/// The budget for extra load (retries and hedges).
///
/// Retries are allowed up to `ratio` of the requests of the last `ttl`, plus
/// `min_per_second` retries per second whatever the traffic (so a client
/// with little traffic can still retry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Extra attempts per request. Default 0.2 (20%). At most 1000.
    pub ratio: f64,
    /// Extra attempts allowed per second even without traffic. Default 10.
    pub min_per_second: u32,
    /// How long a request's deposit counts. Default 10 s.
    #[serde(with = "ha_core::config::duration")]
    pub ttl: Duration,
    /// The number of buckets the `ttl` is split into: deposits expire one
    /// bucket at a time. Default 100 (100 ms each at the default `ttl`).
    /// At most 1024. To keep its bound over every window, the budget counts
    /// a deposit for up to one bucket less than `ttl` and a withdrawal for
    /// up to one bucket more: with 10 buckets a steady client could retry
    /// 18% of its requests at a 20% ratio, with 100 about 19.8%.
    pub buckets: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig { ratio: 0.2, min_per_second: 10, ttl: Duration::from_secs(10), buckets: 100 }
    }
}

impl BudgetConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.ratio.is_finite() && (0.0..=1000.0).contains(&self.ratio)) {
            return Err(ConfigError::new("budget.ratio", "must be between 0 and 1000"));
        }
        if !(1..=1024).contains(&self.buckets) {
            return Err(ConfigError::new("budget.buckets", "must be between 1 and 1024"));
        }
        if self.ttl < Duration::from_millis(1) || self.ttl.as_nanos() / u128::from(self.buckets) == 0 {
            return Err(ConfigError::new("budget.ttl", "must be at least 1 ms"));
        }
        if self.ttl > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::new("budget.ttl", "must be at most a day"));
        }
        Ok(())
    }
}

/// How [`Retry`](crate::Retry) sends a request again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// The most attempts of one request, the first included. Default 3.
    /// Attempts that never reached a server (a refused connection, an open
    /// breaker, no healthy endpoint) are requeued, not counted, up to
    /// `max_attempts` of them: the server never saw them.
    pub max_attempts: u32,
    /// How long one attempt may take; `None` for no limit. Default none.
    /// A retry's clock starts when it is sent; without a deadline, the first
    /// attempt's starts when its future is first found pending (an answer
    /// ready at once reads no clock). An attempt that takes longer fails with
    /// [`AttemptTimedOut`](ha_core::AttemptTimedOut), which the classifier
    /// may call retryable.
    #[serde(with = "ha_core::config::opt_duration")]
    pub per_try_timeout: Option<Duration>,
    /// How long the request may take in all, attempts and backoff included;
    /// `None` for no limit. A deadline already set in the request's
    /// [`AttemptContext`](ha_core::AttemptContext) applies too. Default none.
    #[serde(with = "ha_core::config::opt_duration")]
    pub deadline: Option<Duration>,
    /// The backoff between attempts.
    pub backoff: BackoffConfig,
    /// The longest server-requested `Retry-After` delay honoured: a longer
    /// one is shortened to this. Default 10 s.
    #[serde(with = "ha_core::config::duration")]
    pub max_retry_after: Duration,
    /// Which retries a server-requested delay holds back. Default
    /// [`RetryAfterScope::Server`].
    pub retry_after_scope: RetryAfterScope,
    /// The budget retries draw on (ignored when a shared budget is given to
    /// the layer).
    pub budget: BudgetConfig,
    /// The name events carry. Default `"retry"`.
    pub name: String,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            per_try_timeout: None,
            deadline: None,
            backoff: BackoffConfig::default(),
            max_retry_after: Duration::from_secs(10),
            retry_after_scope: RetryAfterScope::default(),
            budget: BudgetConfig::default(),
            name: "retry".to_owned(),
        }
    }
}

impl RetryConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::new("max_attempts", "must be at least 1"));
        }
        if self.per_try_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::new("per_try_timeout", "must be positive"));
        }
        if self.deadline == Some(Duration::ZERO) {
            return Err(ConfigError::new("deadline", "must be positive"));
        }
        self.backoff.validate()?;
        self.budget.validate()
    }
}

/// Which retries a server-requested delay (HTTP `Retry-After`, gRPC
/// `grpc-retry-pushback-ms`) holds back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryAfterScope {
    /// The delay speaks for the server that sent it: it holds back a retry
    /// that goes back to a server the request tried (the only one, or all
    /// of them), not one the balancer below sends to a server the request
    /// has not tried ([`AttemptContext::untried`](ha_core::AttemptContext::untried)),
    /// which goes at once. Under an overloaded fleet whose servers each ask
    /// for a wait, a request is not held for a server it will not go back to.
    #[default]
    Server,
    /// The delay holds back the request's next retry wherever it goes, as
    /// gRFC A6 specifies for gRPC pushback (`ha::tonic` uses this scope).
    Request,
}

/// How the hedging delay is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HedgeDelay {
    /// Hedge after this quantile of recent latencies (0.95 for p95).
    Percentile(f64),
    /// Hedge so that about this fraction of requests get a hedge (Finagle's
    /// `maxExtraLoad`): 0.05 hedges at p95.
    MaxExtraLoad(f64),
    /// Hedge after a fixed delay.
    Fixed(#[serde(with = "ha_core::config::duration")] Duration),
}

impl HedgeDelay {
    /// The latency quantile this delay hedges at, if it is adaptive.
    pub fn quantile(&self) -> Option<f64> {
        match *self {
            HedgeDelay::Percentile(q) => Some(q),
            HedgeDelay::MaxExtraLoad(load) => Some(1.0 - load),
            HedgeDelay::Fixed(_) => None,
        }
    }
}

/// How [`Hedge`](crate::Hedge) sends extra attempts of slow requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HedgeConfig {
    /// The most extra attempts per request. Default 1.
    pub max_hedges: u32,
    /// When a hedge is sent. Default p95 of recent latencies.
    pub delay: HedgeDelay,
    /// No hedge is sent earlier than this after the first attempt. Default 1 ms.
    #[serde(with = "ha_core::config::duration")]
    pub min_delay: Duration,
    /// Latencies recorded before adaptive hedging starts. Default 100.
    pub min_samples: u64,
    /// The delay used until `min_samples` latencies are known; `None` (the
    /// default) sends no hedge until then. Set it when the first requests
    /// after start-up matter and their latency is roughly known.
    #[serde(with = "ha_core::config::opt_duration")]
    pub warmup_delay: Option<Duration>,
    /// Latencies are kept for between one and two of these. Default 10 s.
    #[serde(with = "ha_core::config::duration")]
    pub window: Duration,
    /// How often the hedging delay is recomputed from the latencies.
    /// Default 1 s.
    #[serde(with = "ha_core::config::duration")]
    pub refresh: Duration,
    /// Hedging pauses while fewer than this share of recent hedged
    /// requests were answered by a hedge (a hedge that loses to the first
    /// attempt was load for nothing); one would-be hedge in eight still
    /// goes, to see whether they pay again. Default 0.25; 0 hedges whatever
    /// hedges win.
    pub min_win_share: f64,
    /// Hedging pauses while the median latency is this many times its
    /// calmest (the lowest median seen, let rise 2% a `refresh`): the bulk
    /// of the requests got slower, the fleet slowed down or queues, and a
    /// hedge finds no faster endpoint, only adds to the queues. Default
    /// 1.25 (the lab's loaded fleets with hedging on: against 2, an
    /// overload spike 75.3% -> 80.6% success, a scale-in's p99 106 -> 82
    /// ms; a bimodal service's hedged p99 70.0 -> 71.6 ms); 0 never pauses
    /// for it.
    pub max_median_rise: f64,
    /// The budget hedges draw on (ignored when a shared budget is given to
    /// the layer).
    pub budget: BudgetConfig,
    /// The name events carry. Default `"hedge"`.
    pub name: String,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            max_hedges: 1,
            delay: HedgeDelay::Percentile(0.95),
            min_delay: Duration::from_millis(1),
            min_samples: 100,
            warmup_delay: None,
            window: Duration::from_secs(10),
            refresh: Duration::from_secs(1),
            min_win_share: 0.25,
            max_median_rise: 1.25,
            budget: BudgetConfig::default(),
            name: "hedge".to_owned(),
        }
    }
}

impl HedgeConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_hedges > 16 {
            return Err(ConfigError::new("max_hedges", "must be at most 16"));
        }
        if let Some(q) = self.delay.quantile() {
            if !(q.is_finite() && q > 0.0 && q < 1.0) {
                return Err(ConfigError::new("delay", "the percentile must be in (0, 1) and the extra load in (0, 1)"));
            }
        }
        if self.window < Duration::from_millis(1) || self.window > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::new("window", "must be between 1 ms and a day"));
        }
        if self.refresh.is_zero() || self.refresh > self.window {
            return Err(ConfigError::new("refresh", "must be positive and at most the window"));
        }
        if !(0.0..=1.0).contains(&self.min_win_share) {
            return Err(ConfigError::new("min_win_share", "must be in [0, 1]"));
        }
        if !(self.max_median_rise == 0.0 || (self.max_median_rise.is_finite() && self.max_median_rise > 1.0)) {
            return Err(ConfigError::new("max_median_rise", "must be 0 (off) or a finite factor above 1"));
        }
        self.budget.validate()
    }
}

/// A configuration value is out of range: the one error type of every `ha`
/// config, re-exported from `ha-core`.
pub use ha_core::ConfigError;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let r = RetryConfig::default();
        r.validate().unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<RetryConfig>(&json).unwrap(), r);
        let h = HedgeConfig::default();
        h.validate().unwrap();
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<HedgeConfig>(&json).unwrap(), h);
        assert_eq!(HedgeDelay::MaxExtraLoad(0.05).quantile().map(|q| (q * 100.0).round()), Some(95.0));
    }

    #[test]
    fn bad_values_are_typed_errors() {
        let bad = |f: fn(&mut RetryConfig)| {
            let mut c = RetryConfig::default();
            f(&mut c);
            c.validate().unwrap_err().field().to_owned()
        };
        assert_eq!(bad(|c| c.max_attempts = 0), "max_attempts");
        assert_eq!(bad(|c| c.per_try_timeout = Some(Duration::ZERO)), "per_try_timeout");
        assert_eq!(bad(|c| c.backoff.base = Duration::from_secs(5)), "backoff.base");
        assert_eq!(bad(|c| c.backoff.multiplier = f64::NAN), "backoff.multiplier");
        assert_eq!(bad(|c| c.budget.ratio = -1.0), "budget.ratio");
        assert_eq!(bad(|c| c.budget.buckets = 0), "budget.buckets");
        assert_eq!(bad(|c| c.budget.ttl = Duration::ZERO), "budget.ttl");
        let mut h = HedgeConfig { delay: HedgeDelay::Percentile(1.0), ..HedgeConfig::default() };
        assert_eq!(h.validate().unwrap_err().field(), "delay");
        h.delay = HedgeDelay::Fixed(Duration::from_millis(3));
        h.max_hedges = 100;
        assert_eq!(h.validate().unwrap_err().field(), "max_hedges");
        let h = HedgeConfig { min_win_share: 1.5, ..HedgeConfig::default() };
        assert_eq!(h.validate().unwrap_err().field(), "min_win_share");
        let h = HedgeConfig { max_median_rise: 0.5, ..HedgeConfig::default() };
        assert_eq!(h.validate().unwrap_err().field(), "max_median_rise");
        HedgeConfig { min_win_share: 0.0, max_median_rise: 0.0, ..HedgeConfig::default() }.validate().unwrap();
        assert!(serde_json::from_str::<RetryConfig>(r#"{"max_atempts": 3}"#).is_err());
    }
}
