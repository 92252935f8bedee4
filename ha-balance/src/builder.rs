//! Builds a [`Balance`]: configuration, events, classifier, hash key,
//! health gates, active health checks, and where the endpoints come from.

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::{Arc, Weak};

use ha_core::classify::ErrorsAreFailures;
use ha_core::rng::{CloneSeeds, FastRng};
use ha_core::Events;
use tokio::sync::oneshot;
use tower::discover::Discover;
use tower::{BoxError, Service};

use crate::config::{BalanceConfig, Picker};
use crate::endpoint::Endpoint;
use crate::error::ConfigError;
use crate::health::HealthGate;
use crate::members::GateFactory;
use crate::service::{Balance, Endpoints, HashKeyFn};
use crate::shared::{RetriesRefused, Shared};

type Built<K, S, Req, C> = (Arc<Shared<K, S>>, Balance<K, S, Req, C>);
type Starter<K, S> = Box<dyn FnOnce(Weak<Shared<K, S>>, oneshot::Receiver<()>, u64) + Send>;

/// Builds a [`Balance`]; start with [`Balance::builder`].
pub struct BalanceBuilder<K, S, Req, C = ErrorsAreFailures> {
    config: BalanceConfig,
    events: Events,
    classifier: C,
    hash_key: Option<HashKeyFn<Req>>,
    seed: Option<u64>,
    gate: Option<GateFactory<K>>,
    health_check: Option<Starter<K, S>>,
    retries_refused: Option<RetriesRefused>,
    _types: PhantomData<fn(K, S)>,
}

impl<K, S, Req> Balance<K, S, Req> {
    /// A builder with the recommended configuration.
    pub fn builder() -> BalanceBuilder<K, S, Req> {
        BalanceBuilder {
            config: BalanceConfig::default(),
            events: Events::new(),
            classifier: ErrorsAreFailures::default(),
            hash_key: None,
            seed: None,
            gate: None,
            health_check: None,
            retries_refused: None,
            _types: PhantomData,
        }
    }
}

impl<K, S, Req, C> fmt::Debug for BalanceBuilder<K, S, Req, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalanceBuilder").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<K, S, Req, C> BalanceBuilder<K, S, Req, C>
where
    K: Hash + Eq + Clone + fmt::Debug,
{
    /// Uses `config` (validated by the build methods).
    pub fn config(mut self, config: BalanceConfig) -> Self {
        self.config = config;
        self
    }

    /// Sends ejection, restoration, tier-spill and panic events to `events`.
    pub fn events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// Decides which responses count as failures for outlier detection
    /// (default: every error is a failure).
    pub fn classifier<C2>(self, classifier: C2) -> BalanceBuilder<K, S, Req, C2> {
        BalanceBuilder {
            config: self.config,
            events: self.events,
            classifier,
            hash_key: self.hash_key,
            seed: self.seed,
            gate: self.gate,
            health_check: self.health_check,
            retries_refused: self.retries_refused,
            _types: PhantomData,
        }
    }

    /// The key [`Picker::RingHash`] hashes; requests for which it returns
    /// `None` are balanced by least pending instead. Required by that picker.
    ///
    /// For clients built apart to send a key to the same endpoint, derive
    /// the number from the key's bytes with a hash that is the same in every
    /// build, such as [`ha_core::hash::stable_hash`], not a `std` hasher. The
    /// ring's positions come from the endpoints' names (their keys' `Debug`
    /// form unless [`Endpoint::name`](crate::Endpoint::name) sets one).
    pub fn hash_key(mut self, key: impl Fn(&Req) -> Option<u64> + Send + Sync + 'static) -> Self {
        self.hash_key = Some(Arc::new(key));
        self
    }

    /// Seeds the random choices, for reproducible runs (default: from entropy).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Gives each new endpoint a health gate (typically a circuit breaker
    /// shared with the endpoint's service stack): while the gate does not
    /// admit, the endpoint is out of selection, even in panic mode.
    pub fn health_gate<G: HealthGate>(mut self, gate: impl Fn(&K, &str) -> G + Send + Sync + 'static) -> Self {
        self.gate = Some(Arc::new(move |k: &K, name: &Arc<str>| Arc::new(gate(k, name)) as Arc<dyn HealthGate>));
        self
    }

    /// Tells the balancer whether the retry layer above it refuses retries
    /// now (its budget is dry; for ha-retry, `RetryBudget::is_exhausted`).
    /// A failed request that carries an attempt context costs its caller
    /// one more attempt while retries are granted, and the request once
    /// they are not: the first failure of a run is priced at the
    /// endpoint's latency in the first case and `failure_penalty` times it
    /// in the second (see [`LoadConfig::failure_penalty`](crate::LoadConfig::failure_penalty)).
    /// Without this, a request that carries an attempt context is taken to
    /// be retried. The `ha` stack wires its budget here.
    pub fn retries_refused(mut self, refused: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.retries_refused = Some(Arc::new(refused));
        self
    }

    fn core(self) -> Result<Built<K, S, Req, C>, ConfigError> {
        self.config.validate()?;
        if matches!(self.config.picker, Picker::RingHash { .. }) && self.hash_key.is_none() {
            return Err(ConfigError::new("picker", "ring_hash needs a hash key (BalanceBuilder::hash_key)"));
        }
        let seed = self.seed.unwrap_or_else(|| FastRng::from_entropy().next_u64());
        let has_hash_key = self.hash_key.is_some();
        // Seeded, clones draw from a counter (reproducible); else each thread's own.
        let seeds = CloneSeeds::seeded(self.seed.map(|_| seed.rotate_left(17)));
        let core =
            Arc::new(Shared::new(self.config, self.events, seeds, self.gate, has_hash_key, self.retries_refused));
        if let Some(start) = self.health_check {
            let (tx, rx) = oneshot::channel();
            core.on_drop(tx);
            start(Arc::downgrade(&core), rx, seed ^ 0x5851_f42d_4c95_7f2d);
        }
        let balance = Balance {
            core: core.clone(),
            hash_key: self.hash_key,
            classifier: self.classifier,
            rng: FastRng::new(seed),
        };
        Ok((core, balance))
    }

    /// A balancer whose endpoints you manage with [`Balance::endpoints`].
    pub fn build(self) -> Result<Balance<K, S, Req, C>, ConfigError> {
        self.core().map(|(_, b)| b)
    }

    /// A balancer starting with `endpoints`.
    pub fn build_with(
        self,
        endpoints: impl IntoIterator<Item = (K, Endpoint<S>)>,
    ) -> Result<Balance<K, S, Req, C>, ConfigError> {
        let (core, balance) = self.core()?;
        Endpoints::new(core).reset(endpoints);
        Ok(balance)
    }
}

