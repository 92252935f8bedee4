use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ha_core::classify::ErrorsAreFailures;
use ha_core::lease::{Stash, Stashed};
use ha_core::live::{LiveCached, LiveCell};
use ha_core::{Event, Events, Instant};
use tower_layer::Layer;

use super::efficacy::Efficacy;
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
/// [`reconfigure`](Self::reconfigure) changes the config of the layer and of
/// every service it built; see [`Hedge::reconfigure`].
pub struct HedgeLayer<C = ErrorsAreFailures, P = Cloned> {
    live: Live,
    budget: RetryBudget,
    stats: Arc<Counters>,
    classifier: C,
    replay: P,
}

/// The config in force for a hedge layer and its services, replaced as a
/// whole by each reconfiguration.
pub(crate) type Live = Arc<LiveCell<Arc<HedgeShared>>>;

/// One config of a hedge layer, with what every config of it shares:
/// budget, latencies (while the window keeps its length), counters, events
/// (the classifier and the replay policy are cloned into each service and
/// request, so this is one concrete, leasable type). A request leases the
/// one in force when it starts and keeps it to its end.
pub(crate) struct HedgeShared {
    pub(crate) config: HedgeConfig,
    pub(crate) budget: RetryBudget,
    pub(crate) events: Events,
    pub(crate) deposit: bool,
    pub(crate) latencies: Arc<LatencyHistogram>,
    pub(crate) stats: Arc<Counters>,
    // The budget was built from `config.budget`, so a new config's applies to it.
    own_budget: bool,
}

impl HedgeShared {
    /// The next config of the same layer; validated first, so that on an
    /// error neither the budget nor the latencies have changed.
    fn reconfigured(&self, config: HedgeConfig) -> Result<Arc<Self>, ConfigError> {
        config.validate()?;
        if self.own_budget {
            self.budget.reconfigure(config.budget.clone())?;
        }
        let quantile = config.delay.quantile().unwrap_or(0.5);
        let latencies = if config.window == self.config.window {
            self.latencies.reconfigure(config.refresh, quantile, config.min_samples);
            self.latencies.clone()
        } else {
            // Which of its two histograms a latency lands in follows from the
            // window: samples of another window length cannot be carried over.
            let origin = self.latencies.origin();
            Arc::new(LatencyHistogram::new(origin, config.window, config.refresh, quantile, config.min_samples))
        };
        Ok(Arc::new(HedgeShared {
            config,
            budget: self.budget.clone(),
            events: self.events.clone(),
            deposit: self.deposit,
            latencies,
            stats: self.stats.clone(),
            own_budget: self.own_budget,
        }))
    }
}

/// Validates `config` and puts it in force for every holder of `live`.
pub(crate) fn reconfigure(live: &LiveCell<Arc<HedgeShared>>, config: HedgeConfig) -> Result<(), ConfigError> {
    live.update(|core| core.reconfigured(config))
}

thread_local! {
    /// This thread's stash of hedge layer states.
    static CORES: Stash<HedgeShared> = const { Stash::new() };
}

impl Stashed for HedgeShared {
    fn stash() -> &'static std::thread::LocalKey<Stash<Self>> {
        &CORES
    }
}

impl HedgeShared {
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

    /// Whether a hedge due at `now` may go: hedging is not paused (see
    /// `efficacy`). Counts and reports a pause.
    pub(crate) fn hedging_pays(&self, now: Instant) -> bool {
        let rise = self.config.max_median_rise;
        // Refreshes the latencies' median when due (a fixed delay reads no quantile otherwise).
        let _ = self.latencies.quantile(now);
        let slow = rise > 0.0 && self.latencies.shifted(rise);
        let (verdict, changed) = self.stats.efficacy.admit(self.config.min_win_share, slow);
        if let Some(reason) = changed {
            self.events.emit(Event::HedgingPaused { hedge: self.config.name.as_str().into(), reason });
        }
        if verdict.is_err() {
            self.stats.paused.fetch_add(1, Ordering::Relaxed);
        }
        verdict.is_ok()
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hedges: AtomicU64,
    pub(crate) hedge_wins: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) not_replayable: AtomicU64,
    pub(crate) paused: AtomicU64,
    /// Whether hedges pay now (kept across reconfigurations, as the counters are).
    pub(crate) efficacy: Efficacy,
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
    /// Hedges not sent because hedging was paused: recent hedges mostly
    /// lost to the first attempt (`min_win_share`), or most requests were
    /// slow (`max_median_rise`).
    pub paused: u64,
}

