//! A deterministic simulator: N nodes of a sans-IO membership protocol in
//! one process, on virtual time, seeded.
//!
//! The network delays datagrams by a latency drawn from the scenario's
//! distribution ([`latency`]: constant, uniform, normal, lognormal, with an
//! optional extra-delay tail) on the run's seeded generator, loses
//! some, and applies the scenario's faults: two-way and one-way partitions
//! of any node sets, single links cut, extra loss on single links or
//! everywhere, paused nodes (every message and timer handled 1-3 s late, as
//! under CPU starvation), crashes with restarts, graceful leaves. Push-pull
//! state syncs travel as reliable streams that partitions and cut links
//! still cut.
//!
//! After every step the simulator checks its invariants: no member's
//! incarnation, as seen by any node, ever goes back; and after the faults
//! stop, every live node's view converges to the live set and stays there
//! (reported as `heal_s`, restarted when views come apart again, and
//! `converged`). It measures detection times (crash to dead everywhere),
//! rejoin times (restart to alive everywhere in the new life), false
//! suspicions and deaths of healthy nodes, counted apart from deaths of a
//! restarted node's previous life and deaths across a partition, and
//! traffic per member.
//!
//! Any protocol runs in it through [`SimNode`]; [`HaNode`] runs
//! `ha-swim`'s [`Swim`](ha_swim::Swim) (the core of `ha-membership`), and the scenario runner
//! in `ha-benches` adds `foca` side by side.
//!
//! This crate is not published: it is the test bench of `ha-swim` and `ha-membership`
//! (its scenario tests, and `swim-lab` and `swim-fuzz` in `ha-benches`),
//! kept out of the library so the library's public API is the protocol and
//! its driver only.
//!
//! ```
//! use ha_membership_sim::{self as sim, scenario::Scenario, RunSpec};
//!
//! let scenario: Scenario = toml::from_str(r#"
//!     nodes = 8
//!     warmup_s = 10
//!     duration_s = 30
//!     [[faults]]
//!     kind = "crash"
//!     at_s = 1
//!     nodes = [3]
//! "#).unwrap();
//! let spec = RunSpec { nodes: 8, seed: 1, quick: false, lifeguard: true };
//! let out = sim::run(&scenario, &spec, &mut sim::ha_spawner(&scenario, &spec).unwrap()).unwrap();
//! assert!(out.all_dead_s.unwrap() < 20.0);
//! assert_eq!(out.false_dead, 0);
//! assert_eq!(out.invariant_violations, 0);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod dist;
pub mod latency;
pub mod scenario;

mod engine;
mod ha_node;

pub use engine::{run, Outcome, RunSpec, Spawn};
pub use ha_node::{ha_spawner, HaNode};

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use ha_core::Instant;
/// The states a member's view moves between, `ha-swim`'s for every protocol
/// under test (foca's views map onto them).
pub use ha_swim::MemberState;

/// A change in one node's view, reported by the protocol under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimEvent {
    /// The member it is about, by node index.
    pub subject: usize,
    /// The state the member is now in, in this node's view.
    pub state: MemberState,
    /// The member's incarnation, when the protocol exposes it.
    pub incarnation: Option<u64>,
}

/// A sans-IO membership protocol node the simulator can drive.
pub trait SimNode {
    /// A datagram arrived.
    fn handle(&mut self, now: Instant, from: SocketAddr, packet: &[u8]);
    /// Timers due at `now`.
    fn tick(&mut self, now: Instant);
    /// When `tick` must next run.
    fn next_wake(&self) -> Instant;
    /// Leave gracefully.
    fn leave(&mut self, now: Instant);
    /// The next datagram to send.
    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)>;
    /// The next view change.
    fn poll_event(&mut self) -> Option<SimEvent>;
    /// The next push-pull sync to start (protocols without one return `None`).
    fn poll_sync(&mut self) -> Option<SocketAddr> {
        None
    }
    /// This node's state for a push-pull sync.
    fn local_state(&mut self, _join: bool) -> Vec<u8> {
        Vec::new()
    }
    /// Merges a peer's state.
    fn handle_state(&mut self, _now: Instant, _state: &[u8]) {}
    /// The next stream connection to try, with the token to report its
    /// refusal with (protocols without stream checks return `None`).
    fn poll_stream_check(&mut self) -> Option<(SocketAddr, u32)> {
        None
    }
    /// The stream connection to `to` asked for with `token` was refused.
    fn stream_refused(&mut self, _now: Instant, _to: SocketAddr, _token: u32) {}
}

/// The simulated address of node `i`.
pub fn addr_of(i: usize) -> SocketAddr {
    let i = i as u32;
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8), 7946))
}

/// The node index of a simulated address.
pub fn index_of(addr: SocketAddr) -> Option<usize> {
    match addr {
        SocketAddr::V4(v) if v.port() == 7946 && v.ip().octets()[0] == 10 => {
            let o = v.ip().octets();
            Some(((o[1] as usize) << 16) | ((o[2] as usize) << 8) | o[3] as usize)
        }
        _ => None,
    }
}
