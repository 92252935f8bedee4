//! Classify HTTP results and watch `ha` events arrive in `tracing`.
//!
//! Run with `cargo run -p ha-examples --bin classify_and_observe`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ha_core::classify::{Classify, HttpClassifier, Outcome};
use ha_core::event::{BreakerState, Event, Events};
use ha_core::stats::{CountWindow, Sample};
use tower::BoxError;

fn main() {
    tracing_subscriber::fmt().with_target(true).init();

    let degradations = Arc::new(AtomicUsize::new(0));
    let counter = degradations.clone();
    let events = Events::new().with_observer(move |e: &Event| {
        if e.is_degradation() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });

    // A toy breaker built from the shared vocabulary: trip when more than half
    // of the last 10 calls failed.
    let classifier = HttpClassifier::default();
    let window = CountWindow::new(10).expect("a valid window");
    let statuses = [200, 200, 503, 500, 502, 200, 503, 500, 500, 504];
    let mut open = false;
    for status in statuses {
        let req = http::Request::get("http://inventory/items").body(()).expect("a valid request");
        let info = Classify::<_, http::Response<()>, BoxError>::request_info(&classifier, &req);
        let res = http::Response::builder().status(status).body(()).expect("a valid response");
        let outcome: Outcome = Classify::<http::Request<()>, _, BoxError>::classify(&classifier, &info, Ok(&res));
        window.record(Sample::new(outcome.is_failure(), false));
        let snapshot = window.snapshot();
        println!("{status}: {outcome:?}, failure rate {:.0}%", snapshot.failure_rate() * 100.0);
        if !open && snapshot.calls >= 5 && snapshot.failure_rate() > 0.5 {
            open = true;
            events.emit(Event::BreakerStateChanged {
                breaker: "inventory".into(),
                from: BreakerState::Closed,
                to: BreakerState::Open,
            });
        }
    }
    events.emit(Event::RetryScheduled { attempt: 2, backoff: Duration::from_millis(50) });
    println!("degradations observed: {}", degradations.load(Ordering::Relaxed));
}
