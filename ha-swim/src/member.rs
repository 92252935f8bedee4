//! Members as the application sees them: name, address, state, metadata.

use std::net::SocketAddr;
use std::sync::Arc;

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
}
