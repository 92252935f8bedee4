//! Each picker's distribution, on paused virtual time.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{backend, req, Backend, Req};
use ha_balance::{Balance, BalanceConfig, Endpoint, Picker};
use tower::{Service, ServiceExt};

type B = Balance<&'static str, Backend, Req>;

fn config(picker: Picker) -> BalanceConfig {
    BalanceConfig { picker, ..BalanceConfig::default() }
}

fn build(picker: Picker, endpoints: Vec<(&'static str, Endpoint<Backend>)>) -> B {
    Balance::builder().config(config(picker)).seed(7).build_with(endpoints).unwrap()
}

/// A ring hash balancer over `backends`, keyed by the request number.
fn ring_hash(backends: &[Backend]) -> B {
    Balance::builder()
        .config(config(Picker::ring_hash()))
        .hash_key(|r: &Req| Some(r.request))
        .seed(1)
        .build_with(backends.iter().map(|x| (x.name, Endpoint::new(x.clone()))))
        .unwrap()
}

async fn send(b: &mut B, key: u64) -> &'static str {
    b.ready().await.unwrap().call(req(key)).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn round_robin_shares_are_exact_over_a_cycle() {
    let (a, bb, c) = (backend("a"), backend("b"), backend("c"));
    let mut b = build(
        Picker::RoundRobin,
        vec![
            ("a", Endpoint::new(a.clone()).weight(3)),
            ("b", Endpoint::new(bb.clone()).weight(2)),
            ("c", Endpoint::new(c.clone()).weight(1)),
        ],
    );
    for _ in 0..600 {
        send(&mut b, 0).await;
    }
    assert_eq!((a.hits(), bb.hits(), c.hits()), (300, 200, 100));
    // Smooth: the heavy endpoint never takes a whole cycle's share in a row.
    let mut order = Vec::new();
    for _ in 0..6 {
        order.push(send(&mut b, 0).await);
    }
    let mut longest = 1;
    let mut run = 1;
    for w in order.windows(2) {
        run = if w[0] == w[1] { run + 1 } else { 1 };
        longest = longest.max(run);
    }
    assert!(longest < 3, "{order:?}");
}

#[tokio::test(start_paused = true)]
async fn round_robin_spreads_an_unavailable_endpoints_turns_over_all_the_others() {
    let backends: Vec<Backend> = ["a", "b", "c", "d"].into_iter().map(backend).collect();
    let down = common::Switch::default();
    let names = ["a", "b", "c", "d"];
    let endpoints = backends
        .iter()
        .zip(names)
        .map(|(be, name)| {
            let e = Endpoint::new(be.clone());
            (name, if name == "b" { e.health_gate(down.clone()) } else { e })
        })
        .collect();
    let mut b = build(Picker::RoundRobin, endpoints);
    down.set_down(true);
    for _ in 0..300 {
        send(&mut b, 0).await;
    }
    let hits: Vec<u64> = backends.iter().map(Backend::hits).collect();
    // b's turns go evenly to the others, not all to its neighbour c.
    assert_eq!(hits, vec![100, 0, 100, 100]);
}

#[tokio::test(start_paused = true)]
async fn p2c_peak_ewma_prefers_the_faster_of_two() {
    let fast = backend("fast").delay(10);
    let slow = backend("slow").delay(100);
    let mut b =
        build(Picker::P2cPeakEwma, vec![("fast", Endpoint::new(fast.clone())), ("slow", Endpoint::new(slow.clone()))]);
    for _ in 0..500 {
        send(&mut b, 0).await;
    }
    // The slow one is tried while its estimate is unknown or decayed, and otherwise avoided.
    assert!(fast.hits() > 9 * slow.hits(), "fast {} slow {}", fast.hits(), slow.hits());
    let stats = b.endpoint_stats();
    let slow_stats = stats.iter().find(|s| &*s.name == "slow").unwrap();
    assert!(slow_stats.latency >= Duration::from_millis(50), "{:?}", slow_stats.latency);
}

#[tokio::test(start_paused = true)]
async fn p2c_peak_ewma_looks_past_two_candidates_far_slower_than_the_fastest() {
    // A mixed fleet: two large servers answering in 10 ms and six small
    // ones queueing at 200 ms. Two random candidates are both small 54% of
    // the time, and P2C would hand one of them the request; it looks
    // further instead (at most 3 more pairs: 0.54^4, 8%).
    let names = ["big0", "big1", "small0", "small1", "small2", "small3", "small4", "small5"];
    let backends: Vec<Backend> =
        names.iter().map(|&n| backend(n).delay(if n.starts_with("big") { 10 } else { 200 })).collect();
    let mut b =
        build(Picker::P2cPeakEwma, names.iter().zip(&backends).map(|(&n, s)| (n, Endpoint::new(s.clone()))).collect());
    // Each learns its latency.
    for _ in 0..200 {
        send(&mut b, 0).await;
    }
    let small = |bs: &[Backend]| bs.iter().filter(|s| s.name.starts_with("small")).map(Backend::hits).sum::<u64>();
    let before = small(&backends);
    let n = 1000;
    for _ in 0..n {
        send(&mut b, 0).await;
    }
    let share = (small(&backends) - before) as f64 / n as f64;
    assert!(share < 0.15, "the small servers took {share:.3} of the picks");
}

/// A P2C PeakEWMA balancer over "fast" (10 ms) and "slow" (40 ms) that
/// has seen each answer once.
async fn fast_and_slow(pending_bias: f64) -> (B, Backend, Backend) {
    let fast = backend("fast").delay(10);
    let slow = backend("slow").delay(40);
    let load = ha_balance::LoadConfig {
        default_rtt: Duration::from_millis(10),
        pending_bias,
        ..ha_balance::LoadConfig::default()
    };
    let cfg = BalanceConfig { load, ..config(Picker::P2cPeakEwma) };
    let mut b: B = Balance::builder()
        .config(cfg)
        .seed(7)
        .build_with([("fast", Endpoint::new(fast.clone())), ("slow", Endpoint::new(slow.clone()))])
        .unwrap();
    // Two at once: one each (equal priors, the second sees the first pending).
    let first: Vec<_> = (0..2).map(|_| b.call(req(0))).collect();
    futures::future::join_all(first).await;
    assert_eq!((fast.hits(), slow.hits()), (1, 1));
    (b, fast, slow)
}

/// How many of `n` requests sent at once go to "fast" rather than "slow"
/// (see [`fast_and_slow`]).
async fn sent_to_fast_of(n: u64, pending_bias: f64) -> u64 {
    let (mut b, fast, _slow) = fast_and_slow(pending_bias).await;
    let burst: Vec<_> = (0..n).map(|_| b.call(req(0))).collect();
    futures::future::join_all(burst).await;
    fast.hits() - 1
}

#[tokio::test(start_paused = true)]
async fn p2c_peak_ewma_weighs_in_flight_requests_by_the_pending_bias() {
    // Latency x (pending + 1): the 4x faster endpoint stays the cheaper one
    // while it holds up to 3 requests, so the 5th goes to the slow one.
    assert_eq!(sent_to_fast_of(4, 1.0).await, 4);
    assert_eq!(sent_to_fast_of(5, 1.0).await, 4);
    // Latency x sqrt(pending + 1): up to 15 (4^2 - 1).
    assert_eq!(sent_to_fast_of(16, 0.5).await, 16);
    assert_eq!(sent_to_fast_of(17, 0.5).await, 16);
    // The default, latency x (pending + 1)^0.75: up to 5 (4^(4/3) = 6.3).
    assert_eq!(sent_to_fast_of(6, 0.75).await, 6);
    assert_eq!(sent_to_fast_of(7, 0.75).await, 6);
    assert_eq!(ha_balance::LoadConfig::default().pending_bias, 0.75);
}

/// How many of a burst of 16 go to "fast" (hung from now: it holds every
/// request) rather than "slow" (see [`fast_and_slow`]), `quiet_ms` after
/// fast took a request it has not answered.
async fn sent_to_hung_fast_after(quiet_ms: u64) -> u64 {
    let (mut b, fast, _slow) = fast_and_slow(ha_balance::LoadConfig::default().pending_bias).await;
    fast.st.delay_ms.store(3_600_000, Ordering::Relaxed);
    // Each call is polled once, which sends it, and kept in flight.
    let mut in_flight = Vec::new();
    let mut send = |b: &mut B| {
        let mut call = Box::pin(b.call(req(0)));
        assert!(futures::FutureExt::now_or_never(call.as_mut()).is_none(), "nothing answers at once");
        in_flight.push(call);
    };
    send(&mut b);
    assert_eq!(fast.hits(), 2, "the cheaper endpoint takes the first request");
    tokio::time::sleep(Duration::from_millis(quiet_ms)).await;
    let before = fast.hits();
    for _ in 0..16 {
        send(&mut b);
    }
    fast.hits() - before
}

#[tokio::test(start_paused = true)]
async fn p2c_peak_ewma_prices_a_busy_endpoint_by_how_long_it_has_gone_without_answering() {
    // An endpoint holding a request it has not answered in `quiet` has a
    // latency of at least `quiet`, whatever its estimate (10 ms, from
    // before it hung) says; past twice the estimate that bound is its
    // price. At 100 ms (2.5 times slow's 40 ms) it is the dearer of the
    // two, and slow takes the burst until it holds several. At 1 ms,
    // nothing is known yet: fast keeps its price.
    let after_1ms = sent_to_hung_fast_after(1).await;
    let after_100ms = sent_to_hung_fast_after(100).await;
    assert!(after_1ms >= 12, "{after_1ms} of 16 to fast 1 ms after it took a request");
    assert!(after_100ms <= 4, "{after_100ms} of 16 to fast 100 ms into its silence");
}

#[tokio::test(start_paused = true)]
async fn fast_failures_do_not_make_an_endpoint_look_fast() {
    let flaky = backend("flaky").delay(20);
    let load = ha_balance::LoadConfig { default_rtt: Duration::from_millis(10), ..ha_balance::LoadConfig::default() };
    let cfg =
        BalanceConfig { load, outlier: ha_balance::config::OutlierConfig::disabled(), ..config(Picker::P2cPeakEwma) };
    let mut b: B =
        Balance::builder().config(cfg).seed(7).build_with([("flaky", Endpoint::new(flaky.clone()))]).unwrap();
    let latency = |b: &B| b.endpoint_stats()[0].latency;
    send(&mut b, 0).await;
    assert_eq!(latency(&b), Duration::from_millis(20));
    // Errors after 1 ms, one every 100 ms for 5 s: recorded as they are they
    // would pull the estimate to about 12 ms.
    flaky.set_fail(true);
    flaky.st.delay_ms.store(1, Ordering::Relaxed);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(b.ready().await.unwrap().call(req(0)).await.is_err());
    }
    assert!(latency(&b) >= Duration::from_millis(19), "{:?}", latency(&b));
    // A slow failure still counts in full.
    flaky.st.delay_ms.store(100, Ordering::Relaxed);
    assert!(b.ready().await.unwrap().call(req(0)).await.is_err());
    assert_eq!(latency(&b), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn requests_given_up_on_still_teach_peak_ewma_the_latency() {
    // The slow endpoint never answers within the caller's 1 s timeout; the
    // time spent before giving up is its latency, so it is avoided.
    let fast = backend("fast").delay(10);
    let hung = backend("hung").delay(60_000);
    // Outlier ejection off: the latency estimate alone must do it.
    let cfg = BalanceConfig { outlier: ha_balance::config::OutlierConfig::disabled(), ..config(Picker::P2cPeakEwma) };
    let mut b: B = Balance::builder()
        .config(cfg)
        .seed(7)
        .build_with([("fast", Endpoint::new(fast.clone())), ("hung", Endpoint::new(hung.clone()))])
        .unwrap();
    let mut timeouts = 0;
    for _ in 0..200 {
        let fut = b.ready().await.unwrap().call(req(0));
        if tokio::time::timeout(Duration::from_secs(1), fut).await.is_err() {
            timeouts += 1;
        }
    }
    assert!(timeouts <= 3, "{timeouts} timeouts: the hung endpoint kept being picked");
    let stats = b.endpoint_stats();
    let hung_stats = stats.iter().find(|s| &*s.name == "hung").unwrap();
    assert!(hung_stats.latency >= Duration::from_millis(500), "{:?}", hung_stats.latency);
    assert_eq!(hung_stats.pending, 0);
}

#[tokio::test(start_paused = true)]
async fn p2c_pending_avoids_the_endpoint_with_requests_piling_up() {
    let stuck = backend("stuck").delay(3_600_000);
    let free = backend("free");
    let b =
        build(Picker::P2cPending, vec![("stuck", Endpoint::new(stuck.clone())), ("free", Endpoint::new(free.clone()))]);
    // 200 requests at once: once one is stuck, the stuck endpoint's pending
    // count makes every later comparison go to the free one.
    let mut handles = Vec::new();
    for i in 0..200 {
        let mut b = b.clone();
        handles.push(tokio::spawn(async move { b.ready().await.unwrap().call(req(i)).await }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(stuck.hits() <= 2, "stuck {} free {}", stuck.hits(), free.hits());
    assert_eq!(stuck.hits() + free.hits(), 200);
    for h in handles {
        h.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn weighted_p2c_follows_the_weights_under_load() {
    let heavy = backend("heavy").delay(10);
    let light = backend("light").delay(10);
    let b = build(
        Picker::WeightedP2c,
        vec![("heavy", Endpoint::new(heavy.clone()).weight(4)), ("light", Endpoint::new(light.clone()).weight(1))],
    );
    let mut handles = Vec::new();
    for i in 0..1000 {
        let mut b = b.clone();
        handles.push(tokio::spawn(async move { b.ready().await.unwrap().call(req(i)).await.unwrap() }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let share = heavy.hits() as f64 / 1000.0;
    assert!((0.7..0.9).contains(&share), "heavy share {share}");
}

#[tokio::test(start_paused = true)]
async fn random_is_uniform() {
    let backends: Vec<Backend> = ["a", "b", "c", "d"].into_iter().map(backend).collect();
    let mut b = build(Picker::Random, backends.iter().map(|x| (x.name, Endpoint::new(x.clone()))).collect());
    for _ in 0..4000 {
        send(&mut b, 0).await;
    }
    for x in &backends {
        assert!((850..1150).contains(&x.hits()), "{} got {}", x.name, x.hits());
    }
}

#[tokio::test(start_paused = true)]
async fn ring_hash_is_sticky_and_stable_when_an_endpoint_goes() {
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    let backends: Vec<Backend> = names.into_iter().map(backend).collect();
    let mut b = ring_hash(&backends);
    let mut before = HashMap::new();
    for key in 0..2000u64 {
        let who = send(&mut b, key).await;
        assert_eq!(send(&mut b, key).await, who, "same key, same endpoint");
        before.insert(key, who);
    }
    let mut per: HashMap<&str, usize> = HashMap::new();
    for who in before.values() {
        *per.entry(who).or_default() += 1;
    }
    assert!(per.values().all(|&n| (100..300).contains(&n)), "spread {per:?}");

    b.endpoints().remove("c");
    let mut moved = 0;
    for key in 0..2000u64 {
        let who = send(&mut b, key).await;
        if who != before[&key] {
            moved += 1;
            assert_eq!(before[&key], "c", "only the removed endpoint's keys move");
        }
    }
    assert_eq!(moved, per["c"]);
    // About 1/N of the keys moved.
    assert!((100..300).contains(&moved), "moved {moved}");
}

#[tokio::test(start_paused = true)]
async fn ring_hash_bounds_the_load_of_a_hot_key() {
    let backends: Vec<Backend> = ["a", "b", "c", "d"].into_iter().map(|n| backend(n).delay(1000)).collect();
    let b: B = Balance::builder()
        .config(config(Picker::RingHash { vnodes: 100, load_factor: 1.25 }))
        .hash_key(|r: &Req| Some(r.request))
        .build_with(backends.iter().map(|x| (x.name, Endpoint::new(x.clone()))))
        .unwrap();
    let mut handles = Vec::new();
    for _ in 0..100 {
        let mut b = b.clone();
        // Every request carries the same key.
        handles.push(tokio::spawn(async move { b.ready().await.unwrap().call(req(42)).await.unwrap() }));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let max = b.endpoint_stats().iter().map(|s| s.pending).max().unwrap();
    // At most ceil(1.25 x average) = ceil(1.25 x 100 / 4) = 32.
    assert!(max <= 32, "max pending {max}");
    assert_eq!(b.in_flight(), 100);
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(b.in_flight(), 0);
    assert_eq!(backends.iter().map(|x| x.hits()).sum::<u64>(), 100);
}

#[tokio::test(start_paused = true)]
async fn ring_hash_walks_past_endpoints_that_refuse_and_gives_their_keys_back() {
    // Seven of ten endpoints fail every request at once. They hold nothing
    // pending, so the bounded load alone never moved their keys; the
    // outlier cap ejects one. Their keys must go to the next endpoints on
    // the ring, and come back once they answer again.
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    let backends: Vec<Backend> = names.into_iter().map(|n| backend(n).delay(10)).collect();
    let mut b = ring_hash(&backends);
    let keys = 0..500u64;
    let mut owner = HashMap::new();
    for key in keys.clone() {
        owner.insert(key, send(&mut b, key).await);
    }
    for x in &backends[..7] {
        x.set_fail(true);
    }
    let mut ok = 0;
    for round in 0..6 {
        for key in keys.clone() {
            let answered = b.ready().await.unwrap().call(req(key)).await.is_ok();
            if round >= 2 && answered {
                ok += 1;
            }
        }
    }
    let success = f64::from(ok) / 2000.0;
    // Each refusing endpoint is tried again as its failure cost fades (one
    // failure every second or so each, 0.90 here); before, 0.29.
    assert!(success > 0.85, "success {success:.3} with seven of ten refusing (round robin's: 0.3)");

    for x in &backends[..7] {
        x.set_fail(false);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    for key in keys.clone() {
        let _ = b.ready().await.unwrap().call(req(key)).await;
    }
    let mut home = 0;
    for key in keys.clone() {
        if b.ready().await.unwrap().call(req(key)).await.is_ok_and(|who| who == owner[&key]) {
            home += 1;
        }
    }
    eprintln!("ring hash, seven of ten refusing: success {success:.3}; keys back home {home} of 500");
    // One endpoint was ejected, for 30 s: its keys stay with their neighbours.
    assert!(home >= 400, "{home} of 500 keys back with their endpoints 5 s after they recovered");
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_a_new_endpoint_up() {
    let old = backend("old");
    let new = backend("new");
    let mut cfg = config(Picker::Random);
    cfg.slow_start.window = Duration::from_secs(10);
    cfg.slow_start.min_factor = 0.05;
    let mut b: B = Balance::builder().config(cfg).seed(3).build_with([("old", Endpoint::new(old.clone()))]).unwrap();
    b.endpoints().insert("new", Endpoint::new(new.clone()));
    let mut shares = Vec::new();
    for _ in 0..10 {
        let before = new.hits();
        for _ in 0..1000 {
            send(&mut b, 0).await;
        }
        shares.push((new.hits() - before) as f64 / 1000.0);
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    // Ramps from almost nothing towards an even share.
    assert!(shares[0] < 0.12, "{shares:?}");
    assert!(shares[4] > shares[0] + 0.1, "{shares:?}");
    for _ in 0..2000 {
        send(&mut b, 0).await;
    }
    let after = new.hits() as f64 - shares.iter().sum::<f64>() * 1000.0;
    assert!((after / 2000.0 - 0.5).abs() < 0.05, "after the window: {}", after / 2000.0);
    assert_eq!(old.st.hits.load(Ordering::Relaxed) + new.hits(), 12_000);
}
