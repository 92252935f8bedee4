//! One immutable version of the endpoint set, as selection reads it: the
//! endpoints, their grouping into tiers (with each tier's round-robin
//! schedule and hash ring), and the tier plan, the only part that changes
//! in place (atomics), recomputed every refresh period or when marked stale.

use std::hash::Hasher;
use std::sync::Arc;

use ha_core::hash::StableHasher;
use ha_core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::config::Picker;
use crate::endpoint::EndpointState;
use crate::outlier::Host;
use crate::tuning::Tuning;

/// A virtual node of the hash ring.
#[derive(Debug, Clone)]
pub(crate) struct VNode {
    /// The index of its endpoint in the snapshot.
    pub(crate) endpoint: u32,
}

/// A consistent-hash ring. Positions are a [`StableHasher`] hash of the
/// endpoint's name (its key's `Debug` form unless set) and the replica
/// number, and a key's position one of its hash and the probe: no `std`
/// hasher, whose output may change with the toolchain, is involved, so
/// clients built apart send the same key to the same endpoint. A position
/// depends on nothing else, so it survives table rebuilds.
pub(crate) struct Ring {
    /// Sorted by position, then name and replica, so ties break the same
    /// way in every client.
    nodes: Vec<(u64, VNode)>,
}

impl Ring {
    fn build<'a>(vnodes: impl Iterator<Item = (&'a str, u32, u32)>) -> Self {
        let mut keyed: Vec<(u64, &str, u32, u32)> = vnodes
            .map(|(name, replica, slot)| {
                let mut h = StableHasher::new();
                h.write(name.as_bytes());
                h.write_u32(replica);
                (h.finish(), name, replica, slot)
            })
            .collect();
        keyed.sort_unstable();
        Ring { nodes: keyed.into_iter().map(|(pos, _, _, slot)| (pos, VNode { endpoint: slot })).collect() }
    }

    /// The first node at or after the position of `(hash, probe)`, wrapping
    /// round; `None` on an empty ring.
    pub(crate) fn get(&self, &(hash, probe): &(u64, u64)) -> Option<&VNode> {
        let mut h = StableHasher::new();
        h.write_u64(hash);
        h.write_u64(probe);
        let at = h.finish();
        let i = self.nodes.partition_point(|&(pos, _)| pos < at);
        self.nodes.get(i).or_else(|| self.nodes.first()).map(|(_, node)| node)
    }
}

/// The endpoints of one tier (or of all tiers, for panic mode).
pub(crate) struct Group {
    pub(crate) tier: u8,
    pub(crate) members: Vec<u32>,
    pub(crate) schedule: Vec<u32>,
    pub(crate) cursor: AtomicUsize,
    pub(crate) ring: Option<Ring>,
    /// The median latency of its warm endpoints (available, not ramping)
    /// as last observed, as `f64` bits; 0 when unknown. Set at each plan
    /// recount (`planner::hold_cold_ramps`); slow start scales a cold
    /// endpoint's share by it.
    pub(crate) warm_latency: AtomicU64,
    /// The lowest `warm_latency` since its endpoints began to ramp (`f64`
    /// bits; 0 when none ramps): what the warm endpoints answer in when
    /// they do not queue (`planner::hold_cold_ramps`).
    pub(crate) calm_latency: AtomicU64,
    /// The lowest latency estimate of its available endpoints as last
    /// observed (`f64` bits; 0 when unknown or not tracked): what its
    /// fastest endpoint answers in. Set at each plan recount
    /// (`planner::note_floors`); the PeakEWMA picker looks past two
    /// candidates far slower than it (`pick::p2c_ewma`).
    pub(crate) floor_latency: AtomicU64,
}

/// Loads scaled to this; a random draw below `cumulative_share[i]` picks group `i`.
pub(crate) const LOAD_SCALE: u32 = 1 << 24;

