//! Loom models of ha-core's shared-state primitives.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release -p ha-core --test loom`.
//! Each model explores every interleaving of its threads (up to the
//! preemption bound) and checks that no update is lost and no reader sees a
//! torn or impossible value.
#![cfg(loom)]

use std::time::Duration;

use ha_core::attempt::{AttemptContext, EndpointId};
use ha_core::stats::{CountWindow, PeakEwma, Sample, TimeWindow, WindowStats};
use ha_core::sync::Arc;
use ha_core::Instant;
use loom::thread;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn ewma_concurrent_peaks_keep_the_highest_and_reads_are_never_torn() {
    loom::model(|| {
        let t0 = Instant::now();
        let ewma = Arc::new(PeakEwma::new(t0, ms(10), Duration::from_secs(10)));
        let a = {
            let e = ewma.clone();
            thread::spawn(move || e.observe(t0, ms(30)))
        };
        let b = {
            let e = ewma.clone();
            thread::spawn(move || e.observe(t0, ms(20)))
        };
        // A concurrent reader sees one of the values some writer published.
        let seen = ewma.estimate(t0);
        assert!([ms(10), ms(20), ms(30)].contains(&seen), "torn read {seen:?}");
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(ewma.estimate(t0), ms(30), "a peak was lost");
    });
}

#[test]
fn ewma_concurrent_blends_are_both_applied() {
    loom::model(|| {
        let t0 = Instant::now();
        let ewma = Arc::new(PeakEwma::new(t0, ms(100), Duration::from_secs(1)));
        let later = t0 + Duration::from_secs(1);
        let a = {
            let e = ewma.clone();
            thread::spawn(move || e.observe(later, ms(10)))
        };
        ewma.observe(later, ms(10));
        a.join().unwrap();
        // The first blend moves the stamp to `later`; the second then has zero
        // elapsed time and keeps the value: either order gives the same result.
        let keep = (-1f64).exp();
        let expected = 100e6 * keep + 10e6 * (1.0 - keep);
        let got = ewma.estimate_nanos(later);
        assert!((got - expected).abs() < 1e3, "{got} vs {expected}");
    });
}

#[test]
fn count_window_concurrent_records_are_all_counted() {
    loom::model(|| {
        let w = Arc::new(CountWindow::new(2).unwrap());
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let w = w.clone();
                thread::spawn(move || w.record(Sample::FAILURE))
            })
            .collect();
        let mid = w.snapshot();
        assert!(mid.failures <= mid.calls && mid.calls <= 2, "{mid:?}");
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(w.snapshot(), WindowStats { calls: 2, failures: 2, slow: 0 });
    });
}

#[test]
fn count_window_wrapping_records_converge_to_the_ring() {
    loom::model(|| {
        let w = Arc::new(CountWindow::new(1).unwrap());
        w.record(Sample::SUCCESS);
        let a = {
            let w = w.clone();
            thread::spawn(move || w.record(Sample::FAILURE.with_slow(true)))
        };
        w.record(Sample::SUCCESS);
        a.join().unwrap();
        // One slot: the totals must describe exactly the sample left in it.
        let s = w.snapshot();
        assert_eq!(s.calls, 1);
        assert_eq!(s.failures, s.slow, "{s:?}");
    });
}

#[test]
fn time_window_concurrent_records_and_bucket_turnover() {
    loom::model(|| {
        let t0 = Instant::now();
        let w = Arc::new(TimeWindow::new(t0, Duration::from_secs(2), 2).unwrap());
        let t2 = t0 + Duration::from_secs(2); // same bucket as t0, a newer period
        w.record(t0, Sample::SUCCESS);
        let a = {
            let w = w.clone();
            thread::spawn(move || w.record(t2, Sample::FAILURE))
        };
        let b = {
            let w = w.clone();
            thread::spawn(move || w.record(t2, Sample::FAILURE))
        };
        a.join().unwrap();
        b.join().unwrap();
        // The turnover drops the old period, and neither new record is lost.
        assert_eq!(w.snapshot(t2), WindowStats { calls: 2, failures: 2, slow: 0 });
    });
}

#[test]
fn attempt_context_concurrent_records_are_all_kept() {
    loom::model(|| {
        let ctx = AttemptContext::new();
        let hedge = ctx.next_attempt();
        let a = thread::spawn(move || hedge.record_tried(EndpointId::from_raw(1)));
        ctx.record_tried(EndpointId::from_raw(2));
        a.join().unwrap();
        assert!(ctx.was_tried(EndpointId::from_raw(1)));
        assert!(ctx.was_tried(EndpointId::from_raw(2)));
        assert_eq!(ctx.tried_count(), 2);
    });
}

#[test]
fn live_cell_readers_never_see_a_value_older_than_the_generation_they_read() {
    use ha_core::live::{LiveCached, LiveCell};
    loom::model(|| {
        let cell = Arc::new(LiveCell::new(Arc::new(0u64)));
        let mut reader = LiveCached::new(&cell);
        let writer = {
            let cell = cell.clone();
            thread::spawn(move || {
                cell.store(Arc::new(1));
                // A rejected update changes neither the value nor the generation.
                assert!(cell.update(|_| Err::<Arc<u64>, ()>(())).is_err());
                cell.update(|v| Ok::<_, ()>(Arc::new(**v + 1))).unwrap();
            })
        };
        let seen = **reader.get(&cell);
        assert!(seen <= 2, "{seen}");
        // A reader that saw a generation holds at least the value stored with it.
        let generation = cell.generation();
        let now = **reader.get(&cell);
        assert!(now >= generation.min(2), "generation {generation} but value {now}");
        assert!(now >= seen, "went back from {seen} to {now}");
        writer.join().unwrap();
        assert_eq!(cell.generation(), 2);
        assert_eq!(**reader.get(&cell), 2, "the last update was missed");
    });
}

#[test]
fn live_cell_concurrent_updates_are_serialised() {
    use ha_core::live::LiveCell;
    loom::model(|| {
        let cell = Arc::new(LiveCell::new(Arc::new(0u64)));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let cell = cell.clone();
                thread::spawn(move || cell.update(|v| Ok::<_, ()>(Arc::new(**v + 1))).unwrap())
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // Each update started from the other's result: neither was lost.
        assert_eq!((cell.generation(), *cell.load().1), (2, 2));
    });
}
