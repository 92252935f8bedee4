//! Hostile and careless inputs against the sans-IO core: forged
//! incarnations, forged members, reflection, floods, oversized payloads,
//! bad names. Each drop must be counted, nothing may panic.

use super::*;

/// Where the attacker sends from.
fn attacker() -> SocketAddr {
    addr(9)
}

/// An unencrypted packet of `msgs`, as anyone on the network can forge.
fn forged(msgs: &[Message]) -> Vec<u8> {
    let mut body = Vec::new();
    for m in msgs {
        wire::push_frame(m, &mut body);
    }
    Codec::new("", None).seal(false, &body)
}

fn forge_to(net: &mut Net, to: usize, msgs: &[Message]) {
    let now = net.now;
    net.nodes[to].handle(now, attacker(), &forged(msgs));
}

fn all_alive(net: &Net) {
    for i in 0..net.nodes.len() {
        for j in 0..net.nodes.len() {
            assert_eq!(net.state(i, j), MemberState::Alive, "n{i} about n{j}");
        }
    }
}

#[test]
fn a_forged_max_incarnation_makes_no_member_unrefutable() {
    let mut net = Net::joined(3, Config::lan());
    let max = u64::MAX;
    let x: Arc<str> = "x".into();
    for to in 0..3 {
        forge_to(
            &mut net,
            to,
            &[
                Message::Alive { name: "n2".into(), addr: addr(2), incarnation: max, meta: None },
                Message::Suspect { name: "n2".into(), incarnation: max, from: x.clone() },
                Message::Dead { name: "n1".into(), incarnation: max, from: x.clone() },
                Message::Suspect { name: "n0".into(), incarnation: max - 1, from: x.clone() },
            ],
        );
    }
    let t0 = net.now;
    net.run_until(t0 + Duration::from_secs(30));
    all_alive(&net);
    for n in &net.nodes {
        assert!(n.incarnation() < 10, "{n:?} at {}", n.incarnation());
        assert!(n.counters().dropped_incarnation >= 3, "{:?}", n.counters());
    }
    // A real suspicion later is still refuted by each.
    let now = net.now;
    let inc = net.nodes[2].incarnation();
    net.nodes[0].apply_suspect(now, "n2".into(), inc, "n0".into());
    net.nodes[0].next_gossip = now;
    net.run_until(now + Duration::from_secs(30));
    all_alive(&net);
}

#[test]
fn the_incarnation_bound_is_exact() {
    let cfg = Config { max_incarnation_jump: 10, ..Config::lan() };
    let mut net = Net::joined(3, cfg);
    let x: Arc<str> = "x".into();
    // One above the bound: dropped, counted, nobody suspects anybody.
    forge_to(&mut net, 0, &[Message::Suspect { name: "n2".into(), incarnation: 11, from: x.clone() }]);
    assert_eq!(net.state(0, 2), MemberState::Alive);
    assert_eq!(net.nodes[0].counters().dropped_incarnation, 1);
    forge_to(&mut net, 2, &[Message::Suspect { name: "n2".into(), incarnation: 11, from: x.clone() }]);
    assert_eq!(net.nodes[2].incarnation(), 0, "too far above its own: not refuted");
    assert_eq!(net.nodes[2].counters().dropped_incarnation, 1);
    // At the bound: accepted, and n2 refutes above it.
    forge_to(&mut net, 0, &[Message::Suspect { name: "n2".into(), incarnation: 10, from: x }]);
    assert_eq!(net.state(0, 2), MemberState::Suspect);
    let t0 = net.now;
    net.nodes[0].next_gossip = t0;
    net.run_until(t0 + Duration::from_secs(5));
    assert_eq!(net.nodes[2].incarnation(), 11);
    all_alive(&net);
    for n in &net.nodes {
        assert_eq!(n.member("n2").unwrap().incarnation, 11);
    }
}

