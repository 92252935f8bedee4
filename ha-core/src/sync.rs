//! Synchronisation primitives, swapped for loom's under `cfg(loom)`.
//!
//! Every shared-state primitive in `ha` imports its atomics and `Arc` from
//! here, so the same code runs in production on `std::sync` and in the loom
//! models (`RUSTFLAGS="--cfg loom"`) on `loom::sync`, which explores every
//! interleaving of the threads that touch it.
//!
//! ```
//! use ha_core::sync::atomic::{AtomicU64, Ordering};
//! use ha_core::sync::Arc;
//!
//! let hits = Arc::new(AtomicU64::new(0));
//! hits.fetch_add(1, Ordering::Relaxed);
//! assert_eq!(hits.load(Ordering::Relaxed), 1);
//! ```

#[cfg(loom)]
pub use loom::sync::{atomic, Arc, Mutex, RwLock};

#[cfg(not(loom))]
pub use std::sync::{atomic, Arc, Mutex, RwLock};

/// Keeps a hot atomic on its own cache line (128 bytes: two lines, for the
/// adjacent-line prefetcher), so that threads bumping it do not also
/// invalidate the read-mostly state next to it.
///
/// ```
/// use ha_core::sync::atomic::{AtomicU64, Ordering};
/// use ha_core::sync::CachePadded;
///
/// let hot = CachePadded(AtomicU64::new(0));
/// hot.fetch_add(1, Ordering::Relaxed);
/// assert_eq!(hot.load(Ordering::Relaxed), 1);
/// ```
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CachePadded<T>(pub T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Takes a lock even when a thread panicked while holding it.
///
/// Every lock in `ha` guards state that is valid between any two writes (a
/// config, a member list, a map of breakers), so a panic elsewhere is no
/// reason to fail every later call: the guard is recovered from the poison
/// instead. Implemented for `std`'s locks and, under `cfg(loom)`, loom's.
///
/// ```
/// use ha_core::sync::{LockExt, Mutex, RwLock, RwLockExt};
///
/// let config = Mutex::new(3);
/// *config.lock_or_recover() += 1;
/// assert_eq!(*config.lock_or_recover(), 4);
///
/// let map = RwLock::new(vec![1]);
/// map.write_or_recover().push(2);
/// assert_eq!(map.read_or_recover().len(), 2);
/// ```
pub trait LockExt {
    /// The guard of an exclusive lock.
    type Guard<'a>
    where
        Self: 'a;

    /// Locks, recovering the guard if the lock is poisoned.
    fn lock_or_recover(&self) -> Self::Guard<'_>;
}

/// [`LockExt`] for reader-writer locks: read and write, poison recovered.
pub trait RwLockExt {
    /// The guard of a shared lock.
    type Read<'a>
    where
        Self: 'a;
    /// The guard of an exclusive lock.
    type Write<'a>
    where
        Self: 'a;

    /// Locks for reading, recovering the guard if the lock is poisoned.
    fn read_or_recover(&self) -> Self::Read<'_>;
    /// Locks for writing, recovering the guard if the lock is poisoned.
    fn write_or_recover(&self) -> Self::Write<'_>;
}

/// Implements the traits for one family of locks (std's, loom's).
macro_rules! recovering_locks {
    ($($m:ident)::+) => {
        impl<T> LockExt for $($m)::+::Mutex<T> {
            type Guard<'a>
                = $($m)::+::MutexGuard<'a, T>
            where
                T: 'a;

            fn lock_or_recover(&self) -> Self::Guard<'_> {
                self.lock().unwrap_or_else(|e| e.into_inner())
            }
        }

        impl<T> RwLockExt for $($m)::+::RwLock<T> {
            type Read<'a>
                = $($m)::+::RwLockReadGuard<'a, T>
            where
                T: 'a;
            type Write<'a>
                = $($m)::+::RwLockWriteGuard<'a, T>
            where
                T: 'a;

            fn read_or_recover(&self) -> Self::Read<'_> {
                self.read().unwrap_or_else(|e| e.into_inner())
            }

            fn write_or_recover(&self) -> Self::Write<'_> {
                self.write().unwrap_or_else(|e| e.into_inner())
            }
        }
    };
}

recovering_locks!(std::sync);
#[cfg(loom)]
recovering_locks!(loom::sync);
