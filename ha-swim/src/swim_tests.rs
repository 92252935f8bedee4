use std::time::Duration;

use super::*;
use crate::suspicion::CHECKS;
use ha_core::Event;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8], 7946))
}

impl Swim {
    /// Panics unless the invariants across its parts hold.
    fn check(&self) {
        self.table.check();
        for e in self.table.iter() {
            let suspected = e.member.state == MemberState::Suspect;
            assert_eq!(
                suspected,
                self.suspicions.get(&e.member.name).is_some(),
                "{}: a timer iff suspect",
                e.member.name
            );
        }
        let live = self.table.iter().filter(|e| e.member.state.is_live()).count();
        assert_eq!(self.live, live, "the live count");
    }
}

/// A tiny hand-driven network: nodes by index, datagrams delivered on `pump`.
struct Net {
    nodes: Vec<Swim>,
    now: Instant,
    /// Datagrams to these indices are lost.
    down: Vec<usize>,
    /// Stream connections to these indices are refused (the process is gone).
    refused: Vec<usize>,
}

impl Net {
    fn new(n: usize, cfg: Config) -> Net {
        let now = Instant::now();
        let nodes =
            (0..n).map(|i| Swim::new(cfg.clone(), format!("n{i}"), addr(i), now, i as u64 + 1).unwrap()).collect();
        Net { nodes, now, down: Vec::new(), refused: Vec::new() }
    }

    /// Every node learns every other through push-pull with node 0.
    fn joined(n: usize, cfg: Config) -> Net {
        let mut net = Net::new(n, cfg);
        for i in 1..n {
            net.sync(i, 0);
        }
        for i in 1..n {
            net.sync(i, 0);
        }
        net.drain_events();
        net
    }

    fn idx(a: SocketAddr) -> usize {
        match a {
            SocketAddr::V4(v) => v.ip().octets()[3] as usize,
            SocketAddr::V6(_) => unreachable!(),
        }
    }

    fn sync(&mut self, from: usize, to: usize) {
        let req = self.nodes[from].local_state(true);
        self.nodes[to].handle_state(self.now, &req).unwrap();
        let resp = self.nodes[to].local_state(false);
        self.nodes[from].handle_state(self.now, &resp).unwrap();
    }

    /// Delivers datagrams until none is left; returns the messages seen, as (from, to, msgs).
    fn pump(&mut self) -> Vec<(usize, usize, Vec<Message>)> {
        let mut seen = Vec::new();
        for _ in 0..100 {
            let mut any = false;
            for i in 0..self.nodes.len() {
                while let Some(c) = self.nodes[i].poll_stream_check() {
                    if self.refused.contains(&Net::idx(c.to)) {
                        any = true;
                        let now = self.now;
                        self.nodes[i].stream_refused(now, c);
                    }
                }
                while let Some(t) = self.nodes[i].poll_transmit() {
                    any = true;
                    assert!(t.payload.len() <= MAX_PACKET, "packet of {} bytes", t.payload.len());
                    let to = Net::idx(t.to);
                    let mut msgs = Vec::new();
                    let body = self.nodes[i].codec.open(false, &t.payload).unwrap();
                    wire::decode_frames(&body, &mut msgs).unwrap();
                    seen.push((i, to, msgs));
                    if self.down.contains(&to) || self.down.contains(&i) {
                        continue;
                    }
                    let now = self.now;
                    self.nodes[to].handle(now, addr(i), &t.payload);
                }
            }
            if !any {
                break;
            }
        }
        for n in &self.nodes {
            n.check();
        }
        seen
    }

    /// Advances time to `t`, ticking every node at each of its deadlines on the way.
    fn run_until(&mut self, t: Instant) -> Vec<(usize, usize, Vec<Message>)> {
        let mut seen = Vec::new();
        loop {
            let next = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| !self.down.contains(i))
                .map(|(_, n)| n.poll_timeout())
                .min()
                .unwrap();
            if next > t {
                break;
            }
            self.now = self.now.max(next);
            for i in 0..self.nodes.len() {
                if !self.down.contains(&i) && self.nodes[i].poll_timeout() <= self.now {
                    let now = self.now;
                    self.nodes[i].tick(now);
                }
            }
            seen.extend(self.pump());
        }
        self.now = t;
        seen
    }

    fn drain_events(&mut self) -> Vec<(usize, MembershipEvent)> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            while let Some(e) = n.poll_event() {
                out.push((i, e));
            }
        }
        out
    }

    fn state(&self, of: usize, about: usize) -> MemberState {
        self.nodes[of].member(&format!("n{about}")).unwrap().state
    }
}

