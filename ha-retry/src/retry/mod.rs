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
//! - `Err(DeadlineExceeded)` when the deadline passes during an attempt
//!   (the attempt is cancelled);
//! - an attempt cut by the per-try timeout counts as
//!   `Err(AttemptTimedOut)`, classified like any error.

mod future;
mod layer;

pub use future::ResponseFuture;
pub use layer::{RetryLayer, RetryLayerBuilder, RetryStats};

use std::fmt;
use std::task::{Context, Poll};

use ha_core::classify::{Classify, ErrorsAreFailures};
use ha_core::rng::FastRng;
use ha_core::Instant;
use tower::BoxError;
use tower_service::Service;

use crate::budget::{Deposits, RetryBudget};
use crate::policy::earliest;
use crate::replay::{Cloned, Replay};
use future::{Parts, State};
use ha_core::lease::Lease;
use layer::RetryCore;

/// Retries failed requests; see the [module docs](self).
pub struct Retry<S, C = ErrorsAreFailures, P = Cloned> {
    inner: S,
    core: Lease<RetryCore>,
    classifier: C,
    replay: P,
    rng: FastRng,
    deposits: Deposits,
}

impl<S, C, P> Retry<S, C, P> {
    /// The budget this service's retries draw on.
    pub fn budget(&self) -> &RetryBudget {
        &self.core.budget
    }

    /// The counters of this service and every clone of it.
    pub fn stats(&self) -> RetryStats {
        self.core.stats.snapshot()
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, C: Clone, P: Clone> Clone for Retry<S, C, P> {
    fn clone(&self) -> Self {
        // Each clone draws its own jitter, so clones that fail together do not retry in step.
        let mut parent = self.rng.clone();
        Retry {
            inner: self.inner.clone(),
            core: self.core.clone(),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
            rng: FastRng::new(parent.next_u64() ^ salt()),
            deposits: Deposits::default(),
        }
    }
}

impl<S, C, P> Drop for Retry<S, C, P> {
    fn drop(&mut self) {
        self.deposits.flush(&self.core.budget);
    }
}

fn salt() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CLONES: AtomicU64 = AtomicU64::new(0);
    CLONES.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl<S: fmt::Debug, C, P> fmt::Debug for Retry<S, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry").field("inner", &self.inner).field("config", &self.core.config).finish()
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
        let core = &*self.core;
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
            self.deposits.count(&core.budget, &mut clock);
        }
        let expired = deadline.is_some_and(|d| d <= clock());
        let seed = self.rng.next_u64();
        let core = self.core.clone();
        let (classifier, replay, service) = (self.classifier.clone(), self.replay.clone(), self.inner.clone());
        if expired {
            let parts = Parts { core, classifier, replay, service, deadline };
            return ResponseFuture::new(parts, State::Expired, None, None, seed, None, false);
        }
        let info = self.classifier.request_info(&req);
        let kept = if config.max_attempts > 1 { self.replay.copy(&req) } else { None };
        let state = State::Called { fut: self.inner.call(req) };
        let parts = Parts { core, classifier, replay, service, deadline };
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
