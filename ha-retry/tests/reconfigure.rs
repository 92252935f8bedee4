//! Live reconfiguration of the retry and hedge layers, on paused virtual time.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ha_core::{BudgetExhausted, Instant, RetriesExhausted};
use ha_retry::config::{BudgetConfig, HedgeConfig, HedgeDelay, Jitter, RetryConfig};
use ha_retry::{HedgeLayer, RetryBudget, RetryLayer};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

fn retry_config(max_attempts: u32) -> RetryConfig {
    let mut c = RetryConfig { max_attempts, ..RetryConfig::default() };
    c.backoff.jitter = Jitter::None;
    c.backoff.base = Duration::from_millis(1);
    c.backoff.max = Duration::from_millis(1);
    c
}

/// A service that fails request 1 after `took` and answers any other at
/// once, counting its calls.
fn failing_ones(
    took: Duration,
) -> (impl Service<u32, Response = u32, Error = BoxError, Future = impl Send> + Clone, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let svc = service_fn(move |req: u32| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if req == 1 {
                tokio::time::sleep(took).await;
                Err(BoxError::from("down"))
            } else {
                Ok(req)
            }
        }
    });
    (svc, calls)
}

/// Sends `req` through `svc`; returns the calls it made below.
async fn attempts<S>(svc: &mut S, calls: &AtomicU32, req: u32) -> u32
where
    S: Service<u32, Error = BoxError>,
{
    let before = calls.load(Ordering::SeqCst);
    let _ = svc.ready().await.unwrap().call(req).await;
    calls.load(Ordering::SeqCst) - before
}

#[tokio::test(start_paused = true)]
async fn max_attempts_changes_on_every_clone_and_the_layer() {
    let (inner, calls) = failing_ones(Duration::ZERO);
    let layer = RetryLayer::new(retry_config(2)).unwrap();
    let mut a = layer.layer(inner);
    let mut b = a.clone();
    assert_eq!(attempts(&mut a, &calls, 1).await, 2);

    // Raised through one clone: both see it.
    b.reconfigure(retry_config(5)).unwrap();
    assert_eq!(attempts(&mut a, &calls, 1).await, 5);
    assert_eq!(attempts(&mut b, &calls, 1).await, 5);

    // Lowered through the layer: its services see it, and so do new ones.
    layer.reconfigure(retry_config(1)).unwrap();
    assert_eq!(attempts(&mut a, &calls, 1).await, 1);
    assert_eq!(attempts(&mut b, &calls, 1).await, 1);
    let (inner, more) = failing_ones(Duration::ZERO);
    assert_eq!(attempts(&mut layer.layer(inner), &more, 1).await, 1);
    assert_eq!((a.config(), layer.config()), (retry_config(1), retry_config(1)));
    assert_eq!(layer.stats().retries, 1 + 4 + 4);
}

#[tokio::test(start_paused = true)]
async fn a_new_budget_ratio_sets_how_many_retries_are_allowed_and_keeps_the_balance() {
    let t0 = Instant::now();
    let config = |ratio| RetryConfig {
        budget: BudgetConfig { ratio, min_per_second: 0, ..BudgetConfig::default() },
        ..retry_config(1000)
    };
    let (inner, _) = failing_ones(Duration::ZERO);
    let layer = RetryLayer::new(config(0.5)).unwrap();
    let mut svc = layer.layer(inner);
    // Requests are deposited in batches of 32 per thread.
    for _ in 0..32 {
        svc.ready().await.unwrap().call(0).await.unwrap();
    }
    assert_eq!(layer.budget().available(t0), 16.0);

    svc.reconfigure(config(1.0)).unwrap();
    assert_eq!(layer.budget().available(t0), 16.0, "the balance is kept");
    for _ in 0..32 {
        svc.ready().await.unwrap().call(0).await.unwrap();
    }
    assert_eq!(layer.budget().available(t0), 16.0 + 32.0, "later requests deposit at the new ratio");

    // A request that keeps failing gets exactly what the budget holds.
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.is::<BudgetExhausted>(), "{err}");
    assert_eq!((layer.stats().retries, layer.stats().budget_refused), (48, 1));
}

#[tokio::test(start_paused = true)]
async fn an_invalid_config_is_refused_as_at_build_and_changes_nothing() {
    let t0 = Instant::now();
    let (inner, calls) = failing_ones(Duration::ZERO);
    let good = retry_config(3);
    let layer = RetryLayer::new(good.clone()).unwrap();
    let mut svc = layer.layer(inner);
    let balance = layer.budget().available(t0);
    let mut bad_budget = retry_config(5);
    bad_budget.budget.ratio = 2000.0;
    let mut bad_backoff = retry_config(5);
    bad_backoff.backoff.multiplier = 0.5;
    for bad in [retry_config(0), bad_budget, bad_backoff] {
        let at_build = RetryLayer::new(bad.clone()).unwrap_err();
        assert_eq!(svc.reconfigure(bad.clone()).unwrap_err(), at_build);
        assert_eq!(layer.reconfigure(bad).unwrap_err(), at_build);
    }
    assert_eq!(svc.config(), good);
    assert_eq!(layer.budget().available(t0), balance);
    assert_eq!(attempts(&mut svc, &calls, 1).await, 3);
}

