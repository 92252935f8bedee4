//! The breaker against a plain reference model: the same random sequence of
//! call starts, outcomes, durations and time steps, the same state after
//! every step.

use std::collections::VecDeque;
use std::time::Duration;

use ha_breaker::{Breaker, BreakerConfig, OpenWaitConfig, Permit, SlowCallConfig, WindowConfig};
use ha_core::event::BreakerState;
use ha_core::{Events, Instant, Outcome};
use proptest::prelude::*;

const WINDOW: usize = 8;
const MINIMUM: usize = 4;
const CONSECUTIVE: u32 = 3;
const PROBES: u64 = 2;
const SLOW_MS: u64 = 100;

fn config() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: Some(CONSECUTIVE),
        failure_rate: Some(0.5),
        slow_calls: Some(SlowCallConfig { threshold: Duration::from_millis(SLOW_MS), rate: 0.75 }),
        window: WindowConfig::Count { size: WINDOW as u32 },
        minimum_calls: MINIMUM as u32,
        open_wait: OpenWaitConfig {
            base: Duration::from_millis(1000),
            multiplier: 2.0,
            max: Duration::from_millis(5000),
            jitter: 0.0,
            reset_after: Duration::from_millis(10_000),
        },
        half_open_probes: PROBES as u32,
        ..BreakerConfig::default()
    }
}

/// The reference: the specification written as plainly as possible.
#[derive(Debug)]
struct Model {
    state: BreakerState,
    /// Bumped on every transition; a call remembers the period it was admitted in.
    period: u64,
    window: VecDeque<(bool, bool)>,
    streak: u32,
    trips: u32,
    closed_since_ms: u64,
    open_until_ms: u64,
    probes_issued: u64,
    probes_done: u64,
    probes_failed: u64,
    probes_slow: u64,
}

#[derive(Debug, Clone, Copy)]
struct Ticket {
    period: u64,
    probe: bool,
}

impl Model {
    fn new() -> Self {
        Model {
            state: BreakerState::Closed,
            period: 0,
            window: VecDeque::new(),
            streak: 0,
            trips: 0,
            closed_since_ms: 0,
            open_until_ms: 0,
            probes_issued: 0,
            probes_done: 0,
            probes_failed: 0,
            probes_slow: 0,
        }
    }

    fn enter(&mut self, state: BreakerState) {
        self.state = state;
        self.period += 1;
        self.probes_issued = 0;
        self.probes_done = 0;
        self.probes_failed = 0;
        self.probes_slow = 0;
    }

    fn acquire(&mut self, now_ms: u64) -> Result<Ticket, Duration> {
        match self.state {
            BreakerState::Open if now_ms >= self.open_until_ms => {
                self.enter(BreakerState::HalfOpen);
                self.probes_issued = 1;
                Ok(Ticket { period: self.period, probe: true })
            }
            BreakerState::Open => Err(Duration::from_millis(self.open_until_ms - now_ms)),
            BreakerState::HalfOpen if self.probes_issued < PROBES => {
                self.probes_issued += 1;
                Ok(Ticket { period: self.period, probe: true })
            }
            BreakerState::HalfOpen => Err(Duration::ZERO),
            _ => Ok(Ticket { period: self.period, probe: false }),
        }
    }

    fn wait_ms(&self) -> u64 {
        let grown = 1.0 * 2f64.powi(self.trips.saturating_sub(1) as i32);
        (grown.min(5.0) * 1000.0).max(1.0) as u64
    }

    fn open(&mut self, now_ms: u64) {
        if self.state == BreakerState::Closed && now_ms.saturating_sub(self.closed_since_ms) >= 10_000 {
            self.trips = 1;
        } else {
            self.trips += 1;
        }
        self.open_until_ms = now_ms + self.wait_ms();
        self.enter(BreakerState::Open);
    }

