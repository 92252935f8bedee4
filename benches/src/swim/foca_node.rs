//! `foca` (a sans-IO SWIM in Rust) as a simulator node, the side-by-side contender.
//!
//! foca runs with its own LAN preset for the cluster size. Its identity
//! carries a generation that it renews when declared down, which is how
//! foca rejoins on its own. foca reports members going up and down; it has
//! no suspicion notification, so suspicions are read off its membership
//! table after each step (for clusters up to 256, where that scan is cheap).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use foca::{Config, Foca, Identity, Notification, PostcardCodec, Runtime, State, Timer};
use ha_core::rng::FastRng;
use ha_core::Instant;
use ha_membership::sim::{addr_of, index_of, SimEvent, SimNode, ViewChange};
use serde::{Deserialize, Serialize};

/// A node's identity: its address and a generation foca bumps to rejoin.
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

#[derive(Default)]
struct Rt {
    sends: VecDeque<(SocketAddr, Vec<u8>)>,
    timers: Vec<(Duration, Timer<Id>)>,
    changes: Vec<(SocketAddr, ViewChange)>,
}

impl Runtime<Id> for Rt {
    fn notify(&mut self, n: Notification<'_, Id>) {
        match n {
            Notification::MemberUp(id) => self.changes.push((id.addr, ViewChange::Alive)),
            Notification::MemberDown(id) => self.changes.push((id.addr, ViewChange::Dead)),
            _ => {}
        }
    }

    fn send_to(&mut self, to: Id, data: &[u8]) {
        self.sends.push_back((to.addr, data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<Id>, after: Duration) {
        self.timers.push((after, event));
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
}

impl FocaNode {
    /// Node `i` of an `n`-node cluster, announcing itself to `seeds`.
    pub fn new(i: usize, n: usize, now: Instant, seed: u64, seeds: &[SocketAddr]) -> Self {
        let id = Id { addr: addr_of(i), generation: 0 };
        let config = Config::new_lan(NonZeroU32::new(n as u32).expect("clusters have nodes"));
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
        };
        for &s in seeds {
            // An announce that fails to encode leaves the node alone; the sim shows it.
            let _ = node.foca.announce(Id { addr: s, generation: 0 }, &mut node.rt);
        }
        node.collect(now);
        node
    }

    fn collect(&mut self, now: Instant) {
        for (after, timer) in self.rt.timers.drain(..) {
            self.timer_seq += 1;
            self.timers.push(Reverse((now + after, self.timer_seq)));
            self.pending.insert(self.timer_seq, timer);
        }
        for (addr, change) in self.rt.changes.drain(..) {
            if let Some(subject) = index_of(addr) {
                if change == ViewChange::Alive {
                    self.suspects.insert(addr, false);
                }
                self.events.push_back(SimEvent { subject, change, incarnation: None });
            }
        }
        if self.scan {
            for m in self.foca.iter_membership_state() {
                let addr = m.id().addr;
                let suspect = m.state() == State::Suspect;
                let was = self.suspects.insert(addr, suspect).unwrap_or(false);
                if suspect && !was {
                    if let Some(subject) = index_of(addr) {
                        self.events.push_back(SimEvent { subject, change: ViewChange::Suspect, incarnation: None });
                    }
                } else if !suspect && was && m.state() == State::Alive {
                    if let Some(subject) = index_of(addr) {
                        self.events.push_back(SimEvent { subject, change: ViewChange::Alive, incarnation: None });
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
    }

    fn next_wake(&self) -> Instant {
        self.timers.peek().map(|Reverse((at, _))| *at).unwrap_or(self.far)
    }

    fn leave(&mut self, now: Instant) {
        let _ = self.foca.leave_cluster(&mut self.rt);
        self.collect(now);
    }

    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.rt.sends.pop_front()
    }

    fn poll_event(&mut self) -> Option<SimEvent> {
        self.events.pop_front()
    }
}
