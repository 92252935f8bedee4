//! The standard stack in front of reqwest: three local servers, one of them
//! stopped halfway through, and no request fails.
//!
//! Run with `cargo run -p ha-examples --bin reqwest_client`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tower::{BoxError, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut servers = Vec::new();
    for name in ["a", "b", "c"] {
        servers.push(serve(name).await?);
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(|(addr, _)| *addr).collect();

    // The ha part: the standard stack over `reqwest::Client::new()`.
    let client: ha::reqwest::Client<String> = ha::reqwest::builder().endpoints(addrs).build()?;

    for round in 1..=3 {
        if round == 2 {
            let (addr, server) = servers.pop().expect("three servers");
            server.abort();
            let _ = server.await;
            println!("-- server c ({addr}) stopped: its port refuses, its connections are gone");
        }
        let (mut served, mut failed) = (BTreeMap::<String, u32>::new(), 0);
        for _ in 0..30 {
            let req = http::Request::get("http://inventory/items").body(String::new())?;
            match client.clone().oneshot(req).await {
                Ok(res) if res.status().is_success() => {
                    let body = res.into_body().collect().await?.to_bytes();
                    *served.entry(String::from_utf8_lossy(&body).into_owned()).or_default() += 1;
                }
                Ok(res) => {
                    failed += 1;
                    println!("  answered {}", res.status());
                }
                Err(e) => {
                    failed += 1;
                    println!("  failed: {e}");
                }
            }
        }
        println!("round {round}: 30 requests, served by {served:?}, {failed} failed");
    }

    println!("retries: {:?}", client.retry_stats());
    for e in client.endpoint_stats() {
        println!("  {}: {} requests, {} failures, ejected {}", e.name, e.requests, e.failures, e.ejected);
    }
    Ok(())
}

/// An HTTP/1 server on a loopback port answering with `name`; aborting the
/// returned task closes its port and drops its connections.
async fn serve(name: &'static str) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let answer = service_fn(move |_req| async move {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(name))))
                    });
                    conns.spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), answer));
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    Ok((addr, task))
}
