//! The retry decision of one request, as a plain state machine.
//!
//! [`RetryState`] is handed the outcome of each attempt and the current time
//! and answers whether, and after how long, to send the request again. It
//! knows the attempt limit, the backoff, the server's `Retry-After` and the
//! overall deadline; it does not know the budget (the caller withdraws from
//! it only once the state machine said yes) and does no IO, so the retry
//! layer, the tower adapter and tests drive it the same way.
//!
//! ```
//! use std::time::Duration;
//! use ha_core::{rng::FastRng, Outcome};
//! use ha_retry::config::{Jitter, RetryConfig};
//! use ha_retry::policy::{RetryState, Stop};
//! use tokio::time::Instant;
//!
//! let mut cfg = RetryConfig::default();
//! cfg.backoff.jitter = Jitter::None;
//! let now = Instant::now();
//! let mut state = RetryState::new(&cfg, now, None, FastRng::new(1));
//! // The first retry goes at once (to an endpoint not tried yet), the next after the backoff.
//! assert_eq!(state.on_outcome(now, Outcome::retryable()), Ok(Duration::ZERO));
//! assert_eq!(state.on_outcome(now, Outcome::retryable()), Ok(Duration::from_millis(25)));
//! assert_eq!(state.on_outcome(now, Outcome::Failure), Err(Stop::NotRetryable));
//! ```

use std::time::Duration;

use ha_core::rng::FastRng;
use ha_core::{Instant, Outcome};

use crate::backoff::Backoff;
use crate::config::{RetryAfterScope, RetryConfig};

/// Why a request is not sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The attempt succeeded, or its result is not a failure.
    Done,
    /// The failure must not be retried.
    NotRetryable,
    /// The request used all its attempts.
    MaxAttempts,
    /// The next attempt could not start before the deadline.
    Deadline,
}

/// The retry decisions of one request; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct RetryState {
    attempt: u32,
    max_attempts: u32,
    backoff: Backoff,
    max_retry_after: Duration,
    retry_after_scope: RetryAfterScope,
    deadline: Option<Instant>,
    // The next retry goes at once: see `untried_endpoint_left`.
    go_now: bool,
    // The failed attempt never reached a server: see `never_sent`.
    requeue: bool,
    // Attempts that never reached a server, sent again without counting
    // against `max_attempts`.
    requeues: u32,
}

impl RetryState {
    /// The state of a request whose first attempt starts at `now`. Its
    /// deadline is the earlier of `now + config.deadline` and `deadline`
    /// (one the request already carried).
    pub fn new(config: &RetryConfig, now: Instant, deadline: Option<Instant>, rng: FastRng) -> Self {
        let own = config.deadline.map(|d| now + d);
        Self::with_deadline(config, earliest(own, deadline), rng)
    }

    /// The state of a request whose overall deadline is exactly `deadline`
    /// (`config.deadline` is not applied).
    pub fn with_deadline(config: &RetryConfig, deadline: Option<Instant>, rng: FastRng) -> Self {
        Self::from_backoff(config, Backoff::new(&config.backoff, rng), deadline)
    }

    /// Like [`with_deadline`](Self::with_deadline) with a prepared backoff
    /// (built once per layer and [restarted](Backoff::restart) per request).
    #[inline]
    pub(crate) fn from_backoff(config: &RetryConfig, backoff: Backoff, deadline: Option<Instant>) -> Self {
        RetryState {
            attempt: 1,
            max_attempts: config.max_attempts.max(1),
            backoff,
            max_retry_after: config.max_retry_after,
            retry_after_scope: config.retry_after_scope,
            deadline,
            go_now: false,
            requeue: false,
            requeues: 0,
        }
    }

    /// The attempt now in flight (or last made), starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Every attempt made so far, the requeued ones included (attempts
    /// that never reached a server: they do not count against
    /// `max_attempts`).
    pub fn tries(&self) -> u32 {
        self.attempt + self.requeues
    }

    /// Whether an attempt that never reaches a server may still be requeued.
    pub(crate) fn can_requeue(&self) -> bool {
        self.requeues < self.max_attempts
    }

