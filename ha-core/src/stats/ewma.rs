//! A peak-sensitive exponentially weighted moving average of latency.

use std::time::Duration;

use crate::sync::atomic::{AtomicU64, Ordering};
use crate::Instant;

/// Time stamps are kept in ticks of 100 µs in 32 bits, beside the estimate:
/// one word, so an update is one compare-and-swap. The stamp wraps after
/// about five days, after which an idle estimate decays as if less time had
/// passed; an endpoint idle that long has long decayed to nothing.
const TICK_NANOS: u64 = 100_000;

/// A latency estimate that takes a new peak at once and otherwise moves
/// towards recent observations with weight `1 - e^(-elapsed/decay)`, and that
/// decays towards zero while nothing is observed (so an endpoint that was
/// slow gets tried again). This is the estimator of Finagle's and tower's
/// PeakEWMA balancers; the balancer multiplies it by the pending requests.
///
/// The estimate and its time stamp share one atomic word, so concurrent
/// observations never lose an update and a reader never sees a torn value.
///
/// ```
/// use std::time::Duration;
/// use ha_core::stats::PeakEwma;
/// use tokio::time::Instant;
///
/// let t0 = Instant::now();
/// let ewma = PeakEwma::new(t0, Duration::from_millis(10), Duration::from_secs(1));
/// ewma.observe(t0, Duration::from_millis(500)); // a peak is taken at once
/// assert_eq!(ewma.estimate(t0), Duration::from_millis(500));
/// // A second later, a fast response pulls it most of the way down.
/// ewma.observe(t0 + Duration::from_secs(1), Duration::from_millis(10));
/// assert!(ewma.estimate(t0 + Duration::from_secs(1)) < Duration::from_millis(200));
/// ```
#[derive(Debug)]
pub struct PeakEwma {
    state: AtomicU64,
    epoch: Instant,
    decay_ticks: f64,
}

impl PeakEwma {
    /// An estimate starting at `initial` at `now`, decaying with time
    /// constant `decay` (tower's default: 10 s; clamped to at least 100 µs).
    pub fn new(now: Instant, initial: Duration, decay: Duration) -> Self {
        Self::with_epoch(now, now, initial, decay)
    }

    /// An estimate like [`new`](Self::new) whose time line starts at
    /// `epoch` (no later than `now`) rather than at `now`: a caller that
    /// keeps many estimates on one time line converts a reading to
    /// nanoseconds since `epoch` once and hands that to each of them
    /// ([`observe_at`](Self::observe_at),
    /// [`estimate_nanos_at`](Self::estimate_nanos_at)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ha_core::stats::PeakEwma;
    /// use tokio::time::Instant;
    ///
    /// let epoch = Instant::now();
    /// let now = epoch + Duration::from_secs(60);
    /// let ewma = PeakEwma::with_epoch(epoch, now, Duration::from_millis(10), Duration::from_secs(1));
    /// // At `now`, nothing has decayed yet.
    /// assert_eq!(ewma.estimate_nanos_at(60_000_000_000), 10e6);
    /// ewma.observe_at(60_000_000_000, Duration::from_millis(50));
    /// assert_eq!(ewma.estimate(now), Duration::from_millis(50));
    /// ```
    pub fn with_epoch(epoch: Instant, now: Instant, initial: Duration, decay: Duration) -> Self {
        let decay_ticks = (decay.as_nanos() as f64 / TICK_NANOS as f64).max(1.0);
        let stamp = tick_of(now.saturating_duration_since(epoch));
        PeakEwma { state: AtomicU64::new(pack(initial.as_nanos() as f64, stamp)), epoch, decay_ticks }
    }

    fn tick(&self, now: Instant) -> u32 {
        tick_of(now.saturating_duration_since(self.epoch))
    }

    /// The weight the old value keeps after `from -> to`.
    fn keep(&self, from: u32, to: u32) -> f64 {
        let elapsed = to.wrapping_sub(from);
        // Same tick (a busy endpoint's usual case): nothing decayed, no `exp`.
        // Wrapped: `to` is older than the stamp, a racing observer got there first.
        if elapsed == 0 || elapsed > u32::MAX / 2 {
            return 1.0;
        }
        (-(elapsed as f64) / self.decay_ticks).exp()
    }

    /// Adds one observed latency at `now`.
    #[inline]
    pub fn observe(&self, now: Instant, rtt: Duration) {
        self.observe_tick(self.tick(now), rtt);
    }

