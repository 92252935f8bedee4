//! The simulated world: backends with worker slots and a FIFO queue, the
//! request type, and the [`Stack`] a client layer calls through.
//!
//! Everything runs on one current-thread tokio runtime with a paused clock,
//! so tower's own timers and `Instant::now()` see virtual time. A backend
//! decides an attempt's fate when the attempt arrives: with a FIFO queue and
//! `k` slots, the attempt starts when the earliest slot frees up, so its
//! completion time is known at once and the backend's future is a
//! `sleep_until` of it. A client that gives up (timeout, losing hedge) drops
//! the future, but the backend still does the work, as a real server would.
//!
//! Resolution: tokio's timer wheel fires in 1 ms ticks, so arrivals and
//! completions land on the next whole millisecond of virtual time and
//! latencies are whole milliseconds (as in tower's demo, which reports ms).

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ha_core::rng::FastRng;
use tokio::time::Instant;
use tower::util::UnsyncBoxService;
use tower::{BoxError, Service};

use super::scenario::{Layer, Scenario};

/// One attempt as it travels through a client stack to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimRequest {
    /// Identity of the logical request at this layer (same for all its
    /// attempts, same across contenders).
    pub id: u64,
    /// Attempt number: 0 for the first, bumped by retry and hedge policies.
    pub attempt: u32,
    /// When the caller gives up, ns since start (as a gRPC deadline
    /// travels with the request); backends with `server_deadline` read it.
    pub deadline_ns: Option<u64>,
}

impl SimRequest {
    /// The first attempt of request `id`, due by `deadline_ns`.
    pub fn new(id: u64, deadline_ns: Option<u64>) -> Self {
        SimRequest { id, attempt: 0, deadline_ns }
    }
}

/// A backend's answer when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendError {
    /// Rejected at once (fast failure).
    Rejected,
    /// Failed after doing the work.
    Failed,
    /// A client error (4xx): the request was wrong, the backend is fine.
    Client,
    /// Dropped unserved: the caller's deadline had passed when a worker
    /// took it (nobody waits for this answer).
    Expired,
    /// Rejected at once with a Retry-After (a 503 or 429 carrying one):
    /// do not come back before this long.
    RetryAfter(Duration),
}

impl BackendError {
    /// Whether `e` is a client error, which a client must not retry and
    /// must not hold against the backend.
    pub fn is_client(e: &BoxError) -> bool {
        matches!(e.downcast_ref::<BackendError>(), Some(BackendError::Client))
    }

    /// The Retry-After `e` carries, if any.
    pub fn retry_after(e: &BoxError) -> Option<Duration> {
        match e.downcast_ref::<BackendError>() {
            Some(BackendError::RetryAfter(d)) => Some(*d),
            _ => None,
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Rejected => f.write_str("backend rejected the request"),
            BackendError::Failed => f.write_str("backend failed the request"),
            BackendError::Client => f.write_str("client error (4xx)"),
            BackendError::Expired => f.write_str("dropped: the caller's deadline had passed"),
            BackendError::RetryAfter(d) => write!(f, "backend rejected the request, Retry-After {} ms", d.as_millis()),
        }
    }
}

impl std::error::Error for BackendError {}

/// A call into a layer, or one attempt to a backend, did not finish in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimTimeout {
    /// The layer's `timeout_ms` (the whole call through the client stack).
    Layer,
    /// The layer's `attempt_timeout_ms` (one attempt).
    Attempt,
}

impl fmt::Display for SimTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimTimeout::Layer => f.write_str("call into the next layer timed out"),
            SimTimeout::Attempt => f.write_str("attempt timed out"),
        }
    }
}

impl std::error::Error for SimTimeout {}

/// Mixes values into a 64-bit key (splitmix64 finaliser), so draws are a pure
/// function of (seed, layer, request, attempt, backend).
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(0x6a09_e667_f3bc_c909);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Run-time state of one backend.
#[derive(Debug)]
pub struct BackendRuntime {
    /// When each busy slot frees up (ns since start); `k` entries when slots
    /// are limited.
    free_at: RefCell<BinaryHeap<Reverse<u64>>>,
    /// Attempts received.
    pub attempts: Cell<u64>,
    /// When each attempt arrived (ns since start), in order.
    pub arrivals: RefCell<Vec<u64>>,
    /// When each successful answer was due (ns since start).
    pub successes_at: RefCell<Vec<u64>>,
    /// Start times of attempts admitted but waiting for a slot (kept only
    /// under admission control, `max_queue`).
    waiting: RefCell<Vec<u64>>,
    /// When each failed attempt's answer was due (ns since start), in the
    /// order the attempts arrived: rejections and failures after the work.
    pub failures_at: RefCell<Vec<u64>>,
    /// Attempts dropped unserved because their caller's deadline had passed.
    pub expired: Cell<u64>,
    /// End times of the work in service (kept only with `slowdown` and no
    /// slot limit, to count concurrency).
    in_service: RefCell<Vec<u64>>,
}

