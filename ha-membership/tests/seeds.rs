//! Seeds given as host names.

use std::net::SocketAddr;
use std::time::Duration;

use ha_membership::{Cluster, ClusterError, Config};

async fn node(name: &str) -> Cluster {
    let mut last = None;
    // An ephemeral UDP port's TCP twin may be taken; a few tries find a free pair.
    for _ in 0..10 {
        match Cluster::builder(name).config(Config::local()).bind(SocketAddr::from(([127, 0, 0, 1], 0))).start().await {
            Ok(n) => return n,
            Err(e) => last = Some(e),
        }
    }
    panic!("{name} could not start: {last:?}");
}

#[tokio::test]
async fn a_node_joins_through_a_host_name() {
    let a = node("a").await;
    let b = node("b").await;
    let seed = format!("localhost:{}", a.addr().port());
    tokio::time::timeout(Duration::from_secs(30), b.join_hosts(&[seed])).await.expect("bounded").expect("joined");
    let mut watch = a.clone();
    tokio::time::timeout(Duration::from_secs(30), async {
        while watch.members().len() < 2 {
            watch.changed().await.unwrap();
        }
    })
    .await
    .expect("a sees b");
}

#[tokio::test]
async fn names_that_do_not_resolve_fail_the_join_at_once() {
    let b = node("b").await;
    let err = tokio::time::timeout(Duration::from_secs(30), b.join_hosts(&["no-such-host.invalid:7946"]))
        .await
        .expect("bounded")
        .unwrap_err();
    assert!(matches!(err, ClusterError::JoinFailed), "{err}");
}
