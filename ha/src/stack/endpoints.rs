//! Turns [`Target`]s into the balancer's endpoints: the transport's client
//! wrapped in a per-try timeout and a circuit breaker whose gate the
//! balancer reads, with the target's tier, zone and weight.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};

use ha_core::sync::LockExt;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::Stream;
use ha_balance::{BreakerGate, Endpoint};
use ha_breaker::{Breaker, BreakerConfig, CircuitBreaker, RejectMode};
use ha_core::hash::stable_hash;
use ha_core::rng::mix64;
use ha_core::{Events, Instant};
use tower::discover::Change;
use tower::BoxError;

use super::timeout::{AttemptTimeout, TryTimeout, WithContext};
use crate::target::Target;

/// The client of one endpoint as the balancer holds it: the transport's
/// client `S` with a per-try timeout, behind a circuit breaker classifying
/// with `C`.
pub type EndpointService<S, C> = CircuitBreaker<TryTimeout<S, WithContext>, C>;

/// Where a stack's endpoints come from.
pub(crate) enum Source {
    Static(Vec<(Arc<str>, Target)>),
    Stream(Targets),
    Subscribe(Box<dyn FnMut() -> Targets + Send>),
}

/// A stream of target changes, boxed.
pub(crate) type Targets = BoxStream<'static, Result<Change<Arc<str>, Target>, BoxError>>;

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Static(list) => f.debug_tuple("Static").field(&list.len()).finish(),
            Source::Stream(_) => f.write_str("Stream"),
            Source::Subscribe(_) => f.write_str("Subscribe"),
        }
    }
}

/// The settings every endpoint's stack takes from the stack's config, and
/// the live endpoints they were given to, so a new config reaches them.
pub(crate) struct EndpointSettings {
    inner: Mutex<Registry>,
}

struct Registry {
    breaker: BreakerConfig,
    attempt_timeout: Option<Duration>,
    /// Each endpoint made: its breaker (gone once the endpoint is) and its
    /// per-try timeout.
    live: Vec<(Weak<Breaker>, AttemptTimeout)>,
}

impl EndpointSettings {
    pub(super) fn new(breaker: BreakerConfig, attempt_timeout: Option<Duration>) -> Self {
        let breaker = breaker_config(breaker);
        EndpointSettings { inner: Mutex::new(Registry { breaker, attempt_timeout, live: Vec::new() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.lock_or_recover()
    }

    /// Gives every live endpoint, and every later one, these settings. The
    /// breaker config was validated by the caller.
    pub(super) fn apply(&self, breaker: BreakerConfig, attempt_timeout: Option<Duration>) {
        let breaker = breaker_config(breaker);
        let mut registry = self.lock();
        registry.live.retain(|(b, _)| b.strong_count() > 0);
        for (b, timeout) in &registry.live {
            if let Some(b) = b.upgrade() {
                if let Err(e) = b.reconfigure(breaker.clone()) {
                    // Validated before; kept as it was if it ever is not.
                    tracing::error!(target: "ha::stack", endpoint = %b.name(), error = %e, "breaker kept its config");
                }
            }
            timeout.set(attempt_timeout);
        }
        registry.breaker = breaker;
        registry.attempt_timeout = attempt_timeout;
    }
}

/// The stack's breakers advise: an open one takes its endpoint out of
/// selection unless the endpoint fails alike with its peers (breakers that
/// all open under a fleet-wide overload must not starve the fleet) or the
/// endpoints left cannot carry its load.
pub(crate) fn breaker_config(mut config: BreakerConfig) -> BreakerConfig {
    config.reject_mode = RejectMode::Advisory;
    config
}

/// Builds each endpoint's service stack.
pub(crate) struct Maker<T, C> {
    pub(crate) transport: T,
    pub(crate) classifier: C,
    pub(crate) settings: Arc<EndpointSettings>,
    pub(crate) events: Events,
    /// Whether each endpoint's per-try timeout may cover the retry layer's
    /// deadline: only when nothing hedges between them.
    pub(crate) covers_deadline: bool,
    /// Seeds each endpoint's breaker jitter (with the endpoint's key), when
    /// the stack was seeded.
    pub(crate) seed: Option<u64>,
}

impl<T, C: Clone> Maker<T, C> {
    pub(super) fn endpoint<S>(
        &self,
        key: &Arc<str>,
        target: &Target,
        connect: impl Fn(&T, &Target) -> S,
    ) -> Endpoint<EndpointService<S, C>> {
        let mut registry = self.settings.lock();
        let breaker = match Breaker::new(key.clone(), registry.breaker.clone(), self.events.clone(), Instant::now()) {
            Ok(b) => b,
            // The stack validated this config; this is unreachable.
            Err(e) => {
                tracing::error!(target: "ha::stack", endpoint = %key, error = %e, "breaker config rejected; using the defaults");
                Breaker::new(key.clone(), breaker_config(BreakerConfig::default()), self.events.clone(), Instant::now())
                    .expect("the default breaker config is valid")
            }
        };
        let breaker = match self.seed {
            Some(seed) => breaker.with_jitter_seed(mix64(seed ^ stable_hash(key.as_bytes()))),
            None => breaker,
        };
        let breaker = Arc::new(breaker);
        let timeout = AttemptTimeout::covering(registry.attempt_timeout, self.covers_deadline);
        registry.live.retain(|(b, _)| b.strong_count() > 0);
        registry.live.push((Arc::downgrade(&breaker), timeout.clone()));
        drop(registry);
        let client = TryTimeout::covering(connect(&self.transport, target), timeout);
        let service = CircuitBreaker::with_classifier(client, breaker.clone(), self.classifier.clone());
        let mut endpoint = Endpoint::new(service)
            .tier(target.tier)
            .weight(target.weight)
            .name(key.clone())
            .health_gate(BreakerGate::new(breaker));
        if let Some(zone) = &target.zone {
            endpoint = endpoint.zone(zone.clone());
        }
        endpoint
    }
}

/// A stream of target changes as a `Discover` of endpoints.
pub(crate) struct Endpoints<F> {
    pub(crate) targets: Targets,
    pub(crate) make: F,
}

impl<F, E> Stream for Endpoints<F>
where
    F: FnMut(&Arc<str>, &Target) -> Endpoint<E> + Unpin,
{
    type Item = Result<Change<Arc<str>, Endpoint<E>>, BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.targets.as_mut().poll_next(cx).map(|next| {
            next.map(|change| {
                change.map(|change| match change {
                    Change::Insert(key, target) => {
                        tracing::debug!(target: "ha::stack", endpoint = %key, %target, "endpoint added");
                        let endpoint = (this.make)(&key, &target);
                        Change::Insert(key, endpoint)
                    }
                    Change::Remove(key) => {
                        tracing::debug!(target: "ha::stack", endpoint = %key, "endpoint removed");
                        Change::Remove(key)
                    }
                })
            })
        })
    }
}
