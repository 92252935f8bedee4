//! The sans-IO SWIM + Lifeguard state machine.
//!
//! [`Swim`] never reads a clock and never touches a socket: the caller hands
//! it `now` and the bytes that arrived ([`Swim::handle`]), wakes it at
//! [`Swim::poll_timeout`] ([`Swim::tick`]), and drains what it wants sent
//! ([`Swim::poll_transmit`], [`Swim::poll_sync`]) and what changed
//! ([`Swim::poll_event`]). The tokio driver and the deterministic simulator
//! both run this same code.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ha_core::rng::FastRng;
use ha_core::{Events, Instant};

use crate::broadcast::{Broadcasts, Key};
use crate::config::{Config, MAX_PACKET};
use crate::error::{ConfigError, DecodeError, SizeError};
use crate::keyring::Keyring;
use crate::member::{Member, MemberState, MembershipEvent, Metadata};
use crate::probe::ProbeCycle;
use crate::seen::SeenSet;
use crate::suspicion::{Suspicion, Suspicions};
use crate::table::{Entry, MemberTable};
use crate::wire::{self, Codec, Message, State, StateEntry};

/// A datagram the core wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// The sealed packet, at most [`MAX_PACKET`] bytes.
    pub payload: Vec<u8>,
}

/// What the core has counted since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Direct probes sent.
    pub probes: u64,
    /// Indirect probe requests sent.
    pub indirect_probes: u64,
    /// Members this node began to suspect.
    pub suspicions: u64,
    /// Suspicions or death notices about this node that it refuted.
    pub refutations: u64,
    /// Members this node confirmed dead.
    pub deaths: u64,
    /// Datagrams received (including dropped ones).
    pub packets_in: u64,
    /// Datagrams sent.
    pub packets_out: u64,
    /// Bytes received in datagrams and states.
    pub bytes_in: u64,
    /// Bytes sent in datagrams and states.
    pub bytes_out: u64,
    /// Datagrams and states dropped because they failed to decode.
    pub dropped: u64,
    /// Push-pull state exchanges merged.
    pub syncs: u64,
    /// Updates dropped because their incarnation jumped more than
    /// `max_incarnation_jump` above the one known.
    pub dropped_incarnation: u64,
    /// Datagrams dropped because no key authenticated them (a subset of `dropped`).
    pub dropped_auth: u64,
    /// Encrypted datagrams and states dropped as replays (a subset of `dropped`).
    pub dropped_replay: u64,
    /// Datagrams longer than a packet, and messages too large to forward, dropped.
    pub dropped_oversized: u64,
    /// Indirect probe requests refused: unknown requester or target, or too
    /// many outstanding for that requester or in total.
    pub dropped_ping_req: u64,
    /// State syncs toward unknown probers not opened (rate limit or queue full),
    /// and, in the driver, outgoing syncs over the concurrency cap.
    pub dropped_syncs: u64,
    /// Members learnt from gossip that were not admitted: their confirming
    /// probe failed, too many waited for one, or the member table was full.
    pub dropped_members: u64,
    /// Messages naming a member with an empty or over-long name.
    pub dropped_names: u64,
    /// Another node claims this node's name from another address.
    pub name_conflicts: u64,
    /// TCP connections refused or closed because too many were open.
    pub dropped_connections: u64,
    /// Stream checks refused (nothing listens at the member's address): of
    /// a probe's target, suspected at once without a last call, or of a
    /// suspect, whose timer shrank.
    pub refused_probes: u64,
    /// Stream checks dropped: too many waited in the core's queue, or ran
    /// in the driver at once.
    pub dropped_checks: u64,
    /// TCP accept errors (the listener backs off after each).
    pub accept_errors: u64,
    /// Push-pull states refused for exceeding `max_state_bytes`.
    pub dropped_state_size: u64,
}

/// An indirect probe this node runs for another.
struct Relay {
    seq: u32,
    origin: SocketAddr,
    origin_seq: u32,
    nack_at: Option<Instant>,
    expires: Instant,
}

/// A member heard of by gossip only, admitted once it answers a probe.
struct Pending {
    name: Arc<str>,
    addr: SocketAddr,
    inc: u64,
    meta: Option<Metadata>,
    seq: u32,
    expires: Instant,
}

/// A probe of another node that seems to use this node's name.
struct ConflictProbe {
    seq: u32,
    addr: SocketAddr,
    deadline: Instant,
}

/// The SWIM + Lifeguard protocol state of one node.
pub struct Swim {
    cfg: Config,
    codec: Codec,
    events_out: Events,
    me: Arc<str>,
    addr: SocketAddr,
    incarnation: u64,
    meta: Arc<Metadata>,
    left: bool,
    table: MemberTable,
    live: usize,
    rng: FastRng,
    /// Also the sequence counter every ping of this node draws from.
    probing: ProbeCycle,
    relays: Vec<Relay>,
    /// The timers of the members in `MemberState::Suspect`, and theirs only.
    suspicions: Suspicions,
    broadcasts: Broadcasts,
    awareness: u32,
    next_gossip: Instant,
    next_reconnect: Instant,
    seeds: Vec<SocketAddr>,
    /// User broadcasts delivered (or sent), by origin and sequence number.
    user_seen: SeenSet<(Arc<str>, u64)>,
    user_seq: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<MembershipEvent>,
    syncs: VecDeque<SocketAddr>,
    user_in: VecDeque<Vec<u8>>,
    counters: Counters,
    scratch: Vec<Message>,
    pending: Vec<Pending>,
    sync_tokens: f64,
    sync_refill: Instant,
    conflict_probe: Option<ConflictProbe>,
    conflict: Option<SocketAddr>,
}

impl std::fmt::Debug for Swim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swim")
            .field("me", &self.me)
            .field("incarnation", &self.incarnation)
            .field("members", &self.table.len())
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

/// User broadcasts remembered, to deliver and forward each once.
const USER_SEEN_MAX: usize = 4096;
/// Members heard of by gossip that may wait for their confirming probe at once.
const MAX_PENDING: usize = 64;
/// Indirect probes this node runs at once, in total and for one requester.
const MAX_RELAYS: usize = 64;
const MAX_RELAYS_PER_ORIGIN: usize = 4;
/// State syncs that may wait to be opened.
const MAX_QUEUED_SYNCS: usize = 16;

