//! This crate's [`Swim`] as a simulator node.

use std::net::SocketAddr;

use ha_core::Instant;

use super::scenario::{Scenario, ScenarioError};
use super::{addr_of, index_of, RunSpec, SimEvent, SimNode};
use ha_swim::MembershipEvent;
use ha_swim::Swim;

/// A [`Swim`] core in the simulator.
#[derive(Debug)]
pub struct HaNode {
    swim: Swim,
}

impl HaNode {
    /// The core, to inspect.
    pub fn swim(&self) -> &Swim {
        &self.swim
    }
}

/// Builds `ha` nodes for `scenario`: node `i` is named `n{i}` at [`addr_of`]`(i)`
/// and joins through the seeds it is given.
#[allow(clippy::type_complexity)]
pub fn ha_spawner(
    scenario: &Scenario,
    spec: &RunSpec,
) -> Result<impl FnMut(usize, Instant, u64, &[SocketAddr]) -> HaNode, ScenarioError> {
    let mut config = scenario.config()?;
    config.lifeguard = spec.lifeguard;
    Ok(move |i: usize, now: Instant, seed: u64, seeds: &[SocketAddr]| {
        let mut swim =
            Swim::new(config.clone(), format!("n{i}"), addr_of(i), now, seed).expect("preset configs are valid");
        swim.join(seeds);
        HaNode { swim }
    })
}

impl SimNode for HaNode {
    fn handle(&mut self, now: Instant, from: SocketAddr, packet: &[u8]) {
        self.swim.handle(now, from, packet);
    }

    fn tick(&mut self, now: Instant) {
        self.swim.tick(now);
    }

    fn next_wake(&self) -> Instant {
        self.swim.poll_timeout()
    }

    fn leave(&mut self, now: Instant) {
        self.swim.leave(now);
    }

    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.swim.poll_transmit().map(|t| (t.to, t.payload))
    }

    fn poll_event(&mut self) -> Option<SimEvent> {
        loop {
            let ev = self.swim.poll_event()?;
            // Not a change of anyone's state: its member is another node's claim to this one's name.
            if matches!(ev, MembershipEvent::NameConflict(_)) {
                continue;
            }
            // Every other event carries the member as it now stands.
            let m = ev.member();
            let Some(subject) = index_of(m.addr) else { continue };
            return Some(SimEvent { subject, state: m.state, incarnation: Some(m.incarnation) });
        }
    }

    fn poll_sync(&mut self) -> Option<SocketAddr> {
        self.swim.poll_sync()
    }

    fn poll_stream_check(&mut self) -> Option<(SocketAddr, u32)> {
        self.swim.poll_stream_check().map(|c| (c.to, c.seq))
    }

    fn stream_refused(&mut self, now: Instant, to: SocketAddr, token: u32) {
        self.swim.stream_refused(now, ha_swim::StreamCheck { to, seq: token });
    }

    fn local_state(&mut self, join: bool) -> Vec<u8> {
        self.swim.local_state(join)
    }

    fn handle_state(&mut self, now: Instant, state: &[u8]) {
        // A state that fails to decode is counted by the core; nothing else to do.
        let _ = self.swim.handle_state(now, state);
    }
}
