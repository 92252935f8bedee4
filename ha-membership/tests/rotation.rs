//! A live key rotation across five encrypted nodes under broadcast traffic:
//! add the new key everywhere, make it primary everywhere, remove the old
//! one everywhere; no member is ever suspected and no packet fails to decrypt.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use ha_membership::{Cluster, Config, Keyring, MembershipEvent};

const OLD: [u8; 32] = [1; 32];
const NEW: [u8; 32] = [2; 32];

async fn node(name: &str) -> Cluster {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut last = None;
    for _ in 0..5 {
        let b = Cluster::builder(name).config(Config::local()).bind(any).keyring(Keyring::new(OLD));
        match b.start().await {
            Ok(c) => return c,
            Err(e) => last = Some(e),
        }
    }
    panic!("cannot start {name}: {last:?}");
}

/// Waits (bounded) until every node has received `more` datagrams since `base`.
async fn traffic(nodes: &[Cluster], more: u64) {
    let base: Vec<u64> = nodes.iter().map(|n| n.counters().packets_in).collect();
    for (n, b) in nodes.iter().zip(base) {
        let mut w = n.clone();
        tokio::time::timeout(Duration::from_secs(30), async {
            while w.counters().packets_in < b + more {
                w.changed().await.unwrap();
            }
        })
        .await
        .expect("traffic flows");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_on_a_running_cluster_without_suspicion() {
    let mut nodes = Vec::new();
    for i in 0..5 {
        nodes.push(node(&format!("r{i}")).await);
    }
    for n in &nodes[1..] {
        n.join(&[nodes[0].addr()]).await.unwrap();
    }
    for n in &nodes {
        let mut w = n.clone();
        tokio::time::timeout(Duration::from_secs(30), async {
            while w.members().len() < 5 {
                w.changed().await.unwrap();
            }
        })
        .await
        .expect("all five");
    }
    // Watch for any suspicion from here on.
    let suspected = Arc::new(AtomicBool::new(false));
    for n in &nodes {
        let mut events = n.events();
        let flag = suspected.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                if matches!(ev, MembershipEvent::Suspected(_) | MembershipEvent::Died(_)) {
                    flag.store(true, Ordering::SeqCst);
                }
            }
        });
    }
    // Traffic: a broadcast every 20 ms from each node in turn.
    let stop = Arc::new(AtomicBool::new(false));
    let senders = nodes.clone();
    let stop2 = stop.clone();
    let load = tokio::spawn(async move {
        let mut i = 0u32;
        while !stop2.load(Ordering::SeqCst) {
            let _ = senders[i as usize % 5].broadcast(i.to_le_bytes().to_vec());
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    traffic(&nodes, 20).await;
    for n in &nodes {
        n.add_key(NEW).await.unwrap();
    }
    traffic(&nodes, 20).await;
    for n in &nodes {
        n.use_key(NEW).await.unwrap();
        // Between these steps some nodes encrypt with NEW, others with OLD.
        traffic(&nodes[..1], 5).await;
    }
    traffic(&nodes, 20).await;
    for n in &nodes {
        assert!(n.remove_key(OLD).await.unwrap());
    }
    traffic(&nodes, 40).await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    for n in &nodes {
        let c = n.counters();
        assert_eq!(c.dropped_auth, 0, "{}: {c:?}", n.name());
        assert_eq!(c.dropped_replay, 0, "{}: {c:?}", n.name());
        assert_eq!(n.members().len(), 5);
    }
    assert!(!suspected.load(Ordering::SeqCst), "a member was suspected during the rotation");
    // The old key alone no longer gets in.
    let outsider = node("outsider").await;
    assert!(outsider.join(&[nodes[0].addr()]).await.is_err());
    let mut w = nodes[0].clone();
    tokio::time::timeout(Duration::from_secs(10), async {
        while w.counters().dropped_auth == 0 {
            w.changed().await.unwrap();
        }
    })
    .await
    .expect("the old key's packets are refused and counted");
}
