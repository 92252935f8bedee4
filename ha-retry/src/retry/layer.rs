use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ha_core::classify::ErrorsAreFailures;
use ha_core::lease::{Stash, Stashed};
use ha_core::live::{LiveCached, LiveCell};
use ha_core::rng::{CloneSeeds, FastRng};
use ha_core::Events;
use tower_layer::Layer;

use super::Retry;
use crate::backoff::Backoff;
use crate::budget::RetryBudget;
use crate::builder::LayerBuilder;
use crate::config::{ConfigError, RetryConfig};
use crate::replay::Cloned;

/// Applies [`Retry`] to a service; see the [crate docs](crate).
///
/// The layer, its services and their requests share one state (config,
/// budget, counters, events). Requests lease their reference to it from a
/// per-thread stash ([`ha_core::lease`]) instead of cloning an `Arc`, so a
/// thread that has sent requests may keep the state (and the events
/// observer in it) alive after the layer and its services are dropped, until
/// that thread's stash needs the slot (it holds four) or the thread exits.
///
/// [`reconfigure`](Self::reconfigure) changes the config of the layer and of
/// every service it built (and their clones); see [`Retry::reconfigure`].
pub struct RetryLayer<C = ErrorsAreFailures, P = Cloned> {
    live: Live,
    budget: RetryBudget,
    stats: Arc<Counters>,
    seed: Option<u64>,
    classifier: C,
    replay: P,
}

/// The config in force for a retry layer and its services, replaced as a
/// whole by each reconfiguration.
pub(crate) type Live = Arc<LiveCell<Arc<RetryShared>>>;

/// One config of a retry layer, with the state every config of it shares
/// (budget, counters, events); a request leases the one in force when it
/// starts, and keeps it to its end.
///
/// It is one concrete type (the classifier and the replay policy, which
/// are generic, are cloned into each service and request instead), so that
/// each request's reference to it is leased from a per-thread stash
/// ([`ha_core::lease`]): a request that succeeds touches no shared reference
/// count.
pub(crate) struct RetryShared {
    pub(crate) config: RetryConfig,
    pub(crate) budget: RetryBudget,
    pub(crate) events: Events,
    pub(crate) deposit: bool,
    pub(crate) stats: Arc<Counters>,
    pub(crate) backoff: Backoff,
    // The budget was built from `config.budget`, so a new config's applies to it.
    own_budget: bool,
}

impl RetryShared {
    fn new(config: RetryConfig, budget: RetryBudget, events: Events, deposit: bool, own_budget: bool) -> Self {
        RetryShared {
            backoff: Backoff::new(&config.backoff, FastRng::new(0)),
            config,
            budget,
            events,
            deposit,
            stats: Arc::default(),
            own_budget,
        }
    }

    /// The next config of the same layer; validated first, so that on an
    /// error neither the budget nor anything else has changed.
    fn reconfigured(&self, config: RetryConfig) -> Result<Arc<Self>, ConfigError> {
        config.validate()?;
        if self.own_budget {
            self.budget.reconfigure(config.budget.clone())?;
        }
        Ok(Arc::new(RetryShared {
            backoff: Backoff::new(&config.backoff, FastRng::new(0)),
            config,
            budget: self.budget.clone(),
            events: self.events.clone(),
            deposit: self.deposit,
            stats: self.stats.clone(),
            own_budget: self.own_budget,
        }))
    }
}

/// Validates `config` and puts it in force for every holder of `live`.
pub(crate) fn reconfigure(live: &LiveCell<Arc<RetryShared>>, config: RetryConfig) -> Result<(), ConfigError> {
    live.update(|core| core.reconfigured(config))
}

thread_local! {
    /// This thread's stash of retry layer states.
    static CORES: Stash<RetryShared> = const { Stash::new() };
}

impl Stashed for RetryShared {
    fn stash() -> &'static std::thread::LocalKey<Stash<Self>> {
        &CORES
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) retries: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) withheld: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) deadlines: AtomicU64,
}

