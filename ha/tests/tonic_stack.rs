//! The tonic stack in front of a hand-written generated-style client,
//! against real tonic servers on loopback.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ha::core::event::BreakerState;
use ha::core::{Event, Events};
use ha::tonic::Channel;
use support::{greeter, trailers_failure, unavailable_greeter, GreeterClient, HelloRequest, TestServer};
use tokio::sync::watch;

const TASKS: usize = 8;
const PER_TASK: usize = 50;
const LIMIT: Duration = Duration::from_secs(60);

/// What the stack's layers reported: endpoints whose breaker opened, and
/// endpoints that were ejected.
#[derive(Default, Clone)]
struct Seen {
    opened: Arc<Mutex<HashSet<String>>>,
    ejected: Arc<Mutex<HashSet<String>>>,
}

impl Seen {
    fn events(&self) -> Events {
        let seen = self.clone();
        Events::new().with_observer(move |e: &Event| match e {
            Event::BreakerStateChanged { breaker, to: BreakerState::Open, .. } => {
                seen.opened.lock().unwrap().insert(breaker.to_string());
            }
            Event::EndpointEjected { endpoint, .. } => {
                seen.ejected.lock().unwrap().insert(endpoint.to_string());
            }
            _ => {}
        })
    }

    fn cut_off(&self, addr: SocketAddr) -> bool {
        let key = addr.to_string();
        self.opened.lock().unwrap().contains(&key) || self.ejected.lock().unwrap().contains(&key)
    }
}

fn channel(addrs: &[SocketAddr], seen: &Seen) -> Channel {
    ha::tonic::builder().endpoints(addrs.iter().copied()).events(seen.events()).build_channel().expect("valid config")
}

