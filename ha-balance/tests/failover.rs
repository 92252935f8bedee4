//! Tiers, panic mode, outlier ejection and re-admission, seen through the
//! balancer on paused virtual time.

mod common;

use std::time::Duration;

use common::{backend, recorder, req, Backend, Req, Switch};
use ha_balance::config::{OutlierConfig, SlowStartConfig};
use ha_balance::{Balance, BalanceConfig, Endpoint, Picker};
use ha_core::event::EjectionReason;
use ha_core::{Event, NoHealthyEndpoint};
use tower::{Service, ServiceExt};

type B = Balance<String, Backend, Req>;

fn no_outliers() -> BalanceConfig {
    BalanceConfig { outlier: OutlierConfig::disabled(), ..BalanceConfig::default() }
}

/// `n0` tier-0 and `n1` tier-1 endpoints, each behind a switch.
fn tiered(n0: usize, n1: usize, cfg: BalanceConfig) -> (B, Vec<(Backend, Switch)>, common::Recorded) {
    let (events, seen) = recorder();
    let mut all = Vec::new();
    let mut eps = Vec::new();
    for i in 0..n0 + n1 {
        let name: &'static str = Box::leak(format!("ep{i}").into_boxed_str());
        let be = backend(name);
        let sw = Switch::default();
        let tier = if i < n0 { 0 } else { 1 };
        eps.push((name.to_string(), Endpoint::new(be.clone()).tier(tier).health_gate(sw.clone())));
        all.push((be, sw));
    }
    let b = Balance::builder().config(cfg).events(events).seed(11).build_with(eps).unwrap();
    (b, all, seen)
}

/// The endpoints ejected so far, and why, in order.
fn ejections(seen: &common::Recorded) -> Vec<(String, EjectionReason)> {
    let seen = seen.lock().unwrap();
    seen.iter()
        .filter_map(|e| match e {
            Event::EndpointEjected { endpoint, reason, .. } => Some((endpoint.to_string(), *reason)),
            _ => None,
        })
        .collect()
}

async fn send(b: &mut B) -> Result<&'static str, tower::BoxError> {
    b.ready().await.unwrap().call(req(0)).await
}

fn tier_share(all: &[(Backend, Switch)], n0: usize) -> (u64, u64) {
    let t0: u64 = all[..n0].iter().map(|(b, _)| b.hits()).sum();
    let t1: u64 = all[n0..].iter().map(|(b, _)| b.hits()).sum();
    (t0, t1)
}

#[tokio::test(start_paused = true)]
async fn healthy_primary_tier_takes_all_the_traffic() {
    let (mut b, all, _) = tiered(4, 4, no_outliers());
    for _ in 0..1000 {
        send(&mut b).await.unwrap();
    }
    assert_eq!(tier_share(&all, 4), (1000, 0));
    // 3 of 4 healthy = 75% >= 1/1.4: still no spill.
    all[0].1.set_down(true);
    tokio::time::advance(Duration::from_millis(200)).await;
    for _ in 0..1000 {
        send(&mut b).await.unwrap();
    }
    assert_eq!(tier_share(&all, 4), (2000, 0));
}

#[tokio::test(start_paused = true)]
async fn tier_spill_is_proportional_to_the_lost_health() {
    for (down, expected_t0) in [(5usize, 0.7f64), (7, 0.42), (8, 0.28)] {
        let (mut b, all, seen) = tiered(10, 10, no_outliers());
        for (_, sw) in &all[..down] {
            sw.set_down(true);
        }
        tokio::time::advance(Duration::from_millis(200)).await;
        for _ in 0..10_000 {
            send(&mut b).await.unwrap();
        }
        let (t0, t1) = tier_share(&all, 10);
        let share = t0 as f64 / (t0 + t1) as f64;
        assert!((share - expected_t0).abs() < 0.02, "{down} down: tier 0 share {share}, expected {expected_t0}");
        let spill = seen.lock().unwrap().iter().rev().find_map(|e| match e {
            Event::TierSpill { from_tier: 0, spilled } => Some(*spilled),
            _ => None,
        });
        assert!((spill.unwrap() - (1.0 - expected_t0)).abs() < 0.011, "{spill:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn spill_returns_when_the_primary_recovers() {
    let cfg =
        BalanceConfig { slow_start: SlowStartConfig { window: Duration::ZERO, ..Default::default() }, ..no_outliers() };
    let (mut b, all, seen) = tiered(2, 1, cfg);
    all[0].1.set_down(true);
    all[1].1.set_down(true);
    tokio::time::advance(Duration::from_millis(200)).await;
    send(&mut b).await.unwrap();
    assert_eq!(tier_share(&all, 2), (0, 1));
    all[0].1.set_down(false);
    all[1].1.set_down(false);
    tokio::time::advance(Duration::from_millis(200)).await;
    for _ in 0..100 {
        send(&mut b).await.unwrap();
    }
    assert_eq!(tier_share(&all, 2), (100, 1));
    let spills: Vec<f64> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::TierSpill { from_tier: 0, spilled } => Some(*spilled),
            _ => None,
        })
        .collect();
    assert_eq!(spills, vec![1.0, 0.0]);
}

