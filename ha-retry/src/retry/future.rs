use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{ready, Context, Poll};

use ha_core::classify::Classify;
use ha_core::error::retried_below;
use ha_core::rng::FastRng;
use ha_core::{AttemptTimedOut, BudgetExhausted, DeadlineExceeded, Event, Instant, RetriesExhausted};
use pin_project::pin_project;
use tower::BoxError;
use tower_service::Service;

use super::attempt_deadline;
use super::layer::RetryShared;
use crate::policy::RetryState;
use crate::replay::Replay;
use crate::timer::LazyTimer;
use ha_core::lease::Lease;

/// The response future of [`Retry`](super::Retry).
#[pin_project]
pub struct ResponseFuture<S, C, P, Req>
where
    P: Replay<Req>,
    S: Service<P::Request>,
    C: Classify<P::Request, S::Response, BoxError>,
{
    #[pin]
    state: State<S::Future>,
    // Ends the attempt in flight (per-try timeout or deadline) or the backoff.
    #[pin]
    timer: LazyTimer,
    // The per-try timer is armed when the first attempt is first found pending.
    per_try_on_pending: bool,
    parts: RetryInputs<S, C, P>,
    kept: Option<P::Request>,
    info: Option<C::RequestInfo>,
    // Seeds the backoff, which is built only when a first retry is considered.
    seed: u64,
    // Boxed: made only once a first retry is considered, and inline it
    // would pad every request's future (moved by each layer above before it
    // is pinned) by its size.
    retry: Option<Box<RetryState>>,
    _req: PhantomData<fn(Req)>,
}

/// What a request takes from its service: the layer's state, its own
/// classifier and replay policy, the service to send retries to, and the
/// request's deadline.
pub(crate) struct RetryInputs<S, C, P> {
    pub(crate) core: Lease<RetryShared>,
    pub(crate) classifier: C,
    pub(crate) replay: P,
    pub(crate) service: S,
    pub(crate) deadline: Option<Instant>,
}

#[pin_project(project = StateProj)]
pub(crate) enum State<F> {
    Called {
        #[pin]
        fut: F,
    },
    Backoff,
    Sending,
    Expired,
    Done,
}

impl<S, C, P, Req> ResponseFuture<S, C, P, Req>
where
    P: Replay<Req>,
    S: Service<P::Request>,
    C: Classify<P::Request, S::Response, BoxError>,
{
    #[inline(always)]
    pub(crate) fn new(
        parts: RetryInputs<S, C, P>,
        state: State<S::Future>,
        kept: Option<P::Request>,
        info: Option<C::RequestInfo>,
        seed: u64,
        timer_at: Option<Instant>,
        per_try_on_pending: bool,
    ) -> Self {
        ResponseFuture {
            state,
            timer: LazyTimer::new(timer_at),
            per_try_on_pending,
            parts,
            kept,
            info,
            seed,
            retry: None,
            _req: PhantomData,
        }
    }
}

