//! Per-thread reuse of shared references, for response futures.
//!
//! A middleware's response future must be `'static`, so it owns a reference
//! to the middleware's shared state: usually an `Arc` clone when the call
//! starts and a drop when it ends. Those are two locked read-modify-writes
//! of one counter that every thread calling the service shares, about
//! 15 ns on the benchmark machine and most of what a breaker or a retry
//! layer costs on a call that needs neither. A [`Lease`] takes the reference
//! from a small per-thread stash instead and gives it back there when it is
//! dropped: a thread that keeps calling the same services (the usual case:
//! a task sends requests and awaits them) touches no shared counter at all.
//!
//! The stash holds at most [`STASH`] references per thread, of any type. A
//! reference nobody else holds any more is dropped instead of stashed, and
//! the stash sheds such references whenever something is given back, so
//! after the last service sharing some state is dropped, a thread keeps that
//! state alive only until it next gives a lease back (or exits).
//!
//! ```
//! use std::sync::Arc;
//! use ha_core::lease::Lease;
//!
//! let shared = Arc::new(String::from("state"));
//! let lease = Lease::of(&shared); // a clone: the stash is empty
//! assert_eq!(lease.as_str(), "state");
//! drop(lease); // given back to this thread's stash
//! assert_eq!(Arc::strong_count(&shared), 2);
//! let again = Lease::of(&shared); // taken from the stash: no counter touched
//! assert_eq!(Arc::strong_count(&shared), 2);
//! # drop(again);
//! ```

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// References kept per thread: enough for a task whose calls pass a few
/// middleware layers, small enough to scan in a few nanoseconds.
pub const STASH: usize = 4;

type Erased = Arc<dyn Any + Send + Sync>;

thread_local! {
    // Cells, not a RefCell: no borrow flag to check, and a value dropped
    // while the stash is being scanned (its drop may run anything, even
    // another lease) can only find slots empty or full, never a borrowed stash.
    static STASHED: [Cell<Option<Erased>>; STASH] = const { [const { Cell::new(None) }; STASH] };
}

/// An owned reference to shared state, recycled through the thread's stash;
/// see the [module docs](self).
///
/// Only [`Lease::of`] asks for `T: Send + Sync` (a stash holds references of
/// every type as `Arc<dyn Any + Send + Sync>`); the lease carries the
/// functions that take from and give back to the stash, so types that hold
/// a `Lease<T>` need no such bound on their `Clone` or `Drop`.
pub struct Lease<T: 'static> {
    shared: Option<Arc<T>>,
    take: fn(&Arc<T>) -> Arc<T>,
    give_back: fn(Arc<T>),
}

impl<T: Send + Sync + 'static> Lease<T> {
    /// A reference to `shared`, from this thread's stash when it holds one.
    #[inline]
    pub fn of(shared: &Arc<T>) -> Self {
        Lease { shared: Some(take(shared)), take: take::<T>, give_back: give_back::<T> }
    }
}

impl<T: 'static> Lease<T> {
    /// The shared reference.
    #[inline]
    pub fn shared(&self) -> &Arc<T> {
        // Only `drop` empties it.
        self.shared.as_ref().expect("a lease holds its reference until dropped")
    }
}

impl<T: 'static> Deref for Lease<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        self.shared()
    }
}

impl<T: 'static> Clone for Lease<T> {
    #[inline]
    fn clone(&self) -> Self {
        Lease { shared: Some((self.take)(self.shared())), take: self.take, give_back: self.give_back }
    }
}

impl<T: fmt::Debug + 'static> fmt::Debug for Lease<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Lease").field(&self.shared).finish()
    }
}

impl<T: 'static> Drop for Lease<T> {
    #[inline]
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            (self.give_back)(shared);
        }
    }
}

/// `shared` from the stash, or a clone of it.
#[inline]
fn take<T: Send + Sync + 'static>(shared: &Arc<T>) -> Arc<T> {
    let stashed = STASHED
        .try_with(|stash| {
            for slot in stash {
                match slot.take() {
                    // Same address, same allocation: the downcast cannot fail.
                    Some(s) if std::ptr::addr_eq(Arc::as_ptr(&s), Arc::as_ptr(shared)) => {
                        return s.downcast::<T>().ok();
                    }
                    other => slot.set(other),
                }
            }
            None
        })
        .ok()
        .flatten();
    stashed.unwrap_or_else(|| shared.clone())
}

/// Puts `shared` in the stash, unless it is the last reference.
#[inline]
fn give_back<T: Send + Sync + 'static>(shared: Arc<T>) {
    // The last reference: nobody will lease it again.
    if Arc::strong_count(&shared) == 1 {
        return;
    }
    let back: Erased = shared;
    let _ = STASHED.try_with(move |stash| {
        for slot in stash {
            match slot.take() {
                None => {
                    slot.set(Some(back));
                    return;
                }
                // Only the stash holds it: take its place, then drop it
                // (its drop may run anything; the stash is whole by then).
                Some(x) if Arc::strong_count(&x) == 1 => {
                    slot.set(Some(back));
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
        stash[STASH - 1].set(Some(back));
        drop(oldest);
    });
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_stash_keeps_the_most_recent_and_sheds_orphans() {
        let values: Vec<_> = (0..STASH + 2).map(Arc::new).collect();
        for v in &values {
            drop(Lease::of(v));
        }
        let counts: Vec<_> = values.iter().map(Arc::strong_count).collect();
        let mut expected = vec![1, 1];
        expected.extend([2; STASH]);
        assert_eq!(counts, expected, "the {STASH} most recent are stashed");
        let last = &values[STASH + 1];
        let lease = Lease::of(last);
        assert_eq!(*lease, STASH + 1);
        assert_eq!(Arc::strong_count(last), 2, "taken from the stash, not cloned");
        drop(lease);
        assert_eq!(Arc::strong_count(last), 2, "given back");

        let orphan = Arc::downgrade(&values[2]);
        drop(values);
        assert!(orphan.upgrade().is_some(), "only the stash holds it now");
        let other = Arc::new(99usize);
        drop(Lease::of(&other));
        assert!(orphan.upgrade().is_none(), "shed by the next give-back");
        assert_eq!(Arc::strong_count(&other), 2);
    }

    #[test]
    fn values_of_different_types_share_the_stash_without_mixing() {
        let a = Arc::new(7u64);
        let b = Arc::new(String::from("b"));
        drop(Lease::of(&a));
        drop(Lease::of(&b));
        assert_eq!(*Lease::of(&a), 7);
        assert_eq!(Lease::of(&b).as_str(), "b");
        let c = Arc::new(7u64);
        let lease = Lease::of(&c);
        assert!(Arc::ptr_eq(lease.shared(), &c), "an equal value is not the same state");
    }

    #[test]
    fn the_last_reference_is_dropped_not_stashed() {
        let value = Arc::new(1u8);
        let weak = Arc::downgrade(&value);
        let lease = Lease::of(&value);
        drop(value);
        drop(lease);
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn a_lease_is_clone_and_send() {
        fn send<T: Send + 'static>(_: &T) {}
        let value = Arc::new(5i32);
        let lease = Lease::of(&value);
        send(&lease);
        let copy = lease.clone();
        assert_eq!(*copy + *lease, 10);
    }
}
