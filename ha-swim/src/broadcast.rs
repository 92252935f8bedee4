//! The dissemination queue: updates waiting to be piggy-backed.
//!
//! Each update is sent at most `retransmit_mult * ceil(log10(n + 1))` times,
//! least-sent first and, among equals, newest first, which is what spreads a
//! fresh update fastest while old ones fade out. A newer update about a
//! member replaces the queued one, so stale news is never sent.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    Member(Arc<str>),
    User(Arc<str>, u64),
}

/// Order of sending: fewest transmissions first, then newest first.
type Rank = (u32, std::cmp::Reverse<u64>);

#[derive(Debug, Default)]
pub(crate) struct Broadcasts {
    queue: BTreeMap<Rank, (Key, Vec<u8>)>,
    by_member: HashMap<Arc<str>, Rank>,
    next_id: u64,
    picked: Vec<Rank>,
}

impl Broadcasts {
    pub(crate) fn push(&mut self, key: Key, frame: Vec<u8>) {
        if let Key::Member(name) = &key {
            if let Some(old) = self.by_member.remove(name) {
                self.queue.remove(&old);
            }
        }
        self.next_id += 1;
        let rank = (0, std::cmp::Reverse(self.next_id));
        if let Key::Member(name) = &key {
            self.by_member.insert(name.clone(), rank);
        }
        self.queue.insert(rank, (key, frame));
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Appends queued frames to `out` while they fit in `budget` bytes in
    /// total; drops those sent `limit` times. Returns how many were added.
    pub(crate) fn fill(&mut self, out: &mut Vec<u8>, budget: usize, limit: u32) -> usize {
        if self.queue.is_empty() || out.len() >= budget {
            return 0;
        }
        self.picked.clear();
        let mut misses = 0;
        for (rank, (_, frame)) in &self.queue {
            // Frames are of similar sizes: once several in a row do not fit, stop looking.
            if budget - out.len() < 8 || misses >= 16 {
                break;
            }
            if out.len() + frame.len() > budget {
                misses += 1;
                continue;
            }
            out.extend_from_slice(frame);
            self.picked.push(*rank);
        }
        let added = self.picked.len();
        for rank in self.picked.drain(..) {
            let Some((key, frame)) = self.queue.remove(&rank) else { continue };
            let sent = rank.0 + 1;
            let new_rank = (sent, rank.1);
            if sent >= limit {
                if let Key::Member(name) = &key {
                    self.by_member.remove(name);
                }
                continue;
            }
            if let Key::Member(name) = &key {
                self.by_member.insert(name.clone(), new_rank);
            }
            self.queue.insert(new_rank, (key, frame));
        }
        added
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_sent_newest_first_and_limited() {
        let mut b = Broadcasts::default();
        b.push(Key::Member("a".into()), vec![1; 10]);
        b.push(Key::Member("b".into()), vec![2; 10]);
        let mut out = Vec::new();
        assert_eq!(b.fill(&mut out, 10, 2), 1);
        assert_eq!(out, vec![2; 10], "newest first");
        out.clear();
        b.fill(&mut out, 10, 2);
        assert_eq!(out, vec![1; 10], "least sent first");
        out.clear();
        assert_eq!(b.fill(&mut out, 100, 2), 2);
        assert!(b.is_empty(), "each sent twice, the limit");
    }

    #[test]
    fn newer_update_about_a_member_replaces_the_old() {
        let mut b = Broadcasts::default();
        b.push(Key::Member("a".into()), vec![1]);
        b.push(Key::Member("a".into()), vec![2]);
        b.push(Key::User("a".into(), 1), vec![3]);
        b.push(Key::User("a".into(), 2), vec![4]);
        assert_eq!(b.len(), 3);
        let mut out = Vec::new();
        b.fill(&mut out, 100, 5);
        assert!(!out.contains(&1));
    }
}
