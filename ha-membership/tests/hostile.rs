//! Hostile and careless input against real `Cluster`s on 127.0.0.1: each
//! test floods one node and checks that it stays a healthy member, that its
//! descriptors and memory stay within a stated bound, and that the drops
//! are counted.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use ha_membership::wire::forge;
use ha_membership::{Cluster, ClusterError, Config, MemberState, MembershipEvent, Metadata};
use tokio::net::{TcpStream, UdpSocket};

/// Tests that measure the whole process (its descriptors, its memory) run
/// alone, the others together: the test harness runs tests on parallel
/// threads, and another test's sockets would count as this one's. The lock
/// is held from before a test's runtime starts until after it has shut
/// down, so that its descriptors are all inside.
static PROCESS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Runs `test` on a runtime of `threads` workers while no other test runs.
fn alone(threads: usize, test: impl std::future::Future<Output = ()>) {
    let _alone = PROCESS.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    runtime(threads).block_on(test);
}

/// Runs `test` on a runtime of `threads` workers beside the others that
/// do not measure the process.
fn together(threads: usize, test: impl std::future::Future<Output = ()>) {
    let _together = PROCESS.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    runtime(threads).block_on(test);
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    builder.enable_all().build().expect("a test runtime")
}

const LOCAL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Starts a node on a free port (UDP port 0 may land on a taken TCP twin: retry).
async fn node(name: &str) -> Cluster {
    let mut last = None;
    for _ in 0..5 {
        match Cluster::builder(name).config(Config::local()).start().await {
            Ok(c) => return c,
            Err(e) => last = Some(e),
        }
    }
    panic!("cannot start {name}: {last:?}");
}

async fn pair() -> (Cluster, Cluster) {
    let (v, p) = (node("victim").await, node("peer").await);
    p.join(&[v.addr()]).await.unwrap();
    until(&v, "the peer", |c| c.members().len() == 2).await;
    until(&p, "the victim", |c| c.members().len() == 2).await;
    (v, p)
}

/// Waits (bounded) until `pred` holds, woken by the node's changes.
async fn until(c: &Cluster, what: &str, pred: impl Fn(&Cluster) -> bool) {
    let mut c2 = c.clone();
    let wait = async {
        while !pred(&c2) {
            c2.changed().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("{} never saw: {what} ({:?})", c.name(), c.counters()));
}

fn state_of(c: &Cluster, name: &str) -> Option<MemberState> {
    c.all_members().iter().find(|m| &*m.name == name).map(|m| m.state)
}

/// The victim still probes and is seen alive, and sees its peer alive.
async fn still_healthy(v: &Cluster, p: &Cluster) {
    let probes = v.counters().probes;
    until(v, "three more probes", |c| c.counters().probes >= probes + 3).await;
    assert_eq!(state_of(v, "peer"), Some(MemberState::Alive));
    assert_eq!(state_of(p, "victim"), Some(MemberState::Alive));
    assert_eq!(v.health_score(), 0);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Sends `packets` to `v` in batches of 50, each waited for (up to a second)
/// in the node's counters, so that the flood measures the node and not the
/// socket buffer.
async fn flood(a: &UdpSocket, v: &Cluster, packets: impl IntoIterator<Item = Vec<u8>>) {
    let base = v.counters().packets_in;
    let mut sent = 0u64;
    let packets: Vec<Vec<u8>> = packets.into_iter().collect();
    for chunk in packets.chunks(50) {
        for p in chunk {
            a.send_to(p, v.addr()).await.unwrap();
        }
        sent += chunk.len() as u64;
        let mut w = v.clone();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while w.counters().packets_in < base + sent {
                w.changed().await.unwrap();
            }
        })
        .await;
    }
}

async fn attacker() -> UdpSocket {
    UdpSocket::bind(LOCAL).await.unwrap()
}

