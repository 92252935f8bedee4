use crate::handle::Handle;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{ready, Context, Poll};

use ha_core::classify::Classify;
use ha_core::{AttemptTimedOut, BudgetExhausted, DeadlineExceeded, Event, Instant};
use pin_project::pin_project;
use tokio::time::{sleep_until, Sleep};
use tower::BoxError;
use tower_service::Service;

use super::layer::Shared;
use super::{attempt_deadline, downstream_budget_exhausted};
use crate::policy::RetryState;
use crate::replay::Replay;

/// The response future of [`Retry`](super::Retry).
#[pin_project]
pub struct ResponseFuture<S, C, P, Req>
where
    P: Replay<Req>,
    S: Service<P::Request>,
    C: Classify<P::Request, S::Response, BoxError> + 'static,
    P: 'static,
{
    #[pin]
    state: State<S::Future>,
    // Ends the attempt in flight (per-try timeout or deadline) or the backoff.
    #[pin]
    timer: Option<Sleep>,
    service: S,
    shared: Handle<Shared<C, P>>,
    kept: Option<P::Request>,
    info: Option<C::RequestInfo>,
    retry: RetryState,
    _req: PhantomData<fn(Req)>,
}

#[pin_project(project = StateProj)]
enum State<F> {
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
    C: Classify<P::Request, S::Response, BoxError> + 'static,
    P: 'static,
{
    pub(crate) fn new(
        shared: Handle<Shared<C, P>>,
        service: S,
        fut: S::Future,
        kept: Option<P::Request>,
        info: C::RequestInfo,
        retry: RetryState,
        timer: Option<Instant>,
    ) -> Self {
        ResponseFuture {
            state: State::Called { fut },
            timer: timer.map(sleep_until),
            service,
            shared,
            kept,
            info: Some(info),
            retry,
            _req: PhantomData,
        }
    }

    pub(crate) fn expired(shared: Handle<Shared<C, P>>, service: S, retry: RetryState) -> Self {
        ResponseFuture {
            state: State::Expired,
            timer: None,
            service,
            shared,
            kept: None,
            info: None,
            retry,
            _req: PhantomData,
        }
    }
}

fn arm(mut timer: Pin<&mut Option<Sleep>>, at: Option<Instant>) {
    match (at, timer.as_mut().as_pin_mut()) {
        (Some(at), Some(sleep)) => sleep.reset(at),
        (Some(at), None) => timer.set(Some(sleep_until(at))),
        (None, _) => timer.set(None),
    }
}

impl<S, C, P, Req> Future for ResponseFuture<S, C, P, Req>
where
    P: Replay<Req>,
    S: Service<P::Request>,
    S::Error: Into<BoxError>,
    C: Classify<P::Request, S::Response, BoxError> + 'static,
    P: 'static,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let shared = &**this.shared;
        loop {
            let result: Result<S::Response, BoxError> = match this.state.as_mut().project() {
                StateProj::Called { fut } => match fut.poll(cx) {
                    Poll::Ready(r) => r.map_err(Into::into),
                    Poll::Pending => {
                        let Some(mut timer) = this.timer.as_mut().as_pin_mut() else { return Poll::Pending };
                        ready!(timer.as_mut().poll(cx));
                        // Out of time: dropping the attempt's future cancels it.
                        this.state.set(State::Done);
                        if this.retry.deadline().is_some_and(|d| timer.deadline() >= d) {
                            shared.stats.deadlines.fetch_add(1, Ordering::Relaxed);
                            return Poll::Ready(Err(DeadlineExceeded::new().into()));
                        }
                        shared.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                        let per_try = shared.config.per_try_timeout.unwrap_or_default();
                        Err(AttemptTimedOut::new(per_try).into())
                    }
                },
                StateProj::Backoff => {
                    if let Some(timer) = this.timer.as_mut().as_pin_mut() {
                        ready!(timer.poll(cx));
                    }
                    // While the service is not ready, only the deadline bounds the wait.
                    arm(this.timer.as_mut(), this.retry.deadline());
                    this.state.set(State::Sending);
                    continue;
                }
                StateProj::Sending => {
                    match this.service.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(e.into()));
                        }
                        Poll::Pending => {
                            if let Some(timer) = this.timer.as_mut().as_pin_mut() {
                                ready!(timer.poll(cx));
                                this.state.set(State::Done);
                                shared.stats.deadlines.fetch_add(1, Ordering::Relaxed);
                                return Poll::Ready(Err(DeadlineExceeded::new().into()));
                            }
                            return Poll::Pending;
                        }
                    }
                    // Only a kept copy leads to Sending (see below).
                    let mut req = this.kept.take().expect("a retry is only scheduled with a kept copy");
                    shared.replay.next_attempt(&mut req);
                    if this.retry.attempt() < shared.config.max_attempts {
                        *this.kept = shared.replay.copy(&req);
                    }
                    let now = Instant::now();
                    arm(
                        this.timer.as_mut(),
                        attempt_deadline(shared.config.per_try_timeout, now, this.retry.deadline()),
                    );
                    let fut = this.service.call(req);
                    this.state.set(State::Called { fut });
                    continue;
                }
                StateProj::Expired => {
                    this.state.set(State::Done);
                    shared.stats.deadlines.fetch_add(1, Ordering::Relaxed);
                    return Poll::Ready(Err(DeadlineExceeded::new().into()));
                }
                StateProj::Done => panic!("ha_retry::Retry future polled after completion"),
            };

            // An attempt ended with `result`: retry it or hand it back.
            this.state.set(State::Done);
            let Some(info) = this.info.as_ref() else { return Poll::Ready(result) };
            let outcome = shared.classifier.classify(info, result.as_ref());
            if !outcome.is_retryable()
                || result.as_ref().is_err_and(|e| downstream_budget_exhausted(&**e))
                || !this.kept.as_ref().is_some_and(|k| shared.replay.can_replay(k, false))
            {
                return Poll::Ready(result);
            }
            let now = Instant::now();
            let delay = match this.retry.on_outcome(now, outcome) {
                Ok(delay) => delay,
                Err(_) => return Poll::Ready(result),
            };
            if !shared.budget.withdraw(now) {
                shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                return Poll::Ready(result.map_err(|e| BudgetExhausted::new(Some(e)).into()));
            }
            shared.stats.retries.fetch_add(1, Ordering::Relaxed);
            shared.events.emit(Event::RetryScheduled { attempt: this.retry.attempt(), backoff: delay });
            drop(result);
            if delay.is_zero() {
                arm(this.timer.as_mut(), this.retry.deadline());
                this.state.set(State::Sending);
            } else {
                arm(this.timer.as_mut(), Some(now + delay));
                this.state.set(State::Backoff);
            }
        }
    }
}

impl<S, C, P, Req> fmt::Debug for ResponseFuture<S, C, P, Req>
where
    P: Replay<Req>,
    S: Service<P::Request>,
    C: Classify<P::Request, S::Response, BoxError> + 'static,
    P: 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").field("attempt", &self.retry.attempt()).finish_non_exhaustive()
    }
}
