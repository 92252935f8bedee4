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
//! Each type has its own stash, a [`Stash`] in a `thread_local!` the crate
//! that owns the type declares and names in its [`Stashed`] impl (Rust has
//! no generic statics, and a stash shared by all types would need a type
//! check on every take). It holds at most [`STASH`] references per thread.
//! A reference nobody else holds any more is dropped instead of stashed, and
//! a give-back replaces the first such reference it meets on its way to a
//! free slot, so after the last service sharing some state is dropped, a
//! thread keeps that state alive at most until the stash of that type fills
//! up (or the thread exits): a few small values per thread, never more.
//!
//! ```
//! use std::sync::Arc;
//! use std::thread::LocalKey;
//! use ha_core::lease::{Lease, Stash, Stashed};
//!
//! struct State(&'static str);
//!
//! thread_local! {
//!     static STATES: Stash<State> = const { Stash::new() };
//! }
//!
//! impl Stashed for State {
//!     fn stash() -> &'static LocalKey<Stash<Self>> {
//!         &STATES
//!     }
//! }
//!
//! let shared = Arc::new(State("state"));
//! let lease = Lease::of(&shared); // a clone: the stash is empty
//! assert_eq!(lease.0, "state");
//! drop(lease); // given back to this thread's stash
//! assert_eq!(Arc::strong_count(&shared), 2);
//! let again = Lease::of(&shared); // from the stash: no counter touched
//! assert_eq!(Arc::strong_count(&shared), 2);
//! # drop(again);
//! ```

use std::cell::Cell;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::thread::LocalKey;

/// References kept per thread and type: enough for a task that spreads its
/// calls over a few endpoints, small enough to scan in a few nanoseconds.
pub const STASH: usize = 4;

/// One thread's stash of references to `T`; declare it in a
/// `thread_local!` with [`Stash::new`] (see the [module docs](self)).
pub struct Stash<T: 'static> {
    // Cells, not a RefCell: no borrow flag to check, and a value dropped
    // while the stash is being scanned (its drop may run anything, even
    // another lease) can only find slots empty or full, never a borrowed stash.
    slots: [Cell<Option<Arc<T>>>; STASH],
}

impl<T: 'static> Stash<T> {
    /// An empty stash.
    pub const fn new() -> Self {
        Stash { slots: [const { Cell::new(None) }; STASH] }
    }
}

impl<T: 'static> Default for Stash<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: 'static> fmt::Debug for Stash<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stash").finish_non_exhaustive()
    }
}

/// A type whose shared references can be leased: it names its stash.
pub trait Stashed: Sized + 'static {
    /// This type's thread-local stash.
    fn stash() -> &'static LocalKey<Stash<Self>>;
}

/// An owned reference to shared state, recycled through the thread's stash;
/// see the [module docs](self).
pub struct Lease<T: Stashed>(Option<Arc<T>>);

impl<T: Stashed> Lease<T> {
    /// A reference to `shared`, from this thread's stash when it holds one.
    #[inline]
    pub fn of(shared: &Arc<T>) -> Self {
        Lease(Some(take(shared, T::stash())))
    }

    /// The shared reference.
    #[inline]
    pub fn shared(&self) -> &Arc<T> {
        // Only `drop` empties it.
        self.0.as_ref().expect("a lease holds its reference until dropped")
    }
}

impl<T: Stashed> Deref for Lease<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        self.shared()
    }
}

impl<T: Stashed> Clone for Lease<T> {
    #[inline]
    fn clone(&self) -> Self {
        Lease::of(self.shared())
    }
}

impl<T: Stashed + fmt::Debug> fmt::Debug for Lease<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Lease").field(&self.0).finish()
    }
}

impl<T: Stashed> Drop for Lease<T> {
    #[inline]
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            give_back(shared, T::stash());
        }
    }
}