#[tokio::test(start_paused = true)]
async fn a_tier_back_from_an_outage_takes_its_traffic_back_over_the_slow_start_ramp() {
    // The default slow start: 10 s from a tenth of the share.
    let (mut b, all, _) = tiered(3, 3, no_outliers());
    for (_, sw) in &all[..3] {
        sw.set_down(true);
    }
    tokio::time::advance(Duration::from_millis(200)).await;
    send(&mut b).await.unwrap();
    for (_, sw) in &all[..3] {
        sw.set_down(false);
    }
    // Tier 0's share each second after its return, 1000 requests a second.
    let mut shares = Vec::new();
    let mut before = tier_share(&all, 3);
    for _ in 0..12 {
        for _ in 0..1000 {
            send(&mut b).await.unwrap();
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        let now = tier_share(&all, 3);
        shares.push((now.0 - before.0) as f64 / 1000.0);
        before = now;
    }
    // Its health is 1.4 x its ramp: about an eighth of the traffic in the
    // first second (0.122), all of it once the ramp passes 1/1.4 (about 7 s).
    eprintln!("tier 0's share each second after its return: {shares:.3?}");
    assert!(shares[0] > 0.05 && shares[0] < 0.35, "{shares:?}");
    assert!(shares.windows(2).all(|w| w[1] >= w[0] - 0.05), "{shares:?}");
    assert!(shares[4] > 0.5 && shares[4] < 0.95, "{shares:?}");
    assert!(shares[8..].iter().all(|&s| s == 1.0), "{shares:?}");
}

#[tokio::test(start_paused = true)]
async fn zones_are_tiers_local_first_then_remote() {
    // The caller runs in zone "a": its zone is tier 0, the others tier 1.
    let local = [backend("a1"), backend("a2")];
    let remote = [backend("b1"), backend("c1")];
    let local_sw = [Switch::default(), Switch::default()];
    let caller_zone = "a";
    let zone_of = |name: &str| name[..1].to_string();
    let mut eps = Vec::new();
    for (be, sw) in local.iter().zip(&local_sw) {
        let z = zone_of(be.name);
        eps.push((
            be.name.to_string(),
            Endpoint::new(be.clone()).zone(z.clone()).tier(u8::from(z != caller_zone)).health_gate(sw.clone()),
        ));
    }
    for be in &remote {
        let z = zone_of(be.name);
        eps.push((be.name.to_string(), Endpoint::new(be.clone()).zone(z.clone()).tier(u8::from(z != caller_zone))));
    }
    let mut b: B = Balance::builder().config(no_outliers()).build_with(eps).unwrap();
    for _ in 0..100 {
        send(&mut b).await.unwrap();
    }
    assert_eq!(local.iter().map(Backend::hits).sum::<u64>(), 100, "all traffic stays in the zone");
    // The local zone goes down: traffic fails over to the other zones.
    for sw in &local_sw {
        sw.set_down(true);
    }
    for _ in 0..100 {
        assert!(send(&mut b).await.unwrap().starts_with(['b', 'c']));
    }
    assert!(remote.iter().all(|r| r.hits() > 20));
    let zones: Vec<_> = b.endpoint_stats().into_iter().map(|s| (s.zone.unwrap().to_string(), s.tier)).collect();
    assert!(zones.iter().all(|(z, t)| (z == "a") == (*t == 0)));
}

fn ejecting(consecutive: u32, max_percent: f64) -> BalanceConfig {
    BalanceConfig {
        picker: Picker::RoundRobin,
        outlier: OutlierConfig {
            consecutive_failures: consecutive,
            max_ejection_percent: max_percent,
            success_rate: None,
            ..OutlierConfig::default()
        },
        slow_start: ha_balance::config::SlowStartConfig { window: Duration::ZERO, ..Default::default() },
        ..BalanceConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_and_the_endpoint_comes_back_after_its_time() {
    let (mut b, all, seen) = tiered(10, 0, ejecting(5, 10.0));
    all[3].0.set_fail(true);
    // Round robin: every 10th request goes to the failing one until its 5th failure.
    for _ in 0..100 {
        let _ = send(&mut b).await;
    }
    assert_eq!(all[3].0.hits(), 5, "ejected at the fifth failure in a row");
    let ejected = seen.lock().unwrap().iter().find_map(|e| match e {
        Event::EndpointEjected { endpoint, reason, duration } => Some((endpoint.clone(), *reason, *duration)),
        _ => None,
    });
    assert_eq!(ejected, Some(("ep3".into(), EjectionReason::ConsecutiveFailures, Duration::from_secs(30))));
    let stats = b.endpoint_stats();
    let s = stats.iter().find(|s| &*s.name == "ep3").unwrap();
    assert!(s.ejected && s.ejections == 1 && s.failures == 5);

    // No traffic before its 30 s are up but one probe (one request per
    // probe time, however many are sent), which fails...
    tokio::time::advance(Duration::from_secs(29)).await;
    for _ in 0..100 {
        let _ = send(&mut b).await;
    }
    assert_eq!(all[3].0.hits(), 6);
    // ...and then it is back, at its next probe.
    all[3].0.set_fail(false);
    tokio::time::advance(Duration::from_secs(2)).await;
    for _ in 0..100 {
        send(&mut b).await.unwrap();
    }
    assert!(all[3].0.hits() >= 14, "hits {}", all[3].0.hits());
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, Event::EndpointRestored { endpoint } if &**endpoint == "ep3")));
}

