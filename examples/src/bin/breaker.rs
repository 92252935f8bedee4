//! A circuit breaker in front of a backend that goes down and comes back.
//!
//! Run with `cargo run -p ha-examples --bin breaker`.
//!
//! The breaker trips after five failures in a row, rejects calls at once
//! (with the time until a probe is allowed) instead of waiting on the dead
//! backend, lets two probes through after the open wait, and closes when
//! they pass.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ha_breaker::{BreakerConfig, CircuitBreakerLayer, OpenWaitConfig};
use ha_core::event::{Event, Events};
use ha_core::BreakerOpen;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let down = Arc::new(AtomicBool::new(true));
    let backend_down = down.clone();
    let backend = service_fn(move |id: u32| {
        let down = backend_down.load(Ordering::Relaxed);
        async move {
            if down {
                Err::<String, BoxError>("connection reset".into())
            } else {
                Ok(format!("order {id} shipped"))
            }
        }
    });

    let config = BreakerConfig {
        consecutive_failures: Some(5),
        open_wait: OpenWaitConfig { base: Duration::from_millis(200), ..OpenWaitConfig::default() },
        half_open_probes: 2,
        ..BreakerConfig::default()
    };
    let events = Events::new().with_observer(|e: &Event| {
        if let Event::BreakerStateChanged { breaker, from, to } = e {
            println!("  [{breaker}] {from} -> {to}");
        }
    });
    let mut orders = CircuitBreakerLayer::new(config)?.name("orders").events(events).layer(backend);

    println!("backend down:");
    for id in 0..8 {
        match orders.ready().await?.call(id).await {
            Ok(body) => println!("  {id}: {body}"),
            Err(e) => match e.downcast_ref::<BreakerOpen>() {
                Some(open) => println!("  {id}: rejected, probe in {:?}", open.retry_after()),
                None => println!("  {id}: failed: {e}"),
            },
        }
    }

    println!("backend back; waiting for the open wait (at most 200 ms) to pass:");
    down.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(250)).await;
    for id in 8..12 {
        let body = orders.ready().await?.call(id).await?;
        println!("  {id}: {body}");
    }

    let m = orders.breaker().stats();
    println!(
        "state {}, {} calls, {} failures, {} rejected, {} transitions",
        orders.state(),
        m.calls,
        m.failures,
        m.rejections,
        m.transitions
    );
    Ok(())
}
