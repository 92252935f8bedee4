//! A timer that costs nothing until it is first waited on.
//!
//! Registering a tokio `Sleep` and dropping it costs more than the rest of a
//! retry or hedge layer on a request answered at once. [`LazyTimer`] keeps
//! only the instant it is armed for, and creates its `Sleep` the first time
//! it is polled, which a request answered at once never does.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ha_core::Instant;
use pin_project::pin_project;
use tokio::time::{sleep_until, Sleep};

/// A timer armed for an instant, or disarmed; see the [module docs](self).
#[pin_project]
#[derive(Debug)]
pub(crate) struct LazyTimer {
    #[pin]
    sleep: Option<Sleep>,
    at: Option<Instant>,
}

impl LazyTimer {
    /// A timer armed for `at` (none: disarmed).
    pub(crate) fn new(at: Option<Instant>) -> Self {
        LazyTimer { sleep: None, at }
    }

    /// Arms the timer for `at`, or disarms it (dropping its `Sleep`, so a
    /// registered timer cannot wake the task any more).
    pub(crate) fn arm(self: Pin<&mut Self>, at: Option<Instant>) {
        let mut this = self.project();
        *this.at = at;
        match at {
            Some(at) => {
                if let Some(sleep) = this.sleep.as_pin_mut() {
                    sleep.reset(at);
                }
            }
            None => this.sleep.set(None),
        }
    }

    /// The instant it is armed for.
    pub(crate) fn at(&self) -> Option<Instant> {
        self.at
    }

    /// Ready with the instant it was armed for once that has passed;
    /// pending for ever while disarmed.
    pub(crate) fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Instant> {
        let mut this = self.project();
        let Some(at) = *this.at else { return Poll::Pending };
        if this.sleep.is_none() {
            this.sleep.set(Some(sleep_until(at)));
        }
        match this.sleep.as_pin_mut() {
            Some(sleep) => sleep.poll(cx).map(|()| at),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn fires_at_its_instant_and_not_while_disarmed() {
        let t0 = Instant::now();
        let mut timer = std::pin::pin!(LazyTimer::new(Some(t0 + Duration::from_millis(10))));
        let fired = std::future::poll_fn(|cx| timer.as_mut().poll(cx)).await;
        assert_eq!((fired, Instant::now()), (t0 + Duration::from_millis(10), t0 + Duration::from_millis(10)));

        // Re-armed: the same sleep, reset.
        timer.as_mut().arm(Some(t0 + Duration::from_millis(30)));
        let fired = std::future::poll_fn(|cx| timer.as_mut().poll(cx)).await;
        assert_eq!(fired, t0 + Duration::from_millis(30));

        timer.as_mut().arm(None);
        let waited = tokio::time::timeout(Duration::from_secs(60), std::future::poll_fn(|cx| timer.as_mut().poll(cx)));
        assert!(waited.await.is_err(), "a disarmed timer never fires");
    }
}