/// Sends `PER_TASK` calls from each of `TASKS` tasks; between the first
/// and second halves each task waits for `go` to turn true. Returns the
/// failed calls' statuses, and reports each completed call on `done`.
async fn run(channel: Channel, done: watch::Sender<usize>, go: watch::Receiver<bool>) -> Vec<tonic::Status> {
    let done = Arc::new(done);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let mut client = GreeterClient::new(channel.clone());
        let done = done.clone();
        let mut go = go.clone();
        tasks.spawn(async move {
            let mut failures = Vec::new();
            for i in 0..PER_TASK {
                if i == PER_TASK / 2 {
                    go.wait_for(|go| *go).await.expect("the test holds the sender");
                }
                match client.say_hello(HelloRequest { name: format!("task {t} call {i}") }).await {
                    Ok(reply) => assert!(reply.get_ref().message.contains("greets"), "{reply:?}"),
                    Err(status) => failures.push(status),
                }
                done.send_modify(|n| *n += 1);
            }
            failures
        });
    }
    let mut failures = Vec::new();
    while let Some(result) = tasks.join_next().await {
        failures.extend(result.expect("a client task panicked"));
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_crashing_mid_run_costs_no_call() {
    tokio::time::timeout(LIMIT, async {
        let a = TestServer::start(greeter("a")).await;
        let b = TestServer::start(greeter("b")).await;
        let c = TestServer::start(greeter("c")).await;
        let (a_addr, b_addr, c_addr) = (a.addr, b.addr, c.addr);
        let seen = Seen::default();
        let channel = channel(&[a_addr, b_addr, c_addr], &seen);

        let (done, mut progress) = watch::channel(0);
        let (go, wait) = watch::channel(false);
        let calls = tokio::spawn(run(channel.clone(), done, wait));
        // Crash b while the first half is in flight; the second half starts
        // only once b is dead.
        progress.wait_for(|n| *n >= TASKS * PER_TASK / 4).await.expect("the calls run");
        b.crash().await;
        go.send_replace(true);
        let failures = calls.await.expect("calls finish");

        assert!(failures.is_empty(), "{} calls failed: {failures:?}", failures.len());
        let stats = channel.stack().endpoint_stats();
        let dead = stats.iter().find(|s| *s.name == b_addr.to_string()).expect("b is an endpoint");
        assert!(dead.failures > 0, "the crash was noticed: {dead:?}");
        // Cut off (ejected, breaker open), or priced out by its failures: either
        // way only a handful of attempts went to it once it had crashed.
        assert!(seen.cut_off(b_addr) || dead.failures <= 5, "b was cut off or avoided: {stats:?}");
        let served: u64 = stats.iter().map(|s| s.successes).sum();
        assert!(served >= (TASKS * PER_TASK) as u64, "{stats:?}");
        drop((a, c));
    })
    .await
    .expect("the test finishes in time");
}

/// Runs the calls against two healthy greeters and `sick`: no call may fail,
/// every layer must count the sick server's answers as failures, and the
/// balancer must cut it off (ejection, breaker) or price it out by its
/// failures. Returns the channel for further checks.
async fn calls_survive_a_sick_server(sick: TestServer) -> Channel {
    let a = TestServer::start(greeter("a")).await;
    let c = TestServer::start(greeter("c")).await;
    let seen = Seen::default();
    let channel = channel(&[a.addr, sick.addr, c.addr], &seen);

    let (done, _progress) = watch::channel(0);
    let (_go, wait) = watch::channel(true);
    let failures = run(channel.clone(), done, wait).await;

    assert!(failures.is_empty(), "{} calls failed: {failures:?}", failures.len());
    let stats = channel.stack().endpoint_stats();
    let sick_stats = stats.iter().find(|s| *s.name == sick.addr.to_string()).expect("an endpoint");
    assert!(sick_stats.failures > 0 && sick_stats.successes == 0, "{sick_stats:?}");
    assert!(seen.cut_off(sick.addr) || sick_stats.requests <= 5, "the sick server was cut off or avoided: {stats:?}");
    channel
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_unavailable_is_retried_around_and_cut_off() {
    tokio::time::timeout(LIMIT, async {
        let channel = calls_survive_a_sick_server(TestServer::start(unavailable_greeter()).await).await;
        assert!(channel.stack().retry_stats().retries > 0);
    })
    .await
    .expect("the test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_status_only_in_the_trailers_is_seen_by_every_layer() {
    tokio::time::timeout(LIMIT, async {
        // The status comes only in the trailers: counted as a failure all the same.
        let channel = calls_survive_a_sick_server(TestServer::start(trailers_failure(14)).await).await;
        assert!(channel.stack().retry_stats().retries > 0);
    })
    .await
    .expect("the test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_error_in_the_trailers_reaches_the_caller_and_counts_as_health() {
    tokio::time::timeout(LIMIT, async {
        // INVALID_ARGUMENT only in the trailers: not retried, the caller
        // sees it, and the endpoint stays healthy.
        let only = TestServer::start(trailers_failure(3)).await;
        let seen = Seen::default();
        let app = channel(&[only.addr], &seen);
        let mut client = GreeterClient::new(app.clone());
        for _ in 0..20 {
            let status = client.say_hello(HelloRequest { name: "x".into() }).await.expect_err("an error status");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
        }
        let stats = app.stack().endpoint_stats();
        assert_eq!((stats[0].successes, stats[0].failures), (20, 0), "{stats:?}");
        assert_eq!(app.stack().retry_stats().retries, 0);
        // INTERNAL: not retried, but it counts against the endpoint.
        let internal = TestServer::start(trailers_failure(13)).await;
        let channel = channel(&[internal.addr], &seen);
        let mut client = GreeterClient::new(channel.clone());
        let status = client.say_hello(HelloRequest { name: "x".into() }).await.expect_err("an error status");
        assert_eq!(status.code(), tonic::Code::Internal);
        let stats = channel.stack().endpoint_stats();
        assert_eq!((stats[0].failures, stats[0].requests), (1, 1), "{stats:?}");
        assert_eq!(channel.stack().retry_stats().retries, 0);
    })
    .await
    .expect("the test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_server_down_the_caller_gets_unavailable() {
    tokio::time::timeout(LIMIT, async {
        let gone = TestServer::start(greeter("gone")).await;
        let addr = gone.addr;
        gone.crash().await;
        let seen = Seen::default();
        let mut client = GreeterClient::new(channel(&[addr], &seen));
        let status = client.say_hello(HelloRequest { name: "x".into() }).await.expect_err("nobody answers");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        let source = std::error::Error::source(&status).expect("the ha error is the source");
        let err = source.downcast_ref::<ha::Error>().expect("an ha::Error");
        assert!(err.find::<ha::core::NotSent>().is_some(), "a refused connection is never sent: {err:?}");
    })
    .await
    .expect("the test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_pushback_is_honoured() {
    tokio::time::timeout(LIMIT, async {
        // A negative pushback: the server says "do not retry".
        let refusing = TestServer::start(support::pushback_greeter("-1")).await;
        let healthy = TestServer::start(greeter("healthy")).await;
        let seen = Seen::default();
        let channel = channel(&[refusing.addr], &seen);
        let mut client = GreeterClient::new(channel.clone());
        let status = client.say_hello(HelloRequest { name: "x".into() }).await.expect_err("not retried");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(channel.stack().retry_stats().retries, 0);

        // A valid pushback: retried (elsewhere), after the delay.
        let waiting = TestServer::start(support::pushback_greeter("30")).await;
        let channel = self::channel(&[waiting.addr, healthy.addr], &seen);
        let mut client = GreeterClient::new(channel.clone());
        let mut slowest = Duration::ZERO;
        for _ in 0..20 {
            let start = std::time::Instant::now();
            let reply = client.say_hello(HelloRequest { name: "x".into() }).await.expect("retried to the healthy one");
            slowest = slowest.max(start.elapsed());
            assert!(reply.get_ref().message.starts_with("healthy"));
        }
        assert!(channel.stack().retry_stats().retries > 0);
        assert!(slowest >= Duration::from_millis(30), "a retry waited for the pushback: {slowest:?}");
    })
    .await
    .expect("the test finishes in time");
}
