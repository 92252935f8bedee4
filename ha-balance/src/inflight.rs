//! How many requests are in flight through a balancer, in all and per tier
//! (the ring-hash picker's bounded loads divide them by the endpoints
//! available).

use ha_core::sync::atomic::{AtomicU64, Ordering};

/// The in-flight counts of one balancer (all its clones).
pub(crate) struct InFlight {
    /// Indexed by tier; counted only while a picker reads it (see
    /// `tuning::flag::PER_TIER`), so the common path touches `total` alone.
    per_tier: Box<[AtomicU64]>,
    total: AtomicU64,
}

impl InFlight {
    pub(crate) fn new() -> Self {
        InFlight { per_tier: (0..=u8::MAX).map(|_| AtomicU64::new(0)).collect(), total: AtomicU64::new(0) }
    }

    /// A request to an endpoint of `tier` starts; `per_tier` must be the
    /// same at its `end`.
    #[inline]
    pub(crate) fn begin(&self, tier: u8, per_tier: bool) {
        if per_tier {
            self.per_tier[usize::from(tier)].fetch_add(1, Ordering::Relaxed);
        }
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// A request that `begin` counted ends.
    #[inline]
    pub(crate) fn end(&self, tier: u8, per_tier: bool) {
        if per_tier {
            self.per_tier[usize::from(tier)].fetch_sub(1, Ordering::Relaxed);
        }
        self.total.fetch_sub(1, Ordering::Relaxed);
    }

    /// Requests in flight to every tier.
    #[inline]
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Requests in flight to `tier` (0 unless counted per tier).
    #[inline]
    pub(crate) fn in_tier(&self, tier: u8) -> u64 {
        self.per_tier[usize::from(tier)].load(Ordering::Relaxed)
    }
}
