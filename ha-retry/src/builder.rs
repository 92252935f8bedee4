//! The one builder behind [`RetryLayerBuilder`](crate::RetryLayerBuilder)
//! and [`HedgeLayerBuilder`](crate::HedgeLayerBuilder).
//!
//! Both layers take the same parts besides their config: a classifier, a
//! replay policy, a budget they may share, an events handle. [`LayerBuilder`]
//! holds them once, for either config; each layer adds its own `build`. Users
//! name it only through those two aliases.
//!
//! ```
//! use ha_retry::{HedgeConfig, HedgeLayer, RetryBudget, RetryConfig, RetryLayer};
//!
//! // A retry layer and a hedge layer below it, drawing on one budget that
//! // the retry layer alone counts requests into.
//! let budget = RetryBudget::new(Default::default()).unwrap();
//! let retry = RetryLayer::builder(RetryConfig::default()).budget(budget.clone()).build().unwrap();
//! let hedge = HedgeLayer::builder(HedgeConfig::default()).budget(budget).count_requests(false).build().unwrap();
//! # drop((retry, hedge));
//! ```

use std::fmt;

use ha_core::classify::ErrorsAreFailures;
use ha_core::{Events, Instant};

use crate::budget::RetryBudget;
use crate::config::{BudgetConfig, ConfigError};
use crate::replay::{Cloned, Tracked};

/// Builds a retry layer (`Cfg` = [`RetryConfig`](crate::RetryConfig)) or a
/// hedge layer (`Cfg` = [`HedgeConfig`](crate::HedgeConfig)); see the
/// [module docs](self).
pub struct LayerBuilder<Cfg, C = ErrorsAreFailures, P = Cloned> {
    pub(crate) config: Cfg,
    pub(crate) classifier: C,
    pub(crate) replay: P,
    budget: Option<RetryBudget>,
    pub(crate) events: Events,
    pub(crate) deposit: bool,
    pub(crate) seed: Option<u64>,
    pub(crate) start: Option<Instant>,
}

impl<Cfg> LayerBuilder<Cfg> {
    /// A builder with `config` and the defaults: every `Err` a retryable
    /// failure, requests copied by `Clone`, a budget of the layer's own,
    /// events to `tracing` only.
    pub(crate) fn new(config: Cfg) -> Self {
        LayerBuilder {
            config,
            classifier: ErrorsAreFailures::default(),
            replay: Cloned,
            budget: None,
            events: Events::new(),
            deposit: true,
            seed: None,
            start: None,
        }
    }
}

impl<Cfg, C, P> LayerBuilder<Cfg, C, P> {
    /// Decides which results are failures, and which of those may be sent
    /// again (default: every `Err`, retryable).
    pub fn classifier<C2>(self, classifier: C2) -> LayerBuilder<Cfg, C2, P> {
        let LayerBuilder { config, classifier: _, replay, budget, events, deposit, seed, start } = self;
        LayerBuilder { config, classifier, replay, budget, events, deposit, seed, start }
    }

    /// How requests are copied and their attempts labelled (default
    /// [`Cloned`]); see [`replay`](crate::replay).
    pub fn replay<P2>(self, replay: P2) -> LayerBuilder<Cfg, C, P2> {
        let LayerBuilder { config, classifier, replay: _, budget, events, deposit, seed, start } = self;
        LayerBuilder { config, classifier, replay, budget, events, deposit, seed, start }
    }

    /// Attaches an [`AttemptContext`](ha_core::AttemptContext) to requests
    /// (`Req: HasAttemptContext`) and numbers their retries and hedges, for a
    /// balancer below; see [`Tracked`].
    pub fn track_attempts(self) -> LayerBuilder<Cfg, C, Tracked> {
        self.replay(Tracked)
    }

    /// For `http::Request<B>`: [`HttpClassifier`](ha_core::classify::HttpClassifier)
    /// (idempotent requests, or ones that never left, on 5xx, 429 and
    /// connection errors) and bodies kept for replay up to 64 KiB.
    #[cfg(feature = "http")]
    pub fn http(self) -> LayerBuilder<Cfg, ha_core::classify::HttpClassifier, crate::body::HttpReplay> {
        self.classifier(ha_core::classify::HttpClassifier::default()).replay(crate::body::HttpReplay::default())
    }

    /// Draws on `budget`, shared with other layers (a retry layer and the
    /// hedge layer below it, say); default: a budget of the layer's own,
    /// built from its config's `budget`.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Whether each request deposits into the budget (default true). Turn
    /// it off in a layer whose budget is shared with a layer above that
    /// already counts the same requests.
    pub fn count_requests(mut self, yes: bool) -> Self {
        self.deposit = yes;
        self
    }

    /// Where events are reported (default: `tracing` only).
    pub fn events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// The instant the layer's own budget and latency windows start
    /// (default: when it is built), for runs on a clock of your own.
    pub fn start(mut self, now: Instant) -> Self {
        self.start = Some(now);
        self
    }

    /// Whether a budget was given to [`budget`](Self::budget) (else the
    /// layer builds its own from its config, and reconfigures it with it).
    pub(crate) fn has_budget(&self) -> bool {
        self.budget.is_some()
    }

    /// The budget given to [`budget`](Self::budget), or a new one from the
    /// config's.
    pub(crate) fn take_budget(&mut self) -> Result<RetryBudget, ConfigError>
    where
        Cfg: LayerConfig,
    {
        match self.budget.take() {
            Some(b) => Ok(b),
            None => {
                let (config, name) = self.config.budget_and_name();
                let builder = RetryBudget::builder(config.clone()).name(name).events(self.events.clone());
                match self.start {
                    Some(now) => builder.start(now).build(),
                    None => builder.build(),
                }
            }
        }
    }
}

/// What the builder reads from either config.
pub(crate) trait LayerConfig {
    /// The budget a layer builds for itself, and the name it gives it.
    fn budget_and_name(&self) -> (&BudgetConfig, &str);
}

impl LayerConfig for crate::RetryConfig {
    fn budget_and_name(&self) -> (&BudgetConfig, &str) {
        (&self.budget, &self.name)
    }
}

impl LayerConfig for crate::HedgeConfig {
    fn budget_and_name(&self) -> (&BudgetConfig, &str) {
        (&self.budget, &self.name)
    }
}

impl<Cfg: fmt::Debug, C, P> fmt::Debug for LayerBuilder<Cfg, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerBuilder").field("config", &self.config).finish_non_exhaustive()
    }
}
