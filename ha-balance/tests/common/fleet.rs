//! A simulated fleet on paused virtual time: servers with a service time,
//! random failures, admission control (a bounded number of requests served
//! at once, the rest refused at once) and an instant "connection refused"
//! mode; an open-loop driver that sends a given number of requests per
//! millisecond; and an event recorder that stamps each event with the
//! virtual time.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ha_balance::{Balance, BalanceConfig, Endpoint};
use ha_core::rng::{mix64, GOLDEN_GAMMA};
use ha_core::{Event, Events, HasAttemptContext, WithAttempt};
use tower::{BoxError, Service};

pub type Req = WithAttempt<u64>;
pub type Fleet = Balance<&'static str, Server, Req>;

#[derive(Default)]
pub struct ServerState {
    /// Requests served at once; more are refused at once. 0: unbounded.
    pub capacity: AtomicU64,
    pub in_flight: AtomicU64,
    pub delay_ms: AtomicU64,
    /// Failures per thousand requests served, at random.
    pub fail_permille: AtomicU64,
    /// Refuses every request at once (a crashed server: connection refused).
    pub refuse: AtomicBool,
    /// Worker slots: requests beyond them wait in an unbounded queue, so
    /// latency grows with load past capacity. `None`: as many as come.
    pub queue: Option<tokio::sync::Semaphore>,
    pub hits: AtomicU64,
    pub ok: AtomicU64,
    rng: AtomicU64,
}

#[derive(Clone)]
pub struct Server {
    pub name: &'static str,
    pub st: Arc<ServerState>,
}

impl Server {
    pub fn new(name: &'static str, delay_ms: u64) -> Self {
        let st = ServerState::default();
        st.delay_ms.store(delay_ms, Ordering::Relaxed);
        st.rng.store(name.bytes().fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))), Ordering::Relaxed);
        Server { name, st: Arc::new(st) }
    }
    pub fn capacity(self, n: u64) -> Self {
        self.st.capacity.store(n, Ordering::Relaxed);
        self
    }
    /// Serves `slots` requests at once and queues the rest.
    pub fn slots(mut self, slots: usize) -> Self {
        Arc::get_mut(&mut self.st).expect("configured before it is shared").queue =
            Some(tokio::sync::Semaphore::new(slots));
        self
    }
    pub fn set_fail_permille(&self, p: u64) {
        self.st.fail_permille.store(p, Ordering::Relaxed);
    }
    pub fn set_refuse(&self, refuse: bool) {
        self.st.refuse.store(refuse, Ordering::Relaxed);
    }
    pub fn hits(&self) -> u64 {
        self.st.hits.load(Ordering::Relaxed)
    }
    pub fn ok(&self) -> u64 {
        self.st.ok.load(Ordering::Relaxed)
    }
    fn draw_permille(&self) -> u64 {
        // splitmix64 over a per-server counter: reproducible, no shared lock.
        let z = self.st.rng.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed).wrapping_add(GOLDEN_GAMMA);
        mix64(z) % 1000
    }
}