impl BackendRuntime {
    /// Failed answers due at or before `at_ns`.
    pub fn failures_by(&self, at_ns: u64) -> u64 {
        self.failures_at.borrow().iter().filter(|&&t| t <= at_ns).count() as u64
    }
}

/// A balancer took a backend out of selection (reported by contenders with
/// outlier ejection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// When, ns since start.
    pub at_ns: u64,
    /// The layer of the backend.
    pub layer: usize,
    /// The backend's index in its layer.
    pub backend: usize,
}

/// One layer at run time.
#[derive(Debug)]
pub struct LayerRuntime {
    /// The layer's model.
    pub model: Layer,
    /// Its backends' state.
    pub backends: Vec<BackendRuntime>,
}

/// The whole simulated world of one run.
#[derive(Debug)]
pub struct World {
    /// Virtual time zero.
    pub start: Instant,
    /// The run's seed.
    pub seed: u64,
    /// Layers, outermost first.
    pub layers: Vec<LayerRuntime>,
    /// Every ejection contenders reported, in order. Behind a mutex because
    /// event observers must be `Send + Sync`; only ejections touch it.
    pub ejections: Arc<Mutex<Vec<Ejection>>>,
}

impl World {
    /// A fresh world for `scenario`; must be called inside the runtime.
    pub fn new(scenario: &Scenario, seed: u64) -> World {
        let layers = scenario
            .layers
            .iter()
            .map(|l| LayerRuntime {
                model: l.clone(),
                backends: l
                    .backends
                    .iter()
                    .map(|b| BackendRuntime {
                        free_at: RefCell::new((0..b.slots.unwrap_or(0)).map(|_| Reverse(0)).collect::<BinaryHeap<_>>()),
                        attempts: Cell::new(0),
                        arrivals: RefCell::new(Vec::new()),
                        successes_at: RefCell::new(Vec::new()),
                        waiting: RefCell::new(Vec::new()),
                        failures_at: RefCell::new(Vec::new()),
                        expired: Cell::new(0),
                        in_service: RefCell::new(Vec::new()),
                    })
                    .collect(),
            })
            .collect();
        World { start: Instant::now(), seed, layers, ejections: Arc::new(Mutex::new(Vec::new())) }
    }

    /// The backends of `layer` discovery lists now, by index (`None` when
    /// the layer's set never changes: all of them).
    pub fn listed(&self, layer: usize) -> Option<Vec<usize>> {
        let model = &self.layers[layer].model;
        if !model.dynamic() {
            return None;
        }
        let now = self.now_ns();
        Some((0..model.backends.len()).filter(|&i| model.backends[i].listed_at(now)).collect())
    }

    /// Virtual ns since start.
    pub fn now_ns(&self) -> u64 {
        Instant::now().saturating_duration_since(self.start).as_nanos() as u64
    }

    /// The oracle's cost of sending an attempt to backend `b` of `layer` now:
    /// expected time until a successful answer, from the true queue (when the
    /// next slot frees up) and the true current service-time mean and error
    /// rates. Infinite for a backend that does not answer.
    pub fn expected_cost_ns(&self, layer: usize, b: usize, now_ns: u64) -> f64 {
        let l = &self.layers[layer];
        let model = &l.model.backends[b];
        let eff = model.state_at(now_ns);
        if eff.blackhole || eff.refuse {
            return f64::INFINITY;
        }
        let wait = match model.slots {
            Some(_) => l.backends[b].free_at.borrow().peek().map_or(0, |r| r.0.saturating_sub(now_ns)),
            None => 0,
        };
        let p_ok = (1.0 - eff.fail_fast) * (1.0 - eff.fail_after);
        let try_ns =
            wait as f64 + eff.fail_fast * model.fail_fast_ns as f64 + (1.0 - eff.fail_fast) * eff.service.mean_ns();
        // Expected time over a geometric number of tries until one succeeds.
        if p_ok <= 0.0 {
            f64::INFINITY
        } else {
            try_ns / p_ok
        }
    }
}

/// A simulated backend as a tower service (always ready: its queue is
/// inside).
#[derive(Clone)]
pub struct SimBackend {
    world: Rc<World>,
    layer: usize,
    index: usize,
    downstream: Option<(Stack, Option<Duration>)>,
}

