//! The reqwest adapter against real hyper servers on loopback.

mod support_reqwest;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ha::balance::{BalanceConfig, Picker};
use ha::reqwest::ReqwestTransport;
use ha::Config;
use http::Request;
use http_body_util::BodyExt;
use support_reqwest::{Behavior, Server};
use tokio::time::timeout;
use tower::ServiceExt;

const TASKS: usize = 16;
const PER_TASK: usize = 200;
const CRASH_AT: usize = 1000;

/// A client that ignores any proxy from the environment: the servers are on
/// loopback.
fn transport() -> ReqwestTransport {
    ReqwestTransport::with_client(reqwest::Client::builder().no_proxy().build().expect("a reqwest client"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_server_is_invisible_to_callers() {
    timeout(Duration::from_secs(120), async {
        let a = Server::start(Behavior::Name("a")).await;
        let b = Server::start(Behavior::Name("b")).await;
        let c = Server::start(Behavior::Name("c")).await;
        let addrs: [SocketAddr; 3] = [a.addr, b.addr, c.addr];

        let client: ha::reqwest::Client<String> =
            transport().stack().endpoints(addrs).build().expect("a valid configuration");

        let victim = Arc::new(Mutex::new(Some(c)));
        let sent = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..TASKS {
            let (client, victim, sent) = (client.clone(), victim.clone(), sent.clone());
            tasks.spawn(async move {
                let mut served = HashMap::<String, usize>::new();
                let mut failures = Vec::new();
                for _ in 0..PER_TASK {
                    let req = Request::get("http://inventory/items").body(String::new()).expect("a valid request");
                    match client.clone().oneshot(req).await {
                        Ok(res) if res.status().is_success() => match res.into_body().collect().await {
                            Ok(body) => {
                                let body = String::from_utf8_lossy(&body.to_bytes()).into_owned();
                                let (name, host) = body.split_once(' ').unwrap_or((&body, ""));
                                assert_eq!(host, "inventory", "the caller's host reaches the server");
                                *served.entry(name.to_owned()).or_default() += 1;
                            }
                            Err(e) => failures.push(format!("body: {e}")),
                        },
                        Ok(res) => failures.push(format!("status {}", res.status())),
                        Err(e) => failures.push(format!("error: {e:?}")),
                    }
                    if sent.fetch_add(1, Ordering::Relaxed) + 1 == CRASH_AT {
                        let server = victim.lock().expect("not poisoned").take();
                        if let Some(server) = server {
                            server.crash().await;
                        }
                    }
                }
                (served, failures)
            });
        }

        let mut served = HashMap::<String, usize>::new();
        let mut failures = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let (s, f) = done.expect("a request task panicked");
            for (name, n) in s {
                *served.entry(name).or_default() += n;
            }
            failures.extend(f);
        }

        assert!(victim.lock().expect("not poisoned").is_none(), "the crash happened");
        assert!(failures.is_empty(), "{} user-visible failures, first: {:?}", failures.len(), failures.first());
        assert_eq!(served.values().sum::<usize>(), TASKS * PER_TASK, "{served:?}");
        for name in ["a", "b", "c"] {
            assert!(served.get(name).copied().unwrap_or(0) > 0, "{name} served nothing: {served:?}");
        }
        let stats = client.retry_stats();
        assert!(stats.retries >= 1, "the crash was absorbed by retries: {stats:?}");
        println!("served {served:?}, {stats:?}");
    })
    .await
    .expect("the run finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_half_its_requests_with_503_is_invisible_to_callers() {
    timeout(Duration::from_secs(60), async {
        static FLAKY: AtomicU64 = AtomicU64::new(0);
        let a = Server::start(Behavior::Name("a")).await;
        let b = Server::start(Behavior::Name("b")).await;
        let c = Server::start(Behavior::HalfUnavailable("c", &FLAKY)).await;
        let client: ha::reqwest::Client<String> =
            transport().stack().endpoints([a.addr, b.addr, c.addr]).build().expect("a valid configuration");
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..TASKS {
            let client = client.clone();
            tasks.spawn(async move {
                let mut failures = Vec::new();
                for _ in 0..100 {
                    let req = Request::get("http://inventory/items").body(String::new()).expect("a valid request");
                    match client.clone().oneshot(req).await {
                        Ok(res) if res.status().is_success() => {}
                        Ok(res) => failures.push(format!("status {}", res.status())),
                        Err(e) => failures.push(format!("error: {e:?}")),
                    }
                }
                failures
            });
        }
        let mut failures = Vec::new();
        while let Some(done) = tasks.join_next().await {
            failures.extend(done.expect("a request task panicked"));
        }
        assert!(
            failures.is_empty(),
            "{} user-visible failures: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        // The fault was real: c answered 503s, and they were retried.
        assert!(FLAKY.load(Ordering::Relaxed) > 1, "c was never called");
        assert!(client.retry_stats().retries > 0, "no retries");
    })
    .await
    .expect("1600 requests within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_post_is_retried_with_its_body() {
    timeout(Duration::from_secs(60), async {
        // A port nothing listens on: bind, note it, close.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
        let echo = Server::start(Behavior::Echo).await;

        let config = Config {
            balance: BalanceConfig { picker: Picker::RoundRobin, ..BalanceConfig::default() },
            ..Config::default()
        };
        let client: ha::reqwest::Client<String> =
            transport().stack().config(config).endpoints([dead, echo.addr]).build().expect("a valid configuration");

        for i in 0..10 {
            let sent = format!("order {i}: {}", "x".repeat(100 * i));
            let req = Request::post("http://orders/new").body(sent.clone()).expect("a valid request");
            let res = client.clone().oneshot(req).await.expect("the POST succeeds on the echo server");
            assert_eq!(res.status(), 200);
            let echoed = res.into_body().collect().await.expect("the echoed body").to_bytes();
            assert_eq!(echoed, sent.as_bytes(), "the body arrived intact");
        }
        let stats = client.retry_stats();
        assert!(stats.retries >= 1, "a refused POST was retried: {stats:?}");
    })
    .await
    .expect("the run finished in time");
}

#[tokio::test]
async fn with_every_endpoint_refusing_the_connect_error_is_the_source() {
    // With every endpoint refusing, a GET fails with the stack's error, the
    // connect error marked never sent and reachable as its source.
    timeout(Duration::from_secs(30), async {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
        let client: ha::reqwest::Client<String> =
            transport().stack().endpoints([dead]).build().expect("a valid configuration");
        let req = Request::get("http://inventory/").body(String::new()).expect("a valid request");
        let err = client.oneshot(req).await.expect_err("nothing listens");
        assert_eq!(err.kind(), ha::ErrorKind::RetriesExhausted, "{err:?}");
        assert!(err.find::<ha::core::NotSent>().is_some(), "{err:?}");
        assert!(err.find::<reqwest::Error>().is_some_and(reqwest::Error::is_connect), "{err:?}");
    })
    .await
    .expect("the run finished in time");
}
