//! ha's own contenders: ha-balance's pickers, and ha-retry's retry and hedge
//! layers over the scenario's base balancer.
//!
//! Each is built with the crate's recommended (default) configuration unless
//! its registry entry says otherwise; the balancers keep outlier ejection on
//! (the default), and report every ejection to the [`World`](super::sim::World) so the lab can
//! count the errors an endpoint served before it was ejected.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ha_balance::{Balance, BalanceBuilder, BalanceConfig, Endpoint, Picker};
use ha_core::classify::{classify_fn, ClassifyFn};
use ha_core::{Event, Events, WithAttempt};
use ha_retry::config::{HedgeConfig, HedgeDelay, RetryConfig};
use ha_retry::replay::Relabel;
use ha_retry::{HedgeLayer, RetryLayer};
use tokio::time::Instant;
use tower::{BoxError, Layer, Service, ServiceExt};

use super::contender::BuildCtx;
use super::discovery;
use super::remote;
use super::sim::{Ejection, SimRequest, Stack};
use super::stacks;

/// A backend seen through ha-balance, whose requests carry an attempt
/// context.
#[derive(Clone)]
struct Attempted<S>(S);

impl<S: Service<SimRequest>> Service<WithAttempt<SimRequest>> for Attempted<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: WithAttempt<SimRequest>) -> Self::Future {
        self.0.call(req.request)
    }
}

/// Records every ejection of this layer's endpoints, at virtual time. An
/// endpoint is named by its backend index, or by its address under the
/// facade (see [`stacks::addr`]).
pub fn ejection_events(ctx: &BuildCtx<'_>) -> Events {
    let log: Arc<Mutex<Vec<Ejection>>> = ctx.world.ejections.clone();
    let start = ctx.world.start;
    let layer = ctx.layer;
    Events::new().with_observer(move |e: &Event| {
        if let Event::EndpointEjected { endpoint, .. } = e {
            let index = endpoint.parse::<usize>().ok().or_else(|| {
                let a = endpoint.parse::<std::net::SocketAddr>().ok()?;
                Some(usize::from(a.port().checked_sub(stacks::BASE_PORT)?))
            });
            if let Some(backend) = index {
                let at_ns = Instant::now().saturating_duration_since(start).as_nanos() as u64;
                log.lock().expect("the ejection log is never poisoned").push(Ejection { at_ns, layer, backend });
            }
        }
    })
}

/// The lab's classifier, as a value of one nameable type.
fn classifier() -> ClassifyFn<stacks::OutcomeFn, (), BoxError> {
    classify_fn(stacks::outcome as stacks::OutcomeFn)
}

fn ha_balance(ctx: &BuildCtx<'_>, name: &str, picker: Picker, salt: u64) -> Stack {
    let base = ctx.settings.ha(name).map(|c| c.balance.clone()).unwrap_or_default();
    let config = BalanceConfig { picker, ..base };
    let seed = ctx.rng(salt).next_u64();
    let ring = matches!(picker, Picker::RingHash { .. });
    // A layer whose set changes feeds the balancer through a `Discover`,
    // which its discovery task polls: the backends are reached through
    // `Send` handles then (the hop costs no virtual time).
    if ctx.world.layers[ctx.layer].model.dynamic() {
        let items = remote::serve(ctx.backends)
            .into_iter()
            .enumerate()
            .map(|(i, r)| (i, Endpoint::new(Attempted(r)).name(i.to_string())))
            .collect();
        let discover = discovery::of_layer(ctx, items).expect("the layer is dynamic");
        let balance = builder(ctx, config, seed, ring)
            .build_discover(discover)
            .expect("the recommended balancer configuration is valid");
        return Stack::new(balance.map_request(WithAttempt::new));
    }
    let endpoints =
        ctx.backends.iter().map(|b| (b.index(), Endpoint::new(Attempted(b.clone())).name(b.index().to_string())));
    let balance = builder(ctx, config, seed, ring)
        .build_with(endpoints)
        .expect("the recommended balancer configuration is valid");
    Stack::new(balance.map_request(WithAttempt::new))
}

