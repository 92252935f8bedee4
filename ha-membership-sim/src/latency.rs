//! One-way latency of the simulated network: a [`Dist`] drawn from the
//! simulator's own seeded generator, so a run stays a function of its seed.
//!
//! Real networks are not uniform: most datagrams take about the median and a
//! few take much longer (queueing, retransmission below the IP layer, a GC
//! pause in a middlebox). [`Dist`] gives the shapes a scenario needs and
//! [`Tail`] adds a rare extra delay on top of any of them.

use ha_core::rng::FastRng;
use serde::{Deserialize, Serialize};

use super::dist::Dist;
use super::scenario::ScenarioError;

/// The largest delay, in milliseconds, a datagram may take; draws above it
/// are clamped so an unbounded shape (normal, lognormal) stays a finite delay.
pub const MAX_LATENCY_MS: f64 = 60_000.0;

/// The network's default latency: uniform between 0.2 and 2 ms.
pub fn default_latency() -> Dist {
    Dist::Uniform { min_ms: 0.2, max_ms: 2.0 }
}

/// Checks a latency distribution found at `field` of the scenario.
pub fn validate(dist: &Dist, field: &str) -> Result<(), ScenarioError> {
    dist.validate().map_err(|(f, problem)| ScenarioError::new(format!("{field}.{f}"), problem))
}

/// Draws one delay in milliseconds, in `[0, MAX_LATENCY_MS]`.
pub fn sample_ms(dist: &Dist, rng: &mut FastRng) -> f64 {
    dist.sample_ms(rng).clamp(0.0, MAX_LATENCY_MS)
}

/// An extra delay added to a fraction of datagrams: a mixture of the base
/// distribution and the base plus `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tail {
    /// Probability that a datagram takes the extra delay.
    pub p: f64,
    /// The extra delay's distribution.
    pub extra: Dist,
}

impl Tail {
    /// Checks `p` and the extra delay.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        if !(self.p.is_finite() && (0.0..=1.0).contains(&self.p)) {
            return Err(ScenarioError::new("network.latency_tail.p", format!("{} must be in [0, 1]", self.p)));
        }
        validate(&self.extra, "network.latency_tail.extra")
    }

    /// The extra delay for one datagram in milliseconds (0 for most).
    pub fn sample_ms(&self, rng: &mut FastRng) -> f64 {
        if rng.unit_f64() < self.p {
            sample_ms(&self.extra, rng)
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_clamped_to_the_maximum() {
        let d = Dist::Lognormal { median_ms: 30_000.0, sigma: 10.0 };
        let mut rng = FastRng::new(7);
        assert!((0..1000).map(|_| sample_ms(&d, &mut rng)).all(|x| (0.0..=MAX_LATENCY_MS).contains(&x)));
    }

    #[test]
    fn a_tail_delays_its_fraction_by_its_extra() {
        let t = Tail { p: 0.1, extra: Dist::Constant { ms: 100.0 } };
        let mut rng = FastRng::new(11);
        let v: Vec<f64> = (0..100_000).map(|_| t.sample_ms(&mut rng)).collect();
        assert!(v.iter().all(|&x| x == 0.0 || x == 100.0));
        let share = v.iter().filter(|&&x| x > 0.0).count() as f64 / v.len() as f64;
        assert!((share - 0.1).abs() < 0.005, "{share}");
    }

    #[test]
    fn bad_parameters_are_rejected_with_the_field() {
        let e = validate(&Dist::Uniform { min_ms: 3.0, max_ms: 1.0 }, "network.latency").unwrap_err();
        assert_eq!(e.field, "network.latency.max_ms");
        assert!(Tail { p: 1.5, extra: Dist::Constant { ms: 1.0 } }.validate().is_err());
        let e = Tail { p: 0.5, extra: Dist::Constant { ms: -1.0 } }.validate().unwrap_err();
        assert_eq!(e.field, "network.latency_tail.extra.ms");
        assert!(Tail { p: 0.5, extra: Dist::Constant { ms: 1.0 } }.validate().is_ok());
    }
}
