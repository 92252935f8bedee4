//! The contender registry: every client stack the lab can run, in one table.
//!
//! A contender is a name, a role and a function that builds its client stack
//! for one layer from that layer's simulated backends. Adding a contender
//! (say `ha_p2c_ewma` when ha-balance lands) is one [`Contender`] entry in
//! [`CONTENDERS`] and its build function.
//!
//! Balancers pick a backend per attempt. Request-level contenders (retry,
//! hedge) wrap the scenario's `base_balancer`, so that a comparison such as
//! `no_hedge` against `tower_hedge` differs only in the hedging.

use std::cell::Cell;
use std::future::{ready, Ready};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ha_core::rng::FastRng;
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::hedge::Hedge;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover, PendingRequestsDiscover};
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::{Policy, Retry};
use tower::{BoxError, Service};

use super::discovery;
use super::ha;
use super::settings::Settings;
use super::sim::{mix, BackendError, SimBackend, SimRequest, Stack, World};
use super::stacks;

/// What a contender decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Picks a backend for each attempt.
    Balancer,
    /// Decides whether to send again (retry, hedge), over the base balancer.
    RequestPolicy,
    /// A whole client stack (retry, balancing, timeouts, ...).
    Stack,
}

/// Everything a build function may use for one layer.
pub struct BuildCtx<'a> {
    /// The simulated world.
    pub world: &'a Rc<World>,
    /// The layer this stack calls (0 = the one users call).
    pub layer: usize,
    /// Which caller owns this stack: the index of the calling backend in the
    /// layer above (0 for the users).
    pub client: usize,
    /// The layer's backends, as services.
    pub backends: &'a [SimBackend],
    /// The scenario's balancer for request-level contenders.
    pub base_balancer: &'static Contender,
    /// The scenario's contender settings.
    pub settings: &'a Settings,
}

impl BuildCtx<'_> {
    /// A generator seeded from the run's seed, the layer, the client and
    /// `salt`, so every randomised contender is reproducible.
    pub fn rng(&self, salt: u64) -> FastRng {
        FastRng::new(mix(mix(mix(self.world.seed, self.layer as u64), self.client as u64), salt))
    }

    /// The stack of the base balancer, for request-level contenders.
    pub fn base(&self) -> Stack {
        (self.base_balancer.build)(self)
    }
}

/// One entry of the registry.
#[derive(Debug)]
pub struct Contender {
    /// Name used in scenario files and reports.
    pub name: &'static str,
    /// Role.
    pub role: Role,
    /// One line for `lab --list`.
    pub about: &'static str,
    /// Builds the client stack of one layer.
    pub build: fn(&BuildCtx<'_>) -> Stack,
    /// Whether it ejects outliers (and reports ejections to the world).
    pub ejects: bool,
}

/// Every contender, in report order.
pub static CONTENDERS: &[Contender] = &[
    Contender {
        name: "round_robin",
        role: Role::Balancer,
        about: "each attempt to the next backend in turn",
        build: round_robin,
        ejects: false,
    },
    Contender {
        name: "random",
        role: Role::Balancer,
        about: "each attempt to a uniformly random backend",
        build: random,
        ejects: false,
    },
    Contender {
        name: "tower_p2c_pending",
        role: Role::Balancer,
        about: "tower::balance::p2c over PendingRequestsDiscover (least pending of two random)",
        build: tower_p2c_pending,
        ejects: false,
    },
    Contender {
        name: "tower_p2c_peak_ewma",
        role: Role::Balancer,
        about: "tower::balance::p2c over PeakEwmaDiscover (default RTT 30 ms, decay 10 s, as tower's demo)",
        build: tower_p2c_peak_ewma,
        ejects: false,
    },
    Contender {
        name: "oracle",
        role: Role::Balancer,
        about: "knows every backend's true queue, service-time mean and error rates; least expected time to success",
        build: oracle,
        ejects: false,
    },
    Contender {
        name: "no_hedge",
        role: Role::RequestPolicy,
        about: "the base balancer alone (the baseline for retry and hedge contenders)",
        build: no_hedge,
        ejects: false,
    },
    Contender {
        name: "tower_retry_naive",
        role: Role::RequestPolicy,
        about: "tower::retry, up to 3 immediate retries of every failure",
        build: tower_retry_naive,
        ejects: false,
    },
    Contender {
        name: "tower_retry_budget",
        role: Role::RequestPolicy,
        about: "tower::retry with TpsBudget (ttl 10 s, 10/s floor, 20%), up to 3 retries",
        build: tower_retry_budget,
        ejects: false,
    },
    Contender {
        name: "tower_hedge",
        role: Role::RequestPolicy,
        about: "tower::hedge at the p95 latency (10 data points minimum, 1 s histogram period)",
        build: tower_hedge,
        ejects: false,
    },
    Contender {
        name: "ha_p2c_ewma",
        role: Role::Balancer,
        about:
            "ha-balance defaults: P2C over PeakEWMA x (pending + 1)^0.75 (RTT 30 ms, decay 10 s), outlier ejection on",
        build: ha::ha_p2c_ewma,
        ejects: true,
    },
    Contender {
        name: "ha_p2c_pending",
        role: Role::Balancer,
        about: "ha-balance, P2C least pending, defaults otherwise (outlier ejection on)",
        build: ha::ha_p2c_pending,
        ejects: true,
    },
    Contender {
        name: "ha_round_robin",
        role: Role::Balancer,
        about: "ha-balance, smooth weighted round robin, defaults otherwise (outlier ejection on)",
        build: ha::ha_round_robin,
        ejects: true,
    },
    Contender {
        name: "ha_ring_hash",
        role: Role::Balancer,
        about: "ha-balance, ring hash of the request id (100 vnodes, load bound 1.25), defaults otherwise",
        build: ha::ha_ring_hash,
        ejects: true,
    },
    Contender {
        name: "ha_retry",
        role: Role::RequestPolicy,
        about: "ha-retry defaults: 3 attempts, first retry at once then backoff 25 ms x2 full jitter, budget 20% + 10/s over 10 s",
        build: ha::ha_retry,
        ejects: false,
    },
    Contender {
        name: "ha_hedge",
        role: Role::RequestPolicy,
        about: "ha-retry hedge: up to 2 hedges at the p97 latency, defaults otherwise (100 samples, budget 20%)",
        build: ha::ha_hedge,
        ejects: false,
    },
    Contender {
        name: "ha_stack",
        role: Role::Stack,
        about: "ha::Stack as the facade builds it (defaults or [settings.ha_stack]): retry + budget, P2C PeakEWMA with ejection, per-endpoint breaker and 2 s per-try timeout; seeded from the run's seed",
        build: stacks::ha_stack,
        ejects: true,
    },
    Contender {
        name: "tower_stack",
        role: Role::Stack,
        about: "tower: retry (3 attempts, TpsBudget 10 s/10 per s/20%) over a 2 s per-try Timeout over Buffer over p2c PeakEwma",
        build: stacks::tower_stack,
        ejects: false,
    },
];

/// Finds a contender by name.
pub fn find(name: &str) -> Option<&'static Contender> {
    CONTENDERS.iter().find(|c| c.name == name)
}

