//! An advisory health gate switched by hand, as a stack's circuit breaker
//! in `RejectMode::Advisory` vetoes its endpoint while it is open.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// An advisory gate (a stack's breaker): the balancer may set its veto aside.
#[derive(Clone, Default)]
pub struct Advisory {
    vetoing: Arc<AtomicBool>,
    /// Its runs of vetoes, as a breaker's closings count them (`None`: a
    /// gate that cannot tell).
    run: Option<Arc<AtomicU64>>,
}

impl Advisory {
    pub fn with_runs() -> Self {
        Advisory { run: Some(Arc::default()), ..Advisory::default() }
    }
    pub fn veto(&self, on: bool) {
        self.vetoing.store(on, Ordering::Relaxed);
    }
    pub fn vetoes(&self) -> bool {
        self.vetoing.load(Ordering::Relaxed)
    }
    /// The endpoint recovered: the next veto starts a new run.
    pub fn recovered(&self) {
        self.veto(false);
        self.run.as_ref().expect("a gate with runs").fetch_add(1, Ordering::Relaxed);
    }
}

impl ha_balance::HealthGate for Advisory {
    fn admits(&self, _now: ha_core::Instant) -> bool {
        !self.vetoes()
    }
    fn advisory(&self) -> bool {
        true
    }
    fn veto_run(&self) -> Option<u64> {
        self.run.as_ref().map(|r| r.load(Ordering::Relaxed))
    }
}
