//! Members as the application sees them: name, address, state, metadata.

use std::net::SocketAddr;
use std::sync::Arc;

use ha_core::Event;
use serde::{Deserialize, Serialize};

/// What a member tells the cluster about itself: where its service listens,
/// its zone, tier and weight for the balancer, and opaque user bytes.
///
/// Metadata travels in `Alive` updates when it fits a packet and always in
/// push-pull state sync, so large metadata (several KiB) still converges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Metadata {
    /// The address of the member's service (what a balancer connects to).
    pub service: Option<SocketAddr>,
    /// Zone or data centre.
    pub zone: String,
    /// Priority tier (0 is preferred).
    pub tier: u8,
    /// Relative weight for load balancing.
    pub weight: u32,
    /// Application bytes.
    pub user: Vec<u8>,
}

impl Metadata {
    /// Its encoded size in bytes, what `Config::max_metadata` limits.
    pub fn encoded_len(&self) -> usize {
        postcard::experimental::serialized_size(self).unwrap_or(usize::MAX)
    }
}

/// Where a member stands, as far as this node knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Answers probes (or has refuted every suspicion).
    Alive,
    /// Failed a probe; declared dead unless it refutes in time.
    Suspect,
    /// Confirmed failed.
    Dead,
    /// Left gracefully.
    Left,
}

impl MemberState {
    /// Alive or suspect: still counted as a member and still served traffic.
    pub fn is_live(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Suspect)
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            MemberState::Alive => 0,
            MemberState::Suspect => 1,
            MemberState::Dead => 2,
            MemberState::Left => 3,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => MemberState::Alive,
            1 => MemberState::Suspect,
            2 => MemberState::Dead,
            3 => MemberState::Left,
            _ => return None,
        })
    }
}

/// A member of the cluster, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its unique name.
    pub name: Arc<str>,
    /// Its gossip address (UDP and TCP).
    pub addr: SocketAddr,
    /// Its incarnation: only the member itself raises it, to refute suspicion,
    /// rejoin or publish new metadata.
    pub incarnation: u64,
    /// Its state.
    pub state: MemberState,
    /// What it published about itself.
    pub meta: Arc<Metadata>,
}

/// A change of the membership, as produced by the core and the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A member became alive: it joined, or came back after being dead.
    Joined(Member),
    /// A live member changed its address, metadata or incarnation.
    Updated(Member),
    /// A member is suspected.
    Suspected(Member),
    /// A suspected member refuted the suspicion.
    Recovered(Member),
    /// A member was confirmed dead.
    Died(Member),
    /// A member left gracefully.
    Left(Member),
    /// Another node answers to this node's name, at `addr` of the member
    /// given: one of the two must be renamed (the cluster only sees one).
    NameConflict(Member),
}

impl MembershipEvent {
    /// The member the event is about.
    pub fn member(&self) -> &Member {
        match self {
            MembershipEvent::Joined(m)
            | MembershipEvent::Updated(m)
            | MembershipEvent::Suspected(m)
            | MembershipEvent::Recovered(m)
            | MembershipEvent::Died(m)
            | MembershipEvent::Left(m)
            | MembershipEvent::NameConflict(m) => m,
        }
    }

    /// The same change in the workspace's event stream. `ha-core` sits
    /// below this crate, so its events name the member only and fold a
    /// join and a recovery into one `MemberAlive`; a name conflict changes
    /// no member's state and has none.
    pub(crate) fn to_event(&self) -> Option<Event> {
        let m = self.member();
        let (member, incarnation) = (m.name.clone(), m.incarnation);
        Some(match self {
            MembershipEvent::Joined(_) | MembershipEvent::Recovered(_) => Event::MemberAlive { member, incarnation },
            MembershipEvent::Suspected(_) => Event::MemberSuspected { member, incarnation },
            MembershipEvent::Died(_) => Event::MemberDead { member, incarnation },
            MembershipEvent::Left(_) => Event::MemberLeft { member },
            MembershipEvent::Updated(_) => Event::MemberUpdated { member, incarnation },
            MembershipEvent::NameConflict(_) => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_of_state_has_its_workspace_event_and_a_name_conflict_none() {
        let m = Member {
            name: "b".into(),
            addr: "10.0.0.2:7946".parse().unwrap(),
            incarnation: 3,
            state: MemberState::Alive,
            meta: Arc::new(Metadata::default()),
        };
        let alive = |e: Option<Event>| matches!(e, Some(Event::MemberAlive { incarnation: 3, .. }));
        assert!(alive(MembershipEvent::Joined(m.clone()).to_event()));
        assert!(alive(MembershipEvent::Recovered(m.clone()).to_event()));
        assert!(matches!(MembershipEvent::Updated(m.clone()).to_event(), Some(Event::MemberUpdated { .. })));
        assert!(matches!(MembershipEvent::Suspected(m.clone()).to_event(), Some(Event::MemberSuspected { .. })));
        assert!(matches!(MembershipEvent::Died(m.clone()).to_event(), Some(Event::MemberDead { .. })));
        assert!(
            matches!(MembershipEvent::Left(m.clone()).to_event(), Some(Event::MemberLeft { member }) if &*member == "b")
        );
        assert!(MembershipEvent::NameConflict(m).to_event().is_none());
    }
}
