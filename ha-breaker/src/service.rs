//! The tower service: a [`Breaker`] in front of one inner service.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ha_core::classify::ErrorsAreFailures;
use ha_core::event::BreakerState;
use ha_core::{Classify, Instant};
use tokio::time::Sleep;
use tower_service::Service;

use crate::breaker::{Breaker, Permit};
use crate::config::RejectMode;
use crate::future::{self, tower_service_box::BoxError, BreakerRef, ResponseFuture};

/// A circuit breaker around `S`, classifying results with `C`.
///
/// Clones share one [`Breaker`] (behind an `Arc`), so the service can be
/// handed to many tasks without a `Buffer`. Build it with
/// [`CircuitBreakerLayer`](crate::CircuitBreakerLayer) or
/// [`CircuitBreaker::new`].
///
/// A response future holds a reference to the breaker so that it can record
/// its outcome wherever it completes; it takes it from a small per-thread
/// stash rather than cloning the `Arc`, so a thread that keeps calling this
/// breaker touches no shared reference count (see the crate's "Cost").
///
/// The reject mode is the breaker's current one, read on every `poll_ready`
/// (one atomic load), so a [`Breaker::reconfigure`] that changes it applies
/// to services already built.
///
/// With [`RejectMode::FailFast`] (the default) `poll_ready` is the inner
/// service's and a rejected `call` fails at once with
/// [`BreakerOpen`](ha_core::BreakerOpen). With [`RejectMode::NotReady`],
/// `poll_ready` takes the permit: it returns `Pending` while the breaker
/// rejects and wakes the task when the open wait is over or a probe slot
/// frees up, so a balancer skips this endpoint meanwhile.
pub struct CircuitBreaker<S, C = ErrorsAreFailures> {
    inner: S,
    breaker: Arc<Breaker>,
    classifier: C,
    reserved: Option<Permit>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S> CircuitBreaker<S> {
    /// `inner` behind `breaker`; errors are failures.
    pub fn new(inner: S, breaker: Arc<Breaker>) -> Self {
        Self::with_classifier(inner, breaker, ErrorsAreFailures::default())
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// `inner` behind `breaker`, classifying results with `classifier`.
    pub fn with_classifier(inner: S, breaker: Arc<Breaker>, classifier: C) -> Self {
        CircuitBreaker { inner, breaker, classifier, reserved: None, sleep: None }
    }

    /// The shared breaker: its state, counters and control operations.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// The breaker's state (one atomic load).
    pub fn state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// True while the breaker rejects calls (one atomic load).
    pub fn is_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Takes a permit for the not-ready mode, registering the task to be
    /// woken when one may be available.
    fn poll_permit(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if let Ok(p) = self.breaker.poll_acquire(Instant::now) {
                self.reserved = Some(p);
                self.sleep = None;
                return Poll::Ready(());
            }
            // Register before looking again, so a transition between the two
            // looks cannot be missed.
            self.breaker.register(cx.waker());
            let open = match self.breaker.poll_acquire(Instant::now) {
                Ok(p) => {
                    self.reserved = Some(p);
                    self.sleep = None;
                    return Poll::Ready(());
                }
                Err(open) => open,
            };
            let after = open.retry_after();
            if after.is_zero() || after == std::time::Duration::MAX {
                // Waiting for a probe slot or an operator: a transition wakes us.
                return Poll::Pending;
            }
            let deadline = Instant::now() + after;
            let sleep = match &mut self.sleep {
                Some(s) => {
                    s.as_mut().reset(deadline);
                    s
                }
                None => self.sleep.insert(Box::pin(tokio::time::sleep_until(deadline))),
            };
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        // A reserved permit belongs to the clone that took it.
        CircuitBreaker {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
            reserved: None,
            sleep: None,
        }
    }
}

impl<S, C> Drop for CircuitBreaker<S, C> {
    fn drop(&mut self) {
        if let Some(p) = self.reserved.take() {
            self.breaker.release_unused(p);
        }
    }
}

impl<S: std::fmt::Debug, C> std::fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker").field("inner", &self.inner).field("breaker", &self.breaker).finish()
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<Req, S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.reserved.is_none() && self.breaker.reject_mode() == RejectMode::NotReady {
            std::task::ready!(self.poll_permit(cx));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let reserved = self.reserved.take();
        future::call(&mut self.inner, BreakerRef::Borrowed(&self.breaker), &self.classifier, reserved, req)
    }
}
