//! The response future: waits for the inner call, classifies its result and
//! records the outcome, or answers at once with the breaker's rejection.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ha_core::error::BreakerOpen;
use ha_core::{Classify, Instant};
use pin_project::pin_project;
use tower_service::Service;

use crate::breaker::{Breaker, Permit};
use ha_core::lease::{Lease, Stash, Stashed};

thread_local! {
    /// This thread's stash of breaker references (see [`ha_core::lease`]).
    static BREAKERS: Stash<Breaker> = const { Stash::new() };
}

impl Stashed for Breaker {
    fn stash() -> &'static std::thread::LocalKey<Stash<Self>> {
        &BREAKERS
    }
}

/// The future of [`CircuitBreaker`](crate::CircuitBreaker) and
/// [`KeyedCircuitBreaker`](crate::KeyedCircuitBreaker) calls.
#[pin_project]
pub struct ResponseFuture<F, C, Req>
where
    C: Classify<Req, <F as TryOutput>::Ok, <F as TryOutput>::Err>,
    F: TryOutput,
{
    #[pin]
    kind: Kind<F>,
    recorder: Option<Recorder<C, C::RequestInfo>>,
    _req: PhantomData<fn(Req)>,
}

#[pin_project(project = KindProj)]
enum Kind<F> {
    Called {
        #[pin]
        fut: F,
    },
    Rejected {
        err: Option<BreakerOpen>,
    },
}

/// What completing a call records, and where. Dropping it with its permit
/// still inside means the call was cancelled.
pub(crate) struct Recorder<C, I> {
    pub(crate) breaker: Lease<Breaker>,
    pub(crate) permit: Option<Permit>,
    pub(crate) classifier: C,
    pub(crate) info: I,
    pub(crate) start: Option<Instant>,
}

impl<C, I> Drop for Recorder<C, I> {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            self.breaker.cancel(p, Instant::now);
        }
    }
}

/// The `Ok` and `Err` types of a future of `Result`, named for the bounds of
/// [`ResponseFuture`]; implemented for every such future.
pub trait TryOutput: Future<Output = Result<Self::Ok, Self::Err>> {
    /// The success type.
    type Ok;
    /// The error type.
    type Err;
}

impl<F, T, E> TryOutput for F
where
    F: Future<Output = Result<T, E>>,
{
    type Ok = T;
    type Err = E;
}

impl<F, C, Req> ResponseFuture<F, C, Req>
where
    F: TryOutput,
    C: Classify<Req, F::Ok, F::Err>,
{
    pub(crate) fn called(fut: F, recorder: Option<Recorder<C, C::RequestInfo>>) -> Self {
        ResponseFuture { kind: Kind::Called { fut }, recorder, _req: PhantomData }
    }

    pub(crate) fn rejected(err: BreakerOpen) -> Self {
        ResponseFuture { kind: Kind::Rejected { err: Some(err) }, recorder: None, _req: PhantomData }
    }
}

/// The breaker a call goes through: the service's own (leased only if the
/// call is admitted and tracked) or one the caller already leased.
pub(crate) enum BreakerRef<'a> {
    Borrowed(&'a Arc<Breaker>),
    Leased(Lease<Breaker>),
}

impl BreakerRef<'_> {
    #[inline]
    fn lease(self) -> Lease<Breaker> {
        match self {
            BreakerRef::Borrowed(b) => Lease::of(b),
            BreakerRef::Leased(l) => l,
        }
    }
}

impl std::ops::Deref for BreakerRef<'_> {
    type Target = Breaker;
    #[inline]
    fn deref(&self) -> &Breaker {
        match self {
            BreakerRef::Borrowed(b) => b,
            BreakerRef::Leased(l) => l,
        }
    }
}

/// Admits a call through `breaker` (or uses `reserved`), and builds its future.
#[inline]
pub(crate) fn call<S, C, Req>(
    inner: &mut S,
    breaker: BreakerRef<'_>,
    classifier: &C,
    reserved: Option<Permit>,
    req: Req,
) -> ResponseFuture<S::Future, C, Req>
where
    S: Service<Req>,
    C: Classify<Req, S::Response, S::Error> + Clone,
{
    let permit = match reserved {
        Some(p) => p,
        None => match breaker.try_acquire(Instant::now) {
            Ok(p) => p,
            // The balancer chose this endpoint despite the advice.
            Err(_) if breaker.reject_mode() == crate::config::RejectMode::Advisory => {
                return ResponseFuture::called(inner.call(req), None);
            }
            Err(open) => return ResponseFuture::rejected(open),
        },
    };
    let recorder = if permit.is_tracked() {
        let start = if breaker.measures_duration() { Some(Instant::now()) } else { None };
        Some(Recorder {
            breaker: breaker.lease(),
            permit: Some(permit),
            classifier: classifier.clone(),
            info: classifier.request_info(&req),
            start,
        })
    } else {
        None
    };
    ResponseFuture::called(inner.call(req), recorder)
}

impl<F, C, Req> Future for ResponseFuture<F, C, Req>
where
    F: TryOutput,
    F::Err: Into<tower_service_box::BoxError>,
    C: Classify<Req, F::Ok, F::Err>,
{
    type Output = Result<F::Ok, tower_service_box::BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Rejected { err } => {
                Poll::Ready(Err(err.take().unwrap_or_else(|| BreakerOpen::new(Duration::ZERO)).into()))
            }
            KindProj::Called { fut } => {
                let result = std::task::ready!(fut.poll(cx));
                if let Some(rec) = this.recorder.as_mut() {
                    if let Some(permit) = rec.permit.take() {
                        let outcome = rec.classifier.classify(&rec.info, result.as_ref());
                        let mut end = None;
                        let elapsed = rec.start.map(|s| {
                            let now = Instant::now();
                            end = Some(now);
                            now.saturating_duration_since(s)
                        });
                        rec.breaker.record(permit, outcome, elapsed, || end.unwrap_or_else(Instant::now));
                    }
                }
                Poll::Ready(result.map_err(Into::into))
            }
        }
    }
}

pub(crate) mod tower_service_box {
    /// tower's boxed error, without depending on all of tower.
    pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
}

impl<F, C, Req> std::fmt::Debug for ResponseFuture<F, C, Req>
where
    F: TryOutput,
    C: Classify<Req, F::Ok, F::Err>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
