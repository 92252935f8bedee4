//! The closed-state window: ha-core's [`TimeWindow`], or a count ring tuned
//! for the breaker's success path.
//!
//! ha-core's `CountWindow` costs a division and two atomic read-modify-writes
//! per call (about 10 ns each on the 2-core benchmark machine). The ring here
//! is exact too, but recognises the healthy steady state (a window full of
//! fast successes, which another success leaves unchanged) with one load
//! and writes nothing then; otherwise it maps its ticket to a slot with a
//! multiply (Lemire's fastmod) instead of a division, and skips the slot
//! swap when the slot already holds the same outcome.

use ha_core::stats::{Sample, TimeWindow, WindowSnapshot};
use ha_core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use ha_core::Instant;

/// Keeps a hot atomic on its own cache line, so that threads bumping it do
/// not also invalidate the read-mostly state next to it.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

const FIELD_BITS: u32 = 21;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;

/// The outcomes of the last `size` calls.
#[derive(Debug)]
pub(crate) struct CountRing {
    head: Padded<AtomicU64>,
    totals: Padded<AtomicU64>,
    slots: Box<[AtomicU8]>,
    size: u32,
    /// `u64::MAX / size + 1`, for Lemire's fastmod.
    magic: u64,
}

impl CountRing {
    /// `size` is validated by the config (1..=2^19), so the packed 21-bit
    /// counters never reach their sign bit.
    pub(crate) fn new(size: u32) -> Self {
        debug_assert!(size > 0 && size <= 1 << 19);
        CountRing {
            head: Padded(AtomicU64::new(0)),
            totals: Padded(AtomicU64::new(0)),
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            size,
            magic: (u64::MAX / u64::from(size)).wrapping_add(1),
        }
    }

    /// `ticket % size` for a 32-bit ticket, with two multiplies instead of a
    /// division. The ticket wraps every 2^32 calls, which moves the ring's
    /// write position once; the totals stay exactly the sum over the slots.
    #[inline]
    fn slot_of(&self, ticket: u64) -> usize {
        let low = self.magic.wrapping_mul(u64::from(ticket as u32));
        ((u128::from(low) * u128::from(self.size)) >> 64) as usize
    }

    #[inline]
    pub(crate) fn record(&self, sample: Sample) {
        let code = code(sample);
        // A success into a window already full of fast successes leaves it
        // exactly as it was, wherever the ring's head is: the healthy steady
        // state costs one load and no write to shared memory.
        if code == SUCCESS && self.totals.load(Ordering::Relaxed) == u64::from(self.size) {
            return;
        }
        // The ticket only has to be unique; nothing is published through it.
        let ticket = self.head.fetch_add(1, Ordering::Relaxed);
        let slot = &self.slots[self.slot_of(ticket)];
        // The owner of this ticket writing the value the slot already holds
        // is the same as writing it: skip the read-modify-write.
        if slot.load(Ordering::Relaxed) == code {
            return;
        }
        self.replace(slot, code);
    }

    #[inline]
    fn replace(&self, slot: &AtomicU8, code: u8) {
        let old = slot.swap(code, Ordering::AcqRel);
        if old != code {
            // Each swap old -> new adds delta(new) - delta(old) exactly once,
            // so the totals converge to the sum over the slots.
            self.totals.fetch_add(delta(code).wrapping_sub(delta(old)), Ordering::AcqRel);
        }
    }

    pub(crate) fn snapshot(&self) -> WindowSnapshot {
        let [calls, failures, slow] = unpack(self.totals.load(Ordering::Acquire));
        let calls = calls.clamp(0, i64::from(self.size)) as u64;
        WindowSnapshot { calls, failures: (failures.max(0) as u64).min(calls), slow: (slow.max(0) as u64).min(calls) }
    }

    pub(crate) fn reset(&self) {
        for slot in self.slots.iter() {
            self.replace(slot, 0);
        }
    }
}

/// The code of a fast success.
const SUCCESS: u8 = 1;

/// A slot's code: zero for empty, else 1 | failed << 1 | slow << 2.
#[inline]
const fn code(s: Sample) -> u8 {
    1 | (s.failed() as u8) << 1 | (s.slow() as u8) << 2
}

#[inline]
const fn delta(code: u8) -> u64 {
    if code == 0 {
        return 0;
    }
    1 | (((code >> 1) & 1) as u64) << FIELD_BITS | (((code >> 2) & 1) as u64) << (2 * FIELD_BITS)
}

fn unpack(mut v: u64) -> [i64; 3] {
    let mut out = [0i64; 3];
    for field in &mut out {
        let low = (v & FIELD_MASK) as i64;
        let f = if low >= 1 << (FIELD_BITS - 1) { low - (1 << FIELD_BITS) } else { low };
        *field = f;
        v = v.wrapping_sub(f as u64) >> FIELD_BITS;
    }
    out
}

/// The closed-state window of one breaker.
// The count ring is large because of its cache-line padding; boxing it would
// add a pointer chase to every call, and there is one window per breaker.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Window {
    Count(CountRing),
    Time(TimeWindow),
}

impl Window {
    /// True when recording needs the current time.
    pub(crate) fn needs_clock(&self) -> bool {
        matches!(self, Window::Time(_))
    }

    #[inline]
    pub(crate) fn record(&self, sample: Sample, now: impl FnOnce() -> Instant) {
        match self {
            Window::Count(ring) => ring.record(sample),
            Window::Time(window) => window.record(now(), sample),
        }
    }

    pub(crate) fn snapshot(&self, now: impl FnOnce() -> Instant) -> WindowSnapshot {
        match self {
            Window::Count(ring) => ring.snapshot(),
            Window::Time(window) => window.snapshot(now()),
        }
    }

    pub(crate) fn reset(&self) {
        match self {
            Window::Count(ring) => ring.reset(),
            Window::Time(window) => window.reset(),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fastmod_matches_modulo() {
        for size in [1u32, 2, 3, 7, 100, 101, 1000, 1 << 19] {
            let ring = CountRing::new(size);
            for t in [0u64, 1, 2, 99, 100, 101, 12345, u64::from(u32::MAX), u64::from(u32::MAX) - 1] {
                assert_eq!(ring.slot_of(t), ((t as u32) % size) as usize, "size {size} ticket {t}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn ring_matches_the_last_n(
            size in 1u32..20,
            failure_share in proptest::sample::select(vec![0.02, 0.2, 0.5]),
            seq in proptest::collection::vec((0.0f64..1.0, 0.0f64..1.0), 0..300),
        ) {
            // Rare failures exercise the all-success shortcut and the ring
            // leaving it; even shares exercise the ring.
            let seq: Vec<(bool, bool)> =
                seq.into_iter().map(|(f, s)| (f < failure_share, s < failure_share / 2.0)).collect();
            let ring = CountRing::new(size);
            let mut seen = Vec::new();
            for (failed, slow) in seq {
                let s = Sample::new(failed, slow);
                ring.record(s);
                seen.push(s);
                let tail = &seen[seen.len().saturating_sub(size as usize)..];
                let want = WindowSnapshot {
                    calls: tail.len() as u64,
                    failures: tail.iter().filter(|s| s.failed()).count() as u64,
                    slow: tail.iter().filter(|s| s.slow()).count() as u64,
                };
                proptest::prop_assert_eq!(ring.snapshot(), want);
            }
            ring.reset();
            proptest::prop_assert_eq!(ring.snapshot(), WindowSnapshot::default());
        }
    }
}
