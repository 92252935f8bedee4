//! Distributions of simulated delays: the network's latency in this
//! simulator, and the service times of the lab's backends (`ha-benches`).
//!
//! A distribution is data (it comes from a scenario file, a table tagged by
//! `kind`) and is sampled from a caller-owned [`FastRng`], so a draw is a
//! pure function of the generator's seed.
//!
//! ```
//! use ha_core::rng::FastRng;
//! use ha_membership_sim::dist::Dist;
//!
//! let d: Dist = toml::from_str(r#"kind = "lognormal"
//! median_ms = 2.0
//! sigma = 0.5"#).unwrap();
//! assert!(d.validate().is_ok());
//! let ms = d.sample_ms(&mut FastRng::new(7));
//! assert!(ms > 0.0);
//! ```

use ha_core::rng::FastRng;
use serde::{Deserialize, Serialize};

/// A distribution of delays, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Dist {
    /// Always `ms`.
    Constant {
        /// The delay.
        ms: f64,
    },
    /// Uniform on `[min_ms, max_ms)`.
    Uniform {
        /// Lower bound (inclusive).
        min_ms: f64,
        /// Upper bound (exclusive).
        max_ms: f64,
    },
    /// Normal, truncated at zero: draws below zero are drawn again, so the
    /// shape above zero is the normal's (a clamp would pile the cut-off
    /// mass on zero).
    Normal {
        /// Mean before truncation (at least 0, so at most half the draws are redrawn).
        mean_ms: f64,
        /// Standard deviation.
        stddev_ms: f64,
    },
    /// Log-normal: `median_ms * exp(sigma * Z)` with `Z` standard normal.
    Lognormal {
        /// The median (`exp(mu)`).
        median_ms: f64,
        /// The standard deviation of the logarithm (0.5 gives a p99 about
        /// 3.2x the median, 1.0 about 10x).
        sigma: f64,
    },
    /// A weighted mixture, e.g. 98% log-normal plus 2% stalls.
    Mixture {
        /// The parts; weights need not sum to one.
        parts: Vec<Part>,
    },
}

/// One weighted part of a [`Dist::Mixture`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// Relative weight (positive).
    pub weight: f64,
    /// The distribution of this part.
    pub dist: Dist,
}

/// The widest log-normal shape: above it the distribution is all tail.
const MAX_SIGMA: f64 = 10.0;

impl Dist {
    /// Draws one delay in milliseconds, at least 0.
    pub fn sample_ms(&self, rng: &mut FastRng) -> f64 {
        match self {
            Dist::Constant { ms } => *ms,
            Dist::Uniform { min_ms, max_ms } => min_ms + (max_ms - min_ms) * rng.unit_f64(),
            Dist::Normal { mean_ms, stddev_ms } => {
                // With mean >= 0 each draw is kept with probability >= 1/2: the
                // bound is never reached in practice, it only keeps the loop finite.
                let mut x = 0.0;
                for _ in 0..64 {
                    x = mean_ms + stddev_ms * rng.standard_normal();
                    if x >= 0.0 {
                        break;
                    }
                }
                x.max(0.0)
            }
            Dist::Lognormal { median_ms, sigma } => median_ms * (sigma * rng.standard_normal()).exp(),
            Dist::Mixture { parts } => {
                let total: f64 = parts.iter().map(|p| p.weight).sum();
                let mut x = rng.unit_f64() * total;
                for part in parts {
                    if x < part.weight {
                        return part.dist.sample_ms(rng);
                    }
                    x -= part.weight;
                }
                // Rounding can leave x just above the last weight.
                parts.last().map_or(0.0, |p| p.dist.sample_ms(rng))
            }
        }
    }

    /// Draws one delay in nanoseconds (saturating).
    pub fn sample_ns(&self, rng: &mut FastRng) -> u64 {
        (self.sample_ms(rng).max(0.0) * 1e6) as u64
    }

    /// The mean in milliseconds (for a truncated normal, the mean before
    /// truncation: exact when the mean is a few deviations above zero).
    pub fn mean_ms(&self) -> f64 {
        match self {
            Dist::Constant { ms } => *ms,
            Dist::Uniform { min_ms, max_ms } => (min_ms + max_ms) / 2.0,
            Dist::Normal { mean_ms, .. } => *mean_ms,
            Dist::Lognormal { median_ms, sigma } => median_ms * (sigma * sigma / 2.0).exp(),
            Dist::Mixture { parts } => {
                let total: f64 = parts.iter().map(|p| p.weight).sum();
                parts.iter().map(|p| p.weight * p.dist.mean_ms()).sum::<f64>() / total
            }
        }
    }

    /// The mean in nanoseconds.
    pub fn mean_ns(&self) -> f64 {
        self.mean_ms() * 1e6
    }

