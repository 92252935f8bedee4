//! `hedge_overhead`: the cost of a hedging layer on a request that never
//! needs a hedge.
//!
//! `bare` calls the endpoint directly; `tower_hedge` goes through
//! `tower::hedge::Hedge` (p95, 10 data points, 1 s histogram period) around
//! an endpoint that answers at once, so the hedge never fires but its timer
//! and latency histogram are paid for; `ha` goes through ha-retry's `Hedge`
//! with its default configuration (p95, 100 samples, budget 20%), warmed up
//! the same way so the hedging delay is known and armed on every call.
//! tower's hedge needs a tokio timer, so all run inside a current-thread
//! runtime context. After the timings, the
//! allocations per call of each function are printed.
//!
//! ```sh
//! cargo bench -p ha-benches --bench hedge_overhead
//! ```

mod common;

use std::time::Duration;

use common::{alloc_iters, one_call, Bare};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ha_benches::alloc::{allocations_per_call, CountingAllocator};
use ha_retry::{HedgeConfig, HedgeLayer};
use tower::hedge::{Hedge, Policy};
use tower::Layer;

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

/// Every request may be hedged.
#[derive(Clone, Copy)]
struct HedgeAll;

impl Policy<u64> for HedgeAll {
    fn clone_request(&self, req: &u64) -> Option<u64> {
        Some(*req)
    }

    fn can_retry(&self, _: &u64) -> bool {
        true
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let _context = rt.enter();
    let mut g = c.benchmark_group("hedge_overhead");
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_millis(1500));

    let mut bare = Bare;
    g.bench_function("bare", |b| b.iter(|| one_call(&mut bare, black_box(7))));
    let mut hedge = Hedge::new::<u64>(Bare, HedgeAll, 10, 0.95, Duration::from_secs(1));
    for i in 0..alloc_iters() / 10 {
        assert!(one_call(&mut hedge, i), "an immediate answer is never hedged");
    }
    g.bench_function("tower_hedge", |b| b.iter(|| one_call(&mut hedge, black_box(7))));
    let mut ha = HedgeLayer::new(HedgeConfig::default()).expect("the default configuration is valid").layer(Bare);
    for i in 0..alloc_iters() / 10 {
        assert!(one_call(&mut ha, i), "an immediate answer is never hedged");
    }
    g.bench_function("ha", |b| b.iter(|| one_call(&mut ha, black_box(7))));
    g.finish();

    let a = allocations_per_call(alloc_iters(), || assert!(one_call(&mut bare, 7)));
    println!("hedge_overhead/bare: {a:.2} allocations per call");
    let a = allocations_per_call(alloc_iters(), || assert!(one_call(&mut hedge, 7)));
    println!("hedge_overhead/tower_hedge: {a:.2} allocations per call");
    let a = allocations_per_call(alloc_iters(), || assert!(one_call(&mut ha, 7)));
    println!("hedge_overhead/ha: {a:.2} allocations per call");
}

criterion_group!(benches, bench);
criterion_main!(benches);
