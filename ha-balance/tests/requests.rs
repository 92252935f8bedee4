//! What one request sees: tried-endpoint exclusion, removal while in flight
//! (tower#856), discovery, active health checks, circuit breakers, retries
//! on top, and the service contract (Clone, Send, 'static).

mod common;
#[path = "common/gate.rs"]
mod gate;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{backend, recorder, req, Backend, Req};
use gate::Advisory;
use ha_balance::config::OutlierConfig;
use ha_balance::{Balance, BalanceConfig, Endpoint, Picker};
use ha_core::{AttemptContext, EndpointId, Event, HasAttemptContext};
use tower::discover::Change;
use tower::{service_fn, BoxError, Service, ServiceExt};

type B = Balance<&'static str, Backend, Req>;

fn build(picker: Picker, backends: &[Backend]) -> B {
    let cfg = BalanceConfig { picker, outlier: OutlierConfig::disabled(), ..BalanceConfig::default() };
    Balance::builder()
        .config(cfg)
        .seed(5)
        .build_with(backends.iter().map(|b| (b.name, Endpoint::new(b.clone()))))
        .unwrap()
}

#[tokio::test]
async fn balance_is_clone_send_sync_static() {
    fn assert_service<T: Clone + Send + Sync + 'static>() {}
    assert_service::<B>();
    fn assert_future<F: Send + 'static>(_: &F) {}
    let mut b = build(Picker::default(), &[]);
    let fut = b.call(req(0));
    assert_future(&fut);
}