/// `shared` from the stash, or a clone of it.
// Always inlined, like `give_back`: left to the compiler, the lease's drop
// became a call of its own, and the breaker paid ~3 ns more per call
// (breaker_overhead, same run).
#[inline(always)]
fn take<T: 'static>(shared: &Arc<T>, stash: &'static LocalKey<Stash<T>>) -> Arc<T> {
    let stashed = stash
        .try_with(|stash| {
            for slot in &stash.slots {
                match slot.take() {
                    Some(s) if Arc::ptr_eq(&s, shared) => return Some(s),
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
#[inline(always)]
fn give_back<T: 'static>(shared: Arc<T>, stash: &'static LocalKey<Stash<T>>) {
    // The last reference: nobody will lease it again.
    if Arc::strong_count(&shared) == 1 {
        return;
    }
    let _ = stash.try_with(move |stash| {
        let slots = &stash.slots;
        for slot in slots {
            match slot.take() {
                None => {
                    slot.set(Some(shared));
                    return;
                }
                // Only the stash holds it: take its place, then drop it
                // (its drop may run anything; the stash is whole by then).
                Some(x) if Arc::strong_count(&x) == 1 => {
                    slot.set(Some(shared));
                    drop(x);
                    return;
                }
                other => slot.set(other),
            }
        }
        // Full: the oldest makes room.
        let oldest = slots[0].take();
        for i in 1..STASH {
            slots[i - 1].set(slots[i].take());
        }
        slots[STASH - 1].set(Some(shared));
        drop(oldest);
    });
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Number(usize);
    #[derive(Debug, PartialEq)]
    struct Word(&'static str);

    thread_local! {
        static NUMBERS: Stash<Number> = const { Stash::new() };
        static WORDS: Stash<Word> = const { Stash::new() };
    }

    impl Stashed for Number {
        fn stash() -> &'static LocalKey<Stash<Self>> {
            &NUMBERS
        }
    }

    impl Stashed for Word {
        fn stash() -> &'static LocalKey<Stash<Self>> {
            &WORDS
        }
    }

    fn number(n: usize) -> Arc<Number> {
        Arc::new(Number(n))
    }

    #[test]
    fn the_stash_keeps_the_most_recent_and_sheds_orphans() {
        let values: Vec<_> = (0..STASH + 2).map(number).collect();
        for v in &values {
            drop(Lease::of(v));
        }
        let counts: Vec<_> = values.iter().map(Arc::strong_count).collect();
        let mut expected = vec![1, 1];
        expected.extend([2; STASH]);
        assert_eq!(counts, expected, "the {STASH} most recent are stashed");
        let last = &values[STASH + 1];
        let lease = Lease::of(last);
        assert_eq!(*lease, Number(STASH + 1));
        assert_eq!(Arc::strong_count(last), 2, "taken from the stash, not cloned");
        drop(lease);
        assert_eq!(Arc::strong_count(last), 2, "given back");

        let orphan = Arc::downgrade(&values[2]);
        drop(values);
        assert!(orphan.upgrade().is_some(), "only the stash holds it now");
        let other = number(99);
        drop(Lease::of(&other));
        assert!(orphan.upgrade().is_none(), "shed by the next give-back");
        assert_eq!(Arc::strong_count(&other), 2);
    }

    #[test]
    fn each_type_has_its_own_stash_and_equal_values_are_not_the_same_state() {
        let a = number(7);
        let b = Arc::new(Word("b"));
        drop(Lease::of(&a));
        drop(Lease::of(&b));
        assert_eq!((Arc::strong_count(&a), Arc::strong_count(&b)), (2, 2));
        let c = number(7);
        let lease = Lease::of(&c);
        assert!(Arc::ptr_eq(lease.shared(), &c));
        assert_eq!(Arc::strong_count(&a), 2, "a stays stashed");
    }

    #[test]
    fn the_last_reference_is_dropped_not_stashed() {
        let value = number(1);
        let weak = Arc::downgrade(&value);
        let lease = Lease::of(&value);
        drop(value);
        drop(lease);
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn a_lease_is_clone_and_send() {
        fn send<T: Send + 'static>(_: &T) {}
        let value = number(5);
        let lease = Lease::of(&value);
        send(&lease);
        let copy = lease.clone();
        assert_eq!((*copy).0 + (*lease).0, 10);
    }
}