fn count(seen: &[(usize, usize, Vec<Message>)], pred: impl Fn(&Message) -> bool) -> usize {
    seen.iter().flat_map(|(_, _, m)| m.iter()).filter(|m| pred(m)).count()
}

#[path = "hostile_tests.rs"]
mod hostile;

#[test]
fn join_by_push_pull_gives_everyone_everyone() {
    let net = Net::joined(4, Config::lan());
    for n in &net.nodes {
        assert_eq!(n.live_count(), 4, "{n:?}");
    }
}

#[test]
fn ping_is_acked_and_nobody_is_suspected() {
    let mut net = Net::joined(3, Config::lan());
    let t0 = net.now;
    let seen = net.run_until(t0 + Duration::from_secs(10));
    let pings = count(&seen, |m| matches!(m, Message::Ping { .. }));
    let acks = count(&seen, |m| matches!(m, Message::Ack { .. }));
    assert!(pings >= 27, "each node probes once per second: {pings}");
    assert_eq!(pings, acks);
    assert_eq!(count(&seen, |m| matches!(m, Message::PingReq { .. })), 0);
    assert!(net.drain_events().is_empty());
    assert!(net.nodes.iter().all(|n| n.counters().probes >= 9 && n.health_score() == 0));
}

#[test]
fn silent_member_gets_indirect_probes_then_suspected_then_dead() {
    let mut net = Net::joined(5, Config::lan());
    net.down.push(4);
    let t0 = net.now;
    let seen = net.run_until(t0 + Duration::from_secs(5));
    // Whoever probed n4 asked k = 3 helpers, who pinged n4 and sent nacks.
    assert!(count(&seen, |m| matches!(m, Message::PingReq { nack: true, .. })) >= 3);
    assert!(count(&seen, |m| matches!(m, Message::Nack { .. })) >= 3);
    let mut events = net.drain_events();
    // Nacks arrived, so the probers did not blame themselves.
    assert!(net.nodes[..4].iter().all(|n| n.health_score() == 0));
    // n=5: min suspicion = 4 * max(1, log10 5) * 1 s = 4 s; k = 2 confirmations, max 24 s.
    net.run_until(t0 + Duration::from_secs(30));
    events.extend(net.drain_events());
    assert!(events.iter().any(|(_, e)| matches!(e, MembershipEvent::Suspected(m) if &*m.name == "n4")));
    for i in 0..4 {
        assert_eq!(net.state(i, 4), MemberState::Dead, "node {i}");
        assert_eq!(net.nodes[i].live_count(), 4);
    }
    assert!(events.iter().any(|(_, e)| matches!(e, MembershipEvent::Died(m) if &*m.name == "n4")));
}

#[test]
fn failed_probe_without_helpers_raises_health_score_and_success_lowers_it() {
    let mut net = Net::joined(2, Config::lan());
    net.down.push(1);
    let t0 = net.now;
    net.run_until(t0 + Duration::from_millis(2500));
    assert!(net.nodes[0].health_score() >= 1);
    let score = net.nodes[0].health_score();
    // The next probe period is scaled by score + 1.
    let next = net.nodes[0].probing.next_round();
    assert!(next - net.now <= Duration::from_secs(u64::from(score) + 1));
    net.down.clear();
    net.run_until(t0 + Duration::from_secs(12));
    assert!(net.nodes[0].health_score() < score, "acks lower the score");
}

