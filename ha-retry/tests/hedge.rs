//! The hedge layer on paused virtual time.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ha_core::{Event, Events, HasAttemptContext, Instant, WithAttempt};
use ha_retry::config::{BudgetConfig, HedgeConfig, HedgeDelay};
use ha_retry::{HedgeLayer, RetryBudget};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

fn fixed(ms: u64) -> HedgeConfig {
    HedgeConfig { delay: HedgeDelay::Fixed(Duration::from_millis(ms)), ..HedgeConfig::default() }
}

/// Sets its flag when dropped: tells whether an attempt's future was cancelled.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct Attempt {
    started: Instant,
    dropped: Arc<AtomicBool>,
}

/// The n-th call (from 0) takes and returns what `script` says; each call's
/// start and cancellation are logged.
#[allow(clippy::type_complexity)]
fn scripted(
    script: impl Fn(u32) -> (Duration, Result<u32, &'static str>) + Send + Sync + 'static,
) -> (impl Service<u32, Response = u32, Error = BoxError, Future = impl Send> + Clone, Arc<Mutex<Vec<Attempt>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    let n = Arc::new(AtomicU32::new(0));
    let script = Arc::new(script);
    let svc = service_fn(move |_req: u32| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        let dropped = Arc::new(AtomicBool::new(false));
        sink.lock().unwrap().push(Attempt { started: Instant::now(), dropped: dropped.clone() });
        let (took, result) = script(i);
        async move {
            let _flag = DropFlag(dropped);
            tokio::time::sleep(took).await;
            result.map_err(BoxError::from)
        }
    });
    (svc, log)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn a_hedge_is_sent_after_the_delay_and_the_first_success_wins() {
    let (svc, log) = scripted(|i| if i == 0 { (ms(1000), Ok(0)) } else { (ms(20), Ok(i)) });
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let layer = HedgeLayer::builder(fixed(50))
        .events(Events::new().with_observer(move |e: &Event| sink.lock().unwrap().push(e.clone())))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let mut svc = layer.layer(svc);
    // Our own future, kept alive after it answers: losers must be gone by then.
    let fut = svc.ready().await.unwrap().call(1);
    tokio::pin!(fut);
    assert_eq!((&mut fut).await.unwrap(), 1);
    assert_eq!(Instant::now() - t0, ms(70));
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].started - t0, ms(50));
    // The slow first attempt was cancelled when the hedge won, not later.
    assert!(log[0].dropped.load(Ordering::SeqCst));
    assert_eq!(*events.lock().unwrap(), vec![Event::HedgeSent { attempt: 2, after: ms(50) }]);
    assert_eq!(layer.stats().hedges, 1);
    assert_eq!(layer.stats().hedge_wins, 1);
}

#[tokio::test(start_paused = true)]
async fn a_fast_first_attempt_sends_no_hedge() {
    let (svc, log) = scripted(|i| (ms(10), Ok(i)));
    let layer = HedgeLayer::new(fixed(50)).unwrap();
    assert_eq!(layer.layer(svc).oneshot(1).await.unwrap(), 0);
    assert_eq!(log.lock().unwrap().len(), 1);
    assert_eq!(layer.stats().hedges, 0);
}

#[tokio::test(start_paused = true)]
async fn losers_are_cancelled_when_the_first_attempt_wins() {
    let (svc, log) = scripted(|i| if i == 0 { (ms(80), Ok(0)) } else { (ms(1000), Ok(i)) });
    let layer = HedgeLayer::new(fixed(50)).unwrap();
    let mut svc = layer.layer(svc);
    // Our own future, kept alive after it answers: losers must be gone by then.
    let fut = svc.ready().await.unwrap().call(1);
    tokio::pin!(fut);
    assert_eq!((&mut fut).await.unwrap(), 0);
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 2);
    assert!(log[1].dropped.load(Ordering::SeqCst), "the hedge still runs after the first attempt won");
    assert_eq!(layer.stats().hedge_wins, 0);
}

