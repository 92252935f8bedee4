//! Drives a `tower::discover::Discover` into a balancer's endpoint set from
//! a background task, so that no clone of the balancer has to poll it (and
//! none needs a lock or a `Buffer` to share it). Changes that are ready
//! together are applied as one batch.
//!
//! Discovery trouble never freezes or empties the balancer silently: an
//! error or the end of the stream is reported (an
//! [`Event::DiscoveryInterrupted`](ha_core::Event::DiscoveryInterrupted) and
//! a `tracing` warning) and the endpoints stay as they are. Given a way to
//! subscribe again ([`BalanceBuilder::build_discover_with`](crate::BalanceBuilder::build_discover_with)),
//! the task does so after a jittered backoff, and takes the first batch of
//! the new subscription as the whole set (endpoints it no longer lists are
//! removed, those it still lists keep their state); an empty first batch
//! changes nothing.

use std::future::poll_fn;
use std::hash::Hash;
use std::pin::{pin, Pin};
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::Duration;
use std::{fmt, future::Future};

use ha_core::rng::FastRng;
use ha_core::{Event, Instant};
use tokio::sync::oneshot;
use tower::discover::{Change, Discover};
use tower::BoxError;

use crate::endpoint::Endpoint;
use crate::shared::Shared;

/// Most changes applied in one table rebuild.
const MAX_BATCH: usize = 1024;

/// The first wait before subscribing again, doubled on each failure in a row.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest wait before subscribing again.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A subscription that lived this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);

/// How one subscription stopped.
enum Stop {
    Shutdown,
    Failed(BoxError),
    Ended,
}

/// What the task polls: one subscription, or a way to make new ones.
pub(crate) enum Source<D> {
    Once(Option<D>),
    Resubscribe(Box<dyn FnMut() -> D + Send>),
}

impl<D> Source<D> {
    fn next(&mut self) -> Option<D> {
        match self {
            Source::Once(d) => d.take(),
            Source::Resubscribe(make) => Some(make()),
        }
    }

    fn resubscribes(&self) -> bool {
        matches!(self, Source::Resubscribe(_))
    }
}

pub(crate) fn spawn<K, S, D>(
    core: Weak<Shared<K, S>>,
    mut source: Source<D>,
    mut shutdown: oneshot::Receiver<()>,
    seed: u64,
) where
    D: Discover<Key = K, Service = Endpoint<S>> + Send + 'static,
    D::Error: Into<BoxError>,
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Send + Sync + 'static,
{
    tokio::spawn(async move {
        let mut rng = FastRng::new(seed);
        let mut failures = 0u32;
        let mut resubscribed = false;
        while let Some(discover) = source.next() {
            let started = Instant::now();
            let stop = follow(&core, discover, &mut shutdown, resubscribed, source.resubscribes()).await;
            let reason = match stop {
                Stop::Shutdown => return,
                Stop::Failed(e) => format!("discovery failed: {e}"),
                Stop::Ended => "discovery ended".to_owned(),
            };
            let Some(events) = core.upgrade().map(|c| c.events().clone()) else { return };
            if started.elapsed() >= STABLE {
                failures = 0;
            }
            let wait = source.resubscribes().then(|| {
                let cap = BACKOFF_BASE.saturating_mul(1u32 << failures.min(16)).min(BACKOFF_MAX);
                failures = failures.saturating_add(1);
                // Full jitter, at least a tenth of the cap, so subscribers do not retry in step.
                cap.mul_f64(0.1 + 0.9 * rng.unit_f64())
            });
            events.emit(Event::DiscoveryInterrupted { reason: Arc::from(reason.as_str()), resubscribe_in: wait });
            let Some(wait) = wait else { return };
            let sleep = tokio::time::sleep(wait);
            tokio::select! {
                _ = sleep => {}
                _ = &mut shutdown => return,
            }
            resubscribed = true;
        }
    });
}

/// Applies one subscription's changes until it fails, ends or the balancer
/// goes. A single subscription (`resubscribes` false) is polled on after an
/// error, since the stream may go on.
async fn follow<K, S, D>(
    core: &Weak<Shared<K, S>>,
    discover: D,
    shutdown: &mut oneshot::Receiver<()>,
    mut snapshot_first: bool,
    resubscribes: bool,
) -> Stop
where
    D: Discover<Key = K, Service = Endpoint<S>>,
    D::Error: Into<BoxError>,
    K: Hash + Eq + Clone + fmt::Debug,
{
    let mut discover = pin!(discover);
    loop {
        let (batch, stop) = next_batch(discover.as_mut(), shutdown).await;
        if matches!(stop, Some(Stop::Shutdown)) {
            return Stop::Shutdown;
        }
        if !batch.is_empty() {
            let Some(core) = core.upgrade() else { return Stop::Shutdown };
            let inserts_only = batch.iter().all(|c| matches!(c, Change::Insert(..)));
            if snapshot_first && inserts_only {
                core.reset(batch.into_iter().filter_map(|c| match c {
                    Change::Insert(k, ep) => Some((k, ep)),
                    Change::Remove(_) => None,
                }));
            } else {
                core.apply(batch);
            }
            snapshot_first = false;
        }
        match stop {
            None => {}
            Some(Stop::Failed(e)) if !resubscribes => {
                if let Some(core) = core.upgrade() {
                    let reason = format!("discovery failed: {e}");
                    core.events()
                        .emit(Event::DiscoveryInterrupted { reason: Arc::from(reason.as_str()), resubscribe_in: None });
                }
            }
            Some(stop) => return stop,
        }
    }
}

/// The changes ready now (at least one, or a stop).
async fn next_batch<K, S, D>(
    mut discover: Pin<&mut D>,
    shutdown: &mut oneshot::Receiver<()>,
) -> (Vec<Change<K, Endpoint<S>>>, Option<Stop>)
where
    D: Discover<Key = K, Service = Endpoint<S>>,
    D::Error: Into<BoxError>,
{
    poll_fn(|cx| {
        if Pin::new(&mut *shutdown).poll(cx).is_ready() {
            return Poll::Ready((Vec::new(), Some(Stop::Shutdown)));
        }
        let mut batch = Vec::new();
        while batch.len() < MAX_BATCH {
            match discover.as_mut().poll_discover(cx) {
                Poll::Ready(Some(Ok(change))) => batch.push(change),
                Poll::Ready(Some(Err(e))) => return Poll::Ready((batch, Some(Stop::Failed(e.into())))),
                Poll::Ready(None) => return Poll::Ready((batch, Some(Stop::Ended))),
                Poll::Pending => break,
            }
        }
        if batch.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready((batch, None))
        }
    })
    .await
}
