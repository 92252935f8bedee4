//! A deterministic fuzzer of the SWIM core's whole input path: not only the
//! decoder, but `Swim::handle` and `Swim::handle_state` acting on what they
//! decode, with time advancing, timers firing and every output drained.
//!
//! ```text
//! cargo run --release -p ha-benches --bin swim-fuzz -- [--inputs N] [--seed S]
//! ```
//!
//! Each input is one of: random bytes; a valid datagram or push-pull state
//! of random messages of every kind, from one of many fake senders, with
//! field values at their boundaries (incarnations 0 and near `u64::MAX`,
//! empty and over-long names, large metadata); or such a packet mutated
//! (bit flips, truncation, insertion, splicing), before or after its
//! envelope. Every so often the core is replaced by a fresh one of another
//! configuration (presets, Lifeguard off, encryption, a small member cap).
//! A panic is caught, counted and its input printed; the run exits non-zero
//! if any happened or an invariant (member cap, bounded queues, bounded
//! memory) broke. It needs no nightly toolchain, so CI runs it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as WallClock};

use ha_core::rng::FastRng;
use ha_core::Instant;
use ha_membership::wire::forge::{self, Entry, Sealer};
use ha_membership::wire::Message;
use ha_membership::{Config, Counters, Keyring, MemberState, Metadata, StreamCheck, Swim};

const USAGE: &str = "usage: swim-fuzz [--inputs N] [--seed S]";
const KEY: [u8; 32] = [9; 32];
/// A fresh core this often, so that a young node's paths are fuzzed as much as an old one's.
const CORE_LIFETIME: u64 = 100_000;
/// Invariants are checked this often.
const BATCH: u64 = 1_000;
const SENDERS: usize = 48;

struct Args {
    inputs: u64,
    seed: u64,
}

