use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use ha_core::classify::Classify;
use ha_core::{Event, Instant};
use pin_project::pin_project;
use tower::BoxError;
use tower_service::Service;

use super::layer::HedgeShared;
use crate::replay::Replay;
use crate::timer::LazyTimer;
use ha_core::lease::Lease;

/// What a request takes from its service: the layer's state, its own
/// classifier and replay policy, and the service to send hedges to.
pub(crate) struct HedgeInputs<S, C, P> {
    pub(crate) core: Lease<HedgeShared>,
    pub(crate) classifier: C,
    pub(crate) replay: P,
    pub(crate) service: S,
}

/// The response future of [`Hedge`](super::Hedge).
#[pin_project]
pub struct ResponseFuture<S, C, P, Req>
where
    P: Replay<Req>,
    S: Service<P::Request>,
    C: Classify<P::Request, S::Response, BoxError>,
{
    #[pin]
    first: Option<S::Future>,
    // Boxed so a request that is never hedged allocates nothing.
    hedges: Vec<(Instant, Pin<Box<S::Future>>)>,
    // Sends the next hedge: created only when the first poll finds the
    // attempt pending (a request answered at once never touches the timer).
    #[pin]
    timer: LazyTimer,
    // The timer fired and the budget paid: waiting for the service to be ready.
    sending: bool,
    parts: HedgeInputs<S, C, P>,
    kept: Option<P::Request>,
    info: C::RequestInfo,
    start: Instant,
    delay: Duration,
    sent: u32,
    failure: Option<Result<S::Response, BoxError>>,
    _req: PhantomData<fn(Req)>,
}

impl<S, C, P, Req> ResponseFuture<S, C, P, Req>
where
    P: Replay<Req>,
    S: Service<P::Request>,
    C: Classify<P::Request, S::Response, BoxError>,
{
    pub(crate) fn new(
        parts: HedgeInputs<S, C, P>,
        fut: S::Future,
        kept: Option<P::Request>,
        info: C::RequestInfo,
        start: Instant,
        delay: Option<Duration>,
    ) -> Self {
        let timer = match (&kept, delay) {
            (Some(_), Some(d)) => LazyTimer::new(Some(start + d)),
            _ => LazyTimer::new(None),
        };
        ResponseFuture {
            first: Some(fut),
            hedges: Vec::new(),
            timer,
            sending: false,
            parts,
            kept,
            info,
            start,
            delay: delay.unwrap_or_default(),
            sent: 0,
            failure: None,
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

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let parts = &mut *this.parts;
        let core = &*parts.core;
        loop {
            if let Some(fut) = this.first.as_mut().as_pin_mut() {
                if let Poll::Ready(r) = fut.poll(cx) {
                    this.first.set(None);
                    let now = Instant::now();
                    core.latencies.record(now, now.saturating_duration_since(*this.start));
                    let r = r.map_err(Into::into);
                    if !parts.classifier.classify(this.info, r.as_ref()).is_failure() {
                        // The first attempt won: the hedges are dropped, which cancels them.
                        if *this.sent > 0 {
                            core.stats.efficacy.record(false);
                        }
                        this.hedges.clear();
                        this.timer.as_mut().arm(None);
                        return Poll::Ready(r);
                    }
                    *this.failure = Some(r);
                }
            }
            let mut i = 0;
            while i < this.hedges.len() {
                let Poll::Ready(r) = this.hedges[i].1.as_mut().poll(cx) else {
                    i += 1;
                    continue;
                };
                let (sent_at, _) = this.hedges.swap_remove(i);
                let now = Instant::now();
                core.latencies.record(now, now.saturating_duration_since(sent_at));
                let r = r.map_err(Into::into);
                if !parts.classifier.classify(this.info, r.as_ref()).is_failure() {
                    if this.first.is_some() {
                        // The first attempt was slower than this: keep that fact in the latencies.
                        core.latencies.record(now, now.saturating_duration_since(*this.start));
                        this.first.set(None);
                    }
                    core.stats.hedge_wins.fetch_add(1, Ordering::Relaxed);
                    core.stats.efficacy.record(true);
                    this.hedges.clear();
                    this.timer.as_mut().arm(None);
                    return Poll::Ready(r);
                }
                *this.failure = Some(r);
            }
            let in_flight = this.first.is_some() || !this.hedges.is_empty();
            if !in_flight {
                this.timer.as_mut().arm(None);
                // Every attempt ended, and each ended in failure: the last one is the answer.
                let last = this.failure.take().expect("an attempt ended with a failure");
                return Poll::Ready(last);
            }

            if !*this.sending {
                if this.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let now = Instant::now();
                if !this.kept.as_ref().is_some_and(|k| parts.replay.can_replay(k, true)) {
                    core.stats.not_replayable.fetch_add(1, Ordering::Relaxed);
                    this.timer.as_mut().arm(None);
                    return Poll::Pending;
                }
                if !core.hedging_pays(now) {
                    this.timer.as_mut().arm(None);
                    return Poll::Pending;
                }
                if !core.budget.withdraw(now) {
                    core.stats.refused.fetch_add(1, Ordering::Relaxed);
                    this.timer.as_mut().arm(None);
                    return Poll::Pending;
                }
                *this.sending = true;
            }
            match parts.service.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => {
                    // The service cannot take a hedge; the attempts in flight carry on.
                    *this.sending = false;
                    this.timer.as_mut().arm(None);
                    return Poll::Pending;
                }
                Poll::Ready(Ok(())) => {}
            }
            *this.sending = false;
            let Some(mut req) = this.kept.take() else { return Poll::Pending };
            parts.replay.next_hedge(&mut req);
            *this.sent += 1;
            let max = core.config.max_hedges;
            if *this.sent < max {
                *this.kept = parts.replay.copy(&req);
            }
            let now = Instant::now();
            this.hedges.push((now, Box::pin(ha_core::time::lend(now, || parts.service.call(req)))));
            core.stats.hedges.fetch_add(1, Ordering::Relaxed);
            core.events
                .emit(Event::HedgeSent { attempt: *this.sent + 1, after: now.saturating_duration_since(*this.start) });
            let next = (*this.sent < max && this.kept.is_some()).then(|| now + *this.delay);
            this.timer.as_mut().arm(next);
            // Poll the new hedge so it can wake us.
        }
    }
}

impl<S, C, P, Req> fmt::Debug for ResponseFuture<S, C, P, Req>
where
    P: Replay<Req>,
    S: Service<P::Request>,
    C: Classify<P::Request, S::Response, BoxError>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("hedges_sent", &self.sent)
            .field("in_flight", &(usize::from(self.first.is_some()) + self.hedges.len()))
            .finish_non_exhaustive()
    }
}
