//! The retry middleware: [`RetryLayer`] and [`Retry`].
//!
//! For each request, [`Retry`] keeps a copy (through its
//! [`Replay`]), sends it, classifies the result with
//! its [`Classify`], and while the outcome is retryable, attempts remain,
//! the next attempt fits before the deadline and the budget pays for it,
//! waits the backoff and sends the copy again, labelled as the next attempt.
//!
//! What the caller gets back:
//! - the first result that is not a retryable failure;
//! - the last result, when attempts, the deadline or the copy ran out; an
//!   error after more than one attempt comes wrapped in
//!   [`RetriesExhausted`](ha_core::RetriesExhausted) (its `source()` is the
//!   last error);
//! - `Err(BudgetExhausted)` wrapping the last error when the budget refused
//!   a retry of an `Err` (a refused retry of an `Ok` response returns the
//!   response);
//! - an error carrying a `RetriesExhausted` or a `BudgetExhausted` from a
//!   retry layer further down is not retried
//!   ([`retried_below`](ha_core::error::retried_below)): that layer already
//!   retried this request or spent its budget on it, and retrying at every
//!   layer is how retry storms multiply (three layers of three attempts
//!   send 27 calls where one failed);
//! - the failed attempt's result, unretried, when the balancer below found
//!   its endpoints queueing as it picked that attempt's endpoint
//!   ([`AttemptContext::queueing`](ha_core::AttemptContext::queueing)): the
//!   fleet is past its capacity, and a retry would only lengthen the
//!   queues (counted in [`RetryStats::withheld_queueing`]). An attempt that
//!   never reached a server added no load, and is requeued all the same;
//! - `Err(DeadlineExceeded)` when the deadline passes during an attempt
//!   (the attempt is cancelled);
//! - an attempt cut by the per-try timeout counts as
//!   `Err(AttemptTimedOut)`, classified like any error.
//!
//! # Changing the config while serving
//!
//! [`Retry::reconfigure`] (or [`RetryLayer::reconfigure`]) validates a new
//! [`RetryConfig`] exactly as the layer's builder does
//! and, when it is valid, puts it in force for the service, all its clones,
//! the layer and every service it built: requests started from then on use
//! its attempts, backoff, per-try timeout, deadline and `Retry-After` cap.
//! A request already in flight finishes under the config it started with
//! (it holds that config to its end), so a change never fails or cuts
//! short a request. The layer's own budget takes the new `budget` ratio and
//! reserve at once, keeping its balance
//! ([`RetryBudget::reconfigure`]); a budget given to the layer's builder is
//! shared, so it is left to its owner. The counters, the events handle and
//! the budget's name are kept. An invalid config returns the builder's
//! [`ConfigError`] and changes nothing.
//!
//! The retry-on rules are the classifier's, chosen when the layer is built:
//! a classifier that reads its rules from shared state of its own can
//! change them too.
//!
//! Each service keeps the config it last read and the generation it was
//! read at ([`ha_core::live`]): a call that finds nothing changed pays one
//! atomic load for it, and no lock, allocation or reference count.
//!
//! ```
//! use std::time::Duration;
//! use ha_retry::{RetryConfig, RetryLayer};
//! use tower::{service_fn, Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let layer = RetryLayer::new(RetryConfig { max_attempts: 2, ..RetryConfig::default() }).unwrap();
//! let mut svc = layer.layer(service_fn(|_: ()| async { Err::<(), _>(std::io::Error::other("down")) }));
//! svc.ready().await.unwrap().call(()).await.unwrap_err();
//! assert_eq!(layer.stats().retries, 1);
//!
//! svc.reconfigure(RetryConfig { max_attempts: 4, ..RetryConfig::default() }).unwrap();
//! svc.ready().await.unwrap().call(()).await.unwrap_err();
//! assert_eq!(layer.stats().retries, 1 + 3);
//!
//! // Rejected as at build time; the config in force stays.
//! let err = svc.reconfigure(RetryConfig { max_attempts: 0, ..RetryConfig::default() }).unwrap_err();
//! assert_eq!(err.field(), "max_attempts");
//! assert_eq!(svc.config().max_attempts, 4);
//! # }
//! ```

mod future;
mod layer;

pub use future::ResponseFuture;
pub use layer::{RetryLayer, RetryLayerBuilder, RetryStats};

use std::fmt;
use std::task::{Context, Poll};

use ha_core::classify::{Classify, ErrorsAreFailures};
use ha_core::rng::{CloneSeeds, FastRng};
use ha_core::Instant;
use tower::BoxError;
use tower_service::Service;

