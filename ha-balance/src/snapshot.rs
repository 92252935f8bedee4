//! A value many readers load on every call and a few writers replace (the
//! balancer's endpoint table), without a lock on the readers' path.
//!
//! Writers take a lock, replace the `Arc` and then bump a generation counter.
//! Each reader keeps its own [`Cached`] copy of the `Arc` and the generation
//! it was read at; on the hot path it only loads the counter (one atomic
//! load, no lock, no reference-count traffic) and takes the read lock only
//! after a membership change. This is the `arc-swap` idea built from std
//! parts without `unsafe`.
//!
//! ```
//! use ha_balance::snapshot::{Cached, SnapshotCell};
//! use ha_core::sync::Arc;
//!
//! let cell = SnapshotCell::new(Arc::new(vec!["a"]));
//! let mut reader = Cached::new(&cell);
//! assert_eq!(**reader.get(&cell), ["a"]);
//! cell.store(Arc::new(vec!["a", "b"]));
//! assert_eq!(reader.get(&cell).len(), 2);
//! ```

use ha_core::sync::atomic::{AtomicU64, Ordering};
use ha_core::sync::{Arc, RwLock, RwLockExt};

/// The shared cell: a value behind a lock for writers, and a generation
/// counter readers check without it.
pub struct SnapshotCell<T> {
    current: RwLock<Arc<T>>,
    generation: AtomicU64,
}

impl<T> SnapshotCell<T> {
    /// A cell holding `value`, at generation 0.
    pub fn new(value: Arc<T>) -> Self {
        SnapshotCell { current: RwLock::new(value), generation: AtomicU64::new(0) }
    }

    /// Replaces the value. The generation moves after the value, so a reader
    /// that sees the new generation reads at least the new value.
    pub fn store(&self, value: Arc<T>) {
        let old = {
            let mut w = self.current.write_or_recover();
            std::mem::replace(&mut *w, value)
        };
        self.generation.fetch_add(1, Ordering::AcqRel);
        // The old table is dropped outside the lock.
        drop(old);
    }

    /// The generation and the value. The generation is read first: if a
    /// store slips in between, the value is newer than the generation says
    /// and the reader merely reloads once more later.
    pub fn load(&self) -> (u64, Arc<T>) {
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

/// One reader's copy of a [`SnapshotCell`]'s value.
pub struct Cached<T> {
    generation: u64,
    value: Arc<T>,
}

impl<T> Cached<T> {
    /// A reader holding the cell's current value.
    pub fn new(cell: &SnapshotCell<T>) -> Self {
        let (generation, value) = cell.load();
        Cached { generation, value }
    }

    /// The current value: one atomic load unless the cell changed.
    #[inline]
    pub fn get(&mut self, cell: &SnapshotCell<T>) -> &Arc<T> {
        if cell.generation() != self.generation {
            let (generation, value) = cell.load();
            self.generation = generation;
            self.value = value;
        }
        &self.value
    }
}

impl<T> Clone for Cached<T> {
    fn clone(&self) -> Self {
        Cached { generation: self.generation, value: self.value.clone() }
    }
}

impl<T> std::fmt::Debug for SnapshotCell<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCell").field("generation", &self.generation()).finish()
    }
}

impl<T> std::fmt::Debug for Cached<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cached").field("generation", &self.generation).finish()
    }
}
