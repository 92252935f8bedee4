//! The dissemination queue: updates waiting to be piggy-backed.
//!
//! Each update is sent at most `retransmit_mult * ceil(log10(n + 1))` times,
//! least-sent first and, among equals, newest first, which is what spreads a
//! fresh update fastest while old ones fade out. A newer update about a
//! member replaces the queued one, so stale news is never sent.

use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    Member(Arc<str>),
    User(Arc<str>, u64),
}

#[derive(Debug)]
struct Queued {
    key: Key,
    frame: Vec<u8>,
    transmits: u32,
    id: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Broadcasts {
    items: Vec<Queued>,
    next_id: u64,
    sorted: bool,
}

impl Broadcasts {
    pub(crate) fn push(&mut self, key: Key, frame: Vec<u8>) {
        if let Key::Member(_) = key {
            self.items.retain(|q| q.key != key);
        }
        self.next_id += 1;
        self.items.push(Queued { key, frame, transmits: 0, id: self.next_id });
        self.sorted = false;
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends queued frames to `out` while they fit in `budget` bytes in
    /// total; drops those sent `limit` times. Returns how many were added.
    pub(crate) fn fill(&mut self, out: &mut Vec<u8>, budget: usize, limit: u32) -> usize {
        if self.items.is_empty() || out.len() >= budget {
            return 0;
        }
        if !self.sorted {
            self.items.sort_unstable_by(|a, b| a.transmits.cmp(&b.transmits).then(b.id.cmp(&a.id)));
            self.sorted = true;
        }
        let mut added = 0;
        let mut expired = false;
        for q in &mut self.items {
            if out.len() + q.frame.len() > budget {
                continue;
            }
            out.extend_from_slice(&q.frame);
            q.transmits += 1;
            expired |= q.transmits >= limit;
            added += 1;
            if budget - out.len() < 8 {
                break;
            }
        }
        if added > 0 {
            self.sorted = false;
        }
        if expired {
            self.items.retain(|q| q.transmits < limit);
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
