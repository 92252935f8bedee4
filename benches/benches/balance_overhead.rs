//! `balance_overhead`: the cost of picking an endpoint, per call.
//!
//! `bare` calls the endpoint directly; `tower_p2c_pending` and
//! `tower_p2c_peak_ewma` go through tower's power-of-two-choices balancer
//! over n = 10, 100 and 1000 ready endpoints (load measured as pending
//! requests, or peak EWMA of latency); `ha_p2c_ewma`, `ha_p2c_pending` and
//! `ha_round_robin` go through ha-balance with its default configuration
//! (outlier ejection on) and that picker, over the same endpoints, each
//! request wrapped in a `WithAttempt` (no context attached, as a first
//! attempt arrives). Each call is `poll_ready`, `call` and one poll of the
//! response (ready at once). After criterion's timings come the allocations
//! per call of each function, and the fastest of 25 interleaved rounds of
//! each at each n with its ratio to `tower_p2c_peak_ewma` (what each costs
//! when it gets the core, on a shared machine).
//!
//! ```sh
//! cargo bench -p ha-benches --bench balance_overhead
//! ```

mod common;

use std::time::Duration;

use common::{alloc_iters, fastest_of_rounds, one_call, Bare, Timed};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use ha_balance::{Balance as HaBalance, BalanceConfig, Endpoint, Picker};
use ha_benches::alloc::{allocations_per_call, CountingAllocator};
use ha_core::WithAttempt;
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover, PendingRequestsDiscover};
use tower::Service;

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

const SIZES: [usize; 3] = [10, 100, 1000];

fn pending(n: usize) -> impl Service<u64, Response = u64> {
    Balance::new(PendingRequestsDiscover::new::<u64>(
        ServiceList::new::<u64>(vec![Bare; n]),
        CompleteOnResponse::default(),
    ))
}

fn peak_ewma(n: usize) -> impl Service<u64, Response = u64> {
    Balance::new(PeakEwmaDiscover::new::<u64>(
        ServiceList::new::<u64>(vec![Bare; n]),
        Duration::from_millis(30),
        Duration::from_secs(10),
        CompleteOnResponse::default(),
    ))
}

fn ha(picker: Picker, n: usize) -> HaBalance<usize, Bare, WithAttempt<u64>> {
    let config = BalanceConfig { picker, ..BalanceConfig::default() };
    HaBalance::builder()
        .config(config)
        .seed(1)
        .build_with((0..n).map(|i| (i, Endpoint::new(Bare))))
        .expect("the default configuration is valid")
}

/// A balancer after its endpoints are discovered and warmed up.
fn warmed<S: Service<u64>>(mut svc: S) -> S {
    for i in 0..alloc_iters() / 10 {
        assert!(one_call(&mut svc, i), "a ready endpoint answers");
    }
    svc
}

fn bench(c: &mut Criterion) {
    // ha-balance reads tokio's clock; a runtime context, as in a service.
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let _context = rt.enter();
    let mut g = c.benchmark_group("balance_overhead");
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_millis(1500));
    let mut allocs = Vec::new();

    let mut bare = Bare;
    g.bench_function("bare", |b| b.iter(|| one_call(&mut bare, black_box(7))));
    allocs.push(("bare".to_string(), allocations_per_call(alloc_iters(), || assert!(one_call(&mut bare, 7)))));

    for n in SIZES {
        let mut svc = warmed(pending(n));
        g.bench_with_input(BenchmarkId::new("tower_p2c_pending", n), &n, |b, _| {
            b.iter(|| one_call(&mut svc, black_box(7)))
        });
        allocs.push((
            format!("tower_p2c_pending/{n}"),
            allocations_per_call(alloc_iters(), || assert!(one_call(&mut svc, 7))),
        ));

        let mut svc = warmed(peak_ewma(n));
        g.bench_with_input(BenchmarkId::new("tower_p2c_peak_ewma", n), &n, |b, _| {
            b.iter(|| one_call(&mut svc, black_box(7)))
        });
        allocs.push((
            format!("tower_p2c_peak_ewma/{n}"),
            allocations_per_call(alloc_iters(), || assert!(one_call(&mut svc, 7))),
        ));

        for (name, picker) in [
            ("ha_p2c_ewma", Picker::P2cPeakEwma),
            ("ha_p2c_pending", Picker::P2cPending),
            ("ha_round_robin", Picker::RoundRobin),
        ] {
            let mut svc = ha(picker, n);
            for i in 0..alloc_iters() / 10 {
                assert!(one_call(&mut svc, WithAttempt::new(i)), "a ready endpoint answers");
            }
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| one_call(&mut svc, WithAttempt::new(black_box(7))))
            });
            allocs.push((
                format!("{name}/{n}"),
                allocations_per_call(alloc_iters(), || assert!(one_call(&mut svc, WithAttempt::new(7)))),
            ));
        }
    }
    g.finish();
    for (name, a) in allocs {
        println!("balance_overhead/{name}: {a:.2} allocations per call");
    }

    println!("\nbalance_overhead fastest of interleaved rounds (ns per call; ha / tower_p2c_peak_ewma):");
    for n in SIZES {
        let mut tower_ewma = warmed(peak_ewma(n));
        let mut tower_pending = warmed(pending(n));
        let [mut ewma, mut pend, mut rr] =
            [Picker::P2cPeakEwma, Picker::P2cPending, Picker::RoundRobin].map(|picker| ha(picker, n));
        let mut timed: Vec<Timed<'_>> = vec![
            ("tower_p2c_peak_ewma", Box::new(|| one_call(&mut tower_ewma, black_box(7)))),
            ("tower_p2c_pending", Box::new(|| one_call(&mut tower_pending, black_box(7)))),
            ("ha_p2c_ewma", Box::new(|| one_call(&mut ewma, WithAttempt::new(black_box(7))))),
            ("ha_p2c_pending", Box::new(|| one_call(&mut pend, WithAttempt::new(black_box(7))))),
            ("ha_round_robin", Box::new(|| one_call(&mut rr, WithAttempt::new(black_box(7))))),
        ];
        let best = fastest_of_rounds(&mut timed, 20_000);
        for ((name, _), ns) in timed.iter().zip(&best) {
            println!("  n={n:<5} {name:<20} {ns:8.1}  ({:.2})", ns / best[0]);
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
