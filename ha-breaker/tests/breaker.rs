//! Behaviour of the breaker service on paused virtual time.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use ha_breaker::{
    Breaker, BreakerConfig, CancelledAs, CircuitBreaker, CircuitBreakerLayer, KeyedCircuitBreaker, KeyedConfig,
    OpenWaitConfig, RejectMode, SlowCallConfig, WindowConfig,
};
use ha_core::classify::{classify_fn, Outcome};
use ha_core::event::{BreakerState, Event, Events};
use ha_core::{BreakerOpen, Instant};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

#[derive(Debug, Clone, Copy)]
enum Req {
    Ok,
    Fail,
    /// Succeeds after this many milliseconds.
    Slow(u64),
    /// Never answers.
    Hang,
    /// A result the classifier ignores.
    Ignore,
}

type Svc = tower::util::BoxCloneSyncService<Req, &'static str, BoxError>;

fn backend() -> Svc {
    tower::util::BoxCloneSyncService::new(service_fn(|r: Req| async move {
        match r {
            Req::Ok => Ok("ok"),
            Req::Fail => Err::<_, BoxError>("failed".into()),
            Req::Slow(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok("slow")
            }
            Req::Hang => std::future::pending().await,
            Req::Ignore => Ok("ignore"),
        }
    }))
}

/// Never-tripping-by-accident defaults: no jitter, rates off unless set.
fn config() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: None,
        failure_rate: None,
        open_wait: OpenWaitConfig {
            base: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(5),
            jitter: 0.0,
            reset_after: Duration::from_secs(30),
        },
        half_open_probes: 2,
        ..BreakerConfig::default()
    }
}

/// The transitions an observer saw.
type Seen = Arc<Mutex<Vec<(BreakerState, BreakerState)>>>;

fn events() -> (Events, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let events = Events::new().with_observer(move |e: &Event| {
        if let Event::BreakerStateChanged { from, to, .. } = e {
            sink.lock().unwrap().push((*from, *to));
        }
    });
    (events, seen)
}

fn breaker_svc(config: BreakerConfig) -> (CircuitBreaker<Svc>, Seen) {
    let (events, seen) = events();
    let layer = CircuitBreakerLayer::new(config).unwrap().name("test").events(events);
    (layer.layer(backend()), seen)
}

async fn send(svc: &mut CircuitBreaker<Svc>, r: Req) -> Result<&'static str, BoxError> {
    svc.ready().await?.call(r).await
}

