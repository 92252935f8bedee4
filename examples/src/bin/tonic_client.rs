//! The ha stack as the transport of a tonic client: three greeter servers
//! on loopback, the busiest of them stopped a third of the way through, and
//! not one failed call.
//!
//! Run with `cargo run -p ha-examples --bin tonic_client`.
//!
//! The greeter's messages, client and server (`ha_examples::greeter`) are
//! written the way tonic-build generates them, so it needs no `protoc`.

use std::net::SocketAddr;

use ha_examples::greeter::proto::{GreeterClient, HelloRequest};
use ha_examples::greeter::Server;
use tonic::Request;
use tower::BoxError;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut servers = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        servers.push(Server::start(name).await?);
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let names: Vec<(SocketAddr, &str)> = servers.iter().map(|s| (s.addr, s.name)).collect();

    // The ha part: a stack over the three servers, as a tonic channel.
    let channel = ha::tonic::builder().endpoints(addrs).build_channel()?;
    let mut client = GreeterClient::new(channel.clone());

    let mut failed = 0;
    for i in 0..30 {
        if i == 10 {
            // Stop the server that took the most calls so far.
            let stats = channel.stack().endpoint_stats();
            let busiest = stats.iter().max_by_key(|s| s.requests).map(|s| s.name.to_string());
            let at = servers.iter().position(|s| Some(s.addr.to_string()) == busiest).unwrap_or(0);
            let server = servers.remove(at);
            println!("-- stopping {} ({}) --", server.name, server.addr);
            server.stop().await;
        }
        match client.say_hello(Request::new(HelloRequest { name: format!("call {i}") })).await {
            Ok(reply) => println!("{i:>2}: {}", reply.into_inner().message),
            Err(status) => {
                failed += 1;
                println!("{i:>2}: failed: {status}");
            }
        }
    }

    println!("\n{failed} of 30 calls failed; per endpoint:");
    for s in channel.stack().endpoint_stats() {
        let state = if s.ejected || s.breaker_open { "cut off" } else { "in use" };
        let name = names.iter().find(|(addr, _)| addr.to_string() == *s.name).map_or("?", |(_, name)| name);
        println!("  {name} ({}): {} requests, {} failures, {state}", s.name, s.requests, s.failures);
    }
    println!("retries: {}", channel.stack().retry_stats().retries);
    for server in servers {
        server.stop().await;
    }
    Ok(())
}