/// n4 goes silent; returns, for the first node to suspect it, the time
/// from its suspicion to its verdict, and that node's refused probes.
fn suspicion_to_death(refused: bool) -> (Duration, u64) {
    let mut net = Net::joined(5, Config::lan());
    net.down.push(4);
    if refused {
        net.refused.push(4);
    }
    let (mut suspected, mut died) = (None, None);
    let step = Duration::from_millis(10);
    let end = net.now + Duration::from_secs(60);
    while died.is_none() && net.now < end {
        let t = net.now + step;
        net.run_until(t);
        for (i, e) in net.drain_events() {
            match e {
                MembershipEvent::Suspected(m) if &*m.name == "n4" && suspected.is_none() => suspected = Some((i, t)),
                MembershipEvent::Died(m) if &*m.name == "n4" && suspected.is_some_and(|(s, _)| s == i) => {
                    died = Some(t)
                }
                _ => {}
            }
        }
    }
    let (who, at) = suspected.expect("n4 suspected");
    (died.expect("n4 declared dead") - at, net.nodes[who].counters().refused_probes)
}

#[test]
fn a_refused_stream_check_suspects_at_once_and_waits_one_probe_interval() {
    // n = 5: the suspicion timer's minimum is 2 * max(1, log10 5) * 1 s = 2 s.
    let (silent, refusals) = suspicion_to_death(false);
    assert!(silent >= Duration::from_secs(2), "a silent member keeps the Lifeguard timer: {silent:?}");
    assert_eq!(refusals, 0);
    let (gone, refusals) = suspicion_to_death(true);
    assert!(gone <= Duration::from_millis(1020), "a refused member waits one probe interval: {gone:?}");
    assert!(refusals >= 1);
}

#[test]
fn a_suspicion_heard_from_another_is_checked_here_too() {
    // n1 hears n0 suspect n4, then nothing more: no verdict reaches it.
    let mut net = Net::joined(5, Config::lan());
    net.down = vec![0, 2, 3, 4];
    net.refused.push(4);
    let (now, inc) = (net.now, net.nodes[1].member("n4").unwrap().incarnation);
    net.nodes[1].apply_suspect(now, "n4".into(), inc, "n0".into());
    // A driver flushes after every input: the check goes out now.
    net.pump();
    net.run_until(now + Duration::from_millis(1010));
    assert_eq!(net.state(1, 4), MemberState::Dead, "its own refused check ended the timer");
    assert!(net.nodes[1].counters().refused_probes >= 1);
}

#[test]
fn suspect_refutes_with_higher_incarnation_and_others_recover_it() {
    let mut net = Net::joined(3, Config::lan());
    let now = net.now;
    net.nodes[0].apply_suspect(now, "n2".into(), 0, "n0".into());
    assert_eq!(net.state(0, 2), MemberState::Suspect);
    net.nodes[0].next_gossip = now;
    net.nodes[0].tick(now);
    net.pump();
    assert_eq!(net.nodes[2].incarnation(), 1);
    assert_eq!(net.nodes[2].counters().refutations, 1);
    // Refuting costs the refuter a point of health (Lifeguard).
    assert_eq!(net.nodes[2].health_score(), 1);
    net.nodes[2].next_gossip = now;
    net.nodes[2].tick(now);
    net.pump();
    net.run_until(now + Duration::from_secs(1));
    assert_eq!(net.state(0, 2), MemberState::Alive);
    assert_eq!(net.nodes[0].member("n2").unwrap().incarnation, 1);
    let ev = net.drain_events();
    assert!(ev.iter().any(|(i, e)| *i == 0 && matches!(e, MembershipEvent::Recovered(m) if m.incarnation == 1)));
}

#[test]
fn probe_of_a_suspect_carries_the_suspicion_buddy_system() {
    let mut net = Net::joined(2, Config::lan());
    let now = net.now;
    net.nodes[0].apply_suspect(now, "n1".into(), 0, "n9".into());
    // Clear the queue so that only the buddy message can tell n1.
    net.nodes[0].broadcasts = Broadcasts::default();
    net.nodes[0].start_probe(now);
    let seen = net.pump();
    let (_, to, first) = &seen[0];
    assert_eq!(*to, 1);
    assert!(matches!(&first[0], Message::Suspect { name, .. } if &**name == "n1"));
    assert!(matches!(first[1], Message::Ping { .. }));
    let (_, _, ack) = &seen[1];
    assert!(matches!(ack[0], Message::Ack { .. }));
    assert!(ack.iter().any(|m| matches!(m, Message::Alive { incarnation: 1, .. })), "the ack carries the refutation");
    assert_eq!(net.nodes[1].incarnation(), 1, "refuted on the probe itself");
}

