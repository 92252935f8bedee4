//! Loom models of ha-balance's shared endpoint table.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release -p ha-balance --test loom`.
#![cfg(loom)]

use ha_balance::snapshot::{Cached, SnapshotCell};
use ha_core::sync::Arc;
use loom::thread;

#[test]
fn a_reader_that_sees_a_new_generation_sees_its_value() {
    loom::model(|| {
        let cell = Arc::new(SnapshotCell::new(Arc::new(1u32)));
        let mut reader = Cached::new(&cell);
        let writer = {
            let cell = cell.clone();
            thread::spawn(move || cell.store(Arc::new(2)))
        };
        let generation = cell.generation();
        let seen = **reader.get(&cell);
        // Having seen generation 1 before reading, the value is the new one.
        if generation == 1 {
            assert_eq!(seen, 2);
        }
        assert!(seen == 1 || seen == 2);
        writer.join().unwrap();
        assert_eq!(**reader.get(&cell), 2, "a reader catches up after the store");
    });
}

#[test]
fn concurrent_writers_leave_the_last_value_and_readers_converge() {
    loom::model(|| {
        let cell = Arc::new(SnapshotCell::new(Arc::new(0u32)));
        let writers: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|v| {
                let cell = cell.clone();
                thread::spawn(move || cell.store(Arc::new(v)))
            })
            .collect();
        let mut reader = Cached::new(&cell);
        let early = **reader.get(&cell);
        assert!(early <= 2);
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(cell.generation(), 2);
        let (_, last) = cell.load();
        assert!(*last == 1 || *last == 2);
        assert_eq!(**reader.get(&cell), *last);
    });
}
