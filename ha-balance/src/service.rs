//! The balancer service and the handle that changes its endpoint set.

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use ha_core::classify::{Classify, ErrorsAreFailures};
use ha_core::rng::FastRng;
use ha_core::{HasAttemptContext, Instant};
use tower::discover::Change;
use tower::{BoxError, Service};

use crate::config::{BalanceConfig, Picker};
use crate::endpoint::{Endpoint, EndpointStats};
use crate::error::ConfigError;
use crate::future::{ResponseFuture, Wait};
use crate::pick::Request;
use crate::shared::Shared;

/// Extracts the key a ring-hash balancer hashes (`None`: no affinity).
pub(crate) type HashKeyFn<Req> = Arc<dyn Fn(&Req) -> Option<u64> + Send + Sync>;

/// A load balancer over a changing set of endpoints; see the
/// [crate docs](crate).
///
/// Every clone shares one endpoint table and its health, load and outlier
/// state; each clone keeps its own random generator and its own cached view
/// of the table, so selection takes no lock and no clone waits for another.
///
/// The endpoint is picked in `call`, because the pick depends on the
/// request (the endpoints it already tried, its hash key). `poll_ready` is
/// therefore always ready; the response future then waits for the picked
/// endpoint's own readiness on a clone of its service (`S: Clone`, as with
/// [`ServiceExt::oneshot`](tower::ServiceExt::oneshot)), so no request ever
/// waits behind another one in a shared queue, and no `Buffer` is needed.
/// When no endpoint is available the future waits at most
/// [`no_healthy_timeout`](crate::BalanceConfig::no_healthy_timeout) for one
/// and then fails with [`NoHealthyEndpoint`](ha_core::NoHealthyEndpoint).
pub struct Balance<K, S, Req, C = ErrorsAreFailures> {
    pub(crate) core: Arc<Shared<K, S>>,
    pub(crate) hash_key: Option<HashKeyFn<Req>>,
    pub(crate) classifier: C,
    pub(crate) rng: FastRng,
}

impl<K, S, Req, C> Balance<K, S, Req, C>
where
    K: Hash + Eq + Clone + fmt::Debug,
{
    /// The handle that inserts, removes and replaces endpoints.
    pub fn endpoints(&self) -> Endpoints<K, S> {
        Endpoints { core: self.core.clone() }
    }

    /// The counters and state of every endpoint, ordered by id.
    pub fn endpoint_stats(&self) -> Vec<EndpointStats> {
        let now = Instant::now();
        let now_ns = self.core.clock().ns(now);
        self.core.table().snapshot().endpoints.iter().map(|s| s.stats(now, now_ns)).collect()
    }

    /// True while the balancer is in panic mode (as of its last recount).
    pub fn in_panic_mode(&self) -> bool {
        self.core.table().snapshot().plan.in_panic()
    }

    /// True while its endpoints queue (as of the last recount): the time
    /// requests spend in flight at the median endpoint many times its calm
    /// level, the fleet past its capacity. A retry layer above withholds
    /// retries of failed attempts meanwhile
    /// ([`Event::Queueing`](ha_core::Event::Queueing)).
    pub fn is_queueing(&self) -> bool {
        self.core.queueing()
    }

    /// Requests in flight through this balancer (all clones).
    pub fn in_flight(&self) -> u64 {
        self.core.in_flight().total()
    }

    /// The configuration in force.
    pub fn config(&self) -> BalanceConfig {
        self.core.table().tuning().cfg.clone()
    }

    /// Puts a new configuration in force for this balancer and every clone,
    /// without dropping a request or losing an endpoint's state.
    ///
    /// It is checked as at build time and refused with the same error
    /// (nothing changes then). Once it returns, every new pick uses the new
    /// picker, load weighing, tier settings and slow start; every outcome is
    /// judged by the new outlier rules; the health checker, if any, uses the
    /// new timing from its next round. Each endpoint keeps its latency
    /// estimate, in-flight count, ejection (an ejection in force runs to the
    /// end it was given), probes and slow-start ramp. A request picked
    /// before the change finishes under the settings it started with.
    ///
    /// ```
    /// use ha_balance::{Balance, BalanceConfig, Endpoint, Picker};
    /// use ha_core::WithAttempt;
    /// use tower::service_fn;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let echo = service_fn(|r: WithAttempt<u32>| async move { Ok::<_, std::convert::Infallible>(r.into_inner()) });
    /// let balance: Balance<&str, _, WithAttempt<u32>> =
    ///     Balance::builder().build_with([("a", Endpoint::new(echo))]).unwrap();
    ///
    /// let round_robin = BalanceConfig { picker: Picker::RoundRobin, ..BalanceConfig::default() };
    /// balance.reconfigure(round_robin).unwrap();
    /// assert_eq!(balance.config().picker, Picker::RoundRobin);
    ///
    /// let ring = BalanceConfig { picker: Picker::RingHash { vnodes: 100, load_factor: 1.25 }, ..BalanceConfig::default() };
    /// let refused = balance.reconfigure(ring).unwrap_err();
    /// assert_eq!(refused.field(), "picker"); // ring hash needs a hash key
    /// assert_eq!(balance.config().picker, Picker::RoundRobin);
    /// # }
    /// ```
    pub fn reconfigure(&self, config: BalanceConfig) -> Result<(), ConfigError> {
        config.validate()?;
        if matches!(config.picker, Picker::RingHash { .. }) && !self.core.has_hash_key() {
            return Err(ConfigError::new("picker", "ring_hash needs a hash key (BalanceBuilder::hash_key)"));
        }
        self.core.reconfigure(config);
        Ok(())
    }
}

