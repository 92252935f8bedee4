//! Health judgement under the failures real fleets have (issue 13), on
//! paused virtual time with open-loop traffic: fleet-wide shedding, a crash
//! and restart, flapping, a black hole of refusing endpoints, a batch of
//! cold endpoints, and gray failure with three endpoints. Every figure is
//! compared with round robin on the same traffic where the issue asks for it.

#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/gate.rs"]
mod gate;

use std::time::Duration;

use fleet::{drive, ejections, fleet, names, restorations, timeline, Server};
use ha_balance::config::OutlierConfig;
use ha_balance::{BalanceConfig, Endpoint, Picker};
use ha_core::event::EjectionReason;

fn round_robin() -> BalanceConfig {
    BalanceConfig { picker: Picker::RoundRobin, outlier: OutlierConfig::disabled(), ..BalanceConfig::default() }
}

fn servers(prefix: &str, n: usize, delay_ms: u64) -> Vec<Server> {
    names(prefix, n).into_iter().map(|name| Server::new(name, delay_ms)).collect()
}

/// Five servers that each serve 2 requests at once in 10 ms (1000/s in
/// all) and refuse the rest; half load for 3 s, then 1667/s for 20 s, so
/// the fleet sheds 40% everywhere at once.
async fn shedding(cfg: BalanceConfig) -> (fleet::Tally, usize) {
    let fleet_servers: Vec<Server> = servers("s", 5, 10).into_iter().map(|s| s.capacity(2)).collect();
    let (events, seen) = timeline();
    let mut b = fleet(&fleet_servers, cfg, events);
    drive(&mut b, 3_000, 0.5, |_| {}).await;
    let overload = drive(&mut b, 20_000, 5.0 / 3.0, |_| {}).await;
    (overload, ejections(&seen).len())
}

#[tokio::test(start_paused = true)]
async fn a_fleet_shedding_load_everywhere_ejects_nobody() {
    let (ha, ejected) = shedding(BalanceConfig::default()).await;
    let (rr, _) = shedding(round_robin()).await;
    eprintln!("shedding: ha success {:.3} ({ejected} ejections), round robin {:.3}", ha.success(), rr.success());
    assert_eq!(ejected, 0, "an endpoint was ejected for failures its peers share");
    assert!(rr.success() > 0.45, "the traffic sheds as designed: {rr:?}");
    assert!(ha.success() >= rr.success(), "ha {:.3} < round robin {:.3}", ha.success(), rr.success());
}

