use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ha_core::classify::ErrorsAreFailures;
use ha_core::lease::{Lease, Stash, Stashed};
use ha_core::{Events, Instant};
use tower_layer::Layer;

use super::{Hedge, LatencyHistogram};
use crate::budget::RetryBudget;
use crate::builder::LayerBuilder;
use crate::config::{ConfigError, HedgeConfig, HedgeDelay};
use crate::replay::Cloned;

/// Applies [`Hedge`] to a service; see the [module docs](super).
///
/// Like a [`RetryLayer`](crate::RetryLayer), its state is leased per request
/// from a per-thread stash ([`ha_core::lease`]), and may outlive the layer
/// on a thread that sent requests until that thread's stash needs the slot.
pub struct HedgeLayer<C = ErrorsAreFailures, P = Cloned> {
    core: Lease<HedgeCore>,
    classifier: C,
    replay: P,
}

/// What a hedge layer shares with its services and requests: config,
/// budget, latencies, counters, events (the classifier and the replay policy
/// are cloned into each, so this is one concrete, leasable type).
pub(crate) struct HedgeCore {
    pub(crate) config: HedgeConfig,
    pub(crate) budget: RetryBudget,
    pub(crate) events: Events,
    pub(crate) deposit: bool,
    pub(crate) latencies: LatencyHistogram,
    pub(crate) stats: Counters,
}

thread_local! {
    /// This thread's stash of hedge layer states.
    static CORES: Stash<HedgeCore> = const { Stash::new() };
}

impl Stashed for HedgeCore {
    fn stash() -> &'static std::thread::LocalKey<Stash<Self>> {
        &CORES
    }
}

impl HedgeCore {
    /// How long after `now` the first hedge of a request starting now is
    /// sent, or `None` for no hedge.
    #[inline]
    pub(crate) fn delay(&self, now: Instant) -> Option<Duration> {
        if self.config.max_hedges == 0 {
            return None;
        }
        let d = match self.config.delay {
            HedgeDelay::Fixed(d) => d,
            _ => match self.latencies.quantile(now) {
                Some(q) => q,
                None => self.config.warmup_delay?,
            },
        };
        Some(d.max(self.config.min_delay))
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hedges: AtomicU64,
    pub(crate) hedge_wins: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) not_replayable: AtomicU64,
}

/// What a hedge layer has done so far, shared by every service it built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HedgeStats {
    /// Hedges sent.
    pub hedges: u64,
    /// Requests answered by a hedge rather than the first attempt.
    pub hedge_wins: u64,
    /// Hedges the budget refused.
    pub budget_refused: u64,
    /// Hedges not sent because the request could not be copied yet (its body
    /// was still streaming, too large, or the request is not idempotent).
    pub not_replayable: u64,
}

impl<C, P> HedgeLayer<C, P> {
    /// The budget this layer's hedges draw on.
    pub fn budget(&self) -> &RetryBudget {
        &self.core.budget
    }

    /// The counters of every service this layer built.
    pub fn stats(&self) -> HedgeStats {
        self.core.stats()
    }
}

impl HedgeCore {
    pub(crate) fn stats(&self) -> HedgeStats {
        let c = &self.stats;
        HedgeStats {
            hedges: c.hedges.load(Ordering::Relaxed),
            hedge_wins: c.hedge_wins.load(Ordering::Relaxed),
            budget_refused: c.refused.load(Ordering::Relaxed),
            not_replayable: c.not_replayable.load(Ordering::Relaxed),
        }
    }
}

impl<C, P> HedgeLayer<C, P> {
    /// The delay after which a request starting at `now` would be hedged.
    pub fn current_delay(&self, now: Instant) -> Option<Duration> {
        self.core.delay(now)
    }
}

impl HedgeLayer {
    /// A layer with `config` for any `Req: Clone` service whose `Err`s are
    /// its failures.
    pub fn new(config: HedgeConfig) -> Result<Self, ConfigError> {
        Self::builder(config).build()
    }

    /// A builder, to choose the classifier, the replay strategy, a shared
    /// budget or the events handle.
    pub fn builder(config: HedgeConfig) -> HedgeLayerBuilder {
        LayerBuilder::new(config)
    }
}

impl<C: Clone, P: Clone> Clone for HedgeLayer<C, P> {
    fn clone(&self) -> Self {
        HedgeLayer { core: self.core.clone(), classifier: self.classifier.clone(), replay: self.replay.clone() }
    }
}

impl<C, P> fmt::Debug for HedgeLayer<C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer").field("config", &self.core.config).finish_non_exhaustive()
    }
}

impl<S, C: Clone, P: Clone> Layer<S> for HedgeLayer<C, P> {
    type Service = Hedge<S, C, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge::new(inner, self.core.clone(), self.classifier.clone(), self.replay.clone())
    }
}

/// Builds a [`HedgeLayer`]; the setters common to both layers are on
/// [`LayerBuilder`].
pub type HedgeLayerBuilder<C = ErrorsAreFailures, P = Cloned> = LayerBuilder<HedgeConfig, C, P>;

impl<C, P> LayerBuilder<HedgeConfig, C, P> {
    /// Validates the config and builds the layer.
    pub fn build(mut self) -> Result<HedgeLayer<C, P>, ConfigError> {
        self.config.validate()?;
        let now = *self.start.get_or_insert_with(Instant::now);
        let budget = self.take_budget()?;
        let c = &self.config;
        let latencies =
            LatencyHistogram::new(now, c.window, c.refresh, c.delay.quantile().unwrap_or(0.5), c.min_samples);
        let core = HedgeCore {
            config: self.config,
            budget,
            events: self.events,
            deposit: self.deposit,
            latencies,
            stats: Counters::default(),
        };
        Ok(HedgeLayer { core: Lease::of(&Arc::new(core)), classifier: self.classifier, replay: self.replay })
    }
}
