//! Shared state held by reference count, or for the whole process.

use std::ops::Deref;
use std::sync::Arc;

use ha_core::lease::Lease;

/// The state a layer shares with its services and their response futures.
///
/// Most layers count references, through a [`Lease`]: a call's future takes
/// its reference from the thread's stash, so a request that succeeds touches
/// no shared reference count (an `Arc` clone and drop are the largest part of
/// a retry layer's cost on such a request). A layer whose state the user
/// keeps in a `static` hands out `&'static` references instead.
pub(crate) enum Handle<T: 'static> {
    Counted(Lease<T>),
    Static(&'static T),
}

impl<T: Send + Sync + 'static> Handle<T> {
    /// A counted handle on `value`.
    pub(crate) fn new(value: T) -> Self {
        Handle::Counted(Lease::of(&Arc::new(value)))
    }
}

impl<T: 'static> Clone for Handle<T> {
    #[inline]
    fn clone(&self) -> Self {
        match self {
            Handle::Counted(a) => Handle::Counted(a.clone()),
            Handle::Static(r) => Handle::Static(r),
        }
    }
}

impl<T: 'static> Deref for Handle<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        match self {
            Handle::Counted(a) => a,
            Handle::Static(r) => r,
        }
    }
}
