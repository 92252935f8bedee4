//! Live reconfiguration: new rules for later outcomes, the state kept, a
//! bad config refused with the constructor's error. Driven with explicit
//! instants.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ha_breaker::keyed::KeyedBreakers;
use ha_breaker::{
    Breaker, BreakerConfig, CancelledAs, CircuitBreaker, ConfigError, KeyedConfig, OpenWaitConfig, RejectMode,
    SlowCallConfig, WindowConfig,
};
use ha_core::event::{BreakerState, Event, Events};
use ha_core::{BreakerOpen, Instant, Outcome};
use tower::{service_fn, BoxError, Service, ServiceExt};

/// Nothing trips unless a test says so; waits without jitter.
fn config() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: None,
        failure_rate: None,
        window: WindowConfig::Count { size: 10 },
        minimum_calls: 4,
        open_wait: OpenWaitConfig {
            base: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(60),
            jitter: 0.0,
            reset_after: Duration::from_secs(600),
        },
        half_open_probes: 2,
        ..BreakerConfig::default()
    }
}

fn breaker(config: BreakerConfig, t0: Instant) -> Breaker {
    Breaker::new("r", config, Events::new(), t0).unwrap()
}

fn outcome(b: &Breaker, o: Outcome, at: Instant) {
    let p = b.try_acquire(|| at).expect("admitted");
    b.record(p, o, None, || at);
}

