//! Five nodes over real UDP and TCP on 127.0.0.1, encrypted: join, a crash
//! (dropped without leaving), a graceful leave, a restart that rejoins, and
//! what each node's tower `Discover` saw.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use ha_membership::{Cluster, ClusterError, Config, Keyring, MemberState, Metadata};
use tower::discover::Change;

const KEY: [u8; 32] = [42; 32];

async fn node(name: &str, bind: SocketAddr) -> Cluster {
    // A node restarted at its old address may find the port held for a
    // moment (a socket of the crashed node still closing, a connection that
    // took it as its source port): retried for a bounded time.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let started = Cluster::builder(name)
            .config(Config { label: "it".into(), ..Config::local() })
            .bind(bind)
            .keyring(Keyring::new(KEY))
            .metadata(Metadata { zone: "z1".into(), weight: 1, ..Metadata::default() })
            .start()
            .await;
        match started {
            Err(ClusterError::Bind(e))
                if e.kind() == std::io::ErrorKind::AddrInUse && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            started => return started.unwrap(),
        }
    }
}

/// Waits (bounded) until `pred` holds for `c`'s view; driven by change notifications, not sleeps.
async fn until(c: &Cluster, what: &str, pred: impl Fn(&Cluster) -> bool) {
    let mut c2 = c.clone();
    let wait = async {
        while !pred(&c2) {
            c2.changed().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("{} never saw: {what}", c.name()));
}

fn state_of(c: &Cluster, name: &str) -> Option<(MemberState, u64)> {
    c.all_members().iter().find(|m| &*m.name == name).map(|m| (m.state, m.incarnation))
}

/// What one node's Discover emitted, in order.
struct Log {
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, bool)>,
    seen: Vec<(String, bool)>,
}

impl Log {
    /// Waits (bounded) for `key` to be inserted (`true`) or removed (`false`).
    async fn expect(&mut self, key: &str, insert: bool) {
        let wait = async {
            loop {
                let change = self.rx.recv().await.expect("discover ended");
                self.seen.push(change.clone());
                if change == (key.to_string(), insert) {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), wait).await.expect("discover change");
    }

    fn count(&self, key: &str, insert: bool) -> usize {
        self.seen.iter().filter(|(k, i)| k == key && *i == insert).count()
    }
}

fn watch_discover(c: &Cluster) -> Log {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut d = c.discover(|m| m.addr);
    tokio::spawn(async move {
        while let Some(Ok(change)) = d.next().await {
            let entry = match change {
                Change::Insert(k, _) => (k.to_string(), true),
                Change::Remove(k) => (k.to_string(), false),
            };
            if tx.send(entry).is_err() {
                return;
            }
        }
    });
    Log { rx, seen: Vec::new() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_crash_leave_and_rejoin() {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut nodes = Vec::new();
    for i in 0..5 {
        nodes.push(node(&format!("n{i}"), any).await);
    }
    let seed = nodes[0].addr();
    let mut logs: Vec<Log> = nodes.iter().map(watch_discover).collect();
    let mut inboxes: Vec<_> = nodes[1..].iter().map(|n| n.user_messages()).collect();
    for n in &nodes[1..] {
        n.join(&[seed]).await.unwrap();
    }
    for n in &nodes {
        until(n, "all five", |c| c.members().len() == 5).await;
    }
    until(&nodes[0], "datagrams", |c| c.counters().packets_in > 0 && c.counters().probes > 0).await;

    // A user broadcast reaches every other member.
    nodes[0].broadcast(b"config v2".to_vec()).unwrap();
    for inbox in &mut inboxes {
        let got = tokio::time::timeout(Duration::from_secs(30), inbox.next()).await.unwrap();
        assert_eq!(got.as_deref(), Some(&b"config v2"[..]));
    }

    // n4 crashes: dropped without leaving.
    let n4_addr = nodes[4].addr();
    nodes.pop();
    for n in &nodes {
        until(n, "n4 dead", |c| matches!(state_of(c, "n4"), Some((MemberState::Dead, _)))).await;
        assert_eq!(n.members().len(), 4);
    }
    for log in &mut logs[..4] {
        log.expect("n4", false).await;
        assert_eq!((log.count("n4", true), log.count("n4", false)), (1, 1), "inserted once, removed once");
    }

    // n3 leaves gracefully.
    nodes[3].leave().await.unwrap();
    for n in &nodes[..3] {
        until(n, "n3 left", |c| matches!(state_of(c, "n3"), Some((MemberState::Left, _)))).await;
    }
    let left = nodes.pop().unwrap();
    for log in &mut logs[..3] {
        log.expect("n3", false).await;
        assert_eq!(log.count("n3", false), 1);
    }
    drop(left);

    // n4 restarts at the same address and rejoins with a higher incarnation.
    let (_, dead_inc) = state_of(&nodes[0], "n4").unwrap();
    let n4 = node("n4", n4_addr).await;
    n4.join(&[seed]).await.unwrap();
    for n in &nodes {
        until(n, "n4 back", |c| matches!(state_of(c, "n4"), Some((MemberState::Alive, inc)) if inc > dead_inc)).await;
    }
    until(&n4, "the three others", |c| c.members().len() == 4).await;
    for log in &mut logs[..3] {
        log.expect("n4", true).await;
        assert_eq!(log.count("n4", true), 2, "re-inserted");
        assert_eq!(log.count("n4", false), 1);
    }
}

#[tokio::test]
async fn a_node_with_another_key_cannot_join() {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let a = node("a", any).await;
    let b = Cluster::builder("b")
        .config(Config { label: "it".into(), ..Config::local() })
        .keyring(Keyring::new([1; 32]))
        .start()
        .await
        .unwrap();
    assert!(matches!(b.join(&[a.addr()]).await, Err(ha_membership::ClusterError::JoinFailed)));
    assert_eq!(b.members().len(), 1);
    assert_eq!(a.members().len(), 1);
    let mut a2 = a.clone();
    // a dropped b's request: wait for the counter rather than for time.
    tokio::time::timeout(Duration::from_secs(10), async {
        while a2.counters().dropped == 0 {
            a2.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn invalid_config_is_a_typed_error() {
    let bad = Config { probe_timeout: Duration::from_secs(5), ..Config::lan() };
    let err = Cluster::builder("a").config(bad).start().await.unwrap_err();
    assert!(matches!(err, ha_membership::ClusterError::Config(_)));
}
