//! `stack_overhead`: the cost of the whole `ha::Stack`, per call, against
//! what a tower user builds for the same job.
//!
//! - `bare`: the endpoint alone, the floor.
//! - `tower`: `tower::retry::Retry` whose policy deposits into and withdraws
//!   from a `TpsBudget` (at most 3 attempts), over `tower::buffer::Buffer`
//!   (tower's `Retry` needs a `Clone` service; tower's `Balance` is not) over
//!   `tower::balance::p2c::Balance` of `PeakEwmaDiscover`-wrapped endpoints.
//! - `ha`: `ha::Stack` (retry with its budget, P2C PeakEWMA balance with
//!   outlier ejection, a circuit breaker and a try timeout per endpoint)
//!   with `timeouts.attempt` and `timeouts.request` off; `ha_timeouts` the
//!   same stack with the default timeouts (2 s per attempt, 10 s deadline).
//!
//! Every contender balances over n = 10 endpoints that answer at once, and
//! is driven the same way: `ready().await`, `call(req).await`, in a loop
//! inside one `block_on` of a current-thread tokio runtime (`Buffer` needs
//! its worker task to run; its hop is part of what tower costs). `ha_sync`
//! and `bare_sync` drive the stack and the endpoint without an executor,
//! as the other overhead benches do; `ha_sync_clone` clones the stack for
//! each call, as `stack.clone().oneshot(req)` does. The pieces (`piece/...`) are the
//! layers of the stack on their own over the same endpoint, to tell which
//! one costs what (and allocates, if any does): the retry layer with and
//! without a deadline, the retry layer attaching an attempt context to
//! `WithAttempt` requests as the stack's does (`retry_tracked`), the
//! balancer alone, the retry layer over the balancer, one breaker, ten breakers
//! called in turn (the stack has one per endpoint), the try timeout.
//!
//! After criterion's timings come the allocations per call of each, and
//! the fastest of 25 interleaved rounds of each with the ratio to `tower`.
//!
//! ```sh
//! cargo bench -p ha-benches --bench stack_overhead
//! ```

mod common;

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{alloc_iters, fastest_of_rounds, one_call, Bare, Timed};
use criterion::{criterion_group, criterion_main, Criterion};
use ha::core::WithAttempt;
use ha::stack::TryTimeout;
use ha::target::BoxErrors;
use ha::{Config, Stack, Target};
use ha_balance::{Balance as HaBalance, BalanceConfig, Endpoint};
use ha_benches::alloc::{allocated_bytes, allocations, CountingAllocator};
use ha_breaker::{BreakerConfig, CircuitBreakerLayer};
use ha_retry::body::{HttpReplay, ReplayBody};
use ha_retry::replay::{Replay, Tracked};
use ha_retry::{RetryConfig, RetryLayer};
use http_body_util::Full;
use tokio::runtime::Runtime;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover};
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::{Policy, Retry};
use tower::{BoxError, Layer, Service, ServiceExt};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

/// Endpoints every contender balances over.
const N: usize = 10;

/// The transport of the ha stack: every endpoint is [`Bare`].
fn bare_transport(_: &Target) -> Bare {
    Bare
}

type HaStack = Stack<fn(&Target) -> Bare, WithAttempt<u64>>;

/// The ha stack over `N` bare endpoints; `timeouts` keeps the default
/// per-attempt timeout and request deadline, otherwise both are off.
fn ha_stack(timeouts: bool) -> HaStack {
    let mut config = Config::default();
    if !timeouts {
        config.timeouts.attempt = None;
        config.timeouts.request = None;
    }
    let addrs = (0..N as u16).map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)));
    Stack::builder(bare_transport as fn(&Target) -> Bare)
        .config(config)
        .endpoints(addrs)
        .build()
        .expect("a valid configuration")
}

/// The retry policy a tower user writes: a budget deposit per success, a
/// withdrawal per retry, at most 3 attempts; keeps a copy of each request.
#[derive(Clone)]
struct BudgetPolicy {
    budget: Arc<TpsBudget>,
    retries_left: usize,
}

impl<E> Policy<u64, u64, E> for BudgetPolicy {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut u64, result: &mut Result<u64, E>) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(_) if self.retries_left > 0 && self.budget.withdraw() => {
                self.retries_left -= 1;
                Some(ready(()))
            }
            Err(_) => None,
        }
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