/// A request to the driver: try a stream (TCP) connection to a probe's
/// target, and report [`Swim::stream_refused`] if the connection is refused.
///
/// Asked when a probe's direct ping went unanswered, and when this node
/// first hears that another suspects a member. A refused connection is
/// evidence no lost datagram gives: nothing listens at the member's address
/// any more (the process is gone). So a probe's target is suspected at once
/// instead of after the last call, and the suspicion timer shrinks to one
/// probe interval: long enough for an alive member to answer the check
/// pings, with no process left to do so. Each node checks for itself, so a
/// verdict gossip fails to bring still comes within that interval. A
/// connection that opens, or times out, says nothing (a stopped process's
/// kernel still accepts) and is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCheck {
    /// The target's address.
    pub to: SocketAddr,
    /// Tells this check from others to the same address.
    pub seq: u32,
}
/// The longest member name, in bytes.
pub const MAX_NAME: usize = 255;

impl Swim {
    /// A node named `name` reachable at `addr`, alone until it joins.
    /// `seed` seeds the probe order and jitter (the simulator fixes it).
    pub fn new(
        config: Config,
        name: impl Into<Arc<str>>,
        addr: SocketAddr,
        now: Instant,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let me: Arc<str> = name.into();
        if me.is_empty() || me.len() > MAX_NAME {
            return Err(ConfigError::new("name", "must be 1 to 255 bytes"));
        }
        let mut rng = FastRng::new(seed);
        let stagger = |rng: &mut FastRng, d: Duration| d.mul_f64(rng.unit_f64());
        let next_probe = now + stagger(&mut rng, config.probe_interval);
        let next_gossip = now + stagger(&mut rng, config.gossip_interval);
        let next_reconnect = now + stagger(&mut rng, config.reconnect_interval);
        let meta = Arc::new(Metadata::default());
        let mut swim = Swim {
            codec: Codec::new(&config.label, None),
            cfg: config,
            events_out: Events::new(),
            me: me.clone(),
            addr,
            incarnation: 0,
            meta: meta.clone(),
            left: false,
            table: MemberTable::new(Entry::new(
                Member { name: me.clone(), addr, incarnation: 0, state: MemberState::Alive, meta: meta.clone() },
                0,
                now,
            )),
            live: 1,
            rng,
            probing: ProbeCycle::new(next_probe),
            relays: Vec::new(),
            suspicions: Suspicions::default(),
            broadcasts: Broadcasts::default(),
            awareness: 0,
            next_gossip,
            next_reconnect,
            seeds: Vec::new(),
            user_seen: SeenSet::new(USER_SEEN_MAX),
            user_seq: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            syncs: VecDeque::new(),
            user_in: VecDeque::new(),
            counters: Counters::default(),
            scratch: Vec::new(),
            pending: Vec::new(),
            sync_tokens: 0.0,
            sync_refill: now,
            conflict_probe: None,
            conflict: None,
        };
        swim.sync_tokens = 2.0 * f64::from(swim.cfg.unknown_syncs_per_sec);
        Ok(swim)
    }

    /// Starts at `incarnation` (a restarted node may pass what it remembers;
    /// it will refute any higher one it hears about itself anyway).
    pub fn with_incarnation(mut self, incarnation: u64) -> Self {
        self.incarnation = incarnation;
        self.table.me_mut().member.incarnation = incarnation;
        self.table.me_mut().meta_inc = incarnation;
        self
    }

    /// Publishes `meta` from the start.
    pub fn with_metadata(mut self, meta: Metadata) -> Self {
        self.meta = Arc::new(meta);
        self.table.me_mut().member.meta = self.meta.clone();
        self
    }

    /// Encrypts every packet with the keyring's primary key and accepts any of its keys.
    pub fn with_keyring(mut self, keyring: Keyring) -> Self {
        self.codec.set_keyring(Some(keyring));
        self
    }

    /// The keyring, to rotate keys on a running node (`None` when unencrypted).
    pub fn keyring_mut(&mut self) -> Option<&mut Keyring> {
        self.codec.keyring_mut()
    }

    /// Sends every state change to `events` as well (it always goes to `tracing`).
    pub fn with_events(mut self, events: Events) -> Self {
        self.events_out = events;
        self
    }

    /// This node's name.
    pub fn name(&self) -> &Arc<str> {
        &self.me
    }

    /// This node's current incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Lifeguard's local health score: 0 is healthy; timeouts are scaled by score + 1.
    pub fn health_score(&self) -> u32 {
        self.awareness
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Every member known, this node included, dead and departed ones too.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.table.iter().map(|e| &e.member)
    }

