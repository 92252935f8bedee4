//! Backends joining and leaving discovery mid-run (`joins_at_s`,
//! `leaves_at_s`), as a `tower::discover::Discover` stream on virtual time.
//!
//! [`SimDiscover`] yields an `Insert` for every backend listed from the
//! start when first polled, then each join and leave when its time comes
//! (a timer wakes the poller). tower's balancers poll it in `poll_ready`;
//! ha-balance and the facade poll it from their discovery task. Layers
//! whose set never changes keep their static lists (so their figures do
//! not move).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::time::{Instant, Sleep};
use tower::discover::Change;

use super::contender::BuildCtx;
use super::scenario::Layer;

/// The discovery stream of one layer: `(key, service)` per backend, listed
/// and unlisted at the layer's times.
pub struct SimDiscover<K, S> {
    items: Vec<Option<(K, S)>>,
    keys: Vec<K>,
    events: VecDeque<(u64, usize, bool)>,
    start: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl<K: Clone, S> SimDiscover<K, S> {
    /// The stream of `layer`'s changes, times counted from `start`;
    /// `items[i]` stands for backend `i`.
    pub fn new(layer: &Layer, start: Instant, items: Vec<(K, S)>) -> Self {
        let keys = items.iter().map(|(k, _)| k.clone()).collect();
        SimDiscover {
            items: items.into_iter().map(Some).collect(),
            keys,
            events: layer.discovery_events().into(),
            start,
            sleep: Box::pin(tokio::time::sleep_until(start)),
        }
    }
}

impl<K: Clone, S> Stream for SimDiscover<K, S> {
    type Item = Result<Change<K, S>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Nothing here is pinned structurally (the timer is boxed).
        let this = Pin::into_inner(self);
        while let Some(&(at_ns, i, joins)) = this.events.front() {
            let due = this.start + Duration::from_nanos(at_ns);
            if Instant::now() < due {
                if this.sleep.deadline() != due {
                    this.sleep.as_mut().reset(due);
                }
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                continue;
            }
            this.events.pop_front();
            if joins {
                if let Some((k, s)) = this.items[i].take() {
                    return Poll::Ready(Some(Ok(Change::Insert(k, s))));
                }
            } else {
                return Poll::Ready(Some(Ok(Change::Remove(this.keys[i].clone()))));
            }
        }
        // Every change is out; the set stays as it is to the end.
        Poll::Pending
    }
}

impl<K, S> Unpin for SimDiscover<K, S> {}

/// The discovery stream of the context's layer when its set changes
/// during the run (`None` when it never does: use the static list).
pub fn of_layer<K: Clone, S>(ctx: &BuildCtx<'_>, items: Vec<(K, S)>) -> Option<SimDiscover<K, S>> {
    let layer = &ctx.world.layers[ctx.layer].model;
    layer.dynamic().then(|| SimDiscover::new(layer, ctx.world.start, items))
}
