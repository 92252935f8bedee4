use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use ha_core::classify::ErrorsAreFailures;
use ha_core::rng::FastRng;
use ha_core::Events;
use tower_layer::Layer;

use super::Retry;
use crate::backoff::Backoff;
use crate::budget::RetryBudget;
use crate::config::{ConfigError, RetryConfig};
use crate::handle::Handle;
use crate::replay::{Cloned, Tracked};

/// Applies [`Retry`] to a service; see the [crate docs](crate).
pub struct RetryLayer<C: 'static = ErrorsAreFailures, P: 'static = Cloned> {
    pub(crate) shared: Handle<RetryShared<C, P>>,
}

/// The state a retry layer shares with every service it builds and their
/// requests: config, classifier, budget, counters.
///
/// [`RetryLayerBuilder::build`] keeps it behind an `Arc` whose references
/// the response futures lease from a per-thread stash
/// ([`ha_core::lease`]), so a request usually touches no shared reference
/// count. A layer that lives as long as the process can skip even the stash:
/// build this state with [`RetryLayerBuilder::build_shared`], keep it in a
/// `static` and hand it to [`RetryLayer::from_static`].
///
/// ```
/// use std::sync::OnceLock;
/// use ha_retry::retry::RetryShared;
/// use ha_retry::{RetryConfig, RetryLayer};
///
/// static RETRY: OnceLock<RetryShared> = OnceLock::new();
///
/// let shared = RETRY.get_or_init(|| RetryLayer::builder(RetryConfig::default()).build_shared().unwrap());
/// let layer = RetryLayer::from_static(shared);
/// assert_eq!(layer.stats().retries, 0);
/// ```
pub struct RetryShared<C = ErrorsAreFailures, P = Cloned> {
    pub(crate) config: RetryConfig,
    pub(crate) classifier: C,
    pub(crate) replay: P,
    pub(crate) budget: RetryBudget,
    pub(crate) events: Events,
    pub(crate) deposit: bool,
    pub(crate) stats: Counters,
    pub(crate) backoff: Backoff,
    seed: Option<u64>,
}

impl<C, P> fmt::Debug for RetryShared<C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryShared").field("config", &self.config).finish_non_exhaustive()
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
        RetryLayerBuilder {
            config,
            classifier: ErrorsAreFailures::default(),
            replay: Cloned,
            budget: None,
            events: Events::new(),
            deposit: true,
            seed: None,
        }
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

impl<C: 'static, P: 'static> RetryLayer<C, P> {
    /// A layer on state that lives as long as the process, reached without a
    /// reference count; see [`RetryShared`].
    pub fn from_static(shared: &'static RetryShared<C, P>) -> Self {
        RetryLayer { shared: Handle::Static(shared) }
    }

    /// The budget this layer's retries draw on.
    pub fn budget(&self) -> &RetryBudget {
        &self.shared.budget
    }

    /// The counters of every service this layer built.
    pub fn stats(&self) -> RetryStats {
        self.shared.stats.snapshot()
    }
}

impl<C: 'static, P: 'static> Clone for RetryLayer<C, P> {
    fn clone(&self) -> Self {
        RetryLayer { shared: self.shared.clone() }
    }
}

impl<C: 'static, P: 'static> fmt::Debug for RetryLayer<C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer").field("config", &self.shared.config).finish_non_exhaustive()
    }
}

impl<S, C: 'static, P: 'static> Layer<S> for RetryLayer<C, P> {
    type Service = Retry<S, C, P>;

    fn layer(&self, inner: S) -> Self::Service {
        let rng = match self.shared.seed {
            Some(seed) => FastRng::new(seed),
            None => FastRng::from_entropy(),
        };
        Retry { inner, shared: self.shared.clone(), rng, pending: 0 }
    }
}

/// Builds a [`RetryLayer`].
pub struct RetryLayerBuilder<C = ErrorsAreFailures, P = Cloned> {
    config: RetryConfig,
    classifier: C,
    replay: P,
    budget: Option<RetryBudget>,
    events: Events,
    deposit: bool,
    seed: Option<u64>,
}

impl<C, P> RetryLayerBuilder<C, P> {
    /// Decides which results are retried (default: every `Err`).
    pub fn classifier<C2>(self, classifier: C2) -> RetryLayerBuilder<C2, P> {
        RetryLayerBuilder {
            config: self.config,
            classifier,
            replay: self.replay,
            budget: self.budget,
            events: self.events,
            deposit: self.deposit,
            seed: self.seed,
        }
    }

    /// How requests are copied and their attempts labelled (default
    /// [`Cloned`]); see [`replay`](crate::replay).
    pub fn replay<P2>(self, replay: P2) -> RetryLayerBuilder<C, P2> {
        RetryLayerBuilder {
            config: self.config,
            classifier: self.classifier,
            replay,
            budget: self.budget,
            events: self.events,
            deposit: self.deposit,
            seed: self.seed,
        }
    }

    /// Attaches an [`AttemptContext`](ha_core::AttemptContext) to requests
    /// (`Req: HasAttemptContext`) and numbers their retries, for a balancer
    /// below; see [`Tracked`].
    pub fn track_attempts(self) -> RetryLayerBuilder<C, Tracked> {
        self.replay(Tracked)
    }

    /// Retries `http::Request<B>`: [`HttpClassifier`](ha_core::classify::HttpClassifier)
    /// and bodies replayed up to 64 KiB.
    #[cfg(feature = "http")]
    pub fn http(self) -> RetryLayerBuilder<ha_core::classify::HttpClassifier, crate::body::HttpReplay> {
        self.classifier(ha_core::classify::HttpClassifier::default()).replay(crate::body::HttpReplay::default())
    }

    /// Draws on `budget`, shared with other layers (default: a budget of
    /// this layer's own, built from `config.budget`).
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

    /// Seeds the jitter of the services this layer builds, for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Validates the config and builds the layer. Its classifier and replay
    /// policy are shared by every thread the services run on, hence `Send +
    /// Sync`.
    pub fn build(self) -> Result<RetryLayer<C, P>, ConfigError>
    where
        C: Send + Sync + 'static,
        P: Send + Sync + 'static,
    {
        Ok(RetryLayer { shared: Handle::new(self.build_shared()?) })
    }

    /// Validates the config and builds the layer's state alone, for a layer
    /// that lives as long as the process; see [`RetryShared`].
    pub fn build_shared(self) -> Result<RetryShared<C, P>, ConfigError> {
        self.config.validate()?;
        let budget = match self.budget {
            Some(b) => b,
            None => RetryBudget::builder(self.config.budget.clone())
                .name(self.config.name.as_str())
                .events(self.events.clone())
                .build()?,
        };
        Ok(RetryShared {
            backoff: Backoff::new(&self.config.backoff, FastRng::new(0)),
            config: self.config,
            classifier: self.classifier,
            replay: self.replay,
            budget,
            events: self.events,
            deposit: self.deposit,
            stats: Counters::default(),
            seed: self.seed,
        })
    }
}

impl<C, P> fmt::Debug for RetryLayerBuilder<C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayerBuilder").field("config", &self.config).finish_non_exhaustive()
    }
}
