//! Lock-free statistics shared by the breaker, the budget, outlier
//! detection and the balancer.
//!
//! Each primitive is a handful of atomics updated with compare-and-swap or
//! fetch-add, so any number of tasks record into one instance without a
//! lock, and each takes the current [`Instant`](crate::Instant) as an
//! argument instead of reading a clock: callers read the clock once per call
//! and share the reading, and tests drive time explicitly.
//!
//! - [`PeakEwma`]: a latency estimate that jumps up to peaks at once and
//!   decays towards recent values (Finagle's and tower's PeakEWMA).
//! - [`CountWindow`]: outcomes of the last `N` calls.
//! - [`TimeWindow`]: outcomes of the last `T`, in buckets.
//!
//! ```
//! use std::time::Duration;
//! use ha_core::stats::{CountWindow, Sample, TimeWindow};
//! use tokio::time::Instant;
//!
//! let last_100 = CountWindow::new(100).unwrap();
//! last_100.record(Sample::SUCCESS);
//! last_100.record(Sample::FAILURE);
//! assert_eq!(last_100.snapshot().failure_rate(), 0.5);
//!
//! let now = Instant::now();
//! let last_10s = TimeWindow::new(now, Duration::from_secs(10), 10).unwrap();
//! last_10s.record(now, Sample::FAILURE.with_slow(true));
//! assert_eq!(last_10s.snapshot(now).slow, 1);
//! ```

mod count_window;
mod ewma;
mod sample;
mod time_window;

pub use count_window::CountWindow;
pub use ewma::PeakEwma;
#[allow(deprecated)]
pub use sample::WindowSnapshot;
pub use sample::{Sample, WindowStats};
pub use time_window::TimeWindow;

use std::fmt;

/// A window was configured with impossible dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowConfigError {
    /// The window must hold at least one call or one bucket.
    Empty,
    /// The window is larger than the primitive supports.
    TooLarge {
        /// What was asked for.
        requested: usize,
        /// The largest supported.
        max: usize,
    },
    /// A time window must span a positive duration at least one nanosecond
    /// per bucket long.
    BadDuration,
}

impl fmt::Display for WindowConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowConfigError::Empty => f.write_str("a window must hold at least one call or bucket"),
            WindowConfigError::TooLarge { requested, max } => {
                write!(f, "a window of {requested} is larger than the maximum of {max}")
            }
            WindowConfigError::BadDuration => f.write_str("a time window must last at least one nanosecond per bucket"),
        }
    }
}

impl std::error::Error for WindowConfigError {}
