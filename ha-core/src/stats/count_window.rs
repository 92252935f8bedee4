//! The outcomes of the last `N` calls, lock-free.

use super::{Sample, WindowConfigError, WindowStats};
use crate::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use crate::sync::CachePadded;

/// Three signed 21-bit counters packed in one word (calls, failures, slow),
/// so one atomic add moves all three together.
const FIELD_BITS: u32 = 21;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;

/// A sliding window over the outcomes of the last `size` calls.
///
/// `record` claims the next slot of a ring with one `fetch_add`, swaps its
/// sample in, and, only when the sample it replaces differs, adjusts the
/// packed totals with one more `fetch_add`; no lock. Two shortcuts make the
/// healthy steady state cheap: a fast success into a window that holds only
/// fast successes changes nothing, so it costs one load and no write; and a
/// slot that already holds the sample is left alone. The totals are exact
/// once concurrent records finish; a reader racing a record that wrapped the
/// whole ring may see one call counted twice or not at all.
///
/// ```
/// use ha_core::stats::{CountWindow, Sample};
///
/// let w = CountWindow::new(4).unwrap();
/// for _ in 0..4 {
///     w.record(Sample::FAILURE);
/// }
/// w.record(Sample::SUCCESS); // pushes out the oldest failure
/// let s = w.snapshot();
/// assert_eq!((s.calls, s.failures), (4, 3));
/// ```
#[derive(Debug)]
pub struct CountWindow {
    head: CachePadded<AtomicU64>,
    totals: CachePadded<AtomicU64>,
    slots: Box<[AtomicU8]>,
    size: u32,
    /// `u64::MAX / size + 1`, for Lemire's fastmod.
    magic: u64,
}

/// The code of a fast success.
const SUCCESS: u8 = Sample::SUCCESS.code();

impl CountWindow {
    /// The largest window: the packed counters must never reach their sign bit.
    pub const MAX_SIZE: usize = 1 << 19;

    /// A window over the last `size` calls.
    pub fn new(size: usize) -> Result<Self, WindowConfigError> {
        if size == 0 {
            return Err(WindowConfigError::Empty);
        }
        if size > Self::MAX_SIZE {
            return Err(WindowConfigError::TooLarge { requested: size, max: Self::MAX_SIZE });
        }
        let size32 = size as u32;
        Ok(CountWindow {
            head: CachePadded(AtomicU64::new(0)),
            totals: CachePadded(AtomicU64::new(0)),
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            size: size32,
            magic: (u64::MAX / u64::from(size32)).wrapping_add(1),
        })
    }

    /// The number of calls the window holds when full.
    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// `ticket % size` for the low 32 bits of the ticket, with two multiplies
    /// instead of a division. The ticket's wrap every 2^32 calls moves the
    /// write position once; the totals stay exactly the sum over the slots.
    #[inline]
    fn slot_of(&self, ticket: u64) -> usize {
        let low = self.magic.wrapping_mul(u64::from(ticket as u32));
        ((u128::from(low) * u128::from(self.size)) >> 64) as usize
    }

    /// Records one call's outcome, pushing out the oldest when full.
    #[inline]
    pub fn record(&self, sample: Sample) {
        let code = sample.code();
        // A window full of fast successes stays exactly as it is, wherever the
        // ring's head points, so the healthy steady state writes nothing.
        if code == SUCCESS && self.totals.load(Ordering::Relaxed) == u64::from(self.size) {
            return;
        }
        // The ring position only has to be unique per record; no other data
        // is published through it, so Relaxed suffices.
        let ticket = self.head.fetch_add(1, Ordering::Relaxed);
        let slot = &self.slots[self.slot_of(ticket)];
        // Writing the value the slot already holds changes nothing.
        if slot.load(Ordering::Relaxed) == code {
            return;
        }
        self.replace(slot, code);
    }

