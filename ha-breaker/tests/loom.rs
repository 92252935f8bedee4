//! Loom models of the breaker's shared state.
//!
//! Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release -p ha-breaker --test loom`.
//! Each model explores every interleaving of its threads (up to the
//! preemption bound): half-open never has more probes in flight than its
//! limit, concurrent outcomes trip the breaker exactly once, and an outcome
//! racing a reconfiguration is judged by the old config or the new one,
//! never by a mix.
#![cfg(loom)]

use std::time::Duration;

use ha_breaker::{Breaker, BreakerConfig, OpenWaitConfig, WindowConfig};
use ha_core::event::{BreakerState, Event, Events};
use ha_core::sync::atomic::{AtomicUsize, Ordering};
use ha_core::sync::Arc;
use ha_core::{Instant, Outcome};
use loom::thread;

fn config(probes: u32) -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: Some(2),
        failure_rate: Some(0.5),
        window: WindowConfig::Count { size: 4 },
        minimum_calls: 2,
        open_wait: OpenWaitConfig {
            base: Duration::from_secs(1),
            max: Duration::from_secs(1),
            jitter: 0.0,
            ..OpenWaitConfig::default()
        },
        half_open_probes: probes,
        ..BreakerConfig::default()
    }
}

/// A breaker counting its transition events, tripped open at `t0` when `open`.
fn breaker(probes: u32, t0: Instant, open: bool) -> (Arc<Breaker>, Arc<AtomicUsize>) {
    let opened = Arc::new(AtomicUsize::new(0));
    let sink = opened.clone();
    let events = Events::new().with_observer(move |e: &Event| {
        if let Event::BreakerStateChanged { to: BreakerState::Open, .. } = e {
            sink.fetch_add(1, Ordering::SeqCst);
        }
    });
    let b = Breaker::new("loom", config(probes), events, t0).unwrap();
    if open {
        for _ in 0..2 {
            let p = b.try_acquire(|| t0).unwrap();
            b.record(p, Outcome::Failure, None, || t0);
        }
        assert_eq!(b.state(), BreakerState::Open);
    }
    (Arc::new(b), opened)
}

#[test]
fn half_open_never_has_more_probes_in_flight_than_its_limit() {
    loom::model(|| {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(2);
        let (b, _) = breaker(1, t0, true);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let admitted = Arc::new(AtomicUsize::new(0));
        let probe = |b: Arc<Breaker>, in_flight: Arc<AtomicUsize>, admitted: Arc<AtomicUsize>, outcome: Outcome| {
            move || {
                if let Ok(p) = b.try_acquire(|| later) {
                    if !p.is_probe() {
                        // The success probe already closed the breaker.
                        b.record(p, outcome, None, || later);
                        return;
                    }
                    admitted.fetch_add(1, Ordering::SeqCst);
                    let before = in_flight.fetch_add(1, Ordering::SeqCst);
                    assert_eq!(before, 0, "a second probe was admitted while one was in flight");
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    b.record(p, outcome, None, || later);
                }
            }
        };
        // One probe gives its permit back (ignored), so another may follow it,
        // but never alongside it.
        let t1 = thread::spawn(probe(b.clone(), in_flight.clone(), admitted.clone(), Outcome::Ignored));
        let t2 = thread::spawn(probe(b.clone(), in_flight.clone(), admitted.clone(), Outcome::Ignored));
        probe(b.clone(), in_flight.clone(), admitted.clone(), Outcome::Success)();
        t1.join().unwrap();
        t2.join().unwrap();
        assert!(admitted.load(Ordering::SeqCst) >= 1, "the first asker after the wait is admitted");
        // Only a counted outcome can decide: closed if the success probe ran, else still half-open.
        let state = b.state();
        assert!(matches!(state, BreakerState::Closed | BreakerState::HalfOpen), "{state:?}");
    });
}