#[tokio::test(start_paused = true)]
async fn an_early_failure_does_not_win_while_a_hedge_is_in_flight() {
    // The first attempt fails at 60 ms, after the hedge left at 50 ms; the hedge succeeds at 90 ms.
    let (svc, _) = scripted(|i| if i == 0 { (ms(60), Err("reset")) } else { (ms(40), Ok(i)) });
    let layer = HedgeLayer::new(fixed(50)).unwrap();
    let t0 = Instant::now();
    assert_eq!(layer.layer(svc).oneshot(1).await.unwrap(), 1);
    assert_eq!(Instant::now() - t0, ms(90));

    // The hedge fails first; the first attempt's later success wins.
    let (svc, _) = scripted(|i| if i == 0 { (ms(200), Ok(0)) } else { (ms(10), Err("reset")) });
    assert_eq!(layer.layer(svc).oneshot(1).await.unwrap(), 0);

    // Both fail: the last failure is the answer.
    let (svc, _) = scripted(|i| if i == 0 { (ms(200), Err("first")) } else { (ms(10), Err("hedge")) });
    assert_eq!(layer.layer(svc).oneshot(1).await.unwrap_err().to_string(), "first");
}

#[tokio::test(start_paused = true)]
async fn a_failure_before_the_delay_is_returned_at_once() {
    let (svc, log) = scripted(|_| (ms(10), Err("refused")));
    let layer = HedgeLayer::new(fixed(50)).unwrap();
    let t0 = Instant::now();
    assert!(layer.layer(svc).oneshot(1).await.is_err());
    assert_eq!(Instant::now() - t0, ms(10));
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn several_hedges_a_delay_apart() {
    let (svc, log) = scripted(|i| if i < 2 { (ms(1000), Ok(i)) } else { (ms(5), Ok(i)) });
    let layer = HedgeLayer::new(HedgeConfig { max_hedges: 3, ..fixed(30) }).unwrap();
    let t0 = Instant::now();
    let mut svc = layer.layer(svc);
    let fut = svc.ready().await.unwrap().call(1);
    tokio::pin!(fut);
    assert_eq!((&mut fut).await.unwrap(), 2);
    let log = log.lock().unwrap();
    let starts: Vec<Duration> = log.iter().map(|a| a.started - t0).collect();
    assert_eq!(starts, vec![ms(0), ms(30), ms(60)]);
    assert!(log[0].dropped.load(Ordering::SeqCst) && log[1].dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_sends_no_hedge() {
    let budget_cfg = BudgetConfig { ratio: 0.0, min_per_second: 0, ..BudgetConfig::default() };
    let budget = RetryBudget::new(budget_cfg).unwrap();
    let (svc, log) = scripted(|i| (ms(200), Ok(i)));
    let layer = HedgeLayer::builder(fixed(50)).budget(budget).build().unwrap();
    let t0 = Instant::now();
    assert_eq!(layer.layer(svc).oneshot(1).await.unwrap(), 0);
    assert_eq!(Instant::now() - t0, ms(200));
    assert_eq!(log.lock().unwrap().len(), 1);
    assert_eq!(layer.stats().budget_refused, 1);
}

#[tokio::test(start_paused = true)]
async fn the_delay_follows_the_latency_percentile_after_min_samples() {
    // Requests take 1..=100 ms; the layer hedges at their p95 once it has 100 samples.
    let n = Arc::new(AtomicU32::new(0));
    let counter = n.clone();
    let svc = service_fn(move |latency: u64| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(ms(latency)).await;
            Ok::<_, BoxError>(latency)
        }
    });
    let layer = HedgeLayer::new(HedgeConfig::default()).unwrap();
    let mut svc = layer.layer(svc);
    for latency in 1..=99 {
        svc.ready().await.unwrap().call(latency).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(layer.current_delay(Instant::now()), None, "99 samples are not enough");
    svc.ready().await.unwrap().call(100).await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    let delay = layer.current_delay(Instant::now()).unwrap();
    assert!(delay >= ms(95) && delay <= ms(98), "{delay:?}");

    let before = n.load(Ordering::SeqCst);
    let t0 = Instant::now();
    svc.ready().await.unwrap().call(500).await.unwrap();
    // The hedge, sent at p95, took 500 ms as well; the first attempt answered first.
    assert_eq!(n.load(Ordering::SeqCst) - before, 2);
    assert_eq!(Instant::now() - t0, ms(500));
    assert_eq!(layer.stats().hedges, 1);

    // Extra-load target: 5% extra load means hedging at p95.
    let load = HedgeLayer::new(HedgeConfig { delay: HedgeDelay::MaxExtraLoad(0.05), ..HedgeConfig::default() });
    assert!(load.is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_floor_bounds_an_adaptive_delay() {
    let svc = service_fn(|_: u32| async { Ok::<_, BoxError>(0u32) });
    let cfg = HedgeConfig { min_samples: 10, min_delay: ms(25), ..HedgeConfig::default() };
    let layer = HedgeLayer::new(cfg).unwrap();
    let mut svc = layer.layer(svc);
    for _ in 0..20 {
        svc.ready().await.unwrap().call(0).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(layer.current_delay(Instant::now()), Some(ms(25)));
}

#[tokio::test(start_paused = true)]
async fn a_hedge_is_the_next_attempt_of_the_request() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let svc = service_fn(move |req: WithAttempt<u32>| {
        let ctx = req.attempt_context().unwrap();
        let attempt = ctx.attempt();
        // The balancer below sends a hedge only where the request is not running.
        assert_eq!(ctx.is_hedge(), attempt > 1);
        sink.lock().unwrap().push(attempt);
        async move {
            tokio::time::sleep(if attempt == 1 { ms(500) } else { ms(5) }).await;
            Ok::<_, BoxError>(attempt)
        }
    });
    let layer = HedgeLayer::builder(fixed(50)).track_attempts().build().unwrap();
    assert_eq!(layer.layer(svc).oneshot(WithAttempt::new(1)).await.unwrap(), 2);
    assert_eq!(*seen.lock().unwrap(), vec![1, 2]);
}

#[cfg(feature = "http")]
mod http {
    use super::*;
    use bytes::Bytes;
    use ha_retry::body::ReplayBody;
    use http_body_util::{BodyExt, Full};

    type Req = ::http::Request<ReplayBody<Full<Bytes>>>;

    fn server() -> (impl Service<Req, Response = ::http::Response<()>, Error = BoxError> + Clone, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let svc = service_fn(move |req: Req| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let body = req.into_body().collect().await?.to_bytes();
                assert_eq!(body, "payload");
                tokio::time::sleep(if n == 0 { ms(500) } else { ms(5) }).await;
                Ok::<_, BoxError>(::http::Response::new(()))
            }
        });
        (svc, calls)
    }

    #[tokio::test(start_paused = true)]
    async fn idempotent_requests_with_read_bodies_are_hedged() {
        let (svc, calls) = server();
        let layer = HedgeLayer::builder(fixed(50)).http().build().unwrap();
        let t0 = Instant::now();
        let put = ::http::Request::put("http://svc/x").body(Full::new(Bytes::from_static(b"payload"))).unwrap();
        layer.layer(svc).oneshot(put).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(Instant::now() - t0, ms(55));
    }

    #[tokio::test(start_paused = true)]
    async fn non_idempotent_requests_are_not_hedged() {
        let (svc, calls) = server();
        let layer = HedgeLayer::builder(fixed(50)).http().build().unwrap();
        let post = ::http::Request::post("http://svc/x").body(Full::new(Bytes::from_static(b"payload"))).unwrap();
        layer.layer(svc).oneshot(post).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(layer.stats().not_replayable, 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_warmup_delay_hedges_before_enough_latencies_are_known() {
    let (svc, log) = scripted(|i| if i == 0 { (ms(1000), Ok(0)) } else { (ms(5), Ok(i)) });
    let layer = HedgeLayer::new(HedgeConfig { warmup_delay: Some(ms(40)), ..HedgeConfig::default() }).unwrap();
    assert_eq!(layer.current_delay(Instant::now()), Some(ms(40)));
    let t0 = Instant::now();
    assert_eq!(layer.layer(svc).oneshot(1).await.unwrap(), 1);
    assert_eq!(Instant::now() - t0, ms(45));
    assert_eq!(log.lock().unwrap().len(), 2);
    // Without one, nothing is hedged until min_samples latencies are known.
    assert_eq!(HedgeLayer::new(HedgeConfig::default()).unwrap().current_delay(Instant::now()), None);
}

/// Sends `n` requests one after the other through `svc`, each asking for
/// `latency(i)` ms (the service sleeps what the request says).
async fn send_in_turn<S>(svc: &mut S, n: u64, latency: impl Fn(u64) -> u64)
where
    S: Service<u64, Response = u64, Error = BoxError>,
{
    for i in 0..n {
        svc.ready().await.unwrap().call(latency(i)).await.unwrap();
    }
}

fn sleeper() -> impl Service<u64, Response = u64, Error = BoxError, Future = impl Send> + Clone {
    service_fn(|latency: u64| async move {
        tokio::time::sleep(ms(latency)).await;
        Ok::<_, BoxError>(latency)
    })
}

#[tokio::test(start_paused = true)]
async fn hedges_that_lose_to_the_first_attempt_pause_hedging() {
    // Every attempt takes 100 ms, hedges go at 50 ms: a hedge answers 50 ms
    // after the first attempt, which always wins. Hedging pauses once they
    // have mostly lost (one would-be hedge in eight still goes, to measure);
    // at `min_win_share` 0 every request is hedged.
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let losing = |min_win_share: f64| {
        let budget = BudgetConfig { ratio: 1.0, ..BudgetConfig::default() };
        HedgeLayer::builder(HedgeConfig { min_win_share, budget, ..fixed(50) })
            .events(Events::new().with_observer({
                let sink = sink.clone();
                move |e: &Event| sink.lock().unwrap().push(e.clone())
            }))
            .build()
            .unwrap()
    };
    let layer = losing(0.25);
    send_in_turn(&mut layer.layer(sleeper()), 200, |_| 100).await;
    let stats = layer.stats();
    assert!(stats.hedges <= 20 + 200 / 8, "{stats:?}");
    assert_eq!(stats.hedges + stats.paused, 200, "{stats:?}");
    assert_eq!(stats.hedge_wins, 0);
    let paused: Vec<Event> =
        events.lock().unwrap().iter().filter(|e| matches!(e, Event::HedgingPaused { .. })).cloned().collect();
    assert_eq!(
        paused,
        vec![Event::HedgingPaused { hedge: "hedge".into(), reason: Some(ha_core::event::HedgePause::Losing) }],
        "the pause is reported once"
    );

    let always = losing(0.0);
    send_in_turn(&mut always.layer(sleeper()), 200, |_| 100).await;
    assert_eq!(always.stats().hedges, 200);
}

/// A service whose calls take 8 ms, every 25th 200 ms, or, while `slow`
/// is set, 100 ms each.
fn fleet(slow: Arc<AtomicBool>) -> impl Service<u64, Response = u64, Error = BoxError, Future = impl Send> + Clone {
    let n = Arc::new(AtomicU32::new(0));
    service_fn(move |req: u64| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        let took = if slow.load(Ordering::SeqCst) {
            100
        } else if i % 25 == 24 {
            200
        } else {
            8
        };
        async move {
            tokio::time::sleep(ms(took)).await;
            Ok::<_, BoxError>(req)
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_fleet_wide_slowdown_pauses_hedging_and_its_end_resumes_it() {
    // Calls take 8 ms, every 25th 200 ms: hedges at a fixed 20 ms win those.
    // Then every call takes 100 ms for a minute, twelve times the calm
    // median: each is hedged at 20 ms and the hedge finds nothing faster.
    // Once the median over the window has risen (the calm latencies aged
    // out, about 10 s), hedging pauses until it is back near its calmest.
    // With `max_median_rise` 0 it hedges on. (`min_win_share` 0: the other
    // pause, for hedges that lose, would stop these too; an adaptive delay
    // would follow the latencies up.)
    let run = |max_median_rise: f64| async move {
        let budget = BudgetConfig { ratio: 1.0, ..BudgetConfig::default() };
        let config =
            HedgeConfig { max_median_rise, min_win_share: 0.0, budget, window: Duration::from_secs(5), ..fixed(20) };
        let layer = HedgeLayer::new(config).unwrap();
        let slow = Arc::new(AtomicBool::new(false));
        let mut svc = layer.layer(fleet(slow.clone()));
        send_in_turn(&mut svc, 1000, |_| 0).await;
        let calm = layer.stats().hedges;
        slow.store(true, Ordering::SeqCst);
        send_in_turn(&mut svc, 600, |_| 0).await;
        let slowed = layer.stats().hedges - calm;
        slow.store(false, Ordering::SeqCst);
        send_in_turn(&mut svc, 3000, |_| 0).await;
        (calm, slowed, layer.stats().hedges - calm - slowed, layer.stats().paused)
    };
    let (calm, slowed, back, paused) = run(2.0).await;
    eprintln!("hedges: calm {calm}, slow {slowed}, back {back}; paused {paused}");
    assert!(calm >= 20, "hedges win the tail: {calm}");
    assert!(slowed <= 150 && paused >= 400, "hedging paused while every call was slow: {slowed} sent, {paused} paused");
    assert!(back >= 60, "resumed once the median is calm again: {back}");
    let (_, slowed, _, paused) = run(0.0).await;
    eprintln!("at 0: slow {slowed}, paused {paused}");
    assert!(slowed >= 500 && paused == 0, "not paused at max_median_rise 0: {slowed}");
}
