//! Live members as a [`tower::discover::Discover`], for a load balancer.
//!
//! A member that becomes alive is inserted (as the service `make_service`
//! builds from it); one that dies or leaves is removed, exactly once. A
//! suspected member stays in: it may refute, and the balancer's own health
//! checks judge the traffic in between. A live member whose metadata
//! changes is inserted again, replacing its service.

use std::collections::HashSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tower::discover::Change;

use crate::cluster::EventStream;
use crate::member::{Member, MembershipEvent};

/// A stream of `Change<member name, service>`; implements tower's `Discover`.
pub struct MemberDiscover<S, F> {
    events: EventStream,
    make_service: F,
    present: HashSet<Arc<str>>,
    own: Arc<str>,
    include_self: bool,
    _service: std::marker::PhantomData<fn() -> S>,
}

impl<S, F> std::fmt::Debug for MemberDiscover<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberDiscover").field("present", &self.present.len()).finish_non_exhaustive()
    }
}

impl<S, F> MemberDiscover<S, F>
where
    F: FnMut(&Member) -> S,
{
    pub(crate) fn new(events: EventStream, own: Arc<str>, make_service: F) -> Self {
        MemberDiscover {
            events,
            make_service,
            present: HashSet::new(),
            own,
            include_self: false,
            _service: std::marker::PhantomData,
        }
    }

    /// Also offers this node itself (off by default: a service rarely balances to itself).
    pub fn include_self(mut self, yes: bool) -> Self {
        self.include_self = yes;
        self
    }

    /// The members currently inserted.
    pub fn len(&self) -> usize {
        self.present.len()
    }

    /// True when no member is inserted.
    pub fn is_empty(&self) -> bool {
        self.present.is_empty()
    }
}

impl<S, F> Unpin for MemberDiscover<S, F> {}

impl<S, F> Stream for MemberDiscover<S, F>
where
    F: FnMut(&Member) -> S,
{
    type Item = Result<Change<Arc<str>, S>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let Some(ev) = std::task::ready!(Pin::new(&mut this.events).poll_next(cx)) else {
                return Poll::Ready(None);
            };
            let m = ev.member();
            if m.name == this.own && !this.include_self {
                continue;
            }
            match ev {
                MembershipEvent::Joined(m) | MembershipEvent::Updated(m) => {
                    // New, or changed (address or metadata): insert, replacing any old service.
                    this.present.insert(m.name.clone());
                    let svc = (this.make_service)(&m);
                    return Poll::Ready(Some(Ok(Change::Insert(m.name, svc))));
                }
                MembershipEvent::Recovered(m) => {
                    if this.present.insert(m.name.clone()) {
                        let svc = (this.make_service)(&m);
                        return Poll::Ready(Some(Ok(Change::Insert(m.name, svc))));
                    }
                }
                MembershipEvent::Died(m) | MembershipEvent::Left(m) => {
                    if this.present.remove(&m.name) {
                        return Poll::Ready(Some(Ok(Change::Remove(m.name))));
                    }
                }
                MembershipEvent::Suspected(_) | MembershipEvent::NameConflict(_) => {}
            }
        }
    }
}
