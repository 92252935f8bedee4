//! A running balancer takes a new configuration: under open-loop traffic on
//! paused virtual time, a new picker and new ejection thresholds apply to
//! the next requests while every endpoint keeps its state, no request fails
//! because of the change, and an invalid configuration changes nothing.

#[path = "common/fleet.rs"]
mod fleet;

use std::time::Duration;

use fleet::{drive, ejections, fleet, timeline, Server};
use ha_balance::config::OutlierConfig;
use ha_balance::{BalanceConfig, EndpointStats, Picker};

fn stats_of<'a>(all: &'a [EndpointStats], name: &str) -> &'a EndpointStats {
    all.iter().find(|s| &*s.name == name).expect("endpoint present")
}

#[tokio::test(start_paused = true)]
async fn a_new_picker_applies_at_once_and_endpoints_keep_their_state() {
    // s0 is three times slower: PeakEWMA sends it far less than a third.
    let servers = [Server::new("slow", 30), Server::new("fast1", 10), Server::new("fast2", 10)];
    let (events, _) = timeline();
    let mut b = fleet(&servers, BalanceConfig::default(), events);
    let before = drive(&mut b, 5_000, 1.0, |_| {}).await;
    let slow_before = servers[0].hits();
    let learned = stats_of(&b.endpoint_stats(), "slow").clone();
    assert!(learned.latency >= Duration::from_millis(25), "the slow endpoint's latency was learned: {learned:?}");

    let round_robin = BalanceConfig { picker: Picker::RoundRobin, ..b.config() };
    let handle = b.clone();
    let (mut changed_at, mut right_after) = (None, None);
    // Changed in the middle of the traffic, with requests in flight.
    let after = drive(&mut b, 6_000, 1.0, |t| {
        if t == 1_000 {
            changed_at = Some(handle.in_flight());
            handle.reconfigure(round_robin.clone()).expect("a valid configuration");
            right_after = Some(stats_of(&handle.endpoint_stats(), "slow").clone());
        }
    })
    .await;
    assert!(changed_at.unwrap() > 0, "requests were in flight during the change");
    assert_eq!(b.config().picker, Picker::RoundRobin);
    assert_eq!(before.ok, before.sent, "{before:?}");
    assert_eq!(after.ok, after.sent, "no request failed across the change: {after:?}");

    let share_before = slow_before as f64 / before.sent as f64;
    let slow_after = servers[0].hits() - slow_before;
    // 1000 requests under P2C, then 5000 under round robin, which gives each a third.
    let share_after = slow_after as f64 / after.sent as f64;
    eprintln!("slow endpoint's share: P2C {share_before:.3}, after the change {share_after:.3}");
    assert!(share_before < 0.2, "P2C kept traffic off the slow endpoint: {share_before:.3}");
    assert!(share_after > 0.28, "round robin took over: {share_after:.3}");

    let kept = right_after.unwrap();
    assert_eq!(kept.id, learned.id);
    assert!(kept.latency >= Duration::from_millis(25), "the latency estimate survived the change: {kept:?}");
    let end = stats_of(&b.endpoint_stats(), "slow").clone();
    assert!(end.requests >= learned.requests + slow_after, "counters continue: {learned:?} then {end:?}");
}

fn consecutive(n: u32) -> BalanceConfig {
    let outlier = OutlierConfig { consecutive_failures: n, ..OutlierConfig::disabled() };
    BalanceConfig { outlier, ..BalanceConfig::default() }
}

#[tokio::test(start_paused = true)]
async fn lower_ejection_thresholds_apply_to_the_next_outcomes_and_an_ejection_survives_a_change() {
    let servers = [Server::new("flaky", 10), Server::new("ok1", 10), Server::new("ok2", 10)];
    // Half of flaky's answers fail: 40 in a row never happen in this run; 3 soon do.
    servers[0].set_fail_permille(500);
    let (events, seen) = timeline();
    let mut b = fleet(&servers, consecutive(40), events);
    drive(&mut b, 5_000, 1.0, |_| {}).await;
    assert!(ejections(&seen).is_empty(), "no ejection under the lax threshold: {:?}", ejections(&seen));

    // An invalid change is refused with the build-time error and changes nothing.
    let mut bad = consecutive(3);
    bad.outlier.max_ejection_percent = 150.0;
    let err = b.reconfigure(bad).unwrap_err();
    assert_eq!(err.field(), "outlier.max_ejection_percent");
    assert_eq!(b.config(), consecutive(40));
    drive(&mut b, 2_000, 1.0, |_| {}).await;
    assert!(ejections(&seen).is_empty(), "the refused config did not apply");

    b.reconfigure(consecutive(3)).expect("a valid configuration");
    let mut ejected_at = None;
    let handle = b.clone();
    let mut still_ejected_after_change = None;
    drive(&mut b, 3_000, 1.0, |t| {
        if ejected_at.is_none() && !ejections(&seen).is_empty() {
            ejected_at = Some(t);
            // Another change while flaky is out: the ejection stays.
            handle.reconfigure(BalanceConfig { picker: Picker::RoundRobin, ..consecutive(3) }).unwrap();
            still_ejected_after_change = Some(stats_of(&handle.endpoint_stats(), "flaky").ejected);
        }
    })
    .await;
    let ejected = ejections(&seen);
    assert!(!ejected.is_empty() && ejected.iter().all(|(_, who, _)| who == "flaky"), "{ejected:?}");
    assert!(ejected_at.unwrap() < 1_000, "ejected within a second of the stricter threshold: {ejected_at:?}");
    assert_eq!(still_ejected_after_change, Some(true), "the ejection survived the change");
}
