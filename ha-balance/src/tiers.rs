//! How traffic divides over priority tiers (Envoy's priority load).
//!
//! A tier's health is `min(1, overprovisioning x available / total)`. Tier
//! 0 takes its health's share of the traffic, tier 1 the smaller of its own
//! health and what is left, and so on; when the tiers together are less
//! than fully healthy the shares are scaled up to sum to one, so traffic
//! still goes where the healthy endpoints are. An endpoint counts as
//! available by its slow-start ramp (a whole tier back from an outage
//! takes its traffic back over the ramp, not at once).

/// A tier's health: `min(1, overprovisioning x available / total)`.
fn health(available: f64, total: u32, overprovisioning: f64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (overprovisioning * available / f64::from(total)).min(1.0)
    }
}

/// True when the tiers together cannot carry the traffic (their healths
/// sum to less than one): only then does a low healthy fraction mean panic,
/// so a healthy secondary tier takes over from a dead primary without it.
pub(crate) fn degraded(tiers: &[(f64, u32)], overprovisioning: f64) -> bool {
    tiers.iter().map(|&(a, t)| health(a, t, overprovisioning)).sum::<f64>() < 1.0
}

/// The share of traffic each tier gets, given `(available, total)` per tier
/// in priority order (`available` weighted by slow start). All zeros when
/// nothing is available.
pub(crate) fn tier_loads(tiers: &[(f64, u32)], overprovisioning: f64) -> Vec<f64> {
    let health: Vec<f64> = tiers.iter().map(|&(a, t)| health(a, t, overprovisioning)).collect();
    let sum: f64 = health.iter().sum();
    if sum <= 0.0 {
        return vec![0.0; tiers.len()];
    }
    if sum < 1.0 {
        return health.iter().map(|h| h / sum).collect();
    }
    let mut left = 1.0;
    health
        .iter()
        .map(|h| {
            let load = h.min(left);
            left -= load;
            load
        })
        .collect()
}

/// The fraction of the traffic reaching tier `i` (what the tiers before it
/// left over) that goes on to later tiers.
pub(crate) fn spilled(loads: &[f64], i: usize) -> f64 {
    let reaching: f64 = 1.0 - loads[..i].iter().sum::<f64>();
    if reaching <= 1e-12 {
        return 0.0;
    }
    ((reaching - loads[i]) / reaching).clamp(0.0, 1.0)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Counts as the planner passes them (no endpoint ramping).
    fn w(tiers: &[(u32, u32)]) -> Vec<(f64, u32)> {
        tiers.iter().map(|&(a, t)| (f64::from(a), t)).collect()
    }

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
    }

    #[test]
    fn healthy_primary_takes_everything() {
        assert!(close(&tier_loads(&w(&[(10, 10), (10, 10)]), 1.4), &[1.0, 0.0]));
        // 1/1.4 = 71.4% healthy is still enough.
        assert!(close(&tier_loads(&w(&[(8, 10), (10, 10)]), 1.4), &[1.0, 0.0]));
    }

    #[test]
    fn excess_spills_in_proportion() {
        // 50% healthy x 1.4 = 70% stays, 30% spills.
        let loads = tier_loads(&w(&[(5, 10), (10, 10)]), 1.4);
        assert!(close(&loads, &[0.7, 0.3]), "{loads:?}");
        assert!((spilled(&loads, 0) - 0.3).abs() < 1e-9);
        // Three tiers, the second half healthy too.
        let loads = tier_loads(&w(&[(2, 10), (4, 10), (10, 10)]), 1.4);
        assert!(close(&loads, &[0.28, 0.56, 0.16]), "{loads:?}");
        assert!((spilled(&loads, 1) - 0.16 / 0.72).abs() < 1e-9);
    }

    #[test]
    fn degraded_everywhere_is_normalised() {
        let loads = tier_loads(&w(&[(1, 10), (1, 10)]), 1.4);
        assert!(close(&loads, &[0.5, 0.5]), "{loads:?}");
        assert!(close(&tier_loads(&w(&[(0, 3), (0, 2)]), 1.4), &[0.0, 0.0]));
        assert!(close(&tier_loads(&w(&[(0, 3), (1, 2)]), 1.4), &[0.0, 1.0]));
    }

    #[test]
    fn degraded_only_when_the_tiers_together_fall_short() {
        assert!(!degraded(&w(&[(0, 2), (1, 1)]), 1.4), "a healthy secondary carries it");
        assert!(degraded(&w(&[(4, 10)]), 1.4));
        assert!(!degraded(&w(&[(8, 10)]), 1.4));
        assert!(degraded(&w(&[(0, 2), (1, 3)]), 1.4));
    }
}
