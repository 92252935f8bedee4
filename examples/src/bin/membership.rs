//! Three nodes on 127.0.0.1 find each other through one seed, publish where
//! their service listens, and one leaves: every node's view follows.
//!
//! `cargo run -p ha-examples --bin membership`

use std::net::SocketAddr;
use std::time::Duration;

use ha_membership::{Cluster, Config, Metadata};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut nodes = Vec::new();
    for (i, port) in [8081u16, 8082, 8083].into_iter().enumerate() {
        let node = Cluster::builder(format!("node-{i}"))
            .config(Config::local())
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .metadata(Metadata {
                service: Some(SocketAddr::from(([127, 0, 0, 1], port))),
                zone: "local".into(),
                weight: 1,
                ..Metadata::default()
            })
            .start()
            .await?;
        nodes.push(node);
    }
    // Everyone joins through the first node.
    let seed = nodes[0].addr();
    for node in &nodes[1..] {
        node.join(&[seed]).await?;
    }
    // Wait (at most 10 s) until every node sees all three.
    for node in &nodes {
        let mut watch = node.clone();
        tokio::time::timeout(Duration::from_secs(10), async {
            while watch.members().len() < 3 {
                watch.changed().await.expect("node running");
            }
        })
        .await?;
    }
    for m in nodes[2].members() {
        println!("node-2 sees {} at {} serving {:?}", m.name, m.addr, m.meta.service);
    }

    // node-2 leaves; the others drop it at once.
    nodes[2].leave().await?;
    let mut watch = nodes[0].clone();
    tokio::time::timeout(Duration::from_secs(10), async {
        while watch.members().len() != 2 {
            watch.changed().await.expect("node running");
        }
    })
    .await?;
    let names: Vec<String> = nodes[0].members().iter().map(|m| m.name.to_string()).collect();
    println!("after node-2 left, node-0 sees {names:?}");
    Ok(())
}
