//! DNS discovery against a real DNS server on loopback (an in-process UDP
//! server answering from a record table the test changes).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use ha::dns::Dns;
use ha::Target;
use hickory_proto::op::Message;
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record};
use tokio::net::UdpSocket;
use tower::discover::Change;

/// A DNS server on 127.0.0.1 answering from `records`, or not at all.
struct Server {
    addr: SocketAddr,
    records: Arc<Mutex<Vec<Record>>>,
    answering: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start() -> Server {
        let socket = UdpSocket::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let records = Arc::new(Mutex::new(Vec::<Record>::new()));
        let answering = Arc::new(AtomicBool::new(true));
        let (table, on) = (records.clone(), answering.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else { continue };
                let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                if !on.load(Ordering::SeqCst) {
                    continue;
                }
                let mut answer = Message::response(query.metadata.id, query.metadata.op_code);
                answer.metadata.authoritative = true;
                answer.metadata.recursion_desired = query.metadata.recursion_desired;
                for q in &query.queries {
                    answer.add_query(q.clone());
                    let table = table.lock().unwrap();
                    for r in table.iter().filter(|r| r.name == *q.name() && r.record_type() == q.query_type()) {
                        answer.add_answer(r.clone());
                    }
                }
                if let Ok(bytes) = answer.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        Server { addr, records, answering, task }
    }

    fn set(&self, records: Vec<Record>) {
        *self.records.lock().unwrap() = records;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn a(host: &str, last: u8) -> Record {
    Record::from_rdata(name(host), 1, RData::A(A(Ipv4Addr::new(127, 0, 0, last))))
}

fn srv(service: &str, priority: u16, weight: u16, port: u16, target: &str) -> Record {
    Record::from_rdata(name(service), 1, RData::SRV(SRV::new(priority, weight, port, name(target))))
}

type Changes = futures_util::stream::BoxStream<'static, Result<Change<std::sync::Arc<str>, Target>, tower::BoxError>>;

/// The next `n` changes, as (key, Some(target)) for inserts and (key, None) for removals, sorted.
async fn next(changes: &mut Changes, n: usize) -> Vec<(String, Option<Target>)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let change = tokio::time::timeout(Duration::from_secs(10), changes.next())
            .await
            .expect("a change within 10 s")
            .expect("the stream goes on")
            .expect("the stream never fails");
        out.push(match change {
            Change::Insert(k, t) => (k.to_string(), Some(t)),
            Change::Remove(k) => (k.to_string(), None),
        });
    }
    out.sort_by(|x, y| x.0.cmp(&y.0));
    out
}

const FLOOR: Duration = Duration::from_millis(100);

#[tokio::test]
async fn a_records_are_followed_and_kept_through_an_outage() {
    let server = Server::start().await;
    server.set(vec![a("svc.test.", 2), a("svc.test.", 3)]);
    let dns = Dns::host_at("svc.test.", 8080, server.addr)
        .unwrap()
        .interval(FLOOR, Duration::from_secs(1))
        .timeout(Duration::from_millis(300));
    let stats = dns.stats();
    let mut changes = dns.discover();

    let first = next(&mut changes, 2).await;
    let keys: Vec<&str> = first.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["127.0.0.2:8080", "127.0.0.3:8080"]);
    assert!(first.iter().all(|(_, t)| t.as_ref().unwrap().tier == 0));

    // One address goes, another comes: followed within the TTL (1 s).
    server.set(vec![a("svc.test.", 3), a("svc.test.", 4)]);
    let moved = next(&mut changes, 2).await;
    assert_eq!(moved[0], ("127.0.0.2:8080".to_owned(), None));
    assert_eq!(moved[1].0, "127.0.0.4:8080");

    // The server stops answering: failures are counted, the set is kept.
    server.answering.store(false, Ordering::SeqCst);
    let failures = stats.failures();
    let quiet = tokio::time::timeout(Duration::from_secs(4), changes.next()).await;
    assert!(quiet.is_err(), "no change while DNS is down: {:?}", quiet.map(|c| c.map(|c| c.map(|_| ()))));
    assert!(stats.failures() > failures, "the failed resolutions were counted: {stats:?}");
    assert!(stats.last_error().is_some());

    // An empty answer keeps the set too.
    server.answering.store(true, Ordering::SeqCst);
    server.set(vec![]);
    let empty = stats.empty_answers();
    let quiet = tokio::time::timeout(Duration::from_secs(3), changes.next()).await;
    assert!(quiet.is_err(), "no change on an empty answer");
    assert!(stats.empty_answers() > empty);

    // Back: the set follows again.
    server.set(vec![a("svc.test.", 5)]);
    let back = next(&mut changes, 3).await;
    let keys: Vec<(&str, bool)> = back.iter().map(|(k, t)| (k.as_str(), t.is_some())).collect();
    assert_eq!(keys, [("127.0.0.3:8080", false), ("127.0.0.4:8080", false), ("127.0.0.5:8080", true)]);
}

#[tokio::test]
async fn srv_priorities_are_tiers_and_weights_are_weights() {
    let server = Server::start().await;
    server.set(vec![
        srv("_http._tcp.svc.test.", 10, 5, 8081, "a.svc.test."),
        srv("_http._tcp.svc.test.", 10, 1, 8082, "b.svc.test."),
        srv("_http._tcp.svc.test.", 20, 0, 8083, "c.svc.test."),
        a("a.svc.test.", 11),
        a("b.svc.test.", 12),
        a("c.svc.test.", 13),
    ]);
    let dns = Dns::srv_at("_http._tcp.svc.test.", server.addr)
        .unwrap()
        .interval(FLOOR, Duration::from_secs(1))
        .timeout(Duration::from_millis(300));
    let mut changes = dns.discover();
    let got = next(&mut changes, 3).await;
    let summary: Vec<(String, u8, u32)> =
        got.into_iter().map(|(k, t)| (k, t.as_ref().unwrap().tier, t.as_ref().unwrap().weight)).collect();
    assert_eq!(
        summary,
        [
            ("127.0.0.11:8081".to_owned(), 0, 5),
            ("127.0.0.12:8082".to_owned(), 0, 1),
            ("127.0.0.13:8083".to_owned(), 1, 1),
        ]
    );

    // A weight changes: the endpoint is inserted again with it.
    server.set(vec![
        srv("_http._tcp.svc.test.", 10, 5, 8081, "a.svc.test."),
        srv("_http._tcp.svc.test.", 10, 9, 8082, "b.svc.test."),
        srv("_http._tcp.svc.test.", 20, 0, 8083, "c.svc.test."),
        a("a.svc.test.", 11),
        a("b.svc.test.", 12),
        a("c.svc.test.", 13),
    ]);
    let changed = next(&mut changes, 1).await;
    assert_eq!(changed[0].0, "127.0.0.12:8082");
    assert_eq!(changed[0].1.as_ref().unwrap().weight, 9);
}
