//! Whether hedging pays now: hedges pause while they mostly lose to the
//! first attempt, or while most requests are slow.
//!
//! A hedge is load: it pays only when it answers before the attempt it
//! doubles. Where every endpoint is as slow as the one the first attempt
//! went to (a fleet-wide slowdown, an overload), the first attempt, queued
//! earlier, usually answers first, and each hedge only adds to the queues
//! that made requests slow; on a fleet just past its capacity, the extra
//! load turns a thin loss of goodput into a collapse. [`Efficacy`] keeps
//! the share of recent hedged requests a hedge answered first, and pauses
//! hedging below `HedgeConfig::min_win_share` (one hedge in
//! [`EXPLORE`] still goes, to see whether they pay again). The layer also
//! pauses while the median latency is `HedgeConfig::max_median_rise` times
//! its calmest (see `LatencyHistogram::shifted`): then the slowness is in
//! the bulk of the requests, not their tail, and a hedge finds no faster
//! endpoint.
//!
//! ```text
//! hedged request, first attempt answered first  -> share moves toward 0
//! hedged request, a hedge answered first        -> share moves toward 1
//! share < min_win_share                         -> 1 hedge in 8 goes
//! ```

use ha_core::event::HedgePause as Pause;
use ha_core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

/// Fixed point: this much is a share of 1.
const ONE: u32 = 1 << 16;
/// Each outcome moves the share 1/16 of the way: about the last 16 hedged
/// requests count.
const SHIFT: u32 = 4;
/// While hedging is paused for losing, one would-be hedge in this many
/// still goes.
pub(crate) const EXPLORE: u32 = 8;

/// The share of recent hedged requests that a hedge answered first, and
/// whether and why hedging is paused (so that a change is reported once).
#[derive(Debug)]
pub(crate) struct Efficacy {
    /// The share, scaled to `ONE`; starts at `ONE`: hedges pay until shown not to.
    wins: AtomicU32,
    /// Would-be hedges while paused for losing: every `EXPLORE`th goes.
    skipped: AtomicU32,
    /// The pause in force as last reported: `RUNNING`, or a `Pause` code.
    state: AtomicU8,
}

const RUNNING: u8 = 0;

/// The state word of `verdict`.
fn code(verdict: Result<(), Pause>) -> u8 {
    match verdict {
        Ok(()) => RUNNING,
        Err(Pause::Losing) => 1,
        Err(Pause::Slow) => 2,
    }
}

impl Default for Efficacy {
    fn default() -> Self {
        Efficacy { wins: AtomicU32::new(ONE), skipped: AtomicU32::new(0), state: AtomicU8::new(RUNNING) }
    }
}

impl Efficacy {
    /// Records how a hedged request ended: `won` when a hedge answered first.
    pub(crate) fn record(&self, won: bool) {
        let _ = self.wins.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
            Some(if won { w + ((ONE - w) >> SHIFT) } else { w - (w >> SHIFT) })
        });
    }

    /// The share of recent hedged requests a hedge answered first.
    pub(crate) fn share(&self) -> f64 {
        f64::from(self.wins.load(Ordering::Relaxed)) / f64::from(ONE)
    }

    /// Decides whether a hedge due now goes, given the layer's `min_share`
    /// and whether most requests are `slow`: `Ok` when it goes, else why
    /// not. The second value is the pause in force when it changed with
    /// this decision (paused, resumed as `Some(None)`, or paused for
    /// another reason), for the caller to report once.
    pub(crate) fn admit(&self, min_share: f64, slow: bool) -> (Result<(), Pause>, Option<Option<Pause>>) {
        let verdict = if slow {
            Err(Pause::Slow)
        } else if self.share() >= min_share {
            Ok(())
        } else if self.skipped.fetch_add(1, Ordering::Relaxed) % EXPLORE == 0 {
            // Still paused: this one goes to measure.
            return (Ok(()), None);
        } else {
            Err(Pause::Losing)
        };
        let state = code(verdict);
        let changed = self.state.load(Ordering::Relaxed) != state && self.state.swap(state, Ordering::Relaxed) != state;
        (verdict, changed.then(|| verdict.err()))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn hedges_that_lose_pause_hedging_and_a_few_still_go() {
        let e = Efficacy::default();
        assert_eq!(e.admit(0.25, false), (Ok(()), None), "hedges pay until shown not to");
        for _ in 0..40 {
            e.record(false);
        }
        assert!(e.share() < 0.25, "{}", e.share());
        assert_eq!(e.admit(0.25, false), (Ok(()), None), "the first would-be hedge of a pause goes to measure");
        assert_eq!(e.admit(0.25, false), (Err(Pause::Losing), Some(Some(Pause::Losing))), "reported once");
        assert_eq!(e.admit(0.25, false), (Err(Pause::Losing), None));
        let sent = (0..80).filter(|_| e.admit(0.25, false).0.is_ok()).count();
        assert_eq!(sent, 80 / EXPLORE as usize, "one in {EXPLORE} goes to measure");
        assert_eq!(e.admit(0.0, false), (Ok(()), Some(None)), "0 keeps hedging whatever they win");
        // Hedges that win again resume hedging.
        for _ in 0..40 {
            e.record(true);
        }
        assert_eq!(e.admit(0.25, false).0, Ok(()));
        assert_eq!(
            e.admit(0.25, true),
            (Err(Pause::Slow), Some(Some(Pause::Slow))),
            "no hedge while most requests are slow"
        );
        // Losing while slow: the reason changed, and is reported.
        for _ in 0..40 {
            e.record(false);
        }
        e.skipped.store(1, Ordering::Relaxed);
        assert_eq!(e.admit(0.25, false), (Err(Pause::Losing), Some(Some(Pause::Losing))));
    }

    #[test]
    fn the_share_follows_the_last_outcomes() {
        let e = Efficacy::default();
        for i in 0..200 {
            e.record(i % 2 == 0);
        }
        assert!((e.share() - 0.5).abs() < 0.06, "{}", e.share());
    }
}

/// `RUSTFLAGS="--cfg loom" cargo test --release -p ha-retry --lib loom_models`.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;

    #[test]
    fn concurrent_outcomes_are_each_counted() {
        loom::model(|| {
            // Two hedged requests whose first attempts answered first end
            // at once: both losses count, whatever the interleaving.
            let e = Arc::new(Efficacy::default());
            let other = {
                let e = e.clone();
                loom::thread::spawn(move || e.record(false))
            };
            e.record(false);
            other.join().unwrap();
            let once = ONE - (ONE >> SHIFT);
            assert_eq!(e.wins.load(Ordering::Relaxed), once - (once >> SHIFT), "an outcome was lost");
        });
    }
}
