//! Per-call cost of ha-balance against tower's p2c balancer in the same run,
//! and allocations per call.
//!
//! ```sh
//! cargo bench -p ha-balance --bench overhead
//! ```
//!
//! Each call is `poll_ready`, `call` and one poll of the response (ready at
//! once) over n = 10, 100, 1000 endpoints that answer immediately. The
//! project-wide figures live in the `balance_overhead` bench of `ha-benches`;
//! this one lets the crate be measured on its own.
#![allow(unsafe_code)] // a counting GlobalAlloc cannot be written without it

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use ha_balance::{Balance, BalanceConfig, Endpoint, Picker};
use ha_core::WithAttempt;
use tower::balance::p2c::Balance as TowerBalance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover, PendingRequestsDiscover};
use tower::Service;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

struct Counting;

// SAFETY: forwards to `System` unchanged; the counter is a plain atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// An endpoint that answers on the first poll.
#[derive(Clone, Copy)]
struct Bare;

impl Service<u64> for Bare {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req.wrapping_mul(3)))
    }
}

/// The same endpoint for requests carrying an attempt context.
#[derive(Clone, Copy)]
struct BareA;

impl Service<WithAttempt<u64>> for BareA {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: WithAttempt<u64>) -> Self::Future {
        ready(Ok(req.request.wrapping_mul(3)))
    }
}

#[inline(always)]
fn one_call<R, S: Service<R>>(svc: &mut S, req: R) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let ready = matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(())));
    let fut = pin!(svc.call(req));
    ready && matches!(fut.poll(&mut cx), Poll::Ready(Ok(_)))
}

fn ours(picker: Picker, n: usize) -> Balance<usize, BareA, WithAttempt<u64>> {
    let cfg = BalanceConfig { picker, ..BalanceConfig::default() };
    Balance::builder().config(cfg).seed(1).build_with((0..n).map(|i| (i, Endpoint::new(BareA)))).unwrap()
}

fn allocations_per_call(calls: u64, mut f: impl FnMut()) -> f64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..calls {
        f();
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / calls as f64
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("balance_overhead_local");
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    let mut allocs = Vec::new();
    for n in [10usize, 100, 1000] {
        for (name, picker) in [
            ("ha_p2c_ewma", Picker::P2cPeakEwma),
            ("ha_p2c_pending", Picker::P2cPending),
            ("ha_round_robin", Picker::RoundRobin),
        ] {
            let mut svc = ours(picker, n);
            for i in 0..10_000 {
                assert!(one_call(&mut svc, WithAttempt::new(i)));
            }
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| one_call(&mut svc, WithAttempt::new(black_box(7))))
            });
            allocs.push((
                format!("{name}/{n}"),
                allocations_per_call(100_000, || assert!(one_call(&mut svc, WithAttempt::new(7)))),
            ));
        }
        let mut tower_ewma = TowerBalance::new(PeakEwmaDiscover::new(
            ServiceList::new::<u64>(vec![Bare; n]),
            Duration::from_millis(30),
            Duration::from_secs(10),
            CompleteOnResponse::default(),
        ));
        let mut tower_pending = TowerBalance::new(PendingRequestsDiscover::new(
            ServiceList::new::<u64>(vec![Bare; n]),
            CompleteOnResponse::default(),
        ));
        for i in 0..10_000 {
            assert!(one_call(&mut tower_ewma, i) && one_call(&mut tower_pending, i));
        }
        g.bench_with_input(BenchmarkId::new("tower_p2c_peak_ewma", n), &n, |b, _| {
            b.iter(|| one_call(&mut tower_ewma, black_box(7)))
        });
        g.bench_with_input(BenchmarkId::new("tower_p2c_pending", n), &n, |b, _| {
            b.iter(|| one_call(&mut tower_pending, black_box(7)))
        });
        allocs.push((
            format!("tower_p2c_peak_ewma/{n}"),
            allocations_per_call(100_000, || assert!(one_call(&mut tower_ewma, 7))),
        ));
        allocs.push((
            format!("tower_p2c_pending/{n}"),
            allocations_per_call(100_000, || assert!(one_call(&mut tower_pending, 7))),
        ));
    }
    g.finish();
    println!("\nallocations per call:");
    for (name, a) in allocs {
        println!("  {name:<28} {a:.3}");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