/// All names, comma separated (for error messages).
pub fn names() -> String {
    CONTENDERS.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
}

/// A baseline balancer: sends each request to the backend its rule picks
/// among those discovery lists (the rule is handed their indices; all of
/// them, always the same slice, when the layer's set never changes).
#[derive(Clone)]
struct PickBy<F> {
    backends: Rc<[SimBackend]>,
    all: Rc<[usize]>,
    world: Rc<World>,
    layer: usize,
    dynamic: bool,
    pick: Rc<F>,
}

impl<F: Fn(&[usize]) -> usize> Service<SimRequest> for PickBy<F> {
    type Response = ();
    type Error = BoxError;
    type Future = <SimBackend as Service<SimRequest>>::Future;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: SimRequest) -> Self::Future {
        let listed = if self.dynamic { self.world.listed(self.layer) } else { None };
        let candidates = listed.as_deref().unwrap_or(&self.all);
        if candidates.is_empty() {
            return Box::pin(ready(Err("discovery lists no backend".into())));
        }
        let i = (self.pick)(candidates);
        self.backends[i].clone().call(req)
    }
}

fn pick_by(ctx: &BuildCtx<'_>, pick: impl Fn(&[usize]) -> usize + 'static) -> Stack {
    Stack::new(PickBy {
        backends: ctx.backends.into(),
        all: (0..ctx.backends.len()).collect(),
        world: ctx.world.clone(),
        layer: ctx.layer,
        dynamic: ctx.world.layers[ctx.layer].model.dynamic(),
        pick: Rc::new(pick),
    })
}

/// Round robin over the layer's backends.
fn round_robin(ctx: &BuildCtx<'_>) -> Stack {
    let next = Cell::new(0);
    pick_by(ctx, move |c| {
        let i = next.get() % c.len();
        next.set((i + 1) % c.len());
        c[i]
    })
}

/// Uniformly random choice.
fn random(ctx: &BuildCtx<'_>) -> Stack {
    let rng = Cell::new(ctx.rng(0x72616e64));
    pick_by(ctx, move |c| {
        let mut r = rng.replace(FastRng::new(0));
        let i = r.below(c.len() as u64) as usize;
        rng.set(r);
        c[i]
    })
}

/// The oracle: least expected time to a successful answer, the scan
/// starting one backend further each time so that ties spread out.
fn oracle(ctx: &BuildCtx<'_>) -> Stack {
    let (world, layer, offset) = (ctx.world.clone(), ctx.layer, Cell::new(0));
    pick_by(ctx, move |c| {
        let n = c.len();
        let now = world.now_ns();
        let start = offset.get() % n;
        offset.set((start + 1) % n);
        let mut best = c[start];
        let mut best_cost = f64::INFINITY;
        for k in 0..n {
            let i = c[(start + k) % n];
            let cost = world.expected_cost_ns(layer, i, now);
            if cost < best_cost {
                best = i;
                best_cost = cost;
            }
        }
        best
    })
}

