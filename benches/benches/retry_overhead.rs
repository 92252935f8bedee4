//! `retry_overhead`: the cost of a retry layer on a request that succeeds.
//!
//! `bare` calls the endpoint directly; `tower_retry` goes through
//! `tower::retry::Retry` with a policy that keeps a copy of the request (as
//! any policy able to retry must) and never retries; `ha` goes through
//! ha-retry's `Retry` with its default configuration (3 attempts, budget
//! 20% + 10/s: each request is counted into the budget; the layer's state is
//! leased per request from a per-thread stash, `ha_core::lease`).
//! `tower_retry_budget` is tower's `Retry` whose policy deposits into a
//! `TpsBudget` (the fair baseline for a layer that keeps a budget),
//! `ha_per_try_timeout` ha's layer with a 1 s per-try timeout, and
//! `arc_clone_drop` / `lease` / `clock_read` measure the primitives the
//! remaining cost is made of. After criterion's timings come the fastest of
//! 25 interleaved rounds of each (what each costs when it gets the core, on
//! a shared machine) and the allocations per call of each function.
//!
//! ```sh
//! cargo bench -p ha-benches --bench retry_overhead
//! ```

mod common;

use std::future::Ready;
use std::sync::Arc;
use std::time::Duration;

use common::{alloc_iters, fastest_of_rounds, one_call, Bare, Timed};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ha_benches::alloc::{allocations_per_call, CountingAllocator};
use ha_core::lease::{Lease, Stash, Stashed};
use ha_retry::{RetryConfig, RetryLayer};
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::{Policy, Retry};
use tower::Layer;

/// What the `lease` function leases.
struct Leased(u64);

thread_local! {
    static LEASED: Stash<Leased> = const { Stash::new() };
}

impl Stashed for Leased {
    fn stash() -> &'static std::thread::LocalKey<Stash<Self>> {
        &LEASED
    }
}

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

/// Keeps a copy of each request; never retries; deposits into a budget
/// when it has one.
#[derive(Clone)]
struct NeverRetry(Option<Arc<TpsBudget>>);

impl<E> Policy<u64, u64, E> for NeverRetry {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut u64, result: &mut Result<u64, E>) -> Option<Self::Future> {
        if let (Some(budget), Ok(_)) = (&self.0, result) {
            budget.deposit();
        }
        None
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

fn bench(c: &mut Criterion) {
    // ha-retry reads tokio's clock for its budget; a runtime context, as in a service.
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let _context = rt.enter();
    let mut g = c.benchmark_group("retry_overhead");
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_millis(1500));

    let mut bare = Bare;
    g.bench_function("bare", |b| b.iter(|| one_call(&mut bare, black_box(7))));
    let mut retry = Retry::new(NeverRetry(None), Bare);
    g.bench_function("tower_retry", |b| b.iter(|| one_call(&mut retry, black_box(7))));
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
    let mut retry_budget = Retry::new(NeverRetry(Some(budget)), Bare);
    g.bench_function("tower_retry_budget", |b| b.iter(|| one_call(&mut retry_budget, black_box(7))));
    let mut ha = RetryLayer::new(RetryConfig::default()).expect("the default configuration is valid").layer(Bare);
    g.bench_function("ha", |b| b.iter(|| one_call(&mut ha, black_box(7))));
    let per_try = RetryConfig { per_try_timeout: Some(Duration::from_secs(1)), ..RetryConfig::default() };
    let mut ha_per_try = RetryLayer::new(per_try).expect("a valid configuration").layer(Bare);
    g.bench_function("ha_per_try_timeout", |b| b.iter(|| one_call(&mut ha_per_try, black_box(7))));
    let arc = Arc::new(7u64);
    let leased = Arc::new(Leased(7));
    g.bench_function("arc_clone_drop", |b| b.iter(|| drop(black_box(arc.clone()))));
    g.bench_function("lease", |b| b.iter(|| drop(black_box(Lease::of(black_box(&leased))))));
    g.bench_function("clock_read", |b| b.iter(|| black_box(tokio::time::Instant::now())));
    g.finish();

    let mut timed: Vec<Timed<'_>> = vec![
        ("bare", Box::new(|| one_call(&mut bare, black_box(7)))),
        ("tower_retry", Box::new(|| one_call(&mut retry, black_box(7)))),
        ("tower_retry_budget", Box::new(|| one_call(&mut retry_budget, black_box(7)))),
        ("ha", Box::new(|| one_call(&mut ha, black_box(7)))),
        ("ha_per_try_timeout", Box::new(|| one_call(&mut ha_per_try, black_box(7)))),
        ("arc_clone_drop", Box::new(|| black_box(arc.clone()) == arc)),
        ("lease", Box::new(|| black_box(Lease::of(black_box(&leased))).0 == 7)),
    ];
    let best = fastest_of_rounds(&mut timed, 200_000);
    println!("\nretry_overhead fastest of interleaved rounds (ns per call):");
    for ((name, _), ns) in timed.iter().zip(&best) {
        println!("  {name:<20} {ns:6.2}  ({:+6.2} over tower_retry)", ns - best[1]);
    }
    drop(timed);

    let a = allocations_per_call(alloc_iters(), || assert!(one_call(&mut bare, 7)));
    println!("retry_overhead/bare: {a:.2} allocations per call");
    let a = allocations_per_call(alloc_iters(), || assert!(one_call(&mut retry, 7)));
    println!("retry_overhead/tower_retry: {a:.2} allocations per call");
    let a = allocations_per_call(alloc_iters(), || assert!(one_call(&mut retry_budget, 7)));
    println!("retry_overhead/tower_retry_budget: {a:.2} allocations per call");
    let a = allocations_per_call(alloc_iters(), || assert!(one_call(&mut ha, 7)));
    println!("retry_overhead/ha: {a:.2} allocations per call");
    let a = allocations_per_call(alloc_iters(), || assert!(one_call(&mut ha_per_try, 7)));
    println!("retry_overhead/ha_per_try_timeout: {a:.2} allocations per call");
}

criterion_group!(benches, bench);
criterion_main!(benches);
