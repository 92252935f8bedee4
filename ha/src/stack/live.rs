//! A running stack takes a new [`Config`]: checked whole first, as at build
//! time, then put in force layer by layer without dropping a request or
//! losing what the stack learned (budget balance, endpoints' latency,
//! ejections, breaker states).
//!
//! ```
//! use std::net::SocketAddr;
//! use ha::core::WithAttempt;
//! use ha::{Config, Stack, Target};
//! use tower::{service_fn, BoxError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let transport = |_: &Target| service_fn(|_req: WithAttempt<()>| async { Ok::<_, BoxError>("ok") });
//! let stack: Stack<_, WithAttempt<()>> = Stack::builder(transport)
//!     .endpoints([SocketAddr::from(([127, 0, 0, 1], 8081))])
//!     .build()
//!     .unwrap();
//!
//! let mut config = stack.config();
//! config.retry.max_attempts = 5;
//! stack.reconfigure(config).unwrap();
//! assert_eq!(stack.config().retry.max_attempts, 5);
//!
//! // Refused whole, with the error a build would give; nothing changes.
//! let mut bad = stack.config();
//! bad.retry.max_attempts = 0;
//! assert_eq!(stack.reconfigure(bad).unwrap_err().field(), "retry.max_attempts");
//! assert_eq!(stack.config().retry.max_attempts, 5);
//!
//! // Or follow a watch channel (a file watcher, an admin endpoint...).
//! let (tx, rx) = tokio::sync::watch::channel(stack.config());
//! let follower = stack.follow(rx);
//! # drop(tx);
//! # follower.await.unwrap();
//! # }
//! ```

use std::sync::{Arc, Mutex};

use ha_core::sync::LockExt;

use ha_breaker::Breaker;
use ha_core::{Events, Instant};
use ha_retry::{RetryAfterScope, RetryConfig};
use tokio::sync::watch;

use super::endpoints::{breaker_config, EndpointSettings};
use super::hedged::Hedged;
use super::{Sent, Stack};
use crate::config::{Config, ConfigError};
use crate::request::StackRequest;
use crate::target::Transport;

/// What every clone of a stack shares to be reconfigured.
pub(crate) struct Live {
    pub(crate) config: Mutex<Config>,
    pub(crate) endpoints: Arc<EndpointSettings>,
    /// The Retry-After scope the transport's protocol fixes, if any.
    pub(crate) retry_after_scope: Option<RetryAfterScope>,
}

/// Checks the breaker section the way each endpoint's breaker will be built.
pub(crate) fn check_breaker(config: &Config) -> Result<(), ConfigError> {
    Breaker::new("check", breaker_config(config.breaker.clone()), Events::new(), Instant::now())
        .map(drop)
        .map_err(|e| e.in_section("breaker"))
}

/// The retry layer's config: the retry section with the overall deadline
/// and the Retry-After scope the transport fixes, if it does.
pub(crate) fn retry_config(config: &Config, scope: Option<RetryAfterScope>) -> RetryConfig {
    let mut retry = config.retry.clone();
    retry.deadline = config.timeouts.request;
    retry.retry_after_scope = scope.unwrap_or(retry.retry_after_scope);
    retry
}

impl<T, Req, C> Stack<T, Req, C>
where
    Req: StackRequest,
    T: Transport<Sent<Req>>,
{
    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.live.config.lock_or_recover().clone()
    }

    /// Puts `config` in force on this stack and every clone of it.
    ///
    /// It is checked whole first, with the errors a build gives, and refused
    /// (leaving the config in force as it was) if any part is invalid, or if
    /// it changes what only a new stack can: `max_replay_bytes`, the
    /// budget's window (`retry.budget.ttl`, `retry.budget.buckets`), or
    /// hedging switched on or off (its settings may change). Then, from the next
    /// request on: the balancer's picker, tiers, outlier rules and slow
    /// start; the retry policy, the overall deadline and the budget's rates
    /// (its balance is kept); the hedge settings; every endpoint's breaker
    /// thresholds (each keeps its state) and per-try timeout, and those of
    /// endpoints added later. Requests in flight finish under the settings
    /// they started with.
    pub fn reconfigure(&self, config: Config) -> Result<(), ConfigError> {
        let mut current = self.live.config.lock_or_recover();
        config.validate()?;
        if config.max_replay_bytes != current.max_replay_bytes {
            return Err(crate::config::fixed("max_replay_bytes", "the replay policy"));
        }
        if config.hedge.is_some() != current.hedge.is_some() {
            return Err(crate::config::fixed("hedge", "whether the stack hedges"));
        }
        if config.retry.budget.ttl != current.retry.budget.ttl {
            return Err(crate::config::fixed("retry.budget.ttl", "the budget's window"));
        }
        if config.retry.budget.buckets != current.retry.budget.buckets {
            return Err(crate::config::fixed("retry.budget.buckets", "the budget's window"));
        }
        check_breaker(&config)?;
        let retry = retry_config(&config, self.live.retry_after_scope);
        // The balancer checks what only it can (a ring hash needs a hash
        // key), so it goes first: a refusal there leaves everything as it was.
        self.balance().reconfigure(config.balance.clone()).map_err(|e| e.in_section("balance"))?;
        self.inner.reconfigure(retry).map_err(|e| e.in_section("retry"))?;
        if let (Hedged::On(hedge), Some(section)) = (self.inner.get_ref(), &config.hedge) {
            hedge.reconfigure(section.clone()).map_err(|e| e.in_section("hedge"))?;
        }
        self.live.endpoints.apply(config.breaker.clone(), config.timeouts.attempt);
        tracing::info!(target: "ha::stack", "configuration applied");
        *current = config;
        Ok(())
    }

    /// Follows a watch channel: each config sent is put in force with
    /// [`reconfigure`](Self::reconfigure); one that is refused is reported
    /// (a `tracing` warning naming the field) and the one in force stays.
    /// The task holds a clone of the stack and ends when the sender is
    /// dropped.
    pub fn follow(&self, mut configs: watch::Receiver<Config>) -> tokio::task::JoinHandle<()>
    where
        C: Clone,
        Stack<T, Req, C>: Send + 'static,
    {
        let stack = self.clone();
        tokio::spawn(async move {
            loop {
                let config = configs.borrow_and_update().clone();
                if config != stack.config() {
                    if let Err(e) = stack.reconfigure(config) {
                        tracing::warn!(target: "ha::stack", field = e.field(), error = %e, "configuration refused; the one in force stays");
                    }
                }
                if configs.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}