/// tower's `Rng` over our seeded generator, so p2c's choices are reproducible.
pub struct SeededRng(FastRng);

impl SeededRng {
    /// Wraps a generator.
    pub fn new(rng: FastRng) -> Self {
        SeededRng(rng)
    }
}

impl tower::util::rng::Rng for SeededRng {
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
}

fn tower_p2c_pending(ctx: &BuildCtx<'_>) -> Stack {
    let rng = SeededRng(ctx.rng(0x7032_6370));
    match discovery::of_layer(ctx, ctx.backends.iter().map(|b| (b.index(), b.clone())).collect()) {
        None => {
            let list = ServiceList::new::<SimRequest>(ctx.backends.to_vec());
            let discover = PendingRequestsDiscover::new(list, CompleteOnResponse::default());
            Stack::new(Balance::from_rng(discover, rng))
        }
        Some(d) => {
            let discover = PendingRequestsDiscover::new(d, CompleteOnResponse::default());
            Stack::new(Balance::<_, SimRequest>::from_rng(discover, rng))
        }
    }
}

fn tower_p2c_peak_ewma(ctx: &BuildCtx<'_>) -> Stack {
    let (rtt, decay) = (Duration::from_millis(30), Duration::from_secs(10));
    let rng = SeededRng(ctx.rng(0x7032_6365));
    match discovery::of_layer(ctx, ctx.backends.iter().map(|b| (b.index(), b.clone())).collect()) {
        None => {
            let list = ServiceList::new::<SimRequest>(ctx.backends.to_vec());
            let discover = PeakEwmaDiscover::new(list, rtt, decay, CompleteOnResponse::default());
            Stack::new(Balance::from_rng(discover, rng))
        }
        Some(d) => {
            let discover = PeakEwmaDiscover::new(d, rtt, decay, CompleteOnResponse::default());
            Stack::new(Balance::<_, SimRequest>::from_rng(discover, rng))
        }
    }
}

fn no_hedge(ctx: &BuildCtx<'_>) -> Stack {
    ctx.base()
}

/// Retries every failure up to `max` times, at once.
#[derive(Clone)]
struct NaiveRetry {
    max: u32,
}

impl Policy<SimRequest, (), BoxError> for NaiveRetry {
    type Future = Ready<()>;

    fn retry(&mut self, req: &mut SimRequest, result: &mut Result<(), BoxError>) -> Option<Self::Future> {
        if result.is_err() && req.attempt < self.max {
            req.attempt += 1;
            Some(ready(()))
        } else {
            None
        }
    }

    fn clone_request(&mut self, req: &SimRequest) -> Option<SimRequest> {
        Some(*req)
    }
}

fn tower_retry_naive(ctx: &BuildCtx<'_>) -> Stack {
    Stack::new(Retry::new(NaiveRetry { max: 3 }, ctx.base()))
}

/// Retries failures while tower's `TpsBudget` allows (one deposit per
/// logical request), up to `max` times; never a client error (4xx), which
/// would fail again.
#[derive(Clone)]
pub struct BudgetRetry {
    budget: Arc<TpsBudget>,
    max: u32,
}

impl BudgetRetry {
    /// At most `max` retries, each withdrawn from `budget`.
    pub fn new(budget: Arc<TpsBudget>, max: u32) -> Self {
        BudgetRetry { budget, max }
    }
}

impl Policy<SimRequest, (), BoxError> for BudgetRetry {
    type Future = Ready<()>;

    fn retry(&mut self, req: &mut SimRequest, result: &mut Result<(), BoxError>) -> Option<Self::Future> {
        if req.attempt == 0 {
            self.budget.deposit();
        }
        let retryable = result.as_ref().is_err_and(|e| !BackendError::is_client(e));
        if retryable && req.attempt < self.max && self.budget.withdraw() {
            req.attempt += 1;
            Some(ready(()))
        } else {
            None
        }
    }

    fn clone_request(&mut self, req: &SimRequest) -> Option<SimRequest> {
        Some(*req)
    }
}

fn tower_retry_budget(ctx: &BuildCtx<'_>) -> Stack {
    // Must be created inside the runtime: TpsBudget reads tokio's clock.
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
    Stack::new(Retry::new(BudgetRetry { budget, max: 3 }, ctx.base()))
}

/// Hedges every request (a hedge is attempt `n + 1`).
#[derive(Clone)]
struct HedgeAll;

impl tower::hedge::Policy<SimRequest> for HedgeAll {
    fn clone_request(&self, req: &SimRequest) -> Option<SimRequest> {
        Some(SimRequest { attempt: req.attempt + 1, ..*req })
    }

    fn can_retry(&self, _: &SimRequest) -> bool {
        true
    }
}

fn tower_hedge(ctx: &BuildCtx<'_>) -> Stack {
    Stack::new(Hedge::new::<SimRequest>(ctx.base(), HedgeAll, 10, 0.95, Duration::from_secs(1)))
}
