//! The thresholds outcomes are judged by, replaceable while calls run.
//!
//! A reconfiguration must not make one outcome be judged by a mix of two
//! configs (the old consecutive-failure limit with the new failure rate),
//! and reading the rules must stay lock-free. [`LiveRules`] keeps two
//! copies of the rules in atomics and a version number: version `v` is in
//! copy `v % 2`. A writer fills the other copy, then publishes it by
//! bumping the version, so the copy readers use is never the one being
//! written, unless two writes complete during one read; a reader checks
//! the version again after reading and, if it moved, reads again. A read
//! therefore never waits for a writer (a writer paused half-way leaves the
//! published copy intact) and retries only because some write completed:
//! lock-free.

use ha_core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::config::BreakerConfig;

/// The thresholds of one config, precomputed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rules {
    /// `u32::MAX` when off.
    pub(crate) consecutive: u32,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow_rate: Option<f64>,
    pub(crate) minimum_calls: u64,
    pub(crate) probes: u64,
    pub(crate) probe_failure_rate: f64,
}

impl Rules {
    pub(crate) fn of(config: &BreakerConfig) -> Rules {
        Rules {
            consecutive: config.consecutive_failures.unwrap_or(u32::MAX),
            failure_rate: config.failure_rate,
            slow_rate: config.slow_calls.map(|s| s.rate),
            minimum_calls: u64::from(config.minimum_calls),
            probes: u64::from(config.half_open_probes),
            probe_failure_rate: config.failure_rate.unwrap_or(0.5),
        }
    }
}

/// One copy of the rules. A rate is its `f64` bits, NaN for "off" (a
/// validated rate is never NaN).
#[derive(Debug)]
struct Buffer {
    consecutive: AtomicU32,
    minimum_calls: AtomicU32,
    probes: AtomicU32,
    failure_rate: AtomicU64,
    slow_rate: AtomicU64,
    probe_failure_rate: AtomicU64,
}

fn rate_bits(rate: Option<f64>) -> u64 {
    rate.unwrap_or(f64::NAN).to_bits()
}

fn rate_of(bits: u64) -> Option<f64> {
    let r = f64::from_bits(bits);
    (!r.is_nan()).then_some(r)
}

impl Buffer {
    fn new(rules: &Rules) -> Buffer {
        let c = Buffer {
            consecutive: AtomicU32::new(0),
            minimum_calls: AtomicU32::new(0),
            probes: AtomicU32::new(0),
            failure_rate: AtomicU64::new(0),
            slow_rate: AtomicU64::new(0),
            probe_failure_rate: AtomicU64::new(0),
        };
        c.write(rules);
        c
    }

    fn write(&self, r: &Rules) {
        // Both counts were u32 in the config.
        self.consecutive.store(r.consecutive, Ordering::Relaxed);
        self.minimum_calls.store(r.minimum_calls as u32, Ordering::Relaxed);
        self.probes.store(r.probes as u32, Ordering::Relaxed);
        self.failure_rate.store(rate_bits(r.failure_rate), Ordering::Relaxed);
        self.slow_rate.store(rate_bits(r.slow_rate), Ordering::Relaxed);
        self.probe_failure_rate.store(r.probe_failure_rate.to_bits(), Ordering::Relaxed);
    }

    #[inline]
    fn read(&self) -> Rules {
        Rules {
            consecutive: self.consecutive.load(Ordering::Relaxed),
            failure_rate: rate_of(self.failure_rate.load(Ordering::Relaxed)),
            slow_rate: rate_of(self.slow_rate.load(Ordering::Relaxed)),
            minimum_calls: u64::from(self.minimum_calls.load(Ordering::Relaxed)),
            probes: u64::from(self.probes.load(Ordering::Relaxed)),
            probe_failure_rate: f64::from_bits(self.probe_failure_rate.load(Ordering::Relaxed)),
        }
    }
}

/// The rules in force; see the [module](self) docs.
#[derive(Debug)]
pub(crate) struct LiveRules {
    version: AtomicU64,
    copies: [Buffer; 2],
}

impl LiveRules {
    pub(crate) fn new(rules: Rules) -> LiveRules {
        LiveRules { version: AtomicU64::new(0), copies: [Buffer::new(&rules), Buffer::new(&rules)] }
    }

    /// The rules of one config: never a mix of two.
    #[inline]
    pub(crate) fn load(&self) -> Rules {
        loop {
            // Acquire: the copy's values were written before this version
            // was published.
            let v = self.version.load(Ordering::Acquire);
            let rules = self.copies[(v & 1) as usize].read();
            // If any value read came from a later write to this copy, that
            // write's release fence synchronises with this fence, so the
            // version bump that preceded it is visible below.
            fence(Ordering::Acquire);
            if self.version.load(Ordering::Relaxed) == v {
                return rules;
            }
        }
    }

    /// Publishes `rules`. Callers serialise stores (the breaker's config
    /// lock), which also orders each store after the previous one's bump.
    pub(crate) fn store(&self, rules: &Rules) {
        let v = self.version.load(Ordering::Relaxed);
        // Orders the previous bump (to `v`) before the writes below, for a
        // reader still on the copy of `v - 1`, which this overwrites.
        fence(Ordering::Release);
        self.copies[((v + 1) & 1) as usize].write(rules);
        self.version.store(v + 1, Ordering::Release);
    }
}