/// What needs background tasks, and so `Send` keys and services.
impl<K, S, Req, C> BalanceBuilder<K, S, Req, C>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Send + Sync + 'static,
{
    /// Probes every endpoint periodically through `probe`, called with the
    /// endpoint's key; an `Err` or a timeout is a failed probe. Timing and
    /// thresholds come from [`BalanceConfig::health_check`]. Needs a tokio
    /// runtime when the balancer is built.
    pub fn health_check<P>(mut self, probe: P) -> Self
    where
        P: Service<K> + Clone + Send + 'static,
        P::Future: Send,
        P::Error: Into<BoxError>,
    {
        self.health_check =
            Some(Box::new(move |core, shutdown, seed| crate::healthcheck::spawn(core, probe, seed, shutdown)));
        self
    }

    /// A balancer fed by `discover`, which a background task polls (so this
    /// needs a tokio runtime) until the last clone of the balancer is
    /// dropped. An error is reported
    /// ([`Event::DiscoveryInterrupted`](ha_core::Event::DiscoveryInterrupted))
    /// and the stream polled on; its end is reported and the endpoints stay
    /// as they are. To subscribe again after either, use
    /// [`build_discover_with`](Self::build_discover_with).
    pub fn build_discover<D>(self, discover: D) -> Result<Balance<K, S, Req, C>, ConfigError>
    where
        D: Discover<Key = K, Service = Endpoint<S>> + Send + 'static,
        D::Error: Into<BoxError>,
    {
        self.follow(crate::discover::Source::Once(Some(discover)))
    }

    /// A balancer fed by the `Discover`s `subscribe` makes: when one fails
    /// or ends, the balancer reports it
    /// ([`Event::DiscoveryInterrupted`](ha_core::Event::DiscoveryInterrupted)),
    /// keeps its endpoints, and subscribes again after a jittered backoff
    /// (100 ms doubling to 30 s). The first batch of a new subscription is
    /// taken as the whole set: endpoints it no longer lists are removed,
    /// those it lists keep their state; an empty first batch changes
    /// nothing.
    pub fn build_discover_with<D, F>(self, subscribe: F) -> Result<Balance<K, S, Req, C>, ConfigError>
    where
        F: FnMut() -> D + Send + 'static,
        D: Discover<Key = K, Service = Endpoint<S>> + Send + 'static,
        D::Error: Into<BoxError>,
    {
        self.follow(crate::discover::Source::Resubscribe(Box::new(subscribe)))
    }

    fn follow<D>(self, source: crate::discover::Source<D>) -> Result<Balance<K, S, Req, C>, ConfigError>
    where
        D: Discover<Key = K, Service = Endpoint<S>> + Send + 'static,
        D::Error: Into<BoxError>,
    {
        let seed = self.seed.unwrap_or(0x2545_f491_4f6c_dd1d);
        let (core, balance) = self.core()?;
        let (tx, rx) = oneshot::channel();
        core.on_drop(tx);
        crate::discover::spawn(Arc::downgrade(&core), source, rx, seed);
        Ok(balance)
    }
}

impl<K, S, Req, C> BalanceBuilder<K, S, Req, C> {
    /// The configuration so far, as set by [`config`](Self::config). Named
    /// like `http`'s builder getters (`method_ref`): the setter has the bare
    /// name.
    pub fn config_ref(&self) -> &BalanceConfig {
        &self.config
    }
}
