use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ha_core::classify::ErrorsAreFailures;
use ha_core::{Events, Instant};
use tower_layer::Layer;

use super::{Hedge, LatencyHistogram};
use crate::budget::RetryBudget;
use crate::config::{ConfigError, HedgeConfig, HedgeDelay};
use crate::replay::{Cloned, Tracked};

/// Applies [`Hedge`] to a service; see the [module docs](super).
pub struct HedgeLayer<C = ErrorsAreFailures, P = Cloned> {
    pub(crate) shared: Arc<Shared<C, P>>,
}

pub(crate) struct Shared<C, P> {
    pub(crate) config: HedgeConfig,
    pub(crate) classifier: C,
    pub(crate) replay: P,
    pub(crate) budget: RetryBudget,
    pub(crate) events: Events,
    pub(crate) deposit: bool,
    pub(crate) latencies: LatencyHistogram,
    pub(crate) stats: Counters,
}

impl<C, P> Shared<C, P> {
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
        &self.shared.budget
    }

    /// The counters of every service this layer built.
    pub fn stats(&self) -> HedgeStats {
        let c = &self.shared.stats;
        HedgeStats {
            hedges: c.hedges.load(Ordering::Relaxed),
            hedge_wins: c.hedge_wins.load(Ordering::Relaxed),
            budget_refused: c.refused.load(Ordering::Relaxed),
            not_replayable: c.not_replayable.load(Ordering::Relaxed),
        }
    }

    /// The delay after which a request starting at `now` would be hedged.
    pub fn current_delay(&self, now: Instant) -> Option<Duration> {
        self.shared.delay(now)
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
        HedgeLayerBuilder {
            config,
            classifier: ErrorsAreFailures::default(),
            replay: Cloned,
            budget: None,
            events: Events::new(),
            deposit: true,
            start: None,
        }
    }
}

impl<C, P> Clone for HedgeLayer<C, P> {
    fn clone(&self) -> Self {
        HedgeLayer { shared: self.shared.clone() }
    }
}

impl<C, P> fmt::Debug for HedgeLayer<C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer").field("config", &self.shared.config).finish_non_exhaustive()
    }
}

impl<S, C, P> Layer<S> for HedgeLayer<C, P> {
    type Service = Hedge<S, C, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge { inner, shared: self.shared.clone() }
    }
}

/// Builds a [`HedgeLayer`].
pub struct HedgeLayerBuilder<C = ErrorsAreFailures, P = Cloned> {
    config: HedgeConfig,
    classifier: C,
    replay: P,
    budget: Option<RetryBudget>,
    events: Events,
    deposit: bool,
    start: Option<Instant>,
}

impl<C, P> HedgeLayerBuilder<C, P> {
    /// Decides which results are successes (default: every `Ok`).
    pub fn classifier<C2>(self, classifier: C2) -> HedgeLayerBuilder<C2, P> {
        HedgeLayerBuilder {
            config: self.config,
            classifier,
            replay: self.replay,
            budget: self.budget,
            events: self.events,
            deposit: self.deposit,
            start: self.start,
        }
    }

    /// How requests are copied and their attempts labelled (default [`Cloned`]).
    pub fn replay<P2>(self, replay: P2) -> HedgeLayerBuilder<C, P2> {
        HedgeLayerBuilder {
            config: self.config,
            classifier: self.classifier,
            replay,
            budget: self.budget,
            events: self.events,
            deposit: self.deposit,
            start: self.start,
        }
    }

    /// Numbers hedges in the requests' attempt context, for a balancer below.
    pub fn track_attempts(self) -> HedgeLayerBuilder<C, Tracked> {
        self.replay(Tracked)
    }

    /// Hedges `http::Request<B>`: [`HttpClassifier`](ha_core::classify::HttpClassifier),
    /// bodies kept up to 64 KiB, idempotent requests only.
    #[cfg(feature = "http")]
    pub fn http(self) -> HedgeLayerBuilder<ha_core::classify::HttpClassifier, crate::body::HttpReplay> {
        self.classifier(ha_core::classify::HttpClassifier::default()).replay(crate::body::HttpReplay::default())
    }

    /// Draws on `budget`, shared with other layers (for example the retry
    /// layer above); default a budget of its own from `config.budget`.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Whether each request deposits into the budget (default true). Turn
    /// it off when a retry layer above shares the budget and already counts
    /// the same requests.
    pub fn count_requests(mut self, yes: bool) -> Self {
        self.deposit = yes;
        self
    }

    /// Where events are reported (default: `tracing` only).
    pub fn events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// The instant the latency windows start (default: now).
    pub fn start(mut self, now: Instant) -> Self {
        self.start = Some(now);
        self
    }

    /// Validates the config and builds the layer.
    pub fn build(self) -> Result<HedgeLayer<C, P>, ConfigError> {
        let c = &self.config;
        c.validate()?;
        let now = self.start.unwrap_or_else(Instant::now);
        let budget = match self.budget {
            Some(b) => b,
            None => RetryBudget::builder(c.budget.clone())
                .name(c.name.as_str())
                .events(self.events.clone())
                .start(now)
                .build()?,
        };
        let latencies =
            LatencyHistogram::new(now, c.window, c.refresh, c.delay.quantile().unwrap_or(0.5), c.min_samples);
        Ok(HedgeLayer {
            shared: Arc::new(Shared {
                config: self.config,
                classifier: self.classifier,
                replay: self.replay,
                budget,
                events: self.events,
                deposit: self.deposit,
                latencies,
                stats: Counters::default(),
            }),
        })
    }
}

impl<C, P> fmt::Debug for HedgeLayerBuilder<C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayerBuilder").field("config", &self.config).finish_non_exhaustive()
    }
}
