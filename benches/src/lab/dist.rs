//! Service-time distributions of simulated backends.
//!
//! A distribution is data (it comes from a scenario file) and is sampled from
//! a caller-owned [`FastRng`], so a draw is a pure function of the generator's
//! seed: the lab seeds one generator per (backend, request, attempt) and every
//! contender sees the same service time for the same attempt.

use ha_core::rng::FastRng;
use serde::{Deserialize, Serialize};

/// A service-time distribution, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Dist {
    /// Always `ms`.
    Constant {
        /// The service time.
        ms: f64,
    },
    /// Uniform on `[min_ms, max_ms)`.
    Uniform {
        /// Lower bound (inclusive).
        min_ms: f64,
        /// Upper bound (exclusive).
        max_ms: f64,
    },
    /// Normal, truncated at zero.
    Normal {
        /// Mean.
        mean_ms: f64,
        /// Standard deviation.
        stddev_ms: f64,
    },
    /// Log-normal with the given median and shape (the standard deviation of
    /// the logarithm).
    Lognormal {
        /// Median (`exp(mu)`).
        median_ms: f64,
        /// Shape `sigma`.
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

impl Dist {
    /// Draws one service time in nanoseconds.
    pub fn sample_ns(&self, rng: &mut FastRng) -> u64 {
        (self.sample_ms(rng).max(0.0) * 1e6) as u64
    }

    fn sample_ms(&self, rng: &mut FastRng) -> f64 {
        match self {
            Dist::Constant { ms } => *ms,
            Dist::Uniform { min_ms, max_ms } => min_ms + (max_ms - min_ms) * rng.unit_f64(),
            Dist::Normal { mean_ms, stddev_ms } => mean_ms + stddev_ms * rng.standard_normal(),
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

    /// The mean in nanoseconds (what the oracle knows as "service rate").
    pub fn mean_ns(&self) -> f64 {
        let ms = match self {
            Dist::Constant { ms } => *ms,
            Dist::Uniform { min_ms, max_ms } => (min_ms + max_ms) / 2.0,
            Dist::Normal { mean_ms, .. } => *mean_ms,
            Dist::Lognormal { median_ms, sigma } => median_ms * (sigma * sigma / 2.0).exp(),
            Dist::Mixture { parts } => {
                let total: f64 = parts.iter().map(|p| p.weight).sum();
                parts.iter().map(|p| p.weight * p.dist.mean_ns() / 1e6).sum::<f64>() / total
            }
        };
        ms * 1e6
    }

    /// Checks the parameters; `Err((field, problem))` names the offending field
    /// relative to this distribution.
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
                finite_nonneg("sigma", *sigma)?;
                if *sigma > 5.0 {
                    return Err(("sigma".into(), format!("must be <= 5 (a wider shape overflows), got {sigma}")));
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

    fn mean_of(d: &Dist, n: u64) -> f64 {
        let mut rng = FastRng::new(42);
        (0..n).map(|_| d.sample_ns(&mut rng) as f64).sum::<f64>() / n as f64
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
            let m = mean_of(d, 200_000);
            let want = d.mean_ns();
            assert!((m - want).abs() / want < 0.02, "{d:?}: sampled {m}, analytic {want}");
        }
    }

    #[test]
    fn lognormal_median_is_the_median() {
        let d = Dist::Lognormal { median_ms: 10.0, sigma: 1.0 };
        let mut rng = FastRng::new(7);
        let mut xs: Vec<u64> = (0..100_001).map(|_| d.sample_ns(&mut rng)).collect();
        xs.sort_unstable();
        let median = xs[50_000] as f64 / 1e6;
        assert!((median - 10.0).abs() < 0.2, "median {median}");
    }

    #[test]
    fn validation_names_the_field() {
        let bad = Dist::Mixture { parts: vec![Part { weight: 1.0, dist: Dist::Uniform { min_ms: 5.0, max_ms: 1.0 } }] };
        let (field, problem) = bad.validate().unwrap_err();
        assert_eq!(field, "parts[0].dist.max_ms");
        assert!(problem.contains(">= min_ms"), "{problem}");
    }
}
