//! A running stack takes a new configuration (issue 15): under concurrent
//! open-loop traffic on virtual time, a change of picker, ejection
//! thresholds, retry budget and breaker thresholds each take effect without
//! a failed request, and an invalid config is refused and changes nothing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ha::balance::config::OutlierConfig;
use ha::balance::Picker;
use ha::core::WithAttempt;
use ha::{Config, Stack, Target};
use tokio::time::Instant;
use tower::{BoxError, Service};

const ENDPOINTS: u16 = 3;

/// Three endpoints: each answers after its latency; the flaky one fails a
/// share of requests (every `fail_every`-th, deterministic).
#[derive(Default)]
struct Fleet {
    latency_ms: [AtomicU64; ENDPOINTS as usize],
    fail_every: [AtomicU64; ENDPOINTS as usize],
    hits: [AtomicU64; ENDPOINTS as usize],
}

#[derive(Clone)]
struct Backend {
    index: usize,
    fleet: Arc<Fleet>,
}

impl Service<WithAttempt<()>> for Backend {
    type Response = ();
    type Error = BoxError;
    type Future = futures_util::future::BoxFuture<'static, Result<(), BoxError>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: WithAttempt<()>) -> Self::Future {
        let (i, fleet) = (self.index, self.fleet.clone());
        let n = fleet.hits[i].fetch_add(1, Ordering::Relaxed) + 1;
        let every = fleet.fail_every[i].load(Ordering::Relaxed);
        let latency = Duration::from_millis(fleet.latency_ms[i].load(Ordering::Relaxed));
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            if every != 0 && n % every == 0 {
                Err(format!("endpoint {i} failed").into())
            } else {
                Ok(())
            }
        })
    }
}

fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000 + i))
}

/// The transport: each target's port picks its endpoint in the fleet.
#[derive(Clone)]
struct FleetTransport(Arc<Fleet>);

impl ha::Transport<WithAttempt<()>> for FleetTransport {
    type Response = ();
    type Service = Backend;
    type Future = futures_util::future::BoxFuture<'static, Result<(), BoxError>>;

    fn connect(&self, target: &Target) -> Backend {
        Backend { index: usize::from(target.addr.port() - 9000), fleet: self.0.clone() }
    }
}

type TestStack = Stack<FleetTransport, WithAttempt<()>>;

fn stack(fleet: &Arc<Fleet>, config: Config) -> TestStack {
    Stack::builder(FleetTransport(fleet.clone()))
        .config(config)
        .endpoints((0..ENDPOINTS).map(addr))
        .build()
        .expect("a valid config")
}

/// Requests sent and failed.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    sent: u64,
    failed: u64,
}

