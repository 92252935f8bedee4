//! One breaker per key of the request (an endpoint, a tenant, a partition),
//! with a bound on how many keys are remembered.
//!
//! The map is read-locked on every call (the breaker itself stays
//! lock-free); a new key takes the write lock once, and when the map is
//! full, keys idle for longer than `idle_timeout` are evicted first, then the
//! least recently used one, so memory stays bounded whatever the keys.
//!
//! [`KeyedBreakers::reconfigure`] changes the config of a running keyed
//! breaker: every breaker already made takes the new breaker config (as
//! [`Breaker::reconfigure`] does, keeping its state), and breakers made
//! later start with it.
//!
//! ```
//! use ha_breaker::{BreakerConfig, KeyedCircuitBreaker, KeyedConfig};
//! use tower::{service_fn, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let config = KeyedConfig {
//!     breaker: BreakerConfig { consecutive_failures: Some(1), ..Default::default() },
//!     ..Default::default()
//! };
//! let backend = service_fn(|(shard, ok): (u32, bool)| async move { if ok { Ok(shard) } else { Err("down") } });
//! let mut svc = KeyedCircuitBreaker::new(backend, |req: &(u32, bool)| req.0, config).unwrap();
//! assert!(svc.ready().await.unwrap().call((1, false)).await.is_err()); // trips shard 1 only
//! assert!(svc.ready().await.unwrap().call((1, true)).await.is_err()); // rejected
//! assert_eq!(svc.ready().await.unwrap().call((2, true)).await.unwrap(), 2);
//! assert!(svc.breakers().get(&1).unwrap().is_open());
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ha_core::classify::ErrorsAreFailures;
use ha_core::sync::atomic::{AtomicU64, Ordering};
use ha_core::sync::{LockExt, Mutex, RwLock, RwLockExt};
use ha_core::{Classify, Events, Instant};
use serde::{Deserialize, Serialize};
use tower_service::Service;

use crate::breaker::Breaker;
use crate::config::{BreakerConfig, ConfigError};
use crate::future::{self, tower_service_box::BoxError, BreakerRef, ResponseFuture};
use ha_core::lease::Lease;

/// The configuration of a keyed breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyedConfig {
    /// The configuration of each key's breaker.
    pub breaker: BreakerConfig,
    /// The most keys remembered at once (default 4096).
    pub max_keys: usize,
    /// A key unused for this long may be evicted when room is needed
    /// (default 10 minutes).
    #[serde(with = "ha_core::config::duration")]
    pub idle_timeout: Duration,
}

impl Default for KeyedConfig {
    fn default() -> Self {
        KeyedConfig { breaker: BreakerConfig::default(), max_keys: 4096, idle_timeout: Duration::from_secs(600) }
    }
}

impl KeyedConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be at least 1"));
        }
        self.breaker.validate()
    }
}

struct Entry {
    breaker: Arc<Breaker>,
    /// ms since the map's epoch.
    last_used: AtomicU64,
}

/// The breakers of a keyed breaker, shared by its clones.
pub struct KeyedBreakers<K> {
    map: RwLock<HashMap<K, Entry>>,
    /// Read when a key is added or evicted, never on a call to a known key.
    /// Locked after `map` when both are.
    config: Mutex<KeyedConfig>,
    /// Serialises reconfigurations (taken before `config` and `map`), so
    /// that the breakers end with the config the last one stored.
    reconfiguring: Mutex<()>,
    events: Events,
    epoch: Instant,
    evicted: AtomicU64,
}

