//! Discovery that fails or ends never freezes or empties the balancer:
//! it is reported, the endpoints stay, and a resubscribing balancer picks
//! up the new set.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{backend, recorder, req, Backend, Req};
use futures::stream::{self, StreamExt};
use ha_balance::{Balance, BalanceConfig, Endpoint, Picker};
use ha_core::Event;
use tower::discover::Change;
use tower::{BoxError, Service, ServiceExt};

type Changes = Vec<Result<Change<&'static str, Endpoint<Backend>>, BoxError>>;

fn insert(name: &'static str) -> Result<Change<&'static str, Endpoint<Backend>>, BoxError> {
    Ok(Change::Insert(name, Endpoint::new(backend(name))))
}

/// The changes, then nothing more for ever (a live subscription).
fn live(
    changes: Changes,
) -> impl tower::discover::Discover<Key = &'static str, Service = Endpoint<Backend>, Error = BoxError> {
    stream::iter(changes).chain(stream::pending())
}

async fn names(balance: &Balance<&'static str, Backend, Req>) -> Vec<String> {
    let mut names: Vec<String> = balance.endpoint_stats().iter().map(|s| s.name.to_string()).collect();
    names.sort();
    names
}

/// Waits (virtual time, bounded) until the balancer's endpoints are `want`.
async fn until(balance: &Balance<&'static str, Backend, Req>, want: &[&str]) {
    for _ in 0..10_000 {
        if names(balance).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("endpoints {:?}, wanted {want:?}", names(balance).await);
}

fn interruptions(seen: &common::Recorded) -> Vec<Option<Duration>> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::DiscoveryInterrupted { resubscribe_in, .. } => Some(*resubscribe_in),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn an_error_is_reported_and_the_stream_polled_on() {
    let (events, seen) = recorder();
    let changes: Changes = vec![insert("a"), insert("b"), Err("resolver timed out".into()), insert("c")];
    let mut balance = Balance::builder().events(events).build_discover(live(changes)).unwrap();
    until(&balance, &["a", "b", "c"]).await;
    assert_eq!(interruptions(&seen), [None], "reported once, no resubscription");
    assert!(balance.ready().await.unwrap().call(req(1)).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn an_ended_stream_keeps_its_endpoints() {
    let (events, seen) = recorder();
    let ended = stream::iter::<Changes>(vec![insert("a"), insert("b")]);
    let mut balance = Balance::builder().events(events).build_discover(ended).unwrap();
    until(&balance, &["a", "b"]).await;
    for _ in 0..100 {
        if !interruptions(&seen).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(interruptions(&seen), [None]);
    assert_eq!(names(&balance).await, ["a", "b"]);
    assert!(balance.ready().await.unwrap().call(req(1)).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_resubscription_replaces_the_set_and_keeps_the_state_of_what_stays() {
    let (events, seen) = recorder();
    let subscriptions = Arc::new(AtomicU32::new(0));
    let count = subscriptions.clone();
    let subscribe = move || {
        let changes: Changes = match count.fetch_add(1, Ordering::SeqCst) {
            // The first subscription lists a and b, then fails.
            0 => vec![insert("a"), insert("b"), Err("connection to the registry lost".into())],
            // The second lists b and c, and stays.
            1 => vec![insert("b"), insert("c")],
            // Later ones would list nothing at first.
            _ => vec![],
        };
        live(changes)
    };
    let round_robin = BalanceConfig { picker: Picker::RoundRobin, ..BalanceConfig::default() };
    let mut balance = Balance::builder().config(round_robin).events(events).build_discover_with(subscribe).unwrap();
    until(&balance, &["a", "b"]).await;
    // Traffic before the resubscription (which waits at least 10 ms).
    for _ in 0..20 {
        balance.ready().await.unwrap().call(req(1)).await.unwrap();
    }
    let requests_of_b = |b: &Balance<&'static str, Backend, Req>| {
        b.endpoint_stats().iter().find(|s| &*s.name == "b").map_or(0, |s| s.requests)
    };
    let before = requests_of_b(&balance);
    assert!(before > 0);
    until(&balance, &["b", "c"]).await;
    assert_eq!(requests_of_b(&balance), before, "b kept its state through the resubscription");
    assert_eq!(subscriptions.load(Ordering::SeqCst), 2);
    let waits = interruptions(&seen);
    assert_eq!(waits.len(), 1);
    let wait = waits[0].expect("a resubscription was scheduled");
    assert!(wait >= Duration::from_millis(10) && wait <= Duration::from_millis(100), "{wait:?}");
    assert!(balance.ready().await.unwrap().call(req(1)).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn an_empty_resubscription_changes_nothing_and_backs_off() {
    let (events, seen) = recorder();
    let subscriptions = Arc::new(AtomicU32::new(0));
    let count = subscriptions.clone();
    let subscribe = move || {
        let n = count.fetch_add(1, Ordering::SeqCst);
        let changes: Changes = if n == 0 { vec![insert("a"), insert("b")] } else { vec![] };
        // Every subscription ends at once: a registry that keeps hanging up.
        stream::iter(changes)
    };
    let balance = Balance::builder().events(events).build_discover_with(subscribe).unwrap();
    until(&balance, &["a", "b"]).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(names(&balance).await, ["a", "b"], "never emptied");
    let waits: Vec<Duration> = interruptions(&seen).into_iter().map(|w| w.unwrap()).collect();
    // 100 ms doubling to 30 s, jittered: a handful of attempts in a minute, not thousands.
    assert!(waits.len() >= 5 && waits.len() <= 16, "{} resubscriptions: {waits:?}", waits.len());
    assert!(waits.iter().all(|w| *w <= Duration::from_secs(30)));
}
