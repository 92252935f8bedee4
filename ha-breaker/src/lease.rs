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

use std::cell::RefCell;
use std::sync::Arc;

use crate::breaker::Breaker;

/// References kept per thread: enough for a task that spreads calls over a
/// few endpoints, small enough to scan in a few nanoseconds.
pub(crate) const STASH: usize = 4;

thread_local! {
    static STASHED: RefCell<[Option<Arc<Breaker>>; STASH]> = const { RefCell::new([None, None, None, None]) };
}

/// An owned reference to a breaker, recycled through the thread's stash.
pub(crate) struct Lease(Option<Arc<Breaker>>);

impl Lease {
    /// A reference to `breaker`, from the stash when it holds one.
    #[inline]
    pub(crate) fn of(breaker: &Arc<Breaker>) -> Lease {
        let stashed = STASHED
            .try_with(|s| {
                let mut s = s.try_borrow_mut().ok()?;
                s.iter_mut().find(|slot| slot.as_ref().is_some_and(|b| Arc::ptr_eq(b, breaker)))?.take()
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
        let _ = STASHED.try_with(|s| {
            let Ok(mut s) = s.try_borrow_mut() else { return };
            let mut b = Some(b);
            for slot in s.iter_mut() {
                // Shed references nobody else holds, and put ours in the
                // first free slot.
                if slot.as_ref().is_some_and(|x| Arc::strong_count(x) == 1) {
                    *slot = None;
                }
                if slot.is_none() {
                    *slot = b.take();
                    if b.is_none() {
                        break;
                    }
                }
            }
            if let Some(b) = b {
                // Full: the oldest slot makes room.
                s.rotate_left(1);
                s[STASH - 1] = Some(b);
            }
        });
    }
}