use crate::budget::RetryBudget;
use crate::config::{ConfigError, RetryConfig};
use crate::policy::earliest;
use crate::replay::{Cloned, Replay};
use future::{RetryInputs, State};
use ha_core::lease::Lease;
use ha_core::live::LiveCached;
use layer::{Live, RetryShared};

/// Retries failed requests; see the [module docs](self).
pub struct Retry<S, C = ErrorsAreFailures, P = Cloned> {
    inner: S,
    live: Live,
    // The config in force as of this service's last call.
    core: LiveCached<std::sync::Arc<RetryShared>>,
    classifier: C,
    replay: P,
    rng: FastRng,
    // Where this service's clones draw their seeds: a count when seeded,
    // so a seeded stack stays reproducible, else the thread's generator.
    clones: CloneSeeds,
}

impl<S, C, P> Retry<S, C, P> {
    /// The budget this service's retries draw on.
    pub fn budget(&self) -> &RetryBudget {
        // Every config of a layer shares its budget: a stale one will do.
        &self.core.cached().budget
    }

    /// The counters of this service and every clone of it.
    pub fn stats(&self) -> RetryStats {
        self.core.cached().stats.snapshot()
    }

    /// The config in force.
    pub fn config(&self) -> RetryConfig {
        self.live.load().1.config.clone()
    }

    /// Validates `config` as [`RetryLayer::builder`]`(config).build()` does
    /// and puts it in force for the requests this service, its clones, its
    /// layer and the layer's other services start from now on; see the
    /// [module docs](self#changing-the-config-while-serving). On an error
    /// nothing changes.
    pub fn reconfigure(&self, config: RetryConfig) -> Result<(), ConfigError> {
        layer::reconfigure(&self.live, config)
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, C: Clone, P: Clone> Clone for Retry<S, C, P> {
    fn clone(&self) -> Self {
        // Each clone draws its own jitter, so clones that fail together do not retry in step.
        let parent = self.rng.clone().next_u64();
        Retry {
            inner: self.inner.clone(),
            live: self.live.clone(),
            core: self.core.clone(),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
            rng: FastRng::new(ha_core::rng::mix64(parent ^ self.clones.next())),
            clones: self.clones.fork(ha_core::rng::GOLDEN_GAMMA),
        }
    }
}

impl<S: fmt::Debug, C, P> fmt::Debug for Retry<S, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry").field("inner", &self.inner).field("config", &self.core.cached().config).finish()
    }
}

impl<S, C, P, Req> Service<Req> for Retry<S, C, P>
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

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let shared = self.core.get(&self.live);
        let core = &**shared;
        let config = &core.config;
        // The clock is read only when a timer needs it or a deposit batch is due.
        let mut now = None;
        let mut clock = || *now.get_or_insert_with(Instant::now);
        let own_deadline = config.deadline.map(|d| clock() + d);
        let req = self.replay.prepare(req, own_deadline);
        let carried = self.replay.deadline(&req);
        let deadline = earliest(own_deadline, carried);
        // Without a deadline, an attempt's per-try clock starts when it is first
        // found pending: a request answered at once reads no clock at all.
        let (timer, per_try_on_pending) = match (config.per_try_timeout, deadline) {
            (None, None) => (None, false),
            (Some(_), None) => (None, true),
            (per_try, deadline) => (attempt_deadline(per_try, clock(), deadline), false),
        };
        if core.deposit {
            core.budget.count_request(&mut clock);
        }
        let expired = deadline.is_some_and(|d| d <= clock());
        let seed = self.rng.next_u64();
        let core = Lease::of(shared);
        let (classifier, replay, service) = (self.classifier.clone(), self.replay.clone(), self.inner.clone());
        if expired {
            let parts = RetryInputs { core, classifier, replay, service, deadline };
            return ResponseFuture::new(parts, State::Expired, None, None, seed, None, false);
        }
        let info = self.classifier.request_info(&req);
        let kept = if config.max_attempts > 1 { self.replay.copy(&req) } else { None };
        // A layer below that needs the time (a balancer) takes this reading.
        let fut = match now {
            Some(now) => ha_core::time::lend(now, || self.inner.call(req)),
            None => self.inner.call(req),
        };
        let state = State::Called { fut };
        let parts = RetryInputs { core, classifier, replay, service, deadline };
        ResponseFuture::new(parts, state, kept, Some(info), seed, timer, per_try_on_pending)
    }
}

/// When an attempt starting at `now` must end: its per-try timeout or the
/// request's deadline, whichever comes first.
#[inline]
pub(crate) fn attempt_deadline(
    per_try: Option<std::time::Duration>,
    now: Instant,
    deadline: Option<Instant>,
) -> Option<Instant> {
    match (per_try.map(|t| now + t), deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
