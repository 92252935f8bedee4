//! Hostile input through the sans-IO API, forged with the crate's `forge` hooks (the file, with its own copy of the wire format, was run against the code before issue 14: every test there failed).
use std::net::SocketAddr;
use std::time::Duration;

use ha_core::Instant;
use ha_swim::wire::forge::{self, Sealer};
use ha_swim::wire::Message;
use ha_swim::{Config, Keyring, Swim};

/// One forged message in a datagram of the unlabelled, unencrypted
/// cluster the tests run, sealed as any member would seal it.
fn forged(m: &Message) -> Vec<u8> {
    Sealer::new("", None).seal(false, &forge::frames(std::slice::from_ref(m)))
}

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 7946))
}

fn pair(now: Instant) -> (Swim, Swim) {
    let mut a = Swim::new(Config::lan(), "a", addr(1), now, 1).unwrap();
    let mut b = Swim::new(Config::lan(), "b", addr(2), now, 2).unwrap();
    let s = b.local_state(true);
    a.handle_state(now, &s).unwrap();
    let s = a.local_state(false);
    b.handle_state(now, &s).unwrap();
    (a, b)
}

fn pump(now: Instant, a: &mut Swim, b: &mut Swim) {
    for _ in 0..10 {
        while let Some(t) = a.poll_transmit() {
            if t.to == addr(2) {
                b.handle(now, addr(1), &t.payload);
            }
        }
        while let Some(t) = b.poll_transmit() {
            if t.to == addr(1) {
                a.handle(now, addr(2), &t.payload);
            }
        }
    }
}

#[test]
fn max_incarnation_leaves_b_refutable() {
    let now = Instant::now();
    let (mut a, mut b) = pair(now);
    let m = Message::Alive { name: "b".into(), addr: addr(2), incarnation: u64::MAX, meta: None };
    a.handle(now, addr(9), &forged(&m));
    let m = Message::Suspect { name: "b".into(), incarnation: u64::MAX, from: "x".into() };
    a.handle(now, addr(9), &forged(&m));
    b.handle(now, addr(9), &forged(&m));
    let mut t = now;
    for _ in 0..40 {
        t += Duration::from_millis(500);
        a.tick(t);
        b.tick(t);
        pump(t, &mut a, &mut b);
    }
    assert!(a.member("b").unwrap().state.is_live());
    assert!(b.incarnation() < 1000);
}

#[test]
fn forged_alive_grows_no_table() {
    let now = Instant::now();
    let (mut a, _) = pair(now);
    for i in 0..500 {
        let m = Message::Alive { name: format!("f{i}").into(), addr: addr(50), incarnation: 0, meta: None };
        a.handle(now, addr(9), &forged(&m));
    }
    assert!(a.members().count() <= 2, "{}", a.members().count());
}

#[test]
fn ping_req_from_stranger_not_reflected() {
    let now = Instant::now();
    let (mut a, _) = pair(now);
    while a.poll_transmit().is_some() {}
    for i in 0..100 {
        let m = Message::PingReq { seq: i, target: "b".into(), addr: addr(77), nack: true };
        a.handle(now, addr(9), &forged(&m));
    }
    let out = std::iter::from_fn(|| a.poll_transmit()).filter(|t| t.to == addr(77)).count();
    assert_eq!(out, 0);
}

#[test]
fn stranger_pings_open_few_syncs() {
    let now = Instant::now();
    let (mut a, _) = pair(now);
    for i in 0..1000 {
        let m = Message::Ping { seq: i, target: "a".into(), from: format!("s{i}").into() };
        a.handle(now, SocketAddr::from(([10, 9, (i / 256) as u8, i as u8], 1)), &forged(&m));
    }
    let syncs = std::iter::from_fn(|| a.poll_sync()).count();
    assert!(syncs <= 16, "{syncs}");
}

#[test]
#[allow(clippy::let_unit_value, unused_must_use)]
fn oversized_broadcast_does_not_sit_in_the_queue() {
    let now = Instant::now();
    let (mut a, _) = pair(now);
    let before = a.queued_updates();
    let _ = a.broadcast_user(vec![0; 3000]);
    assert_eq!(a.queued_updates(), before);
}

#[test]
fn encrypted_replay_is_dropped() {
    let now = Instant::now();
    let ring = Keyring::new([9; 32]);
    let mut a = Swim::new(Config::lan(), "a", addr(1), now, 1).unwrap().with_keyring(ring.clone());
    let mut b = Swim::new(Config::lan(), "b", addr(2), now, 2).unwrap().with_keyring(Keyring::new([9; 32]));
    let s = b.local_state(true);
    assert!(a.handle_state(now, &s).is_ok());
    assert!(a.handle_state(now, &s).is_err(), "replayed state accepted");
}

#[test]
fn absurd_config_and_empty_name_rejected() {
    let c = Config { probe_interval: Duration::from_millis(u64::MAX), ..Config::lan() };
    assert!(c.validate().is_err());
    assert!(Swim::new(Config::lan(), "", addr(1), Instant::now(), 1).is_err());
}