/// An attacker's UDP socket with a TCP listener on the same port that never
/// accepts. The TCP twin of a free UDP port may be taken (by another test's
/// outgoing connection), so the pair is bound TCP first and retried.
async fn attacker_with_stalling_listener() -> (UdpSocket, std::net::TcpListener) {
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind(LOCAL).unwrap();
        if let Ok(udp) = UdpSocket::bind(tcp.local_addr().unwrap()).await {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP in 50 tries");
}

#[test]
fn pings_from_strangers_open_few_state_syncs() {
    alone(2, async {
        let (v, p) = pair().await;
        // The attacker's address takes TCP connections and never answers:
        // every sync opened toward it would hold a descriptor for 10 s.
        let (a, _stall) = attacker_with_stalling_listener().await;
        let fds = open_fds();
        flood(&a, &v, (0..2000u32).map(|i| forge::ping("", i, "victim", &format!("stranger-{i}")))).await;
        until(&v, "most syncs refused", |c| c.counters().dropped_syncs >= 1900).await;
        let grown = open_fds().saturating_sub(fds);
        assert!(grown <= 16, "{grown} descriptors for 2000 pings");
        still_healthy(&v, &p).await;
        eprintln!("2000 stranger pings: +{grown} fds, counters {:?}", v.counters());
    });
}

#[test]
fn indirect_probe_requests_are_not_reflected() {
    together(2, async {
        let (v, p) = pair().await;
        let a = attacker().await;
        let target = UdpSocket::bind(LOCAL).await.unwrap();
        let to = target.local_addr().unwrap();
        // About a real member at another address, and about nobody.
        let reqs =
            (0..2000u32).flat_map(|i| [forge::ping_req("", i, "peer", to), forge::ping_req("", i, "nobody", to)]);
        flood(&a, &v, reqs).await;
        until(&v, "all refused", |c| c.counters().dropped_ping_req >= 4000).await;
        let mut buf = [0u8; 2048];
        let mut reflected = 0;
        while target.try_recv_from(&mut buf).is_ok() {
            reflected += 1;
        }
        assert_eq!(reflected, 0);
        still_healthy(&v, &p).await;
    });
}

#[test]
fn forged_members_do_not_grow_the_table() {
    alone(2, async {
        let (v, p) = pair().await;
        let a = attacker().await;
        let nowhere = UdpSocket::bind(LOCAL).await.unwrap().local_addr().unwrap();
        let rss = rss_kib();
        flood(&a, &v, (0..20_000u32).map(|i| forge::alive("", &format!("fake-{i}"), nowhere, 0))).await;
        until(&v, "the fakes refused", |c| c.counters().dropped_members >= 15_000).await;
        assert_eq!(v.all_members().len(), 2);
        assert_eq!(p.all_members().len(), 2, "nothing forged was gossiped on");
        let grown = rss_kib().saturating_sub(rss);
        assert!(grown < 32 * 1024, "RSS grew by {grown} KiB");
        still_healthy(&v, &p).await;
        eprintln!("20000 forged members: RSS +{grown} KiB, counters {:?}", v.counters());
    });
}

#[test]
fn forged_incarnations_remove_nobody() {
    together(2, async {
        let (v, p) = pair().await;
        let a = attacker().await;
        for name in ["victim", "peer"] {
            for to in [v.addr(), p.addr()] {
                a.send_to(&forge::alive("", name, a.local_addr().unwrap(), u64::MAX), to).await.unwrap();
                a.send_to(&forge::suspect("", name, u64::MAX, false), to).await.unwrap();
                a.send_to(&forge::suspect("", name, u64::MAX, true), to).await.unwrap();
            }
        }
        until(&v, "forgeries dropped", |c| c.counters().dropped_incarnation >= 6).await;
        until(&p, "forgeries dropped", |c| c.counters().dropped_incarnation >= 6).await;
        still_healthy(&v, &p).await;
        assert!(v.is_running() && p.is_running());
        for c in [&v, &p] {
            assert!(c.all_members().iter().all(|m| m.incarnation < 10), "{:?}", c.all_members());
        }
    });
}

#[test]
fn forged_suspicions_spend_few_sockets_and_kill_nobody() {
    alone(2, async {
        let (v, p) = pair().await;
        let a = attacker().await;
        let fds = open_fds();
        // Each forged pair makes the peer alive at a new incarnation, then
        // suspected at it: a fresh suspicion, and a stream check of the peer.
        let mut most = 0;
        for batch in (1..=2000u64).collect::<Vec<_>>().chunks(25) {
            let forged = batch
                .iter()
                .flat_map(|&inc| [forge::alive("", "peer", p.addr(), inc), forge::suspect("", "peer", inc, false)]);
            flood(&a, &v, forged).await;
            most = most.max(open_fds().saturating_sub(fds));
        }
        // Both ends of every check live in this process: 16 checks, 32 descriptors
        // (and a state sync or two).
        assert!(most <= 48, "descriptors grew by up to {most}");
        until(&v, "the peer refuted", |c| state_of(c, "peer") == Some(MemberState::Alive)).await;
        still_healthy(&v, &p).await;
        eprintln!("4000 forged suspicion datagrams: descriptors up to +{most}, counters {:?}", v.counters());
    });
}

#[test]
fn stalled_and_oversized_connections_are_capped() {
    alone(2, async {
        let (v, p) = pair().await;
        let rss = rss_kib();
        let mut held = Vec::new();
        // Claims of 15 MiB states: refused at the length prefix.
        for _ in 0..20 {
            let mut s = TcpStream::connect(v.addr()).await.unwrap();
            use tokio::io::AsyncWriteExt;
            s.write_all(&(15u32 << 20).to_be_bytes()).await.unwrap();
            s.write_all(&[0u8; 64 * 1024]).await.unwrap_or(());
            held.push(s);
        }
        until(&v, "oversized states refused", |c| c.counters().dropped_state_size >= 20).await;
        // Silent connections: beyond 16 the oldest is closed.
        for _ in 0..100 {
            held.push(TcpStream::connect(v.addr()).await.unwrap());
        }
        until(&v, "connections capped", |c| c.counters().dropped_connections >= 84).await;
        // A newcomer still joins through it meanwhile.
        let late = node("late").await;
        tokio::time::timeout(Duration::from_secs(10), late.join(&[v.addr()])).await.unwrap().unwrap();
        until(&v, "the newcomer", |c| c.members().len() == 3).await;
        let grown = rss_kib().saturating_sub(rss);
        assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
        still_healthy(&v, &p).await;
        eprintln!("120 hostile connections: RSS +{grown} KiB, counters {:?}", v.counters());
    });
}

#[test]
fn oversized_datagrams_are_dropped_and_counted() {
    together(1, async {
        let v = node("victim").await;
        let a = attacker().await;
        for _ in 0..10 {
            a.send_to(&vec![1u8; 9000], v.addr()).await.unwrap();
        }
        until(&v, "dropped", |c| c.counters().dropped_oversized == 10).await;
    });
}

#[test]
fn a_panicking_task_is_visible_as_stopped() {
    together(1, async {
        let mut v = node("victim").await;
        assert!(v.is_running());
        v.crash_for_tests();
        let r = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if v.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(r.is_ok(), "changed() reports the stop");
        assert!(!v.is_running());
        assert!(matches!(v.join(&["127.0.0.1:9".parse().unwrap()]).await, Err(ClusterError::Stopped)));
        assert!(matches!(v.broadcast(vec![1]), Err(ClusterError::Stopped)));
    });
}

#[test]
fn a_second_node_with_a_taken_name_is_told() {
    together(1, async {
        let first = node("same").await;
        let second = node("same").await;
        let mut events = second.events();
        let err = tokio::time::timeout(Duration::from_secs(10), second.join(&[first.addr()])).await.unwrap();
        assert!(matches!(err, Err(ClusterError::DuplicateName(a)) if a == first.addr()), "{err:?}");
        let conflict = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(ev) = events.next().await {
                if let MembershipEvent::NameConflict(m) = ev {
                    return m.addr;
                }
            }
            panic!("events ended");
        })
        .await
        .unwrap();
        assert_eq!(conflict, first.addr());
        until(&first, "the conflict counted", |c| c.counters().name_conflicts >= 1).await;
    });
}