/// A balancer builder over backends reached through `B`, as every ha
/// contender of the lab configures it.
fn builder<B>(
    ctx: &BuildCtx<'_>,
    config: BalanceConfig,
    seed: u64,
    ring: bool,
) -> BalanceBuilder<usize, Attempted<B>, WithAttempt<SimRequest>, ClassifyFn<stacks::OutcomeFn, (), BoxError>> {
    let builder = Balance::<usize, Attempted<B>, WithAttempt<SimRequest>>::builder()
        .config(config)
        .classifier(classifier())
        .events(ejection_events(ctx))
        .seed(seed);
    if ring {
        builder.hash_key(|r: &WithAttempt<SimRequest>| Some(r.request.id))
    } else {
        builder
    }
}

/// ha-balance, P2C over PeakEWMA latency x pending (the default picker).
pub fn ha_p2c_ewma(ctx: &BuildCtx<'_>) -> Stack {
    ha_balance(ctx, "ha_p2c_ewma", Picker::P2cPeakEwma, 0x6861_6577)
}

/// ha-balance, P2C least pending.
pub fn ha_p2c_pending(ctx: &BuildCtx<'_>) -> Stack {
    ha_balance(ctx, "ha_p2c_pending", Picker::P2cPending, 0x6861_7064)
}

/// ha-balance, smooth weighted round robin (equal weights).
pub fn ha_round_robin(ctx: &BuildCtx<'_>) -> Stack {
    ha_balance(ctx, "ha_round_robin", Picker::RoundRobin, 0x6861_7272)
}

/// ha-balance, consistent hashing of the request id (100 virtual nodes,
/// bounded load 1.25).
pub fn ha_ring_hash(ctx: &BuildCtx<'_>) -> Stack {
    ha_balance(ctx, "ha_ring_hash", Picker::ring_hash(), 0x6861_7268)
}

/// Numbers each retry and hedge as the next attempt, so the backends draw
/// fresh behaviour for it, as for tower's retry and hedge contenders.
type NextAttempt = fn(&mut SimRequest);

fn next_attempt(req: &mut SimRequest) {
    req.attempt += 1;
}

/// ha-retry with its default configuration (3 attempts, the first retry at
/// once, then exponential backoff from 25 ms with full jitter, budget 20% +
/// 10/s over 10 s), over the base balancer.
pub fn ha_retry(ctx: &BuildCtx<'_>) -> Stack {
    let config = ctx.settings.ha("ha_retry").map_or_else(RetryConfig::default, |c| c.retry.clone());
    let layer = RetryLayer::builder(config)
        .classifier(classifier())
        .replay(Relabel::new(next_attempt as NextAttempt))
        .seed(ctx.rng(0x6861_7274).next_u64())
        .build()
        .expect("the retry configuration was validated when the file was read");
    Stack::new(layer.layer(ctx.base()))
}

/// The hedging configuration of `ha_hedge`: up to two hedges at the p97
/// latency (3% expected extra load), a 20 ms delay until 100 latencies are
/// known (the service's latency is roughly known: median 5 ms), otherwise
/// the defaults (10 s window, the default budget).
pub fn ha_hedge_config() -> HedgeConfig {
    HedgeConfig {
        max_hedges: 2,
        delay: HedgeDelay::Percentile(0.97),
        warmup_delay: Some(Duration::from_millis(20)),
        ..HedgeConfig::default()
    }
}

/// ha-retry's hedge over the base balancer, configured by [`ha_hedge_config`].
pub fn ha_hedge(ctx: &BuildCtx<'_>) -> Stack {
    let config = ctx.settings.ha("ha_hedge").and_then(|c| c.hedge.clone()).unwrap_or_else(ha_hedge_config);
    let layer = HedgeLayer::builder(config)
        .classifier(classifier())
        .replay(Relabel::new(next_attempt as NextAttempt))
        .build()
        .expect("the hedge configuration is valid");
    Stack::new(layer.layer(ctx.base()))
}
