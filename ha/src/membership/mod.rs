//! SWIM membership (the `ha-membership` crate), and the live members of a
//! [`Cluster`] as the endpoints of a stack.
//!
//! [`targets`] turns membership into [`Target`](crate::Target) changes: each
//! live member that advertises a service address is an endpoint with the
//! member's tier, zone and weight; members without a service address are
//! skipped; a member that dies or leaves is removed. With
//! [`MemberTargets::prefer_zone`], members outside your zone move one tier
//! down, so traffic stays in the zone while it is healthy.
//! [`StackBuilder::cluster`](crate::StackBuilder::cluster) does this for
//! you, preferring the local node's zone.

mod targets;

pub use ha_membership::*;
pub use targets::{targets, MemberTargets};