#[test]
fn refutation_saturates_instead_of_wrapping_or_panicking() {
    let now = Instant::now();
    let mut a = Swim::new(Config::lan(), "a", addr(1), now, 1).unwrap().with_incarnation(u64::MAX - 1);
    a.apply_suspect(now, "a".into(), u64::MAX, "x".into());
    assert_eq!(a.incarnation(), u64::MAX);
    a.apply_dead(now, "a".into(), u64::MAX, "x".into());
    assert_eq!(a.incarnation(), u64::MAX, "saturates, never wraps to 0");
    a.set_metadata(now, Metadata::default()).unwrap();
    assert_eq!(a.incarnation(), u64::MAX);
}

#[test]
fn a_forged_alive_adds_no_member_but_a_real_one_is_admitted_after_a_probe() {
    let mut net = Net::new(3, Config::lan());
    net.sync(1, 0);
    net.drain_events();
    // A ghost at an address where nobody answers to its name.
    let ghost = Message::Alive { name: "ghost".into(), addr: addr(1), incarnation: 0, meta: None };
    forge_to(&mut net, 0, &[ghost]);
    assert!(net.nodes[0].member("ghost").is_none());
    net.pump();
    assert!(net.nodes[0].member("ghost").is_none(), "n1 does not answer to `ghost`");
    // n2 exists, and only gossip told n0 about it: admitted once it answered.
    let real = Message::Alive { name: "n2".into(), addr: addr(2), incarnation: 0, meta: None };
    forge_to(&mut net, 0, &[real]);
    assert!(net.nodes[0].member("n2").is_none(), "not before the probe");
    net.pump();
    assert_eq!(net.state(0, 2), MemberState::Alive);
    let t0 = net.now;
    net.run_until(t0 + Duration::from_secs(2));
    assert!(net.nodes[0].member("ghost").is_none());
    assert!(net.nodes[0].counters().dropped_members >= 1);
    // A flood of forged members: at most MAX_PENDING probes, no table growth.
    let flood: Vec<Message> = (0..200)
        .map(|i| Message::Alive { name: format!("f{i}").into(), addr: addr(50), incarnation: 0, meta: None })
        .collect();
    for chunk in flood.chunks(20) {
        forge_to(&mut net, 0, chunk);
    }
    let probes = std::iter::from_fn(|| net.nodes[0].poll_transmit()).filter(|t| t.to == addr(50)).count();
    assert_eq!(probes, MAX_PENDING);
    assert_eq!(net.nodes[0].members().count(), 3, "n0, n1 and n2 only");
}

#[test]
fn the_member_table_is_capped() {
    let now = Instant::now();
    let cfg = Config { max_members: 4, ..Config::lan() };
    let mut a = Swim::new(cfg, "a", addr(1), now, 1).unwrap();
    let mut b = Swim::new(Config::lan(), "b", addr(2), now, 2).unwrap();
    for i in 0..100 {
        b.merge_alive(now, format!("m{i}").into(), addr(100), 0, None, true);
    }
    a.handle_state(now, &b.local_state(false)).unwrap();
    assert_eq!(a.members().count(), 4);
    assert!(a.counters().dropped_members >= 96);
    // A dead member makes room for a newcomer.
    a.apply_dead(now, "b".into(), 0, "a".into());
    a.merge_alive(now, "late".into(), addr(3), 0, None, true);
    assert!(a.member("late").is_some() && a.member("b").is_none());
}

