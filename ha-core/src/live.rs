//! A value read on every call and replaced now and then (a live config),
//! without a lock or a reference count on the readers' path.
//!
//! A [`LiveCell`] keeps the value behind a lock for writers, plus a
//! generation counter that moves after each replacement. Each reader keeps
//! a [`LiveCached`] copy of the value and the generation it was read at; on
//! the hot path it only loads the counter (one atomic load) and takes the
//! read lock only after a change. This is the `arc-swap` idea built from std
//! parts without `unsafe`; the value is usually an `Arc`, so a reload costs
//! one reference-count increment.
//!
//! A reader keeps the value it last read until it next asks: whatever
//! borrowed or cloned that value (a request in flight, say) goes on with it.
//!
//! ```
//! use ha_core::live::{LiveCached, LiveCell};
//! use std::sync::Arc;
//!
//! let cell = LiveCell::new(Arc::new(3u32));
//! let mut reader = LiveCached::new(&cell);
//! assert_eq!(**reader.get(&cell), 3);
//! cell.store(Arc::new(5));
//! assert_eq!(**reader.get(&cell), 5);
//! // A rejected update leaves the value as it was.
//! let refused = cell.update(|_| Err::<Arc<u32>, _>("invalid"));
//! assert_eq!((refused, **reader.get(&cell)), (Err("invalid"), 5));
//! ```

use std::fmt;

use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{RwLock, RwLockExt};

/// The shared cell: a value behind a lock for writers, and a generation
/// counter readers check without it; see the [module docs](self).
pub struct LiveCell<T> {
    current: RwLock<T>,
    generation: AtomicU64,
    // The cell's identity for this thread's views (see `with`): a view
    // keeps it allocated, so no other cell can take its address, and sees
    // when the cell is gone.
    #[cfg(not(loom))]
    token: std::sync::Arc<()>,
}

impl<T: Clone> LiveCell<T> {
    /// A cell holding `value`, at generation 0.
    pub fn new(value: T) -> Self {
        LiveCell {
            current: RwLock::new(value),
            generation: AtomicU64::new(0),
            #[cfg(not(loom))]
            token: std::sync::Arc::new(()),
        }
    }

    /// Replaces the value.
    pub fn store(&self, value: T) {
        let _ = self.update(|_| Ok::<T, std::convert::Infallible>(value));
    }

    /// Replaces the value with what `f` makes of the current one, or leaves
    /// it when `f` fails. Writers are serialised: `f` runs under the write
    /// lock, so two updates never both start from the same value.
    pub fn update<E>(&self, f: impl FnOnce(&T) -> Result<T, E>) -> Result<(), E> {
        let old = {
            let mut w = self.current.write_or_recover();
            let new = f(&w)?;
            let old = std::mem::replace(&mut *w, new);
            // Bumped under the lock: a reader that sees this generation
            // reads at least this value once it gets the read lock.
            self.generation.fetch_add(1, Ordering::Release);
            old
        };
        // The old value may be the last reference to something large (or
        // run arbitrary drops): not under the lock.
        drop(old);
        Ok(())
    }

    /// The generation and a copy of the value. The generation is read
    /// first: if an update slips in between, the value is newer than the
    /// generation says and the reader merely reloads once more later.
    pub fn load(&self) -> (u64, T) {
        let generation = self.generation.load(Ordering::Acquire);
        let value = self.current.read_or_recover().clone();
        (generation, value)
    }

    /// How many times the value was replaced.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

impl<T: Clone + 'static> LiveCell<T> {
    /// Calls `f` with the current value, read through this thread's copy of
    /// it: one atomic load and no reference count touched while nothing
    /// changed, for readers that live for one call (a service cloned per
    /// request), whose own [`LiveCached`] would be a reference count taken
    /// and dropped on every request, on a counter every thread shares.
    ///
    /// A thread keeps copies of the last [`VIEWS`] cells it read this way,
    /// and a copy of a cell that is gone until it next reads a cell it has
    /// no current copy of.
    ///
    /// ```
    /// use ha_core::live::LiveCell;
    /// use std::sync::Arc;
    ///
    /// let cell = LiveCell::new(Arc::new(3u32));
    /// assert_eq!(cell.with(|v| **v), 3);
    /// cell.store(Arc::new(5));
    /// assert_eq!(cell.with(|v| **v), 5);
    /// ```
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        #[cfg(not(loom))]
        {
            views::with(self, f)
        }
        #[cfg(loom)]
        f(&self.load().1)
    }
}

/// Cells a thread keeps a copy of for [`LiveCell::with`].
pub const VIEWS: usize = 4;

#[cfg(not(loom))]
mod views {
    use std::any::Any;
    use std::cell::RefCell;
    use std::sync::Weak;

    use super::{LiveCell, VIEWS};

    /// One thread's copy of one cell's value.
    struct View {
        cell: Weak<()>,
        generation: u64,
        value: Box<dyn Any>,
    }

    thread_local! {
        static THREAD_VIEWS: RefCell<[Option<View>; VIEWS]> = const { RefCell::new([const { None }; VIEWS]) };
    }

