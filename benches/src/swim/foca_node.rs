//! `foca` (a sans-IO SWIM in Rust) as a simulator node, the side-by-side contender.
//!
//! The adapter drives foca the way foca's own documentation and examples
//! tell an application to, so that the comparison measures the protocol
//! and not a careless driver:
//!
//! * **Configuration.** foca's preset for the scenario's network,
//!   [`Config::new_lan`] (or [`Config::new_wan`]) sized for the cluster:
//!   1 s probe period and 500 ms probe timeout on a LAN, the same as `ha`'s
//!   LAN preset, with foca's extensions on (periodic gossip every 200 ms to
//!   3 members, periodic announce, announce to down members, telling down
//!   members they are down).
//! * **Joining.** [`Foca::announce`] sends one datagram; if it or the
//!   reply is lost, nothing in foca tries again, and a node that drops to
//!   zero members ([`Notification::Idle`]) stops its timers altogether. So,
//!   as foca's docs put it, the application watches for
//!   [`Notification::Active`] and re-announces until it arrives: every
//!   probe period, to each of its seeds (and to a few members it already
//!   knows, down or not, which is how a node alone after a partition finds
//!   its way back). `ha` joins over a reliable stream and retries through
//!   its seeds on its own, so this puts the two on the same footing rather
//!   than leaving foca stranded by one lost datagram.
//! * **Identity.** The identity carries a generation next to the address
//!   and implements [`Identity::renew`], foca's opt-in to rejoin on its own
//!   when declared down ([`Notification::Rejoin`]). A restarted node starts
//!   with a fresh generation taken from the (virtual) clock, as foca's UDP
//!   agent example does, so it wins the address conflict with its previous
//!   life at once instead of being ignored as a down member for a day
//!   (`remove_down_after`). [`Notification::Defunct`] (declared down with
//!   no renewal possible) cannot happen with a renewing identity; should
//!   it, the adapter renews by hand through [`Foca::change_identity`], the
//!   intervention the docs ask for.
//!
//! foca reports members going up and down and, on a restart, renames the
//! old identity to the new one. It has no suspicion notification, so
//! suspicions are read off its membership table after each step (for
//! clusters up to 256, where that scan is cheap).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use foca::{Config, Foca, Identity, Notification, PostcardCodec, Runtime, State, Timer};
use ha_core::rng::FastRng;
use ha_core::Instant;
use ha_membership_sim::{addr_of, index_of, MemberState, SimEvent, SimNode};
use serde::{Deserialize, Serialize};

/// A node's identity: its address and a generation, fresh on every start
/// and bumped by foca to rejoin after being declared down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Id {
    addr: SocketAddr,
    generation: u32,
}

impl Identity for Id {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Id { addr: self.addr, generation: self.generation.wrapping_add(1) })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// [`FastRng`] behind the RNG trait foca 2 takes.
pub struct Rng(FastRng);

impl foca_rand_core::TryRng for Rng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.0.next_u64() as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let v = self.0.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Up,
    Down,
    Renamed,
}

#[derive(Default)]
struct Rt {
    sends: VecDeque<(SocketAddr, Vec<u8>)>,
    timers: Vec<(Duration, Timer<Id>)>,
    changes: Vec<(SocketAddr, Change)>,
    active: Option<bool>,
    defunct: bool,
}

impl Runtime<Id> for Rt {
    fn notify(&mut self, n: Notification<'_, Id>) {
        match n {
            Notification::MemberUp(id) => self.changes.push((id.addr, Change::Up)),
            Notification::MemberDown(id) => self.changes.push((id.addr, Change::Down)),
            Notification::Rename(_, new) => self.changes.push((new.addr, Change::Renamed)),
            Notification::Active => self.active = Some(true),
            Notification::Idle => self.active = Some(false),
            Notification::Defunct => {
                self.active = Some(false);
                self.defunct = true;
            }
            Notification::Rejoin(_) => {
                // A new identity is not known to be accepted until `Active`.
                self.active = Some(false);
            }
        }
    }