#[tokio::test(start_paused = true)]
async fn a_retry_goes_to_an_endpoint_it_has_not_tried_while_one_is_as_cheap() {
    let backends: Vec<Backend> = ["a", "b", "c"].into_iter().map(backend).collect();
    for picker in [Picker::P2cPeakEwma, Picker::P2cPending, Picker::RoundRobin, Picker::Random] {
        let mut b = build(picker, &backends);
        for _ in 0..50 {
            let ctx = AttemptContext::new();
            let mut seen = Vec::new();
            for attempt in 0..3 {
                let mut r = req(0);
                r.set_attempt_context(if attempt == 0 { ctx.clone() } else { ctx.next_attempt() });
                let who = b.ready().await.unwrap().call(r).await.unwrap();
                assert!(!seen.contains(&who), "{picker:?}: {who} twice in {seen:?}");
                seen.push(who);
                // What a retry layer above reads to send its next attempt at once.
                assert_eq!(ctx.untried(), 2 - attempt, "{picker:?}: endpoints left untried");
            }
            // Each pick is recorded in the shared history.
            let ids: Vec<EndpointId> = seen.iter().map(EndpointId::from_key).collect();
            assert_eq!(ctx.tried().collect::<Vec<_>>(), ids);
            // With all tried, it goes to one of them rather than fail.
            let mut r = req(0);
            r.set_attempt_context(ctx.next_attempt());
            assert!(b.ready().await.unwrap().call(r).await.is_ok());
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_goes_back_to_the_endpoint_it_tried_when_the_others_queue() {
    // One fast endpoint and two that queue: a retry of a request `a`
    // failed once would otherwise join the queues of `b` and `c`, the
    // retries of a busy endpoint's scattered failures piling onto them. A
    // hedge never goes back: its first attempt may still be running there.
    let a = backend("a").delay(5);
    let (b_, c) = (backend("b").delay(400), backend("c").delay(400));
    let mut b = build(Picker::P2cPeakEwma, &[a.clone(), b_.clone(), c.clone()]);
    // Each endpoint's latency learned, `b` and `c` holding requests: sent
    // as hedges, which go where they are told.
    for k in 0..3 {
        let ctx = AttemptContext::new();
        for tried in ["a", "b", "c"].iter().filter(|&&n| n != ["a", "b", "c"][k]) {
            ctx.record_tried(EndpointId::from_key(tried));
        }
        let mut r = req(0);
        r.set_attempt_context(ctx.next_hedge());
        b.ready().await.unwrap().call(r).await.unwrap();
    }
    let mut queued = Vec::new();
    for _ in 0..4 {
        for busy in ["b", "c"] {
            let ctx = AttemptContext::new();
            ctx.record_tried(EndpointId::from_key(if busy == "b" { &"c" } else { &"b" }));
            ctx.record_tried(EndpointId::from_key(&"a"));
            let mut r = req(0);
            r.set_attempt_context(ctx.next_hedge());
            queued.push(tokio::spawn(b.ready().await.unwrap().call(r)));
        }
    }
    tokio::task::yield_now().await;
    for hedging in [false, true] {
        a.set_fail(true);
        let failed = AttemptContext::new();
        let mut r = req(1);
        r.set_attempt_context(failed.clone());
        // The first attempt lands on `a` (the cheapest by far) and fails.
        assert!(b.ready().await.unwrap().call(r).await.is_err());
        assert_eq!(failed.tried().collect::<Vec<_>>(), [EndpointId::from_key(&"a")]);
        a.set_fail(false);
        let mut again = req(1);
        again.set_attempt_context(if hedging { failed.next_hedge() } else { failed.next_attempt() });
        let went = b.ready().await.unwrap().call(again).await.unwrap();
        if hedging {
            assert!(went == "b" || went == "c", "the hedge went back to {went}");
        } else {
            assert_eq!(went, "a", "the retry joined a queue");
            // Back once only: had it failed there again, the next attempt
            // goes to an endpoint it has not tried, queue or no queue.
            let mut third = req(1);
            third.set_attempt_context(failed.next_attempt().next_attempt());
            let went = b.ready().await.unwrap().call(third).await.unwrap();
            assert!(went == "b" || went == "c", "the third attempt went back to {went} again");
        }
    }
    for q in queued {
        q.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn removing_an_endpoint_in_flight_never_sends_elsewhere() {
    // tower#856: the request goes to the endpoint picked, even when that
    // endpoint is removed between the pick and the call.
    let a = backend("a").delay(100);
    let other = backend("other");
    let mut b = build(Picker::RoundRobin, std::slice::from_ref(&a));
    // Picked and waiting for a's readiness.
    a.set_ready(false);
    let waiting = tokio::spawn(b.ready().await.unwrap().call(req(1)));
    // Picked and in flight.
    tokio::task::yield_now().await;
    a.set_ready(true);
    a.set_ready(false);
    let endpoints = b.endpoints();
    endpoints.insert("other", Endpoint::new(other.clone()));
    endpoints.remove("a");
    assert_eq!(endpoints.len(), 1);
    tokio::task::yield_now().await;
    a.set_ready(true);
    assert_eq!(waiting.await.unwrap().unwrap(), "a");
    assert_eq!((a.hits(), other.hits()), (1, 0));

    let slow = backend("slow").delay(1000);
    let mut b = build(Picker::RoundRobin, std::slice::from_ref(&slow));
    let in_flight = tokio::spawn(b.ready().await.unwrap().call(req(2)));
    tokio::task::yield_now().await;
    b.endpoints().reset([("other", Endpoint::new(other.clone()))]);
    assert_eq!(in_flight.await.unwrap().unwrap(), "slow");
    assert_eq!(b.ready().await.unwrap().call(req(3)).await.unwrap(), "other");
    assert_eq!(b.in_flight(), 0);
}

/// A gate that admits until the balancer reports the endpoint deferred.
#[derive(Clone, Default)]
struct Optimistic(Arc<AtomicBool>);

impl ha_balance::HealthGate for Optimistic {
    fn admits(&self, _now: ha_core::Instant) -> bool {
        !self.0.load(Ordering::Relaxed)
    }
    fn deferred(&self, _now: ha_core::Instant) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(start_paused = true)]
async fn a_gated_endpoint_that_is_not_ready_hands_its_unsent_request_to_another() {
    let a = backend("a");
    let b_ = backend("b");
    a.set_ready(false);
    let gate = Optimistic::default();
    let cfg = BalanceConfig { picker: Picker::RoundRobin, outlier: OutlierConfig::disabled(), ..Default::default() };
    let mut b: B = Balance::builder()
        .config(cfg)
        .build_with([("a", Endpoint::new(a.clone()).health_gate(gate.clone())), ("b", Endpoint::new(b_.clone()))])
        .unwrap();
    for _ in 0..4 {
        assert_eq!(b.ready().await.unwrap().call(req(0)).await.unwrap(), "b");
    }
    assert!(gate.0.load(Ordering::Relaxed), "the gate was told");
    assert_eq!((a.hits(), b_.hits()), (0, 4));
    assert_eq!(b.in_flight(), 0);
    // Without a gate saying otherwise, a not-ready endpoint is waited for:
    // readiness is backpressure, not failure.
    let c = backend("c");
    c.set_ready(false);
    let mut only_c: B = Balance::builder().build_with([("c", Endpoint::new(c.clone()))]).unwrap();
    let pending = tokio::spawn(only_c.ready().await.unwrap().call(req(0)));
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.set_ready(true);
    assert_eq!(pending.await.unwrap().unwrap(), "c");
}

#[tokio::test(start_paused = true)]
async fn discovery_inserts_and_removes_endpoints() {
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Change<&'static str, Endpoint<Backend>>, BoxError>>();
    let a = backend("a");
    let c = backend("c");
    let mut b: B = Balance::builder()
        .config(BalanceConfig { picker: Picker::RoundRobin, ..Default::default() })
        .build_discover(rx)
        .unwrap();
    tx.unbounded_send(Ok(Change::Insert("a", Endpoint::new(a.clone())))).unwrap();
    tx.unbounded_send(Ok(Change::Insert("c", Endpoint::new(c.clone())))).unwrap();
    for _ in 0..10 {
        b.ready().await.unwrap().call(req(0)).await.unwrap();
    }
    assert_eq!((a.hits(), c.hits()), (5, 5));
    tx.unbounded_send(Ok(Change::Remove("a"))).unwrap();
    tokio::task::yield_now().await;
    for _ in 0..10 {
        assert_eq!(b.ready().await.unwrap().call(req(0)).await.unwrap(), "c");
    }
    assert_eq!(b.endpoints().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn active_health_checks_take_an_endpoint_out_and_bring_it_back() {
    let a = backend("a");
    let z = backend("z");
    let a_down = Arc::new(AtomicBool::new(false));
    let flag = a_down.clone();
    let probe = service_fn(move |key: &'static str| {
        let down = key == "a" && flag.load(Ordering::Relaxed);
        async move {
            if down {
                Err::<(), BoxError>("unhealthy".into())
            } else {
                Ok(())
            }
        }
    });
    let (events, seen) = recorder();
    let mut cfg = BalanceConfig { picker: Picker::RoundRobin, ..Default::default() };
    cfg.health_check.interval = Duration::from_secs(5);
    cfg.health_check.jitter = Duration::from_millis(500);
    let mut b: B = Balance::builder()
        .config(cfg)
        .events(events)
        .health_check(probe)
        .build_with([("a", Endpoint::new(a.clone())), ("z", Endpoint::new(z.clone()))])
        .unwrap();
    a_down.store(true, Ordering::Relaxed);
    // Three failed probes (default threshold) at ~5 s each.
    tokio::time::sleep(Duration::from_secs(17)).await;
    let stats = b.endpoint_stats();
    assert!(stats.iter().any(|s| &*s.name == "a" && s.health_check_failing), "{stats:?}");
    for _ in 0..10 {
        assert_eq!(b.ready().await.unwrap().call(req(0)).await.unwrap(), "z");
    }
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, Event::EndpointEjected { reason: ha_core::event::EjectionReason::HealthCheck, .. })));
    a_down.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(12)).await;
    for _ in 0..10 {
        b.ready().await.unwrap().call(req(0)).await.unwrap();
    }
    assert_eq!(a.hits(), 5, "back after two passed probes");
}

#[cfg(feature = "breaker")]
#[tokio::test(start_paused = true)]
async fn an_open_breaker_takes_its_endpoint_out_and_fails_no_request() {
    use ha_balance::BreakerGate;
    use ha_breaker::{Breaker, BreakerConfig, CircuitBreaker, RejectMode};

    let bad = backend("bad");
    let good = backend("good");
    let config =
        BreakerConfig { consecutive_failures: Some(3), reject_mode: RejectMode::NotReady, ..BreakerConfig::default() };
    let endpoint = |be: &Backend| {
        let breaker =
            Arc::new(Breaker::new(be.name, config.clone(), ha_core::Events::new(), ha_core::Instant::now()).unwrap());
        Endpoint::new(CircuitBreaker::new(be.clone(), breaker.clone())).health_gate(BreakerGate::new(breaker))
    };
    let cfg = BalanceConfig { picker: Picker::RoundRobin, outlier: OutlierConfig::disabled(), ..Default::default() };
    let mut b: Balance<&'static str, CircuitBreaker<Backend>, Req> =
        Balance::builder().config(cfg).build_with([("bad", endpoint(&bad)), ("good", endpoint(&good))]).unwrap();
    bad.set_fail(true);
    let mut failures = 0;
    for _ in 0..6 {
        failures += usize::from(b.ready().await.unwrap().call(req(0)).await.is_err());
    }
    assert_eq!(failures, 3, "three failures open the breaker");
    // Open: every request goes to the good endpoint, none fails.
    for _ in 0..100 {
        assert_eq!(b.ready().await.unwrap().call(req(0)).await.unwrap(), "good");
    }
    assert_eq!(bad.hits(), 3);
    let stats = b.endpoint_stats();
    assert!(stats.iter().any(|s| &*s.name == "bad" && s.breaker_open));
    // After the open wait the endpoint gets a probe, passes, and is back.
    bad.set_fail(false);
    tokio::time::advance(Duration::from_secs(6)).await;
    for _ in 0..100 {
        b.ready().await.unwrap().call(req(0)).await.unwrap();
    }
    assert!(bad.hits() > 30, "bad is back: {}", bad.hits());
}

#[cfg(feature = "breaker")]
#[tokio::test(start_paused = true)]
async fn a_half_open_breaker_takes_its_probe_and_the_rest_go_elsewhere() {
    use ha_balance::BreakerGate;
    use ha_breaker::{Breaker, BreakerConfig, CircuitBreaker, RejectMode};

    let bad = backend("bad");
    let good = backend("good");
    let config = BreakerConfig {
        consecutive_failures: Some(1),
        half_open_probes: 1,
        reject_mode: RejectMode::NotReady,
        ..BreakerConfig::default()
    };
    let endpoint = |be: &Backend| {
        let breaker =
            Arc::new(Breaker::new(be.name, config.clone(), ha_core::Events::new(), ha_core::Instant::now()).unwrap());
        Endpoint::new(CircuitBreaker::new(be.clone(), breaker.clone())).health_gate(BreakerGate::new(breaker))
    };
    let cfg = BalanceConfig { picker: Picker::RoundRobin, outlier: OutlierConfig::disabled(), ..Default::default() };
    let b: Balance<&'static str, CircuitBreaker<Backend>, Req> =
        Balance::builder().config(cfg).build_with([("bad", endpoint(&bad)), ("good", endpoint(&good))]).unwrap();
    bad.set_fail(true);
    let mut first = b.clone();
    let _ = first.ready().await.unwrap().call(req(0)).await;
    let _ = first.ready().await.unwrap().call(req(0)).await;
    assert_eq!(bad.hits(), 1, "one failure opened it");
    // After the open wait, a slow probe occupies the only probe permit.
    bad.set_fail(false);
    let slow_probe = bad.st.delay_ms.swap(2_000, Ordering::Relaxed);
    assert_eq!(slow_probe, 0);
    // Traffic flows through the open wait (the gate learns of the open
    // period from the balancer's periodic recount, every 100 ms).
    for _ in 0..45 {
        assert_eq!(first.ready().await.unwrap().call(req(0)).await.unwrap(), "good");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut handles = Vec::new();
    for _ in 0..20 {
        let mut b = b.clone();
        handles.push(tokio::spawn(async move { b.ready().await.unwrap().call(req(0)).await }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(bad.hits(), 2, "exactly one probe reached the half-open endpoint");
    assert!(good.hits() >= 19, "the others went to the good endpoint: {}", good.hits());
    for h in handles {
        h.await.unwrap().expect("no request fails");
    }
}

#[tokio::test(start_paused = true)]
async fn retries_over_tiers_keep_every_request_succeeding_while_one_endpoint_is_healthy() {
    for seed in 0..64 {
        retries_over_tiers_with(seed).await;
    }
}

async fn retries_over_tiers_with(seed: u64) {
    use ha_retry::{RetryConfig, RetryLayer};
    use tower::Layer;

    let p1 = backend("p1").delay(5);
    let p2 = backend("p2").delay(5);
    let s1 = backend("s1").delay(20);
    let balance: B = Balance::builder()
        .config(BalanceConfig {
            outlier: OutlierConfig { consecutive_failures: 2, max_ejection_percent: 100.0, ..Default::default() },
            ..Default::default()
        })
        .seed(9)
        .build_with([
            ("p1", Endpoint::new(p1.clone()).tier(0)),
            ("p2", Endpoint::new(p2.clone()).tier(0)),
            ("s1", Endpoint::new(s1.clone()).tier(1)),
        ])
        .unwrap();
    // A seeded backoff jitter, so the run on virtual time is the same every time.
    let retry = RetryLayer::builder(RetryConfig { max_attempts: 3, ..RetryConfig::default() })
        .track_attempts()
        .seed(seed)
        .build()
        .unwrap();
    let mut svc = retry.layer(balance);
    let mut served = std::collections::HashMap::<&str, u32>::new();
    for phase in 0..3 {
        match phase {
            1 => p1.set_fail(true),
            2 => p2.set_fail(true),
            _ => {}
        }
        for _ in 0..200 {
            let who = svc
                .ready()
                .await
                .unwrap()
                .call(req(0))
                .await
                .unwrap_or_else(|e| panic!("seed {seed}, phase {phase}: {e}"));
            *served.entry(who).or_default() += 1;
            tokio::time::advance(Duration::from_millis(10)).await;
        }
    }
    assert!(served["p1"] > 0 && served["p2"] > 0 && served["s1"] >= 200, "{served:?}");
}

#[tokio::test(start_paused = true)]
async fn single_threaded_services_can_be_balanced() {
    // A simulator or a `!Send` client: nothing but the background tasks
    // (discovery, health checks) needs `Send`.
    use std::cell::Cell;
    use std::rc::Rc;
    let calls = Rc::new(Cell::new(0));
    let counter = calls.clone();
    let svc = service_fn(move |_r: Req| {
        counter.set(counter.get() + 1);
        async { Ok::<_, BoxError>("local") }
    });
    let mut b: Balance<&str, _, Req> = Balance::builder().build_with([("local", Endpoint::new(svc))]).unwrap();
    assert_eq!(b.ready().await.unwrap().call(req(0)).await.unwrap(), "local");
    assert_eq!(calls.get(), 1);
}

/// A backend whose failure, once armed, closes its gate as it is answered,
/// as a breaker in the endpoint's stack opens on the call that trips it.
#[derive(Clone)]
struct Tripping {
    inner: Backend,
    gate: Advisory,
    armed: Arc<AtomicBool>,
}

impl Service<Req> for Tripping {
    type Response = &'static str;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<&'static str, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, r: Req) -> Self::Future {
        let fut = self.inner.call(r);
        let (gate, armed) = (self.gate.clone(), self.armed.clone());
        Box::pin(async move {
            let result = fut.await;
            if result.is_err() && armed.load(Ordering::Relaxed) {
                gate.veto(true);
            }
            result
        })
    }
}

type Boxed = tower::util::BoxCloneSyncService<Req, &'static str, BoxError>;

/// Three endpoints of 10 ms failing alike (a fleet-wide overload), `a`
/// behind `gate`, whose breaker opens on `a`'s next failure once `armed`,
/// and `b` behind `b_gate`, switched by hand; plans recounted every
/// `refresh`, ejections by `outlier`. They have failed 30 requests, and
/// `a`'s breaker has just opened.
async fn fleet_failing_alike(
    gate: &Advisory,
    b_gate: &Advisory,
    refresh: Duration,
    outlier: OutlierConfig,
) -> (Balance<&'static str, Boxed, Req>, Vec<Backend>, Arc<AtomicBool>) {
    let backends: Vec<Backend> = ["a", "b", "c"].into_iter().map(|n| backend(n).delay(10)).collect();
    for b in &backends {
        b.set_fail(true);
    }
    let armed = Arc::new(AtomicBool::new(false));
    let a = Tripping { inner: backends[0].clone(), gate: gate.clone(), armed: armed.clone() };
    let mut cfg = BalanceConfig { picker: Picker::RoundRobin, outlier, ..BalanceConfig::default() };
    cfg.tiers.refresh = refresh;
    let mut bal = Balance::builder()
        .config(cfg)
        .seed(3)
        .build_with([
            ("a", Endpoint::new(Boxed::new(a)).health_gate(gate.clone())),
            ("b", Endpoint::new(Boxed::new(backends[1].clone())).health_gate(b_gate.clone())),
            ("c", Endpoint::new(Boxed::new(backends[2].clone()))),
        ])
        .unwrap();
    // Every endpoint fails its requests: their failure rates are alike and high.
    for _ in 0..30 {
        assert!(bal.ready().await.unwrap().call(req(0)).await.is_err());
    }
    assert_eq!(bal.endpoint_stats().iter().filter(|s| s.ejected).count(), 0, "a shared failure ejects nothing");
    // a's next failure opens its breaker.
    armed.store(true, Ordering::Relaxed);
    let before = backends[0].hits();
    while backends[0].hits() == before {
        assert!(bal.ready().await.unwrap().call(req(0)).await.is_err());
    }
    assert!(gate.vetoes(), "a's breaker opened");
    armed.store(false, Ordering::Relaxed);
    (bal, backends, armed)
}

/// How many of `n` requests `backend` takes.
async fn share_of(bal: &mut Balance<&'static str, Boxed, Req>, backend: &Backend, n: usize) -> u64 {
    let hits = backend.hits();
    for _ in 0..n {
        let _ = bal.ready().await.unwrap().call(req(0)).await;
    }
    backend.hits() - hits
}

#[tokio::test(start_paused = true)]
async fn an_advisory_veto_of_an_endpoint_failing_alike_is_set_aside_at_once() {
    // When a's breaker opens on a failure, the balancer judges it at its
    // next pick: a fails like its peers, so the veto is set aside and a
    // keeps serving. It used to wait for the plan's next refresh (here
    // 10 s; 100 ms by default), leaving a idle while its peers shed its load.
    let gate = Advisory::default();
    let (mut bal, backends, _) =
        fleet_failing_alike(&gate, &Advisory::default(), Duration::from_secs(10), OutlierConfig::default()).await;
    let taken = share_of(&mut bal, &backends[0], 6).await;
    assert!(taken >= 2, "a is still picked: {taken} of 6");
}

#[tokio::test(start_paused = true)]
async fn a_veto_judged_shared_holds_through_its_breakers_half_open_probe() {
    // a's breaker, judged shared, waits its open time out and admits a
    // probe (a recount sees it admitting); the probe goes out and the
    // breaker vetoes again, with no failure to call for a judgement: the
    // same open period, the same shared failure. a used to idle from there
    // until the next recount while its peers shed its load. Both with no
    // other veto at that recount and with b's breaker open too (then the
    // recount judges every veto).
    for b_vetoes in [false, true] {
        let (gate, b_gate) = (Advisory::with_runs(), Advisory::with_runs());
        let refresh = Duration::from_secs(1);
        let (mut bal, backends, _) = fleet_failing_alike(&gate, &b_gate, refresh, OutlierConfig::default()).await;
        assert!(share_of(&mut bal, &backends[0], 6).await >= 2, "judged shared at once");
        gate.veto(false);
        b_gate.veto(b_vetoes);
        tokio::time::advance(refresh + Duration::from_millis(1)).await;
        share_of(&mut bal, &backends[0], 1).await; // the recount that sees a's gate admitting
        gate.veto(true); // the probe is out
        let taken = share_of(&mut bal, &backends[0], 6).await;
        assert!(taken >= 2, "a is still picked while its probe is out (b vetoes: {b_vetoes}): {taken} of 6");
    }
}

#[tokio::test(start_paused = true)]
async fn a_veto_set_aside_for_an_overload_stays_aside_while_the_endpoint_succeeds() {
    // The overload ends: every endpoint answers again, but a's breaker,
    // whose calls went through untracked while its veto was set aside, is
    // still open. The next recount finds the peers no longer failing. a,
    // whose own requests now succeed, keeps serving; had it died, its
    // breaker would be right and it would leave selection. A gate that
    // cannot tell its runs is judged afresh at each recount, as before:
    // its veto, no longer shared, keeps a out.
    for (runs, a_recovers, serves) in [(true, true, true), (true, false, false), (false, true, false)] {
        let gate = if runs { Advisory::with_runs() } else { Advisory::default() };
        let refresh = Duration::from_secs(1);
        let (mut bal, backends, _) =
            fleet_failing_alike(&gate, &Advisory::default(), refresh, OutlierConfig::disabled()).await;
        assert!(share_of(&mut bal, &backends[0], 6).await >= 2, "judged shared at once");
        for b in &backends {
            b.set_fail(!a_recovers && b.name == "a");
        }
        share_of(&mut bal, &backends[0], 400).await;
        tokio::time::advance(refresh).await;
        let taken = share_of(&mut bal, &backends[0], 30).await;
        if serves {
            assert!(taken >= 5, "a serves on after the overload: {taken} of 30");
        } else {
            assert!(taken <= 1, "a is kept out by its breaker (runs: {runs}, recovered: {a_recovers}): {taken} of 30");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_veto_after_the_endpoint_recovered_is_judged_anew() {
    // a's breaker, judged shared, closes (a recovered); its peers recover
    // while a fails alone (ejection is off: the breaker alone decides), and
    // its breaker opens again before any recount: the old judgement is of
    // another open period and must not set the new veto aside.
    let gate = Advisory::with_runs();
    let (mut bal, backends, armed) =
        fleet_failing_alike(&gate, &Advisory::default(), Duration::from_secs(10), OutlierConfig::disabled()).await;
    assert!(share_of(&mut bal, &backends[0], 6).await >= 2, "judged shared at once");
    gate.recovered();
    for b in &backends[1..] {
        b.set_fail(false);
    }
    share_of(&mut bal, &backends[0], 300).await;
    armed.store(true, Ordering::Relaxed);
    let before = backends[0].hits();
    while backends[0].hits() == before {
        let _ = bal.ready().await.unwrap().call(req(0)).await;
    }
    assert!(gate.vetoes(), "a's breaker opened again");
    let taken = share_of(&mut bal, &backends[0], 20).await;
    assert_eq!(taken, 0, "a failing alone is kept out by its breaker");
}

#[tokio::test(start_paused = true)]
async fn a_reading_lent_by_the_caller_is_the_picks_time() {
    // A caller that read the clock 2 s ago (a retry layer lends its reading
    // to the call it makes at once; this one is stale on purpose, to see it
    // used): the answer's latency counts from it.
    let mut lent = build(Picker::P2cPeakEwma, &[backend("a")]);
    let lent_at = ha_core::Instant::now();
    tokio::time::advance(Duration::from_secs(2)).await;
    let fut = ha_core::time::lend(lent_at, || lent.call(req(0)));
    assert_eq!(fut.await.unwrap(), "a");
    let latency = lent.endpoint_stats()[0].latency;
    assert!(latency >= Duration::from_millis(1900), "latency {latency:?} counted from the lent reading");

    // Nothing lent: the balancer reads the clock, and an answer at once is
    // no slower than the estimate it starts from.
    let mut own = build(Picker::P2cPeakEwma, &[backend("b")]);
    let before = own.endpoint_stats()[0].latency;
    own.call(req(0)).await.unwrap();
    assert!(own.endpoint_stats()[0].latency <= before);
}
