//! A fleet that fails alike everywhere (every endpoint shedding more than
//! half its requests, as under a fleet-wide overload) trips every
//! endpoint's circuit breaker. The stack's breakers are advisory: the
//! balancer sets them aside for endpoints failing alike with their peers,
//! so the stack keeps serving what the fleet can serve instead of waiting
//! for an endpoint whose breaker is closed. On paused virtual time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ha::core::WithAttempt;
use ha::{Config, Stack, Target};
use tower::{BoxError, Service};

/// Every endpoint fails 11 of each 20 calls (55%, above the default
/// breaker's 50% failure-rate threshold), after 5 ms.
#[derive(Clone)]
struct Shedding {
    calls: Arc<AtomicU64>,
}

impl Service<WithAttempt<()>> for Shedding {
    type Response = ();
    type Error = BoxError;
    type Future = futures_util::future::BoxFuture<'static, Result<(), BoxError>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: WithAttempt<()>) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if n % 20 < 11 {
                Err("shed".into())
            } else {
                Ok(())
            }
        })
    }
}

#[tokio::test(start_paused = true)]
async fn breakers_opening_together_under_a_shared_overload_do_not_starve_the_fleet() {
    let transport = |_: &Target| Shedding { calls: Arc::new(AtomicU64::new(0)) };
    let endpoints = (0..5u16).map(|i| SocketAddr::from(([127, 0, 0, 1], 9100 + i)));
    let stack: Stack<_, WithAttempt<()>> =
        Stack::builder(transport).config(Config::default()).endpoints(endpoints).build().unwrap();

    let ok = Arc::new(AtomicU64::new(0));
    let sent = 4_000u64;
    let mut tasks = Vec::new();
    let mut breakers_opened = false;
    for _ in 0..sent {
        let mut s = stack.clone();
        let ok = ok.clone();
        tasks.push(tokio::spawn(async move {
            std::future::poll_fn(|cx| s.poll_ready(cx)).await.unwrap();
            if s.call(WithAttempt::new(())).await.is_ok() {
                ok.fetch_add(1, Ordering::Relaxed);
            }
        }));
        breakers_opened |= stack.endpoint_stats().iter().filter(|e| e.breaker_open).count() >= 3;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let success = ok.load(Ordering::Relaxed) as f64 / sent as f64;
    eprintln!("success {success:.3} under a shared 55% failure rate");
    assert!(breakers_opened, "the scenario trips most breakers");
    // Without retries the fleet serves 45%; with the budget's retries more.
    // Breakers that kept every endpoint out would serve next to nothing.
    assert!(success >= 0.45, "the fleet kept serving: {success:.3}");
}
