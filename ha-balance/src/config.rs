//! The balancer's configuration: serde-friendly, with production defaults,
//! validated once when the balancer is built.
//!
//! Durations follow the one rule of every `ha` config
//! ([`ha_core::config`]): a key names what the duration is, never its unit,
//! and the value is an integer of milliseconds or a string with a unit
//! (`"base_ejection_time": 30000` or `"30s"`). The `*_ms` names of earlier
//! releases (`base_ejection_time_ms`) are still read.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// How the balancer picks among the available endpoints of a tier.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Picker {
    /// Power of two choices over PeakEWMA latency x (pending + 1)^bias
    /// (Finagle's and Linkerd's cost when the bias is 1; see
    /// [`LoadConfig::pending_bias`] for the default 0.75): the best under a
    /// slow endpoint. When both candidates answer more than twice as slow
    /// as the tier's fastest endpoint, it draws up to 3 more pairs and
    /// keeps the cheapest: in a fleet of unequal servers two random
    /// candidates are often both small ones, queueing, and plain P2C hands
    /// one of them the request however deep its queue. A retry goes to an
    /// endpoint the request has not tried, or back to the one that failed
    /// it when the untried ones cost twice as much.
    #[default]
    P2cPeakEwma,
    /// Power of two choices over pending requests.
    P2cPending,
    /// Power of two choices over pending requests divided by the endpoint's weight.
    WeightedP2c,
    /// Smooth weighted round robin (nginx's): over one cycle each endpoint
    /// gets exactly its weight's share, interleaved.
    RoundRobin,
    /// Uniformly random.
    Random,
    /// Consistent hashing of a request key (see
    /// [`BalanceBuilder::hash_key`](crate::BalanceBuilder::hash_key)) on a ring
    /// with virtual nodes and bounded loads.
    RingHash {
        /// Virtual nodes per unit of weight.
        #[serde(default = "default_vnodes")]
        vnodes: u32,
        /// No endpoint takes more than `load_factor` x the average in-flight
        /// load of its tier; must be at least 1.
        #[serde(default = "default_load_factor")]
        load_factor: f64,
    },
}

fn default_vnodes() -> u32 {
    100
}

fn default_load_factor() -> f64 {
    1.25
}

impl Picker {
    /// Consistent hashing with the recommended 100 virtual nodes and load factor 1.25.
    pub fn ring_hash() -> Self {
        Picker::RingHash { vnodes: default_vnodes(), load_factor: default_load_factor() }
    }

    pub(crate) fn needs_latency(&self) -> bool {
        matches!(self, Picker::P2cPeakEwma)
    }

    /// Pickers that price recent failures (see [`LoadConfig::failure_penalty`]).
    pub(crate) fn prices_failures(&self) -> bool {
        matches!(self, Picker::P2cPeakEwma | Picker::P2cPending | Picker::WeightedP2c | Picker::RingHash { .. })
    }
}

/// Priority tiers and panic mode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierConfig {
    /// A tier is considered able to take all its traffic while its healthy
    /// fraction times this factor is at least 1 (Envoy: 1.4). Must be at least 1.
    pub overprovisioning: f64,
    /// When fewer than this fraction of all endpoints are available and the
    /// tiers together cannot carry the traffic (their overprovisioned
    /// healths sum to less than one), route over all endpoints, ignoring
    /// ejections and health checks, rather than overload the few (Envoy:
    /// 0.5). `0` disables panic mode. In `[0, 1]`.
    pub panic_threshold: f64,
    /// How long a computed tier plan is reused before the balancer recounts
    /// healthy endpoints (it also recounts at once on every membership or
    /// ejection change it sees).
    #[serde(with = "ha_core::config::duration", alias = "refresh_ms")]
    pub refresh: Duration,
}

impl Default for TierConfig {
    fn default() -> Self {
        TierConfig { overprovisioning: 1.4, panic_threshold: 0.5, refresh: Duration::from_millis(100) }
    }
}