pub(crate) struct Plan {
    pub(crate) computed_ns: AtomicU64,
    pub(crate) stale: AtomicBool,
    pub(crate) busy: AtomicBool,
    pub(crate) panic: AtomicBool,
    pub(crate) cumulative_share: Vec<AtomicU32>,
    pub(crate) available: Vec<AtomicU32>,
    pub(crate) available_all: AtomicU32,
}

pub(crate) struct Snapshot<S> {
    /// Sorted by id.
    pub(crate) endpoints: Vec<Arc<EndpointState<S>>>,
    /// The group index of each endpoint.
    pub(crate) group_of: Vec<u32>,
    /// One group per tier present, in priority order.
    pub(crate) groups: Vec<Group>,
    pub(crate) all: Group,
    pub(crate) plan: Plan,
    /// The settings this table was built with; a reconfiguration builds a
    /// new table.
    pub(crate) tuning: Arc<Tuning>,
}

impl<S> Snapshot<S> {
    pub(crate) fn build(mut slots: Vec<Arc<EndpointState<S>>>, tuning: Arc<Tuning>) -> Self {
        let picker = &tuning.cfg.picker;
        slots.sort_by_key(|s| s.id);
        let mut tiers: Vec<u8> = slots.iter().map(|s| s.tier).collect();
        tiers.sort_unstable();
        tiers.dedup();
        let group_of: Vec<u32> =
            slots.iter().map(|s| tiers.binary_search(&s.tier).unwrap_or_default() as u32).collect();
        let groups: Vec<Group> = tiers
            .iter()
            .enumerate()
            .map(|(g, &tier)| {
                let members = (0..slots.len() as u32).filter(|&i| group_of[i as usize] == g as u32).collect();
                Group::build(tier, members, &slots, picker)
            })
            .collect();
        let all = Group::build(0, (0..slots.len() as u32).collect(), &slots, picker);
        let n = groups.len();
        let plan = Plan {
            computed_ns: AtomicU64::new(0),
            stale: AtomicBool::new(true),
            busy: AtomicBool::new(false),
            panic: AtomicBool::new(false),
            cumulative_share: (0..n).map(|i| AtomicU32::new(if i == 0 { LOAD_SCALE } else { 0 })).collect(),
            available: groups.iter().map(|g| AtomicU32::new(g.members.len() as u32)).collect(),
            available_all: AtomicU32::new(slots.len() as u32),
        };
        Snapshot { endpoints: slots, group_of, groups, all, plan, tuning }
    }

    pub(crate) fn hosts(&self) -> Vec<Host<'_>> {
        self.endpoints.iter().map(|s| s.host()).collect()
    }

    /// The index of this very slot (not merely one with its id).
    pub(crate) fn index_of(&self, slot: &EndpointState<S>) -> Option<usize> {
        let i = self.endpoints.binary_search_by_key(&slot.id, |s| s.id).ok()?;
        std::ptr::eq(&*self.endpoints[i], slot).then_some(i)
    }
}