#[test]
fn without_lifeguard_there_is_no_buddy_no_nack_and_no_health_score() {
    let cfg = Config { lifeguard: false, ..Config::lan() };
    let mut net = Net::joined(4, cfg);
    net.down.push(3);
    let t0 = net.now;
    let seen = net.run_until(t0 + Duration::from_secs(3));
    assert_eq!(count(&seen, |m| matches!(m, Message::Nack { .. })), 0);
    assert!(count(&seen, |m| matches!(m, Message::PingReq { nack: false, .. })) > 0);
    assert!(net.nodes.iter().all(|n| n.health_score() == 0));
}

#[test]
fn confirmations_from_other_nodes_shorten_the_timer() {
    let mut net = Net::joined(8, Config::lan());
    let now = net.now;
    net.nodes[0].apply_suspect(now, "n7".into(), 0, "n1".into());
    let first = net.nodes[0].suspicions.get("n7").unwrap().deadline();
    net.nodes[0].apply_suspect(now, "n7".into(), 0, "n2".into());
    let second = net.nodes[0].suspicions.get("n7").unwrap().deadline();
    assert!(second < first);
}

#[test]
fn dead_member_is_not_revived_by_old_news_and_incarnations_never_go_back() {
    let mut net = Net::joined(3, Config::lan());
    let now = net.now;
    net.nodes[0].apply_dead(now, "n2".into(), 0, "n1".into());
    assert_eq!(net.state(0, 2), MemberState::Dead);
    net.nodes[0].apply_alive(now, "n2".into(), addr(2), 0, None);
    assert_eq!(net.state(0, 2), MemberState::Dead, "same incarnation does not revive");
    net.nodes[0].apply_alive(now, "n2".into(), addr(2), 1, None);
    assert_eq!(net.state(0, 2), MemberState::Alive);
    net.nodes[0].apply_suspect(now, "n2".into(), 0, "n1".into());
    assert_eq!(net.state(0, 2), MemberState::Alive, "older suspicion ignored");
    assert_eq!(net.nodes[0].member("n2").unwrap().incarnation, 1);
}

#[test]
fn graceful_leave_is_seen_at_once_and_not_refuted() {
    let mut net = Net::joined(4, Config::lan());
    let now = net.now;
    net.nodes[3].leave(now);
    net.pump();
    net.run_until(now + Duration::from_secs(2));
    for i in 0..3 {
        assert_eq!(net.state(i, 3), MemberState::Left);
    }
    assert_eq!(net.nodes[3].incarnation(), 0);
    let ev = net.drain_events();
    assert_eq!(ev.iter().filter(|(_, e)| matches!(e, MembershipEvent::Left(_))).count(), 3);
}

#[test]
fn restarted_node_rejoins_with_a_higher_incarnation() {
    let mut net = Net::joined(3, Config::lan());
    let now = net.now;
    for i in 0..2 {
        net.nodes[i].apply_dead(now, "n2".into(), 0, "n0".into());
    }
    net.drain_events();
    net.nodes[2] = Swim::new(Config::lan(), "n2", addr(2), now, 99).unwrap();
    net.nodes[2].join(&[addr(0)]);
    assert_eq!(net.nodes[2].poll_sync(), Some(addr(0)));
    net.sync(2, 0);
    assert_eq!(net.nodes[2].incarnation(), 1, "learned it was dead at 0 and refuted");
    net.run_until(now + Duration::from_secs(3));
    for i in 0..2 {
        assert_eq!(net.state(i, 2), MemberState::Alive);
        assert_eq!(net.nodes[i].member("n2").unwrap().incarnation, 1);
    }
    let ev = net.drain_events();
    assert!(ev.iter().any(|(i, e)| *i == 1 && matches!(e, MembershipEvent::Joined(m) if &*m.name == "n2")));
}