    /// The request's overall deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The attempt that failed never reached a server (a refused
    /// connection, an open breaker, no healthy endpoint): the next retry
    /// waits the backoff even where the first would go at once. A host that
    /// refuses connections is often not alone (a zone, a rack, a deploy):
    /// the wait lets the balancer see the outage and fail over, where an
    /// immediate retry would spend the attempts on its neighbours.
    #[inline]
    ///
    /// Nor does it count against `max_attempts` (Finagle's requeues): the
    /// server never saw it, so sending it again multiplies no load on a
    /// server, and a request must not run out of attempts on a zone whose
    /// hosts refuse one after the other before the balancer has seen
    /// them fail. At most `max_attempts` attempts are requeued; each one
    /// still waits its backoff, draws on the budget and ends by the deadline.
    pub(crate) fn never_sent(&mut self) {
        self.backoff.skip_immediate();
        self.requeue = self.requeues < self.max_attempts;
    }

    /// The connection the failed attempt went out on was lost before an
    /// answer (see [`ha_core::error::connection_lost`]): its host may be
    /// down, and, as for a refused connection, often not alone. The next
    /// retry waits the backoff even where the first would go at once, so
    /// that the client's pool sees the neighbours' connections closed and
    /// the balancer sees the outage, where an immediate retry would spend
    /// the attempts on the dead pooled connections of a lost zone. It counts
    /// against `max_attempts`: the server may have acted on it.
    #[inline]
    pub(crate) fn connection_lost(&mut self) {
        self.backoff.skip_immediate();
    }

    /// The failed attempt reached a server, and the request has an
    /// available endpoint it has not tried: the next retry goes there at
    /// once, as a retry to a server that has not just failed it adds no
    /// load to the one that did (and a Retry-After the failed one sent is
    /// about itself, not about the others). The
    /// budget bounds how many such retries the fleet gets. The backoff
    /// applies once the request would go back to an endpoint it tried (its
    /// immediate first retry is spent here).
    #[inline]
    pub(crate) fn untried_endpoint_left(&mut self) {
        self.backoff.skip_immediate();
        self.go_now = true;
    }

    /// Decides what follows an attempt that ended at `now` with `outcome`:
    /// the delay before the next attempt, or why there is none. On `Ok` the
    /// attempt number moves on.
    pub fn on_outcome(&mut self, now: Instant, outcome: Outcome) -> Result<Duration, Stop> {
        let retry_after = match outcome {
            Outcome::RetryableFailure { retry_after } => retry_after,
            Outcome::Failure => return Err(Stop::NotRetryable),
            Outcome::Success | Outcome::Ignored => return Err(Stop::Done),
        };
        let requeue = std::mem::take(&mut self.requeue);
        if self.attempt >= self.max_attempts && !requeue {
            return Err(Stop::MaxAttempts);
        }
        let go_now = std::mem::take(&mut self.go_now);
        let backoff = if go_now { Duration::ZERO } else { self.backoff.next_delay() };
        // Scoped to its server, a Retry-After does not hold a retry to one the
        // request has not tried (see `RetryAfterScope`).
        let asked = retry_after.filter(|_| !(go_now && self.retry_after_scope == RetryAfterScope::Server));
        let delay = asked.map_or(backoff, |asked| backoff.max(asked.min(self.max_retry_after)));
        if let Some(deadline) = self.deadline {
            // The next attempt must have time to run: starting it at the deadline is pointless.
            if now + delay >= deadline {
                return Err(Stop::Deadline);
            }
        }
        if requeue {
            self.requeues += 1;
        } else {
            self.attempt += 1;
        }
        Ok(delay)
    }
}

