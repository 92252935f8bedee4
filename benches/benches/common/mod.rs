//! Shared by the overhead benches: a service that answers at once, and one
//! request driven through a tower service without an executor.
// Each bench binary uses a part of this module.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use ha_core::WithAttempt;
use tower::Service;

/// The endpoint every bench calls: answers on the first poll.
#[derive(Clone, Copy, Debug)]
pub struct Bare;

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

/// One request as a caller makes it: `poll_ready`, `call`, poll the response
/// future to completion (it must be ready on the first poll). Returns whether
/// it succeeded, so the work cannot be optimised away.
#[inline(always)]
pub fn one_call<R, S: Service<R>>(svc: &mut S, req: R) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let ready = matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(())));
    let fut = pin!(svc.call(req));
    ready && matches!(fut.poll(&mut cx), Poll::Ready(Ok(_)))
}

/// Calls to average allocations over: many under `cargo bench`, a few under
/// `cargo test --benches` (which runs each bench once, as a smoke test).
pub fn alloc_iters() -> u64 {
    if std::env::args().any(|a| a == "--bench") {
        100_000
    } else {
        100
    }
}

/// [`Bare`] also answers requests that carry an attempt context (what
/// ha-balance balances).
impl Service<WithAttempt<u64>> for Bare {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, req: WithAttempt<u64>) -> Self::Future {
        <Bare as Service<u64>>::call(self, req.request)
    }
}

/// A named closure making one call, for [`fastest_of_rounds`].
pub type Timed<'a> = (&'static str, Box<dyn FnMut() -> bool + 'a>);

/// Times each contender in 25 rounds of `calls` calls, interleaved round by
/// round, and returns the fastest nanoseconds per call of each. On
/// a shared machine criterion's means move with the load; the fastest of
/// many short interleaved rounds is what each costs when it gets the core.
/// `cargo test --benches` (no `--bench` argument) runs one short round.
pub fn fastest_of_rounds(contenders: &mut [Timed<'_>], calls: u64) -> Vec<f64> {
    let benching = std::env::args().any(|a| a == "--bench");
    let (rounds, calls) = if benching { (25, calls) } else { (1, 100) };
    let mut best = vec![f64::MAX; contenders.len()];
    for _ in 0..rounds {
        for (i, (_, call)) in contenders.iter_mut().enumerate() {
            let start = std::time::Instant::now();
            for _ in 0..calls {
                std::hint::black_box(call());
            }
            best[i] = best[i].min(start.elapsed().as_nanos() as f64 / calls as f64);
        }
    }
    best
}
