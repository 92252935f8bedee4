//! `retry_overhead`: the cost of a retry layer on a request that succeeds.
//!
//! `bare` calls the endpoint directly; `tower_retry` goes through
//! `tower::retry::Retry` with a policy that keeps a copy of the request (as
//! any policy able to retry must) and never retries. After the timings, the
//! allocations per call of each function are printed.
//!
//! ```sh
//! cargo bench -p ha-benches --bench retry_overhead
//! ```

mod common;

use std::future::Ready;
use std::time::Duration;

use common::{alloc_iters, one_call, Bare};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ha_benches::alloc::{allocations_per_call, CountingAllocator};
use tower::retry::{Policy, Retry};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

/// Keeps a copy of each request; never retries.
#[derive(Clone, Copy)]
struct NeverRetry;

impl<E> Policy<u64, u64, E> for NeverRetry {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut u64, _: &mut Result<u64, E>) -> Option<Self::Future> {
        None
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("retry_overhead");
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));

    let mut bare = Bare;
    g.bench_function("bare", |b| b.iter(|| one_call(&mut bare, black_box(7))));
    let mut retry = Retry::new(NeverRetry, Bare);
    g.bench_function("tower_retry", |b| b.iter(|| one_call(&mut retry, black_box(7))));
    g.finish();

    let a = allocations_per_call(alloc_iters(), || assert!(one_call(&mut bare, 7)));
    println!("retry_overhead/bare: {a:.2} allocations per call");
    let a = allocations_per_call(alloc_iters(), || assert!(one_call(&mut retry, 7)));
    println!("retry_overhead/tower_retry: {a:.2} allocations per call");
}

criterion_group!(benches, bench);
criterion_main!(benches);