    /// A member by name.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.table.get(name).map(|e| &e.member)
    }

    /// How many members are alive or suspect, this node included.
    pub fn live_count(&self) -> usize {
        self.live
    }

    /// How many updates wait to be piggy-backed.
    pub fn queued_updates(&self) -> usize {
        self.broadcasts.len()
    }

    /// True once [`Swim::leave`] was called.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// Joins through `seeds`: asks for a push-pull state sync with each
    /// ([`Swim::poll_sync`]), and retries every `reconnect_interval` while
    /// this node knows no other live member.
    pub fn join(&mut self, seeds: &[SocketAddr]) {
        self.seeds = seeds.iter().copied().filter(|s| *s != self.addr).collect();
        self.syncs.extend(self.seeds.iter().copied());
        self.broadcast_self();
    }

    /// Leaves gracefully: tells the cluster at once and stops probing.
    pub fn leave(&mut self, now: Instant) {
        if self.left {
            return;
        }
        self.left = true;
        let msg = Message::Dead { name: self.me.clone(), incarnation: self.incarnation, from: self.me.clone() };
        self.broadcasts.push(Key::Member(self.me.clone()), wire::frame(&msg));
        self.table.me_mut().member.state = MemberState::Left;
        self.live -= 1;
        // Tell several members directly rather than wait for the next gossip round.
        for to in self.random_live(self.cfg.gossip_nodes * 2, None) {
            self.send(to, &[]);
        }
        self.next_gossip = now;
    }

    /// Publishes new metadata under a new incarnation; metadata whose
    /// encoding exceeds `max_metadata` is refused (peers would drop it).
    pub fn set_metadata(&mut self, now: Instant, meta: Metadata) -> Result<(), SizeError> {
        let size = meta.encoded_len();
        if size > self.cfg.max_metadata {
            return Err(SizeError { size, max: self.cfg.max_metadata });
        }
        self.meta = Arc::new(meta);
        self.incarnation = self.incarnation.saturating_add(1);
        let me = self.table.me_mut();
        me.member.meta = self.meta.clone();
        me.member.incarnation = self.incarnation;
        me.meta_inc = self.incarnation;
        me.since = now;
        self.broadcast_self();
        Ok(())
    }

    /// The largest payload [`Swim::broadcast_user`] accepts: one that fits a
    /// datagram with its framing.
    pub fn max_broadcast_len(&self) -> usize {
        let empty = Message::User { origin: self.me.clone(), seq: u64::MAX, payload: Vec::new() };
        // Both length prefixes (payload and frame) grow to 2 bytes past 127.
        self.budget().saturating_sub(wire::frame(&empty).len() + 2)
    }

    /// The other node found answering to this node's name, if any.
    pub fn name_conflict(&self) -> Option<SocketAddr> {
        self.conflict
    }

    /// True while a probe checks whether another node uses this node's name.
    pub fn conflict_pending(&self) -> bool {
        self.conflict_probe.is_some()
    }

    /// Sends `payload` to every member (best effort, by gossip). A payload
    /// above [`Swim::max_broadcast_len`] is refused: it could never be sent.
    pub fn broadcast_user(&mut self, payload: Vec<u8>) -> Result<(), SizeError> {
        let max = self.max_broadcast_len();
        if payload.len() > max {
            return Err(SizeError { size: payload.len(), max });
        }
        self.user_seq = self.user_seq.saturating_add(1);
        let (origin, seq) = (self.me.clone(), self.user_seq);
        self.user_seen.insert((origin.clone(), seq));
        let msg = Message::User { origin: origin.clone(), seq, payload };
        self.broadcasts.push(Key::User(origin, seq), wire::frame(&msg));
        Ok(())
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next membership change.
    pub fn poll_event(&mut self) -> Option<MembershipEvent> {
        self.events.pop_front()
    }

    /// The next stream check to try (see [`StreamCheck`]); a driver without
    /// a stream transport may ignore them.
    pub fn poll_stream_check(&mut self) -> Option<StreamCheck> {
        self.probing.poll_stream_check()
    }

    /// The stream connection asked for by `check` was refused. Ignored
    /// unless its probe is still waiting for an answer, or its member is
    /// still suspected here.
    pub fn stream_refused(&mut self, now: Instant, check: StreamCheck) {
        // Without Lifeguard no check pings tell a suspect of its suspicion,
        // so its timer keeps its length (a member behind a firewall that
        // rejects only streams could not refute in time).
        let wait = self.cfg.lifeguard.then(|| self.scale(self.cfg.probe_interval));
        let Some(p) = self.probing.answered(check.seq) else {
            // A suspect's check: the timer shrinks, nothing is gossiped.
            let suspect = (1..self.table.len())
                .map(|i| &self.table.at(i).member)
                .find(|m| m.addr == check.to && m.state == MemberState::Suspect)
                .map(|m| m.name.clone());
            if suspect.is_some_and(|name| wait.is_none_or(|wait| self.suspicions.refused(&name, now, wait))) {
                self.counters.refused_probes += 1;
            }
            return;
        };
        self.counters.refused_probes += 1;
        let Some(m) = self.table.get(&p.target).map(|e| &e.member).filter(|m| m.state.is_live()) else { return };
        let (name, inc, alive) = (m.name.clone(), m.incarnation, m.state == MemberState::Alive);
        tracing::debug!(target: "ha::membership", member = %name, "probe target refused a stream connection");
        if alive {
            self.counters.suspicions += 1;
        }
        self.apply_suspect(now, name.clone(), inc, self.me.clone());
        if let Some(wait) = wait {
            self.suspicions.refused(&name, now, wait);
        }
    }

    /// The next member to run a push-pull state sync with: send it
    /// [`Swim::local_state`] and merge its answer with [`Swim::handle_state`].
    pub fn poll_sync(&mut self) -> Option<SocketAddr> {
        self.syncs.pop_front()
    }

    /// The next user broadcast received.
    pub fn poll_user(&mut self) -> Option<Vec<u8>> {
        self.user_in.pop_front()
    }

    /// When [`Swim::tick`] must next run.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.next_gossip.min(self.next_reconnect);
        if let Some(p) = self.probing.next_wake(!self.left) {
            t = t.min(p);
        }
        if let Some(c) = &self.conflict_probe {
            t = t.min(c.deadline);
        }
        for r in &self.relays {
            t = t.min(r.nack_at.unwrap_or(r.expires));
        }
        if let Some(s) = self.suspicions.next_wake(self.cfg.lifeguard && !self.left) {
            t = t.min(s);
        }
        t
    }

    fn scale(&self, d: Duration) -> Duration {
        if self.cfg.lifeguard {
            d * (self.awareness + 1)
        } else {
            d
        }
    }

    fn adjust_awareness(&mut self, delta: i32) {
        if self.cfg.lifeguard {
            let max = self.cfg.awareness_max as i32 - 1;
            self.awareness = (self.awareness as i32 + delta).clamp(0, max) as u32;
        }
    }

    fn retransmit_limit(&self) -> u32 {
        let n = (self.live + 1) as f64;
        self.cfg.retransmit_mult * (n.log10().ceil() as u32).max(1)
    }

    /// Runs every timer due at `now`.
    pub fn tick(&mut self, now: Instant) {
        self.expire_pending(now);
        self.expire_suspicions(now);
        if !self.left {
            self.check_suspects(now);
        }
        self.run_relays(now);
        if !self.left {
            self.run_probe(now);
            if self.probing.round_due(now) {
                self.start_probe(now);
                let period = self.scale(self.cfg.probe_interval);
                self.probing.schedule(now + period);
                // Push-pull as a Poisson process of mean interval
                // `push_pull_interval * max(1, n / 16)`: memoryless, so no
                // synchronised rounds, and the anti-entropy traffic per member
                // stays flat as the cluster (and its state) grows.
                let mean = self.cfg.push_pull_interval.mul_f64((self.live as f64 / 16.0).max(1.0));
                if self.rng.unit_f64() < period.as_secs_f64() / mean.as_secs_f64() {
                    if let Some(to) = self.random_live(1, None).into_iter().next() {
                        self.syncs.push_back(to);
                    }
                }
            }
        }
        if now >= self.next_gossip {
            self.next_gossip = now + self.cfg.gossip_interval;
            if !self.broadcasts.is_empty() {
                for to in self.random_live(self.cfg.gossip_nodes, None) {
                    self.send(to, &[]);
                }
            }
        }
        if now >= self.next_reconnect {
            self.next_reconnect = now + self.cfg.reconnect_interval.mul_f64(self.jitter());
            if !self.left {
                self.reconnect(now);
            }
        }
    }

    fn jitter(&mut self) -> f64 {
        0.5 + self.rng.unit_f64()
    }

    /// Pings each suspect, with the suspicion, six times spread over our
    /// timer: if it is alive its ack brings the refutation that gossip may
    /// have failed to bring us. These pings are not probes: a lost one
    /// confirms nothing.
    fn check_suspects(&mut self, now: Instant) {
        if !self.cfg.lifeguard {
            return;
        }
        for name in self.suspicions.due_checks(now) {
            let Some(m) = self.table.get(&name).map(|e| &e.member) else { continue };
            let (addr, inc) = (m.addr, m.incarnation);
            let seq = self.probing.next_seq();
            self.tell_suspect(name, addr, inc, seq);
        }
    }

    /// Buddy system: tells a member it is (about to be) suspected, with a
    /// ping whose ack carries its refutation back.
    fn tell_suspect(&mut self, name: Arc<str>, addr: SocketAddr, inc: u64, seq: u32) {
        let buddy = Message::Suspect { name: name.clone(), incarnation: inc, from: self.me.clone() };
        let ping = Message::Ping { seq, target: name, from: self.me.clone() };
        // News first, so that the ack already carries the refutation.
        self.send(addr, &[buddy, ping]);
    }

    fn expire_suspicions(&mut self, now: Instant) {
        for name in self.suspicions.expire(now) {
            let inc = self.table.get(&name).map_or(0, |e| e.member.incarnation);
            self.counters.deaths += 1;
            self.apply_dead(now, name, inc, self.me.clone());
        }
    }

    fn run_relays(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.relays.len() {
            if let Some(at) = self.relays[i].nack_at {
                if now >= at {
                    self.relays[i].nack_at = None;
                    let (origin, seq) = (self.relays[i].origin, self.relays[i].origin_seq);
                    self.send(origin, &[Message::Nack { seq }]);
                }
            }
            if now >= self.relays[i].expires {
                self.relays.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    fn run_probe(&mut self, now: Instant) {
        if let Some((target, addr, seq)) = self.probing.indirect_due(now) {
            let helpers = self.random_live(self.cfg.indirect_checks, Some(&target));
            let nack = self.cfg.lifeguard;
            for &h in &helpers {
                self.counters.indirect_probes += 1;
                self.send(h, &[Message::PingReq { seq, target: target.clone(), addr, nack }]);
            }
            // And once more directly, in case only the first ping or its ack was lost.
            self.send(addr, &[Message::Ping { seq, target: target.clone(), from: self.me.clone() }]);
            let dropped = self.probing.indirect_sent(if nack { helpers.len() as u32 } else { 0 });
            self.counters.dropped_checks += u64::from(dropped);
        }
        if let Some(p) = self.probing.expire(now) {
            if !p.on_last_call() {
                self.adjust_awareness(p.health_penalty());
            }
            let alive = self.table.get(&p.target).map(|e| &e.member).filter(|m| m.state == MemberState::Alive);
            if let (Some(m), true, false, false) = (alive, self.cfg.lifeguard, p.on_last_call(), self.left) {
                // Last call. Under random loss nearly every failed probe of a
                // live member is the network's doing, and a suspicion gossiped
                // at once reaches every member before the refutation catches
                // up: one lost exchange, a cluster-wide suspicion (45 per run
                // at 5% loss in 64 nodes, more than plain SWIM). So the target
                // hears first, and gets a probe timeout to answer before anyone
                // suspects it; a dead member is detected that much later,
                // against a suspicion timer of seconds.
                let (name, addr, inc) = (m.name.clone(), m.addr, m.incarnation);
                self.tell_suspect(name, addr, inc, p.seq);
                let deadline = now + self.scale(self.cfg.probe_timeout);
                self.probing.last_call(p, deadline);
                return;
            }
            if let Some(e) = self.table.get(&p.target).map(|e| &e.member) {
                // A failed probe of a member already suspected is an independent confirmation.
                if e.state.is_live() {
                    let inc = e.incarnation;
                    if e.state == MemberState::Alive {
                        self.counters.suspicions += 1;
                    }
                    self.apply_suspect(now, p.target, inc, self.me.clone());
                }
            }
        }
    }

    fn start_probe(&mut self, now: Instant) {
        if self.probing.in_flight() {
            // The previous probe outlived its period (timeouts grew): judge it now.
            self.probing.cut_short(now);
            self.run_probe(now);
            if self.probing.in_flight() {
                // It went on its last call: this round is its.
                return;
            }
        }
        let n = self.table.len();
        let mut target = None;
        if let Some(name) = self.probing.take_urgent() {
            if let Some(e) = self.table.get(&name).map(|e| &e.member) {
                if e.state.is_live() {
                    target = Some((e.name.clone(), e.addr, e.state, e.incarnation));
                }
            }
        }
        for _ in 0..n {
            if target.is_some() {
                break;
            }
            let retention = self.cfg.dead_retention;
            // At the end of a round, members dead for longer than `dead_retention` are forgotten.
            let e = self.table.next_in_round(&mut self.rng, |e| e.member.state.is_live() || now - e.since < retention);
            if e.member.name != self.me && e.member.state.is_live() {
                target = Some((e.member.name.clone(), e.member.addr, e.member.state, e.member.incarnation));
                break;
            }
        }
        let Some((name, addr, state, inc)) = target else { return };
        let (indirect_at, deadline) =
            (now + self.scale(self.cfg.probe_timeout), now + self.scale(self.cfg.probe_interval));
        let seq = self.probing.start(name.clone(), addr, indirect_at, deadline);
        self.counters.probes += 1;
        let ping = Message::Ping { seq, target: name.clone(), from: self.me.clone() };
        if state == MemberState::Suspect && self.cfg.lifeguard {
            // Buddy system: the suspect learns of its suspicion from the probe itself.
            let buddy = Message::Suspect { name: name.clone(), incarnation: inc, from: self.me.clone() };
            // News first, so that the ack already carries the refutation.
            self.send(addr, &[buddy, ping]);
        } else {
            self.send(addr, &[ping]);
        }
    }

    /// Probes one dead member, carrying the news of its death so that, if it
    /// is in fact alive (a healed partition), it refutes; and while alone,
    /// asks a seed for a state sync.
    fn reconnect(&mut self, _now: Instant) {
        if self.live <= 1 && !self.seeds.is_empty() {
            let s = self.seeds[self.rng.below(self.seeds.len() as u64) as usize];
            self.syncs.push_back(s);
        }
        let dead: Vec<usize> =
            (0..self.table.len()).filter(|&i| self.table.at(i).member.state == MemberState::Dead).collect();
        if dead.is_empty() {
            return;
        }
        let e = &self.table.at(dead[self.rng.below(dead.len() as u64) as usize]).member;
        let (name, addr, inc) = (e.name.clone(), e.addr, e.incarnation);
        let seq = self.probing.next_seq();
        let ping = Message::Ping { seq, target: name.clone(), from: self.me.clone() };
        let news = Message::Dead { name, incarnation: inc, from: self.me.clone() };
        let alive = self.self_alive(true);
        self.send(addr, &[news, alive, ping]);
    }

    /// Up to `k` distinct random live members other than this node and `except`.
    fn random_live(&mut self, k: usize, except: Option<&Arc<str>>) -> Vec<SocketAddr> {
        let mut out = Vec::with_capacity(k);
        let n = self.table.len();
        if n <= 1 || k == 0 {
            return out;
        }
        let mut picked: Vec<usize> = Vec::with_capacity(k);
        // Rejection sampling, bounded; a linear pass finishes small clusters.
        for _ in 0..(3 * k + 8) {
            if picked.len() == k {
                break;
            }
            let i = self.rng.below(n as u64) as usize;
            if !picked.contains(&i) && self.eligible(i, except) {
                picked.push(i);
            }
        }
        if picked.len() < k {
            for i in 0..n {
                if picked.len() == k {
                    break;
                }
                if !picked.contains(&i) && self.eligible(i, except) {
                    picked.push(i);
                }
            }
        }
        out.extend(picked.into_iter().map(|i| self.table.at(i).member.addr));
        out
    }

    fn eligible(&self, i: usize, except: Option<&Arc<str>>) -> bool {
        let m = &self.table.at(i).member;
        m.name != self.me && m.state.is_live() && except.is_none_or(|x| *x != m.name)
    }

    fn self_alive(&self, with_meta: bool) -> Message {
        Message::Alive {
            name: self.me.clone(),
            addr: self.addr,
            incarnation: self.incarnation,
            meta: with_meta.then(|| (*self.meta).clone()),
        }
    }

    fn budget(&self) -> usize {
        MAX_PACKET - self.codec.overhead()
    }

    /// Queues an update about a member, without its metadata if that would not fit a packet.
    fn queue_update(&mut self, name: Arc<str>, msg: Message) {
        let mut frame = wire::frame(&msg);
        if frame.len() > self.budget() / 2 {
            if let Message::Alive { name, addr, incarnation, .. } = msg {
                frame = wire::frame(&Message::Alive { name, addr, incarnation, meta: None });
            }
        }
        self.broadcasts.push(Key::Member(name), frame);
    }

    fn broadcast_self(&mut self) {
        let msg = self.self_alive(true);
        self.queue_update(self.me.clone(), msg);
    }

    /// Seals `msgs` alone, without piggy-backed updates, into one datagram to `to`.
    fn send_bare(&mut self, to: SocketAddr, msgs: &[Message]) {
        let mut body = Vec::with_capacity(64);
        for m in msgs {
            wire::push_frame(m, &mut body);
        }
        let payload = self.codec.seal(false, &body);
        self.counters.packets_out += 1;
        self.counters.bytes_out += payload.len() as u64;
        self.transmits.push_back(Transmit { to, payload });
    }

    /// Seals `first` plus as many queued updates as fit into one datagram to `to`.
    fn send(&mut self, to: SocketAddr, first: &[Message]) {
        let budget = self.budget();
        let mut body = Vec::with_capacity(256);
        for m in first {
            let before = body.len();
            wire::push_frame(m, &mut body);
            if body.len() > budget {
                body.truncate(before);
            }
        }
        let limit = self.retransmit_limit();
        self.broadcasts.fill(&mut body, budget, limit);
        if body.is_empty() {
            return;
        }
        let payload = self.codec.seal(false, &body);
        self.counters.packets_out += 1;
        self.counters.bytes_out += payload.len() as u64;
        self.transmits.push_back(Transmit { to, payload });
    }

    /// Handles one datagram from `from`. Packets that fail to decode are
    /// dropped and counted.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, packet: &[u8]) {
        self.counters.packets_in += 1;
        self.counters.bytes_in += packet.len() as u64;
        let mut msgs = std::mem::take(&mut self.scratch);
        msgs.clear();
        let ok = if packet.len() > MAX_PACKET {
            // No member sends more than this: a forged or foreign packet.
            self.counters.dropped_oversized += 1;
            false
        } else {
            match self.codec.open(false, packet) {
                Ok(body) => wire::decode_frames(&body, &mut msgs).is_ok(),
                Err(e) => {
                    self.count_open_error(e);
                    false
                }
            }
        };
        if !ok {
            self.counters.dropped += 1;
            tracing::debug!(target: "ha::membership", %from, len = packet.len(), "dropped undecodable packet");
        } else {
            // News first, so that any answer or relayed ack this packet
            // causes already carries what it taught us (a refutation, most
            // importantly). The sort is stable.
            msgs.sort_by_key(|m| {
                matches!(m, Message::Ping { .. } | Message::Ack { .. } | Message::PingReq { .. } | Message::Nack { .. })
            });
            for m in msgs.drain(..) {
                self.handle_message(now, from, m);
            }
        }
        self.scratch = msgs;
    }

    fn handle_message(&mut self, now: Instant, from: SocketAddr, msg: Message) {
        match msg {
            Message::Ping { seq, target, from: source } => {
                if target != self.me {
                    return;
                }
                if source == self.me && from != self.addr {
                    // Another node probes under our name: a duplicate.
                    self.report_conflict(from);
                }
                // A prober we have never heard of: our views differ by more
                // than gossip will fix soon, so sync state with it (rate-limited:
                // on an open network anyone can send this ping).
                let known = self.table.contains(&source);
                if !known && !self.syncs.contains(&from) {
                    if self.syncs.len() < MAX_QUEUED_SYNCS && self.take_sync_token(now) {
                        self.syncs.push_back(from);
                    } else {
                        self.counters.dropped_syncs += 1;
                        tracing::debug!(target: "ha::membership", %from, "state sync toward an unknown prober not opened (rate limit)");
                    }
                }
                let mut reply = vec![Message::Ack { seq }];
                // Tell a sender we hold suspect or dead what we think, so it refutes.
                if let Some(m) = self.table.get(&source).map(|e| &e.member) {
                    match m.state {
                        MemberState::Suspect => reply.push(Message::Suspect {
                            name: source,
                            incarnation: m.incarnation,
                            from: self.me.clone(),
                        }),
                        MemberState::Dead => reply.push(Message::Dead {
                            name: source,
                            incarnation: m.incarnation,
                            from: self.me.clone(),
                        }),
                        _ => {}
                    }
                }
                if known {
                    self.send(from, &reply);
                } else {
                    // No piggy-backed news for a stranger: the answer stays as
                    // small as the ping, so a forged source gains no amplification.
                    self.send_bare(from, &reply);
                }
            }
            Message::Ack { seq } => {
                if let Some(i) = self.pending.iter().position(|p| p.seq == seq && p.addr == from) {
                    let p = self.pending.swap_remove(i);
                    self.merge_alive(now, p.name, p.addr, p.inc, p.meta, true);
                } else if self.conflict_probe.as_ref().is_some_and(|c| c.seq == seq && c.addr == from) {
                    self.conflict_probe = None;
                    self.report_conflict(from);
                } else if let Some(p) = self.probing.answered(seq) {
                    // On its last call the probe has failed already and was
                    // charged as such: the late ack only spares the target.
                    if !p.on_last_call() {
                        self.adjust_awareness(-1);
                    }
                } else if let Some(i) = self.relays.iter().position(|r| r.seq == seq) {
                    let r = self.relays.swap_remove(i);
                    self.send(r.origin, &[Message::Ack { seq: r.origin_seq }]);
                }
            }
            Message::PingReq { seq, target, addr, nack } => {
                if let Err(why) = self.relay_allowed(from, &target, addr) {
                    self.counters.dropped_ping_req += 1;
                    tracing::debug!(target: "ha::membership", %from, %addr, why, "indirect probe request dropped");
                    return;
                }
                let own = self.probing.next_seq();
                let timeout = self.cfg.probe_timeout;
                self.relays.push(Relay {
                    seq: own,
                    origin: from,
                    origin_seq: seq,
                    nack_at: nack.then(|| now + timeout.mul_f64(0.8)),
                    expires: now + self.cfg.probe_interval,
                });
                self.send(addr, &[Message::Ping { seq: own, target, from: self.me.clone() }]);
            }
            Message::Nack { seq } => {
                self.probing.nack(seq);
            }
            Message::Alive { name, addr, incarnation, meta } => {
                if self.admissible(&name, incarnation) {
                    self.apply_alive(now, name, addr, incarnation, meta);
                }
            }
            Message::Suspect { name, incarnation, from } => {
                if self.admissible(&name, incarnation) {
                    self.apply_suspect(now, name, incarnation, from);
                }
            }
            Message::Dead { name, incarnation, from } => {
                if self.admissible(&name, incarnation) {
                    self.apply_dead(now, name, incarnation, from);
                }
            }
            Message::User { origin, seq, payload } => {
                if self.user_seen.insert((origin.clone(), seq)) {
                    let frame = wire::frame(&Message::User { origin: origin.clone(), seq, payload: payload.clone() });
                    self.broadcasts.push(Key::User(origin, seq), frame);
                    self.user_in.push_back(payload);
                }
            }
        }
    }

    fn refute(&mut self, now: Instant, heard: u64) {
        if self.left {
            return;
        }
        // `heard` is at most `max_incarnation_jump` above our own (see
        // `admissible`), so this never saturates in practice; it never wraps.
        self.incarnation = self.incarnation.max(heard).saturating_add(1);
        let me = self.table.me_mut();
        me.member.incarnation = self.incarnation;
        me.meta_inc = self.incarnation;
        me.since = now;
        self.counters.refutations += 1;
        self.adjust_awareness(1);
        self.broadcast_self();
    }

    fn emit(&mut self, ev: MembershipEvent) {
        if let Some(e) = ev.to_event() {
            self.events_out.emit(e);
        }
        self.events.push_back(ev);
    }

    /// Gossip about a member: one we do not know yet is admitted only once
    /// it answers a probe under its name at its address, so a single forged
    /// message cannot add members.
    fn apply_alive(&mut self, now: Instant, name: Arc<str>, addr: SocketAddr, inc: u64, meta: Option<Metadata>) {
        if name == self.me || self.table.contains(&name) {
            self.merge_alive(now, name, addr, inc, meta, true);
            return;
        }
        if let Some(p) = self.pending.iter_mut().find(|p| p.name == name) {
            if inc > p.inc && addr == p.addr {
                p.inc = inc;
                p.meta = meta;
            }
            return;
        }
        if self.left || self.pending.len() >= MAX_PENDING {
            self.counters.dropped_members += 1;
            tracing::debug!(target: "ha::membership", member = %name, "too many members wait for a confirming probe");
            return;
        }
        let seq = self.probing.next_seq();
        let expires = now + self.cfg.probe_interval;
        self.send_bare(addr, &[Message::Ping { seq, target: name.clone(), from: self.me.clone() }]);
        self.pending.push(Pending { name, addr, inc, meta, seq, expires });
    }

    /// `gossip` is false for updates a push-pull state taught us about
    /// members we knew: the peer that sent it holds the same news and
    /// anti-entropy spreads it, so gossiping them would only crowd out fresh
    /// news. New members are always gossiped.
    fn merge_alive(
        &mut self,
        now: Instant,
        name: Arc<str>,
        addr: SocketAddr,
        inc: u64,
        meta: Option<Metadata>,
        gossip: bool,
    ) {
        if name == self.me {
            if addr != self.addr {
                self.check_conflict(now, addr);
            }
            if inc > self.incarnation {
                self.refute(now, inc);
            }
            return;
        }
        if meta.as_ref().is_some_and(|m| m.encoded_len() > self.cfg.max_metadata) {
            self.counters.dropped_oversized += 1;
            return;
        }
        let msg_meta = meta.clone();
        if !self.table.contains(&name) {
            if self.table.len() >= self.cfg.max_members && !self.forget_longest_dead() {
                self.counters.dropped_members += 1;
                tracing::debug!(target: "ha::membership", member = %name, "member table full: newcomer dropped");
                return;
            }
            let meta = Arc::new(meta.unwrap_or_default());
            let member = Member { name: name.clone(), addr, incarnation: inc, state: MemberState::Alive, meta };
            self.table.insert(Entry::new(member.clone(), inc, now), &mut self.rng);
            self.live += 1;
            self.emit(MembershipEvent::Joined(member));
            // A member new to us is likely new to others: a cluster forming
            // converges through this, while updates about known members from
            // a merged state are left to anti-entropy.
            {
                self.queue_update(name.clone(), Message::Alive { name, addr, incarnation: inc, meta: msg_meta });
            }
            return;
        }
        let Some(e) = self.table.get_mut(&name) else { return };
        let fresh_meta = inc == e.member.incarnation && meta.is_some() && e.meta_inc < inc;
        if inc <= e.member.incarnation && !fresh_meta {
            return;
        }
        let old = e.member.state;
        e.member.incarnation = inc;
        e.member.addr = addr;
        if let Some(m) = meta {
            if *e.member.meta != m {
                e.member.meta = Arc::new(m);
            }
            e.meta_inc = inc;
        }
        e.member.state = MemberState::Alive;
        if old != MemberState::Alive {
            e.since = now;
        }
        let member = e.member.clone();
        self.suspicions.clear(&name);
        if !old.is_live() {
            self.live += 1;
        }
        self.emit(match old {
            MemberState::Alive => MembershipEvent::Updated(member),
            MemberState::Suspect => MembershipEvent::Recovered(member),
            MemberState::Dead | MemberState::Left => MembershipEvent::Joined(member),
        });
        if gossip {
            self.queue_update(name.clone(), Message::Alive { name, addr, incarnation: inc, meta: msg_meta });
        }
    }

    fn apply_suspect(&mut self, now: Instant, name: Arc<str>, inc: u64, from: Arc<str>) {
        if name == self.me {
            if inc >= self.incarnation {
                self.refute(now, inc);
            } else {
                // Old news about us still circulates: assert the newer incarnation again.
                self.broadcast_self();
            }
            return;
        }
        let n = self.live;
        let Some(e) = self.table.get_mut(&name) else { return };
        if inc < e.member.incarnation {
            return;
        }
        match e.member.state {
            MemberState::Dead | MemberState::Left => {}
            MemberState::Suspect => {
                if self.suspicions.confirm(&name, from.clone()) {
                    self.queue_update(name.clone(), Message::Suspect { name, incarnation: inc, from });
                }
            }
            MemberState::Alive => {
                let suspicion = Suspicion::in_cluster(&self.cfg, n, now, from.clone());
                let k = suspicion.k();
                // Confirmations come from independent probes: a few members,
                // chosen at random, probe the suspect next instead of later in
                // their round (no extra traffic, only an earlier probe).
                if self.cfg.lifeguard && from != self.me && k > 0 {
                    let others = n.saturating_sub(2).max(1) as f64;
                    if self.rng.unit_f64() < (2.0 * f64::from(k + 1) / others).min(1.0) {
                        self.probing.urge(name.clone());
                    }
                }
                e.member.incarnation = inc;
                e.member.state = MemberState::Suspect;
                e.since = now;
                let member = e.member.clone();
                if from != self.me {
                    // Our own evidence, whatever becomes of the gossip: if the
                    // verdict that follows the suspicion misses us, a refusal
                    // still ends our timer within a probe interval.
                    let seq = self.probing.next_seq();
                    let dropped = self.probing.check(StreamCheck { to: member.addr, seq });
                    self.counters.dropped_checks += u64::from(dropped);
                }
                self.suspicions.start(name.clone(), suspicion);
                self.emit(MembershipEvent::Suspected(member));
                self.queue_update(name.clone(), Message::Suspect { name, incarnation: inc, from });
            }
        }
    }

    fn apply_dead(&mut self, now: Instant, name: Arc<str>, inc: u64, from: Arc<str>) {
        if name == self.me {
            if self.left {
                return;
            }
            if inc >= self.incarnation {
                self.refute(now, inc);
            } else {
                self.broadcast_self();
            }
            return;
        }
        let Some(e) = self.table.get_mut(&name) else { return };
        if inc < e.member.incarnation || !e.member.state.is_live() {
            return;
        }
        let left = from == name;
        e.member.incarnation = inc;
        e.member.state = if left { MemberState::Left } else { MemberState::Dead };
        e.since = now;
        let member = e.member.clone();
        self.suspicions.clear(&name);
        self.live -= 1;
        self.probing.drop_target(&name);
        self.emit(if left { MembershipEvent::Left(member) } else { MembershipEvent::Died(member) });
        self.queue_update(name.clone(), Message::Dead { name, incarnation: inc, from });
    }

    /// Whether an update about `name` at `inc` may be applied: a valid name,
    /// and an incarnation that leaves the member room to refute it. About
    /// this node or a live member, that is at most `max_incarnation_jump`
    /// above the one known; about a member not known or no longer live (a
    /// newcomer, a node rejoining with a clock-based incarnation), any
    /// incarnation up to `u64::MAX - max_incarnation_jump`.
    fn admissible(&mut self, name: &str, inc: u64) -> bool {
        if name.is_empty() || name.len() > MAX_NAME {
            self.counters.dropped_names += 1;
            return false;
        }
        let jump = self.cfg.max_incarnation_jump;
        let live_known = if name == &*self.me {
            Some(self.incarnation)
        } else {
            self.table.get(name).map(|e| &e.member).filter(|m| m.state.is_live()).map(|m| m.incarnation)
        };
        let ceiling = match live_known {
            Some(known) => known.saturating_add(jump),
            None => u64::MAX - jump,
        };
        if inc > ceiling {
            self.counters.dropped_incarnation += 1;
            tracing::debug!(target: "ha::membership", member = name, known = ?live_known, heard = inc, "implausible incarnation dropped");
            return false;
        }
        true
    }

    /// Why an indirect probe request from `from` about `target` at `addr` is refused, if it is.
    fn relay_allowed(&self, from: SocketAddr, target: &Arc<str>, addr: SocketAddr) -> Result<(), &'static str> {
        if self.left {
            return Err("left");
        }
        if self.relays.len() >= MAX_RELAYS {
            return Err("too many in total");
        }
        if self.relays.iter().filter(|r| r.origin == from).count() >= MAX_RELAYS_PER_ORIGIN {
            return Err("too many for this requester");
        }
        let known_target = *target != self.me
            && self.table.get(target).is_some_and(|e| {
                let m = &e.member;
                m.addr == addr && m.state.is_live()
            });
        if !known_target {
            return Err("unknown target");
        }
        let known_origin = self.table.iter().skip(1).any(|e| e.member.addr == from && e.member.state.is_live());
        if !known_origin {
            return Err("unknown requester");
        }
        Ok(())
    }

    /// Takes a token for a state sync toward an unknown prober.
    fn take_sync_token(&mut self, now: Instant) -> bool {
        let rate = f64::from(self.cfg.unknown_syncs_per_sec);
        let elapsed = now.saturating_duration_since(self.sync_refill).as_secs_f64();
        self.sync_refill = now;
        self.sync_tokens = (self.sync_tokens + elapsed * rate).min(2.0 * rate);
        if self.sync_tokens >= 1.0 {
            self.sync_tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn expire_pending(&mut self, now: Instant) {
        let before = self.pending.len();
        self.pending.retain(|p| p.expires > now);
        let expired = (before - self.pending.len()) as u64;
        if expired > 0 {
            self.counters.dropped_members += expired;
            tracing::debug!(target: "ha::membership", expired, "members heard of by gossip never answered a probe");
        }
        if self.conflict_probe.as_ref().is_some_and(|c| c.deadline <= now) {
            self.conflict_probe = None;
        }
    }

    /// Forgets the member dead or departed for longest, to make room.
    fn forget_longest_dead(&mut self) -> bool {
        self.table.forget(|entries| {
            (1..entries.len()).filter(|&i| !entries[i].member.state.is_live()).min_by_key(|&i| entries[i].since)
        })
    }

    /// Something claims this node's name at another address: probe it under our name.
    fn check_conflict(&mut self, now: Instant, addr: SocketAddr) {
        if self.left || self.conflict_probe.is_some() || self.conflict == Some(addr) {
            return;
        }
        let seq = self.probing.next_seq();
        self.send_bare(addr, &[Message::Ping { seq, target: self.me.clone(), from: self.me.clone() }]);
        self.conflict_probe = Some(ConflictProbe { seq, addr, deadline: now + self.cfg.probe_timeout });
    }

    fn report_conflict(&mut self, addr: SocketAddr) {
        self.counters.name_conflicts += 1;
        if self.conflict == Some(addr) {
            return;
        }
        self.conflict = Some(addr);
        tracing::warn!(target: "ha::membership", name = %self.me, other = %addr, "another node uses this node's name");
        let member = Member {
            name: self.me.clone(),
            addr,
            incarnation: 0,
            state: MemberState::Alive,
            meta: Arc::new(Metadata::default()),
        };
        self.events.push_back(MembershipEvent::NameConflict(member));
    }

    fn count_open_error(&mut self, e: DecodeError) {
        match e {
            DecodeError::Authentication => self.counters.dropped_auth += 1,
            DecodeError::Replay => self.counters.dropped_replay += 1,
            _ => {}
        }
    }

    /// This node's full state, sealed for a push-pull exchange. `join` asks
    /// the receiver to answer even though it may not know this node.
    pub fn local_state(&mut self, join: bool) -> Vec<u8> {
        let members = self
            .table
            .iter()
            .map(|e| StateEntry {
                name: e.member.name.clone(),
                addr: e.member.addr,
                incarnation: e.member.incarnation,
                state: e.member.state.code(),
                meta: (*e.member.meta).clone(),
            })
            .collect();
        let payload = self.codec.seal(true, &wire::encode_state(&State { join, members }));
        self.counters.bytes_out += payload.len() as u64;
        payload
    }

    /// Merges a remote full state. Returns whether the sender was joining.
    pub fn handle_state(&mut self, now: Instant, state: &[u8]) -> Result<bool, DecodeError> {
        self.counters.bytes_in += state.len() as u64;
        let decoded = self.codec.open(true, state).and_then(|body| wire::decode_state(&body));
        let state = match decoded {
            Ok(s) => s,
            Err(e) => {
                self.count_open_error(e);
                self.counters.dropped += 1;
                return Err(e);
            }
        };
        self.counters.syncs += 1;
        for (k, m) in state.members.into_iter().enumerate() {
            if !self.admissible(&m.name, m.incarnation) {
                continue;
            }
            // The sender lists itself first: that entry is news worth gossiping
            // (a joiner, or a refutation). Of the rest, only members new to us
            // are gossiped (see `merge_alive`).
            let gossip = k == 0;
            let Some(st) = MemberState::from_code(m.state) else { continue };
            match st {
                MemberState::Alive => self.merge_alive(now, m.name, m.addr, m.incarnation, Some(m.meta), gossip),
                MemberState::Suspect | MemberState::Dead if m.name == self.me && m.addr != self.addr => {
                    // Not us: another node with our name (checked by a probe).
                    self.check_conflict(now, m.addr);
                }
                MemberState::Suspect => {
                    self.merge_alive(now, m.name.clone(), m.addr, m.incarnation, Some(m.meta), gossip);
                    self.apply_suspect(now, m.name, m.incarnation, "push-pull".into());
                }
                // A remote death is only a suspicion here: we may still reach it.
                MemberState::Dead => {
                    if self.table.contains(&m.name) || m.name == self.me {
                        self.apply_suspect(now, m.name, m.incarnation, "push-pull".into());
                    }
                }
                MemberState::Left => {
                    let from = m.name.clone();
                    self.apply_dead(now, m.name, m.incarnation, from);
                }
            }
        }
        Ok(state.join)
    }
}

#[cfg(test)]
#[path = "swim_tests.rs"]
mod tests;