impl<K: Hash + Eq + Clone + fmt::Display> KeyedBreakers<K> {
    /// An empty set of breakers.
    pub fn new(config: KeyedConfig, events: Events) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(KeyedBreakers {
            map: RwLock::new(HashMap::new()),
            config: Mutex::new(config),
            reconfiguring: Mutex::new(()),
            events,
            epoch: Instant::now(),
            evicted: AtomicU64::new(0),
        })
    }

    /// The configuration in force (a copy).
    pub fn config(&self) -> KeyedConfig {
        self.config.lock_or_recover().clone()
    }

    /// Replaces the configuration while calls run.
    ///
    /// `config` is checked as [`KeyedBreakers::new`] checks it, with the
    /// same [`ConfigError`]s; when it is rejected nothing changes. When it
    /// is accepted, every breaker already made is reconfigured with
    /// `config.breaker` (keeping its state, as [`Breaker::reconfigure`]
    /// describes) and breakers made for new keys use it. A lower
    /// `max_keys` is reached as keys are added (each new key evicts until
    /// there is room), not by evicting at once; a new `idle_timeout`
    /// applies from the next eviction.
    ///
    /// Calls are not held up: the map is only read-locked, as on every call.
    ///
    /// ```
    /// use ha_breaker::keyed::KeyedBreakers;
    /// use ha_breaker::{BreakerConfig, ConfigError, KeyedConfig};
    /// use ha_core::{Events, Instant};
    ///
    /// let breakers = KeyedBreakers::<u32>::new(KeyedConfig::default(), Events::new()).unwrap();
    /// let one = breakers.breaker_for(&1, Instant::now());
    /// let stricter = BreakerConfig { consecutive_failures: Some(3), ..Default::default() };
    /// breakers.reconfigure(KeyedConfig { breaker: stricter.clone(), ..Default::default() }).unwrap();
    /// assert_eq!(one.config(), stricter);
    /// assert_eq!(breakers.breaker_for(&2, Instant::now()).config(), stricter);
    ///
    /// let bad = KeyedConfig { max_keys: 0, ..Default::default() };
    /// assert_eq!(breakers.reconfigure(bad).unwrap_err().field(), "max_keys");
    /// assert_eq!(breakers.config().breaker, stricter);
    /// ```
    pub fn reconfigure(&self, config: KeyedConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let _serial = self.reconfiguring.lock_or_recover();
        let breaker = config.breaker.clone();
        // Store first, then visit the map: a breaker made meanwhile either
        // read the new config or was inserted (under the write lock) before
        // the read lock below is granted, so it is visited.
        *self.config.lock_or_recover() = config;
        let map = self.map.read_or_recover();
        for entry in map.values() {
            entry.breaker.reconfigure(breaker.clone())?;
        }
        Ok(())
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// The breaker of `key`, if it is remembered.
    pub fn get(&self, key: &K) -> Option<Arc<Breaker>> {
        self.map.read_or_recover().get(key).map(|e| e.breaker.clone())
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.map.read_or_recover().len()
    }

    /// True when no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys evicted so far.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// The breaker of `key`, made if needed, marked used at `now`.
    pub fn breaker_for(&self, key: &K, now: Instant) -> Arc<Breaker> {
        let now_ms = self.ms(now);
        if let Some(e) = self.map.read_or_recover().get(key) {
            // Write only when the value changes, so busy keys do not bounce
            // the cache line between threads on every call.
            if e.last_used.load(Ordering::Relaxed) != now_ms {
                e.last_used.store(now_ms, Ordering::Relaxed);
            }
            return e.breaker.clone();
        }
        let mut map = self.map.write_or_recover();
        if let Some(e) = map.get(key) {
            return e.breaker.clone();
        }
        let config = self.config();
        if map.len() >= config.max_keys {
            self.make_room(&mut map, &config, now_ms);
        }
        let breaker = Arc::new(
            Breaker::new(key.to_string(), config.breaker, self.events.clone(), now)
                .expect("the config was validated when the keyed breaker was built"),
        );
        map.insert(key.clone(), Entry { breaker: breaker.clone(), last_used: AtomicU64::new(now_ms) });
        breaker
    }

    /// Like [`breaker_for`](Self::breaker_for), as a lease (no shared
    /// reference count touched when the thread's stash has it).
    pub(crate) fn lease_for(&self, key: &K, now: Instant) -> Lease<Breaker> {
        let now_ms = self.ms(now);
        if let Some(e) = self.map.read_or_recover().get(key) {
            if e.last_used.load(Ordering::Relaxed) != now_ms {
                e.last_used.store(now_ms, Ordering::Relaxed);
            }
            return Lease::of(&e.breaker);
        }
        Lease::of(&self.breaker_for(key, now))
    }

    /// Forgets every key idle for longer than the idle timeout at `now`;
    /// returns how many.
    pub fn evict_idle(&self, now: Instant) -> usize {
        let now_ms = self.ms(now);
        let mut map = self.map.write_or_recover();
        let idle_timeout = self.config.lock_or_recover().idle_timeout;
        self.evict_idle_locked(&mut map, idle_timeout, now_ms)
    }

    fn evict_idle_locked(&self, map: &mut HashMap<K, Entry>, idle_timeout: Duration, now_ms: u64) -> usize {
        let idle = idle_timeout.as_millis() as u64;
        let before = map.len();
        map.retain(|_, e| now_ms.saturating_sub(e.last_used.load(Ordering::Relaxed)) < idle);
        let n = before - map.len();
        self.evicted.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Evicts idle keys, then least recently used ones, until a key fits
    /// (more than one only after `max_keys` was lowered).
    fn make_room(&self, map: &mut HashMap<K, Entry>, config: &KeyedConfig, now_ms: u64) {
        self.evict_idle_locked(map, config.idle_timeout, now_ms);
        while map.len() >= config.max_keys {
            let lru = map.iter().min_by_key(|(_, e)| e.last_used.load(Ordering::Relaxed)).map(|(k, _)| k.clone());
            let Some(k) = lru else { return };
            map.remove(&k);
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<K> fmt::Debug for KeyedBreakers<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max_keys = self.config.lock_or_recover().max_keys;
        f.debug_struct("KeyedBreakers").field("max_keys", &max_keys).finish_non_exhaustive()
    }
}

/// A service with one circuit breaker per key of the request, chosen by
/// `F: Fn(&Req) -> K`. Rejections always fail fast (the key is only known
/// once the request is).
pub struct KeyedCircuitBreaker<S, K, F, C = ErrorsAreFailures> {
    inner: S,
    breakers: Arc<KeyedBreakers<K>>,
    key_fn: F,
    classifier: C,
}

impl<S, K, F> KeyedCircuitBreaker<S, K, F>
where
    K: Hash + Eq + Clone + fmt::Display,
{
    /// `inner` with one breaker per `key_fn(&request)`.
    pub fn new(inner: S, key_fn: F, config: KeyedConfig) -> Result<Self, ConfigError> {
        Ok(Self::with_breakers(inner, key_fn, Arc::new(KeyedBreakers::new(config, Events::new())?), Default::default()))
    }
}

impl<S, K, F, C> KeyedCircuitBreaker<S, K, F, C> {
    /// `inner` with the breakers of `breakers` (shared with whoever else
    /// holds them), classifying with `classifier`.
    pub fn with_breakers(inner: S, key_fn: F, breakers: Arc<KeyedBreakers<K>>, classifier: C) -> Self {
        KeyedCircuitBreaker { inner, breakers, key_fn, classifier }
    }

    /// The breakers, by key.
    pub fn breakers(&self) -> &Arc<KeyedBreakers<K>> {
        &self.breakers
    }
}

impl<S: Clone, K, F: Clone, C: Clone> Clone for KeyedCircuitBreaker<S, K, F, C> {
    fn clone(&self) -> Self {
        KeyedCircuitBreaker {
            inner: self.inner.clone(),
            breakers: self.breakers.clone(),
            key_fn: self.key_fn.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S: fmt::Debug, K, F, C> fmt::Debug for KeyedCircuitBreaker<S, K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<S, K, F, C, Req> Service<Req> for KeyedCircuitBreaker<S, K, F, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone + fmt::Display,
    F: Fn(&Req) -> K,
    C: Classify<Req, S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = (self.key_fn)(&req);
        let lease = self.breakers.lease_for(&key, Instant::now());
        future::call(&mut self.inner, BreakerRef::Leased(lease), &self.classifier, None, req)
    }
}
