//! The balancer's endpoint table as many readers load it on every call and
//! a few writers replace it: `ha_core::live`'s generation-checked cell over
//! an `Arc` of the table (one atomic load per call while nothing changed).
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

use ha_core::live::{LiveCached, LiveCell};
use ha_core::sync::Arc;

/// The shared cell holding the current table.
pub type SnapshotCell<T> = LiveCell<Arc<T>>;

/// One reader's copy of the current table.
pub type Cached<T> = LiveCached<Arc<T>>;