fn rejected(r: Result<&'static str, BoxError>) -> Option<Duration> {
    r.err().and_then(|e| e.downcast_ref::<BreakerOpen>().map(BreakerOpen::retry_after))
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_and_a_success_resets_the_streak() {
    let (mut svc, seen) = breaker_svc(BreakerConfig { consecutive_failures: Some(3), ..config() });
    for _ in 0..2 {
        send(&mut svc, Req::Fail).await.unwrap_err();
    }
    send(&mut svc, Req::Ok).await.unwrap();
    for _ in 0..2 {
        send(&mut svc, Req::Fail).await.unwrap_err();
    }
    assert_eq!(svc.state(), BreakerState::Closed);
    let third = send(&mut svc, Req::Fail).await;
    assert!(rejected(third).is_none(), "the tripping call itself ran");
    assert_eq!(svc.state(), BreakerState::Open);
    assert_eq!(rejected(send(&mut svc, Req::Ok).await), Some(Duration::from_secs(1)));
    assert_eq!(*seen.lock().unwrap(), vec![(BreakerState::Closed, BreakerState::Open)]);
    let m = svc.breaker().stats();
    assert_eq!((m.calls, m.failures, m.rejections, m.transitions), (6, 5, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn failure_rate_trips_only_once_the_minimum_is_reached() {
    let cfg = BreakerConfig {
        failure_rate: Some(0.5),
        window: WindowConfig::Count { size: 10 },
        minimum_calls: 6,
        ..config()
    };
    let (mut svc, _) = breaker_svc(cfg);
    for _ in 0..5 {
        send(&mut svc, Req::Fail).await.unwrap_err();
    }
    assert_eq!(svc.state(), BreakerState::Closed, "5 calls < minimum 6");
    send(&mut svc, Req::Fail).await.unwrap_err();
    assert_eq!(svc.state(), BreakerState::Open);

    // The window slides: 10 calls, 4 failures is below the rate.
    let (mut svc, _) = breaker_svc(BreakerConfig {
        failure_rate: Some(0.5),
        window: WindowConfig::Count { size: 10 },
        minimum_calls: 6,
        ..config()
    });
    for r in [Req::Fail, Req::Ok, Req::Fail, Req::Ok, Req::Ok, Req::Ok, Req::Fail, Req::Ok, Req::Ok, Req::Fail] {
        send(&mut svc, r).await.ok();
    }
    assert_eq!(svc.state(), BreakerState::Closed);
    // A fifth failure pushes out the first (a failure): still 4 of 10.
    send(&mut svc, Req::Fail).await.unwrap_err();
    assert_eq!(svc.state(), BreakerState::Closed);
    // A sixth pushes out a success: 5 of 10 = 0.5.
    send(&mut svc, Req::Fail).await.unwrap_err();
    assert_eq!(svc.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_a_time_window_forgets_old_failures() {
    let cfg = BreakerConfig {
        failure_rate: Some(0.5),
        window: WindowConfig::Time { span: Duration::from_secs(10), buckets: 10 },
        minimum_calls: 4,
        ..config()
    };
    let (mut svc, _) = breaker_svc(cfg);
    for _ in 0..3 {
        send(&mut svc, Req::Fail).await.unwrap_err();
    }
    tokio::time::advance(Duration::from_secs(11)).await;
    // The three failures slid out: one more failure among fresh successes stays below.
    for r in [Req::Ok, Req::Ok, Req::Ok, Req::Fail] {
        send(&mut svc, r).await.ok();
    }
    assert_eq!(svc.state(), BreakerState::Closed);
    send(&mut svc, Req::Fail).await.unwrap_err();
    assert_eq!(svc.state(), BreakerState::Closed, "2 of 5");
    send(&mut svc, Req::Fail).await.unwrap_err();
    assert_eq!(svc.state(), BreakerState::Open, "3 of 6");
}

#[tokio::test(start_paused = true)]
async fn slow_call_rate_trips_on_calls_slower_than_the_threshold() {
    let cfg = BreakerConfig {
        slow_calls: Some(SlowCallConfig { threshold: Duration::from_millis(100), rate: 0.5 }),
        window: WindowConfig::Count { size: 4 },
        minimum_calls: 4,
        ..config()
    };
    let (mut svc, _) = breaker_svc(cfg);
    for r in [Req::Slow(99), Req::Ok, Req::Slow(100), Req::Ok] {
        send(&mut svc, r).await.unwrap();
    }
    assert_eq!(svc.state(), BreakerState::Closed, "99 ms is fast, 100 ms is slow: 1 slow of 4");
    assert_eq!(svc.breaker().stats().slow_calls, 1);
    send(&mut svc, Req::Slow(250)).await.unwrap();
    assert_eq!(svc.state(), BreakerState::Open, "2 slow of the last 4");
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_at_most_the_probe_limit_and_closes_when_they_pass() {
    let (mut svc, seen) = breaker_svc(BreakerConfig { consecutive_failures: Some(1), ..config() });
    send(&mut svc, Req::Fail).await.unwrap_err();
    tokio::time::advance(Duration::from_secs(1)).await;

    // Two probes in flight (they hang until we let them go).
    let mut first = svc.ready().await.unwrap().call(Req::Slow(50));
    let mut second = svc.ready().await.unwrap().call(Req::Slow(50));
    assert!(futures::poll!(&mut first).is_pending());
    assert!(futures::poll!(&mut second).is_pending());
    assert_eq!(svc.state(), BreakerState::HalfOpen);
    assert_eq!(rejected(send(&mut svc, Req::Ok).await), Some(Duration::ZERO), "third probe refused");
    first.await.unwrap();
    assert_eq!(rejected(send(&mut svc, Req::Ok).await), Some(Duration::ZERO), "one slot used, one in flight");
    second.await.unwrap();
    assert_eq!(svc.state(), BreakerState::Closed);
    send(&mut svc, Req::Ok).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (BreakerState::Closed, BreakerState::Open),
            (BreakerState::Open, BreakerState::HalfOpen),
            (BreakerState::HalfOpen, BreakerState::Closed)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn failing_probes_reopen_with_a_growing_capped_wait_that_resets_after_staying_closed() {
    let (mut svc, _) = breaker_svc(BreakerConfig { consecutive_failures: Some(1), ..config() });
    send(&mut svc, Req::Fail).await.unwrap_err();
    let mut waits = Vec::new();
    for _ in 0..4 {
        let wait = rejected(send(&mut svc, Req::Ok).await).unwrap();
        waits.push(wait);
        tokio::time::advance(wait).await;
        // Both probes fail (failure rate unset: half of the probes failing reopens).
        send(&mut svc, Req::Fail).await.unwrap_err();
        send(&mut svc, Req::Fail).await.unwrap_err();
        assert_eq!(svc.state(), BreakerState::Open);
    }
    let wait = rejected(send(&mut svc, Req::Ok).await).unwrap();
    waits.push(wait);
    let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, vec![1, 2, 4, 5, 5]);

    // Pass the probes, stay closed past reset_after: the next trip waits the base again.
    tokio::time::advance(wait).await;
    send(&mut svc, Req::Ok).await.unwrap();
    send(&mut svc, Req::Ok).await.unwrap();
    assert_eq!(svc.state(), BreakerState::Closed);
    tokio::time::advance(Duration::from_secs(29)).await;
    send(&mut svc, Req::Fail).await.unwrap_err();
    assert_eq!(rejected(send(&mut svc, Req::Ok).await), Some(Duration::from_secs(5)), "closed only 29 s: 5 s cap");
    tokio::time::advance(Duration::from_secs(5)).await;
    send(&mut svc, Req::Ok).await.unwrap();
    send(&mut svc, Req::Ok).await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    send(&mut svc, Req::Fail).await.unwrap_err();
    assert_eq!(rejected(send(&mut svc, Req::Ok).await), Some(Duration::from_secs(1)), "back to base");
}

#[tokio::test(start_paused = true)]
async fn closings_count_the_ends_of_open_periods() {
    // What a balancer reads to tell one open period from the next: failed
    // probes that reopen the breaker do not end the period, a passed probe
    // does, and so do the controls that close it; disabling does not.
    /// Waits the open time out and sends both half-open probes as `r`.
    async fn probes(svc: &mut CircuitBreaker<Svc>, r: Req) {
        let wait = rejected(send(svc, Req::Ok).await).expect("open");
        tokio::time::advance(wait).await;
        for _ in 0..2 {
            let _ = send(svc, r).await;
        }
    }
    let (mut svc, _) = breaker_svc(BreakerConfig { consecutive_failures: Some(1), ..config() });
    let b = svc.breaker().clone();
    assert_eq!(b.closings(), 0);
    send(&mut svc, Req::Fail).await.unwrap_err();
    probes(&mut svc, Req::Fail).await;
    assert_eq!(svc.state(), BreakerState::Open);
    assert_eq!(b.closings(), 0, "a failed probe reopens within the same period");
    probes(&mut svc, Req::Ok).await;
    assert_eq!(svc.state(), BreakerState::Closed);
    assert_eq!(b.closings(), 1, "passed probes close it");
    b.disable(Instant::now());
    assert_eq!(b.closings(), 1, "disabled is not closed");
    b.metrics_only(Instant::now());
    assert_eq!(b.closings(), 2);
    b.force_open(Instant::now());
    b.reset(Instant::now());
    assert_eq!(b.closings(), 3);
}

#[tokio::test(start_paused = true)]
async fn jitter_shortens_the_wait_by_at_most_its_share() {
    let mut cfg = BreakerConfig { consecutive_failures: Some(1), ..config() };
    cfg.open_wait.jitter = 0.5;
    cfg.open_wait.base = Duration::from_secs(10);
    cfg.open_wait.max = Duration::from_secs(10);
    let mut distinct = std::collections::HashSet::new();
    for seed in 0..20 {
        let b = Breaker::new("j", cfg.clone(), Events::new(), Instant::now()).unwrap().with_jitter_seed(seed);
        let p = b.try_acquire(Instant::now).unwrap();
        b.record(p, Outcome::Failure, None, Instant::now);
        let wait = b.try_acquire(Instant::now).unwrap_err().retry_after();
        assert!(wait > Duration::from_secs(5) && wait <= Duration::from_secs(10), "{wait:?}");
        distinct.insert(wait);
    }
    assert!(distinct.len() > 10, "jitter spreads the waits: {distinct:?}");
}

#[tokio::test(start_paused = true)]
async fn ignored_outcomes_count_for_nothing() {
    let classifier = classify_fn(|r: Result<&&'static str, &BoxError>| match r {
        Ok(&"ignore") => Outcome::Ignored,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    });
    let layer = CircuitBreakerLayer::new(BreakerConfig { consecutive_failures: Some(2), ..config() })
        .unwrap()
        .classifier(classifier);
    let mut svc = layer.layer(backend());
    svc.ready().await.unwrap().call(Req::Fail).await.unwrap_err();
    for _ in 0..5 {
        svc.ready().await.unwrap().call(Req::Ignore).await.unwrap();
    }
    assert_eq!(svc.state(), BreakerState::Closed);
    let m = svc.breaker().stats();
    assert_eq!((m.calls, m.ignored), (1, 5));
    assert_eq!(svc.breaker().window(Instant::now()).calls, 1);
    // The ignored calls did not break the failure streak either.
    svc.ready().await.unwrap().call(Req::Fail).await.unwrap_err();
    assert_eq!(svc.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn cancelled_calls_count_for_nothing_by_default_and_as_failures_when_asked() {
    let (mut svc, _) = breaker_svc(BreakerConfig { consecutive_failures: Some(1), ..config() });
    let mut fut = svc.ready().await.unwrap().call(Req::Hang);
    assert!(futures::poll!(&mut fut).is_pending());
    drop(fut);
    assert_eq!(svc.state(), BreakerState::Closed);
    assert_eq!(svc.breaker().stats().ignored, 1);

    let (mut svc, _) =
        breaker_svc(BreakerConfig { consecutive_failures: Some(1), cancelled: CancelledAs::Failure, ..config() });
    drop(svc.ready().await.unwrap().call(Req::Hang));
    assert_eq!(svc.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_gives_its_permit_back() {
    let (mut svc, _) = breaker_svc(BreakerConfig { consecutive_failures: Some(1), half_open_probes: 1, ..config() });
    send(&mut svc, Req::Fail).await.unwrap_err();
    tokio::time::advance(Duration::from_secs(1)).await;
    let probe = svc.ready().await.unwrap().call(Req::Hang);
    assert_eq!(rejected(send(&mut svc, Req::Ok).await), Some(Duration::ZERO));
    drop(probe);
    send(&mut svc, Req::Ok).await.unwrap();
    assert_eq!(svc.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn outcomes_of_calls_admitted_before_a_transition_are_dropped() {
    let (mut svc, _) = breaker_svc(BreakerConfig { consecutive_failures: Some(1), ..config() });
    let slow = svc.ready().await.unwrap().call(Req::Slow(5_000));
    send(&mut svc, Req::Fail).await.unwrap_err();
    tokio::time::advance(Duration::from_secs(1)).await;
    send(&mut svc, Req::Ok).await.unwrap();
    send(&mut svc, Req::Ok).await.unwrap();
    assert_eq!(svc.state(), BreakerState::Closed);
    assert_eq!(svc.breaker().window(Instant::now()).calls, 0, "the window starts afresh on closing");
    let calls = svc.breaker().stats().calls;
    slow.await.unwrap();
    assert_eq!(svc.breaker().stats().calls, calls + 1, "counted");
    assert_eq!(svc.breaker().window(Instant::now()).calls, 0, "the old call speaks of an earlier period");
}

#[tokio::test(start_paused = true)]
async fn not_ready_mode_stays_pending_while_open_and_wakes_when_a_probe_may_go() {
    let cfg = BreakerConfig { consecutive_failures: Some(1), reject_mode: RejectMode::NotReady, ..config() };
    let (mut svc, _) = breaker_svc(cfg);
    send(&mut svc, Req::Fail).await.unwrap_err();
    assert!(svc.is_open());
    let t0 = Instant::now();
    assert!(svc.ready().now_or_never().is_none(), "pending while open");
    // The registered timer wakes the task: awaiting readiness returns once
    // the virtual clock passes the open wait, and the permit is a probe.
    let ready = tokio::time::timeout(Duration::from_secs(60), svc.ready()).await;
    assert!(ready.is_ok(), "woken by the breaker's timer");
    assert_eq!(Instant::now() - t0, Duration::from_secs(1));
    assert_eq!(svc.state(), BreakerState::HalfOpen);
    svc.call(Req::Ok).await.unwrap();

    // A second clone waits for the second probe slot; a third is woken by
    // the transition when the probes pass.
    let mut other = svc.clone();
    other.ready().await.unwrap();
    let mut third = svc.clone();
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(third.poll_ready(&mut cx).is_pending(), "every probe slot is taken");
    other.call(Req::Ok).await.unwrap();
    assert_eq!(svc.state(), BreakerState::Closed);
    assert!(matches!(third.poll_ready(&mut cx), Poll::Ready(Ok(()))));
}

#[tokio::test(start_paused = true)]
async fn advisory_mode_rejects_nothing_and_only_probes_decide() {
    let cfg = BreakerConfig { consecutive_failures: Some(1), reject_mode: RejectMode::Advisory, ..config() };
    let (mut svc, _) = breaker_svc(cfg);
    send(&mut svc, Req::Fail).await.unwrap_err();
    assert!(svc.is_open());
    let calls = svc.breaker().stats().calls;
    // Open, yet ready, and a call goes through to the service, untracked.
    assert!(svc.ready().now_or_never().is_some(), "ready while open");
    svc.call(Req::Ok).await.expect("the call went through");
    assert!(svc.is_open(), "an untracked success does not close it");
    assert_eq!(svc.breaker().stats().calls, calls, "not counted");
    assert_eq!(svc.breaker().stats().rejections, 1, "counted as advised against");
    // After the open wait a call is the half-open probe, and it decides.
    tokio::time::sleep(Duration::from_secs(1)).await;
    send(&mut svc, Req::Ok).await.unwrap();
    assert_eq!(svc.state(), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn a_reserved_probe_permit_is_released_when_the_service_is_dropped() {
    let cfg = BreakerConfig {
        consecutive_failures: Some(1),
        half_open_probes: 1,
        reject_mode: RejectMode::NotReady,
        ..config()
    };
    let (mut svc, _) = breaker_svc(cfg);
    send(&mut svc, Req::Fail).await.unwrap_err();
    tokio::time::advance(Duration::from_secs(1)).await;
    let mut holder = svc.clone();
    holder.ready().await.unwrap();
    assert!(svc.ready().now_or_never().is_none());
    drop(holder);
    assert!(svc.ready().now_or_never().is_some(), "the permit came back");
}

#[tokio::test(start_paused = true)]
async fn control_states_force_open_disable_metrics_only_and_reset() {
    let (mut svc, seen) = breaker_svc(BreakerConfig { consecutive_failures: Some(1), ..config() });
    let b = svc.breaker().clone();
    b.force_open(Instant::now());
    assert!(b.is_open());
    assert_eq!(rejected(send(&mut svc, Req::Ok).await), Some(Duration::MAX));
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(b.state(), BreakerState::ForcedOpen, "no wait ends a forced open");

    b.disable(Instant::now());
    for _ in 0..5 {
        send(&mut svc, Req::Fail).await.unwrap_err();
    }
    assert_eq!(b.state(), BreakerState::Disabled);
    assert_eq!(b.stats().calls, 0, "disabled records nothing");

    b.metrics_only(Instant::now());
    for _ in 0..5 {
        send(&mut svc, Req::Fail).await.unwrap_err();
    }
    assert_eq!(b.state(), BreakerState::MetricsOnly, "records, never trips");
    assert_eq!(b.stats().failures, 5);

    b.reset(Instant::now());
    send(&mut svc, Req::Fail).await.unwrap_err();
    assert_eq!(b.state(), BreakerState::Open);
    use BreakerState::*;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (Closed, ForcedOpen),
            (ForcedOpen, Disabled),
            (Disabled, MetricsOnly),
            (MetricsOnly, Closed),
            (Closed, Open)
        ]
    );
    assert_eq!(b.stats().transitions, 5);
}

#[tokio::test(start_paused = true)]
async fn retry_after_reads_the_wait_without_moving_the_state() {
    let b =
        Breaker::new("r", BreakerConfig { consecutive_failures: Some(1), ..config() }, Events::new(), Instant::now())
            .unwrap();
    assert_eq!(b.retry_after(Instant::now()), None);
    let p = b.try_acquire(Instant::now).unwrap();
    b.record(p, Outcome::Failure, None, Instant::now);
    assert_eq!(b.retry_after(Instant::now()), Some(Duration::from_secs(1)));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(b.retry_after(Instant::now()), Some(Duration::ZERO));
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn keyed_breakers_isolate_keys_and_bound_memory() {
    let config = KeyedConfig {
        breaker: BreakerConfig { consecutive_failures: Some(1), ..config() },
        max_keys: 3,
        idle_timeout: Duration::from_secs(60),
    };
    let backend = service_fn(|(_, ok): (u32, bool)| async move {
        if ok {
            Ok(())
        } else {
            Err("down")
        }
    });
    let mut svc = KeyedCircuitBreaker::new(backend, |r: &(u32, bool)| r.0, config).unwrap();
    svc.ready().await.unwrap().call((1, false)).await.unwrap_err();
    for k in 2..=3 {
        svc.ready().await.unwrap().call((k, true)).await.unwrap();
    }
    assert!(svc.breakers().get(&1).unwrap().is_open());
    assert_eq!(svc.breakers().len(), 3);
    // Full, nothing idle: the least recently used key (1) makes room.
    tokio::time::advance(Duration::from_secs(1)).await;
    svc.ready().await.unwrap().call((2, true)).await.unwrap();
    svc.ready().await.unwrap().call((3, true)).await.unwrap();
    svc.ready().await.unwrap().call((4, true)).await.unwrap();
    assert_eq!(svc.breakers().len(), 3);
    assert!(svc.breakers().get(&1).is_none());
    assert_eq!(svc.breakers().evicted(), 1);
    // Idle keys go first, all of them.
    tokio::time::advance(Duration::from_secs(61)).await;
    svc.ready().await.unwrap().call((4, true)).await.unwrap();
    assert_eq!(svc.breakers().evict_idle(Instant::now()), 2);
    assert_eq!(svc.breakers().len(), 1);
    assert!(KeyedCircuitBreaker::<_, u32, _>::new(
        backend_unit(),
        |_: &u32| 0u32,
        KeyedConfig { max_keys: 0, ..Default::default() }
    )
    .is_err());
}

fn backend_unit() -> impl Service<u32, Response = (), Error = BoxError> + Clone {
    service_fn(|_: u32| async { Ok::<_, BoxError>(()) })
}

#[tokio::test(start_paused = true)]
async fn services_are_clone_send_static_and_share_one_breaker() {
    fn assert_send_static<T: Send + 'static>(_: &T) {}
    let (svc, _) = breaker_svc(BreakerConfig { consecutive_failures: Some(2), ..config() });
    assert_send_static(&svc);
    let mut a = svc.clone();
    let mut b = svc;
    let fut = a.ready().await.unwrap().call(Req::Fail);
    assert_send_static(&fut);
    fut.await.unwrap_err();
    b.ready().await.unwrap().call(Req::Fail).await.unwrap_err();
    assert!(a.is_open() && b.is_open());
    let handle = tokio::spawn(async move { a.ready().await.unwrap().call(Req::Ok).await });
    assert!(rejected(handle.await.unwrap()).is_some());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_breaker_is_freed_by_the_threads_next_breaker_call() {
    let (mut svc, _) = breaker_svc(config());
    let weak = Arc::downgrade(svc.breaker());
    // A call in flight outlives its service and still records its outcome.
    let fut = svc.ready().await.unwrap().call(Req::Slow(10));
    drop(svc);
    fut.await.unwrap();
    assert!(weak.upgrade().is_none(), "the last reference is dropped, not stashed");

    let (mut a, _) = breaker_svc(config());
    let weak = Arc::downgrade(a.breaker());
    send(&mut a, Req::Ok).await.unwrap();
    drop(a);
    // The thread's stash may keep `a`'s breaker until its next breaker call.
    let (mut b, _) = breaker_svc(config());
    send(&mut b, Req::Ok).await.unwrap();
    assert!(weak.upgrade().is_none(), "shed from the stash");
}

#[tokio::test(start_paused = true)]
async fn not_ready_mode_wakes_a_waiting_task_when_an_operator_releases_a_forced_open() {
    let cfg = BreakerConfig { reject_mode: RejectMode::NotReady, ..config() };
    let (mut svc, _) = breaker_svc(cfg);
    let b = svc.breaker().clone();
    b.force_open(Instant::now());
    let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    struct Count(Arc<std::sync::atomic::AtomicUsize>);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let waker = std::task::Waker::from(Arc::new(Count(woken.clone())));
    let mut cx = Context::from_waker(&waker);
    assert!(svc.poll_ready(&mut cx).is_pending());
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(woken.load(std::sync::atomic::Ordering::SeqCst), 0, "no timer while forced open");
    b.reset(Instant::now());
    assert_eq!(woken.load(std::sync::atomic::Ordering::SeqCst), 1, "the transition wakes the task");
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    svc.call(Req::Ok).await.unwrap();
}
