//! The member table: every member this node knows, in probe order, with a
//! by-name index.
//!
//! The table's invariants live here and nowhere else: the index maps every
//! name to its entry's position and nothing more; this node is at position 0
//! for good (it is never probed, never shuffled, never forgotten); and the
//! round cursor never passes the end. `Swim` reaches entries through the
//! table only, so no caller can move an entry without its index.

use std::collections::HashMap;
use std::sync::Arc;

use ha_core::rng::FastRng;
use ha_core::Instant;

use crate::member::Member;

/// One member and what this node keeps about it.
pub(crate) struct Entry {
    pub(crate) member: Member,
    /// The incarnation the metadata we hold was published with.
    pub(crate) meta_inc: u64,
    pub(crate) since: Instant,
}

impl Entry {
    pub(crate) fn new(member: Member, meta_inc: u64, since: Instant) -> Self {
        Entry { member, meta_inc, since }
    }
}

/// The members in probe order, indexed by name; this node is entry 0.
pub(crate) struct MemberTable {
    entries: Vec<Entry>,
    index: HashMap<Arc<str>, usize>,
    /// The next position of this probe round.
    cursor: usize,
}

impl MemberTable {
    /// A table holding this node only.
    pub(crate) fn new(me: Entry) -> Self {
        let mut index = HashMap::new();
        index.insert(me.member.name.clone(), 0);
        MemberTable { entries: vec![me], index, cursor: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    #[cfg(test)]
    pub(crate) fn me(&self) -> &Entry {
        &self.entries[0]
    }

    pub(crate) fn me_mut(&mut self) -> &mut Entry {
        &mut self.entries[0]
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Entry> {
        self.index.get(name).map(|&i| &self.entries[i])
    }

    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut Entry> {
        self.index.get(name).map(|&i| &mut self.entries[i])
    }

    /// The entry at `position` in probe order.
    pub(crate) fn at(&self, position: usize) -> &Entry {
        &self.entries[position]
    }

    /// Adds a member not in the table yet at a random place in the probe
    /// order, though never into the part of this round already probed, so
    /// the newcomer is probed this round.
    pub(crate) fn insert(&mut self, entry: Entry, rng: &mut FastRng) {
        debug_assert!(!self.contains(&entry.member.name), "{} is in the table already", entry.member.name);
        self.index.insert(entry.member.name.clone(), self.entries.len());
        self.entries.push(entry);
        let last = self.entries.len() - 1;
        let j = rng.below(self.entries.len() as u64) as usize;
        if j != last && j != 0 && self.cursor <= j {
            self.swap(j, last);
        }
    }

    /// The next entry of this probe round; at the end of a round, first
    /// forgets the entries `keep` refuses (never this node) and shuffles the
    /// order of the others for the next round.
    pub(crate) fn next_in_round(&mut self, rng: &mut FastRng, keep: impl FnMut(&Entry) -> bool) -> &Entry {
        if self.cursor >= self.entries.len() {
            self.reshuffle(rng, keep);
        }
        self.cursor += 1;
        &self.entries[self.cursor - 1]
    }

    fn reshuffle(&mut self, rng: &mut FastRng, mut keep: impl FnMut(&Entry) -> bool) {
        let me = self.entries[0].member.name.clone();
        self.entries.retain(|e| e.member.name == me || keep(e));
        // This node stays at position 0; the others are shuffled.
        for i in (2..self.entries.len()).rev() {
            let j = 1 + rng.below(i as u64) as usize;
            self.entries.swap(i, j);
        }
        self.index.clear();
        for (i, e) in self.entries.iter().enumerate() {
            self.index.insert(e.member.name.clone(), i);
        }
        self.cursor = 0;
    }

    /// Forgets the member, other than this node, that `victim` picks by
    /// position; false when it picks none.
    pub(crate) fn forget(&mut self, victim: impl FnOnce(&[Entry]) -> Option<usize>) -> bool {
        let Some(i) = victim(&self.entries).filter(|&i| i != 0 && i < self.entries.len()) else { return false };
        let last = self.entries.len() - 1;
        if i != last {
            self.swap(i, last);
        }
        if let Some(e) = self.entries.pop() {
            self.index.remove(&e.member.name);
        }
        self.cursor = self.cursor.min(self.entries.len());
        true
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.entries.swap(a, b);
        self.index.insert(self.entries[a].member.name.clone(), a);
        self.index.insert(self.entries[b].member.name.clone(), b);
    }

    /// Panics unless every invariant of the table holds.
    #[cfg(test)]
    pub(crate) fn check(&self) {
        assert_eq!(self.index.len(), self.entries.len(), "one index entry per member");
        for (i, e) in self.entries.iter().enumerate() {
            assert_eq!(self.index.get(&e.member.name), Some(&i), "{} indexed at its position", e.member.name);
        }
        assert!(self.cursor <= self.entries.len(), "cursor within the table");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::SocketAddr;

    use super::*;
    use crate::member::{MemberState, Metadata};

    fn entry(name: &str, now: Instant) -> Entry {
        let addr: SocketAddr = "10.0.0.1:7946".parse().unwrap();
        let member = Member {
            name: name.into(),
            addr,
            incarnation: 0,
            state: MemberState::Alive,
            meta: Arc::new(Metadata::default()),
        };
        Entry::new(member, 0, now)
    }

    fn table(n: usize, rng: &mut FastRng, now: Instant) -> MemberTable {
        let mut t = MemberTable::new(entry("me", now));
        for i in 1..n {
            t.insert(entry(&format!("n{i}"), now), rng);
            t.check();
        }
        t
    }

    #[test]
    fn inserts_keep_the_index_and_this_node_first() {
        let now = Instant::now();
        let mut rng = FastRng::new(7);
        let t = table(50, &mut rng, now);
        assert_eq!(t.len(), 50);
        assert_eq!(&*t.me().member.name, "me");
        assert!((1..50).all(|i| t.get(&format!("n{i}")).is_some_and(|e| *e.member.name == *format!("n{i}"))));
    }

    #[test]
    fn a_round_visits_every_member_once_and_a_newcomer_is_not_skipped() {
        let now = Instant::now();
        let mut rng = FastRng::new(3);
        let mut t = table(20, &mut rng, now);
        // Finish the first round, then run the next halfway.
        for _ in 0..20 {
            t.next_in_round(&mut rng, |_| true);
        }
        let mut seen = HashSet::new();
        for _ in 0..10 {
            seen.insert(t.next_in_round(&mut rng, |_| true).member.name.clone());
        }
        t.insert(entry("late", now), &mut rng);
        t.check();
        for _ in 10..21 {
            assert!(seen.insert(t.next_in_round(&mut rng, |_| true).member.name.clone()), "visited twice in a round");
        }
        assert_eq!(seen.len(), 21, "every member once, the newcomer included");
        t.check();
    }

    #[test]
    fn a_new_round_forgets_what_keep_refuses_but_never_this_node() {
        let now = Instant::now();
        let mut rng = FastRng::new(11);
        let mut t = table(10, &mut rng, now);
        for _ in 0..10 {
            t.next_in_round(&mut rng, |_| false);
        }
        t.next_in_round(&mut rng, |_| false);
        t.check();
        assert_eq!(t.len(), 1);
        assert_eq!(&*t.me().member.name, "me");
    }

    #[test]
    fn forgetting_keeps_the_index_and_spares_this_node() {
        let now = Instant::now();
        let mut rng = FastRng::new(5);
        let mut t = table(10, &mut rng, now);
        for _ in 0..4 {
            t.next_in_round(&mut rng, |_| true);
        }
        assert!(!t.forget(|_| Some(0)), "this node is never forgotten");
        assert!(!t.forget(|_| None));
        let name = t.at(3).member.name.clone();
        assert!(t.forget(|_| Some(3)));
        t.check();
        assert!(!t.contains(&name));
        while t.len() > 1 {
            assert!(t.forget(|e| Some(e.len() - 1)));
            t.check();
        }
    }
}