/// Tower's stack for the same job; must be built inside a runtime (the
/// buffer spawns its worker).
fn tower_stack() -> impl Service<u64, Response = u64, Error = BoxError> + Clone {
    let balance = Balance::new(PeakEwmaDiscover::new::<u64>(
        ServiceList::new::<u64>(vec![Bare; N]),
        Duration::from_millis(30),
        Duration::from_secs(10),
        CompleteOnResponse::default(),
    ));
    let buffer = Buffer::new(balance, 1024);
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
    Retry::new(BudgetPolicy { budget, retries_left: 2 }, buffer)
}

/// `iters` calls of `svc`, each `ready().await` then `call(req).await`;
/// the elapsed time and the allocations made.
async fn drive<R, S: Service<R>>(svc: &mut S, iters: u64, req: impl Fn(u64) -> R) -> (Duration, u64) {
    let (start, allocs) = (Instant::now(), allocations());
    for i in 0..iters {
        let ok = match svc.ready().await {
            Ok(svc) => svc.call(req(black_box(i))).await.is_ok(),
            Err(_) => false,
        };
        assert!(black_box(ok), "a ready endpoint answers");
    }
    (start.elapsed(), allocations() - allocs)
}

/// A contender driven inside the runtime: `iters` calls, elapsed and
/// allocations.
type Driven<'a> = (&'static str, Box<dyn FnMut(u64) -> (Duration, u64) + 'a>);

fn driven<'a, R: 'a, S: Service<R> + 'a>(
    rt: &'a Runtime,
    name: &'static str,
    mut svc: S,
    req: impl Fn(u64) -> R + Copy + 'a,
) -> Driven<'a> {
    (name, Box::new(move |iters| rt.block_on(drive(&mut svc, iters, req))))
}

fn contenders(rt: &Runtime) -> Vec<Driven<'_>> {
    let tower = rt.block_on(async { tower_stack() });
    vec![
        driven(rt, "bare", Bare, |i: u64| i),
        driven(rt, "tower", tower, |i: u64| i),
        driven(rt, "ha", ha_stack(false), WithAttempt::new),
        driven(rt, "ha_timeouts", ha_stack(true), WithAttempt::new),
    ]
}

/// An HTTP endpoint that answers at once, for the allocations of the
/// stack's HTTP path.
#[derive(Clone, Copy, Debug)]
struct HttpBare;

type Body = Full<Bytes>;

impl Service<http::Request<ReplayBody<Body>>> for HttpBare {
    type Response = http::Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<http::Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<ReplayBody<Body>>) -> Self::Future {
        ready(Ok(http::Response::new(())))
    }
}

fn http_transport(_: &Target) -> HttpBare {
    HttpBare
}

fn http_request() -> http::Request<Body> {
    http::Request::get(http::Uri::from_static("http://svc/")).body(Full::new(Bytes::new())).expect("valid")
}

/// Allocations and bytes per call of each step of the stack's HTTP path
/// (requests built outside the count).
fn http_allocations(iters: u64) {
    fn count<R>(iters: u64, make: impl Fn() -> R, mut f: impl FnMut(R)) -> (f64, f64) {
        let reqs: Vec<R> = (0..iters).map(|_| make()).collect();
        let (a, b) = (allocations(), allocated_bytes());
        for r in reqs {
            f(r);
        }
        ((allocations() - a) as f64 / iters as f64, (allocated_bytes() - b) as f64 / iters as f64)
    }
    let replay = HttpReplay::new(64 * 1024);
    let deadline = Some(tokio::time::Instant::now() + Duration::from_secs(10));
    let mut config = Config::default();
    config.timeouts.attempt = None;
    config.timeouts.request = None;
    let mut stack: Stack<fn(&Target) -> HttpBare, http::Request<Body>> =
        Stack::builder(http_transport as fn(&Target) -> HttpBare)
            .config(config)
            .endpoints((0..N as u16).map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i))))
            .build()
            .expect("valid");
    let mut bare = HttpBare;
    let rows: [(&str, (f64, f64)); 7] = [
        (
            "http/bare_endpoint",
            count(iters, || http_request().map(|b| ReplayBody::new(b, 0)), |r| assert!(one_call(&mut bare, r))),
        ),
        ("http/replay_body_new", count(iters, http_request, |r| drop(black_box(r.map(|b| ReplayBody::new(b, 1024)))))),
        ("http/prepare", count(iters, http_request, |r| drop(black_box(replay.prepare(r, None))))),
        ("http/prepare_deadline", count(iters, http_request, |r| drop(black_box(replay.prepare(r, deadline))))),
        (
            "http/prepare_and_copy",
            count(iters, http_request, |r| {
                let r = replay.prepare(r, None);
                drop(black_box(replay.copy(&r)));
            }),
        ),
        (
            "withattempt/prepare_and_copy",
            count(
                iters,
                || WithAttempt::new(7u64),
                |r| {
                    let r = Tracked.prepare(r, None);
                    drop(black_box(Tracked.copy(&r)));
                },
            ),
        ),
        ("http/stack", count(iters, http_request, |r| assert!(one_call(&mut stack, r)))),
    ];
    println!("\nstack_overhead HTTP path, allocations and bytes per call (request built outside the count):");
    for (name, (a, b)) in rows {
        println!("  {name:<30} {a:6.2} allocs {b:8.1} bytes");
    }
}

