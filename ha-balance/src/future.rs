//! The response future: waits (boundedly) for an available endpoint when
//! none was, drives the picked endpoint's own `poll_ready` and call, and
//! reports the outcome and latency to that endpoint's state.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ha_core::classify::Classify;
use ha_core::rng::FastRng;
use ha_core::sync::atomic::Ordering;
use ha_core::{AttemptTimedOut, HasAttemptContext, Instant, NoHealthyEndpoint};
use pin_project::pin_project;
use tokio::sync::futures::OwnedNotified;
use tokio::time::Sleep;
use tower::{BoxError, Service};

use crate::endpoint::EndpointState;
use crate::pick::Request;
use crate::shared::Shared;
use crate::snapshot::Cached;
use crate::table::Snapshot;
use crate::tuning::flag;

/// While waiting for an endpoint, look again at least this often: an open
/// breaker closing is not announced.
const RECHECK: Duration = Duration::from_millis(50);

/// A failure costs at most this many times the larger of its time and the
/// latency prior (see `InFlightRequest::failure_cost`).
const FAILURE_COST_CAP: f64 = 16.0;

/// One request's claim on its endpoint: counts it pending until dropped,
/// whether the request completes, fails or is cancelled.
pub(crate) struct InFlightRequest<K, S> {
    core: Arc<Shared<K, S>>,
    slot: Arc<EndpointState<S>>,
    /// On the balancer's clock, as the endpoint's latency estimates are.
    start_ns: u64,
    /// The request went to the endpoint and no result came back yet: if the
    /// flight ends like this (the caller gave up, a timeout), the time it
    /// took still counts towards the endpoint's latency, as in tower.
    sent: bool,
    /// The request probes an ejected endpoint: its outcome decides the
    /// readmission. How long it may take before it is given up on.
    probe: Option<Duration>,
    /// The settings' `flag`s when the flight began: a reconfiguration in
    /// between must not make the end undo what the start did not do.
    flags: u8,
}

impl<K, S> InFlightRequest<K, S> {
    pub(crate) fn new(
        core: Arc<Shared<K, S>>,
        slot: Arc<EndpointState<S>>,
        start_ns: u64,
        probe: Option<Duration>,
        retried: bool,
    ) -> Self {
        let flags = core.hot().flags() | if retried { flag::RETRIED } else { 0 };
        if slot.pending.fetch_add(1, Ordering::Relaxed) == 0 {
            slot.busy_since_ns.store(start_ns, Ordering::Relaxed);
        }
        slot.counters.requests.fetch_add(1, Ordering::Relaxed);
        core.in_flight().begin(slot.tier, flags & flag::PER_TIER != 0);
        InFlightRequest { core, slot, start_ns, sent: false, probe, flags }
    }

    /// Ends the request with `outcome`; `timed_out`: its error says it ran
    /// out of time.
    fn finish(mut self, outcome: ha_core::Outcome, timed_out: bool) {
        self.sent = false;
        let latency = self.flags & flag::LATENCY != 0;
        let failed = outcome.counts() && outcome.is_failure();
        if failed {
            // An answer, if a failing one (see `EndpointState::unanswered`).
            self.slot.unanswered.store(false, Ordering::Relaxed);
            self.slot.outlier.failed_given_up(timed_out);
        }
        // The clock is read for the latency (PeakEWMA), and otherwise only
        // for a failure the picker prices.
        let now = (latency || (failed && self.flags & flag::PRICES_FAILURES != 0)).then(Instant::now);
        // Slow failures: given up on (timed out) or answers.
        let slow_failure = |outlier: &crate::outlier::OutlierState| {
            if timed_out {
                outlier.failed_slowly();
            } else {
                outlier.answered_slowly();
            }
        };
        if failed && now.is_none() {
            // Untimed: not known to be fast.
            slow_failure(&self.slot.outlier);
        }
        if let Some(now) = now {
            if outcome.counts() {
                let now_ns = self.core.clock().ns(now);
                let mut rtt = Duration::from_nanos(now_ns.saturating_sub(self.start_ns));
                if failed {
                    let estimate = self.slot.ewma.estimate_nanos_at(now_ns);
                    if 2.0 * rtt.as_secs_f64() * 1e9 >= estimate {
                        slow_failure(&self.slot.outlier);
                    }
                    self.slot.failure_cost.observe_at(now_ns, self.failure_cost(now_ns, rtt));
                    // Nor does the latency estimate take a fast failure as
                    // evidence of speed: no faster than it was.
                    rtt = rtt.max(Duration::from_nanos(estimate as u64));
                } else if self.slot.failure_cost.estimate_nanos_at(now_ns) > 0.0 {
                    self.slot.failure_cost.reset(now, Duration::ZERO);
                }
                if latency && !self.slot.sent_before_return(self.start_ns) {
                    self.slot.ewma.observe_at(now_ns, rtt);
                    // Its own answer: the estimate is no longer one to borrow.
                    if !failed && self.slot.fresh.load(Ordering::Relaxed) {
                        self.slot.fresh.store(false, Ordering::Relaxed);
                    }
                }
            }
        }
        self.core.on_outcome(&self.slot, outcome, now);
        if self.probe.is_some() && outcome.counts() {
            self.core.on_probe_outcome(&self.slot, !outcome.is_failure(), now.unwrap_or_else(Instant::now));
        }
    }

