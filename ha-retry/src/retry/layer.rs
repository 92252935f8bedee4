use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ha_core::classify::ErrorsAreFailures;
use ha_core::lease::{Lease, Stash, Stashed};
use ha_core::rng::FastRng;
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
pub struct RetryLayer<C = ErrorsAreFailures, P = Cloned> {
    pub(crate) core: Lease<RetryCore>,
    classifier: C,
    replay: P,
}

/// The state a retry layer shares with every service it builds and their
/// requests: config, budget, backoff, counters, events.
///
/// It is one concrete type (the classifier and the replay policy, which
/// are generic, are cloned into each service and request instead), so that
/// each request's reference to it is leased from a per-thread stash
/// ([`ha_core::lease`]): a request that succeeds touches no shared reference
/// count.
pub(crate) struct RetryCore {
    pub(crate) config: RetryConfig,
    pub(crate) budget: RetryBudget,
    pub(crate) events: Events,
    pub(crate) deposit: bool,
    pub(crate) stats: Counters,
    pub(crate) backoff: Backoff,
    seed: Option<u64>,
}

thread_local! {
    /// This thread's stash of retry layer states.
    static CORES: Stash<RetryCore> = const { Stash::new() };
}

impl Stashed for RetryCore {
    fn stash() -> &'static std::thread::LocalKey<Stash<Self>> {
        &CORES
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) retries: AtomicU64,
    pub(crate) refused: AtomicU64,
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
        &self.core.budget
    }

    /// The counters of every service this layer built.
    pub fn stats(&self) -> RetryStats {
        self.core.stats.snapshot()
    }
}

impl<C: Clone, P: Clone> Clone for RetryLayer<C, P> {
    fn clone(&self) -> Self {
        RetryLayer { core: self.core.clone(), classifier: self.classifier.clone(), replay: self.replay.clone() }
    }
}

impl<C, P> fmt::Debug for RetryLayer<C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer").field("config", &self.core.config).finish_non_exhaustive()
    }
}

impl<S, C: Clone, P: Clone> Layer<S> for RetryLayer<C, P> {
    type Service = Retry<S, C, P>;

    fn layer(&self, inner: S) -> Self::Service {
        let rng = match self.core.seed {
            Some(seed) => FastRng::new(seed),
            None => FastRng::from_entropy(),
        };
        Retry {
            inner,
            core: self.core.clone(),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
            rng,
            deposits: Default::default(),
        }
    }
}

/// Builds a [`RetryLayer`]; the setters common to both layers are on
/// [`LayerBuilder`].
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
        let budget = self.take_budget()?;
        let core = RetryCore {
            backoff: Backoff::new(&self.config.backoff, FastRng::new(0)),
            config: self.config,
            budget,
            events: self.events,
            deposit: self.deposit,
            stats: Counters::default(),
            seed: self.seed,
        };
        Ok(RetryLayer { core: Lease::of(&Arc::new(core)), classifier: self.classifier, replay: self.replay })
    }
}
