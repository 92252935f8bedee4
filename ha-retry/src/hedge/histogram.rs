//! The lock-free latency histogram behind the hedging delay.

use std::fmt;
use std::time::Duration;

use ha_core::sync::atomic::{AtomicU64, Ordering};
use ha_core::Instant;

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
const MAX_EXP: u32 = 39;
/// Buckets per histogram: exact values below `SUB`, then `SUB` per power of two.
const BUCKETS: usize = ((MAX_EXP - SUB_BITS + 2) as u64 * SUB) as usize;
const NONE: u64 = u64::MAX;
/// While warming up, the quantile is looked at this many times per refresh period.
const WARMUP_DIVISOR: u64 = 64;

/// Recent latencies, recorded lock-free at microsecond resolution, and the
/// hedging delay derived from them.
///
/// [`LatencyHistogram`] keeps two log-linear histograms of `AtomicU64`
/// buckets (32 linear sub-buckets per power of two: exact below 32 µs,
/// within 3.2% above, up to 2^40 µs). One records the current window, the
/// other holds the previous one; when a window ends, the first caller to
/// notice clears the older histogram and makes it current. Recording is one
/// `fetch_add`. The quantile is recomputed from both histograms at most once
/// per `refresh` (every `refresh / 64` until `min_samples` latencies are
/// known, so hedging starts soon after start-up), by whichever caller
/// notices it is due, and read with one load in between.
///
/// ```
/// use std::time::Duration;
/// use ha_retry::hedge::LatencyHistogram;
/// use tokio::time::Instant;
///
/// let t0 = Instant::now();
/// let h = LatencyHistogram::new(t0, Duration::from_secs(10), Duration::from_secs(1), 0.9, 10);
/// for ms in 1..=100u64 {
///     h.record(t0, Duration::from_millis(ms));
/// }
/// let p90 = h.quantile(t0 + Duration::from_secs(1)).unwrap();
/// assert!(p90 >= Duration::from_millis(90) && p90 <= Duration::from_millis(93), "{p90:?}");
/// ```
pub struct LatencyHistogram {
    hists: [Box<[AtomicU64]>; 2],
    window: AtomicU64,
    next_refresh: AtomicU64,
    cached: AtomicU64,
    samples: AtomicU64,
    origin: Instant,
    window_nanos: u64,
    // Read only when a refresh is due; atomics so that `reconfigure` can
    // change them under readers.
    refresh_nanos: AtomicU64,
    quantile_bits: AtomicU64,
    min_samples: AtomicU64,
    // The median at the last refresh, and the lowest median seen (let rise
    // by `CALM_DRIFT` a refresh), in µs; `NONE` until known.
    median: AtomicU64,
    calm_median: AtomicU64,
}

/// How much the calm median may rise per refresh: a median that rose for
/// good by a quarter is the calm one again after about 11 refreshes, one
/// that doubled after 35.
const CALM_DRIFT: f64 = 1.02;

impl LatencyHistogram {
    /// A histogram starting at `now` that keeps between one and two
    /// `window`s of latencies and recomputes the `quantile` (in (0, 1)) every
    /// `refresh` once it holds `min_samples`.
    pub fn new(now: Instant, window: Duration, refresh: Duration, quantile: f64, min_samples: u64) -> Self {
        LatencyHistogram {
            hists: [new_hist(), new_hist()],
            window: AtomicU64::new(0),
            next_refresh: AtomicU64::new(0),
            cached: AtomicU64::new(NONE),
            samples: AtomicU64::new(0),
            origin: now,
            window_nanos: nanos(window),
            refresh_nanos: AtomicU64::new(nanos(refresh)),
            quantile_bits: AtomicU64::new(clamp_quantile(quantile).to_bits()),
            min_samples: AtomicU64::new(min_samples),
            median: AtomicU64::new(NONE),
            calm_median: AtomicU64::new(NONE),
        }
    }

    /// Changes the quantile, the refresh period and the samples needed,
    /// keeping the latencies recorded so far; the next
    /// [`quantile`](Self::quantile) call recomputes the delay with them. The
    /// window cannot change: it decides which histogram each latency goes
    /// to (build a new histogram for a new window).
    pub fn reconfigure(&self, refresh: Duration, quantile: f64, min_samples: u64) {
        self.refresh_nanos.store(nanos(refresh), Ordering::Relaxed);
        self.quantile_bits.store(clamp_quantile(quantile).to_bits(), Ordering::Relaxed);
        self.min_samples.store(min_samples, Ordering::Relaxed);
        // Release: whoever claims the refresh this makes due sees the new values.
        self.next_refresh.store(0, Ordering::Release);
    }

    /// The instant the windows are counted from.
    pub(crate) fn origin(&self) -> Instant {
        self.origin
    }

