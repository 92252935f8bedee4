//! Exponential backoff with a cap and jitter, as a plain value.
//!
//! [`Backoff`] computes the delay before each retry from the config and its
//! own seeded [`FastRng`]; it reads no clock and sleeps on nothing, so the
//! retry layer, the tower adapter and tests all share it.
//!
//! ```
//! use std::time::Duration;
//! use ha_core::rng::FastRng;
//! use ha_retry::backoff::Backoff;
//! use ha_retry::config::{BackoffConfig, Jitter};
//!
//! let cfg = BackoffConfig { jitter: Jitter::None, ..BackoffConfig::default() };
//! let mut b = Backoff::new(&cfg, FastRng::new(1));
//! assert_eq!(b.next_delay(), Duration::ZERO); // the first retry goes at once
//! assert_eq!(b.next_delay(), Duration::from_millis(25));
//! assert_eq!(b.next_delay(), Duration::from_millis(50));
//! ```

use std::time::Duration;

use ha_core::rng::FastRng;

use crate::config::{BackoffConfig, Jitter};

/// The delays before successive retries of one request.
#[derive(Debug, Clone)]
pub struct Backoff {
    // `BackoffConfig::immediate_first`.
    immediate_first: bool,
    // Whether a delay was given since the (re)start.
    started: bool,
    base: u64,
    max: u64,
    multiplier: f64,
    jitter: Jitter,
    rng: FastRng,
    retries: u32,
    prev: u64,
}

impl Backoff {
    /// The backoff of a new request. `config` should be validated; a base
    /// above the cap is treated as the cap.
    pub fn new(config: &BackoffConfig, rng: FastRng) -> Self {
        let max = nanos(config.max);
        let base = nanos(config.base).min(max);
        Backoff {
            immediate_first: config.immediate_first,
            started: false,
            base,
            max,
            multiplier: if config.multiplier.is_finite() { config.multiplier.max(1.0) } else { 1.0 },
            jitter: config.jitter,
            rng,
            retries: 0,
            prev: base,
        }
    }

    /// This backoff, from its first retry, drawing on `rng`.
    #[inline]
    pub fn restart(&self, rng: FastRng) -> Self {
        Backoff { rng, retries: 0, prev: self.base, started: false, ..self.clone() }
    }

    /// Gives up the immediate first retry: the next delay is the
    /// exponential one.
    #[inline]
    pub(crate) fn skip_immediate(&mut self) {
        self.started = true;
    }

    /// The delay before the next retry; never above the configured cap.
    /// Zero for the first retry when the config says
    /// [`immediate_first`](BackoffConfig::immediate_first); the exponential
    /// delays start at the next one.
    pub fn next_delay(&mut self) -> Duration {
        if !std::mem::replace(&mut self.started, true) && self.immediate_first {
            return Duration::ZERO;
        }
        let exp = self.exponential(self.retries);
        self.retries = self.retries.saturating_add(1);
        let d = match self.jitter {
            Jitter::None => exp,
            Jitter::Full => self.uniform(0, exp),
            Jitter::Equal => self.uniform(exp / 2, exp),
            Jitter::Decorrelated => {
                let hi = self.prev.saturating_mul(3).min(self.max).max(self.base);
                let d = self.uniform(self.base, hi);
                self.prev = d;
                d
            }
        };
        Duration::from_nanos(d.min(self.max))
    }

    fn exponential(&self, retries: u32) -> u64 {
        let factor = self.multiplier.powi(retries.min(i32::MAX as u32) as i32);
        let d = self.base as f64 * factor;
        if d.is_finite() && d < self.max as f64 {
            d as u64
        } else {
            self.max
        }
    }

    /// Uniform in `[lo, hi]`.
    fn uniform(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.rng.below(hi - lo + 1)
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(jitter: Jitter) -> BackoffConfig {
        BackoffConfig {
            immediate_first: false,
            base: Duration::from_millis(10),
            max: Duration::from_millis(200),
            multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn the_first_retry_goes_at_once_by_default_and_the_backoff_follows() {
        let c = BackoffConfig { jitter: Jitter::None, ..BackoffConfig::default() };
        let mut b = Backoff::new(&c, FastRng::new(0));
        let ms: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [0, 25, 50, 100]);
        // A restarted backoff (the next request) starts at once again.
        let mut again = b.restart(FastRng::new(1));
        assert_eq!(again.next_delay(), Duration::ZERO);
        assert_eq!(again.next_delay(), Duration::from_millis(25));
        // Off: the first retry waits the base.
        let mut waits = Backoff::new(&BackoffConfig { immediate_first: false, ..c }, FastRng::new(0));
        assert_eq!(waits.next_delay(), Duration::from_millis(25));
    }

    #[test]
    fn no_jitter_is_exponential_up_to_the_cap() {
        let mut b = Backoff::new(&cfg(Jitter::None), FastRng::new(0));
        let ms: Vec<u128> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [10, 20, 40, 80, 160, 200, 200]);
    }

    #[test]
    fn each_jitter_stays_in_its_range() {
        for seed in 0..200 {
            let mut full = Backoff::new(&cfg(Jitter::Full), FastRng::new(seed));
            let mut equal = Backoff::new(&cfg(Jitter::Equal), FastRng::new(seed));
            let mut decor = Backoff::new(&cfg(Jitter::Decorrelated), FastRng::new(seed));
            let mut prev = Duration::from_millis(10);
            for retry in 0..8u32 {
                let exp = Duration::from_millis(10 * (1u64 << retry)).min(Duration::from_millis(200));
                let f = full.next_delay();
                assert!(f <= exp, "full {f:?} > {exp:?}");
                let e = equal.next_delay();
                assert!(e >= exp / 2 && e <= exp, "equal {e:?} outside [{:?}, {exp:?}]", exp / 2);
                let d = decor.next_delay();
                let hi = (prev * 3).min(Duration::from_millis(200));
                assert!(d >= Duration::from_millis(10) && d <= hi, "decorrelated {d:?} outside [10ms, {hi:?}]");
                prev = d;
            }
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut b = Backoff::new(&cfg(Jitter::Full), FastRng::new(9));
        let first: Vec<Duration> = (0..50)
            .map(|i| {
                let mut b2 = Backoff::new(&cfg(Jitter::Full), FastRng::new(i));
                b2.next_delay()
            })
            .collect();
        let distinct = first.iter().collect::<std::collections::BTreeSet<_>>().len();
        assert!(distinct > 40, "{distinct}");
        assert!(b.next_delay() <= Duration::from_millis(10));
    }
}