#[test]
fn dead_members_are_reprobed_so_a_healed_partition_merges() {
    let mut net = Net::joined(4, Config::lan());
    let now = net.now;
    // Two halves that each think the other dead.
    for (a, b) in [(0, 2), (0, 3), (1, 2), (1, 3), (2, 0), (2, 1), (3, 0), (3, 1)] {
        net.nodes[a].apply_dead(now, format!("n{b}").into(), 0, "x".into());
    }
    for n in &mut net.nodes {
        n.broadcasts = Broadcasts::default();
    }
    net.run_until(now + Duration::from_secs(60));
    for a in 0..4 {
        let view: Vec<_> = net.nodes[a].members().map(|m| (m.name.clone(), m.state, m.incarnation)).collect();
        assert_eq!(net.nodes[a].live_count(), 4, "{a} sees everyone: {view:?}");
    }
}

#[test]
fn alone_node_retries_its_seeds() {
    let now = Instant::now();
    let mut a = Swim::new(Config::lan(), "a", addr(1), now, 1).unwrap();
    a.join(&[addr(2), addr(1)]);
    assert_eq!(a.poll_sync(), Some(addr(2)));
    assert_eq!(a.poll_sync(), None, "never itself");
    a.tick(now + Duration::from_secs(20));
    assert_eq!(a.poll_sync(), Some(addr(2)));
}

#[test]
fn metadata_spreads_and_large_metadata_converges_through_push_pull() {
    let mut net = Net::joined(3, Config::lan());
    let now = net.now;
    let small = Metadata { zone: "eu-1".into(), weight: 5, ..Metadata::default() };
    net.nodes[1].set_metadata(now, small.clone()).unwrap();
    net.run_until(now + Duration::from_secs(2));
    assert_eq!(*net.nodes[0].member("n1").unwrap().meta, small);
    assert!(net.drain_events().iter().any(|(_, e)| matches!(e, MembershipEvent::Updated(m) if m.meta.zone == "eu-1")));

    let big = Metadata { user: vec![7; 4096], ..small };
    net.nodes[1].set_metadata(net.now, big.clone()).unwrap();
    let t = net.now;
    net.run_until(t + Duration::from_secs(2));
    let m = net.nodes[0].member("n1").unwrap();
    assert_eq!(m.incarnation, 2, "the update itself travels by gossip");
    assert_ne!(*m.meta, big, "4 KiB does not fit a datagram");
    net.sync(0, 1);
    assert_eq!(*net.nodes[0].member("n1").unwrap().meta, big);
}

#[test]
fn user_broadcast_reaches_everyone_once() {
    let mut net = Net::joined(5, Config::lan());
    net.nodes[0].broadcast_user(b"deploy v2".to_vec()).unwrap();
    let now = net.now;
    net.run_until(now + Duration::from_secs(5));
    for i in 1..5 {
        assert_eq!(net.nodes[i].poll_user().as_deref(), Some(&b"deploy v2"[..]), "node {i}");
        assert_eq!(net.nodes[i].poll_user(), None);
    }
    assert_eq!(net.nodes[0].poll_user(), None);
}

#[test]
fn updates_are_packed_under_1400_bytes_and_retransmitted_a_bounded_number_of_times() {
    let mut net = Net::joined(2, Config::lan());
    let now = net.now;
    for i in 0..200 {
        net.nodes[0].merge_alive(now, format!("member-with-a-long-name-{i}").into(), addr(100), 0, None, true);
    }
    let limit = net.nodes[0].retransmit_limit();
    assert_eq!(limit, 4 * 3, "lambda * ceil(log10(202 + 1))");
    let mut sizes = Vec::new();
    for _ in 0..200 {
        net.nodes[0].send(addr(1), &[]);
        match net.nodes[0].poll_transmit() {
            Some(t) => sizes.push(t.payload.len()),
            None => break,
        }
    }
    assert_eq!(net.nodes[0].queued_updates(), 0);
    // 202 updates of ~40 bytes, 12 times each, in full packets.
    assert!(sizes.iter().all(|&s| s <= MAX_PACKET));
    let full = sizes.iter().filter(|&&s| s > MAX_PACKET - 60).count();
    assert!(full + 3 >= sizes.len(), "{sizes:?}");
    assert!(sizes.len() < 200);
}