/// Slow start: a newly added endpoint's share ramps up over `window`, from
/// `min_factor` to all of it. An endpoint readmitted after an ejection
/// resumes its ramp where it stood when it was ejected, set back by half
/// the time it was out (warmth is lost half as fast as it is gained): with
/// the defaults a warm endpoint out for 5 s comes back at 75% and is at
/// full share 2.5 s later, so a flapping endpoint serves while it is up;
/// one out for 20 s or more (twice the window: a crash and restart, a long
/// partition) ramps from `min_factor` over the full window. So does one
/// whose latest failure was a request given up on (with
/// `OutlierConfig::cancelled_as_failure`): it was overloaded or stalled at
/// the share it had.
///
/// With the PeakEWMA picker the ramp also waits for warmth: an endpoint
/// ramping up that answers more than twice as slow as the median of its
/// tier's warm endpoints stays at `min_factor`, scaled by the fourth
/// power of how much slower it is, and ramps over `window` once it answers within
/// twice their latency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlowStartConfig {
    /// The ramp's length; zero disables slow start.
    #[serde(with = "ha_core::config::duration", alias = "window_ms")]
    pub window: Duration,
    /// The share a brand-new endpoint starts with, in `(0, 1]`.
    pub min_factor: f64,
}

impl Default for SlowStartConfig {
    fn default() -> Self {
        SlowStartConfig { window: Duration::from_secs(10), min_factor: 0.1 }
    }
}

/// Load tracking for the PeakEWMA picker.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadConfig {
    /// A new endpoint's starting latency estimate. As with tower's and
    /// Finagle's PeakEWMA it is a prior, not a placeholder: a slower answer
    /// replaces it at once, faster ones pull the estimate down over `decay`.
    #[serde(with = "ha_core::config::duration", alias = "default_rtt_ms")]
    pub default_rtt: Duration,
    /// The EWMA's time constant.
    #[serde(with = "ha_core::config::duration", alias = "decay_ms")]
    pub decay: Duration,
    /// How much requests in flight weigh in the cost, in `[0, 1]`: an
    /// endpoint costs `latency x (pending + 1)^pending_bias` (the exponent of
    /// Envoy's least-request `active_request_bias`). 1 is tower's and
    /// Finagle's cost: it prices every queued request at a whole latency, as
    /// if the endpoint served one request at a time. But the latency
    /// estimate was measured at the concurrency the endpoint already runs
    /// at, so that counts its queueing twice, and between two candidates it
    /// hands the request to the slower one as soon as the faster one holds
    /// proportionally more requests, even when it serves them in parallel.
    /// With a bias `b` an endpoint `r` times faster keeps winning until it
    /// holds `r^(1/b)` times the requests, so slow endpoints get less
    /// traffic while in-flight requests still steer it (the lab's s2 and
    /// s3: lower p99 than tower's cost). Default 0.75: at 0.5 (`r^2`) the
    /// noise of latency estimates alone piles requests onto endpoints of a
    /// fleet whose servers are alike and run few requests at once, where
    /// every request beyond those few queues (the lab's s35 and s42, p99
    /// 97 and 95 ms at 0.5, 57 and 75 at 0.75). 0 ignores them, which piles
    /// requests onto whichever endpoint looks fastest.
    pub pending_bias: f64,
    /// What a failure costs, as a multiple of the latency: a failed request
    /// costs `max(elapsed, cost, default_rtt) x failure_penalty` (at most
    /// `max(elapsed, default_rtt) x 16`), where `cost` is the larger of the
    /// latency estimate and the failure cost so far; the PeakEWMA picker
    /// weighs the larger of the latency estimate and this failure cost,
    /// which fades with a 1 s time constant and is cleared by a success. A
    /// fast failure priced at its time would make a refusing endpoint the
    /// cheapest of all (the black hole of latency balancing); penalised,
    /// each failure in a row doubles its cost at the default 2 (Linkerd
    /// likewise penalises failures in its EWMA), and a recovered endpoint
    /// is tried again within seconds. The first failure of a run that a
    /// retry will absorb (the request carries an attempt context and the
    /// retry layer grants retries, see
    /// [`BalanceBuilder::retries_refused`](crate::BalanceBuilder::retries_refused))
    /// costs only the larger of its time and the latency estimate: it costs
    /// the caller one more attempt, and penalised, a busy endpoint failing a
    /// share of its requests lost load its freed workers could take while
    /// the others queued for it (the lab's s45 and s49, p99 102 and 109 ms
    /// against 89 and 95). The P2C pickers over pending requests
    /// multiply their cost by `1 + failure cost / default_rtt` (an endpoint
    /// that refuses at once has nothing pending and would otherwise win
    /// every comparison); for them a success does not clear the cost at
    /// once (with the interval rules off, that would take a clock read per
    /// response), it fades. The ring hash picker walks past an endpoint
    /// failing nearly everything while this cost is high, to the next on
    /// the ring. At least 1.
    pub failure_penalty: f64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            default_rtt: Duration::from_millis(30),
            decay: Duration::from_secs(10),
            pending_bias: 0.75,
            failure_penalty: 2.0,
        }
    }
}