    fn since(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.origin);
        d.as_secs().saturating_mul(1_000_000_000).saturating_add(u64::from(d.subsec_nanos()))
    }

    /// The index of the current histogram at `t` (nanoseconds since the
    /// origin), rotating first when a window ended.
    #[inline]
    fn current(&self, t: u64) -> usize {
        let w = t / self.window_nanos;
        let seen = self.window.load(Ordering::Acquire);
        if w > seen && self.window.compare_exchange(seen, w, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // The new current histogram last held window w - 2: too old. After
            // a gap of two windows or more, the previous one is too old as well.
            clear(&self.hists[(w & 1) as usize]);
            if w - seen >= 2 {
                clear(&self.hists[((w + 1) & 1) as usize]);
            }
        }
        (w.max(seen) & 1) as usize
    }

    /// Records one latency observed at `now`.
    #[inline]
    pub fn record(&self, now: Instant, latency: Duration) {
        let cur = self.current(self.since(now));
        let micros = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        self.hists[cur][index(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// The configured quantile of recent latencies at `now`, or `None` while
    /// fewer than `min_samples` latencies are known.
    #[inline]
    pub fn quantile(&self, now: Instant) -> Option<Duration> {
        let t = self.since(now);
        let due = self.next_refresh.load(Ordering::Acquire);
        // Claiming the refresh parks `next_refresh` at the far future, so nobody else starts one meanwhile.
        if t >= due && self.next_refresh.compare_exchange(due, u64::MAX, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            let ready = self.refresh(t);
            // Until enough latencies are known, look again soon: hedging should not wait a whole period to start.
            let refresh = self.refresh_nanos.load(Ordering::Relaxed);
            let period = if ready { refresh } else { (refresh / WARMUP_DIVISOR).max(1) };
            self.next_refresh.store(t.saturating_add(period), Ordering::Release);
        }
        match self.cached.load(Ordering::Acquire) {
            NONE => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }

    /// Keeps the median of a refresh, and the calmest (lowest) median,
    /// which may rise by `CALM_DRIFT` a refresh.
    fn note_median(&self, micros: u64) {
        self.median.store(micros, Ordering::Relaxed);
        let calm = self.calm_median.load(Ordering::Relaxed);
        let next = if calm == NONE { micros } else { micros.min((calm as f64 * CALM_DRIFT).ceil() as u64) };
        self.calm_median.store(next, Ordering::Relaxed);
    }

    /// The median of recent latencies has risen to `factor` times its
    /// calmest (as of the last refresh): the bulk of the requests got
    /// slower, not a tail of them.
    pub(crate) fn shifted(&self, factor: f64) -> bool {
        let (m, calm) = (self.median.load(Ordering::Relaxed), self.calm_median.load(Ordering::Relaxed));
        m != NONE && calm != NONE && m as f64 >= factor * calm as f64
    }

    /// The number of latencies the last refresh saw.
    pub fn samples(&self) -> u64 {
        self.samples.load(Ordering::Relaxed)
    }

    /// Recomputes the quantile; false while too few latencies are known.
    fn refresh(&self, t: u64) -> bool {
        let cur = self.current(t);
        let (a, b) = (&self.hists[cur], &self.hists[cur ^ 1]);
        let total: u64 = a.iter().chain(b.iter()).map(|c| c.load(Ordering::Relaxed)).sum();
        self.samples.store(total, Ordering::Relaxed);
        if total == 0 || total < self.min_samples.load(Ordering::Relaxed) {
            self.cached.store(NONE, Ordering::Release);
            return false;
        }
        // The median of the current window when it holds enough latencies
        // (it follows a change sooner than both windows do), else of both.
        let current: u64 = a.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        let recent = current >= self.min_samples.load(Ordering::Relaxed).max(1);
        let count = |i: usize| a[i].load(Ordering::Relaxed) + if recent { 0 } else { b[i].load(Ordering::Relaxed) };
        self.note_median(rank_bucket(count, if recent { current } else { total }.div_ceil(2)));
        // The smallest bucket whose cumulative count reaches the quantile's rank.
        let quantile = f64::from_bits(self.quantile_bits.load(Ordering::Relaxed));
        let rank = ((quantile * total as f64).ceil() as u64).clamp(1, total);
        let both = |i: usize| a[i].load(Ordering::Relaxed) + b[i].load(Ordering::Relaxed);
        self.cached.store(rank_bucket(both, rank), Ordering::Release);
        true
    }
}

/// The upper bound (µs) of the first bucket whose cumulative `count`
/// reaches `rank`; the top bucket's, a safe answer, when counts grew while
/// they were summed.
fn rank_bucket(count: impl Fn(usize) -> u64, rank: u64) -> u64 {
    let mut seen = 0;
    for i in 0..BUCKETS {
        seen += count(i);
        if seen >= rank {
            return upper_bound(i);
        }
    }
    upper_bound(BUCKETS - 1)
}

/// A duration in nanoseconds, at least 1.
fn nanos(d: Duration) -> u64 {
    (d.as_nanos().min(u128::from(u64::MAX)) as u64).max(1)
}

fn clamp_quantile(q: f64) -> f64 {
    if q.is_nan() {
        0.5
    } else {
        q.clamp(0.0, 1.0)
    }
}

fn new_hist() -> Box<[AtomicU64]> {
    (0..BUCKETS).map(|_| AtomicU64::new(0)).collect()
}

fn clear(h: &[AtomicU64]) {
    for c in h {
        c.store(0, Ordering::Relaxed);
    }
}

/// The bucket of a latency in microseconds.
#[inline]
fn index(micros: u64) -> usize {
    if micros < SUB {
        return micros as usize;
    }
    let v = micros.min((1u64 << (MAX_EXP + 1)) - 1);
    let exp = 63 - v.leading_zeros();
    let shift = exp - SUB_BITS;
    let sub = (v >> shift) - SUB;
    ((u64::from(shift) + 1) * SUB + sub) as usize
}

/// The largest latency (in microseconds) of a bucket.
fn upper_bound(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let sub = i % SUB;
    ((SUB + sub) << shift) + (1u64 << shift) - 1
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("quantile", &f64::from_bits(self.quantile_bits.load(Ordering::Relaxed)))
            .field("samples", &self.samples())
            .field("cached_micros", &self.cached.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_tight() {
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 30, (1 << 40) - 1]) {
            let i = index(v);
            assert!(i < BUCKETS);
            assert!(i >= last);
            last = i;
            let hi = upper_bound(i);
            assert!(hi >= v, "{v} -> bucket {i} upper {hi}");
            assert!(hi as f64 <= v as f64 * 1.032 + 1.0, "{v} -> {hi}");
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[tokio::test(start_paused = true)]
    async fn quantile_needs_min_samples_and_follows_the_window() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let h = LatencyHistogram::new(t0, 10 * s, s, 0.95, 20);
        for _ in 0..19 {
            h.record(t0, Duration::from_millis(10));
        }
        assert_eq!(h.quantile(t0), None);
        h.record(t0, Duration::from_millis(10));
        // Cached until the next refresh, which comes after a 64th of the period while warming up.
        assert_eq!(h.quantile(t0 + s / 128), None);
        let q = h.quantile(t0 + s / 64).unwrap();
        assert!(q >= Duration::from_millis(10) && q < Duration::from_micros(10_400), "{q:?}");
        // From then on the value holds for a whole period.
        for _ in 0..1000 {
            h.record(t0 + s / 64, Duration::from_secs(1));
        }
        assert_eq!(h.quantile(t0 + s / 64 + s / 2), Some(q));
        assert!(h.quantile(t0 + s / 64 + s).unwrap() >= Duration::from_secs(1));
        // 11 s on the samples are in the previous window and still count; at 20 s they are gone.
        assert!(h.quantile(t0 + 11 * s).is_some());
        h.record(t0 + 21 * s, Duration::from_millis(1));
        assert_eq!(h.quantile(t0 + 21 * s), None);
        assert_eq!(h.samples(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_quantile_applies_at_once_to_the_samples_kept() {
        let t0 = Instant::now();
        let h = LatencyHistogram::new(t0, Duration::from_secs(10), Duration::from_secs(1), 0.5, 1);
        for ms in 1..=100u64 {
            h.record(t0, Duration::from_millis(ms));
        }
        let p50 = h.quantile(t0).unwrap();
        assert!(p50 >= Duration::from_millis(50) && p50 < Duration::from_millis(52), "{p50:?}");
        h.reconfigure(Duration::from_secs(1), 0.9, 1);
        let p90 = h.quantile(t0).unwrap();
        assert!(p90 >= Duration::from_millis(90) && p90 < Duration::from_millis(93), "{p90:?}");
        // More samples needed than are kept: no quantile until they come.
        h.reconfigure(Duration::from_secs(1), 0.9, 101);
        assert_eq!(h.quantile(t0), None);
        h.record(t0, Duration::from_millis(1));
        assert_eq!(h.quantile(t0 + Duration::from_secs(1)), Some(p90));
    }

    #[tokio::test(start_paused = true)]
    async fn microsecond_resolution() {
        let t0 = Instant::now();
        let h = LatencyHistogram::new(t0, Duration::from_secs(10), Duration::from_secs(1), 0.5, 1);
        for us in [7, 7, 7, 900] {
            h.record(t0, Duration::from_micros(us));
        }
        assert_eq!(h.quantile(t0), Some(Duration::from_micros(7)));
    }
}
