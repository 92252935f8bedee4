//! A stack fed by SWIM membership: three member nodes advertise three real
//! hyper servers; one node and its server stop without leaving, and the
//! user sees no failure with the default configuration.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestServer;
use ha::membership::{Cluster, Config, Metadata};
use ha::Body;
use tower::ServiceExt;

async fn node(name: &str, service: Option<SocketAddr>, zone: &str) -> Cluster {
    // An ephemeral UDP port's TCP twin may be taken; a few tries find a free pair.
    let mut last = None;
    for _ in 0..10 {
        let started = Cluster::builder(name)
            .config(Config::local())
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .metadata(Metadata { service, zone: zone.into(), weight: 1, ..Metadata::default() })
            .start()
            .await;
        match started {
            Ok(node) => return node,
            Err(e) => last = Some(e),
        }
    }
    panic!("node {name} could not start: {last:?}");
}

/// Waits, bounded, until `pred` holds, re-checking whenever the membership view changes.
async fn until(c: &Cluster, what: &str, pred: impl Fn() -> bool) {
    let mut watch = c.clone();
    let wait = async {
        while !pred() {
            // The stack applies a view change from its own task just after the
            // view changes; the bounded re-check covers that gap.
            let _ = tokio::time::timeout(Duration::from_millis(20), watch.changed()).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait).await.unwrap_or_else(|_| panic!("never saw: {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_without_leaving_costs_the_user_nothing() {
    let servers = [TestServer::start("a").await, TestServer::start("b").await, TestServer::start("c").await];
    let mut members = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        members.push(Some(node(&format!("member-{i}"), Some(s.addr), "z1").await));
    }
    // A node that advertises no service: the stack must skip it.
    let bystander = node("bystander", None, "z1").await;
    let me = node("client", None, "z1").await;
    let seed = members[0].as_ref().unwrap().addr();
    for n in members[1..].iter().flatten().chain([&bystander, &me]) {
        n.join(&[seed]).await.expect("join");
    }

    let client: ha::hyper::Client<Body> = ha::hyper::builder().cluster(&me).build().expect("default config");
    until(&me, "three endpoints", || client.endpoint_stats().len() == 3).await;
    let names: Vec<String> = client.endpoint_stats().iter().map(|s| s.name.to_string()).collect();
    assert!(!names.iter().any(|n| n == "bystander" || n == "client"), "{names:?}");

    let sent = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let stopped = Arc::new(Mutex::new(members.pop().flatten()));
    let run = async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (client, sent, failures, stopped, server) =
                (client.clone(), sent.clone(), failures.clone(), stopped.clone(), servers[2].clone());
            tasks.spawn(async move {
                loop {
                    let n = sent.fetch_add(1, Ordering::SeqCst);
                    if n >= 3000 {
                        return;
                    }
                    if n == 1000 {
                        // The node and its server stop at once, without leaving.
                        let node = stopped.lock().unwrap().take();
                        drop(node);
                        server.kill().await;
                    }
                    let req = http::Request::get("http://svc/").body(Body::empty()).unwrap();
                    match client.clone().oneshot(req).await {
                        Ok(res) if res.status().is_success() => {}
                        Ok(res) => {
                            failures.fetch_add(1, Ordering::SeqCst);
                            eprintln!("request {n}: {}", res.status());
                        }
                        Err(e) => {
                            failures.fetch_add(1, Ordering::SeqCst);
                            eprintln!("request {n}: {e}");
                        }
                    }
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("client task");
        }
    };
    tokio::time::timeout(Duration::from_secs(60), run).await.expect("3000 requests within 60 s");
    assert_eq!(failures.load(Ordering::SeqCst), 0, "{:#?}", client.endpoint_stats());

    // Membership declares the stopped node dead and the stack drops its endpoint.
    until(&me, "the dead member's endpoint removed", || client.endpoint_stats().len() == 2).await;
    assert!(!client.endpoint_stats().iter().any(|s| &*s.name == "member-2"));
    drop(members);
}