    /// What a failure after `elapsed` costs: an error that comes back at
    /// once is no evidence that the endpoint serves fast, and priced at its
    /// time it would make a failing endpoint the cheapest one (the black
    /// hole of latency-based balancing). So it costs `failure_penalty` times
    /// the largest of its time, the latency estimate, the current failure
    /// cost and the prior: failures in a row compound, up to 16 times the
    /// larger of its time and the prior. The picker weighs the larger of
    /// this cost (fading over `FAILURE_DECAY`) and the latency.
    ///
    /// The first failure of a run that a retry will absorb costs its caller
    /// one more attempt, about one latency, not the request: it costs the
    /// larger of its time and the latency estimate, so that a busy endpoint
    /// failing a share of its requests keeps the load its freed workers
    /// take, rather than the others queueing for it. Its run compounds from
    /// the next failure on, so an endpoint failing nearly everything is
    /// priced out one failure later.
    fn failure_cost(&self, now_ns: u64, elapsed: Duration) -> Duration {
        let (penalty, prior_ns) = self.core.hot().failure_pricing();
        let elapsed_ns = elapsed.as_secs_f64() * 1e9;
        let priced = self.slot.failure_cost.estimate_nanos_at(now_ns);
        let estimate = self.slot.ewma.estimate_nanos_at(now_ns);
        let retried = self.flags & flag::RETRIED != 0 && !self.core.retries_refused();
        let cost = if priced <= 0.0 && retried {
            // At least a nanosecond: the next failure must see a run.
            elapsed_ns.max(estimate).max(1.0)
        } else {
            let base = elapsed_ns.max(estimate).max(priced).max(prior_ns);
            (base * penalty).min(FAILURE_COST_CAP * elapsed_ns.max(prior_ns)).max(elapsed_ns)
        };
        Duration::from_nanos(cost as u64)
    }
}

impl<K, S> Drop for InFlightRequest<K, S> {
    fn drop(&mut self) {
        if self.sent {
            // Given up on after it was sent.
            let now = (self.flags & flag::LATENCY != 0).then(Instant::now);
            if let Some(now) = now {
                if !self.slot.sent_before_return(self.start_ns) {
                    let now_ns = self.core.clock().ns(now);
                    self.slot.ewma.observe_at(now_ns, Duration::from_nanos(now_ns.saturating_sub(self.start_ns)));
                }
            }
            if self.flags & flag::CANCELLED_FAILS != 0 {
                self.slot.unanswered.store(true, Ordering::Relaxed);
                self.slot.outlier.failed_slowly();
                self.slot.outlier.failed_given_up(true);
                self.core.on_outcome(&self.slot, ha_core::Outcome::Failure, now);
            }
            if self.probe.is_some() {
                // A probe given up on did not show the endpoint is back.
                self.core.on_probe_outcome(&self.slot, false, now.unwrap_or_else(Instant::now));
            }
        }
        self.slot.pending.fetch_sub(1, Ordering::Relaxed);
        self.core.in_flight().end(self.slot.tier, self.flags & flag::PER_TIER != 0);
    }
}

/// The endpoint picked, the time of the pick and, for a probe, how long it
/// may take.
type Picked<S> = (Arc<EndpointState<S>>, Instant, Option<Duration>);

/// A request waiting for an endpoint to become available.
pub(crate) struct Wait<K, S, Req> {
    pub(crate) core: Arc<Shared<K, S>>,
    pub(crate) cached: Cached<Snapshot<S>>,
    pub(crate) req: Option<Req>,
    pub(crate) hash: Option<u64>,
    pub(crate) rng: FastRng,
    pub(crate) deadline: Instant,
    pub(crate) sleep: Pin<Box<Sleep>>,
    pub(crate) notified: Pin<Box<OwnedNotified>>,
}

