//! The endpoint set: the members by key (behind a lock, for the rare
//! changes) and the snapshot of them selection reads without one.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use ha_core::sync::{LockExt, Mutex};
use ha_core::Instant;
use tower::discover::Change;

use crate::clock::Clock;
use crate::endpoint::{Endpoint, EndpointState};
use crate::health::HealthGate;
use crate::snapshot::{Cached, SnapshotCell};
use crate::table::Snapshot;
use crate::tuning::Tuning;

/// Builds the health gate (a circuit breaker) of a new endpoint.
pub(crate) type GateFactory<K> = Arc<dyn Fn(&K, &Arc<str>) -> Arc<dyn HealthGate> + Send + Sync>;

/// The members of a balancer and the snapshot published from them.
///
/// Every change builds a new snapshot under the members' lock and calls
/// the caller's `prepare` on it before publishing it, so that its tier
/// plan is counted before any pick sees it.
pub(crate) struct EndpointTable<K, S> {
    members: Mutex<HashMap<K, Arc<EndpointState<S>>>>,
    cell: SnapshotCell<Snapshot<S>>,
    gate: Option<GateFactory<K>>,
    /// The balancer's time line, which endpoints' latency estimates share.
    clock: Clock,
}

impl<K, S> EndpointTable<K, S> {
    /// An empty table under `tuning`.
    pub(crate) fn new(tuning: Arc<Tuning>, gate: Option<GateFactory<K>>, clock: Clock) -> Self {
        let empty = ha_core::sync::Arc::new(Snapshot::build(Vec::new(), tuning));
        EndpointTable { members: Mutex::new(HashMap::new()), cell: SnapshotCell::new(empty), gate, clock }
    }

    /// The current snapshot (a lock and a reference count: not for the
    /// request path, which reads through [`with_current`](Self::with_current)).
    pub(crate) fn snapshot(&self) -> ha_core::sync::Arc<Snapshot<S>> {
        self.cell.load().1
    }

    /// A reader's own copy of the current snapshot.
    pub(crate) fn reader(&self) -> Cached<Snapshot<S>> {
        Cached::new(&self.cell)
    }

    /// Calls `f` with the current snapshot, through this thread's copy of it
    /// (`LiveCell::with`): one atomic load unless the table changed.
    #[inline]
    pub(crate) fn with_current<R>(&self, f: impl FnOnce(&ha_core::sync::Arc<Snapshot<S>>) -> R) -> R
    where
        S: 'static,
    {
        self.cell.with(f)
    }

    /// The current snapshot through `reader`: one atomic load unless the
    /// table changed.
    #[inline]
    pub(crate) fn current<'r>(&self, reader: &'r mut Cached<Snapshot<S>>) -> &'r ha_core::sync::Arc<Snapshot<S>> {
        reader.get(&self.cell)
    }

    /// The settings in force.
    pub(crate) fn tuning(&self) -> Arc<Tuning> {
        self.snapshot().tuning.clone()
    }

    /// How many endpoints the table has.
    pub(crate) fn len(&self) -> usize {
        self.snapshot().endpoints.len()
    }

    fn publish(
        &self,
        members: &HashMap<K, Arc<EndpointState<S>>>,
        tuning: Arc<Tuning>,
        prepare: impl FnOnce(&Snapshot<S>),
    ) {
        let snap = ha_core::sync::Arc::new(Snapshot::build(members.values().cloned().collect(), tuning));
        prepare(&snap);
        self.cell.store(snap);
    }

    /// Rebuilds the snapshot over the same endpoints under `tuning`, so
    /// every endpoint keeps its state; returns the settings it replaced.
    pub(crate) fn retune(&self, tuning: Arc<Tuning>, prepare: impl FnOnce(&Snapshot<S>)) -> Arc<Tuning> {
        let members = self.members.lock_or_recover();
        let before = self.tuning();
        self.publish(&members, tuning, prepare);
        before
    }
}

impl<K, S> EndpointTable<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug,
{
    /// The members by key.
    pub(crate) fn keys(&self) -> Vec<(K, Arc<EndpointState<S>>)> {
        let members = self.members.lock_or_recover();
        members.iter().map(|(k, s)| (k.clone(), s.clone())).collect()
    }

    fn admit(
        &self,
        key: &K,
        mut ep: Endpoint<S>,
        now: Instant,
        ramp_from_ns: u64,
        tuning: &Tuning,
    ) -> Arc<EndpointState<S>> {
        let name: Arc<str> = ep.name.take().unwrap_or_else(|| {
            let debug = format!("{key:?}");
            // A string key reads better without its quotes.
            match debug.strip_prefix('"').and_then(|d| d.strip_suffix('"')) {
                Some(bare) => bare.into(),
                None => debug.into(),
            }
        });
        let gate = ep.gate.take().or_else(|| self.gate.as_ref().map(|f| f(key, &name)));
        let id = ha_core::EndpointId::from_key(key);
        Arc::new(EndpointState::new(id, name, ep, gate, (self.clock, now), ramp_from_ns, tuning))
    }

    /// Edits the members under their lock and publishes the result. The
    /// edit is told where new endpoints' slow start begins: `now_ns`, or
    /// none for the first endpoints of an empty table.
    fn update(
        &self,
        now_ns: u64,
        prepare: impl FnOnce(&Snapshot<S>),
        edit: impl FnOnce(&mut HashMap<K, Arc<EndpointState<S>>>, &Tuning, u64),
    ) {
        let mut members = self.members.lock_or_recover();
        let tuning = self.tuning();
        let ramp_from_ns = if members.is_empty() { 0 } else { now_ns };
        edit(&mut members, &tuning, ramp_from_ns);
        self.publish(&members, tuning, prepare);
    }

    /// Applies a batch of changes with one rebuild.
    pub(crate) fn apply(
        &self,
        changes: impl IntoIterator<Item = Change<K, Endpoint<S>>>,
        now: Instant,
        now_ns: u64,
        prepare: impl FnOnce(&Snapshot<S>),
    ) {
        self.update(now_ns, prepare, |members, tuning, ramp_from_ns| {
            for change in changes {
                match change {
                    Change::Insert(key, ep) => {
                        let endpoint = self.admit(&key, ep, now, ramp_from_ns, tuning);
                        members.insert(key, endpoint);
                    }
                    Change::Remove(key) => {
                        members.remove(&key);
                    }
                }
            }
        });
    }

    /// Replaces the whole set; endpoints whose key, tier and weight stay
    /// keep their state.
    pub(crate) fn reset(
        &self,
        endpoints: impl IntoIterator<Item = (K, Endpoint<S>)>,
        now: Instant,
        now_ns: u64,
        prepare: impl FnOnce(&Snapshot<S>),
    ) {
        self.update(now_ns, prepare, |members, tuning, ramp_from_ns| {
            let mut next = HashMap::new();
            for (key, ep) in endpoints {
                let endpoint = match members.remove(&key) {
                    Some(old) if old.tier == ep.tier && old.weight == ep.weight => old,
                    _ => self.admit(&key, ep, now, ramp_from_ns, tuning),
                };
                next.insert(key, endpoint);
            }
            *members = next;
        });
    }
}