impl Group {
    fn build<S>(tier: u8, members: Vec<u32>, slots: &[Arc<EndpointState<S>>], picker: &Picker) -> Self {
        let schedule = match picker {
            Picker::RoundRobin => smooth_wrr(&members, |i| slots[i as usize].weight),
            _ => Vec::new(),
        };
        let ring = match picker {
            Picker::RingHash { vnodes, .. } => {
                let nodes = members.iter().flat_map(|&m| {
                    let s = &slots[m as usize];
                    let replicas = vnodes.saturating_mul(s.weight).min(100_000);
                    (0..replicas).map(move |replica| (&*s.name, replica, m))
                });
                Some(Ring::build(nodes))
            }
            _ => None,
        };
        Group {
            tier,
            members,
            schedule,
            cursor: AtomicUsize::new(0),
            ring,
            warm_latency: AtomicU64::new(0),
            calm_latency: AtomicU64::new(0),
            floor_latency: AtomicU64::new(0),
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// nginx's smooth weighted round robin, unrolled into one cycle: each member
/// appears exactly `weight / gcd` times, spread out.
pub(crate) fn smooth_wrr(members: &[u32], weight: impl Fn(u32) -> u32) -> Vec<u32> {
    let weights: Vec<u32> = members.iter().map(|&m| weight(m).max(1)).collect();
    let g = weights.iter().fold(0, |acc, &w| gcd(acc, w)).max(1);
    let mut weights: Vec<i64> = weights.iter().map(|&w| i64::from(w / g)).collect();
    // Bound the schedule's length; a huge cycle would cost memory, not accuracy.
    const MAX_CYCLE: i64 = 1 << 16;
    let total: i64 = weights.iter().sum();
    if total > MAX_CYCLE {
        weights = weights.iter().map(|&w| (w * MAX_CYCLE / total).max(1)).collect();
    }
    let total: i64 = weights.iter().sum();
    if weights.iter().all(|&w| w == 1) {
        return members.to_vec();
    }
    let mut current = vec![0i64; members.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..members.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(members[best]);
    }
    out
}

impl Plan {
    pub(crate) fn mark_stale(&self) {
        self.stale.store(true, Ordering::Release);
    }

    /// True while the plan routes over every tier (as of its last recount).
    pub(crate) fn in_panic(&self) -> bool {
        self.panic.load(Ordering::Acquire)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {

    #[test]
    fn ring_positions_are_a_pinned_test_vector() {
        // Fixed names, replicas and keys give these endpoints in every
        // build: a change here moves keys between endpoints for every client
        // of a ring-hash balancer, so it must be deliberate.
        let names = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];
        let ring = Ring::build(names.iter().enumerate().flat_map(|(i, n)| (0..100).map(move |r| (*n, r, i as u32))));
        assert_eq!(ring.nodes.len(), 300);
        let first: Vec<u64> = ring.nodes.iter().take(3).map(|&(pos, _)| pos).collect();
        let keys = [0u64, 1, 2, 42, 1_000_000, 0xdead_beef, u64::MAX];
        let picked: Vec<u32> = keys.iter().map(|&k| ring.get(&(k, 0)).unwrap().endpoint).collect();
        let probes: Vec<u32> = (0..8).map(|p| ring.get(&(42, p)).unwrap().endpoint).collect();
        assert_eq!((first, picked, probes), (PIN_FIRST.to_vec(), PIN_PICKED.to_vec(), PIN_PROBES.to_vec()));
        assert!(Ring::build(std::iter::empty()).get(&(1, 0)).is_none());
        // And the stable hash spreads keys as evenly as the old one did.
        let mut share = [0u32; 3];
        for k in 0..30_000u64 {
            share[ring.get(&(k.wrapping_mul(ha_core::rng::GOLDEN_GAMMA), 0)).unwrap().endpoint as usize] += 1;
        }
        assert!(share.iter().all(|&n| (7_500..12_500).contains(&n)), "{share:?}");
    }

    const PIN_FIRST: [u64; 3] = [14_679_854_894_694_001, 123_070_715_294_210_352, 160_628_646_082_236_317];
    const PIN_PICKED: [u32; 7] = [0, 2, 2, 2, 2, 2, 1];
    const PIN_PROBES: [u32; 8] = [2, 0, 2, 1, 2, 1, 0, 0];
    use super::*;

    #[test]
    fn smooth_wrr_gives_exact_shares_interleaved() {
        let w = [5u32, 1, 1];
        let s = smooth_wrr(&[0, 1, 2], |i| w[i as usize]);
        assert_eq!(s, vec![0, 0, 1, 0, 2, 0, 0]);
        let s = smooth_wrr(&[7, 8], |i| if i == 7 { 4 } else { 2 });
        assert_eq!(s, vec![7, 8, 7], "weights reduced by their gcd");
        assert_eq!(smooth_wrr(&[3, 4, 5], |_| 9), vec![3, 4, 5]);
    }
}
