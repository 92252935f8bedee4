//! The breaker's state machine, sans IO: it is handed the time and the
//! outcomes, and answers whether a call may go.
//!
//! [`Breaker`] is what the tower service wraps, what the keyed breaker keeps
//! one of per key, and what a balancer reads ([`Breaker::is_open`]). It is
//! lock-free: admission while closed is one atomic load; recording a success
//! into a window full of successes is a few loads and a counter store, with
//! no read-modify-write; a failure costs a few atomic adds; transitions are
//! single compare-and-swaps on one word, so exactly one thread performs each
//! and emits its event. (Only the waker list of the not-ready mode is behind
//! a mutex, touched on transitions and by pending `poll_ready`s, and the
//! config, read on a trip for its open-wait policy.)
//!
//! [`Breaker::reconfigure`] replaces the config of a running breaker
//! without making the call path lock: the thresholds an outcome is judged
//! by live in atomics, published as a whole (an outcome sees one config's
//! rules, never a mix), and a window of a new shape is switched in by one
//! atomic store.
//!
//! Time is a closure (`now: impl Now`) called only when the
//! decision needs it: never on the closed success path with a count window.
//!
//! ```
//! use ha_breaker::{Breaker, BreakerConfig};
//! use ha_core::{event::BreakerState, Events, Outcome};
//! use tokio::time::Instant;
//!
//! let t0 = Instant::now();
//! let config = BreakerConfig { consecutive_failures: Some(2), ..Default::default() };
//! let breaker = Breaker::new("db", config, Events::new(), t0).unwrap();
//! for _ in 0..2 {
//!     let permit = breaker.try_acquire(|| t0).unwrap();
//!     breaker.record(permit, Outcome::Failure, None, || t0);
//! }
//! assert_eq!(breaker.state(), BreakerState::Open);
//! let open = breaker.try_acquire(|| t0).unwrap_err();
//! assert!(open.retry_after() > std::time::Duration::ZERO);
//! ```

use std::fmt;
use std::sync::Arc as StdArc;
use std::task::Waker;
use std::time::Duration;

use ha_core::error::BreakerOpen;
use ha_core::event::{BreakerState, Event, Events};
use ha_core::rng::FastRng;
use ha_core::stats::{Sample, WindowStats};
use ha_core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use ha_core::sync::{LockExt, Mutex};
use ha_core::{Instant, Now, Outcome};

use crate::config::{BreakerConfig, CancelledAs, ConfigError, OpenWaitConfig, RejectMode};
use crate::rules::{LiveRules, Rules};
use crate::state::*;
use ha_core::sync::CachePadded as Padded;

use crate::window::{Window, Windows};

/// Leave to make one call, from [`Breaker::try_acquire`]. Hand it back with
/// [`Breaker::record`] or [`Breaker::cancel`]; a half-open probe permit that
/// is neither blocks one probe slot until the breaker changes state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a permit must be handed back with record() or cancel()"]
pub struct Permit {
    gen: u64,
    kind: PermitKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermitKind {
    /// Closed or metrics-only: the outcome goes to the window.
    Normal,
    /// Half-open: the outcome goes to the probe tally.
    Probe,
    /// Disabled: nothing is recorded.
    Untracked,
}

impl Permit {
    /// True for a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.kind == PermitKind::Probe
    }

    /// True when the outcome will be recorded (the breaker was not disabled).
    pub fn is_tracked(&self) -> bool {
        self.kind != PermitKind::Untracked
    }
}

/// Counters of one breaker since it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BreakerStats {
    /// Calls whose outcome was recorded (ignored ones excluded). Counted
    /// with a plain load and store rather than a locked add, to keep the
    /// success path free of read-modify-writes: exact while one thread
    /// records at a time, it may miss a call when two record at the same
    /// instant. Every other counter is exact.
    pub calls: u64,
    /// Of those, failures.
    pub failures: u64,
    /// Of those, slow calls.
    pub slow_calls: u64,
    /// Calls with an ignored outcome (including cancelled ones by default).
    pub ignored: u64,
    /// Calls rejected because the breaker was open (in
    /// [`RejectMode::Advisory`], calls it advised against, which went through).
    pub rejections: u64,
    /// State transitions.
    pub transitions: u64,
}