    #[inline]
    fn replace(&self, slot: &AtomicU8, code: u8) {
        let old = slot.swap(code, Ordering::AcqRel);
        if old != code {
            // Every swap old -> new contributes delta(new) - delta(old) exactly
            // once, so the totals always converge to the sum over the slots.
            let d = delta(code).wrapping_sub(delta(old));
            self.totals.fetch_add(d, Ordering::AcqRel);
        }
    }

    /// Forgets every recorded call.
    pub fn reset(&self) {
        for slot in self.slots.iter() {
            self.replace(slot, 0);
        }
    }

    /// The calls, failures and slow calls in the window.
    pub fn snapshot(&self) -> WindowStats {
        let [calls, failures, slow] = unpack(self.totals.load(Ordering::Acquire));
        let calls = calls.clamp(0, i64::from(self.size)) as u64;
        WindowStats { calls, failures: (failures.max(0) as u64).min(calls), slow: (slow.max(0) as u64).min(calls) }
    }
}

/// The packed counter contribution of one slot's code.
const fn delta(code: u8) -> u64 {
    if code == 0 {
        return 0;
    }
    let failed = ((code >> 1) & 1) as u64;
    let slow = ((code >> 2) & 1) as u64;
    1 | failed << FIELD_BITS | slow << (2 * FIELD_BITS)
}

/// Splits the packed word into its three signed fields.
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn model(window: &[Sample], size: usize) -> WindowStats {
        let tail = &window[window.len().saturating_sub(size)..];
        WindowStats {
            calls: tail.len() as u64,
            failures: tail.iter().filter(|s| s.failed()).count() as u64,
            slow: tail.iter().filter(|s| s.slow()).count() as u64,
        }
    }

    #[test]
    fn rejects_impossible_sizes() {
        assert_eq!(CountWindow::new(0).unwrap_err(), WindowConfigError::Empty);
        assert!(matches!(CountWindow::new(CountWindow::MAX_SIZE + 1), Err(WindowConfigError::TooLarge { .. })));
        assert_eq!(CountWindow::new(CountWindow::MAX_SIZE).unwrap().size(), CountWindow::MAX_SIZE);
    }

    #[test]
    fn unpack_inverts_signed_sums() {
        for (a, b, c) in [(0i64, 0i64, 0i64), (5, -1, 3), (-2, 7, -9), (1000, 999, 0), (-1, -1, -1)] {
            let packed = (a as u64)
                .wrapping_add((b as u64).wrapping_shl(FIELD_BITS))
                .wrapping_add((c as u64).wrapping_shl(2 * FIELD_BITS));
            assert_eq!(unpack(packed), [a, b, c]);
        }
    }

    #[test]
    fn fastmod_matches_modulo() {
        for size in [1usize, 2, 3, 7, 100, 101, 1000, CountWindow::MAX_SIZE] {
            let w = CountWindow::new(size).unwrap();
            for t in [0u64, 1, 2, 99, 100, 101, 12345, u64::from(u32::MAX), u64::from(u32::MAX) - 1] {
                assert_eq!(w.slot_of(t), ((t as u32) % size as u32) as usize, "size {size} ticket {t}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn matches_a_model_of_the_last_n(
            size in 1usize..20,
            failure_share in proptest::sample::select(vec![0.02, 0.2, 0.5]),
            seq in proptest::collection::vec((0.0f64..1.0, 0.0f64..1.0), 0..300),
        ) {
            // Rare failures exercise the all-success shortcut and leaving it;
            // even shares exercise the ring.
            let w = CountWindow::new(size).unwrap();
            let mut seen = Vec::new();
            for (f, s) in seq {
                let (failed, slow) = (f < failure_share, s < failure_share / 2.0);
                let s = Sample::new(failed, slow);
                w.record(s);
                seen.push(s);
                proptest::prop_assert_eq!(w.snapshot(), model(&seen, size));
            }
            w.reset();
            proptest::prop_assert_eq!(w.snapshot(), WindowStats::default());
        }
    }
}
