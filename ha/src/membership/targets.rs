use std::collections::HashSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use ha_membership::{Cluster, EventStream, Member, MembershipEvent};
use tower::discover::Change;

use crate::target::Target;

/// The live members of a cluster that advertise a service, as a stream of
/// [`Target`] changes keyed by member name (a `tower::discover::Discover`).
#[must_use = "streams do nothing unless polled"]
pub struct MemberTargets {
    events: EventStream,
    own: Arc<str>,
    zone: Option<Arc<str>>,
    present: HashSet<Arc<str>>,
}

impl std::fmt::Debug for MemberTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberTargets")
            .field("zone", &self.zone)
            .field("present", &self.present.len())
            .finish_non_exhaustive()
    }
}

/// The live members of `cluster` other than itself, as targets.
pub fn targets(cluster: &Cluster) -> MemberTargets {
    MemberTargets { events: cluster.events(), own: cluster.name().clone(), zone: None, present: HashSet::new() }
}

impl MemberTargets {
    /// Members outside `zone` go one tier below their advertised tier.
    pub fn prefer_zone(mut self, zone: impl Into<Arc<str>>) -> Self {
        let zone: Arc<str> = zone.into();
        self.zone = (!zone.is_empty()).then_some(zone);
        self
    }

    /// The target a member stands for, if it advertises a service.
    pub fn target_of(&self, member: &Member) -> Option<Target> {
        let meta = &member.meta;
        let addr = meta.service?;
        let mut tier = meta.tier;
        if let Some(zone) = &self.zone {
            if *meta.zone != **zone {
                tier = tier.saturating_add(1);
            }
        }
        let mut target = Target::new(addr).tier(tier).weight(meta.weight);
        if !meta.zone.is_empty() {
            target = target.zone(meta.zone.as_str());
        }
        Some(target)
    }

    fn removal(&mut self, name: &Arc<str>) -> Option<Change<Arc<str>, Target>> {
        self.present.remove(name).then(|| Change::Remove(name.clone()))
    }
}

impl Stream for MemberTargets {
    type Item = Result<Change<Arc<str>, Target>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let Some(event) = std::task::ready!(Pin::new(&mut this.events).poll_next(cx)) else {
                return Poll::Ready(None);
            };
            let member = event.member();
            if member.name == this.own {
                continue;
            }
            let change = match &event {
                // A member that recovers was suspected: it may have restarted, so its
                // endpoint starts afresh (no ejection or breaker state from before,
                // with slow start) rather than wait out what its crash earned.
                MembershipEvent::Joined(m) | MembershipEvent::Updated(m) | MembershipEvent::Recovered(m) => {
                    match this.target_of(m) {
                        Some(target) => {
                            this.present.insert(m.name.clone());
                            Some(Change::Insert(m.name.clone(), target))
                        }
                        None => {
                            tracing::debug!(target: "ha::membership", member = %m.name, "member advertises no service address; skipped");
                            this.removal(&m.name)
                        }
                    }
                }
                MembershipEvent::Died(m) | MembershipEvent::Left(m) => this.removal(&m.name),
                MembershipEvent::Suspected(_) | MembershipEvent::NameConflict(_) => None,
            };
            if let Some(change) = change {
                return Poll::Ready(Some(Ok(change)));
            }
        }
    }
}