#[tokio::test(start_paused = true)]
async fn a_probe_of_an_endpoint_that_never_answers_is_given_up_soon() {
    // A probe is a real request: one sent to an endpoint back from a crash
    // but hung (accepting, never answering) must come back in time for its
    // caller to retry it elsewhere, not hold it to its deadline.
    use std::sync::{Arc, Mutex};
    use tower::Service;
    let all = servers("s", 3, 10);
    let (events, seen) = timeline();
    let mut b = fleet(&all, BalanceConfig::default(), events);
    all[0].set_refuse(true);
    drive(&mut b, 2_000, 1.0, |_| {}).await;
    assert!(ejections(&seen).iter().any(|(_, who, _)| who == "s0"), "{:?}", ejections(&seen));
    all[0].set_refuse(false);
    all[0].st.delay_ms.store(3_600_000, std::sync::atomic::Ordering::Relaxed);
    let before = all[0].hits();
    let done = Arc::new(Mutex::new(Vec::new()));
    for i in 0..3_000u64 {
        let fut = b.call(ha_core::WithAttempt::new(i));
        let (done, start) = (done.clone(), tokio::time::Instant::now());
        tokio::spawn(async move {
            let timed_out = fut.await.err().map(|e| e.is::<ha_core::AttemptTimedOut>());
            done.lock().unwrap().push((start.elapsed(), timed_out));
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let probes = all[0].hits() - before;
    let done = done.lock().unwrap();
    let given_up: Vec<Duration> = done.iter().filter(|(_, e)| *e == Some(true)).map(|(d, _)| *d).collect();
    eprintln!("hung after a crash: {probes} probes, given up after {given_up:?}");
    assert!(probes >= 1, "s0 was never probed");
    assert_eq!(done.len(), 3_000, "requests still held by the hung endpoint");
    assert_eq!(given_up.len() as u64, probes, "each probe given up with AttemptTimedOut");
    // Eight times the prior (the peers answer in 10 ms, under the 30 ms prior).
    assert!(given_up.iter().all(|d| *d <= Duration::from_millis(241)), "{given_up:?}");
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_back_from_a_hang_is_priced_as_it_now_answers() {
    // s0 hangs from 3 s to 6 s (requests given up after 1 s, counted as
    // failures), then answers in 10 ms again. The answers given up on, and
    // those the hang held, describe the hang: once back and past its slow
    // start, s0 takes its third, not the trickle a latency estimate
    // remembering seconds-long answers would leave it.
    use std::sync::atomic::Ordering::Relaxed;
    use tower::Service;
    let all = servers("s", 3, 10);
    let (events, _) = timeline();
    let mut b = fleet(&all, BalanceConfig::default(), events);
    let mut hits = Vec::new();
    for t in 0..24_000u64 {
        all[0].st.delay_ms.store(if (3_000..6_000).contains(&t) { 3_600_000 } else { 10 }, Relaxed);
        if t % 1_000 == 0 {
            hits.push((all[0].hits(), all.iter().map(Server::hits).sum::<u64>()));
        }
        let fut = b.call(ha_core::WithAttempt::new(t));
        tokio::spawn(tokio::time::timeout(Duration::from_secs(1), fut));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let share = |from: usize, to: usize| (hits[to].0 - hits[from].0) as f64 / (hits[to].1 - hits[from].1) as f64;
    eprintln!("back from a hang: s0's share 6-10 s {:.3}, 18-23 s {:.3}", share(6, 10), share(18, 23));
    assert!(share(18, 23) > 0.25, "s0's share once back and ramped: {:.3}", share(18, 23));
}

/// Three servers at 1 request per millisecond; `s0` follows `down(t_ms)`.
/// Returns s0's successes and attempts, each counted at every millisecond,
/// and the event timeline.
async fn with_outages(
    cfg: BalanceConfig,
    down: impl Fn(u64) -> bool,
    ms: u64,
) -> (Vec<u64>, Vec<u64>, fleet::Timeline) {
    let all = servers("s", 3, 10);
    let (events, seen) = timeline();
    let mut b = fleet(&all, cfg, events);
    let s0 = all[0].clone();
    let mut ok_at = Vec::with_capacity(ms as usize);
    let mut hits_at = Vec::with_capacity(ms as usize);
    drive(&mut b, ms, 1.0, |t| {
        s0.set_refuse(down(t));
        ok_at.push(s0.ok());
        hits_at.push(s0.hits());
    })
    .await;
    (ok_at, hits_at, seen)
}

#[tokio::test(start_paused = true)]
async fn a_restarted_server_serves_again_within_seconds_and_ramps_up() {
    // Crashed (connection refused) from 2 s to 25 s, then back: out longer
    // than twice the 10 s slow-start window, so it ramps over the full
    // window from 10% (a brief outage sets the ramp back less; see the
    // flapping test).
    let (crash, restart) = (2_000, 25_000);
    let (ok_at, _, seen) = with_outages(BalanceConfig::default(), |t| (crash..restart).contains(&t), 55_000).await;
    let ejected = ejections(&seen);
    assert!(
        ejected.iter().any(|(_, who, why)| who == "s0" && *why == EjectionReason::ConsecutiveFailures),
        "{ejected:?}"
    );
    // The first answer after the restart.
    let back = (restart as usize..ok_at.len())
        .find(|&t| ok_at[t] > ok_at[restart as usize - 1])
        .expect("s0 serves again") as u64;
    eprintln!("restart: back at {restart} ms, serving at {back} ms, restored at {:?}", restorations(&seen, "s0"));
    assert!(back <= restart + 2_010, "s0 served again {} ms after it was back", back - restart);
    // The restoration is reported when it happens: not before the server
    // was back, and by the time it served.
    let restored = restorations(&seen, "s0");
    let last = *restored.last().expect("a restoration event");
    assert!(last >= Duration::from_millis(restart), "restored at {last:?}, before the server was back");
    assert!(last <= Duration::from_millis(back + 1), "restored at {last:?}, after serving at {back} ms");
    // Slow start from the readmission: a small share in its first second,
    // a full third once the 10 s window is over.
    let share = |from: u64, to: u64| (ok_at[to as usize] - ok_at[from as usize]) as f64 / (to - from) as f64;
    let at = last.as_millis() as u64;
    eprintln!(
        "restart: share {:.3} in the first second, {:.3} after the ramp",
        share(at, at + 1_000),
        share(at + 12_000, at + 20_000)
    );
    assert!(share(at, at + 1_000) < 0.12, "first second after readmission: {:.3}", share(at, at + 1_000));
    assert!(share(at + 12_000, at + 20_000) > 0.27, "after the ramp: {:.3}", share(at + 12_000, at + 20_000));
}

/// Down for 5 s, up for 5 s, from 5 s on, for a minute: s0's attempts
/// per down period and successes per up period (from 10 s on, after the
/// first ejection), each in multiples of its fair share (a third).
async fn flapping(cfg: BalanceConfig) -> (f64, f64) {
    let down = |t: u64| t >= 5_000 && (t / 5_000) % 2 == 1;
    let (ok_at, hits_at, _) = with_outages(cfg.clone(), down, 60_000).await;
    let (mut up_served, mut down_sent) = (Vec::new(), Vec::new());
    for period in 2..12u64 {
        let (from, to) = (period * 5_000, (period + 1) * 5_000 - 1);
        if down(from) {
            down_sent.push(hits_at[to as usize] - hits_at[from as usize]);
        } else {
            up_served.push(ok_at[to as usize] - ok_at[from as usize]);
        }
    }
    let fair = 5_000.0 / 3.0;
    let up = up_served.iter().sum::<u64>() as f64 / up_served.len() as f64 / fair;
    let down_share = down_sent.iter().sum::<u64>() as f64 / down_sent.len() as f64 / fair;
    eprintln!(
        "flapping ({:?}): served per up period {up_served:?}, sent per down period {down_sent:?} (fair share \
         1667): {up:.2}x fair while up, {down_share:.3}x while down",
        cfg.picker
    );
    (up, down_share)
}

#[tokio::test(start_paused = true)]
async fn a_flapping_server_gets_its_share_while_up_and_none_while_down() {
    // Issue 13's target: at least 80% of its fair share while up (each
    // readmission sets the ramp back by half of the 5 s outage instead of
    // restarting it), at most 5% while down. The judgement alone (ejection,
    // probes, slow start) under round robin:
    let judged_rr = BalanceConfig { picker: Picker::RoundRobin, ..BalanceConfig::default() };
    let (up, down) = flapping(judged_rr).await;
    assert!(up >= 0.8, "round robin with the judgement, share while up: {up:.2}x fair");
    assert!(down <= 0.05, "round robin with the judgement, share while down: {down:.3}x fair");
    // With the defaults P2C over PeakEWMA adds a bias of its own against
    // identical constant-latency servers (a returning endpoint's estimate
    // sits a few percent above its peers' for a while, and ties in pending
    // go to the lower estimate): 0.76x with slow start off altogether.
    let (up, down) = flapping(BalanceConfig::default()).await;
    assert!(up >= 0.7, "defaults, share while up: {up:.2}x fair");
    assert!(down <= 0.05, "defaults, share while down: {down:.3}x fair");
}

/// Three servers of 10 ms under round robin with the judgement, one
/// request per millisecond, each given up on after 100 ms; `s0` is out
/// from 2 s to 4 s, refusing connections or (`stalled`) answering nothing
/// in time. Returns s0's share of the successes in the first second after
/// its readmission.
async fn brief_outage(stalled: bool) -> f64 {
    let all = servers("s", 3, 10);
    let (events, seen) = timeline();
    let cfg = BalanceConfig { picker: Picker::RoundRobin, ..BalanceConfig::default() };
    let mut b = fleet(&all, cfg, events);
    let s0 = all[0].clone();
    let mut ok_at = Vec::new();
    let mut total_ok_at = Vec::new();
    let ok = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for t in 0..12_000u64 {
        let out = (2_000..4_000).contains(&t);
        if stalled {
            s0.st.delay_ms.store(if out { 10_000 } else { 10 }, std::sync::atomic::Ordering::Relaxed);
        } else {
            s0.set_refuse(out);
        }
        ok_at.push(s0.ok());
        total_ok_at.push(ok.load(std::sync::atomic::Ordering::Relaxed));
        let fut = tower::Service::call(&mut b, ha_core::WithAttempt::new(t));
        let ok = ok.clone();
        tokio::spawn(async move {
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(100), fut).await {
                ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let at = restorations(&seen, "s0").last().expect("s0 readmitted").as_millis() as usize;
    assert!((4_000..10_000).contains(&at), "readmitted at {at} ms");
    (ok_at[at + 1_000] - ok_at[at]) as f64 / (total_ok_at[at + 1_000] - total_ok_at[at]) as f64
}

#[tokio::test(start_paused = true)]
async fn a_brief_outage_costs_little_share_unless_the_endpoint_stopped_answering() {
    // Refused connections for 2 s: back near its full third at once.
    let refused = brief_outage(false).await;
    // Requests unanswered for 2 s (overload, a stall): the share it had is
    // what it could not carry, so it ramps from 10% again.
    let stalled = brief_outage(true).await;
    eprintln!("brief outage: share in the first second back {refused:.3} (refused), {stalled:.3} (stalled)");
    assert!(refused > 0.2, "refused for 2 s, first second back: {refused:.3}");
    assert!(stalled < 0.12, "stalled for 2 s, first second back: {stalled:.3}");
}

/// Ten servers, five of which refuse every request at once; one request
/// per millisecond for 30 s. Returns the share of attempts sent to the
/// refusing ones and the success rate.
async fn black_hole(cfg: BalanceConfig) -> (f64, f64) {
    let all = servers("s", 10, 10);
    for s in &all[..5] {
        s.set_refuse(true);
    }
    let (events, _) = timeline();
    let mut b = fleet(&all, cfg, events);
    let tally = drive(&mut b, 30_000, 1.0, |_| {}).await;
    let refused: u64 = all[..5].iter().map(Server::hits).sum();
    let total: u64 = all.iter().map(Server::hits).sum();
    (refused as f64 / total as f64, tally.success())
}

#[tokio::test(start_paused = true)]
async fn fast_failures_never_draw_traffic_to_refusing_endpoints() {
    // The cost alone (no ejection): refusing endpoints must cost more than
    // slow successes, so they get less than round robin's half.
    let cost_only = BalanceConfig { outlier: OutlierConfig::disabled(), ..BalanceConfig::default() };
    let (share, _) = black_hole(cost_only).await;
    assert!(share < 0.25, "share of attempts to refusing endpoints, cost alone: {share:.3}");
    // With the defaults, success is at least round robin's.
    let (share_defaults, ha) = black_hole(BalanceConfig::default()).await;
    let (_, rr) = black_hole(round_robin()).await;
    eprintln!("black hole: share to refusing {share:.3} (cost alone), {share_defaults:.3} (defaults); success {ha:.3} vs round robin {rr:.3}");
    assert!(share_defaults < 0.25, "share with the defaults: {share_defaults:.3}");
    assert!(ha >= rr, "ha {ha:.3} < round robin {rr:.3}");
}

#[tokio::test(start_paused = true)]
async fn slow_start_holds_back_a_batch_of_cold_endpoints() {
    let warm = servers("w", 5, 10);
    let cold = servers("c", 5, 10);
    let (events, _) = timeline();
    let mut b = fleet(&warm, BalanceConfig::default(), events);
    drive(&mut b, 3_000, 2.0, |_| {}).await;
    b.endpoints().batch(cold.iter().map(|s| tower::discover::Change::Insert(s.name, Endpoint::new(s.clone()))));
    let hits = |set: &[Server]| set.iter().map(Server::hits).sum::<u64>();
    let (w0, c0) = (hits(&warm), hits(&cold));
    drive(&mut b, 1_000, 2.0, |_| {}).await;
    let first_second = (hits(&cold) - c0) as f64 / ((hits(&cold) - c0) + (hits(&warm) - w0)) as f64;
    // The ramp starts at 10%: the batch gets about that share, not the 22%
    // or more two new candidates compared with each other would give it.
    eprintln!("cold batch: share {first_second:.3} in its first second");
    assert!(first_second < 0.15, "share of the cold batch in its first second: {first_second:.3}");
    assert!(first_second > 0.0, "the batch gets some traffic");
    drive(&mut b, 10_000, 2.0, |_| {}).await;
    let (w1, c1) = (hits(&warm), hits(&cold));
    drive(&mut b, 2_000, 2.0, |_| {}).await;
    let after = (hits(&cold) - c1) as f64 / ((hits(&cold) - c1) + (hits(&warm) - w1)) as f64;
    eprintln!("cold batch: share {after:.3} after the window");
    assert!((after - 0.5).abs() < 0.1, "share after the window: {after:.3}");
}

/// Three servers failing at random, `permille[i]` per thousand; one
/// request per millisecond for 25 s. Returns the ejections.
async fn gray(permille: [u64; 3]) -> Vec<(Duration, String, EjectionReason)> {
    let all = servers("s", 3, 10);
    for (s, p) in all.iter().zip(permille) {
        s.set_fail_permille(p);
    }
    let (events, seen) = timeline();
    let mut b = fleet(&all, BalanceConfig::default(), events);
    drive(&mut b, 25_000, 1.0, |_| {}).await;
    ejections(&seen)
}

#[tokio::test(start_paused = true)]
async fn one_of_three_failing_a_fifth_is_ejected_and_a_fleet_failing_alike_is_not() {
    let ejected = gray([200, 0, 0]).await;
    assert!(
        ejected.iter().any(|(_, who, why)| who == "s0" && *why == EjectionReason::FailurePercentage),
        "{ejected:?}"
    );
    assert!(ejected.iter().all(|(_, who, _)| who == "s0"), "{ejected:?}");
    let alike = gray([200, 200, 200]).await;
    eprintln!("gray: one failing 20%: {ejected:?}; all failing 20%: {alike:?}");
    assert!(alike.is_empty(), "{alike:?}");
}

#[tokio::test(start_paused = true)]
async fn the_pending_pickers_price_fast_failures_too() {
    // P2C over pending requests: a refusing endpoint has nothing pending
    // and would win every comparison it is in.
    let cost_only =
        BalanceConfig { picker: Picker::P2cPending, outlier: OutlierConfig::disabled(), ..Default::default() };
    let (share, success) = black_hole(cost_only).await;
    let (_, rr) = black_hole(round_robin()).await;
    eprintln!("black hole, p2c pending: share to refusing {share:.3}; success {success:.3} vs round robin {rr:.3}");
    assert!(share < 0.25, "share of attempts to refusing endpoints: {share:.3}");
    assert!(success >= rr, "p2c pending {success:.3} < round robin {rr:.3}");
}

/// Three servers of 3 worker slots at 20 ms (150/s each) at 300/s; s0
/// fails 30% of its requests at once, which frees its workers. Requests
/// come as a retry layer sends them, which grants retries unless
/// `refused`: s0's share of the requests.
async fn gray_share_under_retries(refused: bool) -> f64 {
    let all: Vec<Server> = servers("s", 3, 20).into_iter().map(|s| s.slots(3)).collect();
    all[0].set_fail_permille(300);
    let mut b = ha_balance::Balance::builder()
        .config(BalanceConfig { outlier: OutlierConfig::disabled(), ..BalanceConfig::default() })
        .seed(5)
        .retries_refused(move || refused)
        .build_with(all.iter().map(|s| (s.name, Endpoint::new(s.clone()))))
        .unwrap();
    fleet::drive_retried(&mut b, 20_000, 0.3).await;
    all[0].hits() as f64 / all.iter().map(Server::hits).sum::<u64>() as f64
}

#[tokio::test(start_paused = true)]
async fn a_failure_a_retry_absorbs_costs_less_than_one_the_caller_sees() {
    // Retried, a failure costs the caller one more attempt: s0, whose
    // failures free its workers at once, keeps nearly its third, and the
    // two others do not queue for it (0.31; 0.21 when every failure was
    // priced in full). Retries refused (a dry budget), each failure is one
    // the caller sees, and s0 is priced out of as much as it can be.
    let granted = gray_share_under_retries(false).await;
    let refused = gray_share_under_retries(true).await;
    eprintln!("s0's share: retries granted {granted:.3}, refused {refused:.3}");
    assert!(granted > 0.3, "s0 priced out of its share although its failures are retried: {granted:.3}");
    assert!(refused < granted - 0.05, "granted {granted:.3}, refused {refused:.3}");
}

/// Per second, the attempts `cold` received and the attempts all received.
type Seconds = Vec<(u64, u64)>;

/// The share of attempts `cold` received in each whole second from
/// `from_s` to `to_s`.
fn shares(per_second: &Seconds, from_s: usize, to_s: usize) -> Vec<f64> {
    (from_s..to_s)
        .map(|t| {
            let (c0, a0) = per_second[t];
            let (c1, a1) = per_second[t + 1];
            (c1 - c0) as f64 / (a1 - a0).max(1) as f64
        })
        .collect()
}

/// Four warm servers of `warm_ms` and four more (`cold`, driven by
/// `set(cold, t_ms)`), at 800 requests a second for `ms`: the attempts of
/// each second. With `join: Some(at)` the four join at `at` ms (after a
/// second without traffic, when the answers are in); `t_ms` goes on from
/// `at` then.
async fn with_cold(join: Option<u64>, ms: u64, warm_ms: u64, set: impl Fn(&[Server], u64)) -> Seconds {
    let warm = servers("w", 4, warm_ms);
    let cold = servers("c", 4, warm_ms);
    let (events, _) = timeline();
    let first: Vec<Server> = warm.iter().chain(if join.is_some() { &[][..] } else { &cold[..] }).cloned().collect();
    let mut b = fleet(&first, BalanceConfig::default(), events);
    let hits = |set: &[Server]| set.iter().map(Server::hits).sum::<u64>();
    let mut per_second = Vec::new();
    let mut tick = |t: u64| {
        set(&cold, t);
        if t % 1_000 == 0 {
            per_second.push((hits(&cold), hits(&warm) + hits(&cold)));
        }
    };
    if let Some(at) = join {
        drive(&mut b, at, 0.8, &mut tick).await;
        b.endpoints().batch(cold.iter().map(|s| tower::discover::Change::Insert(s.name, Endpoint::new(s.clone()))));
        drive(&mut b, ms - at, 0.8, |t| tick(t + at)).await;
    } else {
        drive(&mut b, ms, 0.8, &mut tick).await;
    }
    per_second.push((hits(&cold), hits(&warm) + hits(&cold)));
    per_second
}

fn set_delay(set: &[Server], ms: u64) {
    for s in set {
        s.st.delay_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

#[tokio::test(start_paused = true)]
async fn half_the_pool_back_with_cold_caches_waits_until_it_is_warm() {
    // Restarted at 3 s (connections refused), back at 13 s five times
    // slower (cold caches) until 23 s.
    let per_second = with_cold(None, 60_000, 20, |cold, t| {
        for s in cold {
            s.set_refuse((3_000..13_000).contains(&t));
        }
        set_delay(cold, if (13_000..23_000).contains(&t) { 100 } else { 20 });
    })
    .await;
    // Readmitted by a probe within two seconds of being back; from then
    // until they are warm, under half a percent of the traffic, not the
    // fifth that a ramp by time alone gives them (two of them compared
    // with each other, and a full share after the window): a percent would
    // set each second's p99 to their latency.
    let cold = shares(&per_second, 15, 23);
    eprintln!("cold caches: share of the cold half per second while cold {cold:.3?}");
    assert!(cold.iter().all(|&s| s < 0.005), "share of the cold half while cold: {cold:.3?}");
    // Warm again, they ramp up to their half.
    let after = shares(&per_second, 55, 59);
    eprintln!("cold caches: share once warm {after:.3?}");
    assert!(after.iter().all(|&s| s > 0.4), "share of the half once warm: {after:.3?}");
}

#[tokio::test(start_paused = true)]
async fn a_batch_joining_cold_waits_until_it_is_warm_and_one_joining_warm_does_not() {
    // Four join at 3 s, five times slower than the rest until 13 s.
    let per_second =
        with_cold(Some(3_000), 50_000, 20, |cold, t| set_delay(cold, if t < 13_000 { 100 } else { 20 })).await;
    let cold = shares(&per_second, 4, 13);
    eprintln!("cold join: share of the batch per second while cold {cold:.3?}");
    assert!(cold.iter().all(|&s| s < 0.008), "share of the batch while cold: {cold:.3?}");
    let after = shares(&per_second, 45, 49);
    assert!(after.iter().all(|&s| s > 0.4), "share of the batch once warm: {after:.3?}");
    // A batch as fast as the rest, in a fleet of 5 ms, much faster than
    // the latency prior (30 ms), joining once the fleet's estimates have come
    // down from it: it starts from its peers' latency, so it is not taken
    // for cold and ramps over the 10 s window.
    let per_second = with_cold(Some(40_000), 57_000, 5, |_, _| {}).await;
    let ramp = shares(&per_second, 40, 56);
    eprintln!("warm join: share of the batch per second {ramp:.3?}");
    assert!(ramp[0] < 0.15, "first second: {:.3}", ramp[0]);
    assert!(ramp[13..].iter().all(|&s| s > 0.4), "share after the window: {ramp:.3?}");
}

#[tokio::test(start_paused = true)]
async fn an_ejection_the_others_cannot_carry_is_undone() {
    ejection_the_others_cannot_carry(Picker::P2cPeakEwma).await;
}

/// The pickers that weigh no latency time responses too while the interval
/// rules are on: without it the guard saw no queue, and s0 stayed out for
/// its whole ejection (a lab probe of two backends, one failing 30%: the
/// other took all the load, 60% success against round robin's 92%).
#[tokio::test(start_paused = true)]
async fn an_ejection_the_others_cannot_carry_is_undone_whatever_the_picker() {
    ejection_the_others_cannot_carry(Picker::P2cPending).await;
    ejection_the_others_cannot_carry(Picker::RoundRobin).await;
}

/// Three servers of 3 worker slots at 20 ms (150/s each) at 360/s, 80% of
/// their capacity; s0 fails a quarter of its requests. The
/// failure-percentage rule ejects it; the two left would take 360/s against
/// 300 and queue without end. Once they queue (their latency twice what it
/// was), s0 is back, and stays in while its capacity is needed.
async fn ejection_the_others_cannot_carry(picker: Picker) {
    let all: Vec<Server> = servers("s", 3, 20).into_iter().map(|s| s.slots(3)).collect();
    all[0].set_fail_permille(250);
    let (events, seen) = timeline();
    let cfg = BalanceConfig {
        picker,
        outlier: OutlierConfig { consecutive_failures: 0, ..OutlierConfig::default() },
        ..BalanceConfig::default()
    };
    let mut b = fleet(&all, cfg, events);
    let mut hits = Vec::new();
    drive(&mut b, 25_000, 0.36, |t| {
        if t % 1_000 == 0 {
            hits.push(all[0].hits());
        }
    })
    .await;
    let ejected: Vec<Duration> =
        ejections(&seen).into_iter().filter(|(_, who, _)| who == "s0").map(|(at, _, _)| at).collect();
    let back = restorations(&seen, "s0");
    eprintln!("{picker:?}: s0 ejected at {ejected:?}, back at {back:?}, hits per second {hits:?}");
    let first = *ejected.first().expect("the failure-percentage rule ejects s0");
    assert!(
        back.first().is_some_and(|at| *at > first && *at - first <= Duration::from_secs(3)),
        "{picker:?}: s0 was not readmitted once the others queued: ejected {ejected:?}, back {back:?}"
    );
    assert_eq!(ejected.len(), 1, "{picker:?}: s0 was ejected again while its capacity was needed: {ejected:?}");
    let second = first.as_secs() as usize + 5;
    assert!(hits[second + 1] - hits[second] > 50, "{picker:?}: s0 idle after its return: {hits:?}");
}

#[tokio::test(start_paused = true)]
async fn a_gray_endpoint_the_others_cannot_spare_is_not_ejected() {
    // Three servers of 3 worker slots at 20 ms (150/s each) at 360/s, 80%
    // of their capacity, healthy for 15 s; then s0 fails a quarter of its
    // requests for a minute. The failure-percentage rule would eject it, and the two
    // left would take 360/s against 300. The fleet already queues (its
    // latency a quarter above its calmest): s0 still serves three requests
    // in four, so it stays, priced by its failures.
    let all: Vec<Server> = servers("s", 3, 20).into_iter().map(|s| s.slots(3)).collect();
    let (events, seen) = timeline();
    let cfg = BalanceConfig {
        outlier: OutlierConfig { consecutive_failures: 0, ..OutlierConfig::default() },
        ..BalanceConfig::default()
    };
    let mut b = fleet(&all, cfg, events);
    drive(&mut b, 15_000, 0.36, |_| {}).await;
    all[0].set_fail_permille(250);
    let gray = drive(&mut b, 60_000, 0.36, |_| {}).await;
    let ejected = ejections(&seen);
    eprintln!("ejections {ejected:?}; success {:.4}", gray.success());
    assert!(ejected.is_empty(), "an endpoint whose capacity the fleet needs was ejected: {ejected:?}");
    assert!(gray.success() > 0.9, "success {:.4}", gray.success());
}

#[tokio::test(start_paused = true)]
async fn slow_start_yields_when_the_warm_endpoints_queue() {
    // Two warm servers of 3 worker slots at 20 ms (150/s each) at 250/s;
    // two as fast join as the load steps to 450/s, more than the warm two
    // can take. By time alone the joiners would ramp from a tenth of their
    // share over 10 s while the warm two queue without end; once the warm
    // ones' latency doubles, the ramp ends and the four share the load.
    let warm: Vec<Server> = servers("w", 2, 20).into_iter().map(|s| s.slots(3)).collect();
    let joining: Vec<Server> = servers("j", 2, 20).into_iter().map(|s| s.slots(3)).collect();
    let (events, _) = timeline();
    let mut b = fleet(&warm, BalanceConfig::default(), events);
    drive(&mut b, 2_000, 0.25, |_| {}).await;
    b.endpoints().batch(joining.iter().map(|s| tower::discover::Change::Insert(s.name, Endpoint::new(s.clone()))));
    let hits = |set: &[Server]| set.iter().map(Server::hits).sum::<u64>();
    let mut marks = Vec::new();
    let overload = drive(&mut b, 5_000, 0.45, |t| {
        if t == 2_000 || t == 4_000 {
            marks.push((hits(&joining), hits(&warm) + hits(&joining)));
        }
    })
    .await;
    let share = (marks[1].0 - marks[0].0) as f64 / (marks[1].1 - marks[0].1) as f64;
    eprintln!("joiners' share 2-4 s after joining: {share:.3}; success {:.4}", overload.success());
    assert!(share > 0.5, "the joiners' ramp held back capacity the load needed: share {share:.3}");
    assert!(overload.success() > 0.99, "success {:.4}", overload.success());
}

#[tokio::test(start_paused = true)]
async fn open_breakers_never_take_out_capacity_the_load_needs() {
    // Four servers of 5 worker slots at 20 ms (250/s each, 1000/s in all)
    // at 600/s. s0's breaker opens (it failed on its own, say): the three
    // left carry 600/s at 80% of their capacity, so s0 stays out. Then
    // s1's opens too: the two left would take 600/s against 500, and their
    // queues would grow without end. A breaker's veto is an ejection by
    // another name: once the two left queue (their latency twice what it
    // was), both vetoed endpoints, which still serve, are taken back.
    let all: Vec<Server> = servers("s", 4, 20).into_iter().map(|s| s.slots(5)).collect();
    let gates = [gate::Advisory::with_runs(), gate::Advisory::with_runs()];
    let mut b = ha_balance::Balance::builder()
        .config(BalanceConfig::default())
        .seed(5)
        .build_with(all.iter().enumerate().map(|(i, s)| {
            let endpoint = Endpoint::new(s.clone());
            (s.name, if i < 2 { endpoint.health_gate(gates[i].clone()) } else { endpoint })
        }))
        .unwrap();
    drive(&mut b, 5_000, 0.6, |_| {}).await;
    let vetoed = |set: &[Server]| set[..2].iter().map(Server::hits).sum::<u64>();
    let total = |set: &[Server]| set.iter().map(Server::hits).sum::<u64>();

    gates[0].veto(true);
    let (s0, t0) = (all[0].hits(), total(&all));
    let one = drive(&mut b, 10_000, 0.6, |_| {}).await;
    let one_out = (all[0].hits() - s0) as f64 / (total(&all) - t0) as f64;

    gates[1].veto(true);
    let mut marks = Vec::new();
    let two = drive(&mut b, 10_000, 0.6, |t| {
        if t == 5_000 {
            marks.push((vetoed(&all), total(&all)));
        }
    })
    .await;
    let two_out = (vetoed(&all) - marks[0].0) as f64 / (total(&all) - marks[0].1) as f64;
    eprintln!(
        "s0's share with its breaker open: {one_out:.4}; the pair's with both open (5-10 s): {two_out:.3}; success {:.4} {:.4}",
        one.success(),
        two.success()
    );
    assert!(one_out < 0.01, "one breaker open, capacity to spare: s0 took {one_out:.4}");
    assert!(two_out > 0.3, "both open, the two left overloaded: the pair took only {two_out:.3}");
    assert!(two.success() > 0.99, "success {:.4}", two.success());
}

/// How many times the timeline says the endpoints began to queue.
fn queueing_began(seen: &fleet::Timeline) -> usize {
    seen.lock().unwrap().iter().filter(|(_, e)| *e == ha_core::Event::Queueing { queueing: true }).count()
}

/// Sends `per_ms` requests a millisecond for `ms`, each carrying an attempt
/// context as a retry layer's do: the share of them whose pick found the
/// endpoints queueing.
async fn queueing_share(b: &mut fleet::Fleet, ms: u64, per_ms: f64) -> f64 {
    use ha_core::HasAttemptContext;
    use tower::Service;
    let (mut owed, mut sent, mut queueing) = (0.0, 0u32, 0u32);
    for _ in 0..ms {
        owed += per_ms;
        while owed >= 1.0 {
            owed -= 1.0;
            let mut req = ha_core::WithAttempt::new(u64::from(sent));
            let ctx = ha_core::AttemptContext::new();
            req.set_attempt_context(ctx.clone());
            tokio::spawn(b.call(req));
            sent += 1;
            queueing += u32::from(ctx.queueing());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    f64::from(queueing) / f64::from(sent.max(1))
}

#[tokio::test(start_paused = true)]
async fn the_balancer_tells_the_retry_layer_when_its_endpoints_queue_past_their_capacity() {
    // Three servers of two slots at 10 ms: 600 requests a second in all.
    let all: Vec<Server> = servers("s", 3, 10).into_iter().map(|s| s.slots(2)).collect();
    let (events, seen) = timeline();
    let mut b = fleet(&all, BalanceConfig::default(), events);
    let began = || queueing_began(&seen);
    // Half the capacity: no queue.
    assert_eq!(queueing_share(&mut b, 2_000, 0.3).await, 0.0);
    // One endpoint of three twenty times slower: the fleet's median is not.
    all[0].st.delay_ms.store(200, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(queueing_share(&mut b, 2_000, 0.3).await, 0.0);
    all[0].st.delay_ms.store(10, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(began(), 0);
    // Twice the capacity: the queues grow, and within a second every pick
    // says so.
    let _ = queueing_share(&mut b, 1_000, 1.2).await;
    assert_eq!(queueing_share(&mut b, 500, 1.2).await, 1.0);
    assert_eq!(began(), 1, "{:?}", seen.lock().unwrap());
    assert!(b.is_queueing());
}

#[tokio::test(start_paused = true)]
async fn a_heavy_tail_is_not_taken_for_a_queue() {
    use std::sync::atomic::Ordering::Relaxed;
    // From the start, one request in fifty takes 400 ms and the rest 5 ms,
    // with no queue anywhere: the PeakEWMA estimates sit near the tail once
    // they have seen it, eighty times the first answers; the mean time in
    // flight stays where it was.
    let all: Vec<Server> = servers("s", 3, 5).into_iter().map(|s| s.slots(64)).collect();
    let (events, seen) = timeline();
    let mut b = fleet(&all, BalanceConfig::default(), events);
    let mut queued = 0.0;
    for t in 0..20_000u64 {
        for s in &all {
            s.st.delay_ms.store(if t % 100 == 99 { 400 } else { 5 }, Relaxed);
        }
        if t % 2 == 1 {
            queued += queueing_share(&mut b, 1, 1.0).await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let began = queueing_began(&seen);
    assert_eq!(began, 0, "{queued} of 10000 picks judged queueing");
}

#[tokio::test(start_paused = true)]
async fn one_endpoint_holding_requests_is_not_a_fleet_queueing() {
    use std::sync::atomic::Ordering::Relaxed;
    // s0 hangs (accepts, never answers) from 2 s on, and round robin
    // keeps sending it a third of the requests: the requests it holds are
    // its fault, not a queue of the fleet's, and their retries elsewhere
    // add no load to a queue.
    let all: Vec<Server> = servers("s", 3, 10).into_iter().map(|s| s.slots(64)).collect();
    let (events, seen) = timeline();
    let mut b = fleet(&all, BalanceConfig { picker: Picker::RoundRobin, ..BalanceConfig::default() }, events);
    assert_eq!(queueing_share(&mut b, 2_000, 0.6).await, 0.0);
    all[0].st.delay_ms.store(3_600_000, Relaxed);
    let share = queueing_share(&mut b, 10_000, 0.6).await;
    let began = queueing_began(&seen);
    assert_eq!(began, 0, "{share} of the picks judged queueing");
}

#[tokio::test(start_paused = true)]
async fn a_quiet_start_is_no_calm_to_judge_a_busy_day_by() {
    // A trickle (one request in 50 ms, mostly none in flight when sampled)
    // and then ten times the traffic at the same latency: no queue.
    let all: Vec<Server> = servers("s", 3, 20).into_iter().map(|s| s.slots(64)).collect();
    let (events, seen) = timeline();
    let mut b = fleet(&all, BalanceConfig::default(), events);
    assert_eq!(queueing_share(&mut b, 30_000, 0.02).await, 0.0);
    assert_eq!(queueing_share(&mut b, 10_000, 0.3).await, 0.0);
    let began = queueing_began(&seen);
    assert_eq!(began, 0);
}