#[test]
fn bad_packets_are_dropped_and_counted() {
    let mut net = Net::joined(2, Config::lan());
    let now = net.now;
    net.nodes[0].handle(now, addr(1), &[]);
    net.nodes[0].handle(now, addr(1), &[1, 0, 0, 0xff, 0xff]);
    let mut other = Codec::new("other-cluster", None);
    let p = other.seal(false, &wire::frame(&Message::Ack { seq: 1 }));
    net.nodes[0].handle(now, addr(1), &p);
    assert_eq!(net.nodes[0].counters().dropped, 3);
    assert_eq!(net.nodes[0].poll_transmit(), None);
}

#[test]
fn ping_for_another_name_is_ignored() {
    let mut net = Net::joined(2, Config::lan());
    let now = net.now;
    let mut c = Codec::new("", None);
    let p = c.seal(false, &wire::frame(&Message::Ping { seq: 1, target: "someone-else".into(), from: "n0".into() }));
    net.nodes[1].handle(now, addr(0), &p);
    assert!(net.nodes[1].poll_transmit().is_none());
}

#[test]
fn encrypted_nodes_talk_and_plain_ones_cannot() {
    let now = Instant::now();
    let ring = Keyring::new([9; 32]);
    let mut a = Swim::new(Config::lan(), "a", addr(1), now, 1).unwrap().with_keyring(ring.clone());
    let mut b = Swim::new(Config::lan(), "b", addr(2), now, 2).unwrap().with_keyring(ring);
    let mut plain = Swim::new(Config::lan(), "p", addr(3), now, 3).unwrap();
    let s = b.local_state(true);
    a.handle_state(now, &s).unwrap();
    assert_eq!(a.live_count(), 2);
    assert_eq!(plain.handle_state(now, &s).unwrap_err(), DecodeError::Encryption);
    assert_eq!(plain.live_count(), 1);
}

#[test]
fn new_config_is_validated() {
    let bad = Config { probe_interval: Duration::ZERO, ..Config::lan() };
    assert_eq!(Swim::new(bad, "a", addr(1), Instant::now(), 1).unwrap_err().field(), "probe_interval");
}

#[test]
fn events_reach_the_ha_core_observer() {
    use std::sync::Mutex;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let events = Events::new().with_observer(move |e: &Event| sink.lock().unwrap().push(e.clone()));
    let now = Instant::now();
    let mut a = Swim::new(Config::lan(), "a", addr(1), now, 1).unwrap().with_events(events);
    a.merge_alive(now, "b".into(), addr(2), 0, None, true);
    a.apply_suspect(now, "b".into(), 0, "a".into());
    a.apply_dead(now, "b".into(), 0, "a".into());
    a.merge_alive(now, "c".into(), addr(3), 0, None, true);
    let zone = Metadata { zone: "eu-1".into(), ..Metadata::default() };
    a.apply_alive(now, "c".into(), addr(3), 1, Some(zone));
    let seen = seen.lock().unwrap();
    assert!(matches!(seen[0], Event::MemberAlive { .. }));
    assert!(matches!(seen[1], Event::MemberSuspected { .. }));
    assert!(matches!(seen[2], Event::MemberDead { .. }));
    assert!(matches!(seen[3], Event::MemberAlive { .. }));
    assert!(matches!(&seen[4], Event::MemberUpdated { member, incarnation: 1 } if &**member == "c"), "{seen:?}");
}