    fn send_to(&mut self, to: Id, data: &[u8]) {
        self.sends.push_back((to.addr, data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<Id>, after: Duration) {
        self.timers.push((after, event));
    }
}

/// Builds foca nodes for an `n`-node cluster on the scenario's `preset`
/// network (`wan` takes foca's WAN preset, anything else its LAN one).
///
/// The first start is generation 0; a restart takes a fresh generation from
/// the virtual clock (seconds since the start), so a restarted node is a new
/// identity that wins over its old one.
pub fn spawner(n: usize, preset: &str) -> impl FnMut(usize, Instant, u64, &[SocketAddr]) -> FocaNode {
    let size = NonZeroU32::new(n.max(1) as u32).expect("max(1) is non-zero");
    let config = if preset == "wan" { Config::new_wan(size) } else { Config::new_lan(size) };
    let mut origin: Option<Instant> = None;
    let mut started = vec![false; n];
    move |i, now, seed, seeds: &[SocketAddr]| {
        let origin = *origin.get_or_insert(now);
        // Seconds, not finer: the identity rides in every message, and a
        // varint under 128 is one byte. A previous life would have to renew
        // itself once a second to catch up.
        let generation = if std::mem::replace(&mut started[i], true) {
            u32::try_from((now - origin).as_secs()).unwrap_or(u32::MAX - 1) + 1
        } else {
            0
        };
        FocaNode::new(i, n, generation, config.clone(), now, seed, seeds)
    }
}

/// A foca instance with its timers and outputs.
pub struct FocaNode {
    foca: Foca<Id, PostcardCodec, Rng, foca::NoCustomBroadcast>,
    rt: Rt,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, Timer<Id>>,
    timer_seq: u64,
    events: VecDeque<SimEvent>,
    suspects: HashMap<SocketAddr, bool>,
    scan: bool,
    far: Instant,
    seeds: Vec<SocketAddr>,
    joined: bool,
    next_announce: Instant,
    announce_every: Duration,
    pick: FastRng,
}

impl FocaNode {
    /// Node `i` of an `n`-node cluster with identity generation
    /// `generation`, announcing itself to `seeds` until it is part of the
    /// cluster.
    pub fn new(
        i: usize,
        n: usize,
        generation: u32,
        config: Config,
        now: Instant,
        seed: u64,
        seeds: &[SocketAddr],
    ) -> Self {
        let id = Id { addr: addr_of(i), generation };
        let announce_every = config.probe_period;
        let foca = Foca::new(id, config, Rng(FastRng::new(seed)), PostcardCodec);
        let mut node = FocaNode {
            foca,
            rt: Rt::default(),
            timers: BinaryHeap::new(),
            pending: HashMap::new(),
            timer_seq: 0,
            events: VecDeque::new(),
            suspects: HashMap::new(),
            scan: n <= 256,
            far: now + Duration::from_secs(365 * 24 * 3600),
            seeds: seeds.to_vec(),
            joined: false,
            next_announce: now,
            announce_every,
            pick: FastRng::new(seed ^ 0x616e_6e6f_756e_6365),
        };
        node.announce(now);
        node.collect(now);
        node
    }

    /// The identity foca runs under now (its generation moves on a rejoin).
    #[cfg(test)]
    pub fn identity(&self) -> Id {
        *self.foca.identity()
    }

    /// Whether foca has reported itself part of the cluster
    /// ([`Notification::Active`]) since it last started, went idle or
    /// rejoined.
    #[cfg(test)]
    pub fn joined(&self) -> bool {
        self.joined
    }

    /// One announce round: every seed, plus up to two members foca already
    /// knows (they may have come back since it lost them).
    fn announce(&mut self, now: Instant) {
        let mut targets = self.seeds.clone();
        let known: Vec<SocketAddr> = self.foca.iter_membership_state().map(|m| m.id().addr).collect();
        for _ in 0..2.min(known.len()) {
            let a = known[self.pick.below(known.len() as u64) as usize];
            if !targets.contains(&a) {
                targets.push(a);
            }
        }
        for addr in targets {
            // The receiver reads only the address off the destination.
            // An announce that fails to encode is retried next round.
            let _ = self.foca.announce(Id { addr, generation: 0 }, &mut self.rt);
        }
        self.next_announce = now + self.announce_every;
    }

    fn collect(&mut self, now: Instant) {
        if std::mem::take(&mut self.rt.defunct) {
            if let Some(new) = self.foca.identity().renew() {
                // Failing to renew leaves the node out; the sim shows it.
                let _ = self.foca.change_identity(new, &mut self.rt);
            }
        }
        if let Some(active) = self.rt.active.take() {
            if active != self.joined {
                self.joined = active;
                if !active {
                    self.next_announce = self.next_announce.min(now);
                }
            }
        }
        for (after, timer) in self.rt.timers.drain(..) {
            self.timer_seq += 1;
            self.timers.push(Reverse((now + after, self.timer_seq)));
            self.pending.insert(self.timer_seq, timer);
        }
        let changes = std::mem::take(&mut self.rt.changes);
        for (k, &(addr, change)) in changes.iter().enumerate() {
            let Some(subject) = index_of(addr) else { continue };
            let state = match change {
                Change::Up => MemberState::Alive,
                Change::Down => MemberState::Dead,
                // foca follows a rename with up or down when liveness
                // changed; alone, the new identity took the old one's
                // place, which is news of the restarted node only if alive.
                Change::Renamed => {
                    if changes[k + 1..].iter().any(|(a, _)| *a == addr) {
                        continue;
                    }
                    let alive =
                        self.foca.iter_membership_state().any(|m| m.id().addr == addr && m.state() == State::Alive);
                    if !alive {
                        continue;
                    }
                    MemberState::Alive
                }
            };
            if state == MemberState::Alive {
                self.suspects.insert(addr, false);
            }
            self.events.push_back(SimEvent { subject, state, incarnation: None });
        }
        if self.scan {
            for m in self.foca.iter_membership_state() {
                let addr = m.id().addr;
                let suspect = m.state() == State::Suspect;
                let was = self.suspects.insert(addr, suspect).unwrap_or(false);
                if suspect && !was {
                    if let Some(subject) = index_of(addr) {
                        self.events.push_back(SimEvent { subject, state: MemberState::Suspect, incarnation: None });
                    }
                } else if !suspect && was && m.state() == State::Alive {
                    if let Some(subject) = index_of(addr) {
                        self.events.push_back(SimEvent { subject, state: MemberState::Alive, incarnation: None });
                    }
                }
            }
        }
    }
}

impl SimNode for FocaNode {
    fn handle(&mut self, now: Instant, _from: SocketAddr, packet: &[u8]) {
        // foca rejects bad data with an error; nothing else to do here.
        let _ = self.foca.handle_data(packet, &mut self.rt);
        self.collect(now);
    }

    fn tick(&mut self, now: Instant) {
        while let Some(&Reverse((at, seq))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(t) = self.pending.remove(&seq) {
                let _ = self.foca.handle_timer(t, &mut self.rt);
            }
        }
        self.collect(now);
        if !self.joined && now >= self.next_announce {
            self.announce(now);
            self.collect(now);
        }
    }

    fn next_wake(&self) -> Instant {
        let timer = self.timers.peek().map_or(self.far, |Reverse((at, _))| *at);
        if self.joined {
            timer
        } else {
            timer.min(self.next_announce)
        }
    }

    fn leave(&mut self, now: Instant) {
        let _ = self.foca.leave_cluster(&mut self.rt);
        self.collect(now);
        // Gone for good: no announcing back in.
        self.joined = true;
    }

    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.rt.sends.pop_front()
    }

    fn poll_event(&mut self) -> Option<SimEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_membership_sim::{self as sim, scenario::Scenario, RunSpec};

    fn drain(node: &mut FocaNode) -> Vec<(SocketAddr, Vec<u8>)> {
        std::iter::from_fn(|| node.poll_transmit()).collect()
    }

    #[test]
    fn a_lost_announce_is_sent_again_until_the_node_is_active() {
        let t0 = Instant::now();
        let mut spawn = spawner(2, "lan");
        let mut a = spawn(0, t0, 1, &[]);
        let mut b = spawn(1, t0, 2, &[addr_of(0)]);
        assert!(!b.joined());
        // The first announce is lost on the way.
        assert_eq!(drain(&mut b).len(), 1);
        assert!(b.next_wake() <= t0 + Duration::from_secs(1), "it means to try again");
        let t1 = t0 + Duration::from_secs(1);
        b.tick(t1);
        let again = drain(&mut b);
        assert!(again.iter().any(|(to, _)| *to == addr_of(0)), "announced again to its seed");
        for (_, p) in again {
            a.handle(t1, addr_of(1), &p);
        }
        for (to, p) in drain(&mut a) {
            assert_eq!(to, addr_of(1));
            b.handle(t1, addr_of(0), &p);
        }
        assert!(a.joined() && b.joined());
        // Joined, it stops announcing: the next wake is foca's own timer.
        b.tick(t1 + Duration::from_secs(1));
        assert!(drain(&mut b).iter().all(|(to, _)| *to == addr_of(0)));
        assert!(b.joined());
    }

    #[test]
    fn a_restart_takes_an_identity_that_wins_over_the_old_one() {
        let t0 = Instant::now();
        let mut spawn = spawner(3, "lan");
        let first = spawn(0, t0, 1, &[]).identity();
        let old = spawn(1, t0 + Duration::from_millis(700), 2, &[addr_of(0)]).identity();
        assert_eq!((first.generation, old.generation), (0, 0));
        let new = spawn(1, t0 + Duration::from_secs(45), 3, &[addr_of(0)]).identity();
        assert_eq!(new.addr, old.addr);
        assert!(new.win_addr_conflict(&old) && !old.win_addr_conflict(&new));
        // Even over an old life that renewed itself a few times.
        let renewed = (0..5).fold(old, |id, _| id.renew().unwrap());
        assert!(new.win_addr_conflict(&renewed));
    }

    fn run(text: &str, n: usize, seed: u64) -> sim::Outcome {
        let s: Scenario = toml::from_str(text).unwrap();
        let spec = RunSpec { nodes: n, seed, quick: false, lifeguard: true };
        sim::run(&s, &spec, &mut spawner(n, &s.preset)).unwrap()
    }

    #[test]
    fn every_node_joins_through_heavy_loss() {
        // With 30% loss an announce and its reply both arrive half the
        // time: a single announce would leave several nodes out for good.
        for seed in 1..=3 {
            let out = run("nodes = 16\nwarmup_s = 40\nduration_s = 5\n[network]\nloss = 0.3\n", 16, seed);
            assert!(out.converged, "seed {seed}: {out:?}");
        }
    }

    #[test]
    fn a_restarted_node_is_back_everywhere_in_its_new_life() {
        let out = run(
            "nodes = 32\nwarmup_s = 20\nduration_s = 60\n[[faults]]\nkind = \"crash\"\nat_s = 5\nuntil_s = 30\nnodes = [7]\n",
            32,
            1,
        );
        assert!(out.all_dead_s.is_some(), "{out:?}");
        assert!(out.rejoin_s.expect("rejoined") < 5.0, "{out:?}");
        assert_eq!(out.false_dead, 0);
        assert!(out.converged);
    }
}
