//! The outcomes of the last `T` of time, in buckets, lock-free.

use std::time::Duration;

use super::{Sample, WindowConfigError, WindowStats};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::Instant;

/// A bucket is one word: [epoch:16 | calls:16 | failures:16 | slow:16].
const EPOCH_SHIFT: u32 = 48;
const COUNT_MAX: u64 = 0xFFFF;

/// A sliding window over the outcomes of the last `span` of time, split into
/// `buckets` buckets.
///
/// Each bucket is one atomic word holding its counts and the (low 16 bits
/// of the) bucket period it belongs to, so moving a bucket on to a new period
/// and counting into it is a single compare-and-swap: no lock, no lost
/// reset. A bucket stops counting at 65 535 calls per period and keeps its
/// ratios as the sample of its first calls; make buckets shorter if one
/// endpoint takes more than that per bucket.
///
/// ```
/// use std::time::Duration;
/// use ha_core::stats::{Sample, TimeWindow};
/// use tokio::time::Instant;
///
/// let t0 = Instant::now();
/// let w = TimeWindow::new(t0, Duration::from_secs(10), 10).unwrap();
/// w.record(t0, Sample::FAILURE);
/// w.record(t0 + Duration::from_secs(5), Sample::SUCCESS);
/// assert_eq!(w.snapshot(t0 + Duration::from_secs(9)).calls, 2);
/// // Ten seconds on, the first bucket has slid out.
/// assert_eq!(w.snapshot(t0 + Duration::from_secs(10)).failures, 0);
/// ```
#[derive(Debug)]
pub struct TimeWindow {
    buckets: Box<[AtomicU64]>,
    epoch: Instant,
    bucket_nanos: u64,
}

impl TimeWindow {
    /// The most buckets a window may have.
    pub const MAX_BUCKETS: usize = 4096;

    /// A window over the last `span`, in `buckets` buckets, starting at `now`.
    pub fn new(now: Instant, span: Duration, buckets: usize) -> Result<Self, WindowConfigError> {
        if buckets == 0 {
            return Err(WindowConfigError::Empty);
        }
        if buckets > Self::MAX_BUCKETS {
            return Err(WindowConfigError::TooLarge { requested: buckets, max: Self::MAX_BUCKETS });
        }
        let bucket_nanos = (span.as_nanos() / buckets as u128).min(u64::MAX as u128) as u64;
        if bucket_nanos == 0 {
            return Err(WindowConfigError::BadDuration);
        }
        Ok(TimeWindow { buckets: (0..buckets).map(|_| AtomicU64::new(0)).collect(), epoch: now, bucket_nanos })
    }

    /// The span of one bucket.
    pub fn bucket_span(&self) -> Duration {
        Duration::from_nanos(self.bucket_nanos)
    }

    fn period(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.epoch).as_nanos() / self.bucket_nanos as u128) as u64
    }

    /// Records one call's outcome at `now`.
    pub fn record(&self, now: Instant, sample: Sample) {
        let period = self.period(now);
        let tag = period & 0xFFFF;
        let bucket = &self.buckets[(period % self.buckets.len() as u64) as usize];
        let add = 1u64 << 32 | (sample.failed() as u64) << 16 | sample.slow() as u64;
        let mut cur = bucket.load(Ordering::Acquire);
        loop {
            let their = cur >> EPOCH_SHIFT;
            let next = if their == tag {
                if (cur >> 32) & COUNT_MAX == COUNT_MAX {
                    return; // saturated: keep the sample of the first calls
                }
                cur + add
            } else if tag.wrapping_sub(their) & 0xFFFF < 0x8000 {
                tag << EPOCH_SHIFT | add // the bucket holds an older period: start afresh
            } else {
                return; // a newer period already owns the bucket: this sample is late
            };
            match bucket.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// The calls, failures and slow calls in the window ending at `now`.
    pub fn snapshot(&self, now: Instant) -> WindowStats {
        let tag = self.period(now) & 0xFFFF;
        let n = self.buckets.len() as u64;
        let mut s = WindowStats::default();
        for b in self.buckets.iter() {
            let v = b.load(Ordering::Acquire);
            let age = tag.wrapping_sub(v >> EPOCH_SHIFT) & 0xFFFF;
            if age < n {
                s.calls += (v >> 32) & COUNT_MAX;
                s.failures += (v >> 16) & COUNT_MAX;
                s.slow += v & COUNT_MAX;
            }
        }
        s
    }

    /// Forgets every recorded call.
    pub fn reset(&self) {
        for b in self.buckets.iter() {
            b.store(0, Ordering::Release);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn rejects_impossible_dimensions() {
        let now = Instant::now();
        assert_eq!(TimeWindow::new(now, secs(1), 0).unwrap_err(), WindowConfigError::Empty);
        assert_eq!(TimeWindow::new(now, Duration::from_nanos(5), 10).unwrap_err(), WindowConfigError::BadDuration);
        assert!(matches!(TimeWindow::new(now, secs(10), 5000), Err(WindowConfigError::TooLarge { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_slide_out_as_virtual_time_passes() {
        let t0 = Instant::now();
        let w = TimeWindow::new(t0, secs(10), 10).unwrap();
        for i in 0..10 {
            w.record(Instant::now(), Sample::new(i % 2 == 0, i == 3));
            tokio::time::advance(secs(1)).await;
        }
        // At t=10 s the sample of t=0 slid out; t=1..=9 remain.
        let s = w.snapshot(Instant::now());
        assert_eq!(s, WindowStats { calls: 9, failures: 4, slow: 1 });
        tokio::time::advance(secs(5)).await;
        assert_eq!(w.snapshot(Instant::now()).calls, 4);
        tokio::time::advance(secs(100)).await;
        assert_eq!(w.snapshot(Instant::now()), WindowStats::default());
        // A bucket reused after the window passed starts afresh.
        w.record(Instant::now(), Sample::FAILURE);
        assert_eq!(w.snapshot(Instant::now()), WindowStats { calls: 1, failures: 1, slow: 0 });
    }

    #[test]
    fn late_samples_do_not_clobber_newer_buckets() {
        let t0 = Instant::now();
        let w = TimeWindow::new(t0, secs(4), 4).unwrap();
        w.record(t0 + secs(4), Sample::FAILURE); // period 4, bucket 0
        w.record(t0, Sample::SUCCESS); // period 0, same bucket: late, dropped
        assert_eq!(w.snapshot(t0 + secs(4)), WindowStats { calls: 1, failures: 1, slow: 0 });
    }

    #[test]
    fn saturated_buckets_keep_their_ratio() {
        let t0 = Instant::now();
        let w = TimeWindow::new(t0, secs(1), 1).unwrap();
        for i in 0..70_000u32 {
            w.record(t0, Sample::new(i % 4 == 0, false));
        }
        let s = w.snapshot(t0);
        assert_eq!(s.calls, COUNT_MAX);
        assert!((s.failure_rate() - 0.25).abs() < 0.001, "{s:?}");
    }

    #[test]
    fn reset_forgets() {
        let t0 = Instant::now();
        let w = TimeWindow::new(t0, secs(1), 2).unwrap();
        w.record(t0, Sample::FAILURE);
        w.reset();
        assert_eq!(w.snapshot(t0), WindowStats::default());
        assert_eq!(w.bucket_span(), Duration::from_millis(500));
    }
}
