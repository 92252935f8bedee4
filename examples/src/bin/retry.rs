//! Retry a flaky dependency and hedge its slow answers, within one budget.
//!
//! Run with `cargo run -p ha-examples --bin retry`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ha_core::event::{Event, Events};
use ha_retry::{HedgeConfig, HedgeDelay, HedgeLayer, RetryBudget, RetryConfig, RetryLayer};
use tokio::time::Instant;
use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt().with_target(true).init();
    let events = Events::new().with_observer(|e: &Event| println!("  event: {e:?}"));

    // Up to 3 attempts of at most 200 ms each, all done within 1 s.
    let config = RetryConfig {
        max_attempts: 3,
        per_try_timeout: Some(Duration::from_millis(200)),
        deadline: Some(Duration::from_secs(1)),
        ..RetryConfig::default()
    };
    // One budget for retries and hedges: 20% of recent requests plus 10 per second.
    let budget = RetryBudget::builder(config.budget.clone()).name("inventory").events(events.clone()).build()?;
    let retry = RetryLayer::builder(config).budget(budget.clone()).events(events.clone()).build()?;
    let hedge_config = HedgeConfig { delay: HedgeDelay::Fixed(Duration::from_millis(50)), ..HedgeConfig::default() };
    // The retry layer above already counts each request into the shared budget.
    let hedge =
        HedgeLayer::builder(hedge_config).budget(budget.clone()).count_requests(false).events(events).build()?;

    // The dependency: the 2nd of every 4 calls fails, the 4th of every 5 is slow.
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let inventory = service_fn(move |item: u32| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n % 4 == 1 {
                return Err::<String, BoxError>("503 service unavailable".into());
            }
            if n % 5 == 3 {
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            Ok(format!("item {item}: 12 in stock (call {n})"))
        }
    });

    // Retry outside, hedge inside: a hedge races a slow attempt, a retry follows a failed one.
    let svc = ServiceBuilder::new().layer(retry.clone()).layer(hedge.clone()).service(inventory);
    for item in 0..8 {
        let start = Instant::now();
        let answer = svc.clone().oneshot(item).await?;
        println!("{answer} in {:?}", start.elapsed());
    }
    println!("{} calls for 8 requests", calls.load(Ordering::SeqCst));
    println!("retries: {:?}", retry.stats());
    println!("hedges: {:?}", hedge.stats());
    println!("budget: {:?}", budget.stats(Instant::now()));
    Ok(())
}