fn parse() -> Result<Args, String> {
    let mut a = Args { inputs: 10_000_000, seed: 1 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value =
            |what: &str| it.next().and_then(|v| v.replace('_', "").parse::<u64>().ok()).ok_or(what.to_string());
        match flag.as_str() {
            "--inputs" => a.inputs = value("--inputs needs a number")?,
            "--seed" => a.seed = value("--seed needs a number")?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// The node under test and what it must never exceed.
struct Target {
    swim: Swim,
    max_members: usize,
    sealer: Sealer,
    addr: SocketAddr,
    name: Arc<str>,
}

fn target(generation: u64, now: Instant) -> Target {
    let mut cfg = match generation % 3 {
        0 => Config::lan(),
        1 => Config::local(),
        _ => Config::wan(),
    };
    cfg.lifeguard = generation % 4 != 3;
    // A small cap half the time, so that the table is full and evicting.
    if generation % 2 == 0 {
        cfg.max_members = 16;
    }
    let encrypted = generation % 5 == 4;
    let label = if generation % 7 == 6 { "prod" } else { "" };
    cfg.label = label.into();
    let addr: SocketAddr = "10.0.0.1:7946".parse().expect("literal");
    let name: Arc<str> = "me".into();
    let mut swim = Swim::new(cfg.clone(), name.clone(), addr, now, generation).expect("valid config");
    let keyring = encrypted.then(|| Keyring::new(KEY));
    if let Some(k) = &keyring {
        swim = swim.with_keyring(k.clone());
    }
    Target { swim, max_members: cfg.max_members, sealer: Sealer::new(label, keyring), addr, name }
}

/// Draws inputs.
struct Gen {
    rng: FastRng,
    senders: Vec<SocketAddr>,
    names: Vec<Arc<str>>,
}

impl Gen {
    fn new(seed: u64) -> Gen {
        let senders = (0..SENDERS)
            .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, i as u8)), 7946))
            .chain([
                "10.0.0.1:7946".parse().expect("literal"),
                "10.0.0.1:0".parse().expect("literal"),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 65535),
            ])
            .collect();
        let mut names: Vec<Arc<str>> = (0..SENDERS).map(|i| format!("n{i}").into()).collect();
        names.extend(["me", "", "\0", "é"].map(Arc::from));
        names.extend([255, 256, 600].map(|n| Arc::from("x".repeat(n))));
        Gen { rng: FastRng::new(seed), senders, names }
    }

    fn below(&mut self, n: usize) -> usize {
        self.rng.below(n as u64) as usize
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.rng.below(one_in) == 0
    }

    fn sender(&mut self) -> SocketAddr {
        let i = self.below(self.senders.len());
        self.senders[i]
    }

    fn name(&mut self) -> Arc<str> {
        let i = self.below(self.names.len());
        self.names[i].clone()
    }

    fn incarnation(&mut self) -> u64 {
        match self.below(10) {
            0 => 0,
            1 => u64::MAX,
            2 => u64::MAX - self.rng.below(4),
            3 => (1 << 20) + self.rng.below(3) - 1,
            4 => self.rng.next_u64(),
            _ => self.rng.below(8),
        }
    }

    /// A probe sequence: small ones and ones near `probes` (what the core
    /// has sent recently) match its pending probes; the rest do not.
    fn seq(&mut self, probes: u64) -> u32 {
        match self.below(4) {
            0 => self.rng.next_u64() as u32,
            1 => u32::MAX,
            2 => self.rng.below(64) as u32,
            _ => (probes as u32).wrapping_sub(self.rng.below(8) as u32),
        }
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.rng.next_u64() as u8).collect()
    }

    fn meta(&mut self) -> Metadata {
        // Now and then near or over the limits (a packet, `max_metadata`);
        // oftener, a datagram would be all oversized drops.
        let big = self.chance(64);
        Metadata {
            service: self.chance(2).then(|| self.sender()),
            zone: if big { "z".repeat(self.below(9000)) } else { format!("z{}", self.below(3)) },
            tier: self.rng.next_u64() as u8,
            weight: if self.chance(2) { u32::MAX } else { self.rng.below(100) as u32 },
            user: self.bytes(if big { 1400 } else { 16 }),
        }
    }

    fn message(&mut self, probes: u64) -> Message {
        match self.below(8) {
            0 => Message::Ping { seq: self.seq(probes), target: self.name(), from: self.name() },
            1 => Message::Ack { seq: self.seq(probes) },
            2 => Message::PingReq {
                seq: self.seq(probes),
                target: self.name(),
                addr: self.sender(),
                nack: self.chance(2),
            },
            3 => Message::Nack { seq: self.seq(probes) },
            4 => Message::Alive {
                name: self.name(),
                addr: self.sender(),
                incarnation: self.incarnation(),
                meta: self.chance(2).then(|| self.meta()),
            },
            5 => Message::Suspect { name: self.name(), incarnation: self.incarnation(), from: self.name() },
            6 => Message::Dead { name: self.name(), incarnation: self.incarnation(), from: self.name() },
            _ => Message::User {
                origin: self.name(),
                seq: self.incarnation(),
                payload: if self.chance(64) { self.bytes(2000) } else { self.bytes(32) },
            },
        }
    }

    fn frames(&mut self, probes: u64) -> Vec<u8> {
        let n = if self.chance(50) { 1 + self.below(60) } else { 1 + self.below(6) };
        let msgs: Vec<Message> = (0..n).map(|_| self.message(probes)).collect();
        forge::frames(&msgs)
    }

    /// Valid frames but one, whose message is mutated inside an intact
    /// frame: the datagram's other messages still decode, so the mutant
    /// reaches the core whenever it still parses (a changed variant, field
    /// or length inside the message).
    fn frames_one_mutated(&mut self, probes: u64) -> Vec<u8> {
        let n = 1 + self.below(4);
        let bad = self.below(n);
        let mut out = Vec::new();
        for k in 0..n {
            let msg = self.message(probes);
            let frame = forge::frames(&[msg]);
            if k != bad {
                out.extend(frame);
                continue;
            }
            // Skip the frame's varint length, mutate, and frame again.
            let skip = frame.iter().position(|b| b & 0x80 == 0).map_or(frame.len(), |i| i + 1);
            let mut inner = frame[skip..].to_vec();
            self.mutate(&mut inner);
            let mut len = inner.len() as u32;
            while len >= 0x80 {
                out.push((len as u8) | 0x80);
                len >>= 7;
            }
            out.push(len as u8);
            out.extend(inner);
        }
        out
    }

    fn state(&mut self) -> Vec<u8> {
        let n = if self.chance(10) { self.below(300) } else { self.below(12) };
        let members: Vec<Entry> = (0..n)
            .map(|_| {
                let state = if self.chance(20) { self.rng.next_u64() as u8 } else { self.below(4) as u8 };
                let meta = if self.chance(4) { self.meta() } else { Metadata::default() };
                (self.name(), self.sender(), self.incarnation(), state, meta)
            })
            .collect();
        forge::state_body(self.chance(2), members)
    }

    /// Damages `bytes` in one to four ways.
    fn mutate(&mut self, bytes: &mut Vec<u8>) {
        for _ in 0..1 + self.below(4) {
            let len = bytes.len();
            match self.below(7) {
                0 if len > 0 => {
                    let i = self.below(len);
                    bytes[i] ^= 1 << self.below(8);
                }
                1 if len > 0 => {
                    let i = self.below(len);
                    bytes[i] = [0, 0xff, 0x7f, 0x80][self.below(4)];
                }
                2 => bytes.truncate(self.below(len + 1)),
                3 => {
                    let at = self.below(len + 1);
                    let extra = self.bytes(16);
                    bytes.splice(at..at, extra);
                }
                4 if len > 1 => {
                    // A copied run: repeated frames and varints.
                    let (a, b) = (self.below(len), self.below(len));
                    let (a, b) = (a.min(b), a.max(b));
                    let run = bytes[a..b].to_vec();
                    let at = self.below(len + 1);
                    bytes.splice(at..at, run);
                }
                5 if len > 0 => {
                    // A huge varint length or count where a small one was.
                    let i = self.below(len);
                    let end = (i + 5).min(len);
                    bytes.splice(i..end, [0xff, 0xff, 0xff, 0xff, 0x0f]);
                }
                _ => {
                    let i = self.below(len + 1);
                    bytes.truncate(i);
                    let tail = self.bytes(8);
                    bytes.extend(tail);
                }
            }
        }
    }
}

