//! Working with `tower::retry`.
//!
//! - [`TowerPolicyLayer`]: runs a `tower::retry::Policy` you already have,
//!   bounded by an `ha` [`RetryBudget`] and an overall deadline. Your policy
//!   still decides what is retried and how long to wait.
//! - [`HaPolicy`]: `ha`'s retry policy (classification, attempts, backoff
//!   with jitter, `Retry-After`, deadline for backoff, budget) as a
//!   `tower::retry::Policy`, to use inside `tower::retry::Retry`. tower's
//!   `Retry` cannot cut an attempt short, so per-try timeouts and a deadline
//!   that interrupts an attempt need a `tower::timeout::Timeout` below it or
//!   our [`Retry`](crate::Retry).
//!
//! ```
//! use ha_retry::interop::HaPolicy;
//! use ha_retry::config::RetryConfig;
//! use tower::{retry::RetryLayer, service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let policy = HaPolicy::new(RetryConfig::default()).unwrap();
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let counter = calls.clone();
//! let svc = RetryLayer::new(policy).layer(service_fn(move |_: u32| {
//!     let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!     async move { if n < 2 { Err("unavailable") } else { Ok(n) } }
//! }));
//! assert_eq!(svc.oneshot(7).await, Ok(2));
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use ha_core::classify::{Classify, ErrorsAreFailures};
use ha_core::rng::FastRng;
use ha_core::{BudgetExhausted, DeadlineExceeded, Event, Events, Instant};
use pin_project::pin_project;
use tokio::time::{sleep_until, Sleep};
use tower::retry::Policy;
use tower::BoxError;
use tower_layer::Layer;
use tower_service::Service;

use crate::budget::RetryBudget;
use crate::config::{ConfigError, RetryConfig};
use crate::policy::RetryState;

/// `ha`'s retry policy as a `tower::retry::Policy`; see the [module docs](self).
pub struct HaPolicy<C = ErrorsAreFailures> {
    shared: Arc<PolicyShared<C>>,
    rng: FastRng,
    state: Option<RetryState>,
    // Set on the copy tower keeps for one request once it has retried.
    in_request: bool,
}

struct PolicyShared<C> {
    config: RetryConfig,
    classifier: C,
    budget: RetryBudget,
    events: Events,
}

impl HaPolicy {
    /// The policy with `config`, retrying every `Err`, with its own budget.
    pub fn new(config: RetryConfig) -> Result<Self, ConfigError> {
        let budget = RetryBudget::builder(config.budget.clone()).name(config.name.as_str()).build()?;
        HaPolicy::with_parts(config, ErrorsAreFailures::default(), budget, Events::new())
    }
}

impl<C> HaPolicy<C> {
    /// The policy with `config`, `classifier`, a (possibly shared) `budget`
    /// and an events handle.
    pub fn with_parts(
        config: RetryConfig,
        classifier: C,
        budget: RetryBudget,
        events: Events,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(HaPolicy {
            shared: Arc::new(PolicyShared { config, classifier, budget, events }),
            rng: FastRng::from_entropy(),
            state: None,
            in_request: false,
        })
    }

    /// The budget the policy draws on.
    pub fn budget(&self) -> &RetryBudget {
        &self.shared.budget
    }
}

impl<C> Clone for HaPolicy<C> {
    fn clone(&self) -> Self {
        HaPolicy {
            shared: self.shared.clone(),
            rng: self.rng.clone(),
            state: self.state.clone(),
            in_request: self.in_request,
        }
    }
}

impl<C> fmt::Debug for HaPolicy<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HaPolicy").field("config", &self.shared.config).finish_non_exhaustive()
    }
}

impl<C, Req, Res, E> Policy<Req, Res, E> for HaPolicy<C>
where
    Req: Clone,
    C: Classify<Req, Res, E>,
{
    type Future = Sleep;

    fn retry(&mut self, req: &mut Req, result: &mut Result<Res, E>) -> Option<Sleep> {
        self.in_request = true;
        let shared = &*self.shared;
        let info = shared.classifier.request_info(req);
        let outcome = shared.classifier.classify(&info, result.as_ref());
        if !outcome.is_retryable() {
            return None;
        }
        let now = Instant::now();
        let state = self.state.as_mut()?;
        let delay = state.on_outcome(now, outcome).ok()?;
        if !shared.budget.withdraw(now) {
            return None;
        }
        shared.events.emit(Event::RetryScheduled { attempt: state.attempt(), backoff: delay });
        Some(sleep_until(now + delay))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        if !self.in_request {
            // tower calls this on the service's own policy for each new
            // request, then clones the policy for that request: start afresh.
            let now = Instant::now();
            self.shared.budget.deposit(now);
            let seed = self.rng.next_u64();
            self.state = Some(RetryState::new(&self.shared.config, now, None, FastRng::new(seed)));
        }
        Some(req.clone())
    }
}

/// Runs a `tower::retry::Policy` within an `ha` budget and deadline; see
/// the [module docs](self).
#[derive(Clone)]
pub struct TowerPolicyLayer<P> {
    policy: P,
    shared: Arc<TowerShared>,
}

struct TowerShared {
    budget: RetryBudget,
    deadline: Option<Duration>,
    events: Events,
}

impl<P> TowerPolicyLayer<P> {
    /// Runs `policy` with retries paid from `budget`.
    pub fn new(policy: P, budget: RetryBudget) -> Self {
        TowerPolicyLayer { policy, shared: Arc::new(TowerShared { budget, deadline: None, events: Events::new() }) }
    }

