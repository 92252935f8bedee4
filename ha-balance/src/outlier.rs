//! Outlier detection, Envoy's model, as a sans-IO core: it is handed
//! outcomes and the time, and answers which endpoints to eject and for how
//! long. The balancer applies the answers and emits the events.
//!
//! Rules: consecutive failures (checked on every outcome), success rate
//! below `mean - k x stdev` of the fleet and failure percentage above a
//! threshold (both checked once per interval over that interval's counts).
//! An ejection lasts `base x times ejected`, capped; an endpoint that stays
//! healthy for an interval has its count lowered by one. Never more than
//! `max_ejection_percent` of the endpoints are ejected at once, but one
//! endpoint always may be.

use std::time::Duration;

use ha_core::event::EjectionReason;
use ha_core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::config::OutlierConfig;
use crate::health::Health;

/// Per-endpoint counters of the detector.
#[derive(Debug, Default)]
pub(crate) struct OutlierState {
    consecutive: AtomicU32,
    interval_ok: AtomicU64,
    interval_failed: AtomicU64,
    /// Ejections not yet forgiven: the multiplier of the next ejection time.
    multiplier: AtomicU32,
}

/// One endpoint as the detector sees it.
#[derive(Clone, Copy)]
pub(crate) struct Host<'a> {
    pub outlier: &'a OutlierState,
    pub health: &'a Health,
}

/// A decision: eject `host` (an index into the slice given) for `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ejection {
    pub host: usize,
    pub reason: EjectionReason,
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub(crate) struct Detector {
    cfg: OutlierConfig,
}

impl Detector {
    pub fn new(cfg: OutlierConfig) -> Self {
        Detector { cfg }
    }

    pub fn interval(&self) -> Duration {
        self.cfg.interval
    }

    /// Counts one outcome; true when it made the endpoint cross the
    /// consecutive-failure threshold (exactly one caller sees the crossing).
    #[inline]
    pub fn record(&self, state: &OutlierState, failed: bool) -> bool {
        if failed {
            state.interval_failed.fetch_add(1, Ordering::Relaxed);
            let n = state.consecutive.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
            self.cfg.consecutive_failures != 0 && n == self.cfg.consecutive_failures
        } else {
            state.interval_ok.fetch_add(1, Ordering::Relaxed);
            if state.consecutive.load(Ordering::Relaxed) != 0 {
                state.consecutive.store(0, Ordering::Release);
            }
            false
        }
    }

    fn max_ejected(&self, hosts: usize) -> usize {
        if self.cfg.max_ejection_percent <= 0.0 || hosts == 0 {
            return 0;
        }
        ((hosts as f64 * self.cfg.max_ejection_percent / 100.0).floor() as usize).max(1)
    }

