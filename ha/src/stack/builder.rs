//! Builds a [`Stack`]: transport, configuration, classifier, events, and
//! where the endpoints come from.

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use futures_util::{StreamExt, TryStreamExt};
use ha_balance::Balance;
use ha_core::rng::{mix64, GOLDEN_GAMMA};
use ha_core::{Classify, Events};
use ha_retry::{HedgeLayer, RetryLayer};
use tower::discover::{Change, Discover};
use tower::{BoxError, Layer};

use super::endpoints::{EndpointSettings, Endpoints, Maker, Source};
use super::hedged::Hedged;
use super::live::{check_breaker, retry_config, Live};
use super::{Sent, Stack};
use crate::config::{Config, ConfigError};
use crate::request::StackRequest;
use crate::target::{Target, Transport};

type HashKey<R> = Arc<dyn Fn(&R) -> Option<u64> + Send + Sync>;

/// A `Discover` of targets as the boxed stream the stack follows.
fn targets<D>(discover: D) -> super::endpoints::Targets
where
    D: Discover<Service = Target> + Send + 'static,
    D::Key: fmt::Display,
    D::Error: Into<BoxError>,
{
    futures_util::stream::unfold(Box::pin(discover), |mut d| async move {
        let next = std::future::poll_fn(|cx| d.as_mut().poll_discover(cx)).await?;
        Some((next, d))
    })
    .map_ok(|change| match change {
        Change::Insert(k, t) => Change::Insert(Arc::<str>::from(k.to_string()), t),
        Change::Remove(k) => Change::Remove(Arc::<str>::from(k.to_string())),
    })
    .map_err(Into::into)
    .boxed()
}

/// Builds a [`Stack`]; start with [`Stack::builder`] or an adapter's
/// constructor (`ha::hyper::HyperTransport::stack`).
#[must_use = "a builder does nothing until `build` is called"]
pub struct StackBuilder<T, Req: StackRequest, C> {
    transport: T,
    classifier: C,
    config: Config,
    events: Events,
    source: Option<Source>,
    hash_key: Option<HashKey<Sent<Req>>>,
    seed: Option<u64>,
    _req: PhantomData<fn(Req)>,
}

impl<T, Req: StackRequest, C> fmt::Debug for StackBuilder<T, Req, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackBuilder")
            .field("config", &self.config)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl<T, Req> Stack<T, Req>
where
    Req: StackRequest,
    T: Transport<Sent<Req>>,
{
    /// A builder of a stack over `transport`, with the default
    /// configuration and the default classifier of `Req`
    /// (`HttpClassifier` for `http::Request`, `ErrorsAreFailures` for
    /// `WithAttempt`).
    pub fn builder(transport: T) -> StackBuilder<T, Req, Req::Classifier> {
        StackBuilder {
            transport,
            classifier: Req::Classifier::default(),
            config: Config::default(),
            events: Events::new(),
            source: None,
            hash_key: None,
            seed: None,
            _req: PhantomData,
        }
    }
}

