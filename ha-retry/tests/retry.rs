//! The retry layer on paused virtual time.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ha_core::classify::ErrorsAreFailures;
use ha_core::{
    AttemptContext, AttemptTimedOut, BudgetExhausted, DeadlineExceeded, EndpointId, Event, Events, HasAttemptContext,
    Instant, RetriesExhausted, WithAttempt,
};
use ha_retry::config::{BackoffConfig, BudgetConfig, Jitter, RetryConfig};
use ha_retry::{RetryBudget, RetryLayer};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

fn config() -> RetryConfig {
    let mut c = RetryConfig::default();
    c.backoff.jitter = Jitter::None;
    c.backoff.base = Duration::from_millis(10);
    // These tests time the backoff from the first retry on.
    c.backoff.immediate_first = false;
    c
}

type Script = Arc<dyn Fn(u32) -> (Duration, Result<u32, &'static str>) + Send + Sync>;

/// A service whose n-th call (from 0) takes and returns what `script` says,
/// recording when each call started.
fn scripted(
    script: impl Fn(u32) -> (Duration, Result<u32, &'static str>) + Send + Sync + 'static,
) -> (impl Service<u32, Response = u32, Error = BoxError, Future = impl Send> + Clone, Arc<Mutex<Vec<Instant>>>) {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let log = starts.clone();
    let n = Arc::new(AtomicU32::new(0));
    let script: Script = Arc::new(script);
    let svc = service_fn(move |_req: u32| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        log.lock().unwrap().push(Instant::now());
        let (took, result) = script(i);
        async move {
            tokio::time::sleep(took).await;
            result.map_err(BoxError::from)
        }
    });
    (svc, starts)
}

#[tokio::test(start_paused = true)]
async fn attempts_are_counted_and_the_last_error_returned() {
    let (svc, starts) = scripted(|i| (Duration::ZERO, if i < 10 { Err("down") } else { Ok(i) }));
    let layer = RetryLayer::new(config()).unwrap();
    let t0 = Instant::now();
    let err = layer.layer(svc).oneshot(1).await.unwrap_err();
    let gave_up = err.downcast::<RetriesExhausted>().expect("marked as retried here");
    assert_eq!(gave_up.attempts(), 3);
    assert_eq!(gave_up.into_last_error().to_string(), "down");
    let starts = starts.lock().unwrap();
    // Three attempts, 10 ms then 20 ms apart.
    assert_eq!(*starts, vec![t0, t0 + Duration::from_millis(10), t0 + Duration::from_millis(30)]);
    assert_eq!(layer.stats().retries, 2);
}

#[tokio::test(start_paused = true)]
async fn by_default_the_first_retry_is_sent_at_once_and_the_second_after_the_backoff() {
    // The default config: the first retry goes at once (a balancer sends it
    // to an endpoint not tried yet), the next one waits up to 25 ms.
    let (svc, starts) = scripted(|i| (Duration::ZERO, if i < 10 { Err("down") } else { Ok(i) }));
    let layer = RetryLayer::new(RetryConfig::default()).unwrap();
    let t0 = Instant::now();
    assert!(layer.layer(svc).oneshot(1).await.is_err());
    let starts = starts.lock().unwrap();
    assert_eq!(starts.len(), 3);
    assert_eq!(starts[1], t0);
    assert!(starts[2] <= t0 + Duration::from_millis(25), "{:?}", starts[2] - t0);
}

#[tokio::test(start_paused = true)]
async fn a_first_attempt_that_never_reached_a_server_is_retried_after_the_backoff() {
    // A refused connection: the balancer needs a moment to see a zone go.
    let config = RetryConfig {
        backoff: BackoffConfig { jitter: Jitter::None, ..BackoffConfig::default() },
        ..RetryConfig::default()
    };
    let refused = || -> BoxError { ha_core::NotSent::new("connection refused".into()).into() };
    let n = Arc::new(AtomicU32::new(0));
    let starts = Arc::new(Mutex::new(Vec::new()));
    let (count, log) = (n.clone(), starts.clone());
    let svc = service_fn(move |_req: u32| {
        log.lock().unwrap().push(Instant::now());
        let i = count.fetch_add(1, Ordering::SeqCst);
        async move {
            if i == 0 {
                Err(refused())
            } else {
                Ok(i)
            }
        }
    });
    let t0 = Instant::now();
    assert_eq!(RetryLayer::new(config).unwrap().layer(svc).oneshot(1).await.unwrap(), 1);
    assert_eq!(starts.lock().unwrap()[1] - t0, Duration::from_millis(25), "the backoff's base, not at once");
}

#[tokio::test(start_paused = true)]
async fn success_after_failures() {
    let (svc, starts) = scripted(|i| (Duration::from_millis(5), if i < 2 { Err("busy") } else { Ok(i) }));
    let layer = RetryLayer::new(RetryConfig { max_attempts: 5, ..config() }).unwrap();
    assert_eq!(layer.layer(svc).oneshot(1).await.unwrap(), 2);
    assert_eq!(starts.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn non_retryable_outcomes_are_not_retried() {
    let (svc, starts) = scripted(|_| (Duration::ZERO, Err("conflict")));
    let layer = RetryLayer::builder(config()).classifier(ErrorsAreFailures::non_retryable()).build().unwrap();
    assert!(layer.layer(svc).oneshot(1).await.is_err());
    assert_eq!(starts.lock().unwrap().len(), 1);
    assert_eq!(layer.stats().retries, 0);
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_cuts_an_attempt_and_retries_it() {
    let (svc, starts) = scripted(|i| (if i == 0 { Duration::from_secs(60) } else { Duration::from_millis(5) }, Ok(i)));
    let cfg = RetryConfig { per_try_timeout: Some(Duration::from_millis(100)), ..config() };
    let layer = RetryLayer::new(cfg).unwrap();
    let t0 = Instant::now();
    assert_eq!(layer.layer(svc).oneshot(1).await.unwrap(), 1);
    // Cut at 100 ms, 10 ms of backoff, 5 ms for the second attempt.
    assert_eq!(Instant::now() - t0, Duration::from_millis(115));
    assert_eq!(starts.lock().unwrap()[1] - t0, Duration::from_millis(110));
    assert_eq!(layer.stats().attempt_timeouts, 1);

    // Every attempt too slow: the last timeout is the error.
    let (svc, _) = scripted(|i| (Duration::from_secs(60), Ok(i)));
    let err = layer.layer(svc).oneshot(1).await.unwrap_err();
    let last = err.downcast::<RetriesExhausted>().unwrap().into_last_error();
    assert_eq!(last.downcast_ref::<AttemptTimedOut>().unwrap().timeout(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn the_first_attempt_is_timed_from_when_it_is_first_pending() {
    let (svc, starts) = scripted(|i| (Duration::from_millis(80), Ok(i)));
    let cfg = RetryConfig { per_try_timeout: Some(Duration::from_millis(100)), ..config() };
    let layer = RetryLayer::new(cfg).unwrap();
    let mut svc = layer.layer(svc);
    let fut = svc.ready().await.unwrap().call(1);
    // Not polled for 50 ms: 80 ms of work from the first poll still fits in 100 ms.
    tokio::time::advance(Duration::from_millis(50)).await;
    assert_eq!(fut.await.unwrap(), 0);
    assert_eq!(starts.lock().unwrap().len(), 1);
    assert_eq!(layer.stats().attempt_timeouts, 0);
}

#[test]
fn an_answer_ready_at_once_needs_no_timer_and_no_runtime() {
    // Outside any runtime: creating the per-try timer would panic.
    let cfg = RetryConfig { per_try_timeout: Some(Duration::from_millis(100)), ..config() };
    let mut svc = RetryLayer::new(cfg).unwrap().layer(service_fn(|i: u32| std::future::ready(Ok::<_, BoxError>(i))));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let fut = std::pin::pin!(svc.call(7));
    assert!(matches!(std::future::Future::poll(fut, &mut cx), std::task::Poll::Ready(Ok(7))));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cancels_the_attempt_in_flight() {
    let (svc, starts) = scripted(|i| (if i == 0 { Duration::ZERO } else { Duration::from_secs(60) }, Err("down")));
    let cfg = RetryConfig { deadline: Some(Duration::from_millis(250)), max_attempts: 10, ..config() };
    let layer = RetryLayer::new(cfg).unwrap();
    let t0 = Instant::now();
    let err = layer.layer(svc).oneshot(1).await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(Instant::now() - t0, Duration::from_millis(250));
    assert_eq!(starts.lock().unwrap().len(), 2);
    assert_eq!(layer.stats().deadlines_exceeded, 1);
}

#[tokio::test(start_paused = true)]
async fn no_backoff_crosses_the_deadline() {
    let (svc, starts) = scripted(|_| (Duration::from_millis(20), Err("down")));
    let mut cfg = RetryConfig { deadline: Some(Duration::from_millis(100)), max_attempts: 10, ..config() };
    cfg.backoff.base = Duration::from_millis(30);
    let layer = RetryLayer::new(cfg).unwrap();
    let t0 = Instant::now();
    let err = layer.layer(svc).oneshot(1).await.unwrap_err();
    // Attempt at 0 (ends 20), backoff 30 -> attempt at 50 (ends 70); a 60 ms backoff would end past 100.
    let gave_up = err.downcast::<RetriesExhausted>().expect("marked as retried here");
    assert_eq!((gave_up.attempts(), gave_up.into_last_error().to_string()), (2, "down".to_string()));
    assert_eq!(Instant::now() - t0, Duration::from_millis(70));
    assert_eq!(starts.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_carried_by_the_request_is_honoured() {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let log = starts.clone();
    let svc = service_fn(move |req: WithAttempt<u32>| {
        log.lock().unwrap().push(req.attempt_context().unwrap().attempt());
        async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, BoxError>(req.request)
        }
    });
    let layer = RetryLayer::builder(config()).track_attempts().build().unwrap();
    let t0 = Instant::now();
    let mut req = WithAttempt::new(7);
    req.set_attempt_context(AttemptContext::with_deadline(t0 + Duration::from_millis(40)));
    let err = layer.layer(svc).oneshot(req).await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>());
    assert_eq!(Instant::now() - t0, Duration::from_millis(40));

    // Already past: nothing is sent.
    let (svc, starts) = scripted(|i| (Duration::ZERO, Ok(i)));
    let layer = RetryLayer::builder(config()).track_attempts().build().unwrap();
    let svc = service_fn(move |r: WithAttempt<u32>| svc.clone().oneshot(r.request));
    let mut req = WithAttempt::new(7);
    req.set_attempt_context(AttemptContext::with_deadline(Instant::now()));
    assert!(layer.layer(svc).oneshot(req).await.unwrap_err().is::<DeadlineExceeded>());
    assert!(starts.lock().unwrap().is_empty());
}

/// When each attempt of a request that always fails with `error()` starts,
/// from the first, as a balancer below reports `untried(attempt)` endpoints
/// left.
async fn attempt_starts(untried: fn(u32) -> u32, error: fn() -> BoxError) -> Vec<Duration> {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let log = starts.clone();
    let svc = service_fn(move |req: WithAttempt<u32>| {
        let ctx = req.attempt_context().cloned().unwrap();
        ctx.set_untried(untried(ctx.attempt()));
        log.lock().unwrap().push(Instant::now());
        async move { Err::<u32, BoxError>(error()) }
    });
    let config = RetryConfig {
        max_attempts: 4,
        backoff: BackoffConfig { jitter: Jitter::None, ..BackoffConfig::default() },
        ..RetryConfig::default()
    };
    let layer = RetryLayer::builder(config).track_attempts().build().unwrap();
    let t0 = Instant::now();
    assert!(layer.layer(svc).oneshot(WithAttempt::new(5)).await.is_err());
    let starts = starts.lock().unwrap();
    starts.iter().map(|&t| t - t0).collect()
}

#[tokio::test(start_paused = true)]
async fn retries_go_at_once_while_the_balancer_has_an_endpoint_the_request_has_not_tried() {
    let ms = Duration::from_millis;
    // Three endpoints: the two retries to the others go at once; going back
    // to one already tried waits the backoff's base (25 ms).
    let overloaded = || BoxError::from("overloaded");
    assert_eq!(attempt_starts(|a| 3u32.saturating_sub(a), overloaded).await, vec![ms(0), ms(0), ms(0), ms(25)]);
    // One endpoint: the first retry at once (`immediate_first`), then the backoff.
    assert_eq!(attempt_starts(|_| 0, overloaded).await, vec![ms(0), ms(0), ms(25), ms(75)]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_is_not_retried_while_the_balancer_finds_its_endpoints_queueing() {
    // A balancer below marks each attempt's context as its endpoints queue
    // (`queueing(attempt)`); every attempt fails with `error()`. How many
    // attempts were sent, and the layer's stats.
    async fn sent(queueing: fn(u32) -> bool, error: fn() -> BoxError) -> (usize, ha_retry::RetryStats) {
        let calls = Arc::new(AtomicU32::new(0));
        let n = calls.clone();
        let svc = service_fn(move |req: WithAttempt<u32>| {
            let ctx = req.attempt_context().cloned().unwrap();
            ctx.set_queueing(queueing(ctx.attempt()));
            n.fetch_add(1, Ordering::SeqCst);
            async move { Err::<u32, BoxError>(error()) }
        });
        let layer = RetryLayer::builder(RetryConfig { max_attempts: 3, ..config() }).track_attempts().build().unwrap();
        assert!(layer.layer(svc).oneshot(WithAttempt::new(5)).await.is_err());
        (calls.load(Ordering::SeqCst) as usize, layer.stats())
    }
    let failed = || BoxError::from("503");
    let refused = || -> BoxError { ha_core::NotSent::new("connection refused".into()).into() };
    // A fleet that keeps up: every attempt is retried.
    let (n, stats) = sent(|_| false, failed).await;
    assert_eq!((n, stats.retries, stats.withheld_queueing), (3, 2, 0));
    // Past its capacity: a retry would only lengthen the queues.
    let (n, stats) = sent(|_| true, failed).await;
    assert_eq!((n, stats.retries, stats.withheld_queueing), (1, 0, 1));
    // Queueing from the second attempt on: the first failure is retried.
    let (n, stats) = sent(|a| a > 1, failed).await;
    assert_eq!((n, stats.retries, stats.withheld_queueing), (2, 1, 1));
    // An attempt never sent added no load: it is requeued however the fleet
    // queues (not counted: up to `max_attempts` more).
    let (n, stats) = sent(|_| true, refused).await;
    assert_eq!((n, stats.retries, stats.withheld_queueing), (6, 5, 0));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_a_lost_connection_waits_the_backoff_though_endpoints_are_untried() {
    let ms = Duration::from_millis;
    // Reset by the peer: its host may be down with its neighbours (a zone
    // lost), their pooled connections dead too. Each retry waits the
    // backoff (25, 50, 100 ms), and each counts as an attempt.
    let reset = || BoxError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    assert_eq!(attempt_starts(|a| 3u32.saturating_sub(a), reset).await, vec![ms(0), ms(25), ms(75), ms(175)]);
}

#[tokio::test(start_paused = true)]
async fn each_retry_is_the_next_attempt_and_sees_the_endpoints_tried() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    // Plays the balancer: records the endpoint it "picks" (one not tried yet).
    let svc = service_fn(move |req: WithAttempt<u32>| {
        let ctx = req.attempt_context().cloned().unwrap();
        let pick = (1..).map(EndpointId::from_raw).find(|e| !ctx.was_tried(*e)).unwrap();
        ctx.record_tried(pick);
        log.lock().unwrap().push((ctx.attempt(), pick.get()));
        async move {
            if ctx.attempt() < 3 {
                Err::<u32, BoxError>("down".into())
            } else {
                Ok(req.request)
            }
        }
    });
    let layer = RetryLayer::builder(config()).track_attempts().build().unwrap();
    assert_eq!(layer.layer(svc).oneshot(WithAttempt::new(5)).await.unwrap(), 5);
    assert_eq!(*seen.lock().unwrap(), vec![(1, 1), (2, 2), (3, 3)]);
}

#[tokio::test(start_paused = true)]
async fn the_budget_bounds_retries_and_says_so() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let events_handle = Events::new().with_observer(move |e: &Event| sink.lock().unwrap().push(e.clone()));
    // One retry per second in reserve over a 1 s window, no ratio.
    let budget_cfg = BudgetConfig { ratio: 0.0, min_per_second: 1, ttl: Duration::from_secs(1), buckets: 10 };
    let budget = RetryBudget::builder(budget_cfg).name("api").events(events_handle.clone()).build().unwrap();
    let (svc, starts) = scripted(|_| (Duration::ZERO, Err("down")));
    let layer = RetryLayer::builder(RetryConfig { max_attempts: 5, ..config() })
        .budget(budget.clone())
        .events(events_handle)
        .build()
        .unwrap();
    let err = layer.layer(svc.clone()).oneshot(1).await.unwrap_err();
    let exhausted = err.downcast_ref::<BudgetExhausted>().expect("the budget stopped the retries");
    assert_eq!(std::error::Error::source(exhausted).unwrap().to_string(), "down");
    assert_eq!(starts.lock().unwrap().len(), 2);
    assert_eq!(layer.stats().budget_refused, 1);
    {
        let events = events.lock().unwrap();
        assert_eq!(events[0], Event::RetryScheduled { attempt: 2, backoff: Duration::from_millis(10) });
        assert_eq!(events[1], Event::BudgetExhausted { budget: "api".into() });
    }
    // The window slides on: the reserve is back.
    tokio::time::advance(Duration::from_secs(1)).await;
    starts.lock().unwrap().clear();
    let _ = layer.layer(svc).oneshot(1).await;
    assert_eq!(starts.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_budget_ratio_holds_under_a_full_outage() {
    // 20% of requests, no floor: 160 failing requests earn 32 retries. (A thread
    // deposits its requests in batches of 32, so a multiple of 32 is all credited.)
    let budget_cfg = BudgetConfig { min_per_second: 0, ..BudgetConfig::default() };
    let (svc, starts) = scripted(|_| (Duration::ZERO, Err("down")));
    let layer = RetryLayer::new(RetryConfig { budget: budget_cfg, max_attempts: 10, ..config() }).unwrap();
    let mut svc = layer.layer(svc);
    for _ in 0..160 {
        let _ = svc.ready().await.unwrap().call(1).await;
    }
    assert_eq!(starts.lock().unwrap().len(), 192);
    assert_eq!(layer.stats().retries, 32);
}

#[tokio::test(start_paused = true)]
async fn clones_made_per_request_deposit_together_in_batches_of_32() {
    // A clone per request, as `stack.clone().oneshot(req)`: the thread
    // counts their requests in one tally, and deposits 32 at once.
    let budget_cfg = BudgetConfig { ratio: 1.0, min_per_second: 0, ..BudgetConfig::default() };
    let (svc, _) = scripted(|i| (Duration::ZERO, Ok(i)));
    let layer = RetryLayer::new(RetryConfig { budget: budget_cfg, ..config() }).unwrap();
    let svc = layer.layer(svc);
    for _ in 0..31 {
        svc.clone().oneshot(1).await.unwrap();
    }
    assert_eq!(layer.budget().available(Instant::now()), 0.0);
    svc.clone().oneshot(1).await.unwrap();
    assert_eq!(layer.budget().available(Instant::now()), 32.0);
}

#[cfg(feature = "http")]
mod http {
    use super::*;
    use bytes::Bytes;
    use ha_core::classify::HttpClassifier;
    use ha_retry::body::{HttpReplay, ReplayBody};
    use http_body::{Body, Frame};
    use http_body_util::BodyExt;
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A body of separate chunks, like a request streamed from a client.
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    fn chunks(parts: &[&'static str]) -> Chunks {
        Chunks(parts.iter().map(|p| Bytes::from_static(p.as_bytes())).collect())
    }

    type Req = ::http::Request<ReplayBody<Chunks>>;

    /// Answers 503 to attempts before `ok_from` (after reading the whole body,
    /// or only its first chunk on attempt 1 unless `read_all`) and logs what
    /// each attempt read.
    #[allow(clippy::type_complexity)]
    fn server(
        ok_from: u32,
        read_all: bool,
        retry_after: Option<&'static str>,
    ) -> (impl Service<Req, Response = ::http::Response<()>, Error = BoxError> + Clone, Arc<Mutex<Vec<(u32, Vec<u8>)>>>)
    {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let svc = service_fn(move |req: Req| {
            let sink = sink.clone();
            async move {
                let attempt = req.attempt_context().unwrap().attempt();
                let mut body = req.into_body();
                let mut got = Vec::new();
                while let Some(frame) = body.frame().await {
                    got.extend_from_slice(&frame?.into_data().unwrap());
                    if !read_all && attempt == 1 {
                        break;
                    }
                }
                sink.lock().unwrap().push((attempt, got));
                let mut res = ::http::Response::builder().status(if attempt >= ok_from { 200 } else { 503 });
                if let Some(after) = retry_after {
                    res = res.header("retry-after", after);
                }
                Ok::<_, BoxError>(res.body(()).unwrap())
            }
        });
        (svc, log)
    }

    fn put(body: Chunks) -> ::http::Request<Chunks> {
        ::http::Request::put("http://svc/doc").body(body).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_below_the_cap_is_replayed() {
        let (svc, log) = server(2, true, None);
        let layer = RetryLayer::http(config()).unwrap();
        let res = layer.layer(svc).oneshot(put(chunks(&["hello ", "wor", "ld"]))).await.unwrap();
        assert_eq!(res.status(), 200);
        let log = log.lock().unwrap();
        assert_eq!(*log, vec![(1, b"hello world".to_vec()), (2, b"hello world".to_vec())]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_read_part_way_is_replayed_then_continued() {
        // The server answers 503 after reading only the first chunk.
        let (svc, log) = server(2, false, None);
        let layer = RetryLayer::http(config()).unwrap();
        let res = layer.layer(svc).oneshot(put(chunks(&["ab", "cd"]))).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(*log.lock().unwrap(), vec![(1, b"ab".to_vec()), (2, b"abcd".to_vec())]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_above_the_cap_is_sent_once() {
        let (svc, log) = server(2, true, None);
        let layer = RetryLayer::builder(config()).http().replay(HttpReplay::new(8)).build().unwrap();
        let res = layer.layer(svc).oneshot(put(chunks(&["0123", "4567", "89"]))).await.unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(*log.lock().unwrap(), vec![(1, b"0123456789".to_vec())]);
        assert_eq!(layer.stats().retries, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn non_idempotent_requests_are_not_retried() {
        let (svc, log) = server(2, true, None);
        let layer = RetryLayer::http(config()).unwrap();
        let post = ::http::Request::post("http://svc/orders").body(chunks(&["x"])).unwrap();
        assert_eq!(layer.layer(svc).oneshot(post).await.unwrap().status(), 503);
        assert_eq!(log.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_and_capped() {
        let (svc, _) = server(2, true, Some("2"));
        let layer = RetryLayer::http(config()).unwrap();
        let t0 = Instant::now();
        assert_eq!(layer.layer(svc).oneshot(put(chunks(&["a"]))).await.unwrap().status(), 200);
        assert_eq!(Instant::now() - t0, Duration::from_secs(2));

        let (svc, _) = server(2, true, Some("3600"));
        let layer = RetryLayer::http(RetryConfig { max_retry_after: Duration::from_millis(500), ..config() }).unwrap();
        let t0 = Instant::now();
        assert_eq!(layer.layer(svc).oneshot(put(chunks(&["a"]))).await.unwrap().status(), 200);
        assert_eq!(Instant::now() - t0, Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_delays_only_a_retry_that_goes_back_to_a_server_tried() {
        // The balancer below says another endpoint is untried: the retry goes
        // there at once, whatever the 503's Retry-After said of its own server.
        let (inner, log) = server(2, true, Some("2"));
        let svc = service_fn(move |req: Req| {
            req.attempt_context().unwrap().set_untried(1);
            inner.clone().oneshot(req)
        });
        let layer = RetryLayer::http(config()).unwrap();
        let t0 = Instant::now();
        assert_eq!(layer.layer(svc.clone()).oneshot(put(chunks(&["a"]))).await.unwrap().status(), 200);
        assert_eq!(Instant::now() - t0, Duration::ZERO);
        assert_eq!(log.lock().unwrap().len(), 2);

        // Scoped to the request (gRFC A6's pushback), it holds the retry wherever it goes.
        let scoped = RetryConfig { retry_after_scope: ha_retry::RetryAfterScope::Request, ..config() };
        let layer = RetryLayer::http(scoped).unwrap();
        let t0 = Instant::now();
        assert_eq!(layer.layer(svc).oneshot(put(chunks(&["a"]))).await.unwrap().status(), 200);
        assert_eq!(Instant::now() - t0, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn classifier_sees_http_statuses() {
        // A 404 is the caller's mistake: a success as far as retries go.
        let svc = service_fn(|_req: Req| async {
            Ok::<_, BoxError>(::http::Response::builder().status(404).body(()).unwrap())
        });
        let layer = RetryLayer::builder(config()).classifier(HttpClassifier::default()).http().build().unwrap();
        assert_eq!(layer.layer(svc).oneshot(put(chunks(&[]))).await.unwrap().status(), 404);
        assert_eq!(layer.stats().retries, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn requests_with_their_own_attempt_field_are_relabelled() {
    #[derive(Clone, Copy)]
    struct Query {
        attempt: u32,
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let svc = service_fn(move |q: Query| {
        log.lock().unwrap().push(q.attempt);
        async move {
            if q.attempt < 2 {
                Err::<u32, BoxError>("down".into())
            } else {
                Ok(q.attempt)
            }
        }
    });
    let relabel = ha_retry::replay::Relabel::new(|q: &mut Query| q.attempt += 1);
    let layer = RetryLayer::builder(config()).replay(relabel).build().unwrap();
    assert_eq!(layer.layer(svc).oneshot(Query { attempt: 0 }).await.unwrap(), 2);
    assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_downstream_budget_exhaustion_is_not_retried_again() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let svc = service_fn(move |_: u32| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Err::<u32, BoxError>(BudgetExhausted::new(Some("rejected".into())).into()) }
    });
    let layer = RetryLayer::new(config()).unwrap();
    let err = layer.layer(svc).oneshot(1).await.unwrap_err();
    assert!(err.is::<BudgetExhausted>());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn only_the_layer_above_the_failure_retries() {
    // Two retry layers of three attempts over a failing service: the lower
    // one retries, the upper one sees its `RetriesExhausted` and does not.
    let (svc, starts) = scripted(|_| (Duration::ZERO, Err("down")));
    let lower = RetryLayer::new(config()).unwrap();
    let upper = RetryLayer::new(config()).unwrap();
    let err = upper.layer(lower.layer(svc)).oneshot(1).await.unwrap_err();
    assert_eq!(starts.lock().unwrap().len(), 3, "3 attempts, not 3 x 3");
    assert_eq!(err.downcast_ref::<RetriesExhausted>().unwrap().attempts(), 3);
    assert_eq!((lower.stats().retries, upper.stats().retries), (2, 0));

    // A single failed attempt below (nothing retried there) is retried above.
    let (svc, starts) = scripted(|_| (Duration::ZERO, Err("down")));
    let single = RetryLayer::new(RetryConfig { max_attempts: 1, ..config() }).unwrap();
    let err = upper.layer(single.layer(svc)).oneshot(1).await.unwrap_err();
    assert_eq!(starts.lock().unwrap().len(), 3);
    assert_eq!(err.downcast_ref::<RetriesExhausted>().unwrap().attempts(), 3);
}
