//! Loom models of the retry budget: concurrent deposits, withdrawals and
//! expiry never lend more than the budget holds, and lose no accounting; a
//! retry's body racing the attempt before it is never lost nor stuck.
#![cfg(loom)]

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};

use ha_core::Instant;
use ha_retry::body::ReplayBody;
use ha_retry::config::BudgetConfig;
use ha_retry::RetryBudget;
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::Arc;
use loom::thread;

fn budget(ratio: f64, min_per_second: u32, t0: Instant) -> RetryBudget {
    let cfg = BudgetConfig { ratio, min_per_second, ttl: Duration::from_secs(1), buckets: 2 };
    RetryBudget::builder(cfg).start(t0).build().unwrap()
}

#[test]
fn concurrent_withdrawals_never_overdraw_the_reserve() {
    loom::model(|| {
        let t0 = Instant::now();
        // A reserve of exactly one retry.
        let b = budget(0.0, 1, t0);
        let granted = Arc::new(AtomicU32::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (b, granted) = (b.clone(), granted.clone());
                thread::spawn(move || {
                    if b.withdraw(t0) {
                        granted.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(granted.load(Ordering::SeqCst), 1);
        assert_eq!(b.raw_balance(), 0);
    });
}

#[test]
fn deposits_racing_withdrawals_lend_only_what_was_deposited() {
    loom::model(|| {
        let t0 = Instant::now();
        let b = budget(1.0, 0, t0);
        let depositor = {
            let b = b.clone();
            thread::spawn(move || b.deposit(t0))
        };
        let withdrawer = {
            let b = b.clone();
            thread::spawn(move || u32::from(b.withdraw(t0)) + u32::from(b.withdraw(t0)))
        };
        let other = {
            let b = b.clone();
            thread::spawn(move || u32::from(b.withdraw(t0)))
        };
        depositor.join().unwrap();
        let granted = withdrawer.join().unwrap() + other.join().unwrap();
        assert!(granted <= 1, "lent {granted} retries for one deposit");
        assert_eq!(b.raw_balance(), 1000 * (1 - i64::from(granted)));
    });
}

#[test]
fn expiry_racing_late_and_current_writers_keeps_the_books() {
    loom::model(|| {
        let t0 = Instant::now();
        let b = budget(1.0, 0, t0);
        b.deposit(t0);
        // One thread lives a window later (its call expires t0's bucket); the other is a late caller of t0.
        let later = {
            let b = b.clone();
            thread::spawn(move || b.withdraw(t0 + Duration::from_secs(1)))
        };
        let late = {
            let b = b.clone();
            thread::spawn(move || b.deposit(t0))
        };
        let granted = later.join().unwrap();
        late.join().unwrap();
        // The withdrawal is paid by the late deposit (credited to the live bucket it landed in) or refused.
        let _ = granted;
        assert!(b.stats(t0 + Duration::from_secs(1)).allowed <= 1);
        // Once everything has expired, the balance is exactly the reserve: nothing was expired twice or lost.
        assert_eq!(b.available(t0 + Duration::from_secs(10)), 0.0);
        assert_eq!(b.raw_balance(), b.raw_reserve());
    });
}

#[test]
fn reconfiguring_racing_deposits_and_withdrawals_keeps_the_books() {
    loom::model(|| {
        let t0 = Instant::now();
        // A reserve of one retry; every request pays for one more.
        let b = budget(1.0, 1, t0);
        let reconfigure = {
            let b = b.clone();
            thread::spawn(move || {
                let cfg = BudgetConfig { ratio: 0.0, min_per_second: 0, ttl: Duration::from_secs(1), buckets: 2 };
                b.reconfigure(cfg).unwrap();
            })
        };
        let depositor = {
            let b = b.clone();
            thread::spawn(move || b.deposit(t0))
        };
        let withdrawer = {
            let b = b.clone();
            thread::spawn(move || i64::from(b.withdraw(t0)))
        };
        reconfigure.join().unwrap();
        depositor.join().unwrap();
        let granted = withdrawer.join().unwrap();
        assert_eq!(b.raw_reserve(), 0);
        // The deposit was made at either ratio; the reserve left whole; the withdrawal was paid or refused.
        let balance = b.raw_balance();
        assert!([0, 1000].iter().any(|d| balance == d - 1000 * granted), "balance {balance}, granted {granted}");
        // Later deposits use the new ratio.
        b.deposit(t0);
        assert_eq!(b.raw_balance(), balance);
        // Once everything expired, the balance is exactly the new reserve.
        assert_eq!(b.available(t0 + Duration::from_secs(10)), 0.0);
        assert_eq!(b.raw_balance(), 0);
    });
}

/// A body of two chunks, always ready.
struct TwoChunks(Vec<Bytes>);

impl TwoChunks {
    fn new() -> Self {
        TwoChunks(vec![Bytes::from_static(b"cd"), Bytes::from_static(b"ab")])
    }
}

impl Body for TwoChunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// Reads every frame of `body` on this loom thread, parking while it waits.
fn read_all(mut body: ReplayBody<TwoChunks>) -> Vec<u8> {
    let mut all = Vec::new();
    loom::future::block_on(async {
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            all.extend_from_slice(frame.expect("the copy is sent").data_ref().expect("data"));
        }
    });
    all
}

/// The first attempt, having sent one of the body's two chunks, and the
/// retry's copy of the request body.
fn half_sent() -> (ReplayBody<TwoChunks>, ReplayBody<TwoChunks>) {
    let mut first = ReplayBody::new(TwoChunks::new(), 1024);
    let retry = first.clone();
    send_one(&mut first);
    (first, retry)
}

/// Sends the next chunk of `body`.
fn send_one(body: &mut ReplayBody<TwoChunks>) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(matches!(Pin::new(body).poll_frame(&mut cx), Poll::Ready(Some(Ok(_)))));
}

#[test]
fn a_retry_racing_the_last_attempt_letting_go_of_its_body_sends_it_whole() {
    loom::model(|| {
        let (first, retry) = half_sent();
        // The first attempt's connection drops the half-sent body on
        // another thread while the retry polls for it: never lost, never stuck.
        let transport = thread::spawn(move || drop(first));
        assert_eq!(read_all(retry), b"abcd");
        transport.join().unwrap();
    });
}

#[test]
fn a_retry_racing_the_last_attempt_finishing_its_body_sends_it_whole() {
    loom::model(|| {
        let (mut first, retry) = half_sent();
        let transport = thread::spawn(move || {
            // Reads the rest, completing the body, and keeps it a while.
            send_one(&mut first);
            first
        });
        assert_eq!(read_all(retry), b"abcd");
        drop(transport.join().unwrap());
    });
}
