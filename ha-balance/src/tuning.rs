//! The balancer's configuration as the request path reads it, and how a
//! running balancer takes a new one.
//!
//! A [`Tuning`] is the config plus what is precomputed from it. Each
//! endpoint-table snapshot carries the tuning it was built with, so a pick
//! reads its settings from the snapshot it already holds (no extra load);
//! reconfiguring rebuilds the snapshot over the same endpoint slots, which
//! keeps every endpoint's state (latency estimate, ejection, slow start,
//! breaker). The few settings the response path needs without a snapshot
//! sit in [`Hot`] atomics, written after the new snapshot is in place.

use std::sync::Arc;

use ha_core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::clock::nanos;
use crate::config::{BalanceConfig, Picker};
use crate::outlier::Detector;

/// One version of the balancer's settings.
pub(crate) struct Tuning {
    pub(crate) cfg: BalanceConfig,
    pub(crate) detector: Detector,
    pub(crate) refresh_ns: u64,
    pub(crate) slow_start_ns: u64,
    /// The PeakEWMA picker's weighing of in-flight requests.
    pub(crate) load_term: LoadTerm,
    /// `1 / default_rtt` in 1/ns: the pending pickers weigh a failure cost
    /// in units of the latency prior.
    pub(crate) failure_scale: f64,
}

impl Tuning {
    pub(crate) fn new(cfg: BalanceConfig) -> Arc<Tuning> {
        Arc::new(Tuning {
            detector: Detector::new(cfg.outlier)
                .keep_available(cfg.tiers.panic_threshold)
                .prices_latency(cfg.picker.needs_latency()),
            refresh_ns: nanos(cfg.tiers.refresh),
            slow_start_ns: nanos(cfg.slow_start.window),
            load_term: LoadTerm::new(cfg.load.pending_bias),
            failure_scale: 1.0 / (cfg.load.default_rtt.as_secs_f64() * 1e9).max(1e6),
            cfg,
        })
    }
}

/// The PeakEWMA picker's load factor `(pending + 1)^bias`, with the
/// exponents that have a cheaper form than `powf` (0.5 is one square
/// root, the default 0.75 a square root times its square root) resolved
/// once when the balancer is built.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum LoadTerm {
    /// Bias 1: tower's and Finagle's `pending + 1`.
    Linear,
    /// Bias 0.5.
    Sqrt,
    /// Bias 0.75.
    ThreeQuarters,
    /// Any other bias in `[0, 1)`.
    Pow(f64),
}

impl LoadTerm {
    pub(crate) fn new(bias: f64) -> Self {
        if bias == 1.0 {
            LoadTerm::Linear
        } else if bias == 0.5 {
            LoadTerm::Sqrt
        } else if bias == 0.75 {
            LoadTerm::ThreeQuarters
        } else {
            LoadTerm::Pow(bias)
        }
    }

    /// `load^bias`, for `load = pending + 1 >= 1`.
    #[inline]
    pub(crate) fn weigh(self, load: f64) -> f64 {
        match self {
            LoadTerm::Linear => load,
            LoadTerm::Sqrt => load.sqrt(),
            LoadTerm::ThreeQuarters => {
                let root = load.sqrt();
                root * root.sqrt()
            }
            LoadTerm::Pow(bias) => load.powf(bias),
        }
    }
}

/// Flags a request's flight reads once, when it starts.
pub(crate) mod flag {
    /// Count in-flight requests per tier (only bounded loads read them).
    pub(crate) const PER_TIER: u8 = 1;
    /// Time every response: the picker weighs latency, or the interval
    /// rules judge whether the endpoints in service carry the load.
    pub(crate) const LATENCY: u8 = 2;
    /// The picker prices failures.
    pub(crate) const PRICES_FAILURES: u8 = 4;
    /// A request given up on after it was sent counts as a failure.
    pub(crate) const CANCELLED_FAILS: u8 = 8;
    /// Per request, not a setting: it carries an attempt context, so a
    /// retry layer above sends it again if it fails (see
    /// `InFlightRequest::failure_cost`).
    pub(crate) const RETRIED: u8 = 16;
}