/// Sends one request per millisecond for `ms` (open loop), calling
/// `at(t)` before each millisecond's request, then waits for the answers.
async fn drive(stack: &TestStack, ms: u64, mut at: impl FnMut(u64)) -> Tally {
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(ms as usize);
    for t in 0..ms {
        at(t);
        let mut s = stack.clone();
        let failed = failed.clone();
        tasks.push(tokio::spawn(async move {
            std::future::poll_fn(|cx| s.poll_ready(cx)).await.expect("always ready");
            if s.call(WithAttempt::new(())).await.is_err() {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    Tally { sent: ms, failed: failed.load(Ordering::Relaxed) }
}

fn hits(fleet: &Fleet) -> [u64; ENDPOINTS as usize] {
    std::array::from_fn(|i| fleet.hits[i].load(Ordering::Relaxed))
}

fn lax_outlier() -> OutlierConfig {
    OutlierConfig { consecutive_failures: 0, ..OutlierConfig::disabled() }
}

#[tokio::test(start_paused = true)]
async fn picker_and_ejection_thresholds_change_under_traffic_without_a_failed_request() {
    let fleet = Arc::new(Fleet::default());
    fleet.latency_ms[0].store(30, Ordering::Relaxed);
    fleet.latency_ms[1].store(10, Ordering::Relaxed);
    fleet.latency_ms[2].store(10, Ordering::Relaxed);
    // Endpoint 2 fails every fourth request it gets.
    fleet.fail_every[2].store(4, Ordering::Relaxed);
    let mut config = Config::default();
    config.balance.outlier = lax_outlier();
    let stack = stack(&fleet, config.clone());
    let warm = drive(&stack, 3_000, |_| {}).await;
    assert_eq!(warm.failed, 0, "retries cover the flaky endpoint: {warm:?}");
    let before = hits(&fleet);
    assert!(before[0] * 5 < warm.sent, "P2C keeps traffic off the slow endpoint: {before:?}");

    // Round robin, and eject after 1 failure (endpoint 2 fails one in four,
    // so it goes at its next failure), both while requests are in flight.
    let mut next = config.clone();
    next.balance.picker = Picker::RoundRobin;
    next.balance.outlier = OutlierConfig { consecutive_failures: 1, ..OutlierConfig::disabled() };
    let (mut in_flight_then, mut slow_then) = (0, None);
    let after = drive(&stack, 3_000, |t| {
        if t == 500 {
            in_flight_then = stack.endpoint_stats().iter().map(|s| s.pending).sum();
            stack.reconfigure(next.clone()).expect("valid");
            slow_then = stack.endpoint_stats().into_iter().find(|s| *s.name == addr(0).to_string());
        }
    })
    .await;
    assert!(in_flight_then > 0, "the change came with requests in flight");
    assert_eq!(after.failed, 0, "no request failed across the change: {after:?}");
    assert_eq!(stack.config(), next);
    let slow = slow_then.unwrap();
    let flaky = stack.endpoint_stats().into_iter().find(|s| *s.name == addr(2).to_string()).unwrap();
    assert!(flaky.ejections > 0, "the stricter threshold ejected the flaky endpoint: {flaky:?}");
    let slow_share = (hits(&fleet)[0] - before[0]) as f64 / after.sent as f64;
    assert!(slow_share > 0.3, "round robin gives the slow endpoint its share: {slow_share:.3}");
    assert!(slow.latency >= Duration::from_millis(25), "the latency learned before stayed: {slow:?}");
}

#[tokio::test(start_paused = true)]
async fn budget_and_breaker_thresholds_change_and_an_invalid_config_changes_nothing() {
    let fleet = Arc::new(Fleet::default());
    for i in 0..ENDPOINTS as usize {
        fleet.latency_ms[i].store(10, Ordering::Relaxed);
    }
    fleet.fail_every[1].store(3, Ordering::Relaxed);
    let mut config = Config::default();
    config.balance.picker = Picker::RoundRobin;
    config.balance.outlier = lax_outlier();
    let stack = stack(&fleet, config.clone());
    let budget = |s: &TestStack| s.budget().stats(Instant::now()).available;

    let first = drive(&stack, 2_000, |_| {}).await;
    assert_eq!(first.failed, 0, "{first:?}");
    let breaker_open = |s: &TestStack| s.endpoint_stats().iter().any(|e| e.breaker_open);
    assert!(!breaker_open(&stack), "a third of one endpoint's calls failing trips no default breaker");

    // Refused whole: a bad breaker section after a good picker change.
    let mut bad = config.clone();
    bad.balance.picker = Picker::P2cPeakEwma;
    bad.breaker.failure_rate = Some(1.5);
    let err = stack.reconfigure(bad).unwrap_err();
    assert_eq!(err.field(), "breaker.failure_rate", "{err}");
    assert_eq!(stack.config(), config, "nothing changed");
    let refused = stack.reconfigure(Config { max_replay_bytes: 1, ..config.clone() }).unwrap_err();
    assert_eq!(refused.field(), "max_replay_bytes");

    // A richer budget (half of the requests' worth of retries) and a
    // breaker that opens at a failure, under traffic.
    let mut next = config.clone();
    next.retry.budget.ratio = 0.5;
    next.breaker.consecutive_failures = Some(1);
    next.breaker.failure_rate = None;
    let before = budget(&stack);
    let mut opened = false;
    let second = drive(&stack, 2_000, |t| {
        if t == 100 {
            stack.reconfigure(next.clone()).expect("valid");
        }
        opened |= breaker_open(&stack);
    })
    .await;
    assert_eq!(second.failed, 0, "no request failed across the change: {second:?}");
    assert!(opened, "the stricter breaker opened on the flaky endpoint");
    let after = budget(&stack);
    eprintln!("budget available: {before:.0} before, {after:.0} after the change");
    assert!(after > before + 0.4 * 1_500.0, "deposits at the new ratio, on top of the kept balance");
}