    /// Adds one observed latency at `since_epoch` nanoseconds after the
    /// estimate's epoch (see [`with_epoch`](Self::with_epoch)).
    #[inline]
    pub fn observe_at(&self, since_epoch: u64, rtt: Duration) {
        self.observe_tick(ns_tick(since_epoch), rtt);
    }

    fn observe_tick(&self, tick: u32, rtt: Duration) {
        // Not `as_nanos() as f64`: a u128 to f64 conversion is a library call.
        let rtt = rtt.as_secs() as f64 * 1e9 + f64::from(rtt.subsec_nanos());
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            let (value, stamp) = unpack(cur);
            let next = if rtt > value {
                rtt
            } else {
                let keep = self.keep(stamp, tick);
                value * keep + rtt * (1.0 - keep)
            };
            let stamp = if tick.wrapping_sub(stamp) > u32::MAX / 2 { stamp } else { tick };
            match self.state.compare_exchange_weak(cur, pack(next, stamp), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// The estimate at `now`, in nanoseconds, decayed for the time since the
    /// last observation.
    #[inline]
    pub fn estimate_nanos(&self, now: Instant) -> f64 {
        self.estimate_with(|| self.tick(now))
    }

    /// The estimate at `since_epoch` nanoseconds after the estimate's epoch
    /// (see [`with_epoch`](Self::with_epoch)), in nanoseconds.
    #[inline]
    pub fn estimate_nanos_at(&self, since_epoch: u64) -> f64 {
        self.estimate_with(|| ns_tick(since_epoch))
    }

    #[inline]
    fn estimate_with(&self, tick: impl FnOnce() -> u32) -> f64 {
        let (value, stamp) = unpack(self.state.load(Ordering::Acquire));
        // Zero stays zero: no clock arithmetic, no `exp`.
        if value == 0.0 {
            return 0.0;
        }
        value * self.keep(stamp, tick())
    }

    /// The estimate at `since_epoch` nanoseconds after the estimate's epoch
    /// (as [`estimate_nanos_at`](Self::estimate_nanos_at)) and the
    /// nanoseconds since the latest observation (or reset), at the
    /// estimate's tick resolution (0.1 ms; 0 when the observation is
    /// newer), from one read of the estimate.
    #[inline]
    pub fn estimate_and_silence_at(&self, since_epoch: u64) -> (f64, f64) {
        let (value, stamp) = unpack(self.state.load(Ordering::Acquire));
        let tick = ns_tick(since_epoch);
        let elapsed = tick.wrapping_sub(stamp);
        let silence = if elapsed > u32::MAX / 2 { 0.0 } else { f64::from(elapsed) * TICK_NANOS as f64 };
        let estimate = if value == 0.0 { 0.0 } else { value * self.keep(stamp, tick) };
        (estimate, silence)
    }

    /// The estimate as of the latest observation, in nanoseconds: what the
    /// endpoint answered lately, without the decay towards zero that
    /// [`estimate_nanos`](Self::estimate_nanos) applies for the time since
    /// (which only makes an idle endpoint worth trying again).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ha_core::stats::PeakEwma;
    /// use tokio::time::Instant;
    ///
    /// let t0 = Instant::now();
    /// let ewma = PeakEwma::new(t0, Duration::from_millis(10), Duration::from_secs(1));
    /// ewma.observe(t0, Duration::from_millis(100));
    /// let later = t0 + Duration::from_secs(5);
    /// assert!(ewma.estimate_nanos(later) < 1e6);
    /// assert_eq!(ewma.last_observed_nanos(), 100e6);
    /// ```
    #[inline]
    pub fn last_observed_nanos(&self) -> f64 {
        unpack(self.state.load(Ordering::Acquire)).0
    }

    /// Forgets the history: the estimate is `value` as of `now`, as if new.
    /// For an endpoint back from an outage, whose estimate describes the
    /// outage rather than the server it now is.
    pub fn reset(&self, now: Instant, value: Duration) {
        self.state.store(pack(value.as_nanos() as f64, self.tick(now)), Ordering::Release);
    }

    /// The estimate at `now`.
    pub fn estimate(&self, now: Instant) -> Duration {
        Duration::from_nanos(self.estimate_nanos(now).round() as u64)
    }
}

/// The stamp of a time `d` after the epoch: ticks of 100 µs, wrapping in 32 bits.
fn tick_of(d: Duration) -> u32 {
    // u64 arithmetic: a u128 division (`as_nanos() / TICK`) is a library call.
    (d.as_secs().wrapping_mul(1_000_000_000 / TICK_NANOS) + u64::from(d.subsec_nanos()) / TICK_NANOS) as u32
}

/// The stamp of `ns` nanoseconds after the epoch (as [`tick_of`]).
fn ns_tick(ns: u64) -> u32 {
    (ns / TICK_NANOS) as u32
}

fn pack(nanos: f64, stamp: u32) -> u64 {
    u64::from((nanos as f32).to_bits()) << 32 | u64::from(stamp)
}

fn unpack(word: u64) -> (f64, u32) {
    (f64::from(f32::from_bits((word >> 32) as u32)), word as u32)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn close(a: Duration, b: Duration) -> bool {
        a.as_nanos().abs_diff(b.as_nanos()) < 1_000 + b.as_nanos() / 10_000
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_counted_from_the_latest_observation() {
        let t0 = Instant::now();
        let ewma = PeakEwma::with_epoch(t0, t0, ms(10), Duration::from_secs(1));
        let ns = |d: Duration| d.as_nanos() as u64;
        let silence = |at: Duration| ewma.estimate_and_silence_at(ns(at)).1;
        assert_eq!(silence(ms(50)), 50e6);
        ewma.observe_at(ns(ms(50)), ms(10));
        assert_eq!(silence(ms(80)), 30e6);
        // An observation stamped later than the question: no silence.
        assert_eq!(silence(ms(40)), 0.0);
        // The estimate is the one `estimate_nanos_at` gives.
        assert_eq!(ewma.estimate_and_silence_at(ns(ms(80))).0, ewma.estimate_nanos_at(ns(ms(80))));
    }

    #[tokio::test(start_paused = true)]
    async fn peaks_are_taken_at_once_and_lows_blend_in() {
        let t0 = Instant::now();
        let e = PeakEwma::new(t0, ms(30), Duration::from_secs(10));
        assert!(close(e.estimate(t0), ms(30)));
        e.observe(t0, ms(100));
        assert!(close(e.estimate(t0), ms(100)));
        // A low sample at the same instant carries no weight.
        e.observe(t0, ms(1));
        assert!(close(e.estimate(t0), ms(100)));

        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        e.observe(now, ms(10));
        // keep = e^-1: 100 * 0.3679 + 10 * 0.6321 = 43.11 ms
        let expected = Duration::from_nanos((100e6 * (-1f64).exp() + 10e6 * (1.0 - (-1f64).exp())) as u64);
        assert!(close(e.estimate(now), expected), "{:?} vs {expected:?}", e.estimate(now));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_estimates_decay_towards_zero() {
        let t0 = Instant::now();
        let e = PeakEwma::new(t0, ms(30), Duration::from_secs(1));
        e.observe(t0, ms(200));
        tokio::time::advance(Duration::from_secs(1)).await;
        let decayed = e.estimate(Instant::now());
        assert!(close(decayed, Duration::from_nanos((200e6 * (-1f64).exp()) as u64)), "{decayed:?}");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(e.estimate(Instant::now()) < Duration::from_micros(1));
    }

    #[tokio::test(start_paused = true)]
    async fn observations_from_the_past_do_not_rewind_the_stamp() {
        let t0 = Instant::now();
        let e = PeakEwma::new(t0, ms(10), Duration::from_secs(1));
        let later = t0 + Duration::from_secs(2);
        e.observe(later, ms(50));
        e.observe(t0, ms(5)); // a racing observer with an older clock reading
        assert!(close(e.estimate(later), ms(50)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_estimate_on_a_shared_epoch_reads_the_same_by_instant_or_by_nanoseconds() {
        let epoch = Instant::now();
        let born = epoch + Duration::from_millis(1_234_567);
        let e = PeakEwma::with_epoch(epoch, born, ms(30), Duration::from_secs(1));
        let ns = |t: Instant| t.duration_since(epoch).as_nanos() as u64;
        // Nothing decays before the estimate exists: it starts at `born`.
        assert_eq!(e.estimate_nanos_at(ns(born)), 30e6);
        e.observe_at(ns(born + ms(5)), ms(80));
        e.observe(born + ms(700), ms(20));
        for t in [born + ms(700), born + ms(900), born + Duration::from_secs(3)] {
            assert_eq!(e.estimate_nanos(t), e.estimate_nanos_at(ns(t)));
        }
        assert!(e.estimate_nanos_at(ns(born + ms(900))) < 80e6);
    }
}
