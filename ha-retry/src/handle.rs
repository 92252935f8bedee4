//! Shared state held by reference count, or for the whole process.

use std::ops::Deref;
use std::sync::Arc;

/// The state a layer shares with its services and their response futures.
///
/// Most layers count references (`Arc`). A layer whose state the user keeps
/// in a `static` hands out `&'static` references instead: every request then
/// saves the two atomic read-modify-writes of an `Arc` clone and drop, the
/// largest part of a retry layer's cost on a request that succeeds.
pub(crate) enum Handle<T: 'static> {
    Counted(Arc<T>),
    Static(&'static T),
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