impl<S, C, P, Req> Future for ResponseFuture<S, C, P, Req>
where
    P: Replay<Req>,
    S: Service<P::Request>,
    S::Error: Into<BoxError>,
    C: Classify<P::Request, S::Response, BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let parts = &mut *this.parts;
        let core = &*parts.core;
        loop {
            let result: Result<S::Response, BoxError> = match this.state.as_mut().project() {
                StateProj::Called { fut } => match fut.poll(cx) {
                    Poll::Ready(r) => r.map_err(Into::into),
                    Poll::Pending => {
                        if *this.per_try_on_pending {
                            *this.per_try_on_pending = false;
                            this.timer.as_mut().arm(core.config.per_try_timeout.map(|t| Instant::now() + t));
                        }
                        // A timer below ends this attempt by the deadline: no second timer.
                        if covered(&parts.replay, parts.deadline, this.timer.at(), this.kept.as_ref()) {
                            return Poll::Pending;
                        }
                        let fired = ready!(this.timer.as_mut().poll(cx));
                        // Out of time: dropping the attempt's future cancels it.
                        this.state.set(State::Done);
                        if parts.deadline.is_some_and(|d| fired >= d) {
                            core.stats.deadlines.fetch_add(1, Ordering::Relaxed);
                            return Poll::Ready(Err(DeadlineExceeded::new().into()));
                        }
                        core.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                        let per_try = core.config.per_try_timeout.unwrap_or_default();
                        Err(AttemptTimedOut::new(per_try).into())
                    }
                },
                StateProj::Backoff => {
                    ready!(this.timer.as_mut().poll(cx));
                    // While the service is not ready, only the deadline bounds the wait.
                    this.timer.as_mut().arm(parts.deadline);
                    this.state.set(State::Sending);
                    continue;
                }
                StateProj::Sending => {
                    match parts.service.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(e.into()));
                        }
                        Poll::Pending => {
                            ready!(this.timer.as_mut().poll(cx));
                            this.state.set(State::Done);
                            core.stats.deadlines.fetch_add(1, Ordering::Relaxed);
                            return Poll::Ready(Err(DeadlineExceeded::new().into()));
                        }
                    }
                    // Only a kept copy leads to Sending (see below).
                    let mut req = this.kept.take().expect("a retry is only scheduled with a kept copy");
                    parts.replay.next_attempt(&mut req);
                    // The last attempt keeps one too while it may be requeued.
                    if attempt(this.retry) < core.config.max_attempts
                        || this.retry.as_deref().is_some_and(RetryState::can_requeue)
                    {
                        *this.kept = parts.replay.copy(&req);
                    }
                    let now = Instant::now();
                    *this.per_try_on_pending = false;
                    this.timer.as_mut().arm(attempt_deadline(core.config.per_try_timeout, now, parts.deadline));
                    let fut = ha_core::time::lend(now, || parts.service.call(req));
                    this.state.set(State::Called { fut });
                    continue;
                }
                StateProj::Expired => {
                    this.state.set(State::Done);
                    core.stats.deadlines.fetch_add(1, Ordering::Relaxed);
                    return Poll::Ready(Err(DeadlineExceeded::new().into()));
                }
                StateProj::Done => panic!("ha_retry::Retry future polled after completion"),
            };

            // An attempt ended with `result`: retry it or hand it back.
            this.state.set(State::Done);
            let Some(info) = this.info.as_ref() else { return Poll::Ready(result) };
            let outcome = parts.classifier.classify(info, result.as_ref());
            if !outcome.is_retryable() || result.as_ref().is_err_and(|e| retried_below(&**e)) {
                return Poll::Ready(result);
            }
            // Retried here and failed again: layers further up must not retry it too.
            let gave_up = |result: Result<S::Response, BoxError>, attempts: u32| {
                if attempts > 1 {
                    result.map_err(|e| RetriesExhausted::new(attempts, e).into())
                } else {
                    result
                }
            };
            // No copy is kept for the last attempt (nor one of a body that did not fit).
            if !this.kept.as_ref().is_some_and(|k| parts.replay.can_replay(k, false)) {
                return Poll::Ready(gave_up(result, tries(this.retry)));
            }
            let now = Instant::now();
            let (seed, deadline) = (*this.seed, parts.deadline);
            let retry = this.retry.get_or_insert_with(|| {
                let backoff = core.backoff.restart(FastRng::new(seed));
                Box::new(RetryState::from_backoff(&core.config, backoff, deadline))
            });
            if result.as_ref().is_err_and(|e| ha_core::error::never_sent(&**e)) {
                retry.never_sent();
            } else if this.kept.as_ref().is_some_and(|k| parts.replay.queueing(k)) {
                // Sent to a fleet past its capacity: a retry would only
                // lengthen the queues.
                core.stats.withheld.fetch_add(1, Ordering::Relaxed);
                return Poll::Ready(gave_up(result, retry.tries()));
            } else if result.as_ref().is_err_and(|e| ha_core::error::connection_lost(&**e)) {
                retry.connection_lost();
            } else if this.kept.as_ref().is_some_and(|k| parts.replay.untried_left(k)) {
                retry.untried_endpoint_left();
            }
            // A retryable outcome stops only at the attempt limit or the deadline.
            let Ok(delay) = retry.on_outcome(now, outcome) else {
                return Poll::Ready(gave_up(result, retry.tries()));
            };
            if !core.budget.withdraw(now) {
                core.stats.refused.fetch_add(1, Ordering::Relaxed);
                return Poll::Ready(result.map_err(|e| BudgetExhausted::new(Some(e)).into()));
            }
            core.stats.retries.fetch_add(1, Ordering::Relaxed);
            core.events.emit(Event::RetryScheduled { attempt: retry.attempt(), backoff: delay });
            drop(result);
            if delay.is_zero() {
                this.timer.as_mut().arm(parts.deadline);
                this.state.set(State::Sending);
            } else {
                this.timer.as_mut().arm(Some(now + delay));
                this.state.set(State::Backoff);
            }
        }
    }
}

/// Whether the timer, armed for `at`, is the request's deadline, and a
/// timer below ends the attempt in flight (whose copy is `kept`) by then.
/// Asked on every poll that finds the attempt pending (the usual path of a
/// stack without hedging), so it is inlined, not kept out of line as cold.
#[inline]
fn covered<Req, P: Replay<Req>>(
    replay: &P,
    deadline: Option<Instant>,
    at: Option<Instant>,
    kept: Option<&P::Request>,
) -> bool {
    deadline.is_some() && at == deadline && kept.is_some_and(|k| replay.deadline_covered(k))
}

/// Every attempt made, requeued ones included.
fn tries(retry: &Option<Box<RetryState>>) -> u32 {
    retry.as_deref().map_or(1, RetryState::tries)
}

/// The attempt in flight: the first until a retry state exists.
fn attempt(retry: &Option<Box<RetryState>>) -> u32 {
    retry.as_deref().map_or(1, RetryState::attempt)
}

impl<S, C, P, Req> fmt::Debug for ResponseFuture<S, C, P, Req>
where
    P: Replay<Req>,
    S: Service<P::Request>,
    C: Classify<P::Request, S::Response, BoxError>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").field("attempt", &attempt(&self.retry)).finish_non_exhaustive()
    }
}