    pub(super) fn with<T: Clone + 'static, R>(cell: &LiveCell<T>, f: impl FnOnce(&T) -> R) -> R {
        let generation = cell.generation();
        THREAD_VIEWS.with(|views| {
            // Taken already: `f`, or a value dropped while replaced, reads a
            // cell in turn.
            let Ok(mut views) = views.try_borrow_mut() else { return f(&cell.load().1) };
            let token = std::sync::Arc::as_ptr(&cell.token);
            let found = views.iter().position(|v| v.as_ref().is_some_and(|v| std::ptr::eq(v.cell.as_ptr(), token)));
            let i = match found {
                Some(i) if views[i].as_ref().is_some_and(|v| v.generation == generation) => i,
                found => refill(&mut views, found, cell),
            };
            match views[i].as_ref().and_then(|v| v.value.downcast_ref::<T>()) {
                Some(value) => f(value),
                None => f(&cell.load().1),
            }
        })
    }

    /// Drops the views of cells that are gone, then loads `cell` into its
    /// view, a free one, or the oldest's; returns its index.
    #[cold]
    #[inline(never)]
    fn refill<T: Clone + 'static>(
        views: &mut [Option<View>; VIEWS],
        found: Option<usize>,
        cell: &LiveCell<T>,
    ) -> usize {
        for view in views.iter_mut() {
            if view.as_ref().is_some_and(|v| v.cell.strong_count() == 0) {
                *view = None;
            }
        }
        let (generation, value) = cell.load();
        let view = View { cell: std::sync::Arc::downgrade(&cell.token), generation, value: Box::new(value) };
        let i = found.or_else(|| views.iter().position(Option::is_none)).unwrap_or_else(|| {
            views.rotate_left(1);
            VIEWS - 1
        });
        views[i] = Some(view);
        i
    }
}

/// One reader's copy of a [`LiveCell`]'s value; see the [module docs](self).
pub struct LiveCached<T> {
    generation: u64,
    value: T,
}

impl<T: Clone> LiveCached<T> {
    /// A reader holding the cell's current value.
    pub fn new(cell: &LiveCell<T>) -> Self {
        let (generation, value) = cell.load();
        LiveCached { generation, value }
    }

    /// The current value: one atomic load unless the cell changed since the
    /// last call.
    #[inline]
    pub fn get(&mut self, cell: &LiveCell<T>) -> &T {
        if cell.generation() != self.generation {
            self.reload(cell);
        }
        &self.value
    }

    // Out of line: the hot path is the load and compare above.
    #[cold]
    #[inline(never)]
    fn reload(&mut self, cell: &LiveCell<T>) {
        let (generation, value) = cell.load();
        self.generation = generation;
        self.value = value;
    }

    /// The value as last read, without looking at the cell: for state that
    /// every generation shares, or where a stale value is fine.
    #[inline]
    pub fn cached(&self) -> &T {
        &self.value
    }
}

impl<T: Clone> Clone for LiveCached<T> {
    fn clone(&self) -> Self {
        LiveCached { generation: self.generation, value: self.value.clone() }
    }
}

impl<T: fmt::Debug> fmt::Debug for LiveCell<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("LiveCell");
        d.field("generation", &self.generation.load(Ordering::Relaxed));
        match self.current.try_read() {
            Ok(v) => d.field("value", &*v),
            Err(_) => d.field("value", &"<being replaced>"),
        };
        d.finish()
    }
}

impl<T: fmt::Debug> fmt::Debug for LiveCached<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveCached").field("generation", &self.generation).field("value", &self.value).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_thread_reads_the_current_value_through_its_view_without_a_reference() {
        let cell = LiveCell::new(Arc::new(1));
        let probe = cell.with(|v| v.clone());
        // The view holds one reference; reading through it takes none.
        assert_eq!(Arc::strong_count(&probe), 3);
        for _ in 0..3 {
            assert_eq!(cell.with(|v| (**v, Arc::strong_count(v))), (1, 3));
        }
        cell.store(Arc::new(2));
        assert_eq!(cell.with(|v| **v), 2);
        assert_eq!(Arc::strong_count(&probe), 1, "the view let go of the old value");
        // A read inside a read (say, from a drop) goes to the cell itself.
        let other = LiveCell::new(Arc::new(7));
        assert_eq!(cell.with(|a| other.with(|b| **a + **b)), 9);
    }

    #[test]
    fn views_of_cells_that_are_gone_make_room_and_many_cells_take_turns() {
        let cells: Vec<LiveCell<Arc<usize>>> = (0..3 * VIEWS).map(|i| LiveCell::new(Arc::new(i))).collect();
        for round in 0..2 {
            for (i, cell) in cells.iter().enumerate() {
                cell.store(Arc::new(i + round));
                assert_eq!(cell.with(|v| **v), i + round);
            }
        }
        let kept = Arc::new(99);
        let cell = LiveCell::new(kept.clone());
        cell.with(|_| ());
        assert_eq!(Arc::strong_count(&kept), 3);
        drop(cell);
        drop(cells);
        // Reading another cell frees the view of the one that is gone.
        let next = LiveCell::new(Arc::new(0));
        next.with(|_| ());
        assert_eq!(Arc::strong_count(&kept), 1);
    }

    #[test]
    fn readers_follow_updates_and_keep_what_they_hold() {
        let cell = LiveCell::new(Arc::new(1));
        let mut a = LiveCached::new(&cell);
        let mut b = a.clone();
        let held = a.get(&cell).clone();
        cell.store(Arc::new(2));
        assert_eq!(cell.generation(), 1);
        assert_eq!(**b.cached(), 1, "not looked at the cell yet");
        assert_eq!((**a.get(&cell), **b.get(&cell)), (2, 2));
        assert_eq!(*held, 1, "a copy taken before the update is untouched");
    }

    #[test]
    fn a_failed_update_changes_nothing() {
        let cell = LiveCell::new(Arc::new(1));
        assert_eq!(cell.update(|v| if **v > 0 { Err("no") } else { Ok(v.clone()) }), Err("no"));
        assert_eq!(cell.generation(), 0);
        cell.update(|v| Ok::<_, ()>(Arc::new(**v + 10))).unwrap();
        assert_eq!((cell.generation(), *cell.load().1), (1, 11));
    }
}
