//! The standard `ha` stack in front of a real hyper client, calling three
//! local servers; one of them stops half-way and no request fails.
//!
//! `cargo run -p ha-examples --bin hyper_client`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ha::Body;
use ha_examples::servers::Server;
use http_body_util::BodyExt;
use tower::ServiceExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut servers = vec![Server::start("a").await?, Server::start("b").await?, Server::start("c").await?];
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();

    // The whole ha part: a hyper client with retries, balancing, breakers and outlier ejection.
    let client: ha::hyper::Client<Body> = ha::hyper::builder().endpoints(addrs).build()?;

    let failed = Arc::new(AtomicU64::new(0));
    for round in 0..2 {
        if round == 1 {
            let stopped = servers.remove(0);
            println!("stopping the server at {}", stopped.addr);
            stopped.stop().await;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (client, failed) = (client.clone(), failed.clone());
            tasks.spawn(async move {
                let mut served = Vec::new();
                for _ in 0..50 {
                    let req =
                        http::Request::get("http://inventory/items").body(Body::empty()).expect("a valid request");
                    match client.clone().oneshot(req).await {
                        Ok(res) => {
                            served.push(res.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default())
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            eprintln!("failed: {e}");
                        }
                    }
                }
                served
            });
        }
        let mut by_server = std::collections::BTreeMap::<String, u32>::new();
        while let Some(served) = tasks.join_next().await {
            for body in served? {
                *by_server.entry(String::from_utf8_lossy(&body).into_owned()).or_default() += 1;
            }
        }
        println!("round {round}: 400 requests served by {by_server:?}");
    }
    let retry = client.retry_stats();
    println!("failed requests: {}; retries: {}", failed.load(Ordering::Relaxed), retry.retries);
    for s in client.endpoint_stats() {
        println!("  {}: {} requests, {} failures, ejected: {}", s.name, s.requests, s.failures, s.ejected);
    }
    for s in servers {
        s.stop().await;
    }
    Ok(())
}
