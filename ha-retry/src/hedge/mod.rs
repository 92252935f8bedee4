//! Hedged requests: [`HedgeLayer`] and [`Hedge`].
//!
//! A request still unanswered after the hedging delay is sent again (up to
//! `max_hedges` times, each a delay apart) while the first attempt stays in
//! flight; the first successful response wins and the other attempts are
//! dropped at once, which cancels them. A failure does not win while another
//! attempt is still in flight; when every attempt failed, the last failure
//! is returned. Each hedge takes a token from the budget (shared with the
//! retry layer when you give both the same [`RetryBudget`](crate::RetryBudget)),
//! and none is sent when it is empty.
//!
//! The delay is a quantile of recent latencies (default p95; or derived from
//! a maximum extra load, Finagle's `maxExtraLoad`: 5% hedges at p95), never
//! below `min_delay`, and hedging starts once `min_samples` latencies are
//! known. Latencies are kept in a lock-free [`LatencyHistogram`]. When a
//! hedge wins, the first attempt's time so far is recorded as its latency,
//! so the slow attempts that hedging cut short still push the quantile up.
//!
//! ```
//! use std::time::Duration;
//! use ha_retry::config::{HedgeConfig, HedgeDelay};
//! use ha_retry::HedgeLayer;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let config = HedgeConfig { delay: HedgeDelay::Fixed(Duration::from_millis(50)), ..HedgeConfig::default() };
//! let layer = HedgeLayer::new(config).unwrap();
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let counter = calls.clone();
//! let svc = layer.layer(service_fn(move |_req: &'static str| {
//!     // The first attempt hangs for a second; the hedge answers at once.
//!     let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!     async move {
//!         if n == 0 {
//!             tokio::time::sleep(Duration::from_secs(1)).await;
//!         }
//!         Ok::<_, std::io::Error>(n)
//!     }
//! }));
//! let start = tokio::time::Instant::now();
//! assert_eq!(svc.oneshot("get").await.unwrap(), 1);
//! assert_eq!(start.elapsed(), Duration::from_millis(50));
//! assert_eq!(layer.stats().hedge_wins, 1);
//! # }
//! ```

mod future;
mod histogram;
mod layer;

pub use future::ResponseFuture;
pub use histogram::LatencyHistogram;
pub use layer::{HedgeLayer, HedgeLayerBuilder, HedgeStats};

use std::fmt;
use std::task::{Context, Poll};

use ha_core::classify::{Classify, ErrorsAreFailures};
use ha_core::Instant;
use tower::BoxError;
use tower_service::Service;

use crate::budget::Deposits;
use crate::replay::{Cloned, Replay};
use future::Parts;
use ha_core::lease::Lease;
use layer::HedgeCore;

/// Hedges slow requests; see the [module docs](self).
pub struct Hedge<S, C = ErrorsAreFailures, P = Cloned> {
    inner: S,
    core: Lease<HedgeCore>,
    classifier: C,
    replay: P,
    deposits: Deposits,
}

impl<S, C, P> Hedge<S, C, P> {
    fn new(inner: S, core: Lease<HedgeCore>, classifier: C, replay: P) -> Self {
        Hedge { inner, core, classifier, replay, deposits: Deposits::default() }
    }
}

impl<S: Clone, C: Clone, P: Clone> Clone for Hedge<S, C, P> {
    fn clone(&self) -> Self {
        Hedge::new(self.inner.clone(), self.core.clone(), self.classifier.clone(), self.replay.clone())
    }
}

impl<S, C, P> Drop for Hedge<S, C, P> {
    fn drop(&mut self) {
        self.deposits.flush(&self.core.budget);
    }
}

impl<S: fmt::Debug, C, P> fmt::Debug for Hedge<S, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge").field("inner", &self.inner).field("config", &self.core.config).finish()
    }
}

impl<S, C, P> Hedge<S, C, P> {
    /// The counters of the layer this service came from.
    pub fn stats(&self) -> HedgeStats {
        self.core.stats()
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, C, P, Req> Service<Req> for Hedge<S, C, P>
where
    P: Replay<Req> + Clone,
    S: Service<P::Request> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<P::Request, S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, C, P, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let core = &*self.core;
        let now = Instant::now();
        if core.deposit {
            self.deposits.count(&core.budget, || now);
        }
        let req = self.replay.prepare(req, None);
        let info = self.classifier.request_info(&req);
        let delay = core.delay(now);
        let kept = if delay.is_some() { self.replay.copy(&req) } else { None };
        let parts = Parts {
            core: self.core.clone(),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
            service: self.inner.clone(),
        };
        let fut = self.inner.call(req);
        ResponseFuture::new(parts, fut, kept, info, now, delay)
    }
}
