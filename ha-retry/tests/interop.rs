//! tower::retry policies inside our layer, and our policy inside tower's.

use std::future::Ready;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ha_core::classify::ErrorsAreFailures;
use ha_core::{BudgetExhausted, DeadlineExceeded, Events, Instant};
use ha_retry::config::{BudgetConfig, Jitter, RetryConfig};
use ha_retry::interop::{HaPolicy, TowerPolicyLayer};
use ha_retry::RetryBudget;
use tower::{retry::Policy, service_fn, BoxError, Layer, Service, ServiceExt};

/// A user's policy: retry any error up to `left` more times, at once.
#[derive(Clone)]
struct Attempts {
    left: u32,
}

impl<Req: Clone, Res, E> Policy<Req, Res, E> for Attempts {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        if result.is_err() && self.left > 0 {
            self.left -= 1;
            Some(std::future::ready(()))
        } else {
            None
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

fn counting(
    fail_first: u32,
    took: Duration,
) -> (impl Service<u32, Response = u32, Error = BoxError, Future = impl Send> + Clone, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let svc = service_fn(move |req: u32| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(took).await;
            if n < fail_first {
                Err(BoxError::from("down"))
            } else {
                Ok(req)
            }
        }
    });
    (svc, calls)
}

fn budget(min_per_second: u32) -> RetryBudget {
    let cfg = BudgetConfig { ratio: 0.0, min_per_second, ttl: Duration::from_secs(1), buckets: 10 };
    RetryBudget::new(cfg).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_tower_policy_runs_within_our_budget() {
    let (svc, calls) = counting(100, Duration::ZERO);
    // The policy would retry 10 times; the budget pays for 3.
    let layer = TowerPolicyLayer::new(Attempts { left: 10 }, budget(3));
    let err = layer.layer(svc).oneshot(1).await.unwrap_err();
    assert!(err.is::<BudgetExhausted>(), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    // With budget to spare, the policy decides.
    let (svc, calls) = counting(2, Duration::ZERO);
    let layer = TowerPolicyLayer::new(Attempts { left: 10 }, budget(100));
    assert_eq!(layer.layer(svc).oneshot(5).await.unwrap(), 5);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_tower_policy_runs_within_our_deadline() {
    let (svc, calls) = counting(100, Duration::from_millis(40));
    let layer = TowerPolicyLayer::new(Attempts { left: 10 }, budget(100)).deadline(Duration::from_millis(100));
    let t0 = Instant::now();
    let err = layer.layer(svc).oneshot(1).await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(Instant::now() - t0, Duration::from_millis(100));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

fn config(max_attempts: u32) -> RetryConfig {
    let mut c = RetryConfig { max_attempts, ..RetryConfig::default() };
    c.backoff.jitter = Jitter::None;
    c.backoff.base = Duration::from_millis(10);
    c
}

#[tokio::test(start_paused = true)]
async fn our_policy_runs_inside_tower_retry() {
    let (svc, calls) = counting(2, Duration::ZERO);
    let policy = HaPolicy::with_parts(config(5), ErrorsAreFailures::default(), budget(100), Events::new()).unwrap();
    let t0 = Instant::now();
    let mut svc = tower::retry::RetryLayer::new(policy).layer(svc);
    assert_eq!(svc.ready().await.unwrap().call(3).await.unwrap(), 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Our backoff: the first retry at once, then 10 ms.
    assert_eq!(Instant::now() - t0, Duration::from_millis(10));

    // A second request through the same service starts afresh (attempts and backoff).
    calls.store(1, Ordering::SeqCst);
    let t1 = Instant::now();
    assert_eq!(svc.ready().await.unwrap().call(4).await.unwrap(), 4);
    assert_eq!(Instant::now() - t1, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn our_policy_inside_tower_keeps_its_attempts_budget_and_classification() {
    let (svc, calls) = counting(100, Duration::ZERO);
    let policy = HaPolicy::with_parts(config(3), ErrorsAreFailures::default(), budget(100), Events::new()).unwrap();
    assert!(tower::retry::RetryLayer::new(policy).layer(svc).oneshot(1).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let (svc, calls) = counting(100, Duration::ZERO);
    let policy = HaPolicy::with_parts(config(10), ErrorsAreFailures::default(), budget(2), Events::new()).unwrap();
    assert!(tower::retry::RetryLayer::new(policy).layer(svc).oneshot(1).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let (svc, calls) = counting(100, Duration::ZERO);
    let policy =
        HaPolicy::with_parts(config(10), ErrorsAreFailures::non_retryable(), budget(100), Events::new()).unwrap();
    assert!(tower::retry::RetryLayer::new(policy).layer(svc).oneshot(1).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