#[test]
fn indirect_probes_only_for_known_members_and_bounded_per_requester() {
    let mut net = Net::joined(3, Config::lan());
    let now = net.now;
    let req = |target: &str, a: SocketAddr| Message::PingReq { seq: 1, target: target.into(), addr: a, nack: true };
    // A stranger asks n0 to ping n1, or some victim: refused.
    forge_to(&mut net, 0, &[req("n1", addr(1))]);
    forge_to(&mut net, 0, &[req("victim", addr(77))]);
    assert!(net.nodes[0].poll_transmit().is_none(), "no reflection");
    // A member asks about a known member at another address, or an unknown one: refused.
    net.nodes[0].handle(now, addr(1), &forged(&[req("n2", addr(77))]));
    net.nodes[0].handle(now, addr(1), &forged(&[req("victim", addr(77))]));
    assert!(net.nodes[0].poll_transmit().is_none());
    // A member floods requests about a real member: at most a few relayed.
    for _ in 0..1000 {
        net.nodes[0].handle(now, addr(1), &forged(&[req("n2", addr(2))]));
    }
    let out = std::iter::from_fn(|| net.nodes[0].poll_transmit()).count();
    assert_eq!(out, MAX_RELAYS_PER_ORIGIN);
    assert_eq!(net.nodes[0].counters().dropped_ping_req, 4 + 1000 - MAX_RELAYS_PER_ORIGIN as u64);
}

#[test]
fn pings_from_strangers_get_bare_answers_and_rate_limited_syncs() {
    let mut net = Net::joined(2, Config::lan());
    let now = net.now;
    // Plenty of news queued, which a stranger must not get piggy-backed.
    for i in 0..50 {
        net.nodes[0].merge_alive(now, format!("member-{i}").into(), addr(100), 0, None, true);
    }
    let mut biggest = 0;
    for i in 0..1000u32 {
        let ping = forged(&[Message::Ping { seq: i, target: "n0".into(), from: format!("s{i}").into() }]);
        net.nodes[0].handle(now, SocketAddr::from(([10, 9, (i / 256) as u8, i as u8], 9)), &ping);
        while let Some(t) = net.nodes[0].poll_transmit() {
            biggest = biggest.max(t.payload.len());
        }
    }
    assert!(biggest <= 16, "an ack to a stranger is as small as the ping: {biggest}");
    let syncs = std::iter::from_fn(|| net.nodes[0].poll_sync()).count();
    assert_eq!(syncs, 8, "a burst of twice `unknown_syncs_per_sec`");
    assert_eq!(net.nodes[0].counters().dropped_syncs, 992);
    // Tokens come back with time.
    let later = now + Duration::from_secs(1);
    let ping = forged(&[Message::Ping { seq: 1, target: "n0".into(), from: "late".into() }]);
    net.nodes[0].handle(later, addr(60), &ping);
    assert_eq!(net.nodes[0].poll_sync(), Some(addr(60)));
}

#[test]
fn oversized_broadcasts_are_refused_and_oversized_datagrams_dropped() {
    let mut net = Net::joined(3, Config::lan());
    let max = net.nodes[0].max_broadcast_len();
    assert!(max > 1200 && max < MAX_PACKET, "{max}");
    let queued = net.nodes[0].queued_updates();
    let err = net.nodes[0].broadcast_user(vec![0; max + 1]).unwrap_err();
    assert_eq!((err.size, err.max), (max + 1, max));
    assert_eq!(net.nodes[0].queued_updates(), queued, "nothing clogs the queue");
    // The largest accepted one fits a packet and arrives.
    net.nodes[0].broadcast_user(vec![7; max]).unwrap();
    let t0 = net.now;
    net.run_until(t0 + Duration::from_secs(3));
    for n in &mut net.nodes[1..] {
        assert_eq!(n.poll_user().map(|p| p.len()), Some(max));
    }
    // A datagram larger than any member sends: dropped and counted.
    let mut big = Vec::new();
    wire::push_frame(&Message::User { origin: "x".into(), seq: 1, payload: vec![0; 4000] }, &mut big);
    let packet = Codec::new("", None).seal(false, &big);
    let now = net.now;
    net.nodes[1].handle(now, attacker(), &packet);
    let c = net.nodes[1].counters();
    assert_eq!((c.dropped_oversized, c.dropped), (1, 1));
    assert!(net.nodes[1].poll_user().is_none());
}