fn fail(b: &Breaker, at: Instant, n: usize) {
    for _ in 0..n {
        outcome(b, Outcome::Failure, at);
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn a_raised_threshold_does_not_trip_at_the_old_count() {
    let t0 = Instant::now();
    let b = breaker(BreakerConfig { consecutive_failures: Some(3), ..config() }, t0);
    fail(&b, t0, 2);
    b.reconfigure(BreakerConfig { consecutive_failures: Some(5), ..config() }).unwrap();
    fail(&b, t0, 2);
    assert_eq!(b.state(), BreakerState::Closed, "4 failures in a row: over the old 3, under the new 5");
    fail(&b, t0, 1);
    assert_eq!(b.state(), BreakerState::Open, "the streak was kept across the reconfiguration");

    // The same for the failure rate: 3 of 5 trips at 0.5, not at 0.7.
    let b = breaker(BreakerConfig { failure_rate: Some(0.5), ..config() }, t0);
    b.reconfigure(BreakerConfig { failure_rate: Some(0.7), ..config() }).unwrap();
    for o in [Outcome::Success, Outcome::Failure, Outcome::Success, Outcome::Failure, Outcome::Failure] {
        outcome(&b, o, t0);
    }
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn a_lowered_threshold_trips_at_the_new_count_on_the_next_outcome() {
    let t0 = Instant::now();
    let b = breaker(BreakerConfig { consecutive_failures: Some(5), ..config() }, t0);
    fail(&b, t0, 3);
    b.reconfigure(BreakerConfig { consecutive_failures: Some(2), ..config() }).unwrap();
    assert_eq!(b.state(), BreakerState::Closed, "a reconfiguration trips nothing by itself");
    assert_eq!(b.stats().transitions, 0);
    fail(&b, t0, 1);
    assert_eq!(b.state(), BreakerState::Open, "the next failure is judged by the new limit");

    // A success after the reconfiguration clears the streak instead.
    let b = breaker(BreakerConfig { consecutive_failures: Some(5), ..config() }, t0);
    fail(&b, t0, 3);
    b.reconfigure(BreakerConfig { consecutive_failures: Some(2), ..config() }).unwrap();
    outcome(&b, Outcome::Success, t0);
    fail(&b, t0, 1);
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b, t0, 1);
    assert_eq!(b.state(), BreakerState::Open);

    // The rate, over a window kept across the reconfiguration: 2 of 4
    // failed, under 0.9; at 0.5 the next failure (3 of 5) trips.
    let b = breaker(BreakerConfig { failure_rate: Some(0.9), ..config() }, t0);
    for o in [Outcome::Failure, Outcome::Success, Outcome::Failure, Outcome::Success] {
        outcome(&b, o, t0);
    }
    b.reconfigure(BreakerConfig { failure_rate: Some(0.5), ..config() }).unwrap();
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.window(t0).calls, 4, "same window shape: its calls are kept");
    fail(&b, t0, 1);
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn an_invalid_config_is_refused_with_the_constructors_error_and_changes_nothing() {
    let t0 = Instant::now();
    let good = BreakerConfig { consecutive_failures: Some(3), ..config() };
    let b = breaker(good.clone(), t0);
    fail(&b, t0, 2);
    let bad = [
        BreakerConfig { failure_rate: Some(1.5), ..good.clone() },
        BreakerConfig { window: WindowConfig::Count { size: 0 }, ..good.clone() },
        BreakerConfig { window: WindowConfig::Count { size: 1 << 20 }, ..good.clone() },
        BreakerConfig { window: WindowConfig::Time { span: secs(10), buckets: 0 }, ..good.clone() },
        BreakerConfig { window: WindowConfig::Time { span: Duration::from_millis(5), buckets: 10 }, ..good.clone() },
        BreakerConfig { minimum_calls: 11, ..good.clone() },
        BreakerConfig { consecutive_failures: Some(0), ..good.clone() },
        BreakerConfig { half_open_probes: 0, ..good.clone() },
        BreakerConfig { open_wait: OpenWaitConfig { jitter: 1.0, ..good.open_wait }, ..good.clone() },
        BreakerConfig { slow_calls: Some(SlowCallConfig { threshold: Duration::ZERO, rate: 0.5 }), ..good.clone() },
    ];
    for config in bad {
        let built = Breaker::new("x", config.clone(), Events::new(), t0).unwrap_err();
        assert_eq!(b.reconfigure(config.clone()).unwrap_err(), built, "{config:?}");
    }
    assert_eq!(
        b.reconfigure(BreakerConfig { failure_rate: Some(1.5), ..good.clone() }).unwrap_err(),
        ConfigError::new("failure_rate", "must be in (0, 1], got 1.5")
    );
    assert_eq!(
        b.reconfigure(BreakerConfig { window: WindowConfig::Count { size: 0 }, ..good.clone() }).unwrap_err(),
        ConfigError::new("window", format!("size 0 must be in 1..={}", ha_breaker::config::MAX_WINDOW_CALLS))
    );
    // The old config is in force: the window and the streak are intact and
    // the third failure trips, as it would have without the attempts.
    assert_eq!(b.config(), good);
    assert_eq!(b.window(t0).calls, 2);
    fail(&b, t0, 1);
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn an_open_breaker_stays_open_until_its_deadline_and_the_next_trip_uses_the_new_wait() {
    let t0 = Instant::now();
    let b = breaker(BreakerConfig { consecutive_failures: Some(1), half_open_probes: 1, ..config() }, t0);
    fail(&b, t0, 1);
    let before = b.stats();
    let new_wait = OpenWaitConfig { base: secs(10), multiplier: 1.0, max: secs(10), ..config().open_wait };
    b.reconfigure(BreakerConfig {
        consecutive_failures: Some(1),
        half_open_probes: 1,
        open_wait: new_wait,
        ..config()
    })
    .unwrap();
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.stats(), before, "the counters are kept");
    assert_eq!(b.retry_after(t0), Some(secs(1)), "the deadline set by the old config stands");
    assert!(b.try_acquire(|| t0 + Duration::from_millis(999)).is_err());
    let probe = b.try_acquire(|| t0 + secs(1)).expect("a probe once the old deadline passed");
    assert!(probe.is_probe());
    b.record(probe, Outcome::Failure, None, || t0 + secs(1));
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.retry_after(t0 + secs(1)), Some(secs(10)), "the reopening waits by the new policy");
}

#[test]
fn a_half_open_breaker_keeps_its_probes_and_decides_by_the_new_count() {
    let t0 = Instant::now();
    let t1 = t0 + secs(1);
    // Fewer probes: with one answer of two, a new limit of 1 means the
    // next answer decides; the permits already out stay valid.
    let b = breaker(BreakerConfig { consecutive_failures: Some(1), half_open_probes: 3, ..config() }, t0);
    fail(&b, t0, 1);
    let (p1, p2) = (b.try_acquire(|| t1).unwrap(), b.try_acquire(|| t1).unwrap());
    b.record(p1, Outcome::Success, None, || t1);
    b.reconfigure(BreakerConfig { consecutive_failures: Some(1), half_open_probes: 2, ..config() }).unwrap();
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(b.retry_after(t1), Some(Duration::ZERO), "two permits out: the new limit of 2 is reached");
    assert!(b.try_acquire(|| t1).is_err());
    b.record(p2, Outcome::Success, None, || t1);
    assert_eq!(b.state(), BreakerState::Closed);

    // More probes: a third is admitted, and two answers no longer decide.
    let b = breaker(BreakerConfig { consecutive_failures: Some(1), ..config() }, t0);
    fail(&b, t0, 1);
    let (p1, p2) = (b.try_acquire(|| t1).unwrap(), b.try_acquire(|| t1).unwrap());
    assert!(b.try_acquire(|| t1).is_err(), "2 probes under the old config");
    b.reconfigure(BreakerConfig { consecutive_failures: Some(1), half_open_probes: 3, ..config() }).unwrap();
    let p3 = b.try_acquire(|| t1).expect("a third probe under the new config");
    b.record(p1, Outcome::Success, None, || t1);
    b.record(p2, Outcome::Success, None, || t1);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    b.record(p3, Outcome::Failure, None, || t1);
    assert_eq!(b.state(), BreakerState::Closed, "1 failure of 3 is under the default 0.5");
}

#[test]
fn a_new_window_shape_starts_afresh_and_the_same_shape_keeps_its_calls() {
    let t0 = Instant::now();
    let b = breaker(BreakerConfig { failure_rate: Some(0.5), ..config() }, t0);
    fail(&b, t0, 3);
    assert_eq!(b.window(t0).calls, 3);

    // Same shape, other thresholds: kept.
    b.reconfigure(BreakerConfig { failure_rate: Some(0.6), minimum_calls: 5, ..config() }).unwrap();
    assert_eq!(b.window(t0).calls, 3);

    // A larger count window: empty, and the rate needs `minimum_calls` anew.
    let bigger = BreakerConfig { failure_rate: Some(0.5), window: WindowConfig::Count { size: 20 }, ..config() };
    b.reconfigure(bigger.clone()).unwrap();
    assert_eq!(b.window(t0).calls, 0);
    fail(&b, t0, 3);
    assert_eq!(b.state(), BreakerState::Closed, "3 calls in the new window, under minimum 4");
    assert_eq!(b.window(t0).failures, 3);

    // Back to the first shape: its window is reused, emptied.
    b.reconfigure(BreakerConfig { failure_rate: Some(0.5), ..config() }).unwrap();
    assert_eq!(b.window(t0).calls, 0);
    // A time window: counted by time from now on.
    let timed = BreakerConfig {
        failure_rate: Some(0.5),
        window: WindowConfig::Time { span: secs(10), buckets: 10 },
        ..config()
    };
    b.reconfigure(timed).unwrap();
    assert!(b.needs_clock());
    assert_eq!(b.window(t0).calls, 0);
    fail(&b, t0 + secs(1), 2);
    assert_eq!(b.window(t0 + secs(2)).calls, 2);
    assert_eq!(b.window(t0 + secs(12)).calls, 0, "slid out of the 10 s span");
    fail(&b, t0 + secs(20), 4);
    assert_eq!(b.state(), BreakerState::Open);
    let m = b.stats();
    assert_eq!((m.calls, m.failures, m.transitions), (12, 12, 1), "the counters span every window");
}

#[test]
fn cancelled_handling_slow_calls_and_reject_mode_follow_the_new_config() {
    let t0 = Instant::now();
    let b = breaker(BreakerConfig { consecutive_failures: Some(2), ..config() }, t0);
    assert!(!b.measures_duration());
    assert_eq!(b.reject_mode(), RejectMode::FailFast);

    let p = b.try_acquire(|| t0).unwrap();
    b.cancel(p, || t0);
    assert_eq!(b.stats().ignored, 1);
    b.reconfigure(BreakerConfig {
        consecutive_failures: Some(2),
        cancelled: CancelledAs::Failure,
        slow_calls: Some(SlowCallConfig { threshold: Duration::from_millis(100), rate: 1.0 }),
        reject_mode: RejectMode::NotReady,
        ..config()
    })
    .unwrap();
    assert!(b.measures_duration());
    assert_eq!(b.reject_mode(), RejectMode::NotReady);
    let p = b.try_acquire(|| t0).unwrap();
    b.record(p, Outcome::Success, Some(Duration::from_millis(150)), || t0);
    assert_eq!(b.stats().slow_calls, 1);
    for _ in 0..2 {
        let p = b.try_acquire(|| t0).unwrap();
        b.cancel(p, || t0);
    }
    assert_eq!(b.state(), BreakerState::Open, "two cancelled calls are now two failures");
}

#[test]
fn a_permit_taken_before_a_reconfiguration_is_recorded_under_the_new_rules() {
    let t0 = Instant::now();
    let b = breaker(BreakerConfig { consecutive_failures: Some(3), ..config() }, t0);
    fail(&b, t0, 1);
    let in_flight = b.try_acquire(|| t0).unwrap();
    b.reconfigure(BreakerConfig { consecutive_failures: Some(2), ..config() }).unwrap();
    b.record(in_flight, Outcome::Failure, None, || t0);
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn each_reconfiguration_is_traced_and_changes_no_state() {
    let t0 = Instant::now();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let events = Events::new().with_observer(move |e: &Event| sink.lock().unwrap().push(e.clone()));
    let b = Breaker::new("r", config(), events, t0).unwrap();
    for _ in 0..3 {
        b.reconfigure(BreakerConfig { consecutive_failures: Some(4), ..config() }).unwrap();
    }
    assert!(seen.lock().unwrap().is_empty(), "a reconfiguration is not a state change");
    assert_eq!(b.stats().transitions, 0);
}

#[test]
fn keyed_breakers_reconfigure_every_key_and_the_keys_made_later() {
    let t0 = Instant::now();
    let keyed = KeyedBreakers::<u32>::new(
        KeyedConfig { breaker: BreakerConfig { consecutive_failures: Some(3), ..config() }, ..Default::default() },
        Events::new(),
    )
    .unwrap();
    let one = keyed.breaker_for(&1, t0);
    fail(&one, t0, 2);
    let stricter = BreakerConfig { consecutive_failures: Some(2), ..config() };

    let bad =
        KeyedConfig { breaker: BreakerConfig { failure_rate: Some(1.5), ..stricter.clone() }, ..Default::default() };
    assert_eq!(keyed.reconfigure(bad.clone()).unwrap_err(), KeyedBreakers::<u32>::new(bad, Events::new()).unwrap_err());
    assert_eq!(
        keyed.reconfigure(KeyedConfig { max_keys: 0, ..Default::default() }).unwrap_err(),
        ConfigError::new("max_keys", "must be at least 1")
    );
    assert_eq!(one.config().consecutive_failures, Some(3), "refused: the old config stays");

    keyed.reconfigure(KeyedConfig { breaker: stricter.clone(), max_keys: 2, ..Default::default() }).unwrap();
    assert_eq!(one.config(), stricter);
    assert_eq!(one.state(), BreakerState::Closed);
    fail(&one, t0, 1);
    assert_eq!(one.state(), BreakerState::Open, "key 1 kept its streak and trips at the new limit");
    let two = keyed.breaker_for(&2, t0);
    assert_eq!(two.config(), stricter);
    assert_eq!(keyed.config().max_keys, 2);
    keyed.breaker_for(&3, t0 + secs(1));
    assert_eq!(keyed.len(), 2, "the new max_keys bounds the map");
}

#[test]
fn lowering_max_keys_evicts_down_to_it_on_the_next_new_key() {
    let t0 = Instant::now();
    let keyed = KeyedBreakers::<u32>::new(KeyedConfig::default(), Events::new()).unwrap();
    for k in 0..5 {
        keyed.breaker_for(&k, t0 + Duration::from_millis(u64::from(k)));
    }
    keyed.reconfigure(KeyedConfig { max_keys: 2, ..Default::default() }).unwrap();
    assert_eq!(keyed.len(), 5, "nothing is evicted by the reconfiguration itself");
    keyed.breaker_for(&9, t0 + secs(1));
    assert_eq!(keyed.len(), 2);
    assert!(keyed.get(&4).is_some() && keyed.get(&9).is_some(), "the most recently used stay");
    assert_eq!(keyed.evicted(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_service_follows_a_reject_mode_changed_after_it_was_built() {
    let t0 = Instant::now();
    let b = Arc::new(breaker(BreakerConfig { consecutive_failures: Some(1), half_open_probes: 1, ..config() }, t0));
    let mut svc = CircuitBreaker::new(
        service_fn(|fail: bool| async move {
            if fail {
                Err("down")
            } else {
                Ok(())
            }
        }),
        b.clone(),
    );
    svc.ready().await.unwrap().call(true).await.unwrap_err();
    let err: BoxError = svc.ready().await.unwrap().call(false).await.unwrap_err();
    assert!(err.downcast_ref::<BreakerOpen>().is_some(), "fails fast");

    let not_ready = RejectMode::NotReady;
    b.reconfigure(BreakerConfig {
        consecutive_failures: Some(1),
        half_open_probes: 1,
        reject_mode: not_ready,
        ..config()
    })
    .unwrap();
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(svc.poll_ready(&mut cx).is_pending(), "now pending while open");
    tokio::time::advance(secs(1)).await;
    assert!(svc.poll_ready(&mut cx).is_ready(), "ready once a probe may go");
    svc.call(false).await.unwrap();
    assert_eq!(b.state(), BreakerState::Closed);
}
