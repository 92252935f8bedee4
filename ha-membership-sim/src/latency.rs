//! One-way latency distributions of the simulated network, drawn from the
//! simulator's own seeded generator so a run stays a function of its seed.
//!
//! Real networks are not uniform: most datagrams take about the median and a
//! few take much longer (queueing, retransmission below the IP layer, a GC
//! pause in a middlebox). [`Latency`] gives the shapes a scenario needs and
//! [`Tail`] adds a rare extra delay on top of any of them.

use ha_core::rng::FastRng;
use serde::{Deserialize, Serialize};

use super::scenario::ScenarioError;

/// The largest delay, in milliseconds, a datagram may take; draws above it
/// are clamped so an unbounded shape (normal, lognormal) stays a finite delay.
pub const MAX_LATENCY_MS: f64 = 60_000.0;

/// A one-way latency distribution, in milliseconds.
///
/// In a scenario file it is a table tagged by `dist`:
///
/// ```toml
/// [network.latency]
/// dist = "lognormal"
/// median_ms = 1.0
/// sigma = 0.6
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "dist", deny_unknown_fields)]
pub enum Latency {
    /// Always the same delay.
    Constant {
        /// The delay.
        ms: f64,
    },
    /// Uniform in `[min_ms, max_ms]`.
    Uniform {
        /// Least delay.
        min_ms: f64,
        /// Largest delay.
        max_ms: f64,
    },
    /// Normal, truncated at 0 (draws below 0 are drawn again).
    Normal {
        /// Mean before truncation (at least 0, so at most half the draws are redrawn).
        mean_ms: f64,
        /// Standard deviation.
        std_ms: f64,
    },
    /// Lognormal: `median_ms * exp(sigma * Z)` with `Z` standard normal.
    Lognormal {
        /// The median delay.
        median_ms: f64,
        /// The standard deviation of the delay's logarithm (0.5 gives a p99
        /// about 3.2x the median, 1.0 about 10x).
        sigma: f64,
    },
}

/// An extra delay added to a fraction of datagrams: a mixture of the base
/// distribution and the base plus `extra`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tail {
    /// Probability that a datagram takes the extra delay.
    pub p: f64,
    /// The extra delay's distribution.
    pub extra: Latency,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::Uniform { min_ms: 0.2, max_ms: 2.0 }
    }
}

fn finite_in(x: f64, lo: f64, hi: f64) -> bool {
    x.is_finite() && (lo..=hi).contains(&x)
}

impl Latency {
    /// Checks the parameters: finite, non-negative, within [`MAX_LATENCY_MS`].
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let ok = match *self {
            Latency::Constant { ms } => finite_in(ms, 0.0, MAX_LATENCY_MS),
            Latency::Uniform { min_ms, max_ms } => {
                finite_in(min_ms, 0.0, MAX_LATENCY_MS) && finite_in(max_ms, min_ms, MAX_LATENCY_MS)
            }
            Latency::Normal { mean_ms, std_ms } => {
                finite_in(mean_ms, 0.0, MAX_LATENCY_MS) && finite_in(std_ms, 0.0, MAX_LATENCY_MS)
            }
            // Above sigma 10 the shape is all tail and nothing else; it is a typo.
            Latency::Lognormal { median_ms, sigma } => {
                finite_in(median_ms, 0.0, MAX_LATENCY_MS) && median_ms > 0.0 && finite_in(sigma, 0.0, 10.0)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(ScenarioError::new(
                "network.latency",
                format!(
                    "{self:?}: values must be finite and within 0..{MAX_LATENCY_MS} ms \
                     (uniform: min_ms <= max_ms; normal: mean_ms >= 0, std_ms >= 0; lognormal: median_ms > 0, \
                     sigma in 0..=10)"
                ),
            ))
        }
    }

    /// Draws one delay in milliseconds, in `[0, MAX_LATENCY_MS]`.
    pub fn sample_ms(&self, rng: &mut FastRng) -> f64 {
        let ms = match *self {
            Latency::Constant { ms } => ms,
            // The same single draw the simulator always made, so existing seeds replay identically.
            Latency::Uniform { min_ms, max_ms } => min_ms + rng.unit_f64() * (max_ms - min_ms),
            Latency::Normal { mean_ms, std_ms } => {
                // With mean >= 0 each draw is kept with probability >= 1/2, so the
                // bound is never reached in practice; it only keeps the loop finite.
                let mut x = 0.0;
                for _ in 0..64 {
                    x = mean_ms + std_ms * rng.standard_normal();
                    if x >= 0.0 {
                        break;
                    }
                }
                x
            }
            Latency::Lognormal { median_ms, sigma } => median_ms * (sigma * rng.standard_normal()).exp(),
        };
        ms.clamp(0.0, MAX_LATENCY_MS)
    }
}

