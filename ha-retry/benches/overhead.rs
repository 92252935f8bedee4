//! The cost of a retry layer on a request whose first attempt succeeds.
//!
//! Every function drives one request as a caller does (`poll_ready`, `call`,
//! one poll of the response future, which must be ready) against an
//! endpoint that answers at once:
//!
//! - `bare`: the endpoint itself;
//! - `tower_retry`: `tower::retry::Retry` with a policy that keeps a copy of
//!   the request (as any policy able to retry must) and never retries;
//! - `tower_retry_budget`: the same policy depositing into tower's
//!   `TpsBudget` on every request, as a budgeted tower retry does;
//! - `ha`: [`Retry`] with the default `RetryConfig` (3 attempts, budget);
//! - `ha_per_try_timeout`: the same with a 1 s per-try timeout;
//! - `ha_static`: `ha` on state kept in a `static`
//!   ([`RetryLayer::from_static`]), which saves the reference count;
//! - `arc_clone_drop` and `clock_read`: what one `Arc` clone and drop and
//!   one clock read cost on this machine, to read the others against.
//!
//! After the timings, the allocations per call of each function are printed,
//! counted by the global allocator below.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/targets/retryperf cargo bench -p ha-retry --bench overhead
//! ```
#![allow(unsafe_code)] // a counting GlobalAlloc cannot be written without it
#![allow(missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ha_retry::config::RetryConfig;
use ha_retry::{RetryLayer, RetryShared};
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::{Policy, Retry as TowerRetry};
use tower_layer::Layer;
use tower_service::Service;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting every allocation and reallocation.
struct CountingAllocator;

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the counter is a plain atomic.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

static SHARED: OnceLock<RetryShared> = OnceLock::new();

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

/// The endpoint every function calls: answers on the first poll.
#[derive(Clone, Copy, Debug)]
struct Bare;

impl Service<u64> for Bare {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req.wrapping_mul(3)))
    }
}

/// One request as a caller makes it; whether it succeeded, so the work
/// cannot be optimised away.
#[inline(always)]
fn one_call<S: Service<u64>>(svc: &mut S, req: u64) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let ready = matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(())));
    let fut = pin!(svc.call(req));
    ready && matches!(fut.poll(&mut cx), Poll::Ready(Ok(_)))
}

/// Keeps a copy of each request; never retries; deposits into a budget when it has one.
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

fn allocations_per_call(calls: u64, mut f: impl FnMut()) -> f64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..calls {
        f();
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / calls as f64
}

fn bench(c: &mut Criterion) {
    // The per-try timer is a tokio timer: it needs a runtime's time driver.
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _guard = rt.enter();

    let mut bare = Bare;
    let mut tower_retry = TowerRetry::new(NeverRetry(None), Bare);
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
    let mut tower_retry_budget = TowerRetry::new(NeverRetry(Some(budget)), Bare);
    let mut ha = RetryLayer::new(RetryConfig::default()).unwrap().layer(Bare);
    let per_try = RetryConfig { per_try_timeout: Some(Duration::from_secs(1)), ..RetryConfig::default() };
    let mut ha_per_try = RetryLayer::new(per_try).unwrap().layer(Bare);
    let shared = SHARED.get_or_init(|| RetryLayer::builder(RetryConfig::default()).build_shared().unwrap());
    let mut ha_static = RetryLayer::from_static(shared).layer(Bare);

    let mut g = c.benchmark_group("retry_overhead");
    g.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    g.bench_function("bare", |b| b.iter(|| one_call(&mut bare, black_box(7))));
    g.bench_function("tower_retry", |b| b.iter(|| one_call(&mut tower_retry, black_box(7))));
    g.bench_function("tower_retry_budget", |b| b.iter(|| one_call(&mut tower_retry_budget, black_box(7))));
    g.bench_function("ha", |b| b.iter(|| one_call(&mut ha, black_box(7))));
    g.bench_function("ha_per_try_timeout", |b| b.iter(|| one_call(&mut ha_per_try, black_box(7))));
    g.bench_function("ha_static", |b| b.iter(|| one_call(&mut ha_static, black_box(7))));
    let arc = Arc::new(7u64);
    g.bench_function("arc_clone_drop", |b| b.iter(|| drop(black_box(arc.clone()))));
    g.bench_function("clock_read", |b| b.iter(|| black_box(tokio::time::Instant::now())));
    g.finish();
    println!("retry_overhead/ha: response future of {} bytes", std::mem::size_of_val(&ha.call(1)));

    // Many calls under `cargo bench`, a few under `cargo test --benches`.
    let calls = if std::env::args().any(|a| a == "--bench") { 100_000 } else { 100 };
    let report = |name: &str, per_call: f64| println!("retry_overhead/{name}: {per_call:.2} allocations per call");
    report("bare", allocations_per_call(calls, || assert!(one_call(&mut bare, 7))));
    report("tower_retry", allocations_per_call(calls, || assert!(one_call(&mut tower_retry, 7))));
    report("tower_retry_budget", allocations_per_call(calls, || assert!(one_call(&mut tower_retry_budget, 7))));
    report("ha", allocations_per_call(calls, || assert!(one_call(&mut ha, 7))));
    report("ha_per_try_timeout", allocations_per_call(calls, || assert!(one_call(&mut ha_per_try, 7))));
    report("ha_static", allocations_per_call(calls, || assert!(one_call(&mut ha_static, 7))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