impl fmt::Debug for SimBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimBackend").field("layer", &self.layer).field("index", &self.index).finish()
    }
}

impl SimBackend {
    /// Backend `index` of `layer`; with `downstream`, it calls the next
    /// layer through that stack (with that timeout) after its own work.
    pub fn new(world: Rc<World>, layer: usize, index: usize, downstream: Option<(Stack, Option<Duration>)>) -> Self {
        SimBackend { world, layer, index, downstream }
    }

    /// Its index in the layer.
    pub fn index(&self) -> usize {
        self.index
    }
}

type SimFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>>>>;

impl Service<SimRequest> for SimBackend {
    type Response = ();
    type Error = BoxError;
    type Future = SimFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: SimRequest) -> SimFuture {
        let world = &self.world;
        let now_ns = world.now_ns();
        let rt = &world.layers[self.layer].backends[self.index];
        rt.attempts.set(rt.attempts.get() + 1);
        rt.arrivals.borrow_mut().push(now_ns);
        let model = &world.layers[self.layer].model.backends[self.index];
        let eff = model.state_at(now_ns);
        let key = mix(mix(mix(mix(world.seed, self.layer as u64), req.id), u64::from(req.attempt)), self.index as u64);
        let mut rng = FastRng::new(key);
        let u_fast = rng.unit_f64();
        if eff.refuse {
            // Connection refused: the answer is immediate and no worker
            // sees the request.
            rt.failures_at.borrow_mut().push(now_ns);
            return Box::pin(async { Err(BackendError::Rejected.into()) });
        }
        if eff.blackhole {
            let layer = &world.layers[self.layer].model;
            return match layer.attempt_timeout_ns {
                None => Box::pin(std::future::pending()),
                Some(t) => Box::pin(async move {
                    tokio::time::sleep(Duration::from_nanos(t)).await;
                    Err(SimTimeout::Attempt.into())
                }),
            };
        }
        // A fast failure is a rejection: cheap, but a worker still computes
        // it, so under a queue it waits its turn like any request.
        let rejected = u_fast < eff.fail_fast;
        let (mut service, fails) = if rejected {
            (model.fail_fast_ns, true)
        } else {
            let service = eff.service.sample_ns(&mut rng);
            (service, rng.unit_f64() < eff.fail_after)
        };
        // A client error is the request's fault, not the backend's: drawn
        // per request (every attempt, on every backend, fails alike), from
        // its own generator so scenarios without client errors keep their
        // draws.
        let client = !rejected
            && model.fail_client > 0.0
            && FastRng::new(mix(mix(world.seed, self.layer as u64), req.id ^ 0x3478_7878)).unit_f64()
                < model.fail_client;
        if client {
            service = model.fail_fast_ns;
        }
        let fails = fails || client;
        if let Some(limit) = model.max_queue {
            // Admission control: attempts admitted but not yet started are
            // the queue; when it is full, refuse at once without a slot.
            let mut waiting = rt.waiting.borrow_mut();
            waiting.retain(|&start| start > now_ns);
            if waiting.len() >= limit as usize {
                rt.failures_at.borrow_mut().push(now_ns);
                let e = rejection(model, key);
                return Box::pin(async move { Err(e.into()) });
            }
        }
        let end = match model.slots {
            Some(_) => {
                let mut heap = rt.free_at.borrow_mut();
                let start = heap.peek().expect("a limited backend has at least one slot").0.max(now_ns);
                if model.server_deadline && req.deadline_ns.is_some_and(|d| start >= d) {
                    // The worker finds the caller gone and takes the next
                    // request at once: the slot is not held.
                    drop(heap);
                    return expire(rt, world.start, start);
                }
                if model.slowdown > 0.0 {
                    let others = heap.iter().filter(|r| r.0 > start).count();
                    service = (service as f64 * (1.0 + model.slowdown * others as f64)) as u64;
                }
                let end = model.finish_ns(start, service);
                heap.peek_mut().expect("checked above").0 = end;
                if model.max_queue.is_some() && start > now_ns {
                    rt.waiting.borrow_mut().push(start);
                }
                end
            }
            None => {
                if model.slowdown > 0.0 {
                    let mut ends = rt.in_service.borrow_mut();
                    ends.retain(|&e| e > now_ns);
                    service = (service as f64 * (1.0 + model.slowdown * ends.len() as f64)) as u64;
                    let end = model.finish_ns(now_ns, service);
                    ends.push(end);
                    end
                } else {
                    model.finish_ns(now_ns, service)
                }
            }
        };
        if fails {
            rt.failures_at.borrow_mut().push(end);
        } else if self.downstream.is_none() {
            rt.successes_at.borrow_mut().push(end);
        }
        let done = world.start + Duration::from_nanos(end);
        let downstream = self.downstream.clone();
        let child_deadline = match &downstream {
            Some((_, Some(t))) => Some(end + t.as_nanos() as u64),
            _ => None,
        };
        let child = SimRequest::new(
            mix(mix(req.id, u64::from(req.attempt)), self.index as u64),
            [req.deadline_ns, child_deadline].into_iter().flatten().min(),
        );
        let rejection = if rejected { Some(rejection(model, key)) } else { None };
        let work = async move {
            tokio::time::sleep_until(done).await;
            if let Some(e) = rejection {
                return Err(e.into());
            }
            if client {
                return Err(BackendError::Client.into());
            }
            if fails {
                return Err(BackendError::Failed.into());
            }
            match downstream {
                None => Ok(()),
                Some((stack, None)) => stack.dispatch(child).await,
                Some((stack, Some(t))) => match tokio::time::timeout(t, stack.dispatch(child)).await {
                    Ok(r) => r,
                    Err(_) => Err(SimTimeout::Layer.into()),
                },
            }
        };
        let layer = &world.layers[self.layer].model;
        let work: SimFuture = if layer.finish_abandoned && self.downstream.is_some() {
            // A detached task keeps going when the caller drops its future.
            let task = tokio::task::spawn_local(work);
            Box::pin(async move { task.await.unwrap_or_else(|e| Err(e.into())) })
        } else {
            Box::pin(work)
        };
        match layer.attempt_timeout_ns {
            None => work,
            Some(t) => Box::pin(async move {
                tokio::time::timeout(Duration::from_nanos(t), work)
                    .await
                    .unwrap_or_else(|_| Err(SimTimeout::Attempt.into()))
            }),
        }
    }
}