/// A piece of the stack, called without an executor.
type Piece = (&'static str, Box<dyn FnMut(u64) -> bool>);

fn pieces() -> Vec<Piece> {
    let retry = RetryLayer::new(RetryConfig::default()).expect("valid").layer(Bare);
    let deadline = RetryConfig { deadline: Some(Duration::from_secs(10)), ..RetryConfig::default() };
    let retry_deadline = RetryLayer::new(deadline).expect("valid").layer(Bare);
    let balance: HaBalance<usize, Bare, WithAttempt<u64>> = HaBalance::builder()
        .config(BalanceConfig::default())
        .seed(1)
        .build_with((0..N).map(|i| (i, Endpoint::new(Bare))))
        .expect("the default configuration is valid");
    let one_breaker = CircuitBreakerLayer::new(BreakerConfig::default()).expect("valid").layer(Bare);
    let mut breakers: Vec<_> =
        (0..N).map(|_| CircuitBreakerLayer::new(BreakerConfig::default()).expect("valid").layer(Bare)).collect();
    let timeout = TryTimeout::new(BoxErrors(Bare), Some(Duration::from_secs(2)));
    let tracked = || RetryLayer::builder(RetryConfig::default()).replay(Tracked).build().expect("valid");
    let mut retry_tracked = tracked().layer(Bare);
    let mut retry_over_balance = tracked().layer(
        HaBalance::<usize, Bare, WithAttempt<u64>>::builder()
            .seed(1)
            .build_with((0..N).map(|i| (i, Endpoint::new(Bare))))
            .expect("the default configuration is valid"),
    );
    let mut next = 0;
    let mut retry = retry;
    let mut retry_deadline = retry_deadline;
    let mut balance = balance;
    let mut one_breaker = one_breaker;
    let mut timeout = timeout;
    vec![
        ("piece/retry", Box::new(move |i| one_call(&mut retry, i))),
        ("piece/retry_deadline", Box::new(move |i| one_call(&mut retry_deadline, i))),
        ("piece/retry_tracked", Box::new(move |i| one_call(&mut retry_tracked, WithAttempt::new(i)))),
        ("piece/balance", Box::new(move |i| one_call(&mut balance, WithAttempt::new(i)))),
        ("piece/retry_over_balance", Box::new(move |i| one_call(&mut retry_over_balance, WithAttempt::new(i)))),
        ("piece/breaker", Box::new(move |i| one_call(&mut one_breaker, i))),
        (
            "piece/breakers_10",
            Box::new(move |i| {
                next = (next + 1) % N;
                one_call(&mut breakers[next], i)
            }),
        ),
        ("piece/try_timeout", Box::new(move |i| one_call(&mut timeout, i))),
    ]
}

/// Fastest nanoseconds per call of each contender over 25 interleaved
/// rounds of `calls` calls (one round of 100 under `cargo test --benches`).
fn fastest_of_driven(contenders: &mut [Driven<'_>], calls: u64) -> Vec<f64> {
    let benching = std::env::args().any(|a| a == "--bench");
    let (rounds, calls) = if benching { (25, calls) } else { (1, 100) };
    let mut best = vec![f64::MAX; contenders.len()];
    for round in 0..rounds {
        // Alternate the order, so none is always first after the others.
        let order: Vec<usize> =
            if round % 2 == 0 { (0..contenders.len()).collect() } else { (0..contenders.len()).rev().collect() };
        for i in order {
            let (elapsed, _) = (contenders[i].1)(calls);
            best[i] = best[i].min(elapsed.as_nanos() as f64 / calls as f64);
        }
    }
    best
}

fn bench(c: &mut Criterion) {
    // The stack reads tokio's clock and the buffer spawns a task: a runtime,
    // as in a service.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _context = rt.enter();
    let mut g = c.benchmark_group("stack_overhead");
    g.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(1));

    let mut driven = contenders(&rt);
    let mut ha_sync = ha_stack(false);
    let mut ha_sync_timeouts = ha_stack(true);
    // Cloned for each call.
    let ha_shared = ha_stack(false);
    let mut bare = Bare;
    let mut pieces = pieces();
    // Warm up: endpoints discovered, latency estimates settled, stashes full.
    for (_, run) in &mut driven {
        run(alloc_iters());
    }
    for i in 0..alloc_iters() {
        assert!(one_call(&mut ha_sync, WithAttempt::new(i)));
        assert!(one_call(&mut ha_sync_timeouts, WithAttempt::new(i)));
        assert!(one_call(&mut ha_shared.clone(), WithAttempt::new(i)));
    }
    for (_, call) in &mut pieces {
        for i in 0..alloc_iters() {
            assert!(call(i));
        }
    }

    for (name, run) in &mut driven {
        g.bench_function(*name, |b| b.iter_custom(|iters| run(iters).0));
    }
    g.bench_function("bare_sync", |b| b.iter(|| one_call(&mut bare, black_box(7))));
    g.bench_function("ha_sync", |b| b.iter(|| one_call(&mut ha_sync, WithAttempt::new(black_box(7)))));
    g.bench_function("ha_sync_timeouts", |b| {
        b.iter(|| one_call(&mut ha_sync_timeouts, WithAttempt::new(black_box(7))))
    });
    for (name, call) in &mut pieces {
        g.bench_function(*name, |b| b.iter(|| call(black_box(7))));
    }
    g.finish();

    let iters = alloc_iters();
    println!("\nstack_overhead allocations per call (bytes are not counted per call here; see alloc.rs):");
    for (name, run) in &mut driven {
        let (_, allocs) = run(iters);
        println!("  {name:<22} {:6.2}", allocs as f64 / iters as f64);
    }
    let per_call = |f: &mut dyn FnMut(u64) -> bool| {
        let before = allocations();
        for i in 0..iters {
            assert!(f(i));
        }
        (allocations() - before) as f64 / iters as f64
    };
    println!("  {:<22} {:6.2}", "bare_sync", per_call(&mut |i| one_call(&mut bare, i)));
    println!("  {:<22} {:6.2}", "ha_sync", per_call(&mut |i| one_call(&mut ha_sync, WithAttempt::new(i))));
    println!(
        "  {:<22} {:6.2}",
        "ha_sync_timeouts",
        per_call(&mut |i| one_call(&mut ha_sync_timeouts, WithAttempt::new(i)))
    );
    println!(
        "  {:<22} {:6.2}",
        "ha_sync_clone",
        per_call(&mut |i| one_call(&mut ha_shared.clone(), WithAttempt::new(i)))
    );
    for (name, call) in &mut pieces {
        println!("  {name:<22} {:6.2}", per_call(call));
    }
    http_allocations(iters);

    let best = fastest_of_driven(&mut driven, 20_000);
    println!("\nstack_overhead fastest of interleaved rounds, in a runtime (ns per call; / tower):");
    for ((name, _), ns) in driven.iter().zip(&best) {
        println!("  {name:<22} {ns:8.1}  ({:.2})", ns / best[1]);
    }
    drop(driven);

    let mut timed: Vec<Timed<'_>> = vec![
        ("bare_sync", Box::new(|| one_call(&mut bare, black_box(7)))),
        ("ha_sync", Box::new(|| one_call(&mut ha_sync, WithAttempt::new(black_box(7))))),
        ("ha_sync_timeouts", Box::new(|| one_call(&mut ha_sync_timeouts, WithAttempt::new(black_box(7))))),
        ("ha_sync_clone", Box::new(|| one_call(&mut ha_shared.clone(), WithAttempt::new(black_box(7))))),
    ];
    timed.extend(pieces.iter_mut().map(|(name, call)| -> Timed<'_> { (*name, Box::new(|| call(black_box(7)))) }));
    let best = fastest_of_rounds(&mut timed, 100_000);
    println!("\nstack_overhead fastest of interleaved rounds, no executor (ns per call; over bare_sync):");
    for ((name, _), ns) in timed.iter().zip(&best) {
        println!("  {name:<22} {ns:8.1}  ({:+.1})", ns - best[0]);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