/// What one input is.
enum Input {
    Datagram(SocketAddr, Vec<u8>),
    State(Vec<u8>),
}

fn draw(g: &mut Gen, t: &mut Target) -> Input {
    let probes = t.swim.counters().probes + t.swim.counters().indirect_probes;
    match g.below(20) {
        // Random bytes, half of them behind a valid header so they reach the frame decoder.
        0..=2 => {
            let mut p = if g.chance(2) { t.sealer.seal(false, &[]) } else { Vec::new() };
            let body = if g.chance(50) { g.bytes(2000) } else { g.bytes(64) };
            p.extend(body);
            Input::Datagram(g.sender(), p)
        }
        3..=7 => {
            let body = g.frames(probes);
            Input::Datagram(g.sender(), t.sealer.seal(false, &body))
        }
        8..=10 => {
            let mut body = g.frames(probes);
            g.mutate(&mut body);
            Input::Datagram(g.sender(), t.sealer.seal(false, &body))
        }
        11..=13 => {
            let body = g.frames_one_mutated(probes);
            Input::Datagram(g.sender(), t.sealer.seal(false, &body))
        }
        14..=15 => {
            let body = g.frames(probes);
            let mut p = t.sealer.seal(false, &body);
            g.mutate(&mut p);
            Input::Datagram(g.sender(), p)
        }
        16 => {
            let body = g.state();
            Input::State(t.sealer.seal(true, &body))
        }
        17..=18 => {
            let mut body = g.state();
            g.mutate(&mut body);
            let mut p = t.sealer.seal(true, &body);
            if g.chance(4) {
                g.mutate(&mut p);
            }
            Input::State(p)
        }
        _ => {
            let mut p = if g.chance(2) { t.sealer.seal(true, &[]) } else { Vec::new() };
            let body = g.bytes(128);
            p.extend(body);
            Input::State(p)
        }
    }
}

/// Feeds one input, moves time on, fires due timers and drains every output,
/// sometimes calling the rest of the API as an application would.
fn step(g: &mut Gen, t: &mut Target, now: &mut Instant, input: &Input) {
    match input {
        Input::Datagram(from, p) => t.swim.handle(*now, *from, p),
        Input::State(p) => {
            let _ = t.swim.handle_state(*now, p);
        }
    }
    *now += match g.below(1000) {
        0 => Duration::from_secs(3600),
        1..=9 => Duration::from_secs(10),
        _ => Duration::from_millis(g.rng.below(60)),
    };
    if t.swim.poll_timeout() <= *now {
        t.swim.tick(*now);
    }
    while t.swim.poll_transmit().is_some() {}
    while t.swim.poll_event().is_some() {}
    while t.swim.poll_sync().is_some() {}
    while t.swim.poll_user().is_some() {}
    // The driver's answers to stream checks: refusals of real checks, and
    // of checks the core never asked for.
    while let Some(check) = t.swim.poll_stream_check() {
        if g.chance(2) {
            t.swim.stream_refused(*now, check);
        }
    }
    if g.chance(50) {
        let check = StreamCheck { to: g.sender(), seq: g.rng.below(1 << 32) as u32 };
        t.swim.stream_refused(*now, check);
    }
    match g.below(2000) {
        0 => {
            let seed = g.sender();
            t.swim.join(&[seed]);
        }
        1 => {
            let payload = g.bytes(1500);
            let _ = t.swim.broadcast_user(payload);
        }
        2 => {
            let meta = g.meta();
            let _ = t.swim.set_metadata(*now, meta);
        }
        3 => {
            let _ = t.swim.local_state(g.chance(2));
        }
        4 if g.chance(50) => t.swim.leave(*now),
        _ => {}
    }
}