    /// Bounds each request, attempts and waits included, by `deadline`.
    pub fn deadline(self, deadline: Duration) -> Self {
        let s = &self.shared;
        let shared = TowerShared { budget: s.budget.clone(), deadline: Some(deadline), events: s.events.clone() };
        TowerPolicyLayer { policy: self.policy, shared: Arc::new(shared) }
    }

    /// Where events are reported (default: `tracing` only).
    pub fn events(self, events: Events) -> Self {
        let s = &self.shared;
        let shared = TowerShared { budget: s.budget.clone(), deadline: s.deadline, events };
        TowerPolicyLayer { policy: self.policy, shared: Arc::new(shared) }
    }
}

impl<P> fmt::Debug for TowerPolicyLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerPolicyLayer").field("deadline", &self.shared.deadline).finish_non_exhaustive()
    }
}

impl<S, P: Clone> Layer<S> for TowerPolicyLayer<P> {
    type Service = TowerPolicyRetry<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        TowerPolicyRetry { inner, policy: self.policy.clone(), shared: self.shared.clone() }
    }
}

/// A service running a `tower::retry::Policy` within an `ha` budget and
/// deadline; built by [`TowerPolicyLayer`].
#[derive(Clone)]
pub struct TowerPolicyRetry<S, P> {
    inner: S,
    policy: P,
    shared: Arc<TowerShared>,
}

impl<S: fmt::Debug, P> fmt::Debug for TowerPolicyRetry<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerPolicyRetry").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<S, P, Req> Service<Req> for TowerPolicyRetry<S, P>
where
    P: Policy<Req, S::Response, S::Error> + Clone,
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = TowerPolicyFuture<S, P, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let now = Instant::now();
        self.shared.budget.deposit(now);
        let mut policy = self.policy.clone();
        let kept = policy.clone_request(&req);
        let service = self.inner.clone();
        let fut = self.inner.call(req);
        TowerPolicyFuture {
            state: TowerState::Called { fut },
            deadline: self.shared.deadline.map(|d| sleep_until(now + d)),
            service,
            policy,
            kept,
            last: None,
            attempt: 1,
            shared: self.shared.clone(),
        }
    }
}

/// The response future of [`TowerPolicyRetry`].
#[pin_project]
pub struct TowerPolicyFuture<S, P, Req>
where
    S: Service<Req>,
    P: Policy<Req, S::Response, S::Error>,
{
    #[pin]
    state: TowerState<S::Future, P::Future>,
    #[pin]
    deadline: Option<Sleep>,
    service: S,
    policy: P,
    kept: Option<Req>,
    // The result being retried, returned if the deadline passes during the wait.
    last: Option<Result<S::Response, S::Error>>,
    attempt: u32,
    shared: Arc<TowerShared>,
}

#[pin_project(project = TowerStateProj)]
enum TowerState<F, W> {
    Called {
        #[pin]
        fut: F,
    },
    Waiting {
        #[pin]
        wait: W,
    },
    Sending,
    Done,
}

impl<S, P, Req> fmt::Debug for TowerPolicyFuture<S, P, Req>
where
    S: Service<Req>,
    P: Policy<Req, S::Response, S::Error>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerPolicyFuture").field("attempt", &self.attempt).finish_non_exhaustive()
    }
}

impl<S, P, Req> Future for TowerPolicyFuture<S, P, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: Policy<Req, S::Response, S::Error>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                TowerStateProj::Called { fut } => {
                    let mut result = match fut.poll(cx) {
                        Poll::Ready(r) => r,
                        Poll::Pending => {
                            if let Some(d) = this.deadline.as_mut().as_pin_mut() {
                                ready!(d.poll(cx));
                                this.state.set(TowerState::Done);
                                return Poll::Ready(Err(DeadlineExceeded::new().into()));
                            }
                            return Poll::Pending;
                        }
                    };
                    this.state.set(TowerState::Done);
                    let Some(req) = this.kept.as_mut() else { return Poll::Ready(result.map_err(Into::into)) };
                    let Some(wait) = this.policy.retry(req, &mut result) else {
                        return Poll::Ready(result.map_err(Into::into));
                    };
                    let now = Instant::now();
                    if this.deadline.as_ref().as_pin_ref().is_some_and(|d| d.deadline() <= now) {
                        return Poll::Ready(result.map_err(Into::into));
                    }
                    if !this.shared.budget.withdraw(now) {
                        return Poll::Ready(result.map_err(|e| BudgetExhausted::new(Some(e.into())).into()));
                    }
                    *this.attempt += 1;
                    // The policy's own future decides the wait; its length is not known here.
                    this.shared.events.emit(Event::RetryScheduled { attempt: *this.attempt, backoff: Duration::ZERO });
                    *this.last = Some(result);
                    this.state.set(TowerState::Waiting { wait });
                }
                TowerStateProj::Waiting { wait } => {
                    if wait.poll(cx).is_pending() {
                        if let Some(d) = this.deadline.as_mut().as_pin_mut() {
                            ready!(d.poll(cx));
                            this.state.set(TowerState::Done);
                            let last = this.last.take().expect("a retried result is kept while waiting");
                            return Poll::Ready(last.map_err(Into::into));
                        }
                        return Poll::Pending;
                    }
                    this.state.set(TowerState::Sending);
                }
                TowerStateProj::Sending => {
                    if let Err(e) = ready!(this.service.poll_ready(cx)) {
                        this.state.set(TowerState::Done);
                        return Poll::Ready(Err(e.into()));
                    }
                    let req = this.kept.take().expect("a retry is only scheduled with a kept request");
                    *this.kept = this.policy.clone_request(&req);
                    *this.last = None;
                    let fut = this.service.call(req);
                    this.state.set(TowerState::Called { fut });
                }
                TowerStateProj::Done => panic!("ha_retry::interop future polled after completion"),
            }
        }
    }
}