/// The earlier of two optional instants.
#[inline]
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Jitter;

    fn config() -> RetryConfig {
        let mut c = RetryConfig { max_attempts: 4, ..RetryConfig::default() };
        c.backoff.jitter = Jitter::None;
        c.backoff.immediate_first = false;
        c
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_that_never_reached_a_server_are_requeued_up_to_max_attempts() {
        let now = Instant::now();
        let c = RetryConfig { max_attempts: 2, ..config() };
        let mut s = RetryState::new(&c, now, None, FastRng::new(1));
        // Two hosts of a zone refuse in turn: both sent again, neither counted.
        for _ in 0..2 {
            s.never_sent();
            assert!(s.on_outcome(now, Outcome::retryable()).is_ok());
        }
        assert_eq!((s.attempt(), s.tries()), (1, 3));
        // Requeues stop at `max_attempts` of them.
        assert!(!s.can_requeue());
        // A server answered with a failure: the second attempt, the last.
        assert!(s.on_outcome(now, Outcome::retryable()).is_ok());
        s.never_sent();
        assert_eq!(s.on_outcome(now, Outcome::retryable()), Err(Stop::MaxAttempts));
        assert_eq!(s.tries(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn by_default_the_first_retry_goes_at_once_unless_the_server_asks_to_wait() {
        let now = Instant::now();
        // Full jitter, as by default: the first retry still waits nothing.
        let c = RetryConfig { max_attempts: 4, ..RetryConfig::default() };
        for seed in 0..50 {
            let mut s = RetryState::new(&c, now, None, FastRng::new(seed));
            assert_eq!(s.on_outcome(now, Outcome::retryable()), Ok(Duration::ZERO));
            let second = s.on_outcome(now, Outcome::retryable()).unwrap();
            assert!(second <= Duration::from_millis(25), "{second:?}");
        }
        let mut s = RetryState::new(&c, now, None, FastRng::new(1));
        let asked = Outcome::RetryableFailure { retry_after: Some(Duration::from_secs(1)) };
        assert_eq!(s.on_outcome(now, asked), Ok(Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded() {
        let now = Instant::now();
        let mut s = RetryState::new(&config(), now, None, FastRng::new(1));
        assert_eq!(s.on_outcome(now, Outcome::retryable()), Ok(Duration::from_millis(25)));
        assert_eq!(s.on_outcome(now, Outcome::retryable()), Ok(Duration::from_millis(50)));
        assert_eq!(s.on_outcome(now, Outcome::retryable()), Ok(Duration::from_millis(100)));
        assert_eq!(s.attempt(), 4);
        assert_eq!(s.on_outcome(now, Outcome::retryable()), Err(Stop::MaxAttempts));
        assert_eq!(s.on_outcome(now, Outcome::Success), Err(Stop::Done));
        assert_eq!(s.on_outcome(now, Outcome::Ignored), Err(Stop::Done));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_and_capped() {
        let now = Instant::now();
        let mut c = config();
        c.max_retry_after = Duration::from_secs(2);
        let mut s = RetryState::new(&c, now, None, FastRng::new(1));
        let asked = |secs| Outcome::RetryableFailure { retry_after: Some(Duration::from_secs(secs)) };
        assert_eq!(s.on_outcome(now, asked(1)), Ok(Duration::from_secs(1)));
        assert_eq!(s.on_outcome(now, asked(60)), Ok(Duration::from_secs(2)));
        // A zero Retry-After never shortens the backoff.
        assert_eq!(s.on_outcome(now, asked(0)), Ok(Duration::from_millis(100)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_earlier_deadline_wins_and_no_backoff_crosses_it() {
        let now = Instant::now();
        let mut c = config();
        c.deadline = Some(Duration::from_millis(100));
        let carried = now + Duration::from_millis(60);
        let mut s = RetryState::new(&c, now, Some(carried), FastRng::new(1));
        assert_eq!(s.deadline(), Some(carried));
        assert_eq!(s.on_outcome(now, Outcome::retryable()), Ok(Duration::from_millis(25)));
        // 50 ms of backoff from 20 ms in would end at 70 ms, past the 60 ms deadline.
        assert_eq!(s.on_outcome(now + Duration::from_millis(20), Outcome::retryable()), Err(Stop::Deadline));
        let s = RetryState::new(&c, now, None, FastRng::new(1));
        assert_eq!(s.deadline(), Some(now + Duration::from_millis(100)));
    }
}
