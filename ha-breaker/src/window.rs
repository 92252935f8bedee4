//! The closed-state window: ha-core's [`CountWindow`] (the default; a fast
//! success into a healthy window writes nothing, so it needs no clock read
//! and no read-modify-write) or its [`TimeWindow`] (one clock read per call).
//!
//! [`Windows`] holds the window in force and lets a reconfiguration replace
//! it with one of another shape while calls keep recording, without a lock
//! on the call path.

use std::sync::OnceLock;

use ha_core::stats::{CountWindow, Sample, TimeWindow, WindowStats};
use ha_core::sync::atomic::{AtomicUsize, Ordering};
use ha_core::{Instant, Now};

use crate::config::{window_size_error, ConfigError, WindowConfig, MAX_WINDOW_BUCKETS, MAX_WINDOW_CALLS};

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
    /// An empty window of `shape`; a time window's buckets are aligned on `epoch`.
    pub(crate) fn new(shape: WindowConfig, epoch: Instant) -> Result<Window, ConfigError> {
        Ok(match shape {
            WindowConfig::Count { size } => {
                Window::Count(CountWindow::new(size as usize).map_err(|_| window_size_error(size, MAX_WINDOW_CALLS))?)
            }
            WindowConfig::Time { span, buckets } => Window::Time(
                TimeWindow::new(epoch, span, buckets as usize)
                    .map_err(|_| window_size_error(buckets, MAX_WINDOW_BUCKETS))?,
            ),
        })
    }

    /// True when recording needs the current time.
    pub(crate) fn needs_clock(&self) -> bool {
        matches!(self, Window::Time(_))
    }

    #[inline]
    pub(crate) fn record(&self, sample: Sample, now: impl Now) {
        match self {
            Window::Count(ring) => ring.record(sample),
            Window::Time(window) => window.record(now.now(), sample),
        }
    }

    pub(crate) fn snapshot(&self, now: impl Now) -> WindowStats {
        match self {
            Window::Count(ring) => ring.snapshot(),
            Window::Time(window) => window.snapshot(now.now()),
        }
    }

    pub(crate) fn reset(&self) {
        match self {
            Window::Count(ring) => ring.reset(),
            Window::Time(window) => window.reset(),
        }
    }
}

/// Every window a breaker has had, one per shape, and which is in force.
///
/// The crates forbid `unsafe`, so a window that a call may be recording
/// into cannot be freed without the call holding a lock guard or a
/// reference count, both read-modify-writes on a line every caller shares.
/// Instead a window is never freed while its breaker lives: a new shape is
/// appended to a write-once chain and `current` (its position) is switched
/// with a release store. A call loads `current` once (acquire, which also
/// makes the appended window's contents visible), walks to it and records;
/// no lock, no write, and for a breaker never reshaped (position 0) no walk.
/// A call that loaded the old position just before a switch records into
/// the retired window: its outcome is lost to the new one, as if it had
/// finished before the reconfiguration.
///
/// Coming back to a shape used before reuses (and empties) its window
/// rather than appending another, so a breaker holds at most one window per
/// distinct shape it was ever given; a call that read a position long ago
/// may put one stale sample into such a reused window, which the window's
/// own later outcomes soon outweigh.
///
/// Switches are serialised by the caller (the breaker's config lock).
#[derive(Debug)]
pub(crate) struct Windows {
    current: AtomicUsize,
    first: Slot,
}

#[derive(Debug)]
struct Slot {
    shape: WindowConfig,
    window: Window,
    // std's, not loom's (loom has none): it is written once under the
    // config lock before `current` publishes it, and loom checks that
    // publication through `current`.
    next: OnceLock<Box<Slot>>,
}

impl Windows {
    pub(crate) fn new(shape: WindowConfig, epoch: Instant) -> Result<Windows, ConfigError> {
        Ok(Windows {
            current: AtomicUsize::new(0),
            first: Slot { shape, window: Window::new(shape, epoch)?, next: OnceLock::new() },
        })
    }

    /// The window in force.
    #[inline]
    pub(crate) fn current(&self) -> &Window {
        let mut at = self.current.load(Ordering::Acquire);
        let mut slot = &self.first;
        while at > 0 {
            slot = slot.next.get().expect("a window is appended before its position is published");
            at -= 1;
        }
        &slot.window
    }

    /// Puts a window of `shape` in force: the current one if it already has
    /// that shape (returns true: its calls are kept), else an emptied one
    /// (false). Fails, changing nothing, only if the window cannot be built.
    /// Callers serialise calls to it.
    pub(crate) fn reshape(&self, shape: WindowConfig, epoch: Instant) -> Result<bool, ConfigError> {
        let current = self.current.load(Ordering::Relaxed);
        let mut at = 0;
        let mut slot = &self.first;
        loop {
            if slot.shape == shape {
                if at == current {
                    return Ok(true);
                }
                slot.window.reset();
                self.current.store(at, Ordering::Release);
                return Ok(false);
            }
            match slot.next.get() {
                Some(next) => {
                    slot = next;
                    at += 1;
                }
                None => break,
            }
        }
        let fresh = Slot { shape, window: Window::new(shape, epoch)?, next: OnceLock::new() };
        // The tail's link is empty and only this (serialised) caller sets it.
        slot.next.get_or_init(|| Box::new(fresh));
        self.current.store(at + 1, Ordering::Release);
        Ok(false)
    }
}