/// The settings the response path reads without a snapshot: relaxed
/// atomics, each one applying on its own (a response finishing during a
/// reconfiguration may see some new settings and some old, never a torn
/// value).
pub(crate) struct Hot {
    flags: AtomicU8,
    consecutive_failures: AtomicU32,
    failure_penalty: AtomicU64,
    prior_ns: AtomicU64,
}

impl Hot {
    pub(crate) fn new(cfg: &BalanceConfig) -> Self {
        let hot = Hot {
            flags: AtomicU8::new(0),
            consecutive_failures: AtomicU32::new(0),
            failure_penalty: AtomicU64::new(0),
            prior_ns: AtomicU64::new(0),
        };
        hot.set(cfg);
        hot
    }

    pub(crate) fn set(&self, cfg: &BalanceConfig) {
        let mut flags = 0;
        if matches!(cfg.picker, Picker::RingHash { .. }) {
            flags |= flag::PER_TIER;
        }
        // The interval rules' capacity guards read the latency of the
        // endpoints in service (they queue: the ejected one is let back), so
        // any picker times responses while those rules are on.
        if cfg.picker.needs_latency() || cfg.outlier.interval_rules() {
            flags |= flag::LATENCY;
        }
        if cfg.picker.prices_failures() {
            flags |= flag::PRICES_FAILURES;
        }
        if cfg.outlier.cancelled_as_failure {
            flags |= flag::CANCELLED_FAILS;
        }
        self.flags.store(flags, Ordering::Relaxed);
        self.consecutive_failures.store(cfg.outlier.consecutive_failures, Ordering::Relaxed);
        self.failure_penalty.store(cfg.load.failure_penalty.to_bits(), Ordering::Relaxed);
        self.prior_ns.store(nanos(cfg.load.default_rtt), Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn flags(&self) -> u8 {
        self.flags.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// The failure penalty and the latency prior in ns.
    pub(crate) fn failure_pricing(&self) -> (f64, f64) {
        (f64::from_bits(self.failure_penalty.load(Ordering::Relaxed)), self.prior_ns.load(Ordering::Relaxed) as f64)
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use ha_core::sync::Arc as SyncArc;

    /// A flight counts itself per tier by the flags it read when it began,
    /// so a reconfiguration that switches the per-tier count on or off
    /// between a flight's start and end never leaves the count off by one.
    #[test]
    fn per_tier_counts_balance_across_a_reconfiguration() {
        loom::model(|| {
            let ring = BalanceConfig {
                picker: Picker::RingHash { vnodes: 10, load_factor: 1.25 },
                ..BalanceConfig::default()
            };
            let hot = SyncArc::new(Hot::new(&BalanceConfig::default()));
            let pending = SyncArc::new(AtomicU64::new(0));
            let flight = {
                let (hot, pending) = (hot.clone(), pending.clone());
                loom::thread::spawn(move || {
                    let flags = hot.flags();
                    if flags & flag::PER_TIER != 0 {
                        pending.fetch_add(1, Ordering::Relaxed);
                    }
                    loom::thread::yield_now();
                    if flags & flag::PER_TIER != 0 {
                        pending.fetch_sub(1, Ordering::Relaxed);
                    }
                })
            };
            hot.set(&ring);
            flight.join().unwrap();
            assert_eq!(pending.load(Ordering::Relaxed), 0);
            assert_eq!(hot.flags() & flag::PER_TIER, flag::PER_TIER);
            assert_eq!(hot.consecutive_failures(), ring.outlier.consecutive_failures);
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::LoadTerm;

    /// The cheaper forms give what `powf` gives.
    #[test]
    fn load_terms_agree_with_powf() {
        for bias in [0.0, 0.25, 0.5, 0.75, 1.0] {
            let term = LoadTerm::new(bias);
            for load in [1.0, 2.0, 3.5, 17.0, 1e6] {
                let want = f64::powf(load, bias);
                assert!((term.weigh(load) - want).abs() <= 1e-12 * want, "{bias} {load}");
            }
        }
        assert_eq!(LoadTerm::new(0.75), LoadTerm::ThreeQuarters);
    }
}
