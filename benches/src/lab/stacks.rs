//! Full client stacks as contenders: what an ha user and a tower user would
//! each deploy, over the same simulated backends.
//!
//! - `ha_stack`: `ha::Stack` as the facade builds it (retry with budget,
//!   balancer with outlier ejection, a breaker and a per-try timeout per
//!   endpoint), with the scenario's `[settings.ha_stack]` config if any;
//! - `tower_stack`: tower's retry with a `TpsBudget`, a per-try `Timeout`,
//!   a `Buffer` and p2c over PeakEWMA, as tower's own guide assembles them.
//!
//! Both only need `Send` services, so they reach the backends through
//! [`remote`] handles. Both are told, as an HTTP user would
//! tell them, that a client error (4xx) is the caller's, not the backend's:
//! not retried, not held against the endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ha::core::classify::{classify_fn, Outcome};
use ha::core::{HasAttemptContext, WithAttempt};
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover};
use tower::retry::budget::TpsBudget;
use tower::retry::Retry;
use tower::timeout::Timeout;
use tower::{BoxError, Service, ServiceExt};

use super::contender::{BudgetRetry, BuildCtx, SeededRng};
use super::discovery;
use super::ha::ejection_events;
use super::remote::{self, Remote};
use super::sim::{BackendError, SimRequest, Stack};

/// Backend `i` is the endpoint at 127.0.0.1:(BASE_PORT + i): the facade
/// keys endpoints by address.
pub const BASE_PORT: u16 = 10_000;

/// The endpoint address of backend `i`.
pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], BASE_PORT + i as u16))
}

/// The lab's classification, as a function pointer (one nameable type).
pub type OutcomeFn = fn(Result<&(), &BoxError>) -> Outcome;

/// The outcome of an answer as an HTTP classifier sees it: a 4xx is a
/// success for the endpoint's health (the request was wrong), every other
/// error a retryable failure, with the Retry-After the rejection carried
/// (as ha's HTTP classifier reads the header of a 503 or 429).
pub fn outcome(result: Result<&(), &BoxError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Success,
        Err(e) if BackendError::is_client(e) => Outcome::Success,
        Err(e) => match BackendError::retry_after(e) {
            Some(d) => Outcome::RetryableFailure { retry_after: Some(d) },
            None => Outcome::retryable(),
        },
    }
}

/// A remote backend fed the facade's requests: the attempt number the
/// stack's context carries becomes the simulation's, so a retry meets
/// fresh backend behaviour as under the other retry contenders.
#[derive(Clone)]
struct Endpoint(Remote);

impl Service<WithAttempt<SimRequest>> for Endpoint {
    type Response = ();
    type Error = BoxError;
    type Future = <Remote as Service<SimRequest>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: WithAttempt<SimRequest>) -> Self::Future {
        let attempt = req.attempt_context().map_or(1, |c| c.attempt()).saturating_sub(1);
        let mut r = req.into_inner();
        r.attempt = attempt;
        self.0.call(r)
    }
}

/// A cloneable service used as its users use it: each call on its own
/// clone (`svc.clone().oneshot(req)`), so every caller waits for readiness
/// with its own waker. (The lab's shared [`Stack`] polls one instance for
/// every caller, and a service keeps only the last caller's waker.)
#[derive(Clone)]
struct PerCall<S>(S);

impl<S, R> Service<R> for PerCall<S>
where
    S: Service<R> + Clone + 'static,
    S::Error: Into<BoxError>,
    R: 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, BoxError>>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: R) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move { svc.oneshot(req).await.map_err(Into::into) })
    }
}

/// The facade's standard stack.
pub fn ha_stack(ctx: &BuildCtx<'_>) -> Stack {
    let config = ctx.settings.ha("ha_stack").cloned().unwrap_or_default();
    let remotes: Arc<[Remote]> = remote::serve(ctx.backends).into();
    let transport = move |t: &ha::Target| Endpoint(remotes[usize::from(t.addr.port() - BASE_PORT)].clone());
    let classifier = classify_fn(outcome as OutcomeFn);
    let builder = ha::Stack::builder(transport)
        .seed(ctx.rng(0x5eed_5eed).next_u64())
        .config(config)
        .classifier(classifier)
        .events(ejection_events(ctx));
    // A layer whose set changes is discovered (`joins_at_s`, `leaves_at_s`).
    let targets = (0..ctx.backends.len()).map(|i| (addr(i), ha::Target::new(addr(i)))).collect();
    let builder = match discovery::of_layer(ctx, targets) {
        Some(discover) => builder.discover(discover),
        None => builder.endpoints((0..ctx.backends.len()).map(addr)),
    };
    let stack = builder.build().expect("the scenario's ha config was validated when the file was read");
    Stack::new(PerCall(stack.map_request(WithAttempt::new)))
}

/// tower's pieces assembled as a tower user would.
pub fn tower_stack(ctx: &BuildCtx<'_>) -> Stack {
    let c = ctx.settings.tower_stack();
    let remotes = remote::serve(ctx.backends);
    let (rtt, decay) = (Duration::from_millis(c.rtt_ms), Duration::from_secs(c.decay_s));
    let rng = SeededRng::new(ctx.rng(0x7473_7463));
    let buffered = match discovery::of_layer(ctx, remotes.iter().cloned().enumerate().collect()) {
        None => {
            let list = ServiceList::new::<SimRequest>(remotes);
            let discover = PeakEwmaDiscover::new(list, rtt, decay, CompleteOnResponse::default());
            Buffer::new(Balance::from_rng(discover, rng), c.buffer)
        }
        Some(d) => {
            let discover = PeakEwmaDiscover::new(d, rtt, decay, CompleteOnResponse::default());
            Buffer::new(Balance::from_rng(discover, rng), c.buffer)
        }
    };
    let timed = Timeout::new(buffered, Duration::from_millis(c.attempt_timeout_ms));
    // Must be created inside the runtime: TpsBudget reads tokio's clock.
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(c.budget_ttl_s), c.budget_min_per_s, c.budget_ratio));
    Stack::new(PerCall(Retry::new(BudgetRetry::new(budget, c.max_attempts - 1), timed)))
}