#[test]
fn suspects_get_check_pings_carrying_the_suspicion_before_the_timer_ends() {
    // K = 0: our own failed probes do not shorten the timer, so all checks are seen.
    let mut net = Net::joined(8, Config { suspicion_confirmations: 0, ..Config::lan() });
    let now = net.now;
    net.nodes[0].apply_suspect(now, "n7".into(), 0, "n3".into());
    net.nodes[0].broadcasts = Broadcasts::default();
    net.down = vec![1, 2, 3, 4, 5, 6, 7];
    let deadline = net.nodes[0].suspicions.get("n7").unwrap().deadline();
    let seen = net.run_until(deadline - Duration::from_millis(1));
    let checks: Vec<_> = seen
        .iter()
        .filter(|(from, to, m)| *from == 0 && *to == 7 && matches!(&m[0], Message::Suspect { .. }))
        .collect();
    assert!(checks.len() >= CHECKS as usize, "{} check pings", checks.len());
    assert_eq!(net.state(0, 7), MemberState::Suspect, "a lost check ping confirms nothing");

    // Once n7 is reachable, the next check ping's ack brings its refutation.
    let mut net = Net::joined(8, Config::lan());
    let now = net.now;
    net.nodes[0].apply_suspect(now, "n7".into(), 0, "n3".into());
    net.nodes[0].broadcasts = Broadcasts::default();
    net.down = vec![1, 2, 3, 4, 5, 6];
    let s = net.nodes[0].suspicions.get("n7").unwrap().next_check().unwrap();
    net.run_until(s + Duration::from_millis(10));
    assert_eq!(net.state(0, 7), MemberState::Alive);
    assert_eq!(net.nodes[0].member("n7").unwrap().incarnation, 1);
}

#[test]
fn a_probe_from_an_unknown_member_triggers_a_state_sync() {
    let now = Instant::now();
    let mut a = Swim::new(Config::lan(), "a", addr(1), now, 1).unwrap();
    let mut c = Codec::new("", None);
    let p = c.seal(false, &wire::frame(&Message::Ping { seq: 1, target: "a".into(), from: "stranger".into() }));
    a.handle(now, addr(9), &p);
    assert!(a.poll_transmit().is_some(), "acked");
    assert_eq!(a.poll_sync(), Some(addr(9)));
}

/// Steps `net` by 10 ms until `t`, handing `each` the messages sent in each step.
fn step_until(net: &mut Net, t: Instant, mut each: impl FnMut(&mut Net, &[(usize, usize, Vec<Message>)])) {
    while net.now < t {
        let next = net.now + Duration::from_millis(10);
        let seen = net.run_until(next);
        each(net, &seen);
    }
}

#[test]
fn a_failed_probe_goes_on_last_call_and_an_answer_spares_the_target() {
    // The first ping and the re-ping are lost, then the network recovers:
    // the last call (buddy Suspect + ping) reaches n1, its ack comes back,
    // and n0 never suspects it, so nobody else hears of a suspicion.
    let mut net = Net::joined(2, Config::lan());
    net.down = vec![1];
    let (mut pings, mut buddies) = (0, 0);
    let end = net.now + Duration::from_secs(6);
    step_until(&mut net, end, |net, seen| {
        for (from, to, msgs) in seen {
            for m in msgs {
                match m {
                    Message::Ping { .. } if (*from, *to) == (0, 1) => pings += 1,
                    Message::Suspect { name, .. } if (*from, *to) == (0, 1) && &**name == "n1" => buddies += 1,
                    _ => {}
                }
            }
        }
        if pings >= 2 {
            net.down.clear();
        }
    });
    assert!(buddies >= 1, "the target was told of the failed probe");
    let suspected = net.drain_events().into_iter().any(|(i, e)| i == 0 && matches!(e, MembershipEvent::Suspected(_)));
    assert!(!suspected, "an answer to the last call spares the target");
    assert_eq!(net.state(0, 1), MemberState::Alive);
}

#[test]
fn a_silent_target_is_suspected_one_probe_timeout_after_its_last_call() {
    let cfg = Config::lan();
    let mut net = Net::joined(2, cfg.clone());
    net.down = vec![1];
    let (mut told, mut suspected) = (None, None);
    let end = net.now + Duration::from_secs(6);
    step_until(&mut net, end, |net, seen| {
        let buddy = seen.iter().any(|(f, t, ms)| {
            (*f, *t) == (0, 1) && ms.iter().any(|m| matches!(m, Message::Suspect { name, .. } if &**name == "n1"))
        });
        if buddy && told.is_none() {
            told = Some(net.now);
        }
        if suspected.is_none() && net.state(0, 1) == MemberState::Suspect {
            suspected = Some(net.now);
        }
    });
    let (told, suspected) = (told.expect("last call sent"), suspected.expect("suspected"));
    assert!(suspected - told >= cfg.probe_timeout - Duration::from_millis(10), "told {told:?} suspected {suspected:?}");
}
