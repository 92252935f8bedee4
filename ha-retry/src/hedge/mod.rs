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
//! Hedging pauses when it does not pay: while fewer than `min_win_share`
//! (25%) of recent hedged requests were answered by a hedge (one
//! would-be hedge in eight still goes, to measure), and while the median
//! latency is `max_median_rise` (1.25) times its calmest, when the bulk of
//! the requests got slower and a hedge finds no faster endpoint. Under an
//! overload every
//! hedge lengthens the queues that made the requests slow; a fleet just
//! past its capacity then collapses where it only thinned. Each pause and
//! resumption is an [`Event::HedgingPaused`](ha_core::Event::HedgingPaused);
//! [`HedgeStats::paused`] counts the hedges not sent.
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

//! # Changing the config while serving
//!
//! [`Hedge::reconfigure`] (or [`HedgeLayer::reconfigure`]) validates a new
//! [`HedgeConfig`] as the layer's builder does and, when
//! it is valid, puts it in force for the service, its clones, the layer and
//! every service it built: requests started from then on use its delay,
//! `min_delay`, `max_hedges` and warm-up; a request in flight keeps the
//! config it started with. The latencies recorded so far are kept and the
//! new quantile, `refresh` and `min_samples` apply to them at once, unless
//! the `window` changes length: then the latencies start afresh under the
//! new window (which histogram a latency lands in follows from the window),
//! and hedging waits for `min_samples` again, using `warmup_delay` if set.
//! The layer's own budget takes the new `budget` ratio and reserve, keeping
//! its balance; a shared budget is left to its owner. The counters, events
//! and the budget's name are kept. An invalid config returns the builder's
//! [`ConfigError`] and changes nothing. A call that
//! finds nothing changed pays one atomic load for this.
//!
//! ```
//! use std::time::Duration;
//! use ha_retry::config::{HedgeConfig, HedgeDelay};
//! use ha_retry::HedgeLayer;
//! use tower::{service_fn, Layer};
//!
//! let fixed = |ms| HedgeConfig { delay: HedgeDelay::Fixed(Duration::from_millis(ms)), ..HedgeConfig::default() };
//! let layer = HedgeLayer::new(fixed(50)).unwrap();
//! let svc = layer.layer(service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) }));
//! svc.reconfigure(fixed(20)).unwrap();
//! let now = tokio::time::Instant::now();
//! assert_eq!(layer.current_delay(now), Some(Duration::from_millis(20)));
//! let err = svc.reconfigure(HedgeConfig { max_hedges: 100, ..fixed(20) }).unwrap_err();
//! assert_eq!(err.field(), "max_hedges");
//! assert_eq!(svc.config(), fixed(20));
//! ```

mod efficacy;
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

use crate::config::{ConfigError, HedgeConfig};
use crate::replay::{Cloned, Replay};
use future::HedgeInputs;
use ha_core::lease::Lease;
use ha_core::live::LiveCached;
use layer::{HedgeShared, Live};

/// Hedges slow requests; see the [module docs](self).
pub struct Hedge<S, C = ErrorsAreFailures, P = Cloned> {
    inner: S,
    live: Live,
    // The config in force as of this service's last call.
    core: LiveCached<std::sync::Arc<HedgeShared>>,
    classifier: C,
    replay: P,
}

impl<S, C, P> Hedge<S, C, P> {
    fn new(inner: S, live: Live, core: LiveCached<std::sync::Arc<HedgeShared>>, classifier: C, replay: P) -> Self {
        Hedge { inner, live, core, classifier, replay }
    }
}

impl<S: Clone, C: Clone, P: Clone> Clone for Hedge<S, C, P> {
    fn clone(&self) -> Self {
        let (live, core) = (self.live.clone(), self.core.clone());
        Hedge::new(self.inner.clone(), live, core, self.classifier.clone(), self.replay.clone())
    }
}

impl<S: fmt::Debug, C, P> fmt::Debug for Hedge<S, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge").field("inner", &self.inner).field("config", &self.core.cached().config).finish()
    }
}

impl<S, C, P> Hedge<S, C, P> {
    /// The counters of the layer this service came from.
    pub fn stats(&self) -> HedgeStats {
        self.core.cached().stats.snapshot()
    }

    /// The config in force.
    pub fn config(&self) -> HedgeConfig {
        self.live.load().1.config.clone()
    }

    /// Validates `config` as [`HedgeLayer::builder`]`(config).build()` does
    /// and puts it in force for the requests this service, its clones, its
    /// layer and the layer's other services start from now on; see the
    /// [module docs](self#changing-the-config-while-serving). On an error
    /// nothing changes.
    pub fn reconfigure(&self, config: HedgeConfig) -> Result<(), ConfigError> {
        layer::reconfigure(&self.live, config)
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
        let shared = self.core.get(&self.live);
        let core = &**shared;
        // A retry layer above lends the reading it took for this call.
        let now = ha_core::time::lent().unwrap_or_else(Instant::now);
        if core.deposit {
            core.budget.count_request(now);
        }
        let req = self.replay.prepare(req, None);
        let info = self.classifier.request_info(&req);
        let delay = core.delay(now);
        let kept = if delay.is_some() { self.replay.copy(&req) } else { None };
        let parts = HedgeInputs {
            core: Lease::of(shared),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
            service: self.inner.clone(),
        };
        let fut = ha_core::time::lend(now, || self.inner.call(req));
        ResponseFuture::new(parts, fut, kept, info, now, delay)
    }
}
