//! `ha-breaker` circuit breakers as health gates (feature `breaker`).
//!
//! Wrap each endpoint's service in a `ha_breaker::CircuitBreaker` and give
//! the endpoint a [`BreakerGate`] over the same `Breaker`: while the breaker
//! is open the endpoint leaves selection at once, so no request another
//! endpoint could serve goes to it and fails. Use the breaker's
//! `RejectMode::NotReady`: when the gate lets a request through because the
//! open wait should be over but the breaker still rejects, the endpoint's
//! `poll_ready` stays pending and the balancer sends the request elsewhere.
//! Or `RejectMode::Advisory`: the breaker rejects nothing, the gate keeps
//! the endpoint out of selection, and when the endpoint fails alike with
//! its peers (a whole fleet shedding load, every breaker open) the balancer
//! sets the advice aside instead of starving the fleet; so it does, as it
//! would refuse an ejection, when the endpoint still serves and the
//! endpoints left in selection queue without it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ha_breaker::{Breaker, RejectMode};
use ha_core::event::BreakerState;
use ha_core::sync::atomic::{AtomicU64, Ordering};
use ha_core::Instant;

use crate::health::HealthGate;

/// A [`HealthGate`] reading an `ha-breaker` [`Breaker`]: one atomic load
/// while the breaker is closed.
///
/// The breaker moves from open to half-open only when a call asks it to, so
/// the gate cannot simply wait for it to stop reading open. It learns of an
/// open period when it first reads the breaker open (on a pick, or at the
/// balancer's recount every `tiers.refresh`), and one base open wait later
/// it admits the endpoint again, and the breaker
/// then takes its probe (or, still open, makes the balancer look elsewhere
/// and the gate waits another base period). A half-open breaker is admitted
/// until a request finds its probe permits taken; then the request goes
/// elsewhere and the gate waits a tenth of the base period.
///
/// ```
/// use std::sync::Arc;
/// use ha_balance::{BreakerGate, Endpoint};
/// use ha_breaker::{Breaker, BreakerConfig, CircuitBreaker, RejectMode};
/// use ha_core::{Events, Instant};
///
/// let config = BreakerConfig { reject_mode: RejectMode::NotReady, ..BreakerConfig::default() };
/// let breaker = Arc::new(Breaker::new("10.0.0.1:80", config, Events::new(), Instant::now()).unwrap());
/// let service = tower::service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) });
/// let endpoint = Endpoint::new(CircuitBreaker::new(service, breaker.clone())).health_gate(BreakerGate::new(breaker));
/// # let _ = endpoint;
/// ```
pub struct BreakerGate {
    breaker: Arc<Breaker>,
    epoch: Instant,
    /// The breaker's transition count when the gate last saw it open: a new
    /// value means a new open period.
    seen: AtomicU64,
    /// Milliseconds since `epoch` from which the gate admits again.
    retry_at: AtomicU64,
}

impl BreakerGate {
    /// A gate over `breaker`.
    pub fn new(breaker: Arc<Breaker>) -> Self {
        BreakerGate { breaker, epoch: Instant::now(), seen: AtomicU64::new(u64::MAX), retry_at: AtomicU64::new(0) }
    }

    /// The breaker.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn wait(&self) -> Duration {
        self.breaker.config().open_wait.base
    }
}

impl HealthGate for BreakerGate {
    #[inline]
    fn admits(&self, now: Instant) -> bool {
        let state = self.breaker.state();
        if matches!(state, BreakerState::Open | BreakerState::HalfOpen)
            && self.breaker.reject_mode() == RejectMode::Advisory
        {
            // An advisory breaker lets a call it has no permit for through,
            // to fail: admit exactly when it would give one (the open wait
            // is over, or a half-open probe slot is free).
            return match self.breaker.retry_after(now) {
                None => true,
                Some(wait) => state == BreakerState::Open && wait.is_zero(),
            };
        }
        match state {
            BreakerState::Closed | BreakerState::Disabled | BreakerState::MetricsOnly => true,
            // Probes go through until one finds every probe permit taken.
            BreakerState::HalfOpen => self.ms(now) >= self.retry_at.load(Ordering::Acquire),
            // Held open by an operator: no wait ends it, no probe goes.
            BreakerState::ForcedOpen => false,
            BreakerState::Open => {
                let period = self.breaker.stats().transitions;
                let now_ms = self.ms(now);
                if self.seen.swap(period, Ordering::AcqRel) != period {
                    self.retry_at.store(now_ms.saturating_add(millis(self.wait())), Ordering::Release);
                    return false;
                }
                now_ms >= self.retry_at.load(Ordering::Acquire)
            }
        }
    }

    /// Advice, in [`RejectMode::Advisory`], except while an operator holds
    /// the breaker open: that veto is never set aside.
    fn advisory(&self) -> bool {
        self.breaker.reject_mode() == RejectMode::Advisory && self.breaker.state() != BreakerState::ForcedOpen
    }

    /// The breaker's closings: a run goes from one closing to the next, so
    /// it holds one open period, half-open probes included.
    fn veto_run(&self) -> Option<u64> {
        Some(self.breaker.closings())
    }

    fn deferred(&self, now: Instant) {
        let hold = match self.breaker.state() {
            BreakerState::Open | BreakerState::ForcedOpen => self.wait(),
            // The probes in flight decide soon; look again after a tenth of the wait.
            BreakerState::HalfOpen => self.wait() / 10,
            _ => return,
        };
        self.retry_at.store(self.ms(now).saturating_add(millis(hold)), Ordering::Release);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl fmt::Debug for BreakerGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerGate")
            .field("breaker", &self.breaker.name())
            .field("open", &self.breaker.is_open())
            .finish()
    }
}