/// Envoy's success-rate rule: eject endpoints whose success rate is below
/// `mean - stdev_factor x stdev` of the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SuccessRateConfig {
    /// How many standard deviations below the mean is an outlier.
    pub stdev_factor: f64,
    /// The rule runs only when at least this many endpoints had enough requests.
    pub minimum_hosts: u32,
    /// Requests an endpoint needs in an interval to be judged.
    pub request_volume: u64,
    /// The success rate must also be at least this far below the mean, in
    /// absolute terms (`0.05` = five percentage points). Envoy has no such
    /// floor; without it, a fleet whose endpoints all fail about 1% at
    /// random has a tight standard deviation and ejects whichever endpoint
    /// was unlucky in the interval. `0` gives Envoy's rule. In `[0, 1]`.
    pub min_deficit: f64,
}

impl Default for SuccessRateConfig {
    fn default() -> Self {
        SuccessRateConfig { stdev_factor: 1.9, minimum_hosts: 5, request_volume: 100, min_deficit: 0.05 }
    }
}

/// Envoy's failure-percentage rule: eject endpoints failing more than
/// `threshold` percent of their requests, and (unlike Envoy) at least
/// [`OutlierConfig::peer_failure_factor`] times as often as their tier.
///
/// `Default` is Envoy's absolute setting (85%, 5 hosts);
/// [`OutlierConfig::default`] turns the rule on with
/// [`FailurePercentageConfig::fleet_relative`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailurePercentageConfig {
    /// The failure percentage above which an endpoint is ejected, in `[0, 100]`.
    pub threshold: f64,
    /// The rule runs only when at least this many endpoints had enough requests.
    pub minimum_hosts: u32,
    /// Requests an endpoint needs in an interval to be judged.
    pub request_volume: u64,
}

impl Default for FailurePercentageConfig {
    fn default() -> Self {
        FailurePercentageConfig { threshold: 85.0, minimum_hosts: 5, request_volume: 50 }
    }
}

impl FailurePercentageConfig {
    /// The setting [`OutlierConfig::default`] uses: failing at least 10% of
    /// at least 100 requests in an interval, judged from two endpoints on.
    /// Together with the peer comparison it sees a gray failure (one of
    /// three servers failing 20%) that the success-rate rule, which needs
    /// five hosts, cannot; 100 requests keep an endpoint of a fleet failing
    /// 3% at random from crossing 10% by chance (p < 0.001 per interval).
    pub fn fleet_relative() -> Self {
        FailurePercentageConfig { threshold: 10.0, minimum_hosts: 2, request_volume: 100 }
    }
}