impl<K, S, Req: HasAttemptContext> Wait<K, S, Req> {
    pub(crate) fn new(
        core: Arc<Shared<K, S>>,
        cached: Cached<Snapshot<S>>,
        req: Req,
        hash: Option<u64>,
        seed: u64,
        now: Instant,
    ) -> Self {
        let deadline = now + core.table().tuning().cfg.no_healthy_timeout;
        Wait {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            notified: Box::pin(core.changed()),
            core,
            cached,
            req: Some(req),
            hash,
            rng: FastRng::new(seed),
            deadline,
        }
    }

    fn poll_pick(&mut self, cx: &mut Context<'_>) -> Poll<Result<Picked<S>, NoHealthyEndpoint>> {
        loop {
            // Registered before looking, so a change between the look and
            // the poll below still wakes us.
            self.notified.as_mut().enable();
            let now = Instant::now();
            let now_ns = self.core.clock().ns(now);
            let snap = self.core.table().current(&mut self.cached).clone();
            let req = self.req.as_ref().expect("request present while waiting");
            let request = Request { now, now_ns, tried: req.attempt_context(), hash: self.hash };
            if let Some((slot, probe)) = self.core.pick(&snap, &request, &mut self.rng) {
                return Poll::Ready(Ok((slot.clone(), now, probe)));
            }
            if now >= self.deadline {
                return Poll::Ready(Err(NoHealthyEndpoint::new(snap.endpoints.len())));
            }
            let expiry = snap
                .endpoints
                .iter()
                .map(|s| s.health.ejected_until())
                .filter(|&until| until > now_ns)
                .min()
                .map(|until| self.core.clock().instant(until));
            let wake =
                [Some(self.deadline), expiry, Some(now + RECHECK)].into_iter().flatten().min().unwrap_or(self.deadline);
            self.sleep.as_mut().reset(wake.max(now + Duration::from_millis(1)).min(self.deadline.max(now)));
            if self.notified.as_mut().poll(cx).is_ready() {
                self.notified.set(self.core.changed());
                continue;
            }
            if self.sleep.as_mut().poll(cx).is_ready() {
                continue;
            }
            return Poll::Pending;
        }
    }
}