#[test]
fn names_and_metadata_are_checked() {
    let now = Instant::now();
    assert_eq!(Swim::new(Config::lan(), "", addr(1), now, 1).unwrap_err().field(), "name");
    assert_eq!(Swim::new(Config::lan(), "x".repeat(256), addr(1), now, 1).unwrap_err().field(), "name");
    let cfg = Config { max_metadata: 100, ..Config::lan() };
    let mut a = Swim::new(cfg, "a", addr(1), now, 1).unwrap();
    let big = Metadata { user: vec![0; 100], ..Metadata::default() };
    let err = a.set_metadata(now, big).unwrap_err();
    assert_eq!(err.max, 100);
    assert_eq!(a.incarnation(), 0, "nothing published");
    a.set_metadata(now, Metadata { user: vec![0; 90], ..Metadata::default() }).unwrap();
    // Empty names in messages are dropped and counted.
    a.handle(
        now,
        attacker(),
        &forged(&[Message::Alive { name: "".into(), addr: addr(2), incarnation: 0, meta: None }]),
    );
    assert_eq!(a.counters().dropped_names, 1);
}

#[test]
fn a_duplicate_name_is_reported_on_both_sides() {
    let mut net = Net::new(4, Config::lan());
    net.nodes[3] = Swim::new(Config::lan(), "n1", addr(3), net.now, 4).unwrap();
    net.sync(1, 0);
    net.drain_events();
    // The second "n1" joins through n0 and learns of the first.
    net.sync(3, 0);
    assert!(net.nodes[3].conflict_pending());
    net.pump();
    assert!(!net.nodes[3].conflict_pending());
    assert_eq!(net.nodes[3].name_conflict(), Some(addr(1)));
    let events = net.drain_events();
    assert!(events.iter().any(|(i, e)| *i == 3 && matches!(e, MembershipEvent::NameConflict(m) if m.addr == addr(1))));
    assert!(events.iter().any(|(i, e)| *i == 1 && matches!(e, MembershipEvent::NameConflict(m) if m.addr == addr(3))));
    assert_eq!(net.nodes[1].counters().name_conflicts, 1);
    // A node with a unique name sees no conflict.
    assert_eq!(net.nodes[2].name_conflict(), None);
}

#[test]
fn encrypted_replays_are_dropped_and_decrypt_failures_counted_apart() {
    let now = Instant::now();
    let ring = Keyring::new([9; 32]);
    let mut a = Swim::new(Config::lan(), "a", addr(1), now, 1).unwrap().with_keyring(ring.clone());
    let mut b = Swim::new(Config::lan(), "b", addr(2), now, 2).unwrap().with_keyring(ring.clone());
    let state = b.local_state(true);
    a.handle_state(now, &state).unwrap();
    assert_eq!(a.handle_state(now, &state), Err(DecodeError::Replay), "a replayed state");
    a.tick(now + Duration::from_secs(2));
    let packets: Vec<Transmit> = std::iter::from_fn(|| a.poll_transmit()).collect();
    assert!(!packets.is_empty());
    // Delivered out of order, then each replayed many times.
    for t in packets.iter().rev() {
        b.handle(now, addr(1), &t.payload);
    }
    let answers = std::iter::from_fn(|| b.poll_transmit()).count();
    for _ in 0..100 {
        for t in &packets {
            b.handle(now, addr(1), &t.payload);
        }
    }
    let c = b.counters();
    assert_eq!(c.dropped_replay, 100 * packets.len() as u64);
    assert_eq!(c.dropped, c.dropped_replay);
    assert_eq!(c.dropped_auth, 0);
    // The first delivery was answered, the replays are not.
    assert!(answers >= 1);
    assert!(b.poll_transmit().is_none());
    // Another key: an authentication failure, counted on its own.
    let mut other = Swim::new(Config::lan(), "o", addr(3), now, 3).unwrap().with_keyring(Keyring::new([1; 32]));
    b.handle_state(now, &other.local_state(true)).unwrap_err();
    let c = b.counters();
    assert_eq!((c.dropped_auth, c.dropped_replay), (1, 100 * packets.len() as u64));
}
