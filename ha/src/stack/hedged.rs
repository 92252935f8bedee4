//! The hedge layer when the configuration asks for one, and nothing (not
//! even a clock read) when it does not.
//!
//! A hedged request's future holds two attempts and is several times the
//! size of an unhedged one; it is boxed, so the unhedged future (every
//! request of a stack without hedging) is not padded to its size and moved
//! around at that size.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ha_retry::Hedge;
use pin_project::pin_project;
use tower::{BoxError, Service};

/// Either a [`Hedge`] over `S`, or `S` itself.
#[derive(Debug, Clone)]
pub enum Hedged<S, C, P> {
    /// No hedging.
    Off(S),
    /// Hedging.
    On(Hedge<S, C, P>),
}

impl<S, C, P> Hedged<S, C, P> {
    /// The service below.
    pub fn get_ref(&self) -> &S {
        match self {
            Hedged::Off(s) => s,
            Hedged::On(h) => h.get_ref(),
        }
    }
}

impl<S, C, P, Req> Service<Req> for Hedged<S, C, P>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Hedge<S, C, P>: Service<Req, Response = S::Response, Error = BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = HedgedFuture<S::Future, Pin<Box<<Hedge<S, C, P> as Service<Req>>::Future>>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Hedged::Off(s) => s.poll_ready(cx).map_err(Into::into),
            Hedged::On(h) => h.poll_ready(cx),
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self {
            Hedged::Off(s) => HedgedFuture::Off(s.call(req)),
            Hedged::On(h) => HedgedFuture::On(Box::pin(h.call(req))),
        }
    }
}

/// The response future of [`Hedged`].
#[pin_project(project = Proj)]
#[derive(Debug)]
pub enum HedgedFuture<A, B> {
    /// Unhedged.
    Off(#[pin] A),
    /// Hedged.
    On(#[pin] B),
}

impl<A, B, T, E> Future for HedgedFuture<A, B>
where
    A: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    B: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Off(f) => f.poll(cx).map_err(Into::into),
            Proj::On(f) => f.poll(cx),
        }
    }
}
