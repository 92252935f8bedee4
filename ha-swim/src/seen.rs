//! The seen-set: the user broadcasts this node has already delivered, so a
//! broadcast that comes back by another gossip path is neither delivered
//! nor forwarded twice.
//!
//! Gossip brings every broadcast back several times, from anyone, for as
//! long as any node still forwards it; remembering them all would let a
//! busy (or hostile) sender grow the set without end. So it holds at most
//! `cap` keys and forgets the oldest first: by the time a key is evicted its
//! broadcast has long stopped circulating. A key it holds is never admitted
//! again, and its insertion order lists each key once.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

/// A bounded set of keys that forgets the oldest first.
#[derive(Debug)]
pub(crate) struct SeenSet<K> {
    keys: HashSet<K>,
    /// The same keys, oldest first.
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Hash + Eq + Clone> SeenSet<K> {
    /// An empty set that holds at most `cap` keys (at least one).
    pub(crate) fn new(cap: usize) -> Self {
        SeenSet { keys: HashSet::new(), order: VecDeque::new(), cap: cap.max(1) }
    }

    /// Admits `key` unless held already; true when it was new. Admitting a
    /// key into a full set first forgets the oldest.
    pub(crate) fn insert(&mut self, key: K) -> bool {
        if self.keys.contains(&key) {
            return false;
        }
        if self.order.len() >= self.cap {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        self.keys.insert(key.clone());
        self.order.push_back(key);
        true
    }

    #[cfg(test)]
    fn contains(&self, key: &K) -> bool {
        self.keys.contains(key)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }

    /// Panics unless every invariant of the set holds.
    #[cfg(test)]
    fn check(&self) {
        assert!(self.order.len() <= self.cap, "bounded");
        assert_eq!(self.keys.len(), self.order.len(), "each key listed once");
        assert!(self.order.iter().all(|k| self.keys.contains(k)), "the order lists the keys held");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicate_is_never_admitted() {
        let mut s = SeenSet::new(4);
        assert!(s.insert(1));
        assert!(!s.insert(1));
        assert!(s.insert(2));
        assert!(!s.insert(1), "still held");
        assert_eq!(s.len(), 2);
        s.check();
    }

    #[test]
    fn a_full_set_forgets_the_oldest_first() {
        let mut s = SeenSet::new(3);
        for k in 0..3 {
            assert!(s.insert(k));
        }
        // A duplicate evicts nothing.
        assert!(!s.insert(0));
        assert!((0..3).all(|k| s.contains(&k)));
        assert!(s.insert(3));
        assert!(!s.contains(&0), "the oldest went");
        assert!((1..4).all(|k| s.contains(&k)));
        assert!(s.insert(0), "a forgotten key is new again");
        assert!(!s.contains(&1));
        s.check();
    }

    #[test]
    fn stays_bounded_under_any_sequence() {
        let mut rng = ha_core::rng::FastRng::new(9);
        let mut s = SeenSet::new(16);
        for _ in 0..10_000 {
            let k = rng.below(40);
            let held = s.contains(&k);
            assert_eq!(s.insert(k), !held);
            assert!(s.contains(&k));
            s.check();
        }
        assert_eq!(s.len(), 16);
    }

    #[test]
    fn a_zero_cap_still_holds_the_newest_key() {
        let mut s = SeenSet::new(0);
        assert!(s.insert("a"));
        assert!(!s.insert("a"));
        assert!(s.insert("b"));
        assert!(!s.contains(&"a"));
        s.check();
    }
}