impl<K, S, Req, C: Clone> Clone for Balance<K, S, Req, C> {
    fn clone(&self) -> Self {
        // Each clone draws its own sequence; derived from one seed so a
        // seeded balancer stays reproducible.
        let n = self.core.next_seed();
        Balance {
            core: self.core.clone(),
            hash_key: self.hash_key.clone(),
            classifier: self.classifier.clone(),
            rng: FastRng::new(n),
        }
    }
}

impl<K, S, Req, C> fmt::Debug for Balance<K, S, Req, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("endpoints", &self.core.table().len())
            .field("picker", &self.core.table().tuning().cfg.picker)
            .finish()
    }
}

impl<K, S, Req, C> Service<Req> for Balance<K, S, Req, C>
where
    S: Service<Req> + Clone + 'static,
    S::Error: Into<BoxError>,
    C: Classify<Req, S::Response, S::Error> + Clone,
    Req: HasAttemptContext,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<K, S, Req, C>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let core = &self.core;
        // The one clock reading of this call: selection, EWMA decay, slow
        // start, ejection expiry and the latency's start all share it. A
        // retry layer above lends the one it took a moment ago.
        let now = ha_core::time::lent().unwrap_or_else(Instant::now);
        let now_ns = core.clock().ns(now);
        let hash = self.hash_key.as_ref().and_then(|f| f(&req));
        let request = Request { now, now_ns, tried: req.attempt_context(), hash };
        // Picked in this thread's view of the table: a balancer cloned per
        // request touches no reference count to read it.
        let picked = core.table().with_current(|snap| {
            let (slot, probe) = core.pick(snap, &request, &mut self.rng)?;
            // The context looked up once for the pick, the retry's count
            // of untried endpoints and the record of this one.
            if let Some(ctx) = request.tried {
                let tried = ctx.tried_count() as u32 + u32::from(!ctx.was_tried(slot.id));
                ctx.set_untried(snap.plan.available_all.load(Ordering::Relaxed).saturating_sub(tried));
                ctx.record_tried(slot.id);
                ctx.set_queueing(core.queueing());
            }
            Some((slot.clone(), probe))
        });
        match picked {
            Some((slot, probe)) => {
                ResponseFuture::dispatch(core.clone(), slot, probe, req, now_ns, hash, self.classifier.clone())
            }
            None => {
                let wait = Wait::new(core.clone(), core.table().reader(), req, hash, self.rng.next_u64(), now);
                ResponseFuture::wait(wait, hash, self.classifier.clone())
            }
        }
    }
}

/// Changes a balancer's endpoint set: one endpoint at a time, a batch (one
/// table rebuild), or a full reset. Every clone of the balancer sees the
/// change on its next call. Cheap to clone.
pub struct Endpoints<K, S> {
    core: Arc<Shared<K, S>>,
}

impl<K, S> Clone for Endpoints<K, S> {
    fn clone(&self) -> Self {
        Endpoints { core: self.core.clone() }
    }
}

impl<K, S> fmt::Debug for Endpoints<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoints").field("len", &self.core.table().len()).finish()
    }
}

impl<K, S> Endpoints<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug,
{
    pub(crate) fn new(core: Arc<Shared<K, S>>) -> Self {
        Endpoints { core }
    }

    /// Adds `endpoint` under `key`, replacing any endpoint with that key.
    pub fn insert(&self, key: K, endpoint: Endpoint<S>) {
        self.core.apply([Change::Insert(key, endpoint)]);
    }

    /// Removes the endpoint with `key`. Requests already sent to it finish there.
    pub fn remove(&self, key: K) {
        self.core.apply([Change::Remove(key)]);
    }

    /// Applies many changes at once.
    pub fn batch(&self, changes: impl IntoIterator<Item = Change<K, Endpoint<S>>>) {
        self.core.apply(changes);
    }

    /// Replaces the whole set. An endpoint whose key, tier and weight stay
    /// the same is kept as it is (its service, load, health and counters);
    /// the new description of it is dropped.
    pub fn reset(&self, endpoints: impl IntoIterator<Item = (K, Endpoint<S>)>) {
        self.core.reset(endpoints);
    }

    /// How many endpoints the balancer has.
    pub fn len(&self) -> usize {
        self.core.table().len()
    }

    /// True when it has none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