/// The old name of [`BreakerStats`].
#[deprecated(note = "renamed to `BreakerStats`")]
pub type Metrics = BreakerStats;

/// A circuit breaker's shared state; see the [module](self) docs.
pub struct Breaker {
    state: Padded<AtomicU64>,
    consecutive: Padded<AtomicU32>,
    /// Closed-state calls recorded; see [`BreakerStats::calls`].
    calls: Padded<AtomicU64>,
    windows: Windows,
    rules: LiveRules,
    /// The slow-call threshold in ns, [`NOT_SLOW`] when slow calls are not
    /// detected. Apart from [`Rules`]: it is read on every measured call,
    /// and alone it is always one config's value.
    slow_threshold: AtomicU64,
    cancelled_fails: AtomicBool,
    /// The [`RejectMode`], as [`mode_code`].
    reject_mode: AtomicU8,
    /// `open_wait.base` in ms, for rejections that race a trip.
    open_base_ms: AtomicU64,
    /// generation << 43 | open deadline in ms since `epoch`: a deadline is
    /// only believed by the generation that set it.
    deadline: AtomicU64,
    /// ms since `epoch` when the breaker last entered Closed.
    closed_since: AtomicU64,
    /// Times the breaker entered Closed after its start.
    closings: AtomicU64,
    /// Trips since the wait was last reset.
    trips: AtomicU32,
    failures: AtomicU64,
    slow_calls: AtomicU64,
    ignored: AtomicU64,
    rejections: AtomicU64,
    transitions: AtomicU64,
    probe_calls: AtomicU64,
    waiters: Mutex<Vec<Waker>>,
    /// The config in force. Locked only by `config()`, `reconfigure` (which
    /// it serialises) and a trip (for the open-wait policy): never per call.
    config: Mutex<BreakerConfig>,
    epoch: Instant,
    seed: u64,
    name: StdArc<str>,
    events: Events,
}

const DEADLINE_BITS: u32 = 43;
const DEADLINE_MASK: u64 = (1 << DEADLINE_BITS) - 1;
/// `slow_threshold` when slow calls are not detected.
const NOT_SLOW: u64 = u64::MAX;

