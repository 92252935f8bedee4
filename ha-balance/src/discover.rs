//! Drives a `tower::discover::Discover` into a balancer's endpoint set from
//! a background task, so that no clone of the balancer has to poll it (and
//! none needs a lock or a `Buffer` to share it). Changes that are ready
//! together are applied as one batch.

use std::future::poll_fn;
use std::hash::Hash;
use std::pin::pin;
use std::sync::Weak;
use std::task::Poll;
use std::{fmt, future::Future};

use tokio::sync::oneshot;
use tower::discover::{Change, Discover};
use tower::BoxError;

use crate::core::Core;
use crate::endpoint::Endpoint;

/// Most changes applied in one table rebuild.
const MAX_BATCH: usize = 1024;

pub(crate) fn spawn<K, S, D>(core: Weak<Core<K, S>>, discover: D, mut shutdown: oneshot::Receiver<()>)
where
    D: Discover<Key = K, Service = Endpoint<S>> + Send + 'static,
    D::Error: Into<BoxError>,
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Send + Sync + 'static,
{
    tokio::spawn(async move {
        let mut discover = pin!(discover);
        loop {
            let batch = poll_fn(|cx| {
                if pin!(&mut shutdown).poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                let mut batch: Vec<Change<K, Endpoint<S>>> = Vec::new();
                while batch.len() < MAX_BATCH {
                    match discover.as_mut().poll_discover(cx) {
                        Poll::Ready(Some(Ok(change))) => batch.push(change),
                        Poll::Ready(Some(Err(e))) => {
                            let e: BoxError = e.into();
                            tracing::error!(target: "ha::balance", error = %e, "discovery failed; the endpoint set stays as it is");
                            return Poll::Ready(if batch.is_empty() { None } else { Some((batch, true)) });
                        }
                        Poll::Ready(None) => {
                            return Poll::Ready(if batch.is_empty() { None } else { Some((batch, true)) })
                        }
                        Poll::Pending => break,
                    }
                }
                if batch.is_empty() {
                    Poll::Pending
                } else {
                    Poll::Ready(Some((batch, false)))
                }
            })
            .await;
            let Some((batch, last)) = batch else { return };
            let Some(core) = core.upgrade() else { return };
            core.apply(batch);
            if last {
                return;
            }
        }
    });
}
