//! How time enters `ha`'s state: one convention for every crate.
//!
//! No core reads the clock. A method that may need the time takes
//! `now: impl Now`: either an [`Instant`] the caller has already read, or a
//! closure the method calls at most once, and only on a path that needs it
//! (a circuit breaker's closed count window needs no time at all, so a
//! success there reads no clock). The tower services at the edge read the
//! clock once per call and hand that reading down, so a request through the
//! whole stack reads it as few times as it can. (The SWIM core, which needs
//! the time on every input, takes a plain `Instant`.) A service that read
//! the clock lends its reading to the services it calls ([`lend`]), and
//! one that needs the time takes a reading lent to it ([`lent`]) before
//! reading the clock itself.
//!
//! ```
//! use ha_core::{Instant, Now};
//!
//! fn stamp(now: impl Now) -> Instant {
//!     now.now()
//! }
//! let t = Instant::now();
//! assert_eq!(stamp(t), t);
//! assert_eq!(stamp(|| t), t);
//! ```

use crate::Instant;

/// The current time, as an [`Instant`] already read or a closure that
/// reads it when asked. See the [module docs](self).
pub trait Now {
    /// The time; a closure is called here, once.
    fn now(self) -> Instant;
}

impl Now for Instant {
    #[inline]
    fn now(self) -> Instant {
        self
    }
}

impl<F: FnOnce() -> Instant> Now for F {
    #[inline]
    fn now(self) -> Instant {
        self()
    }
}

thread_local! {
    /// The reading lent by the innermost [`lend`] running on this thread.
    static LENT: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Runs `call` with `now` lent to the services it calls synchronously, so
/// a layer below that needs the time takes this reading ([`lent`]) instead
/// of reading the clock again a few hundred nanoseconds later: a retry
/// layer that read the clock for its deadline lends it to the balancer
/// below, which needs it for its pick.
///
/// The loan ends when `call` returns (or unwinds): a future that `call`
/// returns and that is polled later sees nothing lent, and reads the clock.
///
/// ```
/// use ha_core::time::{lend, lent};
/// use ha_core::Instant;
///
/// let t = Instant::now();
/// assert_eq!(lend(t, || lent()), Some(t));
/// assert_eq!(lent(), None);
/// ```
pub fn lend<R>(now: Instant, call: impl FnOnce() -> R) -> R {
    /// Puts back the loan it replaced, however `call` ends.
    struct Restore(Option<Instant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = LENT.try_with(|lent| lent.set(self.0));
        }
    }
    let _restore = Restore(LENT.try_with(|lent| lent.replace(Some(now))).ok().flatten());
    call()
}

/// The reading a caller up this thread's stack lent with [`lend`], if a
/// call it made is running now.
#[inline]
pub fn lent() -> Option<Instant> {
    LENT.try_with(std::cell::Cell::get).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loan_lasts_as_long_as_its_call_and_nests() {
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_millis(5);
        let seen = lend(t0, || (lent(), lend(t1, lent), lent()));
        assert_eq!(seen, (Some(t0), Some(t1), Some(t0)));
        assert_eq!(lent(), None);

        let unwound = std::panic::catch_unwind(|| lend(t0, || panic!("a call that fails")));
        assert!(unwound.is_err());
        assert_eq!(lent(), None, "a call that unwinds ends its loan");
    }
}
