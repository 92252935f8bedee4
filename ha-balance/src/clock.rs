//! The balancer's time line: nanoseconds since its creation, which is what
//! every endpoint's atomics (ejection ends, ramps, probe times) store. It is
//! a storage format, not a way in: time enters the balancer as an
//! [`Instant`] read once per call at the service edge, as everywhere in
//! `ha` (see [`ha_core::time`]), and is converted here.

use std::time::Duration;

use ha_core::Instant;

/// The instant every stored nanosecond count is measured from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock { epoch: Instant::now() }
    }

    /// `now` in nanoseconds since the epoch, never 0 (0 means "never" in
    /// the endpoints' time stamps).
    #[inline]
    pub(crate) fn ns(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.epoch)).max(1)
    }

    /// The instant every count is measured from.
    pub(crate) fn epoch(&self) -> Instant {
        self.epoch
    }

    /// The instant of a nanosecond count of this clock.
    pub(crate) fn instant(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }
}

/// A duration in nanoseconds, saturating.
#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
