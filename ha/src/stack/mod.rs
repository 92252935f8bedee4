//! The standard stack: one service that retries, hedges, balances and cuts
//! off failing endpoints, over any transport.
//!
//! Outer to inner, for one request:
//!
//! ```text
//! Stack ─ Retry (overall deadline, budget) ─ Hedge (optional, same budget)
//!        └─ Balance (P2C PeakEWMA, tiers, outlier ejection, skips open breakers)
//!             └─ per endpoint: CircuitBreaker ─ TryTimeout ─ transport client
//! ```
//!
//! One classifier decides for every layer; the request is kept for replay
//! once; every retry or hedge carries its attempt context, so the balancer
//! sends it to an endpoint the request has not tried (a retry goes back to
//! the one that failed it when the others queue: cost twice as much).
//!
//! ```
//! use std::net::SocketAddr;
//! use ha::core::WithAttempt;
//! use ha::{Stack, Target};
//! use tower::{service_fn, BoxError, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ha::Error> {
//! // Any tower client: here, one that answers with its endpoint's port.
//! let transport = |target: &Target| {
//!     let port = target.addr.port();
//!     service_fn(move |_req: WithAttempt<&'static str>| async move { Ok::<_, BoxError>(port) })
//! };
//! let stack = Stack::builder(transport)
//!     .endpoints([SocketAddr::from(([127, 0, 0, 1], 8081)), SocketAddr::from(([127, 0, 0, 1], 8082))])
//!     .build()
//!     .expect("a valid configuration");
//! let port = stack.oneshot(WithAttempt::new("GET /")).await?;
//! assert!(port == 8081 || port == 8082);
//! # Ok(())
//! # }
//! ```

mod builder;
mod endpoints;
mod hedged;
mod live;
mod timeout;

pub use builder::StackBuilder;
pub use endpoints::EndpointService;
pub use hedged::{Hedged, HedgedFuture};
pub use timeout::{AnyRequest, AttemptTimeout, FindContext, TryTimeout, TryTimeoutFuture, WithContext};

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ha_balance::{Balance, EndpointStats};
use ha_core::Classify;
use ha_retry::{HedgeStats, Retry, RetryBudget, RetryStats};
use pin_project::pin_project;
use tower::{BoxError, Service};

use crate::error::Error;
use crate::request::StackRequest;
use crate::target::Transport;

type Sent<Req> = <Req as StackRequest>::Sent;

/// The balancer of a stack.
pub type StackBalance<T, Req, C> =
    Balance<Arc<str>, EndpointService<<T as Transport<Sent<Req>>>::Service, C>, Sent<Req>, C>;

type Inner<T, Req, C> =
    Retry<Hedged<StackBalance<T, Req, C>, C, <Req as StackRequest>::HedgeReplay>, C, <Req as StackRequest>::Replay>;

/// The standard stack over transport `T` for requests `Req`, classified by
/// `C`; see the [module docs](self).
///
/// `Clone` (clones share every state: budget, endpoints, breakers, stats),
/// `Send + Sync + 'static`: hold it in your application state and call it
/// from any task, no `Buffer` needed.
pub struct Stack<T, Req, C = <Req as StackRequest>::Classifier>
where
    Req: StackRequest,
    T: Transport<Sent<Req>>,
{
    inner: Inner<T, Req, C>,
    live: Arc<live::Live>,
}

impl<T, Req, C> Clone for Stack<T, Req, C>
where
    Req: StackRequest,
    T: Transport<Sent<Req>>,
    C: Clone,
{
    fn clone(&self) -> Self {
        Stack { inner: self.inner.clone(), live: self.live.clone() }
    }
}

impl<T, Req, C> fmt::Debug for Stack<T, Req, C>
where
    Req: StackRequest,
    T: Transport<Sent<Req>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack").field("balance", self.balance()).finish_non_exhaustive()
    }
}

impl<T, Req, C> Stack<T, Req, C>
where
    Req: StackRequest,
    T: Transport<Sent<Req>>,
{
    fn balance(&self) -> &StackBalance<T, Req, C> {
        self.inner.get_ref().get_ref()
    }

    /// Each endpoint's counters: requests, failures, ejection, breaker,
    /// latency estimate.
    pub fn endpoint_stats(&self) -> Vec<EndpointStats> {
        self.balance().endpoint_stats()
    }

    /// The retry layer's counters.
    pub fn retry_stats(&self) -> RetryStats {
        self.inner.stats()
    }

    /// The hedge layer's counters, when hedging is on.
    pub fn hedge_stats(&self) -> Option<HedgeStats> {
        match self.inner.get_ref() {
            Hedged::On(h) => Some(h.stats()),
            Hedged::Off(_) => None,
        }
    }

    /// The budget retries and hedges draw on.
    pub fn budget(&self) -> &RetryBudget {
        self.inner.budget()
    }

    /// True while the balancer routes over every endpoint because too few
    /// are healthy.
    pub fn in_panic_mode(&self) -> bool {
        self.balance().in_panic_mode()
    }

    /// True while the endpoints queue (the fleet past its capacity): failed
    /// attempts are not retried meanwhile, since a retry would only
    /// lengthen the queues.
    pub fn is_queueing(&self) -> bool {
        self.balance().is_queueing()
    }
}

impl<T, Req, C> Service<Req> for Stack<T, Req, C>
where
    Req: StackRequest,
    T: Transport<Sent<Req>>,
    C: Classify<Sent<Req>, T::Response, BoxError> + Clone + Send + Sync + 'static,
{
    type Response = T::Response;
    type Error = Error;
    type Future = ResponseFuture<<Inner<T, Req, C> as Service<Req>>::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture { inner: self.inner.call(req) }
    }
}

/// The response future of a [`Stack`].
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F> {
    #[pin]
    inner: F,
}

impl<F, T> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<T, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map_err(Error::from)
    }
}