impl Tail {
    /// Checks `p` and the extra delay.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        if !(self.p.is_finite() && (0.0..=1.0).contains(&self.p)) {
            return Err(ScenarioError::new("network.latency_tail.p", format!("{} must be in [0, 1]", self.p)));
        }
        self.extra.validate()
    }

    /// The extra delay for one datagram in milliseconds (0 for most).
    pub fn sample_ms(&self, rng: &mut FastRng) -> f64 {
        if rng.unit_f64() < self.p {
            self.extra.sample_ms(rng)
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(l: &Latency, seed: u64, n: usize) -> Vec<f64> {
        let mut rng = FastRng::new(seed);
        let mut v: Vec<f64> = (0..n).map(|_| l.sample_ms(&mut rng)).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    fn quantile(sorted: &[f64], q: f64) -> f64 {
        sorted[((sorted.len() - 1) as f64 * q) as usize]
    }

    #[test]
    fn constant_is_constant() {
        let v = draws(&Latency::Constant { ms: 4.5 }, 1, 100);
        assert!(v.iter().all(|&x| x == 4.5));
    }

    #[test]
    fn uniform_stays_in_range_with_the_midpoint_as_mean() {
        let v = draws(&Latency::Uniform { min_ms: 1.0, max_ms: 3.0 }, 2, 100_000);
        assert!(v[0] >= 1.0 && v[v.len() - 1] <= 3.0);
        assert!((mean(&v) - 2.0).abs() < 0.01);
    }

    #[test]
    fn normal_is_centred_on_its_mean_and_never_negative() {
        let v = draws(&Latency::Normal { mean_ms: 10.0, std_ms: 2.0 }, 4, 100_000);
        assert!((mean(&v) - 10.0).abs() < 0.05, "{}", mean(&v));
        assert!((quantile(&v, 0.5) - 10.0).abs() < 0.05);
        // Truncated at 0: with mean 0 every draw is the positive half.
        let v = draws(&Latency::Normal { mean_ms: 0.0, std_ms: 1.0 }, 5, 100_000);
        assert!(v[0] >= 0.0);
        // The mean of a half-normal is sigma * sqrt(2 / pi) = 0.798.
        assert!((mean(&v) - 0.798).abs() < 0.01, "{}", mean(&v));
    }

    #[test]
    fn lognormal_has_its_median_and_its_tail() {
        let v = draws(&Latency::Lognormal { median_ms: 2.0, sigma: 0.5 }, 6, 200_000);
        let med = quantile(&v, 0.5);
        assert!((med - 2.0).abs() < 0.02, "median {med}");
        // Mean exp(sigma^2 / 2) x the median; p99 exp(2.326 sigma) x the median.
        let m = mean(&v);
        assert!((m - 2.0 * (0.125f64).exp()).abs() < 0.02, "mean {m}");
        let p99 = quantile(&v, 0.99);
        assert!((p99 - 2.0 * (2.326f64 * 0.5).exp()).abs() < 0.1, "p99 {p99}");
    }

    #[test]
    fn draws_are_clamped_to_the_maximum() {
        let v = draws(&Latency::Lognormal { median_ms: 30_000.0, sigma: 10.0 }, 7, 1000);
        assert!(v[v.len() - 1] <= MAX_LATENCY_MS && v[0] >= 0.0);
    }

    #[test]
    fn the_same_seed_gives_the_same_draws() {
        for l in [
            Latency::Normal { mean_ms: 1.0, std_ms: 1.0 },
            Latency::Lognormal { median_ms: 1.0, sigma: 1.0 },
            Latency::Uniform { min_ms: 0.0, max_ms: 1.0 },
        ] {
            assert_eq!(draws(&l, 9, 1000), draws(&l, 9, 1000));
            assert_ne!(draws(&l, 9, 1000), draws(&l, 10, 1000));
        }
    }

    #[test]
    fn a_tail_delays_its_fraction_by_its_extra() {
        let t = Tail { p: 0.1, extra: Latency::Constant { ms: 100.0 } };
        let mut rng = FastRng::new(11);
        let v: Vec<f64> = (0..100_000).map(|_| t.sample_ms(&mut rng)).collect();
        assert!(v.iter().all(|&x| x == 0.0 || x == 100.0));
        let share = v.iter().filter(|&&x| x > 0.0).count() as f64 / v.len() as f64;
        assert!((share - 0.1).abs() < 0.005, "{share}");
    }

    #[test]
    fn bad_parameters_are_rejected() {
        for bad in [
            Latency::Constant { ms: -1.0 },
            Latency::Constant { ms: f64::NAN },
            Latency::Uniform { min_ms: 3.0, max_ms: 1.0 },
            Latency::Uniform { min_ms: 0.0, max_ms: f64::INFINITY },
            Latency::Normal { mean_ms: -1.0, std_ms: 1.0 },
            Latency::Normal { mean_ms: 1.0, std_ms: -1.0 },
            Latency::Lognormal { median_ms: 0.0, sigma: 0.5 },
            Latency::Lognormal { median_ms: 1.0, sigma: -0.1 },
            Latency::Lognormal { median_ms: 1.0, sigma: 11.0 },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(Tail { p: 1.5, extra: Latency::Constant { ms: 1.0 } }.validate().is_err());
        assert!(Tail { p: 0.5, extra: Latency::Constant { ms: -1.0 } }.validate().is_err());
        assert!(Tail { p: 0.5, extra: Latency::Constant { ms: 1.0 } }.validate().is_ok());
    }
}
