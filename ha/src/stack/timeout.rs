//! The per-try timeout each endpoint's client gets, inside its breaker, so
//! the breaker, outlier detection and latency tracking all see an attempt
//! that took too long as the failure it is.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ha_core::{AttemptContext, AttemptTimedOut, HasAttemptContext};
use pin_project::pin_project;
use tokio::time::{Instant, Sleep};
use tower::{BoxError, Service};

/// A service whose calls fail with [`AttemptTimedOut`] after a timeout.
///
/// The timer is armed when the call is first found pending, so a call
/// that answers at once registers no timer. It counts from the attempt's
/// start when a layer above lends one ([`ha_core::time::lend`]: the
/// balancer lends the time it picked the endpoint), and reads no clock;
/// otherwise from when it is armed.
///
/// In a stack without hedging, a timer that ends the attempt by the
/// request's deadline says so in the request's attempt context
/// ([`AttemptContext::cover_deadline`]), and the retry layer above
/// registers no deadline timer of its own for that attempt: one timer per
/// request instead of two. `K` says where the context is found:
/// [`AnyRequest`] (the default) looks for none.
#[derive(Debug)]
pub struct TryTimeout<S, K = AnyRequest> {
    inner: S,
    timeout: AttemptTimeout,
    _find: PhantomData<fn() -> K>,
}

impl<S: Clone, K> Clone for TryTimeout<S, K> {
    fn clone(&self) -> Self {
        TryTimeout { inner: self.inner.clone(), timeout: self.timeout.clone(), _find: PhantomData }
    }
}

/// Where a [`TryTimeout`] finds a request's attempt context.
pub trait FindContext<Req> {
    /// The context of `req`, if it has one.
    fn find(req: &Req) -> Option<&AttemptContext>;
}

/// Requests of any type: no context is looked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyRequest;

impl<Req> FindContext<Req> for AnyRequest {
    #[inline]
    fn find(_: &Req) -> Option<&AttemptContext> {
        None
    }
}

/// Requests that carry an [`AttemptContext`] (`http::Request`, `WithAttempt`).
#[derive(Debug, Clone, Copy, Default)]
pub struct WithContext;

impl<Req: HasAttemptContext> FindContext<Req> for WithContext {
    #[inline]
    fn find(req: &Req) -> Option<&AttemptContext> {
        req.attempt_context()
    }
}

/// A per-try timeout that can be changed while services use it: every
/// clone sees a [`set`](Self::set) from the next call on.
#[derive(Debug, Clone)]
pub struct AttemptTimeout(Arc<Cell>);

#[derive(Debug)]
struct Cell {
    nanos: AtomicU64,
    // Whether the timer may cover the deadline of the retry layer above
    // (nothing hedges in between); fixed when the stack is built.
    covers: bool,
}

/// The stored value meaning "no timeout".
const UNBOUNDED: u64 = u64::MAX;

impl AttemptTimeout {
    /// A timeout of `timeout` (`None`: unbounded).
    pub fn new(timeout: Option<Duration>) -> Self {
        Self::covering(timeout, false)
    }

    /// The stack's: covers the retry layer's deadline when `covers`.
    pub(crate) fn covering(timeout: Option<Duration>, covers: bool) -> Self {
        let t = AttemptTimeout(Arc::new(Cell { nanos: AtomicU64::new(UNBOUNDED), covers }));
        t.set(timeout);
        t
    }

    /// Changes the timeout for calls made from now on.
    pub fn set(&self, timeout: Option<Duration>) {
        let nanos = timeout.map_or(UNBOUNDED, |t| u64::try_from(t.as_nanos()).unwrap_or(UNBOUNDED - 1));
        self.0.nanos.store(nanos, Ordering::Relaxed);
    }

    /// The timeout now in force.
    #[inline]
    pub fn get(&self) -> Option<Duration> {
        match self.0.nanos.load(Ordering::Relaxed) {
            UNBOUNDED => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }
}

impl<S> TryTimeout<S> {
    /// `inner` with calls bounded to `timeout` (`None`: unbounded).
    pub fn new(inner: S, timeout: Option<Duration>) -> Self {
        Self::shared(inner, AttemptTimeout::new(timeout))
    }

    /// `inner` with calls bounded by a timeout that may change.
    pub fn shared(inner: S, timeout: AttemptTimeout) -> Self {
        TryTimeout { inner, timeout, _find: PhantomData }
    }
}

impl<S> TryTimeout<S, WithContext> {
    /// The stack's per-try timeout: it covers the deadline of the retry
    /// layer above if `timeout` was made to.
    pub(crate) fn covering(inner: S, timeout: AttemptTimeout) -> Self {
        TryTimeout { inner, timeout, _find: PhantomData }
    }
}

impl<S, K> TryTimeout<S, K> {
    /// The wrapped client.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, K, Req> Service<Req> for TryTimeout<S, K>
where
    S: Service<Req, Error = BoxError>,
    K: FindContext<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = TryTimeoutFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let timeout = self.timeout.get();
        // Only a context with a deadline can be covered.
        let context = match timeout {
            Some(_) if self.timeout.0.covers => K::find(&req).filter(|c| c.deadline().is_some()).cloned(),
            _ => None,
        };
        // The attempt's start, lent by the balancer that picked the
        // endpoint: the timer counts from it and reads no clock.
        let start = timeout.and_then(|_| ha_core::time::lent());
        TryTimeoutFuture { inner: self.inner.call(req), timeout, timer: Timer::Unarmed { context, start } }
    }
}