#[tokio::test(start_paused = true)]
async fn requests_timed_out_by_the_caller_count_as_failures_unless_configured_not_to() {
    for cancelled_as_failure in [true, false] {
        let mut cfg = ejecting(5, 50.0);
        cfg.outlier.cancelled_as_failure = cancelled_as_failure;
        let (mut b, all, seen) = tiered(3, 0, cfg);
        // ep1 black-holes requests: the caller's 1 s timeout is the only signal.
        all[1].0.st.delay_ms.store(3_600_000, std::sync::atomic::Ordering::Relaxed);
        let mut timeouts = 0;
        for _ in 0..60 {
            let fut = b.ready().await.unwrap().call(req(0));
            if tokio::time::timeout(Duration::from_secs(1), fut).await.is_err() {
                timeouts += 1;
            }
        }
        let ejected = seen.lock().unwrap().iter().any(|e| matches!(e, Event::EndpointEjected { .. }));
        if cancelled_as_failure {
            assert!(ejected);
            assert_eq!(timeouts, 5, "ejected at the fifth timeout in a row");
        } else {
            assert!(!ejected);
            assert_eq!(timeouts, 20);
        }
        assert_eq!(b.in_flight(), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn ejections_are_capped_at_max_ejection_percent() {
    let (mut b, all, seen) = tiered(20, 0, ejecting(1, 10.0));
    for (be, _) in &all[..6] {
        be.set_fail(true);
    }
    for _ in 0..200 {
        let _ = send(&mut b).await;
    }
    let ejections = seen.lock().unwrap().iter().filter(|e| matches!(e, Event::EndpointEjected { .. })).count();
    assert_eq!(ejections, 2, "10% of 20");
    assert_eq!(b.endpoint_stats().iter().filter(|s| s.ejected).count(), 2);
}

#[tokio::test(start_paused = true)]
async fn success_rate_outlier_is_ejected_at_the_interval() {
    let mut cfg = ejecting(0, 50.0);
    cfg.picker = Picker::Random;
    cfg.outlier.success_rate = Some(ha_balance::config::SuccessRateConfig { request_volume: 50, ..Default::default() });
    let (mut b, all, seen) = tiered(6, 0, cfg);
    let mut n = 0u64;
    for _ in 0..1200 {
        // ep5 fails every other request: never five in a row, but an outlier.
        n += 1;
        all[5].0.set_fail(n % 2 == 0);
        let _ = send(&mut b).await;
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    let _ = send(&mut b).await;
    let ejected = ejections(&seen);
    assert_eq!(ejected, vec![("ep5".to_string(), EjectionReason::SuccessRate)]);
}

#[tokio::test(start_paused = true)]
async fn failure_percentage_ejects_at_the_interval_and_not_in_the_control() {
    let mut cfg = ejecting(0, 50.0);
    cfg.outlier.failure_percentage =
        Some(ha_balance::config::FailurePercentageConfig { threshold: 50.0, minimum_hosts: 3, request_volume: 50 });
    let (mut b, all, seen) = tiered(4, 0, cfg);
    for _ in 0..800 {
        // ep0 fails 3 of its 4 requests (75%); ep1 fails 1% (the control).
        all[0].0.set_fail(all[0].0.hits() % 4 != 3);
        all[1].0.set_fail(all[1].0.hits() % 100 == 99);
        let _ = send(&mut b).await;
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    let _ = send(&mut b).await;
    let ejected = ejections(&seen);
    assert_eq!(ejected, vec![("ep0".to_string(), EjectionReason::FailurePercentage)]);
}

#[tokio::test(start_paused = true)]
async fn panic_mode_routes_over_every_endpoint() {
    let (mut b, all, seen) = tiered(10, 0, ejecting(1, 100.0));
    for (be, _) in &all[..6] {
        be.set_fail(true);
    }
    for _ in 0..60 {
        let _ = send(&mut b).await;
    }
    tokio::time::advance(Duration::from_millis(200)).await;
    let _ = send(&mut b).await;
    // Ejections alone stop at the panic threshold (capacity), whatever the
    // cap allows: five of the six failing endpoints are out.
    assert_eq!(b.endpoint_stats().iter().filter(|s| s.ejected).count(), 5);
    assert!(!b.in_panic_mode());
    // A breaker opening on top takes the tier below it: panic.
    all[9].1.set_down(true);
    tokio::time::advance(Duration::from_millis(200)).await;
    let _ = send(&mut b).await;
    assert!(b.in_panic_mode());
    assert!(seen.lock().unwrap().contains(&Event::PanicMode { entered: true }));
    // In panic, the ejected endpoints get traffic again.
    let before: Vec<u64> = all.iter().map(|(be, _)| be.hits()).collect();
    for _ in 0..100 {
        let _ = send(&mut b).await;
    }
    assert!(all[..9].iter().zip(&before).all(|((be, _), b0)| be.hits() > *b0), "every admitted endpoint served");
}

#[tokio::test(start_paused = true)]
async fn nothing_available_fails_with_no_healthy_endpoint_within_the_bound() {
    let mut cfg = no_outliers();
    cfg.no_healthy_timeout = Duration::from_millis(300);
    let (mut b, all, _) = tiered(2, 0, cfg);
    for (_, sw) in &all {
        sw.set_down(true);
    }
    let start = tokio::time::Instant::now();
    let err = send(&mut b).await.unwrap_err();
    assert_eq!(err.downcast_ref::<NoHealthyEndpoint>().unwrap().known_endpoints(), 2);
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert!(ha_core::error::never_sent(&*err));

    // An endpoint coming back during the wait serves the waiting request.
    let waiting = {
        let mut b = b.clone();
        tokio::spawn(async move { b.ready().await.unwrap().call(req(0)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    all[1].1.set_down(false);
    assert_eq!(waiting.await.unwrap().unwrap(), all[1].0.name);

    let mut empty: B = Balance::builder().build().unwrap();
    let err = empty.ready().await.unwrap().call(req(0)).await.unwrap_err();
    assert_eq!(err.downcast_ref::<NoHealthyEndpoint>().unwrap().known_endpoints(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_insert_wakes_a_waiting_request_at_once() {
    let mut b: B = Balance::builder().build().unwrap();
    let fut = b.ready().await.unwrap().call(req(0));
    let handle = tokio::spawn(fut);
    tokio::task::yield_now().await;
    let start = tokio::time::Instant::now();
    b.endpoints().insert("late".into(), Endpoint::new(backend("late")));
    assert_eq!(handle.await.unwrap().unwrap(), "late");
    assert_eq!(start.elapsed(), Duration::ZERO);
}