struct Slot(Arc<ServerState>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Service<Req> for Server {
    type Response = &'static str;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<&'static str, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Req) -> Self::Future {
        let st = self.st.clone();
        st.hits.fetch_add(1, Ordering::Relaxed);
        let name = self.name;
        if st.refuse.load(Ordering::Relaxed) {
            return Box::pin(
                async move { Err::<&'static str, BoxError>(format!("{name}: connection refused").into()) },
            );
        }
        let cap = st.capacity.load(Ordering::Relaxed);
        if cap != 0 && st.in_flight.load(Ordering::Relaxed) >= cap {
            return Box::pin(async move { Err::<&'static str, BoxError>(format!("{name}: overloaded").into()) });
        }
        st.in_flight.fetch_add(1, Ordering::Relaxed);
        let fail = self.draw_permille() < st.fail_permille.load(Ordering::Relaxed);
        let delay = st.delay_ms.load(Ordering::Relaxed);
        Box::pin(async move {
            let _slot = Slot(st.clone());
            let _worker = match &st.queue {
                Some(queue) => Some(queue.acquire().await.expect("never closed")),
                None => None,
            };
            tokio::time::sleep(Duration::from_millis(delay)).await;
            if fail {
                Err(format!("{name} failed").into())
            } else {
                st.ok.fetch_add(1, Ordering::Relaxed);
                Ok(name)
            }
        })
    }
}

/// Events stamped with the virtual time since the recorder was made.
pub type Timeline = Arc<Mutex<Vec<(Duration, Event)>>>;

pub fn timeline() -> (Events, Timeline) {
    let seen: Timeline = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let start = tokio::time::Instant::now();
    (Events::new().with_observer(move |e: &Event| sink.lock().unwrap().push((start.elapsed(), e.clone()))), seen)
}

pub fn ejections(t: &Timeline) -> Vec<(Duration, String, ha_core::event::EjectionReason)> {
    t.lock()
        .unwrap()
        .iter()
        .filter_map(|(at, e)| match e {
            Event::EndpointEjected { endpoint, reason, .. } => Some((*at, endpoint.to_string(), *reason)),
            _ => None,
        })
        .collect()
}

pub fn restorations(t: &Timeline, name: &str) -> Vec<Duration> {
    t.lock()
        .unwrap()
        .iter()
        .filter_map(|(at, e)| match e {
            Event::EndpointRestored { endpoint } if &**endpoint == name => Some(*at),
            _ => None,
        })
        .collect()
}

pub fn fleet(servers: &[Server], cfg: BalanceConfig, events: Events) -> Fleet {
    Balance::builder()
        .config(cfg)
        .events(events)
        .seed(5)
        .build_with(servers.iter().map(|s| (s.name, Endpoint::new(s.clone()))))
        .unwrap()
}

/// Requests answered well and sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub ok: u64,
    pub sent: u64,
}

impl Tally {
    pub fn success(&self) -> f64 {
        self.ok as f64 / self.sent.max(1) as f64
    }
}

/// Sends `per_ms` requests per millisecond (open loop: arrivals do not wait
/// for answers) for `ms` milliseconds, calling `tick(ms)` before each
/// millisecond's arrivals, then waits a second for the answers.
pub async fn drive(b: &mut Fleet, ms: u64, per_ms: f64, tick: impl FnMut(u64)) -> Tally {
    drive_requests(b, ms, per_ms, tick, WithAttempt::new).await
}

/// [`drive`] with requests as a retry layer sends its first attempts: each
/// carries an attempt context.
pub async fn drive_retried(b: &mut Fleet, ms: u64, per_ms: f64) -> Tally {
    let first = |n: u64| {
        let mut r = WithAttempt::new(n);
        r.set_attempt_context(ha_core::AttemptContext::new());
        r
    };
    drive_requests(b, ms, per_ms, |_| {}, first).await
}

async fn drive_requests(
    b: &mut Fleet,
    ms: u64,
    per_ms: f64,
    mut tick: impl FnMut(u64),
    request: impl Fn(u64) -> Req,
) -> Tally {
    let ok = Arc::new(AtomicU64::new(0));
    let mut sent = 0u64;
    let mut owed = 0.0;
    for t in 0..ms {
        tick(t);
        owed += per_ms;
        while owed >= 1.0 {
            owed -= 1.0;
            sent += 1;
            let fut = b.call(request(sent));
            let ok = ok.clone();
            tokio::spawn(async move {
                if fut.await.is_ok() {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Tally { ok: ok.load(Ordering::Relaxed), sent }
}

pub fn names(prefix: &str, n: usize) -> Vec<&'static str> {
    (0..n).map(|i| &*Box::leak(format!("{prefix}{i}").into_boxed_str())).collect()
}