fn slow_threshold_ns(config: &BreakerConfig) -> u64 {
    config.slow_calls.map_or(NOT_SLOW, |s| s.threshold.as_nanos().min(u128::from(NOT_SLOW - 1)) as u64)
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl Breaker {
    /// A closed breaker named `name` (its endpoint or key, used in events),
    /// created at `now`.
    pub fn new(
        name: impl Into<StdArc<str>>,
        config: BreakerConfig,
        events: Events,
        now: Instant,
    ) -> Result<Breaker, ConfigError> {
        config.validate()?;
        Ok(Breaker {
            state: Padded(AtomicU64::new(Word::new(CLOSED, 0).0)),
            consecutive: Padded(AtomicU32::new(0)),
            calls: Padded(AtomicU64::new(0)),
            windows: Windows::new(config.window, now)?,
            rules: LiveRules::new(Rules::of(&config)),
            slow_threshold: AtomicU64::new(slow_threshold_ns(&config)),
            cancelled_fails: AtomicBool::new(config.cancelled == CancelledAs::Failure),
            reject_mode: AtomicU8::new(mode_code(config.reject_mode)),
            open_base_ms: AtomicU64::new(millis(config.open_wait.base)),
            deadline: AtomicU64::new(0),
            closed_since: AtomicU64::new(0),
            closings: AtomicU64::new(0),
            trips: AtomicU32::new(0),
            failures: AtomicU64::new(0),
            slow_calls: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            rejections: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
            probe_calls: AtomicU64::new(0),
            waiters: Mutex::new(Vec::new()),
            config: Mutex::new(config),
            epoch: now,
            seed: FastRng::from_entropy().next_u64(),
            name: name.into(),
            events,
        })
    }

    /// Fixes the seed of the open-wait jitter (for reproducible tests).
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration in force: the one it was built with, or the last
    /// one [`reconfigure`](Self::reconfigure) accepted. A copy, taken under
    /// the lock that serialises reconfigurations (not for the call path:
    /// [`measures_duration`](Self::measures_duration) and
    /// [`reject_mode`](Self::reject_mode) are single loads).
    pub fn config(&self) -> BreakerConfig {
        self.config.lock_or_recover().clone()
    }

    /// Replaces the configuration of a running breaker.
    ///
    /// `config` is checked as [`Breaker::new`] checks it, with the same
    /// [`ConfigError`]s; when it is rejected nothing changes. When it is
    /// accepted, every outcome recorded and every transition made from then
    /// on follows it: the trip conditions (consecutive failures, failure
    /// and slow-call rates, the slow-call threshold, `minimum_calls`), the
    /// half-open probe count and the rate that reopens, the open-wait
    /// policy (from the next trip: a deadline already set stands), what a
    /// cancelled call counts as and the reject mode.
    ///
    /// The breaker keeps its state: closed, open (until the deadline it
    /// already has), half-open (with the probes already admitted and
    /// answered), forced open, disabled or metrics-only; its trip count,
    /// its failure streak and its [`BreakerStats`]. The window keeps the calls
    /// it holds when its shape (`window`: count or time, size, span,
    /// buckets) is unchanged; a new shape starts with an empty window.
    ///
    /// Nothing trips at the moment of the reconfiguration, even when the
    /// new thresholds are already exceeded (a streak of 5 failures under a
    /// new limit of 3): the next outcome is judged by the new rules, so the
    /// next failure trips, while a success clears the streak. Likewise a
    /// half-open breaker decides on the next probe outcome if it already
    /// has as many answers as the new probe count.
    ///
    /// Calls in flight are not disturbed: a call admitted before is
    /// recorded under whichever config is in force when it completes (one
    /// outcome is never judged by a mix of the two), and the call path
    /// takes no lock while a reconfiguration runs.
    ///
    /// ```
    /// use ha_breaker::{Breaker, BreakerConfig};
    /// use ha_core::{event::BreakerState, Events, Outcome};
    /// use tokio::time::Instant;
    ///
    /// let t0 = Instant::now();
    /// let config = BreakerConfig { consecutive_failures: Some(5), ..Default::default() };
    /// let breaker = Breaker::new("db", config.clone(), Events::new(), t0).unwrap();
    /// let fail = |b: &Breaker| b.record(b.try_acquire(|| t0).unwrap(), Outcome::Failure, None, || t0);
    /// fail(&breaker);
    /// fail(&breaker);
    ///
    /// // A bad value is refused with the error `Breaker::new` gives; nothing changes.
    /// let bad = BreakerConfig { failure_rate: Some(1.5), ..config.clone() };
    /// assert_eq!(breaker.reconfigure(bad.clone()).unwrap_err(), bad.validate().unwrap_err());
    ///
    /// // Lower the limit below the current streak of 2: nothing trips until the next failure.
    /// breaker.reconfigure(BreakerConfig { consecutive_failures: Some(2), ..config }).unwrap();
    /// assert_eq!(breaker.state(), BreakerState::Closed);
    /// assert_eq!(breaker.config().consecutive_failures, Some(2));
    /// fail(&breaker);
    /// assert_eq!(breaker.state(), BreakerState::Open);
    /// ```
    pub fn reconfigure(&self, config: BreakerConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let mut current = self.config.lock_or_recover();
        // The only step that can fail, so it goes first: an error leaves
        // everything as it was.
        let window_kept = self.windows.reshape(config.window, self.epoch)?;
        self.rules.store(&Rules::of(&config));
        self.slow_threshold.store(slow_threshold_ns(&config), Ordering::Relaxed);
        self.cancelled_fails.store(config.cancelled == CancelledAs::Failure, Ordering::Relaxed);
        self.reject_mode.store(mode_code(config.reject_mode), Ordering::Relaxed);
        self.open_base_ms.store(millis(config.open_wait.base), Ordering::Relaxed);
        *current = config;
        drop(current);
        tracing::info!(target: "ha::breaker", breaker = %self.name, window_kept, "breaker reconfigured");
        // More probe slots, or a reject mode that no longer waits: let
        // pending `poll_ready`s look again.
        self.wake_all();
        Ok(())
    }

    /// True when a call must read the clock: the window is time-based or
    /// slow calls are detected.
    pub fn needs_clock(&self) -> bool {
        self.windows.current().needs_clock() || self.measures_duration()
    }

    /// True when calls are timed for slow-call detection (one atomic load;
    /// follows [`reconfigure`](Self::reconfigure)).
    #[inline]
    pub fn measures_duration(&self) -> bool {
        self.slow_threshold.load(Ordering::Relaxed) != NOT_SLOW
    }

    /// What the service does while this breaker rejects (one atomic load;
    /// follows [`reconfigure`](Self::reconfigure)).
    #[inline]
    pub fn reject_mode(&self) -> RejectMode {
        match self.reject_mode.load(Ordering::Relaxed) {
            1 => RejectMode::NotReady,
            2 => RejectMode::Advisory,
            _ => RejectMode::FailFast,
        }
    }

    #[inline]
    fn window_now(&self) -> &Window {
        self.windows.current()
    }

    /// The current state. One atomic load: cheap enough for a balancer to
    /// read on every pick. An `Open` breaker whose wait is over still reads
    /// `Open` until a call (or `poll_ready`) moves it to `HalfOpen`.
    #[inline]
    pub fn state(&self) -> BreakerState {
        self.word().state()
    }

    /// True while calls are rejected (open or forced open). A half-open
    /// breaker reads false: it admits probes.
    #[inline]
    pub fn is_open(&self) -> bool {
        matches!(self.word().code(), OPEN | FORCED_OPEN)
    }

    /// How many times the breaker has closed since it was built: a
    /// half-open probe that succeeded, [`reset`](Self::reset) or
    /// [`metrics_only`](Self::metrics_only). An open period lies between
    /// one value and the next, through any number of half-open probes that
    /// failed and reopened it. One atomic load.
    #[inline]
    pub fn closings(&self) -> u64 {
        self.closings.load(Ordering::Relaxed)
    }

    /// While the breaker rejects, how long from `now` until it admits a
    /// probe ([`Duration::ZERO`] once the open wait is over, or when
    /// half-open with every probe permit taken; [`Duration::MAX`] when forced
    /// open); `None` while it admits calls. Two atomic loads, no transition.
    pub fn retry_after(&self, now: Instant) -> Option<Duration> {
        let w = self.word();
        match w.code() {
            OPEN => {
                let d = self.deadline.load(Ordering::Acquire);
                if d >> DEADLINE_BITS != w.gen() {
                    return Some(self.open_base());
                }
                Some(Duration::from_millis((d & DEADLINE_MASK).saturating_sub(self.ms_since_epoch(now))))
            }
            FORCED_OPEN => Some(Duration::MAX),
            HALF_OPEN if w.issued() >= self.rules.load().probes => Some(Duration::ZERO),
            _ => None,
        }
    }

    fn open_base(&self) -> Duration {
        Duration::from_millis(self.open_base_ms.load(Ordering::Relaxed))
    }

    #[inline]
    fn word(&self) -> Word {
        Word(self.state.load(Ordering::Acquire))
    }

    /// The old name of [`stats`](Self::stats).
    #[deprecated(note = "renamed to `stats`")]
    pub fn metrics(&self) -> BreakerStats {
        self.stats()
    }

    /// The counters.
    pub fn stats(&self) -> BreakerStats {
        BreakerStats {
            calls: self.calls.load(Ordering::Relaxed) + self.probe_calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            slow_calls: self.slow_calls.load(Ordering::Relaxed),
            ignored: self.ignored.load(Ordering::Relaxed),
            rejections: self.rejections.load(Ordering::Relaxed),
            transitions: self.transitions.load(Ordering::Relaxed),
        }
    }

    /// The closed-state window's contents at `now`.
    pub fn window(&self, now: Instant) -> WindowStats {
        self.window_now().snapshot(now)
    }

    /// Asks to make a call. `now` is called only when the answer depends on
    /// the time (the breaker is open). A rejection says how long until a
    /// probe is allowed: zero when half-open with every probe permit taken,
    /// [`Duration::MAX`] when forced open.
    #[inline]
    pub fn try_acquire(&self, now: impl Now) -> Result<Permit, BreakerOpen> {
        let w = self.word();
        match w.code() {
            CLOSED | METRICS_ONLY => Ok(Permit { gen: w.gen(), kind: PermitKind::Normal }),
            DISABLED => Ok(Permit { gen: w.gen(), kind: PermitKind::Untracked }),
            _ => self.acquire_slow(w, now),
        }
    }

    /// Like [`try_acquire`](Self::try_acquire), but a rejection is not counted
    /// (for `poll_ready`, which may ask many times for one call).
    pub(crate) fn poll_acquire(&self, now: impl Now) -> Result<Permit, BreakerOpen> {
        let w = self.word();
        match w.code() {
            CLOSED | METRICS_ONLY => Ok(Permit { gen: w.gen(), kind: PermitKind::Normal }),
            DISABLED => Ok(Permit { gen: w.gen(), kind: PermitKind::Untracked }),
            _ => self.acquire_contended(w, now),
        }
    }

    #[cold]
    fn acquire_slow(&self, w: Word, now: impl Now) -> Result<Permit, BreakerOpen> {
        let r = self.acquire_contended(w, now);
        if r.is_err() {
            self.rejections.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn acquire_contended(&self, mut w: Word, now: impl Now) -> Result<Permit, BreakerOpen> {
        let mut clock = LazyInstant::new(now);
        loop {
            let next = match w.code() {
                CLOSED | METRICS_ONLY => return Ok(Permit { gen: w.gen(), kind: PermitKind::Normal }),
                DISABLED => return Ok(Permit { gen: w.gen(), kind: PermitKind::Untracked }),
                FORCED_OPEN => return Err(BreakerOpen::new(Duration::MAX)),
                OPEN => {
                    let now_ms = self.ms_since_epoch(clock.get());
                    let d = self.deadline.load(Ordering::Acquire);
                    if d >> DEADLINE_BITS != w.gen() {
                        // The tripping thread has not stored this period's
                        // deadline yet: it is at least the base wait away.
                        return Err(BreakerOpen::new(self.open_base()));
                    }
                    let until = d & DEADLINE_MASK;
                    if now_ms < until {
                        return Err(BreakerOpen::new(Duration::from_millis(until - now_ms)));
                    }
                    w.next(HALF_OPEN).with_issued_plus_one()
                }
                _ => {
                    // HALF_OPEN
                    if w.issued() >= self.rules.load().probes {
                        return Err(BreakerOpen::new(Duration::ZERO));
                    }
                    w.with_issued_plus_one()
                }
            };
            match self.state.compare_exchange_weak(w.0, next.0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if w.code() == OPEN {
                        self.transitioned(BreakerState::Open, BreakerState::HalfOpen);
                    }
                    return Ok(Permit { gen: next.gen(), kind: PermitKind::Probe });
                }
                Err(actual) => w = Word(actual),
            }
        }
    }

    /// Records the outcome of the call `permit` admitted. `elapsed` is the
    /// call's duration when slow calls are detected (`None` counts as fast);
    /// `now` is called only when the window is time-based or a transition
    /// happens.
    #[inline]
    pub fn record(&self, permit: Permit, outcome: Outcome, elapsed: Option<Duration>, now: impl Now) {
        match permit.kind {
            PermitKind::Untracked => {}
            _ if !outcome.counts() => {
                self.ignored.fetch_add(1, Ordering::Relaxed);
                if permit.kind == PermitKind::Probe {
                    self.release(permit);
                }
            }
            PermitKind::Normal => {
                let slow = self.is_slow(elapsed);
                self.record_closed(permit, outcome.is_failure(), slow, now)
            }
            PermitKind::Probe => {
                let slow = self.is_slow(elapsed);
                self.record_probe(permit, outcome.is_failure(), slow, now)
            }
        }
    }

    #[inline]
    fn is_slow(&self, elapsed: Option<Duration>) -> bool {
        elapsed.is_some_and(|e| {
            let threshold = self.slow_threshold.load(Ordering::Relaxed);
            threshold != NOT_SLOW && e.as_nanos() >= u128::from(threshold)
        })
    }

    /// Hands back a permit whose call never completed (its future was
    /// dropped): counted as configured by [`BreakerConfig::cancelled`].
    pub fn cancel(&self, permit: Permit, now: impl Now) {
        let outcome = if self.cancelled_fails.load(Ordering::Relaxed) { Outcome::Failure } else { Outcome::Ignored };
        self.record(permit, outcome, None, now)
    }

    #[inline]
    fn record_closed(&self, permit: Permit, failed: bool, slow: bool, now: impl Now) {
        let calls = self.calls.load(Ordering::Relaxed);
        self.calls.store(calls.wrapping_add(1), Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        if slow {
            self.slow_calls.fetch_add(1, Ordering::Relaxed);
        }
        let w = self.word();
        if w.gen() != permit.gen {
            // Admitted before the last transition: counted, but the period
            // its outcome speaks of is over.
            return;
        }
        let mut clock = LazyInstant::new(now);
        self.window_now().record(Sample::new(failed, slow), || clock.get());
        let streak = if failed {
            self.consecutive.fetch_add(1, Ordering::AcqRel).saturating_add(1)
        } else {
            // Load first: the common case (no streak) then writes nothing.
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
            0
        };
        if (failed || slow) && w.code() == CLOSED {
            self.maybe_trip(w, streak, &mut clock);
        }
    }

    #[cold]
    fn maybe_trip<N: Now>(&self, w: Word, streak: u32, clock: &mut LazyInstant<N>) {
        let rules = self.rules.load();
        let mut trip = streak >= rules.consecutive;
        if !trip && (rules.failure_rate.is_some() || rules.slow_rate.is_some()) {
            let s = self.window_now().snapshot(|| clock.get());
            if s.calls >= rules.minimum_calls {
                trip = rules.failure_rate.is_some_and(|r| s.failure_rate() >= r)
                    || rules.slow_rate.is_some_and(|r| s.slow_rate() >= r);
            }
        }
        if trip {
            self.open(w, clock.get());
        }
    }

    fn record_probe(&self, permit: Permit, failed: bool, slow: bool, now: impl Now) {
        let mut clock = LazyInstant::new(now);
        self.probe_calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        if slow {
            self.slow_calls.fetch_add(1, Ordering::Relaxed);
        }
        let mut w = self.word();
        loop {
            if w.code() != HALF_OPEN || w.gen() != permit.gen {
                return;
            }
            let tallied = w.with_outcome(failed, slow);
            let rules = self.rules.load();
            if tallied.completed() < rules.probes {
                match self.state.compare_exchange_weak(w.0, tallied.0, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return,
                    Err(actual) => w = Word(actual),
                }
                continue;
            }
            // The last probe decides.
            let n = tallied.completed() as f64;
            let bad = tallied.failed() as f64 / n >= rules.probe_failure_rate
                || rules.slow_rate.is_some_and(|r| tallied.slow() as f64 / n >= r);
            let decided = if bad { self.open(w, clock.get()) } else { self.close_from(w, clock.get()) };
            if decided {
                return;
            }
            // Only a control call can change the word once every probe has
            // answered; look again (the loop's check sees the new state).
            w = self.word();
        }
    }

    /// Gives back a permit whose call was never sent (reserved by
    /// `poll_ready`, then the service was dropped).
    pub(crate) fn release_unused(&self, permit: Permit) {
        if permit.kind == PermitKind::Probe {
            self.release(permit);
        }
    }

    /// Gives a probe permit back without an outcome.
    fn release(&self, permit: Permit) {
        let mut w = self.word();
        while w.code() == HALF_OPEN && w.gen() == permit.gen && w.issued() > w.completed() {
            match self.state.compare_exchange_weak(
                w.0,
                w.with_issued_minus_one().0,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.wake_all();
                    return;
                }
                Err(actual) => w = Word(actual),
            }
        }
    }

    /// Moves `from` (Closed or HalfOpen) to Open; a no-op when another thread
    /// changed the state first.
    fn open(&self, from: Word, now: Instant) -> bool {
        let to = from.next(OPEN);
        if self.state.compare_exchange(from.0, to.0, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return false;
        }
        // Only the winner of the swap gets here, so the trip count and the
        // deadline have one writer per period.
        let now_ms = self.ms_since_epoch(now);
        let wait = self.config.lock_or_recover().open_wait;
        let trips = if from.code() == CLOSED
            && now_ms.saturating_sub(self.closed_since.load(Ordering::Acquire)) >= wait.reset_after.as_millis() as u64
        {
            1
        } else {
            self.trips.load(Ordering::Acquire).saturating_add(1)
        };
        self.trips.store(trips, Ordering::Release);
        let wait_ms = self.wait_ms(&wait, trips);
        let deadline = now_ms.saturating_add(wait_ms).min(DEADLINE_MASK);
        self.deadline.store((to.gen() & GEN_MASK) << DEADLINE_BITS | deadline, Ordering::Release);
        self.transitioned(from.state(), BreakerState::Open);
        true
    }

    /// The wait after the `trips`-th consecutive trip, jittered.
    fn wait_ms(&self, w: &OpenWaitConfig, trips: u32) -> u64 {
        let grown = w.base.as_secs_f64() * w.multiplier.powi(trips.saturating_sub(1).min(1024) as i32);
        let capped = grown.min(w.max.as_secs_f64());
        let cut =
            FastRng::new(self.seed ^ u64::from(trips).wrapping_mul(ha_core::rng::GOLDEN_GAMMA)).unit_f64() * w.jitter;
        ((capped * (1.0 - cut)) * 1000.0).max(1.0) as u64
    }

    fn close_from(&self, from: Word, now: Instant) -> bool {
        let to = from.next(CLOSED);
        if self.state.compare_exchange(from.0, to.0, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return false;
        }
        self.entered_closed(now);
        self.transitioned(from.state(), BreakerState::Closed);
        true
    }

    fn entered_closed(&self, now: Instant) {
        self.window_now().reset();
        self.consecutive.store(0, Ordering::Relaxed);
        self.closed_since.store(self.ms_since_epoch(now), Ordering::Release);
        self.closings.fetch_add(1, Ordering::Relaxed);
    }

    fn transitioned(&self, from: BreakerState, to: BreakerState) {
        self.transitions.fetch_add(1, Ordering::Relaxed);
        self.events.emit(Event::BreakerStateChanged { breaker: self.name.clone(), from, to });
        self.wake_all();
    }

    fn ms_since_epoch(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis().min(u128::from(DEADLINE_MASK)) as u64
    }

    /// Registers `waker` to be woken on the next transition or released
    /// probe permit (the not-ready mode's wake-up).
    pub(crate) fn register(&self, waker: &Waker) {
        let mut w = self.waiters.lock_or_recover();
        if !w.iter().any(|x| x.will_wake(waker)) {
            w.push(waker.clone());
        }
    }

    fn wake_all(&self) {
        let woken = std::mem::take(&mut *self.waiters.lock_or_recover());
        for w in woken {
            w.wake();
        }
    }

    fn force(&self, code: u64, now: Instant) {
        let mut w = self.word();
        loop {
            if w.code() == code {
                return;
            }
            let to = w.next(code);
            match self.state.compare_exchange(w.0, to.0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if code == CLOSED || code == METRICS_ONLY {
                        self.entered_closed(now);
                    }
                    self.transitioned(w.state(), to.state());
                    return;
                }
                Err(actual) => w = Word(actual),
            }
        }
    }

    /// Holds the breaker open, rejecting every call, until another control
    /// call. A balancer sees it open.
    pub fn force_open(&self, now: Instant) {
        self.force(FORCED_OPEN, now)
    }

    /// Admits every call and records nothing, until another control call.
    pub fn disable(&self, now: Instant) {
        self.force(DISABLED, now)
    }

    /// Records every outcome but never rejects (to try a config in production).
    pub fn metrics_only(&self, now: Instant) {
        self.force(METRICS_ONLY, now)
    }

    /// Closes the breaker with an empty window, whatever its state (also
    /// ends forced-open, disabled and metrics-only).
    pub fn reset(&self, now: Instant) {
        self.force(CLOSED, now)
    }
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker").field("name", &self.name).field("state", &self.state()).finish_non_exhaustive()
    }
}

/// A time read at most once, and only if asked for.
pub(crate) struct LazyInstant<F> {
    f: Option<F>,
    at: Option<Instant>,
}

impl<N: Now> LazyInstant<N> {
    #[inline]
    pub(crate) fn new(f: N) -> Self {
        LazyInstant { f: Some(f), at: None }
    }

    #[inline]
    pub(crate) fn get(&mut self) -> Instant {
        if let Some(t) = self.at {
            return t;
        }
        let t = self.f.take().expect("a LazyInstant is filled when its clock is taken").now();
        self.at = Some(t);
        t
    }
}

/// A [`RejectMode`] as the byte [`Breaker`] keeps it in.
fn mode_code(mode: RejectMode) -> u8 {
    match mode {
        RejectMode::FailFast => 0,
        RejectMode::NotReady => 1,
        RejectMode::Advisory => 2,
    }
}