#[test]
fn two_probe_slots_are_never_exceeded_and_the_decision_is_made_once() {
    loom::model(|| {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(2);
        let (b, opened) = breaker(2, t0, true);
        let take = |b: Arc<Breaker>| move || b.try_acquire(|| later).ok();
        let h1 = thread::spawn(take(b.clone()));
        let h2 = thread::spawn(take(b.clone()));
        let p3 = take(b.clone())();
        let permits: Vec<_> = [h1.join().unwrap(), h2.join().unwrap(), p3].into_iter().flatten().collect();
        assert_eq!(permits.len(), 2, "exactly the two probe slots are handed out");
        // Both probes fail concurrently: the breaker reopens exactly once.
        let mut ps = permits.into_iter();
        let (p1, p2) = (ps.next().unwrap(), ps.next().unwrap());
        let b1 = b.clone();
        let h = thread::spawn(move || b1.record(p1, Outcome::Failure, None, || later));
        b.record(p2, Outcome::Failure, None, || later);
        h.join().unwrap();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(opened.load(Ordering::SeqCst), 2, "one trip from closed, one reopen");
        assert_eq!(b.stats().transitions, 3);
    });
}

#[test]
fn concurrent_failures_trip_exactly_once() {
    loom::model(|| {
        let t0 = Instant::now();
        let (b, opened) = breaker(1, t0, false);
        let permits: Vec<_> = (0..3).map(|_| b.try_acquire(|| t0).unwrap()).collect();
        let (p1, p2, p3) = (permits[0], permits[1], permits[2]);
        let b1 = b.clone();
        let h = thread::spawn(move || b1.record(p1, Outcome::Failure, None, || t0));
        // A success races the failures and may break their streak.
        b.record(p3, Outcome::Success, None, || t0);
        b.record(p2, Outcome::Failure, None, || t0);
        h.join().unwrap();
        // Whatever the order, some failure sees at least half of at least
        // two calls failed (or a streak of two) and trips; exactly one thread
        // performs the trip and emits its event. A failure recorded after the
        // trip is counted but does not trip again.
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        let m = b.stats();
        assert_eq!((m.failures, m.transitions), (2, 1));
    });
}

#[test]
fn a_call_racing_the_trip_is_admitted_before_it_or_rejected_after_it() {
    loom::model(|| {
        let t0 = Instant::now();
        let mut cfg = config(1);
        cfg.consecutive_failures = Some(1);
        let b = Arc::new(Breaker::new("loom", cfg, Events::new(), t0).unwrap());
        let p = b.try_acquire(|| t0).unwrap();
        let b1 = b.clone();
        let h = thread::spawn(move || b1.record(p, Outcome::Failure, None, || t0));
        let racer = b.try_acquire(|| t0);
        h.join().unwrap();
        assert_eq!(b.state(), BreakerState::Open);
        match racer {
            // Admitted in the closed period: its outcome cannot close the breaker.
            Ok(p) => {
                assert!(!p.is_probe());
                b.record(p, Outcome::Success, None, || t0);
                assert_eq!(b.state(), BreakerState::Open);
            }
            Err(open) => {
                assert_eq!(open.retry_after(), Duration::from_secs(1));
                assert_eq!(b.stats().rejections, 1);
            }
        }
    });
}

#[test]
fn racing_records_are_all_counted() {
    loom::model(|| {
        let t0 = Instant::now();
        let mut cfg = config(1);
        cfg.consecutive_failures = None;
        cfg.failure_rate = None;
        cfg.window = WindowConfig::Count { size: 2 };
        let b = Arc::new(Breaker::new("loom", cfg, Events::new(), t0).unwrap());
        let (p1, p2) = (b.try_acquire(|| t0).unwrap(), b.try_acquire(|| t0).unwrap());
        let b1 = b.clone();
        let h = thread::spawn(move || b1.record(p1, Outcome::Failure, None, || t0));
        b.record(p2, Outcome::Success, None, || t0);
        h.join().unwrap();
        // Racing records take distinct slots and the totals are never torn.
        let w = b.window(t0);
        assert_eq!((w.calls, w.failures), (2, 1), "{w:?}");
        assert_eq!(b.stats().failures, 1, "the failure counter is exact");
    });
}

