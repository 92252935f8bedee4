//! Two tiers of endpoints behind one `Balance`, with retries that never go
//! back to an endpoint the request already tried.
//!
//! Tier 0 holds the two servers in our zone, tier 1 a standby in another
//! zone. While tier 0 is healthy it takes all the traffic; when one of its
//! servers starts failing, each failed attempt is retried on the other one,
//! and after five failures in a row outlier ejection takes the failing server
//! out of selection. Tier 0 is then at half strength, below what the
//! overprovisioning factor (1.4) covers, so 30% of its traffic spills to the
//! standby. Every request succeeds.
//!
//! Run with `cargo run -p ha-examples --bin balance`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ha_balance::{Balance, BalanceConfig, Endpoint, Picker};
use ha_core::WithAttempt;
use ha_retry::{RetryConfig, RetryLayer};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt().with_target(true).init();

    // Stand-ins for real clients (hyper, tonic) of three servers; `a` can be
    // switched to failing.
    let a_fails = Arc::new(AtomicBool::new(false));
    let server = |name: &'static str, fails: Option<Arc<AtomicBool>>| {
        service_fn(move |_req: WithAttempt<&'static str>| {
            let failing = fails.as_ref().is_some_and(|f| f.load(Ordering::Relaxed));
            async move {
                if failing {
                    Err::<&'static str, BoxError>(format!("{name} is down").into())
                } else {
                    Ok(name)
                }
            }
        })
    };

    let balance = Balance::builder()
        .config(BalanceConfig {
            // Round robin makes the demo's traffic split predictable; the
            // default picker is P2C over PeakEWMA latency.
            picker: Picker::RoundRobin,
            no_healthy_timeout: Duration::from_millis(500),
            ..BalanceConfig::default()
        })
        .build_with([
            ("10.0.0.1:80", Endpoint::new(server("a", Some(a_fails.clone()))).zone("eu-1a").tier(0)),
            ("10.0.0.2:80", Endpoint::new(server("b", None)).zone("eu-1a").tier(0)),
            ("10.0.1.1:80", Endpoint::new(server("standby", None)).zone("eu-1b").tier(1)),
        ])?;

    // A retry goes to an endpoint this request has not tried yet.
    let retry = RetryLayer::builder(RetryConfig::default()).track_attempts().build()?;
    let mut client = retry.layer(balance.clone());

    for round in 0..40 {
        if round == 10 {
            println!("-- server a starts failing");
            a_fails.store(true, Ordering::Relaxed);
        }
        // Every request succeeds: `?` would end the program on the first error.
        let served_by = client.ready().await?.call(WithAttempt::new("GET /items")).await?;
        if round < 10 {
            assert_ne!(served_by, "standby", "a healthy tier 0 takes all the traffic");
        }
    }

    for s in balance.endpoint_stats() {
        println!("{} (tier {}): {} requests, ejected: {}", s.name, s.tier, s.requests, s.ejected);
    }
    Ok(())
}
