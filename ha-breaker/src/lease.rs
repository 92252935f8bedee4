//! Per-thread reuse of breaker references.
//!
//! A response future must be `'static`, so it owns a reference to its
//! breaker: an `Arc` clone when the call starts and a drop when it ends, two
//! locked read-modify-writes on one shared counter, about 17 ns on the
//! benchmark machine and most of a closed breaker's cost. A [`Lease`] takes
//! that reference from a small per-thread stash instead, and gives it back
//! there when the future is dropped: a thread that keeps calling the same
//! breakers (the usual case: a task sends requests and awaits them) touches
//! no shared counter at all.
//!
//! The stash holds at most [`STASH`] references per thread. A reference whose
//! breaker nobody else holds any more is dropped instead of stashed, and the
//! stash sheds such references each time it is used, so after the last
//! service of a breaker is dropped a thread keeps that breaker alive only
//! until its next breaker call (or its exit).

use std::cell::Cell;
use std::sync::Arc;

use crate::breaker::Breaker;

/// References kept per thread: enough for a task that spreads calls over a
/// few endpoints, small enough to scan in a few nanoseconds.
pub(crate) const STASH: usize = 4;

thread_local! {
    // Cells, not a RefCell: no borrow flag to check, and a breaker dropped
    // while the stash is being scanned (its observer may call anything) can
    // only find slots empty or full, never a borrowed stash.
    static STASHED: [Cell<Option<Arc<Breaker>>>; STASH] = const { [const { Cell::new(None) }; STASH] };
}

/// An owned reference to a breaker, recycled through the thread's stash.
pub(crate) struct Lease(Option<Arc<Breaker>>);

impl Lease {
    /// A reference to `breaker`, from the stash when it holds one.
    #[inline]
    pub(crate) fn of(breaker: &Arc<Breaker>) -> Lease {
        let stashed = STASHED
            .try_with(|stash| {
                for slot in stash {
                    match slot.take() {
                        Some(b) if Arc::ptr_eq(&b, breaker) => return Some(b),
                        other => slot.set(other),
                    }
                }
                None
            })
            .ok()
            .flatten();
        Lease(Some(stashed.unwrap_or_else(|| breaker.clone())))
    }

    #[inline]
    pub(crate) fn breaker(&self) -> &Breaker {
        // Only `drop` empties it.
        self.0.as_deref().expect("a lease holds its breaker until dropped")
    }
}

impl Drop for Lease {
    #[inline]
    fn drop(&mut self) {
        let Some(b) = self.0.take() else { return };
        // The last reference: nobody will call this breaker again.
        if Arc::strong_count(&b) == 1 {
            return;
        }
        let _ = STASHED.try_with(move |stash| {
            for slot in stash {
                match slot.take() {
                    None => {
                        slot.set(Some(b));
                        return;
                    }
                    // Only the stash holds it: take its place, then drop it
                    // (its drop may run anything; the stash is whole by then).
                    Some(x) if Arc::strong_count(&x) == 1 => {
                        slot.set(Some(b));
                        drop(x);
                        return;
                    }
                    other => slot.set(other),
                }
            }
            // Full: the oldest makes room.
            let oldest = stash[0].take();
            for i in 1..STASH {
                stash[i - 1].set(stash[i].take());
            }
            stash[STASH - 1].set(Some(b));
            drop(oldest);
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::BreakerConfig;
    use ha_core::{Events, Instant};

    fn breaker(i: usize) -> Arc<Breaker> {
        Arc::new(Breaker::new(format!("b{i}"), BreakerConfig::default(), Events::new(), Instant::now()).unwrap())
    }

    #[test]
    fn the_stash_keeps_the_four_most_recent_and_sheds_orphans() {
        let bs: Vec<_> = (0..6).map(breaker).collect();
        for b in &bs {
            drop(Lease::of(b));
        }
        let counts: Vec<_> = bs.iter().map(Arc::strong_count).collect();
        assert_eq!(counts, vec![1, 1, 2, 2, 2, 2], "the four most recent are stashed");
        let lease = Lease::of(&bs[5]);
        assert_eq!(Arc::strong_count(&bs[5]), 2, "taken from the stash, not cloned");
        drop(lease);
        assert_eq!(Arc::strong_count(&bs[5]), 2, "given back");

        let orphan = Arc::downgrade(&bs[2]);
        drop(bs);
        assert!(orphan.upgrade().is_some(), "only the stash holds it now");
        let other = breaker(9);
        drop(Lease::of(&other));
        assert!(orphan.upgrade().is_none(), "shed by the next give-back");
        assert_eq!(Arc::strong_count(&other), 2);
    }
}