/// A breaker at `t0` holding one failure (a streak of one, one failed call
/// in its count window of 4).
fn with_one_failure(config: BreakerConfig, t0: Instant) -> Arc<Breaker> {
    let b = Breaker::new("loom", config, Events::new(), t0).unwrap();
    let p = b.try_acquire(|| t0).unwrap();
    b.record(p, Outcome::Failure, None, || t0);
    Arc::new(b)
}

#[test]
fn an_outcome_racing_a_reconfiguration_is_judged_by_one_whole_config() {
    loom::model(|| {
        let t0 = Instant::now();
        // Each config trips on a second failure, by a different rule; a mix
        // of the two (neither rule on) would not.
        let old = BreakerConfig { consecutive_failures: Some(2), failure_rate: None, ..config(1) };
        let new = BreakerConfig { consecutive_failures: None, failure_rate: Some(0.5), ..config(1) };
        let b = with_one_failure(old, t0);
        let p = b.try_acquire(|| t0).unwrap();
        let b1 = b.clone();
        let new1 = new.clone();
        let h = thread::spawn(move || b1.reconfigure(new1).unwrap());
        b.record(p, Outcome::Failure, None, || t0);
        h.join().unwrap();
        assert_eq!(b.state(), BreakerState::Open, "judged by a mix of the two configs");
        let m = b.stats();
        assert_eq!((m.calls, m.failures, m.transitions), (2, 2, 1));
        assert_eq!(b.config(), new);
        assert_eq!(b.window(t0).calls, 2, "same window shape: both calls kept");
    });
}

#[test]
fn a_threshold_raised_while_an_outcome_is_recorded_applies_wholly_or_not_at_all() {
    loom::model(|| {
        let t0 = Instant::now();
        let old = BreakerConfig { consecutive_failures: Some(2), failure_rate: None, ..config(1) };
        let new = BreakerConfig { consecutive_failures: Some(3), failure_rate: None, ..config(1) };
        let b = with_one_failure(old, t0);
        let p = b.try_acquire(|| t0).unwrap();
        let b1 = b.clone();
        let h = thread::spawn(move || b1.reconfigure(new).unwrap());
        b.record(p, Outcome::Failure, None, || t0);
        h.join().unwrap();
        // Old rules: the second failure trips; new ones: it does not. Either
        // way the counters agree with the state, and the third failure is
        // judged by the new limit.
        let m = b.stats();
        assert_eq!((m.calls, m.failures), (2, 2));
        match b.state() {
            BreakerState::Open => assert_eq!(m.transitions, 1),
            BreakerState::Closed => {
                assert_eq!(m.transitions, 0);
                let p = b.try_acquire(|| t0).unwrap();
                b.record(p, Outcome::Failure, None, || t0);
                assert_eq!(b.state(), BreakerState::Open);
            }
            s => panic!("{s:?}"),
        }
    });
}

#[test]
fn a_window_reshaped_while_outcomes_are_recorded_loses_at_most_the_racing_one() {
    loom::model(|| {
        let t0 = Instant::now();
        let quiet = BreakerConfig { consecutive_failures: None, failure_rate: None, ..config(1) };
        let reshaped = BreakerConfig { window: WindowConfig::Count { size: 3 }, ..quiet.clone() };
        let b = with_one_failure(quiet, t0);
        let p = b.try_acquire(|| t0).unwrap();
        let b1 = b.clone();
        let h = thread::spawn(move || b1.reconfigure(reshaped).unwrap());
        b.record(p, Outcome::Failure, None, || t0);
        h.join().unwrap();
        // The racing failure went to the old window (lost with it) or the
        // new one; the counters have both failures either way.
        let w = b.window(t0);
        assert!(w.calls <= 1 && w.failures == w.calls, "{w:?}");
        assert_eq!(b.stats().failures, 2);
        let p = b.try_acquire(|| t0).unwrap();
        b.record(p, Outcome::Success, None, || t0);
        assert_eq!(b.window(t0).calls, w.calls + 1, "later calls go to the new window");
    });
}
