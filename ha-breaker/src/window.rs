//! The closed-state window: ha-core's [`CountWindow`] (the default; a fast
//! success into a healthy window writes nothing, so it needs no clock read
//! and no read-modify-write) or its [`TimeWindow`] (one clock read per call).

use ha_core::stats::{CountWindow, Sample, TimeWindow, WindowSnapshot};
use ha_core::Instant;

/// The closed-state window of one breaker.
// The count ring is large because of its cache-line padding; boxing it would
// add a pointer chase to every call, and there is one window per breaker.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    /// True when recording needs the current time.
    pub(crate) fn needs_clock(&self) -> bool {
        matches!(self, Window::Time(_))
    }

    #[inline]
    pub(crate) fn record(&self, sample: Sample, now: impl FnOnce() -> Instant) {
        match self {
            Window::Count(ring) => ring.record(sample),
            Window::Time(window) => window.record(now(), sample),
        }
    }

    pub(crate) fn snapshot(&self, now: impl FnOnce() -> Instant) -> WindowSnapshot {
        match self {
            Window::Count(ring) => ring.snapshot(),
            Window::Time(window) => window.snapshot(now()),
        }
    }

    pub(crate) fn reset(&self) {
        match self {
            Window::Count(ring) => ring.reset(),
            Window::Time(window) => window.reset(),
        }
    }
}