/// The response future of [`TryTimeout`].
#[pin_project]
#[derive(Debug)]
pub struct TryTimeoutFuture<F> {
    #[pin]
    inner: F,
    timeout: Option<Duration>,
    #[pin]
    timer: Timer,
}

/// The timer of a [`TryTimeoutFuture`]: until it is armed, the attempt's
/// context (to cover its deadline once it is) and its start if one was
/// lent, in the same space.
#[pin_project(project = TimerProj)]
#[derive(Debug)]
enum Timer {
    Unarmed { context: Option<AttemptContext>, start: Option<Instant> },
    Armed(#[pin] Sleep),
}

impl<F, T> Future for TryTimeoutFuture<F>
where
    F: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(out);
        }
        let Some(timeout) = *this.timeout else { return Poll::Pending };
        loop {
            match this.timer.as_mut().project() {
                TimerProj::Armed(sleep) => {
                    return match sleep.poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Err(AttemptTimedOut::new(timeout).into())),
                        Poll::Pending => Poll::Pending,
                    };
                }
                TimerProj::Unarmed { context, start } => {
                    let context = context.take();
                    let sleep = match *start {
                        Some(start) => tokio::time::sleep_until(start + timeout),
                        None => tokio::time::sleep(timeout),
                    };
                    if let Some(context) = context {
                        if context.deadline().is_some_and(|d| sleep.deadline() <= d) {
                            context.cover_deadline();
                        }
                    }
                    this.timer.set(Timer::Armed(sleep));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{service_fn, ServiceExt};

    #[tokio::test(start_paused = true)]
    async fn slow_calls_fail_with_attempt_timed_out() {
        let svc = service_fn(|d: u64| async move {
            tokio::time::sleep(Duration::from_millis(d)).await;
            Ok::<_, BoxError>(d)
        });
        let svc = TryTimeout::new(svc, Some(Duration::from_millis(100)));
        assert_eq!(svc.clone().oneshot(99).await.unwrap(), 99);
        let err = svc.clone().oneshot(101).await.unwrap_err();
        assert_eq!(err.downcast_ref::<AttemptTimedOut>().unwrap().timeout(), Duration::from_millis(100));
        let unbounded = TryTimeout::new(svc.inner, None);
        assert_eq!(unbounded.oneshot(10_000).await.unwrap(), 10_000);
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_counts_from_a_lent_start_and_reads_no_clock() {
        let mut svc = TryTimeout::new(
            service_fn(|_: ()| std::future::pending::<Result<(), BoxError>>()),
            Some(Duration::from_millis(100)),
        );
        let picked = Instant::now();
        tokio::time::advance(Duration::from_millis(40)).await;
        let called = Instant::now();
        let fut = ha_core::time::lend(picked, || svc.call(()));
        assert!(fut.await.unwrap_err().is::<AttemptTimedOut>());
        assert_eq!(Instant::now(), picked + Duration::from_millis(100), "not {:?} after the call", called.elapsed());
        // Nothing lent: from the call.
        let called = Instant::now();
        assert!(svc.call(()).await.is_err());
        assert_eq!(called.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_ending_the_attempt_by_the_deadline_covers_it() {
        use ha_core::WithAttempt;
        let svc = service_fn(|_: WithAttempt<()>| std::future::pending::<Result<(), BoxError>>());
        let call = |timeout: u64, covers: bool, deadline: Option<u64>| {
            let svc = TryTimeout::covering(svc, AttemptTimeout::covering(Some(Duration::from_millis(timeout)), covers));
            let ctx = match deadline {
                Some(ms) => AttemptContext::with_deadline(ha_core::Instant::now() + Duration::from_millis(ms)),
                None => AttemptContext::new(),
            };
            let mut req = WithAttempt::new(());
            req.set_attempt_context(ctx.clone());
            async move {
                let err = svc.oneshot(req).await.unwrap_err();
                assert!(err.is::<AttemptTimedOut>());
                ctx.deadline_covered()
            }
        };
        assert!(call(100, true, Some(100)).await, "ends by the deadline");
        assert!(!call(101, true, Some(100)).await, "ends after the deadline");
        assert!(!call(100, false, Some(1000)).await, "a hedge may run above it");
        assert!(!call(100, true, None).await, "no deadline to cover");
    }
}