/// What a retry layer has done so far, shared by every service it built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryStats {
    /// Retries sent.
    pub retries: u64,
    /// Retries the budget refused.
    pub budget_refused: u64,
    /// Failed attempts not retried because the balancer below found its
    /// endpoints queueing ([`AttemptContext::queueing`](ha_core::AttemptContext::queueing)).
    pub withheld_queueing: u64,
    /// Attempts cut by the per-try timeout.
    pub attempt_timeouts: u64,
    /// Requests that failed with [`DeadlineExceeded`](ha_core::DeadlineExceeded).
    pub deadlines_exceeded: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> RetryStats {
        RetryStats {
            retries: self.retries.load(Ordering::Relaxed),
            budget_refused: self.refused.load(Ordering::Relaxed),
            withheld_queueing: self.withheld.load(Ordering::Relaxed),
            attempt_timeouts: self.timeouts.load(Ordering::Relaxed),
            deadlines_exceeded: self.deadlines.load(Ordering::Relaxed),
        }
    }
}

impl RetryLayer {
    /// A layer with `config`, retrying `Err`s of any `Req: Clone` service
    /// within its own budget.
    pub fn new(config: RetryConfig) -> Result<Self, ConfigError> {
        Self::builder(config).build()
    }

    /// A builder, to choose the classifier, the replay strategy, a shared
    /// budget or the events handle.
    pub fn builder(config: RetryConfig) -> RetryLayerBuilder {
        LayerBuilder::new(config)
    }
}

#[cfg(feature = "http")]
impl RetryLayer<ha_core::classify::HttpClassifier, crate::body::HttpReplay> {
    /// A layer for `http::Request<B>` services: the default HTTP
    /// classification, bodies replayed up to 64 KiB, attempts tracked.
    pub fn http(config: RetryConfig) -> Result<Self, ConfigError> {
        RetryLayer::builder(config).http().build()
    }
}

impl<C, P> RetryLayer<C, P> {
    /// The budget this layer's retries draw on.
    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// The counters of every service this layer built.
    pub fn stats(&self) -> RetryStats {
        self.stats.snapshot()
    }

    /// The config in force.
    pub fn config(&self) -> RetryConfig {
        self.live.load().1.config.clone()
    }

    /// Changes the config of this layer, of every service it built and of
    /// their clones, for the requests they start from now on; the same as
    /// [`Retry::reconfigure`] on any of them.
    pub fn reconfigure(&self, config: RetryConfig) -> Result<(), ConfigError> {
        reconfigure(&self.live, config)
    }
}

impl<C: Clone, P: Clone> Clone for RetryLayer<C, P> {
    fn clone(&self) -> Self {
        RetryLayer {
            live: self.live.clone(),
            budget: self.budget.clone(),
            stats: self.stats.clone(),
            seed: self.seed,
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
        }
    }
}

impl<C, P> fmt::Debug for RetryLayer<C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer").field("config", &self.live.load().1.config).finish_non_exhaustive()
    }
}

impl<S, C: Clone, P: Clone> Layer<S> for RetryLayer<C, P> {
    type Service = Retry<S, C, P>;

    fn layer(&self, inner: S) -> Self::Service {
        let rng = match self.seed {
            Some(seed) => FastRng::new(seed),
            None => FastRng::from_entropy(),
        };
        Retry {
            inner,
            core: LiveCached::new(&self.live),
            live: self.live.clone(),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
            rng,
            // Counted from the first clone's step, so seeded runs draw as before.
            clones: CloneSeeds::seeded(self.seed.map(|_| ha_core::rng::GOLDEN_GAMMA)),
        }
    }
}

/// Builds a [`RetryLayer`]: the classifier, replay policy, budget and
/// events setters are shared with [`HedgeLayerBuilder`](crate::HedgeLayerBuilder),
/// one generic builder behind both aliases.
pub type RetryLayerBuilder<C = ErrorsAreFailures, P = Cloned> = LayerBuilder<RetryConfig, C, P>;

impl<C, P> LayerBuilder<RetryConfig, C, P> {
    /// Seeds the jitter of the services this layer builds, for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Validates the config and builds the layer. The classifier and the
    /// replay policy are cloned into every service and request: keep them
    /// cheap to clone (the provided ones are a few bytes; put large state
    /// behind an `Arc`).
    pub fn build(mut self) -> Result<RetryLayer<C, P>, ConfigError> {
        self.config.validate()?;
        let own_budget = !self.has_budget();
        let budget = self.take_budget()?;
        let core = RetryShared::new(self.config, budget.clone(), self.events, self.deposit, own_budget);
        let stats = core.stats.clone();
        Ok(RetryLayer {
            live: Arc::new(LiveCell::new(Arc::new(core))),
            budget,
            stats,
            seed: self.seed,
            classifier: self.classifier,
            replay: self.replay,
        })
    }
}
