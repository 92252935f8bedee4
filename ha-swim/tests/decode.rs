//! Whatever arrives, decoding never panics and allocates a bounded amount.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;

use ha_core::Instant;
use ha_swim::wire::{fuzz_decode, sample_datagram};
use ha_swim::{Config, Keyring, Swim};
use proptest::prelude::*;

/// Counts the bytes this thread has live and the peak since the last reset.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only bookkeeping is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.with(|l| {
            l.set(l.get() + layout.size() as isize);
            l.get()
        });
        PEAK.with(|p| p.set(p.get().max(live)));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.with(|l| l.set(l.get() - layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak bytes allocated by `f` on this thread, above what was live before.
fn peak_of(f: impl FnOnce()) -> isize {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    f();
    PEAK.with(Cell::get) - base
}

/// The bound: a small multiple of the input plus serde's capped
/// pre-allocation for sequences (1 MiB at most).
fn bound(len: usize) -> isize {
    (16 * len + (1 << 20) + 4096) as isize
}

fn mutate(mut p: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, byte, op) in edits {
        if p.is_empty() {
            p.push(byte);
            continue;
        }
        let i = at % p.len();
        match op % 4 {
            0 => p[i] = byte,
            1 => p[i] ^= 1 << (byte % 8),
            2 => p.truncate(i),
            _ => p.insert(i, byte),
        }
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..2048), stream in any::<bool>()) {
        let peak = peak_of(|| { let _ = fuzz_decode("", None, stream, &bytes); });
        prop_assert!(peak <= bound(bytes.len()), "{} bytes allocated for {} input", peak, bytes.len());
    }

    #[test]
    fn mutated_valid_packets_never_panic_and_stay_bounded(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..8),
        encrypted in any::<bool>(),
    ) {
        let ring = encrypted.then(|| Keyring::new([5; 32]));
        let p = mutate(sample_datagram("prod", ring.clone()), &edits);
        let peak = peak_of(|| { let _ = fuzz_decode("prod", ring, false, &p); });
        prop_assert!(peak <= bound(p.len()), "{} bytes allocated for {} input", peak, p.len());
    }

    #[test]
    fn the_core_drops_and_counts_what_it_cannot_decode(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)) {
        let now = Instant::now();
        let from: SocketAddr = "10.0.0.9:7946".parse().unwrap();
        let mut swim = Swim::new(Config { label: "prod".into(), ..Config::lan() }, "b", "10.0.0.2:7946".parse().unwrap(), now, 1).unwrap();
        let original = sample_datagram("prod", None);
        let p = mutate(original.clone(), &edits);
        swim.handle(now, from, &p);
        let c = swim.counters();
        prop_assert_eq!(c.packets_in, 1);
        if fuzz_decode("prod", None, false, &p).is_err() {
            prop_assert_eq!(c.dropped, 1);
        }
    }
}

#[test]
fn a_lying_length_prefix_allocates_nothing_large() {
    // A stream claiming a vector of 2^32 members, with nothing behind it.
    let mut p = vec![1u8, 0, 2, 0];
    p.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    let peak = peak_of(|| {
        let _ = fuzz_decode("", None, true, &p);
    });
    assert!(peak <= bound(p.len()));
    let valid = sample_datagram("", None);
    assert_eq!(fuzz_decode("", None, false, &valid), Ok(2));
}
