//! Replay protection for encrypted clusters: a sliding window per sender.
//!
//! Every sealed packet's nonce is the sender's random 16-byte prefix (new
//! for each keyring, so for each process) followed by its packet counter.
//! Only packets that authenticated reach the window, so only key holders
//! create entries. A counter seen before, or older than the window, is a
//! replay. Senders beyond [`MAX_SENDERS`] evict the least recently created.

use std::collections::{HashMap, VecDeque};

/// How far behind the newest counter a packet may arrive (reordering).
const WINDOW: u64 = 1024;
const WORDS: usize = (WINDOW / 64) as usize;
/// Senders remembered at once.
pub(crate) const MAX_SENDERS: usize = 4096;

#[derive(Debug, Clone)]
struct Window {
    top: u64,
    /// Bit `i` marks counter `top - i` as seen.
    seen: [u64; WORDS],
}

impl Window {
    fn new(counter: u64) -> Self {
        let mut seen = [0; WORDS];
        seen[0] = 1;
        Window { top: counter, seen }
    }

    fn bit(&self, d: u64) -> bool {
        self.seen[(d / 64) as usize] & (1 << (d % 64)) != 0
    }

    fn set(&mut self, d: u64) {
        self.seen[(d / 64) as usize] |= 1 << (d % 64);
    }

    /// Moves the window `by` counters up.
    fn shift(&mut self, by: u64) {
        if by >= WINDOW {
            self.seen = [0; WORDS];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        for i in (0..WORDS).rev() {
            let lo = i.checked_sub(words).map_or(0, |j| self.seen[j]);
            let carry = if bits == 0 { 0 } else { i.checked_sub(words + 1).map_or(0, |j| self.seen[j] >> (64 - bits)) };
            self.seen[i] = (lo << bits) | carry;
        }
    }

    /// Records `counter`; false when it was seen or is too old.
    fn accept(&mut self, counter: u64) -> bool {
        if counter > self.top {
            self.shift(counter - self.top);
            self.top = counter;
            self.set(0);
            return true;
        }
        let d = self.top - counter;
        if d >= WINDOW || self.bit(d) {
            return false;
        }
        self.set(d);
        true
    }
}

/// The replay windows of every sender heard from.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplayGuard {
    senders: HashMap<[u8; 16], Window>,
    order: VecDeque<[u8; 16]>,
}

impl ReplayGuard {
    /// Records an authenticated packet's nonce; false for a replay.
    pub(crate) fn accept(&mut self, nonce: &[u8]) -> bool {
        let (Some(prefix), Some(counter)) = (nonce.get(..16), nonce.get(16..24)) else { return false };
        let prefix: [u8; 16] = prefix.try_into().unwrap_or_default();
        let counter = u64::from_le_bytes(counter.try_into().unwrap_or_default());
        if let Some(w) = self.senders.get_mut(&prefix) {
            return w.accept(counter);
        }
        if self.order.len() >= MAX_SENDERS {
            if let Some(old) = self.order.pop_front() {
                self.senders.remove(&old);
            }
        }
        self.senders.insert(prefix, Window::new(counter));
        self.order.push_back(prefix);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonce(prefix: u8, counter: u64) -> Vec<u8> {
        let mut n = vec![prefix; 16];
        n.extend_from_slice(&counter.to_le_bytes());
        n
    }

    #[test]
    fn each_counter_once_reordering_within_the_window() {
        let mut g = ReplayGuard::default();
        assert!(g.accept(&nonce(1, 10)));
        assert!(!g.accept(&nonce(1, 10)), "replay");
        assert!(g.accept(&nonce(2, 10)), "another sender");
        assert!(g.accept(&nonce(1, 5)), "late but new");
        assert!(!g.accept(&nonce(1, 5)));
        assert!(g.accept(&nonce(1, 10 + 100)));
        assert!(g.accept(&nonce(1, 70)), "across a word boundary");
        assert!(!g.accept(&nonce(1, 70)));
        assert!(!g.accept(&nonce(1, 10)), "still remembered after a shift");
        assert!(g.accept(&nonce(1, 5000)));
        assert!(!g.accept(&nonce(1, 5000 - WINDOW)), "older than the window");
        assert!(g.accept(&nonce(1, 5000 - WINDOW + 1)));
        assert!(!g.accept(&nonce(1, 5000 - WINDOW + 1)));
        assert!(!g.accept(&[0; 3]), "too short");
    }

    #[test]
    fn every_shift_keeps_exactly_the_seen_counters() {
        for gap in [1u64, 63, 64, 65, 127, 128, 500, 1023] {
            let mut w = Window::new(1000);
            for c in (1000 - 200)..1000 {
                if c % 3 == 0 {
                    w.accept(c);
                }
            }
            w.accept(1000 + gap);
            for c in (1000 + gap).saturating_sub(WINDOW - 1)..(1000 + gap) {
                let was_seen = c == 1000 || ((800..1000).contains(&c) && c % 3 == 0);
                assert_eq!(!w.accept(c), was_seen, "gap {gap} counter {c}");
            }
        }
    }
}