impl<C, P> HedgeLayer<C, P> {
    /// The budget this layer's hedges draw on.
    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// The counters of every service this layer built.
    pub fn stats(&self) -> HedgeStats {
        self.stats.snapshot()
    }

    /// The config in force.
    pub fn config(&self) -> HedgeConfig {
        self.live.load().1.config.clone()
    }

    /// Changes the config of this layer, of every service it built and of
    /// their clones, for the requests they start from now on; the same as
    /// [`Hedge::reconfigure`] on any of them.
    pub fn reconfigure(&self, config: HedgeConfig) -> Result<(), ConfigError> {
        reconfigure(&self.live, config)
    }
}

impl Counters {
    pub(crate) fn snapshot(&self) -> HedgeStats {
        let c = self;
        HedgeStats {
            hedges: c.hedges.load(Ordering::Relaxed),
            hedge_wins: c.hedge_wins.load(Ordering::Relaxed),
            budget_refused: c.refused.load(Ordering::Relaxed),
            not_replayable: c.not_replayable.load(Ordering::Relaxed),
            paused: c.paused.load(Ordering::Relaxed),
        }
    }
}

impl<C, P> HedgeLayer<C, P> {
    /// The delay after which a request starting at `now` would be hedged.
    pub fn current_delay(&self, now: Instant) -> Option<Duration> {
        self.live.load().1.delay(now)
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
        HedgeLayer {
            live: self.live.clone(),
            budget: self.budget.clone(),
            stats: self.stats.clone(),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
        }
    }
}

impl<C, P> fmt::Debug for HedgeLayer<C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer").field("config", &self.live.load().1.config).finish_non_exhaustive()
    }
}

impl<S, C: Clone, P: Clone> Layer<S> for HedgeLayer<C, P> {
    type Service = Hedge<S, C, P>;

    fn layer(&self, inner: S) -> Self::Service {
        let core = LiveCached::new(&self.live);
        Hedge::new(inner, self.live.clone(), core, self.classifier.clone(), self.replay.clone())
    }
}

/// Builds a [`HedgeLayer`]: the classifier, replay policy, budget and
/// events setters are shared with [`RetryLayerBuilder`](crate::RetryLayerBuilder),
/// one generic builder behind both aliases.
pub type HedgeLayerBuilder<C = ErrorsAreFailures, P = Cloned> = LayerBuilder<HedgeConfig, C, P>;

impl<C, P> LayerBuilder<HedgeConfig, C, P> {
    /// Validates the config and builds the layer.
    pub fn build(mut self) -> Result<HedgeLayer<C, P>, ConfigError> {
        self.config.validate()?;
        let now = *self.start.get_or_insert_with(Instant::now);
        let own_budget = !self.has_budget();
        let budget = self.take_budget()?;
        let c = &self.config;
        let latencies =
            LatencyHistogram::new(now, c.window, c.refresh, c.delay.quantile().unwrap_or(0.5), c.min_samples);
        let stats = Arc::new(Counters::default());
        let core = HedgeShared {
            config: self.config,
            budget: budget.clone(),
            events: self.events,
            deposit: self.deposit,
            latencies: Arc::new(latencies),
            stats: stats.clone(),
            own_budget,
        };
        Ok(HedgeLayer {
            live: Arc::new(LiveCell::new(Arc::new(core))),
            budget,
            stats,
            classifier: self.classifier,
            replay: self.replay,
        })
    }
}
