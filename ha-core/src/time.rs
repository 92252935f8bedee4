//! How time enters `ha`'s state: one convention for every crate.
//!
//! No core reads the clock. A method that may need the time takes
//! `now: impl Now`: either an [`Instant`] the caller has already read, or a
//! closure the method calls at most once, and only on a path that needs it
//! (a circuit breaker's closed count window needs no time at all, so a
//! success there reads no clock). The tower services at the edge read the
//! clock once per call and hand that reading down, so a request through the
//! whole stack reads it as few times as it can. (The SWIM core, which needs
//! the time on every input, takes a plain `Instant`.)
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
