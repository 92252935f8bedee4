//! The composed stack on virtual time: hedges draw on the retry budget and
//! beat a slow endpoint, deadlines and per-try timeouts bound a request,
//! and the stack's own decisions come out as typed errors.

use std::net::SocketAddr;
use std::time::Duration;

use ha::balance::{BalanceConfig, Picker};
use ha::core::WithAttempt;
use ha::retry::{HedgeConfig, HedgeDelay};
use ha::{Config, ErrorKind, Stack, Target, TimeoutConfig};
use tokio::time::Instant;
use tower::{BoxError, ServiceExt};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// An endpoint that answers with its port after `latency(port)`; `None` never answers.
#[derive(Clone)]
struct Backend {
    port: u16,
    latency: fn(u16) -> Option<Duration>,
}

impl tower::Service<WithAttempt<()>> for Backend {
    type Response = u16;
    type Error = BoxError;
    type Future = futures_util::future::BoxFuture<'static, Result<u16, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: WithAttempt<()>) -> Self::Future {
        let (port, latency) = (self.port, self.latency);
        Box::pin(async move {
            match latency(port) {
                Some(d) => {
                    tokio::time::sleep(d).await;
                    Ok(port)
                }
                None => std::future::pending().await,
            }
        })
    }
}

fn transport(latency: fn(u16) -> Option<Duration>) -> impl Fn(&Target) -> Backend + Clone + Send + Sync + 'static {
    move |target: &Target| Backend { port: target.addr.port(), latency }
}

#[tokio::test(start_paused = true)]
async fn hedges_beat_a_slow_endpoint_on_the_retry_budget() {
    let slow_or_fast = |port| Some(Duration::from_millis(if port == 1 { 1000 } else { 10 }));
    let config = Config {
        hedge: Some(HedgeConfig { delay: HedgeDelay::Fixed(Duration::from_millis(50)), ..HedgeConfig::default() }),
        balance: BalanceConfig { picker: Picker::RoundRobin, ..BalanceConfig::default() },
        ..Config::default()
    };
    let stack = Stack::builder(transport(slow_or_fast)).config(config).endpoints([addr(1), addr(2)]).build().unwrap();
    for _ in 0..20 {
        let start = Instant::now();
        let port = stack.clone().oneshot(WithAttempt::new(())).await.expect("an answer");
        assert_eq!(port, 2, "the fast endpoint answers first");
        assert!(start.elapsed() <= Duration::from_millis(61), "{:?}", start.elapsed());
    }
    let hedges = stack.hedge_stats().expect("hedging is on");
    let slow = stack.endpoint_stats().into_iter().find(|s| *s.name == addr(1).to_string()).unwrap();
    assert!(slow.requests > 0, "round robin sent first attempts to the slow endpoint");
    assert_eq!(hedges.hedges, slow.requests, "every request sent to the slow endpoint was hedged");
    assert_eq!(hedges.hedge_wins, hedges.hedges);
    // Retries and hedges draw on one budget: every withdrawal was a hedge.
    let budget = stack.budget().stats(Instant::now());
    assert_eq!(budget.allowed, hedges.hedges);
    assert_eq!(stack.retry_stats().retries, 0);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_a_request_to_endpoints_that_never_answer() {
    let config = Config {
        timeouts: TimeoutConfig { request: Some(Duration::from_secs(1)), attempt: None },
        ..Config::default()
    };
    let stack = Stack::builder(transport(|_| None)).config(config).endpoints([addr(1), addr(2)]).build().unwrap();
    let start = Instant::now();
    let err = stack.oneshot(WithAttempt::new(())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn per_try_timeouts_are_retried_elsewhere_then_reported() {
    let config = Config {
        timeouts: TimeoutConfig { request: Some(Duration::from_secs(10)), attempt: Some(Duration::from_millis(100)) },
        ..Config::default()
    };
    let stack =
        Stack::builder(transport(|_| None)).config(config).endpoints([addr(1), addr(2), addr(3)]).build().unwrap();
    let start = Instant::now();
    let err = stack.clone().oneshot(WithAttempt::new(())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RetriesExhausted, "{err}");
    assert!(err.find::<ha::core::AttemptTimedOut>().is_some(), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    // Each attempt went to a different endpoint, and each endpoint's breaker saw a failure.
    let stats = stack.endpoint_stats();
    assert!(stats.iter().all(|s| s.requests == 1 && s.failures == 1), "{stats:#?}");
}

#[tokio::test(start_paused = true)]
async fn with_no_endpoint_the_stack_fails_fast_with_no_healthy_endpoint() {
    let stack = Stack::builder(transport(|_| Some(Duration::ZERO))).build().unwrap();
    let start = Instant::now();
    let err = stack.oneshot(WithAttempt::new(())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHealthyEndpoint, "{err}");
    assert!(start.elapsed() <= Duration::from_secs(10), "{:?}", start.elapsed());
}

#[test]
fn an_invalid_config_is_rejected_by_the_builder_with_the_field() {
    let config =
        Config { retry: ha::retry::RetryConfig { max_attempts: 0, ..Default::default() }, ..Config::default() };
    let built = Stack::<_, WithAttempt<()>>::builder(transport(|_| None)).config(config).endpoints([addr(1)]).build();
    let err = built.unwrap_err();
    assert_eq!(err.field(), "retry.max_attempts");
}