/// The error of a rejection by `model` (Retry-After on a share of them,
/// drawn from its own generator so that backends without one keep their
/// draws).
fn rejection(model: &super::scenario::Backend, key: u64) -> BackendError {
    match model.retry_after {
        Some((ns, share)) if FastRng::new(mix(key, 0x7265_7472_7961)).unit_f64() < share => {
            BackendError::RetryAfter(Duration::from_nanos(ns))
        }
        _ => BackendError::Rejected,
    }
}

/// An attempt dropped unserved at `at_ns`: its (unread) answer is an error.
fn expire(rt: &BackendRuntime, start: Instant, at_ns: u64) -> SimFuture {
    rt.expired.set(rt.expired.get() + 1);
    let at = start + Duration::from_nanos(at_ns);
    Box::pin(async move {
        tokio::time::sleep_until(at).await;
        Err(BackendError::Expired.into())
    })
}

/// A client stack (balancer, retry, hedge, ...) shared by every caller of a
/// layer. Cloning shares it, like tower's `Buffer` would, but without a
/// task: the simulation is single-threaded, and [`Stack::dispatch`] calls
/// `poll_ready` and `call` in the same poll, so no caller can take another's
/// readiness.
#[derive(Clone)]
pub struct Stack(Rc<RefCell<UnsyncBoxService<SimRequest, (), BoxError>>>);

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Stack")
    }
}

impl Stack {
    /// Wraps a service.
    pub fn new<S>(service: S) -> Stack
    where
        S: Service<SimRequest, Response = ()> + 'static,
        S::Error: Into<BoxError>,
        S::Future: 'static,
    {
        use tower::ServiceExt;
        Stack(Rc::new(RefCell::new(UnsyncBoxService::new(service.map_err(Into::into)))))
    }

    /// Sends one request through the stack: waits for readiness, then calls.
    pub fn dispatch(&self, req: SimRequest) -> Dispatch {
        Dispatch { stack: self.clone(), req: Some(req), future: None }
    }
}

impl Service<SimRequest> for Stack {
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.borrow_mut().poll_ready(cx)
    }

    fn call(&mut self, req: SimRequest) -> Self::Future {
        self.0.borrow_mut().call(req)
    }
}

/// The future of [`Stack::dispatch`].
pub struct Dispatch {
    stack: Stack,
    req: Option<SimRequest>,
    future: Option<SimFuture>,
}

impl Future for Dispatch {
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.future.is_none() {
            let mut inner = this.stack.0.borrow_mut();
            match inner.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let req = this.req.take().expect("dispatch polled after completion");
                    this.future = Some(inner.call(req));
                }
            }
        }
        this.future.as_mut().expect("set above").as_mut().poll(cx)
    }
}