/// Outlier ejection, Envoy's model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutlierConfig {
    /// Eject after this many failures in a row; `0` disables the rule.
    /// A run of failures from an endpoint with requests in flight (at least
    /// 4) whose peers hold at least half as many may be the onset of a
    /// fleet-wide overload, seen first on it by a few milliseconds: a first
    /// run of fast failures (a full queue shedding) waits for its next run,
    /// judged with its peers' outcomes (see `max_peer_failure_rate`); runs
    /// of slow or given-up failures (queued requests reaching the callers'
    /// timeout) wait while the peers' latency estimate is at least a
    /// quarter of its own.
    pub consecutive_failures: u32,
    /// How often the success-rate and failure-percentage rules run.
    #[serde(with = "ha_core::config::duration", alias = "interval_ms")]
    pub interval: Duration,
    /// An ejection lasts this times the number of times the endpoint was ejected.
    #[serde(with = "ha_core::config::duration", alias = "base_ejection_time_ms")]
    pub base_ejection_time: Duration,
    /// The longest ejection.
    #[serde(with = "ha_core::config::duration", alias = "max_ejection_time_ms")]
    pub max_ejection_time: Duration,
    /// At most this percentage of the endpoints is ejected at once (at least
    /// one endpoint may always be ejected), in `[0, 100]`.
    pub max_ejection_percent: f64,
    /// The success-rate rule; `None` disables it.
    pub success_rate: Option<SuccessRateConfig>,
    /// The failure-percentage rule; `None` (Envoy's default) disables it.
    /// Default: [`FailurePercentageConfig::fleet_relative`].
    pub failure_percentage: Option<FailurePercentageConfig>,
    /// The failure-percentage rule ejects only an endpoint failing at least
    /// this many times as often as its tier (the lower median of the judged
    /// endpoints' failure rates, its own counted): a rate most of the fleet
    /// shares ejects nobody, as with two of three failing alike, where
    /// ejecting one would load the other and the one healthy endpoint. An
    /// endpoint failing 90% or more carries no load and is compared with
    /// its peers alone, so two such do not shield each other.
    /// `0` gives Envoy's absolute rule. Default 2.
    pub peer_failure_factor: f64,
    /// No cascade: an endpoint is not ejected for a failure its peers
    /// share. When the other non-ejected endpoints of its tier (the lower
    /// median of their failure rates, recent and over the interval) fail
    /// more than this fraction of their requests, a run of consecutive
    /// failures is what their rate produces by chance and ejects nobody,
    /// and the interval rules eject only an endpoint failing at least twice
    /// as often as they do. An overloaded fleet shedding load fails
    /// everywhere at once; ejecting one of its endpoints only moves its load
    /// onto the others, which then shed more. `1` disables the check. In
    /// `[0, 1]`; default 0.1.
    pub max_peer_failure_rate: f64,
    /// Back quickly: an endpoint ejected for consecutive failures (the
    /// signature of a crash or a refused connection) gets one real request
    /// this long after its ejection, and is readmitted (with slow start) as
    /// soon as one succeeds. While these probes fail they are spaced twice
    /// as far each time, up to `max_probe_interval`, each spacing drawn
    /// down by up to half at random (fixed spacings keep one phase against
    /// a fault that comes and goes on a period, and can miss each return
    /// by milliseconds), and the ejection is extended so that it does not
    /// end while the endpoint still fails.
    /// Endpoints ejected by the interval rules (a statistical verdict one
    /// answer cannot overturn) serve out their ejection time, unless the
    /// endpoints left in service cannot carry their load: when their median
    /// latency estimate reaches twice its value at the ejection, the
    /// ejected endpoint is readmitted at once, and not ejected again for
    /// `base_ejection_time` unless it fails nearly everything. A probe is a
    /// real request: one that takes more than 8 times the median latency of
    /// the endpoints in service (at least 8 times `load.default_rtt`) is
    /// given up with `AttemptTimedOut`, which the retry layer retries
    /// elsewhere, so an endpoint back but hung does not hold its caller to
    /// the request's deadline. Zero disables probing. Default 1 s.
    #[serde(with = "ha_core::config::duration", alias = "probe_interval_ms")]
    pub probe_interval: Duration,
    /// The longest spacing of probes to an ejected endpoint. Default 1 s,
    /// so a server back from a crash serves again within a second (half a
    /// second on average): a failed probe costs the request one fast retry.
    #[serde(with = "ha_core::config::duration", alias = "max_probe_interval_ms")]
    pub max_probe_interval: Duration,
    /// A request the caller gave up on after it was sent (a client
    /// timeout, a lost hedge) counts as a failure of its endpoint. Without
    /// this an endpoint that black-holes requests is never ejected, since
    /// its requests never return a result to classify; Envoy likewise
    /// counts its timeouts. `false` ignores them, like `ha-breaker`'s
    /// default.
    pub cancelled_as_failure: bool,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10.0,
            success_rate: Some(SuccessRateConfig::default()),
            failure_percentage: Some(FailurePercentageConfig::fleet_relative()),
            peer_failure_factor: 2.0,
            max_peer_failure_rate: 0.1,
            probe_interval: Duration::from_secs(1),
            max_probe_interval: Duration::from_secs(1),
            cancelled_as_failure: true,
        }
    }
}

impl OutlierConfig {
    /// Whether an interval rule (success rate or failure percentage) is on.
    pub(crate) fn interval_rules(&self) -> bool {
        self.success_rate.is_some() || self.failure_percentage.is_some()
    }

    /// Outlier detection switched off.
    pub fn disabled() -> Self {
        OutlierConfig { consecutive_failures: 0, success_rate: None, failure_percentage: None, ..Self::default() }
    }
}

/// Active health checking: a periodic probe per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Time between two probes of one endpoint.
    #[serde(with = "ha_core::config::duration", alias = "interval_ms")]
    pub interval: Duration,
    /// Each wait is lengthened by a random amount up to this.
    #[serde(with = "ha_core::config::duration", alias = "jitter_ms")]
    pub jitter: Duration,
    /// A probe that takes longer fails.
    #[serde(with = "ha_core::config::duration", alias = "timeout_ms")]
    pub timeout: Duration,
    /// Consecutive failed probes that take an endpoint out of selection.
    pub unhealthy_threshold: u32,
    /// Consecutive passed probes that bring it back.
    pub healthy_threshold: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            interval: Duration::from_secs(5),
            jitter: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
        }
    }
}