#[pin_project(project = StateProj)]
enum State<K, S: Service<Req>, Req> {
    Waiting(Box<Wait<K, S, Req>>),
    Ready { svc: S, req: Option<Req> },
    Calling(#[pin] S::Future),
    Done,
}

/// The future of [`Balance`](crate::Balance)'s responses.
#[pin_project]
pub struct ResponseFuture<K, S, Req, C>
where
    S: Service<Req>,
    C: Classify<Req, S::Response, S::Error>,
{
    #[pin]
    state: State<K, S, Req>,
    flight: Option<InFlightRequest<K, S>>,
    // A probe's time limit, armed when it is sent: a probe is a real
    // request, and one to an endpoint that still does not answer must not
    // cost its caller the request's deadline (it is given up and retried
    // elsewhere).
    probe_timer: Option<Pin<Box<Sleep>>>,
    classifier: C,
    info: Option<C::RequestInfo>,
    hash: Option<u64>,
}

impl<K, S, Req, C> ResponseFuture<K, S, Req, C>
where
    S: Service<Req> + Clone,
    C: Classify<Req, S::Response, S::Error>,
    Req: HasAttemptContext,
{
    /// The future of a request sent to `slot`, picked at `now_ns` (the
    /// caller recorded the endpoint in the request's attempt context).
    pub(crate) fn dispatch(
        core: Arc<Shared<K, S>>,
        slot: Arc<EndpointState<S>>,
        probe: Option<Duration>,
        req: Req,
        now_ns: u64,
        hash: Option<u64>,
        classifier: C,
    ) -> Self {
        let info = classifier.request_info(&req);
        let svc = slot.service.clone();
        let retried = req.attempt_context().is_some();
        ResponseFuture {
            state: State::Ready { svc, req: Some(req) },
            flight: Some(InFlightRequest::new(core, slot, now_ns, probe, retried)),
            probe_timer: None,
            classifier,
            info: Some(info),
            hash,
        }
    }

    pub(crate) fn wait(wait: Wait<K, S, Req>, hash: Option<u64>, classifier: C) -> Self {
        ResponseFuture {
            state: State::Waiting(Box::new(wait)),
            flight: None,
            probe_timer: None,
            classifier,
            info: None,
            hash,
        }
    }
}

impl<K, S, Req, C> Future for ResponseFuture<K, S, Req, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<Req, S::Response, S::Error>,
    Req: HasAttemptContext,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting(wait) => match wait.poll_pick(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(e.into()));
                    }
                    Poll::Ready(Ok((slot, now, probe))) => {
                        let req = wait.req.take().expect("request present while waiting");
                        let core = wait.core.clone();
                        *this.info = Some(this.classifier.request_info(&req));
                        let ctx = req.attempt_context();
                        if let Some(ctx) = ctx {
                            ctx.record_tried(slot.id);
                            ctx.set_queueing(core.queueing());
                        }
                        let svc = slot.service.clone();
                        let now_ns = core.clock().ns(now);
                        *this.flight = Some(InFlightRequest::new(core, slot, now_ns, probe, ctx.is_some()));
                        this.state.set(State::Ready { svc, req: Some(req) });
                    }
                },
                StateProj::Ready { svc, req } => match svc.poll_ready(cx) {
                    Poll::Pending => {
                        // Not sent yet, so going elsewhere cannot break the
                        // "one request, the endpoint picked" rule: do so when
                        // the endpoint's gate says it is rejecting.
                        let Some(flight) = this.flight.as_ref() else { return Poll::Pending };
                        let Some(gate) = flight.slot.health.gate() else { return Poll::Pending };
                        let now = Instant::now();
                        gate.deferred(now);
                        if gate.admits(now) {
                            return Poll::Pending;
                        }
                        let flight = this.flight.take().expect("checked above");
                        let core = flight.core.clone();
                        drop(flight);
                        let req = req.take().expect("request present until called");
                        let cached = core.table().reader();
                        let seed = core.next_seed();
                        let wait = Wait::new(core, cached, req, *this.hash, seed, now);
                        *this.info = None;
                        this.state.set(State::Waiting(Box::new(wait)));
                    }
                    Poll::Ready(Ok(())) => {
                        if let Some(flight) = this.flight.as_mut() {
                            flight.sent = true;
                            if let Some(limit) = flight.probe {
                                *this.probe_timer = Some(Box::pin(tokio::time::sleep(limit)));
                            }
                        }
                        let req = req.take().expect("request present until called");
                        // The endpoint's layers that need the time (a
                        // per-try timeout) take the attempt's start, read
                        // when it was picked, rather than the clock.
                        let fut = match this.flight.as_ref() {
                            Some(flight) => {
                                ha_core::time::lend(flight.core.clock().instant(flight.start_ns), || svc.call(req))
                            }
                            None => svc.call(req),
                        };
                        this.state.set(State::Calling(fut));
                    }
                    Poll::Ready(Err(e)) => {
                        this.state.set(State::Done);
                        return Poll::Ready(finish(this.flight, this.classifier, this.info, Err(e)));
                    }
                },
                StateProj::Calling(fut) => {
                    let Poll::Ready(result) = fut.poll(cx) else {
                        if let Some(timer) = this.probe_timer.as_mut() {
                            if timer.as_mut().poll(cx).is_ready() {
                                // Given up: the flight's drop counts the
                                // failed probe, as for any request given up.
                                this.state.set(State::Done);
                                let limit = this.flight.take().and_then(|f| f.probe).unwrap_or_default();
                                return Poll::Ready(Err(AttemptTimedOut::new(limit).into()));
                            }
                        }
                        return Poll::Pending;
                    };
                    this.state.set(State::Done);
                    return Poll::Ready(finish(this.flight, this.classifier, this.info, result));
                }
                StateProj::Done => panic!("ha_balance::ResponseFuture polled after completion"),
            }
        }
    }
}

fn finish<K, S, Req, C>(
    flight: &mut Option<InFlightRequest<K, S>>,
    classifier: &C,
    info: &mut Option<C::RequestInfo>,
    result: Result<S::Response, S::Error>,
) -> Result<S::Response, BoxError>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<Req, S::Response, S::Error>,
{
    let flight =
        flight.take().zip(info.take()).map(|(flight, info)| (flight, classifier.classify(&info, result.as_ref())));
    let result = result.map_err(Into::into);
    if let Some((flight, outcome)) = flight {
        let timed_out = result.as_ref().is_err_and(|e| ha_core::error::timed_out(&**e));
        flight.finish(outcome, timed_out);
    }
    result
}

impl<K, S, Req, C> fmt::Debug for ResponseFuture<K, S, Req, C>
where
    S: Service<Req>,
    C: Classify<Req, S::Response, S::Error>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Waiting(_) => "waiting for an endpoint",
            State::Ready { .. } => "waiting for the endpoint's readiness",
            State::Calling(_) => "calling",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture").field("state", &state).finish()
    }
}
