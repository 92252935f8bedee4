//! The breaker's whole state machine in one atomic word.
//!
//! Packing the state, the half-open probe accounting and a generation number
//! into one `u64` makes every transition a single compare-and-swap: exactly
//! one thread wins each transition, a probe permit is taken only while the
//! count is below the limit, and an outcome from a call admitted in an
//! earlier period (a different generation) is recognised and dropped.
//!
//! Layout, low to high bits: state (3) | probes issued (10) | probes
//! completed (10) | probe failures (10) | slow probes (10) | generation (21).

use ha_core::event::BreakerState;

const STATE_BITS: u32 = 3;
const COUNT_BITS: u32 = 10;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const ISSUED_SHIFT: u32 = STATE_BITS;
const COMPLETED_SHIFT: u32 = ISSUED_SHIFT + COUNT_BITS;
const FAILED_SHIFT: u32 = COMPLETED_SHIFT + COUNT_BITS;
const SLOW_SHIFT: u32 = FAILED_SHIFT + COUNT_BITS;
const GEN_SHIFT: u32 = SLOW_SHIFT + COUNT_BITS;
/// Generations wrap at 2^21; the deadline word stores them in the same width.
pub(crate) const GEN_MASK: u64 = (1 << (64 - GEN_SHIFT)) - 1;

pub(crate) const CLOSED: u64 = 0;
pub(crate) const OPEN: u64 = 1;
pub(crate) const HALF_OPEN: u64 = 2;
pub(crate) const FORCED_OPEN: u64 = 3;
pub(crate) const DISABLED: u64 = 4;
pub(crate) const METRICS_ONLY: u64 = 5;

/// One decoded state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word(pub(crate) u64);

impl Word {
    /// The first word of `state` in generation `gen`, with no probes.
    #[inline]
    pub(crate) fn new(state: u64, gen: u64) -> Word {
        Word(state | (gen & GEN_MASK) << GEN_SHIFT)
    }

    #[inline]
    pub(crate) fn code(self) -> u64 {
        self.0 & ((1 << STATE_BITS) - 1)
    }

    #[inline]
    pub(crate) fn gen(self) -> u64 {
        self.0 >> GEN_SHIFT
    }

    /// The first word of `state` in the next generation.
    #[inline]
    pub(crate) fn next(self, state: u64) -> Word {
        Word::new(state, self.gen().wrapping_add(1))
    }

    pub(crate) fn issued(self) -> u64 {
        (self.0 >> ISSUED_SHIFT) & COUNT_MASK
    }

    pub(crate) fn completed(self) -> u64 {
        (self.0 >> COMPLETED_SHIFT) & COUNT_MASK
    }

    pub(crate) fn failed(self) -> u64 {
        (self.0 >> FAILED_SHIFT) & COUNT_MASK
    }

    pub(crate) fn slow(self) -> u64 {
        (self.0 >> SLOW_SHIFT) & COUNT_MASK
    }

    /// The same word with one more probe issued. The caller checks the limit
    /// (at most 1000, below the field's 1023).
    pub(crate) fn with_issued_plus_one(self) -> Word {
        Word(self.0 + (1 << ISSUED_SHIFT))
    }

    /// The same word with one probe permit given back.
    pub(crate) fn with_issued_minus_one(self) -> Word {
        debug_assert!(self.issued() > 0);
        Word(self.0 - (1 << ISSUED_SHIFT))
    }

    /// The same word with one more probe outcome.
    pub(crate) fn with_outcome(self, failed: bool, slow: bool) -> Word {
        Word(self.0 + (1 << COMPLETED_SHIFT) + (u64::from(failed) << FAILED_SHIFT) + (u64::from(slow) << SLOW_SHIFT))
    }

    pub(crate) fn state(self) -> BreakerState {
        state_of(self.code())
    }
}

/// The public name of a state code.
pub(crate) fn state_of(code: u64) -> BreakerState {
    match code {
        CLOSED => BreakerState::Closed,
        OPEN => BreakerState::Open,
        HALF_OPEN => BreakerState::HalfOpen,
        FORCED_OPEN => BreakerState::ForcedOpen,
        DISABLED => BreakerState::Disabled,
        _ => BreakerState::MetricsOnly,
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fields_do_not_overlap() {
        let mut w = Word::new(HALF_OPEN, GEN_MASK);
        for _ in 0..1000 {
            w = w.with_issued_plus_one();
        }
        for i in 0..1000 {
            w = w.with_outcome(i % 2 == 0, i % 3 == 0);
        }
        assert_eq!((w.code(), w.gen(), w.issued(), w.completed()), (HALF_OPEN, GEN_MASK, 1000, 1000));
        assert_eq!((w.failed(), w.slow()), (500, 334));
        let n = w.next(OPEN);
        assert_eq!((n.code(), n.gen(), n.issued(), n.completed()), (OPEN, 0, 0, 0));
        assert_eq!(n.state(), BreakerState::Open);
    }
}