    fn record(&mut self, t: Ticket, outcome: Outcome, elapsed_ms: u64, now_ms: u64) {
        let slow = elapsed_ms >= SLOW_MS;
        let failed = outcome.is_failure();
        if t.period != self.period {
            return;
        }
        if !outcome.counts() {
            if t.probe && self.probes_issued > self.probes_done {
                self.probes_issued -= 1;
            }
            return;
        }
        if t.probe {
            self.probes_done += 1;
            self.probes_failed += u64::from(failed);
            self.probes_slow += u64::from(slow);
            if self.probes_done == PROBES {
                let n = PROBES as f64;
                if self.probes_failed as f64 / n >= 0.5 || self.probes_slow as f64 / n >= 0.75 {
                    self.open(now_ms);
                } else {
                    self.window.clear();
                    self.streak = 0;
                    self.closed_since_ms = now_ms;
                    self.enter(BreakerState::Closed);
                }
            }
            return;
        }
        self.window.push_back((failed, slow));
        if self.window.len() > WINDOW {
            self.window.pop_front();
        }
        self.streak = if failed { self.streak + 1 } else { 0 };
        if (failed || slow) && self.state == BreakerState::Closed {
            let n = self.window.len();
            let fails = self.window.iter().filter(|s| s.0).count();
            let slows = self.window.iter().filter(|s| s.1).count();
            let rate_trip = n >= MINIMUM && (fails as f64 / n as f64 >= 0.5 || slows as f64 / n as f64 >= 0.75);
            if self.streak >= CONSECUTIVE || rate_trip {
                self.open(now_ms);
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Start a call (it stays in flight until finished).
    Start,
    /// Finish the in-flight call at this index (modulo), with this outcome
    /// code (0 success, 1 failure, 2 ignored) after this many ms.
    Finish(usize, u8, u64),
    /// Let time pass.
    Advance(u64),
    /// Drop an in-flight call's future.
    Cancel(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Start),
        4 => (any::<usize>(), 0u8..3, prop_oneof![0u64..50, 90u64..300]).prop_map(|(i, o, d)| Op::Finish(i, o, d)),
        2 => prop_oneof![0u64..200, 500u64..6000, 9000u64..12000].prop_map(Op::Advance),
        1 => any::<usize>().prop_map(Op::Cancel),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn breaker_follows_the_reference_model(ops in proptest::collection::vec(op(), 1..300)) {
        let t0 = Instant::now();
        let breaker = Breaker::new("model", config(), Events::new(), t0).unwrap();
        let mut model = Model::new();
        let mut now_ms = 0u64;
        let mut in_flight: Vec<(Permit, Ticket)> = Vec::new();
        for op in ops {
            let now = t0 + Duration::from_millis(now_ms);
            match op {
                Op::Start => {
                    let real = breaker.try_acquire(|| now);
                    let want = model.acquire(now_ms);
                    match (real, want) {
                        (Ok(p), Ok(t)) => {
                            prop_assert_eq!(p.is_probe(), t.probe);
                            in_flight.push((p, t));
                        }
                        (Err(open), Err(wait)) => prop_assert_eq!(open.retry_after(), wait),
                        (real, want) => prop_assert!(false, "admission differs: {:?} vs {:?}", real, want),
                    }
                }
                Op::Finish(i, code, ms) if !in_flight.is_empty() => {
                    let (p, t) = in_flight.remove(i % in_flight.len());
                    now_ms += ms;
                    let end = t0 + Duration::from_millis(now_ms);
                    let outcome = [Outcome::Success, Outcome::Failure, Outcome::Ignored][code as usize];
                    breaker.record(p, outcome, Some(Duration::from_millis(ms)), || end);
                    model.record(t, outcome, ms, now_ms);
                }
                Op::Cancel(i) if !in_flight.is_empty() => {
                    let (p, t) = in_flight.remove(i % in_flight.len());
                    breaker.cancel(p, || now);
                    model.record(t, Outcome::Ignored, 0, now_ms);
                }
                Op::Advance(ms) => now_ms += ms,
                _ => {}
            }
            prop_assert_eq!(breaker.state(), model.state, "model: {:?}", model);
            let w = breaker.window(t0 + Duration::from_millis(now_ms));
            prop_assert_eq!(w.calls as usize, model.window.len());
            prop_assert_eq!(w.failures as usize, model.window.iter().filter(|s| s.0).count());
            prop_assert_eq!(w.slow as usize, model.window.iter().filter(|s| s.1).count());
        }
    }
}