    /// Ejects `hosts[idx]` at `now_ns` unless the cap forbids it or it is
    /// already ejected. Callers serialise ejections (a lock on this rare path)
    /// so two of them cannot both take the last place under the cap.
    pub fn try_eject(&self, hosts: &[Host<'_>], idx: usize, now_ns: u64, reason: EjectionReason) -> Option<Ejection> {
        let host = hosts[idx];
        if host.health.is_ejected(now_ns) {
            return None;
        }
        let ejected = hosts.iter().filter(|h| h.health.is_ejected(now_ns)).count();
        if ejected >= self.max_ejected(hosts.len()) {
            return None;
        }
        let times = host.outlier.multiplier.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        let duration = self
            .cfg
            .base_ejection_time
            .saturating_mul(times)
            .min(self.cfg.max_ejection_time.max(self.cfg.base_ejection_time));
        host.health.eject_until(now_ns.saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)));
        host.outlier.consecutive.store(0, Ordering::Release);
        Some(Ejection { host: idx, reason, duration })
    }

    /// The interval rules over the counts since the last evaluation; resets
    /// those counts and forgives one ejection of every endpoint that was
    /// healthy through the interval.
    pub fn evaluate(&self, hosts: &[Host<'_>], now_ns: u64) -> Vec<Ejection> {
        let counts: Vec<(u64, u64)> = hosts
            .iter()
            .map(|h| {
                (h.outlier.interval_ok.swap(0, Ordering::AcqRel), h.outlier.interval_failed.swap(0, Ordering::AcqRel))
            })
            .collect();
        let mut out = Vec::new();
        if let Some(sr) = &self.cfg.success_rate {
            let judged: Vec<(usize, f64)> = counts
                .iter()
                .enumerate()
                .filter(|(i, (ok, failed))| ok + failed >= sr.request_volume && !hosts[*i].health.is_ejected(now_ns))
                .map(|(i, (ok, failed))| (i, *ok as f64 / (ok + failed) as f64))
                .collect();
            if judged.len() >= sr.minimum_hosts as usize && !judged.is_empty() {
                let n = judged.len() as f64;
                let mean = judged.iter().map(|(_, r)| r).sum::<f64>() / n;
                let var = judged.iter().map(|(_, r)| (r - mean) * (r - mean)).sum::<f64>() / n;
                let threshold = (mean - sr.stdev_factor * var.sqrt()).min(mean - sr.min_deficit);
                for (i, rate) in judged {
                    if rate < threshold {
                        out.extend(self.try_eject(hosts, i, now_ns, EjectionReason::SuccessRate));
                    }
                }
            }
        }
        if let Some(fp) = &self.cfg.failure_percentage {
            let judged: Vec<(usize, f64)> = counts
                .iter()
                .enumerate()
                .filter(|(_, (ok, failed))| ok + failed >= fp.request_volume)
                .map(|(i, (ok, failed))| (i, 100.0 * *failed as f64 / (ok + failed) as f64))
                .collect();
            if judged.len() >= fp.minimum_hosts as usize {
                for (i, pct) in judged {
                    if pct > fp.threshold {
                        out.extend(self.try_eject(hosts, i, now_ns, EjectionReason::FailurePercentage));
                    }
                }
            }
        }
        for (i, h) in hosts.iter().enumerate() {
            let ejected_now = out.iter().any(|e| e.host == i);
            if !ejected_now && !h.health.is_ejected(now_ns) {
                let m = h.outlier.multiplier.load(Ordering::Acquire);
                if m > 0 {
                    let _ = h.outlier.multiplier.compare_exchange(m, m - 1, Ordering::AcqRel, Ordering::Acquire);
                }
            }
        }
        out
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::config::{FailurePercentageConfig, SuccessRateConfig};

    const SEC: u64 = 1_000_000_000;

    struct Fleet {
        outlier: Vec<OutlierState>,
        health: Vec<Health>,
    }

    impl Fleet {
        fn new(n: usize) -> Self {
            Fleet {
                outlier: (0..n).map(|_| OutlierState::default()).collect(),
                health: (0..n).map(|_| Health::new(None)).collect(),
            }
        }
        fn hosts(&self) -> Vec<Host<'_>> {
            self.outlier.iter().zip(&self.health).map(|(outlier, health)| Host { outlier, health }).collect()
        }
    }

    fn cfg() -> OutlierConfig {
        OutlierConfig { success_rate: None, ..OutlierConfig::default() }
    }

    #[test]
    fn consecutive_failures_trip_once_at_the_threshold_and_success_resets() {
        let d = Detector::new(cfg());
        let s = OutlierState::default();
        for _ in 0..4 {
            assert!(!d.record(&s, true));
        }
        assert!(!d.record(&s, false));
        for _ in 0..4 {
            assert!(!d.record(&s, true));
        }
        assert!(d.record(&s, true), "fifth failure in a row");
        assert!(!d.record(&s, true), "the crossing is reported once");
    }

    #[test]
    fn ejection_time_grows_with_count_and_is_capped_and_forgiven() {
        let d = Detector::new(OutlierConfig { max_ejection_time: Duration::from_secs(70), ..cfg() });
        let f = Fleet::new(1);
        let hosts = f.hosts();
        let e = d.try_eject(&hosts, 0, SEC, EjectionReason::ConsecutiveFailures).unwrap();
        assert_eq!(e.duration, Duration::from_secs(30));
        assert!(f.health[0].is_ejected(SEC + 29 * SEC));
        assert!(!f.health[0].is_ejected(SEC + 30 * SEC));
        assert!(d.try_eject(&hosts, 0, 2 * SEC, EjectionReason::ConsecutiveFailures).is_none(), "already ejected");
        let e = d.try_eject(&hosts, 0, 40 * SEC, EjectionReason::ConsecutiveFailures).unwrap();
        assert_eq!(e.duration, Duration::from_secs(60));
        let e = d.try_eject(&hosts, 0, 200 * SEC, EjectionReason::ConsecutiveFailures).unwrap();
        assert_eq!(e.duration, Duration::from_secs(70), "capped");
        // Three healthy intervals forgive the three ejections.
        for k in 0..3 {
            assert!(d.evaluate(&hosts, 300 * SEC + k * 10 * SEC).is_empty());
        }
        let e = d.try_eject(&hosts, 0, 400 * SEC, EjectionReason::ConsecutiveFailures).unwrap();
        assert_eq!(e.duration, Duration::from_secs(30));
    }

    #[test]
    fn at_most_max_ejection_percent_but_always_one() {
        let d = Detector::new(cfg());
        let f = Fleet::new(25);
        let hosts = f.hosts();
        let ejected = (0..25).filter(|&i| d.try_eject(&hosts, i, SEC, EjectionReason::ConsecutiveFailures).is_some());
        assert_eq!(ejected.count(), 2, "10% of 25");
        let f = Fleet::new(3);
        let hosts = f.hosts();
        let ejected = (0..3).filter(|&i| d.try_eject(&hosts, i, SEC, EjectionReason::ConsecutiveFailures).is_some());
        assert_eq!(ejected.count(), 1, "one host even though 10% of 3 is 0");
        let zero = Detector::new(OutlierConfig { max_ejection_percent: 0.0, ..cfg() });
        assert!(zero.try_eject(&hosts, 2, SEC, EjectionReason::ConsecutiveFailures).is_none());
    }

    fn feed(d: &Detector, s: &OutlierState, ok: u64, failed: u64) {
        for _ in 0..ok {
            d.record(s, false);
        }
        for _ in 0..failed {
            d.record(s, true);
        }
    }

    #[test]
    fn success_rate_ejects_the_outlier_only_with_enough_hosts_and_volume() {
        let c = OutlierConfig {
            consecutive_failures: 0,
            max_ejection_percent: 50.0,
            success_rate: Some(SuccessRateConfig::default()),
            ..cfg()
        };
        let d = Detector::new(c);
        let f = Fleet::new(10);
        let hosts = f.hosts();
        for i in 0..9 {
            feed(&d, &f.outlier[i], 198, 2);
        }
        feed(&d, &f.outlier[9], 140, 60);
        let out = d.evaluate(&hosts, SEC);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].host, out[0].reason), (9, EjectionReason::SuccessRate));

        // Too little volume: nobody is judged.
        let f = Fleet::new(10);
        let hosts = f.hosts();
        for i in 0..9 {
            feed(&d, &f.outlier[i], 50, 0);
        }
        feed(&d, &f.outlier[9], 0, 50);
        assert!(d.evaluate(&hosts, SEC).is_empty());

        // Too few hosts: nobody is judged.
        let f = Fleet::new(4);
        let hosts = f.hosts();
        for i in 0..3 {
            feed(&d, &f.outlier[i], 200, 0);
        }
        feed(&d, &f.outlier[3], 0, 200);
        assert!(d.evaluate(&hosts, SEC).is_empty());
    }

    #[test]
    fn a_fleet_failing_one_percent_at_random_ejects_nobody() {
        // Ten endpoints at ~1% failures with binomial noise: 0.4% .. 1.8%.
        let d = Detector::new(OutlierConfig {
            consecutive_failures: 0,
            max_ejection_percent: 100.0,
            success_rate: Some(SuccessRateConfig::default()),
            ..cfg()
        });
        let f = Fleet::new(10);
        let hosts = f.hosts();
        for (i, failed) in [10u64, 4, 18, 9, 11, 7, 13, 10, 8, 10].into_iter().enumerate() {
            feed(&d, &f.outlier[i], 1000 - failed, failed);
        }
        assert!(d.evaluate(&hosts, SEC).is_empty());
        // Envoy's rule alone (no floor) ejects the unlucky one.
        let envoy = Detector::new(OutlierConfig {
            consecutive_failures: 0,
            max_ejection_percent: 100.0,
            success_rate: Some(SuccessRateConfig { min_deficit: 0.0, ..SuccessRateConfig::default() }),
            ..cfg()
        });
        let f = Fleet::new(10);
        let hosts = f.hosts();
        for (i, failed) in [10u64, 4, 18, 9, 11, 7, 13, 10, 8, 10].into_iter().enumerate() {
            feed(&envoy, &f.outlier[i], 1000 - failed, failed);
        }
        assert_eq!(envoy.evaluate(&hosts, SEC).iter().map(|e| e.host).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn the_counts_restart_every_interval() {
        let c = OutlierConfig { consecutive_failures: 0, success_rate: Some(SuccessRateConfig::default()), ..cfg() };
        let d = Detector::new(c);
        let f = Fleet::new(5);
        let hosts = f.hosts();
        for i in 0..4 {
            feed(&d, &f.outlier[i], 100, 0);
        }
        feed(&d, &f.outlier[4], 50, 50);
        assert_eq!(d.evaluate(&hosts, SEC).len(), 1);
        // Next interval: nothing new recorded, so nothing to judge.
        assert!(d.evaluate(&hosts, 11 * SEC).is_empty());
    }

    #[test]
    fn failure_percentage_rule() {
        let c = OutlierConfig {
            consecutive_failures: 0,
            max_ejection_percent: 100.0,
            failure_percentage: Some(FailurePercentageConfig {
                minimum_hosts: 3,
                ..FailurePercentageConfig::default()
            }),
            ..cfg()
        };
        let d = Detector::new(c);
        let f = Fleet::new(3);
        let hosts = f.hosts();
        feed(&d, &f.outlier[0], 50, 0);
        feed(&d, &f.outlier[1], 10, 90);
        feed(&d, &f.outlier[2], 9, 41); // 82%: under the 85% threshold
        let out = d.evaluate(&hosts, SEC);
        assert_eq!(
            out.iter().map(|e| (e.host, e.reason)).collect::<Vec<_>>(),
            vec![(1, EjectionReason::FailurePercentage)]
        );
    }
}

/// Loom models of the counters above; run by CI with
/// `RUSTFLAGS="--cfg loom" cargo test --release -p ha-balance --lib loom_models`.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn at_most_one_of_racing_failures_crosses_the_consecutive_threshold() {
        loom::model(|| {
            // Threshold 3, four failures from two threads and a success racing
            // with them: no two callers may both see the crossing (both would
            // try to eject the endpoint).
            let detector =
                Arc::new(Detector::new(OutlierConfig { consecutive_failures: 3, ..OutlierConfig::default() }));
            let state = Arc::new(OutlierState::default());
            let racer = |success: bool| {
                let (detector, state) = (detector.clone(), state.clone());
                loom::thread::spawn(move || {
                    if success {
                        detector.record(&state, false);
                    }
                    (0..2).map(|_| usize::from(detector.record(&state, true))).sum::<usize>()
                })
            };
            let (a, b) = (racer(false), racer(true));
            let crossed = a.join().unwrap() + b.join().unwrap();
            assert!(crossed <= 1, "{crossed} callers saw the crossing");
        });
    }
}