/// Checks what must hold after any input; the error says what broke.
fn invariants(t: &Target) -> Result<(), String> {
    let members: Vec<_> = t.swim.members().collect();
    if members.len() > t.max_members {
        return Err(format!("{} members held, cap {}", members.len(), t.max_members));
    }
    let live = members.iter().filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect)).count();
    if t.swim.live_count() != live {
        return Err(format!("live_count {} but {live} members alive or suspect", t.swim.live_count()));
    }
    let me = t.swim.member(&t.name).ok_or("the node lost its own entry")?;
    if me.addr != t.addr {
        return Err(format!("the node's own address changed to {}", me.addr));
    }
    // One update per member and the user broadcasts it still remembers (at most 4096).
    let queue_cap = t.max_members + 4096;
    if t.swim.queued_updates() > queue_cap {
        return Err(format!("{} updates queued, more than {queue_cap}", t.swim.queued_updates()));
    }
    Ok(())
}

/// The counters of every core run, summed.
#[derive(Default)]
struct Seen {
    sum: Counters,
    most_members: usize,
}

impl Seen {
    fn add(&mut self, t: &Target) {
        let (s, c) = (&mut self.sum, t.swim.counters());
        s.packets_in += c.packets_in;
        s.dropped += c.dropped;
        s.syncs += c.syncs;
        s.suspicions += c.suspicions;
        s.deaths += c.deaths;
        s.refutations += c.refutations;
        s.dropped_members += c.dropped_members;
        s.dropped_incarnation += c.dropped_incarnation;
        s.name_conflicts += c.name_conflicts;
    }
}

/// Resident memory in bytes (Linux), to show that it stays flat.
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    // A panic is reported once, with its input, by the loop below.
    let last_panic: Arc<Mutex<Option<String>>> = Arc::default();
    let sink = last_panic.clone();
    std::panic::set_hook(Box::new(move |info| {
        *sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(info.to_string());
    }));

    let mut g = Gen::new(args.seed);
    let mut now = Instant::now();
    let mut generation = 0;
    let mut t = target(generation, now);
    let (mut panics, mut broken) = (0u64, 0u64);
    let started = WallClock::now();
    let mut rss_warm = None;
    let mut seen = Seen::default();
    for i in 0..args.inputs {
        if i > 0 && i % CORE_LIFETIME == 0 {
            seen.add(&t);
            generation += 1;
            t = target(generation, now);
        }
        let input = draw(&mut g, &mut t);
        if catch_unwind(AssertUnwindSafe(|| step(&mut g, &mut t, &mut now, &input))).is_err() {
            panics += 1;
            if panics <= 5 {
                let (kind, bytes) = match &input {
                    Input::Datagram(from, p) => (format!("datagram from {from}"), p),
                    Input::State(p) => ("state".to_string(), p),
                };
                let msg = last_panic.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default();
                println!("PANIC at input {i} (generation {generation}, {kind}): {msg}");
                println!("  input: {}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
            }
            // The core may be half-updated: go on with a fresh one.
            seen.add(&t);
            generation += 1;
            t = target(generation, now);
        }
        if i % BATCH == BATCH - 1 {
            seen.most_members = seen.most_members.max(t.swim.members().count());
            if let Err(e) = invariants(&t) {
                broken += 1;
                if broken <= 5 {
                    println!("INVARIANT broken after input {i} (generation {generation}): {e}");
                }
            }
        }
        if i == args.inputs / 10 {
            rss_warm = rss();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let rss_end = rss();
    seen.add(&t);
    println!(
        "swim-fuzz: {} inputs in {secs:.1} s ({:.0} inputs/s), seed {}, {} cores, {panics} panics, \
         {broken} invariant failures",
        args.inputs,
        args.inputs as f64 / secs,
        args.seed,
        generation + 1
    );
    let c = seen.sum;
    // How deep the inputs went: not just decode errors.
    println!(
        "  datagrams {} ({} dropped undecodable), states merged {}, suspicions {}, deaths {}, refutations {}, \
         members refused {}, updates over the incarnation jump {}, name conflicts {}, most members held {}",
        c.packets_in,
        c.dropped,
        c.syncs,
        c.suspicions,
        c.deaths,
        c.refutations,
        c.dropped_members,
        c.dropped_incarnation,
        c.name_conflicts,
        seen.most_members
    );
    let mut grew = false;
    if let (Some(a), Some(b)) = (rss_warm, rss_end) {
        println!("  resident memory: {} MiB after 10% of the inputs, {} MiB at the end", a >> 20, b >> 20);
        // Every core is bounded, and each is dropped after CORE_LIFETIME inputs.
        grew = b > a + (64 << 20);
    }
    if panics > 0 || broken > 0 || grew {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
