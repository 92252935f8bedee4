//! Test backends: services whose latency, failures and readiness a test
//! controls, a switch usable as a health gate, and an event recorder.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use ha_balance::HealthGate;
use ha_core::{Event, Events, Instant, WithAttempt};
use tower::{BoxError, Service};

pub type Req = WithAttempt<u64>;

#[derive(Default)]
pub struct BackendState {
    pub delay_ms: AtomicU64,
    pub fail: AtomicBool,
    pub hits: AtomicU64,
    pub not_ready: AtomicBool,
    pub waker: Mutex<Option<Waker>>,
}

#[derive(Clone)]
pub struct Backend {
    pub name: &'static str,
    pub st: Arc<BackendState>,
}

pub fn backend(name: &'static str) -> Backend {
    Backend { name, st: Arc::new(BackendState::default()) }
}

impl Backend {
    pub fn delay(self, ms: u64) -> Self {
        self.st.delay_ms.store(ms, Ordering::Relaxed);
        self
    }
    pub fn set_fail(&self, fail: bool) {
        self.st.fail.store(fail, Ordering::Relaxed);
    }
    pub fn hits(&self) -> u64 {
        self.st.hits.load(Ordering::Relaxed)
    }
    pub fn set_ready(&self, ready: bool) {
        self.st.not_ready.store(!ready, Ordering::Relaxed);
        if ready {
            if let Some(w) = self.st.waker.lock().unwrap().take() {
                w.wake();
            }
        }
    }
}

impl Service<Req> for Backend {
    type Response = &'static str;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<&'static str, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.st.not_ready.load(Ordering::Relaxed) {
            *self.st.waker.lock().unwrap() = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Req) -> Self::Future {
        self.st.hits.fetch_add(1, Ordering::Relaxed);
        let delay = self.st.delay_ms.load(Ordering::Relaxed);
        let fail = self.st.fail.load(Ordering::Relaxed);
        let name = self.name;
        Box::pin(async move {
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if fail {
                Err(format!("{name} failed").into())
            } else {
                Ok(name)
            }
        })
    }
}

/// A health gate a test opens and closes.
#[derive(Clone, Default)]
pub struct Switch(pub Arc<AtomicBool>);

impl Switch {
    pub fn set_down(&self, down: bool) {
        self.0.store(down, Ordering::Relaxed);
    }
}

impl HealthGate for Switch {
    fn admits(&self, _now: Instant) -> bool {
        !self.0.load(Ordering::Relaxed)
    }
}

pub type Recorded = Arc<Mutex<Vec<Event>>>;

pub fn recorder() -> (Events, Arc<Mutex<Vec<Event>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    (Events::new().with_observer(move |e: &Event| sink.lock().unwrap().push(e.clone())), seen)
}

pub fn req(key: u64) -> Req {
    WithAttempt::new(key)
}