#[test]
fn careless_builds_and_calls_are_typed_errors() {
    together(1, async {
        let err = Cluster::builder("").start().await.unwrap_err();
        assert!(matches!(&err, ClusterError::Config(e) if e.field() == "name"), "{err:?}");
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let err = Cluster::builder("a").bind(any).start().await.unwrap_err();
        assert!(matches!(&err, ClusterError::Config(e) if e.field() == "advertise"), "{err:?}");
        let big = Metadata { user: vec![0; 9000], ..Metadata::default() };
        let err = Cluster::builder("a").metadata(big.clone()).start().await.unwrap_err();
        assert!(matches!(err, ClusterError::TooLarge(e) if e.max == 8192), "{err:?}");
        let bad = Config { probe_interval: Duration::from_millis(u64::MAX), ..Config::lan() };
        let err = Cluster::builder("a").config(bad).start().await.unwrap_err();
        assert!(matches!(&err, ClusterError::Config(e) if e.field() == "probe_interval"), "{err:?}");

        let v = node("v").await;
        assert!(matches!(v.set_metadata(big), Err(ClusterError::TooLarge(_))));
        let max = v.max_broadcast_len();
        let err = v.broadcast(vec![0; max + 1]).unwrap_err();
        assert!(matches!(err, ClusterError::TooLarge(e) if e.max == max && e.size == max + 1));
        v.broadcast(vec![0; max]).unwrap();
        // Binding every address works with an advertised one.
        let adv = Cluster::builder("w").bind(any).advertise("127.0.0.1:7999".parse().unwrap()).start().await;
        assert!(adv.is_ok() || matches!(adv, Err(ClusterError::Bind(_))));
    });
}
