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
