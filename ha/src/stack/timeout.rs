//! The per-try timeout each endpoint's client gets, inside its breaker, so
//! the breaker, outlier detection and latency tracking all see an attempt
//! that took too long as the failure it is.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ha_core::AttemptTimedOut;
use pin_project::pin_project;
use tokio::time::Sleep;
use tower::{BoxError, Service};

/// A service whose calls fail with [`AttemptTimedOut`] after a timeout.
///
/// The timer starts when the call is first found pending, so a call that
/// answers at once reads no clock and registers no timer.
#[derive(Debug, Clone)]
pub struct TryTimeout<S> {
    inner: S,
    timeout: AttemptTimeout,
}

/// A per-try timeout that can be changed while services use it: every
/// clone sees a [`set`](Self::set) from the next call on.
#[derive(Debug, Clone)]
pub struct AttemptTimeout(Arc<AtomicU64>);

/// The stored value meaning "no timeout".
const UNBOUNDED: u64 = u64::MAX;

impl AttemptTimeout {
    /// A timeout of `timeout` (`None`: unbounded).
    pub fn new(timeout: Option<Duration>) -> Self {
        let t = AttemptTimeout(Arc::new(AtomicU64::new(UNBOUNDED)));
        t.set(timeout);
        t
    }

    /// Changes the timeout for calls made from now on.
    pub fn set(&self, timeout: Option<Duration>) {
        let nanos = timeout.map_or(UNBOUNDED, |t| u64::try_from(t.as_nanos()).unwrap_or(UNBOUNDED - 1));
        self.0.store(nanos, Ordering::Relaxed);
    }

    /// The timeout now in force.
    #[inline]
    pub fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            UNBOUNDED => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }
}

impl<S> TryTimeout<S> {
    /// `inner` with calls bounded to `timeout` (`None`: unbounded).
    pub fn new(inner: S, timeout: Option<Duration>) -> Self {
        TryTimeout { inner, timeout: AttemptTimeout::new(timeout) }
    }

    /// `inner` with calls bounded by a timeout that may change.
    pub fn shared(inner: S, timeout: AttemptTimeout) -> Self {
        TryTimeout { inner, timeout }
    }

    /// The wrapped client.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Req> Service<Req> for TryTimeout<S>
where
    S: Service<Req, Error = BoxError>,
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
        TryTimeoutFuture { inner: self.inner.call(req), timeout: self.timeout.get(), sleep: None }
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
    sleep: Option<Sleep>,
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
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep(timeout)));
        }
        match this.sleep.as_pin_mut().map(|s| s.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(AttemptTimedOut::new(timeout).into())),
            _ => Poll::Pending,
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
}