/// Everything the balancer can be configured with; see each field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BalanceConfig {
    /// The picking strategy.
    pub picker: Picker,
    /// How long a request waits for an endpoint to become available before
    /// failing with [`NoHealthyEndpoint`](ha_core::NoHealthyEndpoint).
    #[serde(with = "ha_core::config::duration", alias = "no_healthy_timeout_ms")]
    pub no_healthy_timeout: Duration,
    /// Priority tiers and panic mode.
    pub tiers: TierConfig,
    /// Slow start of new endpoints.
    pub slow_start: SlowStartConfig,
    /// Load tracking.
    pub load: LoadConfig,
    /// Outlier ejection.
    pub outlier: OutlierConfig,
    /// Active health checks, used when a probe service is given to the builder.
    pub health_check: HealthCheckConfig,
}

impl BalanceConfig {
    /// Checks every field; the builder calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn check(ok: bool, field: &'static str, reason: &'static str) -> Result<(), ConfigError> {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::new(field, reason))
            }
        }
        if let Picker::RingHash { vnodes, load_factor } = self.picker {
            check((1..=10_000).contains(&vnodes), "picker.vnodes", "must be in 1..=10000")?;
            check(load_factor.is_finite() && load_factor >= 1.0, "picker.load_factor", "must be at least 1")?;
        }
        let t = &self.tiers;
        check(
            t.overprovisioning.is_finite() && t.overprovisioning >= 1.0,
            "tiers.overprovisioning",
            "must be at least 1",
        )?;
        check((0.0..=1.0).contains(&t.panic_threshold), "tiers.panic_threshold", "must be in [0, 1]")?;
        let s = &self.slow_start;
        check(s.min_factor > 0.0 && s.min_factor <= 1.0, "slow_start.min_factor", "must be in (0, 1]")?;
        check(!self.load.decay.is_zero(), "load.decay", "must be positive")?;
        check((0.0..=1.0).contains(&self.load.pending_bias), "load.pending_bias", "must be in [0, 1]")?;
        check(
            self.load.failure_penalty.is_finite() && self.load.failure_penalty >= 1.0,
            "load.failure_penalty",
            "must be a number of at least 1",
        )?;
        let o = &self.outlier;
        check(!o.interval.is_zero(), "outlier.interval", "must be positive")?;
        check(
            o.base_ejection_time <= o.max_ejection_time,
            "outlier.base_ejection_time",
            "must not exceed max_ejection_time",
        )?;
        check((0.0..=100.0).contains(&o.max_ejection_percent), "outlier.max_ejection_percent", "must be in [0, 100]")?;
        check(
            o.peer_failure_factor.is_finite() && o.peer_failure_factor >= 0.0,
            "outlier.peer_failure_factor",
            "must be a non-negative number",
        )?;
        check((0.0..=1.0).contains(&o.max_peer_failure_rate), "outlier.max_peer_failure_rate", "must be in [0, 1]")?;
        check(
            o.probe_interval <= o.max_probe_interval,
            "outlier.probe_interval",
            "must not exceed max_probe_interval",
        )?;
        if let Some(sr) = &o.success_rate {
            check(
                sr.stdev_factor.is_finite() && sr.stdev_factor >= 0.0,
                "outlier.success_rate.stdev_factor",
                "must be a non-negative number",
            )?;
            check(sr.request_volume > 0, "outlier.success_rate.request_volume", "must be positive")?;
            check((0.0..=1.0).contains(&sr.min_deficit), "outlier.success_rate.min_deficit", "must be in [0, 1]")?;
        }
        if let Some(fp) = &o.failure_percentage {
            check(
                (0.0..=100.0).contains(&fp.threshold),
                "outlier.failure_percentage.threshold",
                "must be in [0, 100]",
            )?;
            check(fp.request_volume > 0, "outlier.failure_percentage.request_volume", "must be positive")?;
        }
        let h = &self.health_check;
        check(!h.interval.is_zero(), "health_check.interval", "must be positive")?;
        check(!h.timeout.is_zero(), "health_check.timeout", "must be positive")?;
        check(h.unhealthy_threshold > 0, "health_check.unhealthy_threshold", "must be positive")?;
        check(h.healthy_threshold > 0, "health_check.healthy_threshold", "must be positive")?;
        Ok(())
    }
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig {
            picker: Picker::default(),
            no_healthy_timeout: Duration::from_secs(1),
            tiers: TierConfig::default(),
            slow_start: SlowStartConfig::default(),
            load: LoadConfig::default(),
            outlier: OutlierConfig::default(),
            health_check: HealthCheckConfig::default(),
        }
    }
}