impl<T, Req, C> StackBuilder<T, Req, C>
where
    Req: StackRequest,
    T: Transport<Sent<Req>>,
{
    /// The configuration of every layer (default: [`Config::default`]).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The one classifier every layer (retry, hedge, balancer, breakers)
    /// uses to tell success from failure.
    pub fn classifier<C2>(self, classifier: C2) -> StackBuilder<T, Req, C2> {
        StackBuilder {
            transport: self.transport,
            classifier,
            config: self.config,
            events: self.events,
            source: self.source,
            hash_key: self.hash_key,
            seed: self.seed,
            _req: PhantomData,
        }
    }

    /// Where every layer reports its state changes (also emitted as
    /// `tracing` events).
    pub fn events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// Seeds every random choice of the stack (the balancer's picks, retry
    /// and hedge jitter, breakers' open-wait jitter), which otherwise come
    /// from entropy: the same seed and the same inputs give the same
    /// decisions, for simulations and reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The request's key for the ring-hash picker.
    pub fn hash_key(mut self, key: impl Fn(&Sent<Req>) -> Option<u64> + Send + Sync + 'static) -> Self {
        self.hash_key = Some(Arc::new(key));
        self
    }

    /// A fixed set of endpoints, each keyed by its address.
    pub fn endpoints<I>(mut self, targets: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<Target>,
    {
        let list = targets
            .into_iter()
            .map(|t| {
                let t: Target = t.into();
                (Arc::from(t.addr.to_string()), t)
            })
            .collect();
        self.source = Some(Source::Static(list));
        self
    }

    /// Endpoints from a `Discover` of [`Target`]s (a stream of
    /// `Change::Insert(key, target)` / `Change::Remove(key)`), followed by
    /// a background task for as long as the stack lives. An error is
    /// reported (`Event::DiscoveryInterrupted`) and the stream polled on;
    /// if it ends, the endpoints stay as they are.
    pub fn discover<D>(mut self, discover: D) -> Self
    where
        D: Discover<Service = Target> + Send + 'static,
        D::Key: fmt::Display,
        D::Error: Into<BoxError>,
    {
        self.source = Some(Source::Stream(targets(discover)));
        self
    }

    /// Endpoints from the `Discover`s `subscribe` makes: when one fails or
    /// ends, the stack reports it, keeps its endpoints, and subscribes
    /// again after a jittered backoff (100 ms doubling to 30 s); the new
    /// subscription's first batch is taken as the whole set.
    pub fn discover_with<D, F>(mut self, mut subscribe: F) -> Self
    where
        F: FnMut() -> D + Send + 'static,
        D: Discover<Service = Target> + Send + 'static,
        D::Key: fmt::Display,
        D::Error: Into<BoxError>,
    {
        self.source = Some(Source::Subscribe(Box::new(move || targets(subscribe()))));
        self
    }

    /// Endpoints from the live members of a membership cluster that
    /// advertise a service address (members without one are skipped), with
    /// each member's tier, zone and weight. Members outside this node's own
    /// zone go one tier down, so traffic stays in the zone while it is
    /// healthy and fails over to the other zones when it is not.
    #[cfg(feature = "membership")]
    pub fn cluster(self, cluster: &crate::membership::Cluster) -> Self {
        let own = cluster.all_members().iter().find(|m| m.name == *cluster.name()).map(|m| m.meta.zone.clone());
        let cluster = cluster.clone();
        self.discover_with(move || {
            let targets = crate::membership::targets(&cluster);
            match &own {
                Some(zone) => targets.prefer_zone(zone.as_str()),
                None => targets,
            }
        })
    }

    /// Builds the stack. Fails when the configuration is invalid.
    pub fn build(self) -> Result<Stack<T, Req, C>, ConfigError>
    where
        C: Classify<Sent<Req>, T::Response, BoxError> + Clone + Send + Sync + 'static,
    {
        let config = self.config;
        config.validate()?;
        check_breaker(&config)?;

        // One seed, a separate stream per layer.
        let seed_for = |layer: u64| self.seed.map(|s| mix64(s ^ layer.wrapping_mul(GOLDEN_GAMMA)));
        let retry_after_scope = self.transport.retry_after_scope();
        let mut retry = RetryLayer::builder(retry_config(&config, retry_after_scope))
            .classifier(self.classifier.clone())
            .replay(Req::replay(config.max_replay_bytes))
            .events(self.events.clone());
        if let Some(seed) = seed_for(1) {
            retry = retry.seed(seed);
        }
        let retry = retry.build().map_err(|e| e.in_section("retry"))?;
        let hedge = match config.hedge.clone() {
            Some(hedge) => Some(
                HedgeLayer::builder(hedge)
                    .classifier(self.classifier.clone())
                    .replay(Req::hedge_replay())
                    .budget(retry.budget().clone())
                    .count_requests(false)
                    .events(self.events.clone())
                    .build()
                    .map_err(|e| e.in_section("hedge"))?,
            ),
            None => None,
        };

        let settings = Arc::new(EndpointSettings::new(config.breaker.clone(), config.timeouts.attempt));
        let maker = Arc::new(Maker {
            transport: self.transport,
            classifier: self.classifier.clone(),
            settings: settings.clone(),
            events: self.events.clone(),
            covers_deadline: hedge.is_none(),
            seed: seed_for(3),
        });
        let mut builder =
            Balance::builder().config(config.balance.clone()).events(self.events.clone()).classifier(self.classifier);
        if let Some(seed) = seed_for(2) {
            builder = builder.seed(seed);
        }
        let budget = retry.budget().clone();
        builder = builder.retries_refused(move || budget.is_exhausted());
        if let Some(key) = self.hash_key {
            builder = builder.hash_key(move |r| key(r));
        }
        let connect = |t: &T, target: &Target| t.connect(target);
        let balance = match self.source {
            None => builder.build(),
            Some(Source::Static(list)) => {
                let endpoints: Vec<_> = list.iter().map(|(k, t)| (k.clone(), maker.endpoint(k, t, connect))).collect();
                builder.build_with(endpoints)
            }
            Some(Source::Stream(targets)) => {
                let make = move |k: &Arc<str>, t: &Target| maker.endpoint(k, t, connect);
                builder.build_discover(Endpoints { targets, make })
            }
            Some(Source::Subscribe(mut subscribe)) => builder.build_discover_with(move || {
                let maker = maker.clone();
                let make = move |k: &Arc<str>, t: &Target| maker.endpoint(k, t, connect);
                Endpoints { targets: subscribe(), make }
            }),
        }
        .map_err(|e| e.in_section("balance"))?;

        let below = match hedge {
            Some(layer) => Hedged::On(layer.layer(balance)),
            None => Hedged::Off(balance),
        };
        let live = Arc::new(Live { config: Mutex::new(config), endpoints: settings, retry_after_scope });
        Ok(Stack { inner: retry.layer(below), live })
    }
}