#[tokio::test(start_paused = true)]
async fn a_request_in_flight_finishes_under_the_config_it_started_with() {
    // The first attempt fails after 100 ms, the retry succeeds.
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let inner = service_fn(move |_: u32| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if n == 0 {
                Err(BoxError::from("reset"))
            } else {
                Ok(n)
            }
        }
    });
    let layer = RetryLayer::new(retry_config(3)).unwrap();
    let svc = layer.layer(inner);
    let in_flight = tokio::spawn(svc.clone().oneshot(7));
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Stricter than the request can live with: one attempt, 10 ms each.
    let strict = RetryConfig { per_try_timeout: Some(Duration::from_millis(10)), ..retry_config(1) };
    svc.reconfigure(strict).unwrap();
    assert_eq!(in_flight.await.unwrap().unwrap(), 1, "retried and answered under its own config");
    assert_eq!(layer.stats().attempt_timeouts, 0);
    // A request started now uses the new config.
    let err = svc.oneshot(8).await.unwrap_err();
    assert!(err.is::<ha_core::AttemptTimedOut>(), "{err}");
    assert!(!err.is::<RetriesExhausted>());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_shared_budget_is_left_to_its_owner() {
    let t0 = Instant::now();
    let cfg = BudgetConfig { ratio: 0.5, min_per_second: 1, ..BudgetConfig::default() };
    let budget = RetryBudget::builder(cfg).start(t0).build().unwrap();
    let layer = RetryLayer::builder(retry_config(3)).budget(budget.clone()).build().unwrap();
    let mut other = retry_config(3);
    other.budget.min_per_second = 50;
    layer.reconfigure(other).unwrap();
    assert_eq!(budget.available(t0), 10.0);
    assert_eq!(layer.config().budget.min_per_second, 50);
}

fn fixed(ms: u64) -> HedgeConfig {
    HedgeConfig { delay: HedgeDelay::Fixed(Duration::from_millis(ms)), ..HedgeConfig::default() }
}

/// A service whose first call takes a second and every other 1 ms.
fn slow_first() -> (impl Service<u32, Response = u32, Error = BoxError, Future = impl Send> + Clone, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let svc = service_fn(move |_: u32| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let took = if n == 0 { Duration::from_secs(1) } else { Duration::from_millis(1) };
            tokio::time::sleep(took).await;
            Ok::<_, BoxError>(n)
        }
    });
    (svc, calls)
}

#[tokio::test(start_paused = true)]
async fn a_new_hedge_delay_and_max_hedges_apply_to_later_requests_on_every_clone() {
    let layer = HedgeLayer::new(fixed(500)).unwrap();
    let (inner, calls) = slow_first();
    let svc = layer.layer(inner);
    let clone = svc.clone();
    clone.reconfigure(fixed(20)).unwrap();
    let t0 = Instant::now();
    assert_eq!(svc.clone().oneshot(0).await.unwrap(), 1, "the hedge won");
    assert_eq!(t0.elapsed(), Duration::from_millis(21), "hedged after the new 20 ms");

    layer.reconfigure(HedgeConfig { max_hedges: 0, ..fixed(20) }).unwrap();
    calls.store(0, Ordering::SeqCst);
    let t0 = Instant::now();
    assert_eq!(clone.oneshot(0).await.unwrap(), 0);
    assert_eq!(t0.elapsed(), Duration::from_secs(1), "no hedge any more");
    assert_eq!(layer.stats().hedges, 1);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_in_flight_survives_a_reconfiguration() {
    let layer = HedgeLayer::new(fixed(20)).unwrap();
    let (inner, calls) = slow_first();
    let svc = layer.layer(inner);
    let t0 = Instant::now();
    let in_flight = tokio::spawn(svc.clone().oneshot(0));
    tokio::time::sleep(Duration::from_millis(10)).await;
    svc.reconfigure(HedgeConfig { max_hedges: 0, ..fixed(20) }).unwrap();
    assert_eq!(in_flight.await.unwrap().unwrap(), 1, "hedged at 20 ms under the config it started with");
    assert_eq!(t0.elapsed(), Duration::from_millis(21));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn latencies_are_kept_unless_the_window_changes() {
    let adaptive = |q, window| HedgeConfig {
        delay: HedgeDelay::Percentile(q),
        min_samples: 10,
        window: Duration::from_secs(window),
        ..HedgeConfig::default()
    };
    let layer = HedgeLayer::new(adaptive(0.5, 10)).unwrap();
    let svc = layer.layer(service_fn(|ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(ms)
    }));
    for ms in 1..=20 {
        svc.clone().oneshot(ms).await.unwrap();
    }
    // Past the refresh period: the quantile is recomputed from all 20.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let p50 = layer.current_delay(Instant::now()).expect("enough samples");
    assert!(p50 >= Duration::from_millis(10) && p50 < Duration::from_millis(11), "{p50:?}");

    // Another quantile over the same samples, at once.
    svc.reconfigure(adaptive(0.9, 10)).unwrap();
    let p90 = layer.current_delay(Instant::now()).expect("the samples were kept");
    assert!(p90 >= Duration::from_millis(18) && p90 < Duration::from_millis(19), "{p90:?}");

    // Another window: the latencies start afresh.
    svc.reconfigure(adaptive(0.9, 20)).unwrap();
    assert_eq!(layer.current_delay(Instant::now()), None);

    let err = svc.reconfigure(adaptive(1.5, 20)).unwrap_err();
    assert_eq!(err, HedgeLayer::new(adaptive(1.5, 20)).unwrap_err());
    assert_eq!(svc.config(), adaptive(0.9, 20));
}