    /// Checks the parameters; `Err((field, problem))` names the offending
    /// field relative to this distribution.
    pub fn validate(&self) -> Result<(), (String, String)> {
        fn finite_nonneg(field: &str, v: f64) -> Result<(), (String, String)> {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err((field.to_string(), format!("must be a finite number >= 0, got {v}")))
            }
        }
        match self {
            Dist::Constant { ms } => finite_nonneg("ms", *ms),
            Dist::Uniform { min_ms, max_ms } => {
                finite_nonneg("min_ms", *min_ms)?;
                finite_nonneg("max_ms", *max_ms)?;
                if max_ms < min_ms {
                    return Err(("max_ms".into(), format!("must be >= min_ms ({min_ms}), got {max_ms}")));
                }
                Ok(())
            }
            Dist::Normal { mean_ms, stddev_ms } => {
                finite_nonneg("mean_ms", *mean_ms)?;
                finite_nonneg("stddev_ms", *stddev_ms)
            }
            Dist::Lognormal { median_ms, sigma } => {
                finite_nonneg("median_ms", *median_ms)?;
                if *median_ms == 0.0 {
                    return Err(("median_ms".into(), "must be > 0".into()));
                }
                finite_nonneg("sigma", *sigma)?;
                if *sigma > MAX_SIGMA {
                    return Err(("sigma".into(), format!("must be <= {MAX_SIGMA} (all tail above), got {sigma}")));
                }
                Ok(())
            }
            Dist::Mixture { parts } => {
                if parts.is_empty() {
                    return Err(("parts".into(), "must name at least one part".into()));
                }
                for (i, part) in parts.iter().enumerate() {
                    if !(part.weight.is_finite() && part.weight > 0.0) {
                        return Err((format!("parts[{i}].weight"), format!("must be > 0, got {}", part.weight)));
                    }
                    part.dist.validate().map_err(|(f, p)| (format!("parts[{i}].dist.{f}"), p))?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(d: &Dist, seed: u64, n: usize) -> Vec<f64> {
        let mut rng = FastRng::new(seed);
        let mut v: Vec<f64> = (0..n).map(|_| d.sample_ms(&mut rng)).collect();
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
    fn sample_means_match_analytic_means() {
        let dists = [
            Dist::Constant { ms: 3.0 },
            Dist::Uniform { min_ms: 0.0, max_ms: 10.0 },
            Dist::Normal { mean_ms: 167.0, stddev_ms: 5.0 },
            Dist::Lognormal { median_ms: 10.0, sigma: 0.5 },
            Dist::Mixture {
                parts: vec![
                    Part { weight: 0.98, dist: Dist::Lognormal { median_ms: 5.0, sigma: 0.4 } },
                    Part { weight: 0.02, dist: Dist::Uniform { min_ms: 100.0, max_ms: 1000.0 } },
                ],
            },
        ];
        for d in &dists {
            let m = mean(&draws(d, 42, 200_000));
            let want = d.mean_ms();
            assert!((m - want).abs() / want < 0.02, "{d:?}: sampled {m}, analytic {want}");
        }
    }

    #[test]
    fn uniform_stays_in_range() {
        let v = draws(&Dist::Uniform { min_ms: 1.0, max_ms: 3.0 }, 2, 100_000);
        assert!(v[0] >= 1.0 && v[v.len() - 1] <= 3.0);
    }

    #[test]
    fn a_truncated_normal_is_redrawn_not_clamped() {
        // Mean 0: every draw is the positive half, none piled on zero.
        let v = draws(&Dist::Normal { mean_ms: 0.0, stddev_ms: 1.0 }, 5, 100_000);
        assert!(v[0] >= 0.0);
        assert!(v.iter().filter(|&&x| x == 0.0).count() < 10, "no mass piled on zero");
        // The mean of a half-normal is sigma * sqrt(2 / pi) = 0.798.
        assert!((mean(&v) - 0.798).abs() < 0.01, "{}", mean(&v));
    }

    #[test]
    fn lognormal_has_its_median_and_its_tail() {
        let v = draws(&Dist::Lognormal { median_ms: 2.0, sigma: 0.5 }, 6, 200_000);
        let med = quantile(&v, 0.5);
        assert!((med - 2.0).abs() < 0.02, "median {med}");
        // p99 is exp(2.326 sigma) x the median.
        let p99 = quantile(&v, 0.99);
        assert!((p99 - 2.0 * (2.326f64 * 0.5).exp()).abs() < 0.1, "p99 {p99}");
    }

    #[test]
    fn the_same_seed_gives_the_same_draws() {
        for d in [
            Dist::Normal { mean_ms: 1.0, stddev_ms: 1.0 },
            Dist::Lognormal { median_ms: 1.0, sigma: 1.0 },
            Dist::Uniform { min_ms: 0.0, max_ms: 1.0 },
        ] {
            assert_eq!(draws(&d, 9, 1000), draws(&d, 9, 1000));
            assert_ne!(draws(&d, 9, 1000), draws(&d, 10, 1000));
        }
    }

    #[test]
    fn validation_names_the_field() {
        let bad = Dist::Mixture { parts: vec![Part { weight: 1.0, dist: Dist::Uniform { min_ms: 5.0, max_ms: 1.0 } }] };
        let (field, problem) = bad.validate().unwrap_err();
        assert_eq!(field, "parts[0].dist.max_ms");
        assert!(problem.contains(">= min_ms"), "{problem}");
        for (bad, field) in [
            (Dist::Constant { ms: -1.0 }, "ms"),
            (Dist::Constant { ms: f64::NAN }, "ms"),
            (Dist::Uniform { min_ms: 0.0, max_ms: f64::INFINITY }, "max_ms"),
            (Dist::Normal { mean_ms: -1.0, stddev_ms: 1.0 }, "mean_ms"),
            (Dist::Normal { mean_ms: 1.0, stddev_ms: -1.0 }, "stddev_ms"),
            (Dist::Lognormal { median_ms: 0.0, sigma: 0.5 }, "median_ms"),
            (Dist::Lognormal { median_ms: 1.0, sigma: -0.1 }, "sigma"),
            (Dist::Lognormal { median_ms: 1.0, sigma: 11.0 }, "sigma"),
            (Dist::Mixture { parts: vec![] }, "parts"),
        ] {
            assert_eq!(bad.validate().unwrap_err().0, field, "{bad:?}");
        }
    }
}
