//! A 64-bit hash that is the same in every build, on every platform.
//!
//! `std`'s hashers promise stability only within one build, and the `Hash`
//! impls of std types (socket addresses, slices) have changed between
//! releases. Where a hash leaves the process, as the ring-hash positions
//! that decide which endpoint a key goes to across a fleet of clients, it
//! must come from fixed bytes through a fixed function: [`stable_hash`]
//! (FNV-1a, then SplitMix64's finaliser so that nearby inputs land far
//! apart), or [`StableHasher`], which writes integers little-endian at a
//! fixed width.
//!
//! ```
//! use std::hash::Hasher;
//! use ha_core::hash::{stable_hash, StableHasher};
//!
//! // A key's canonical bytes: the same position for every client build.
//! let user = stable_hash(b"user-42");
//! let mut h = StableHasher::new();
//! h.write(b"user-42");
//! assert_eq!(h.finish(), user);
//! ```

use std::hash::Hasher;

use crate::rng::mix64;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The stable hash of `bytes`.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h = StableHasher::new();
    h.write(bytes);
    h.finish()
}

/// A [`Hasher`] whose output depends only on the bytes written: integers
/// are written little-endian, `usize` and `isize` as 64 bits.
#[derive(Debug, Clone)]
pub struct StableHasher {
    state: u64,
}

impl StableHasher {
    /// An empty hasher.
    pub fn new() -> Self {
        StableHasher { state: FNV_OFFSET }
    }
}

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher::new()
    }
}

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        mix64(self.state)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.state = (self.state ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.write(&n.to_le_bytes());
    }

    fn write_u32(&mut self, n: u32) {
        self.write(&n.to_le_bytes());
    }

    fn write_u64(&mut self, n: u64) {
        self.write(&n.to_le_bytes());
    }

    fn write_u128(&mut self, n: u128) {
        self.write(&n.to_le_bytes());
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_i16(&mut self, n: i16) {
        self.write_u16(n as u16);
    }

    fn write_i32(&mut self, n: i32) {
        self.write_u32(n as u32);
    }

    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }

    fn write_i128(&mut self, n: i128) {
        self.write_u128(n as u128);
    }

    fn write_isize(&mut self, n: isize) {
        self.write_u64(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_reference_vectors() {
        // From the FNV reference test suite, before the finaliser.
        for (input, fnv) in
            [(&b""[..], 0xcbf2_9ce4_8422_2325u64), (b"a", 0xaf63_dc4c_8601_ec8c), (b"foobar", 0x8594_4171_f739_67e8)]
        {
            let mut h = StableHasher::new();
            h.write(input);
            assert_eq!(h.state, fnv, "{input:?}");
            assert_eq!(h.finish(), mix64(fnv));
        }
    }

    #[test]
    fn pinned_outputs() {
        // These values are a promise: a change moves keys between endpoints
        // for every client of a ring-hash balancer.
        assert_eq!(stable_hash(b"10.0.0.1:80"), PIN_ADDR);
        let mut h = StableHasher::new();
        h.write_u64(7);
        h.write_usize(3);
        h.write_u32(1);
        assert_eq!(h.finish(), PIN_INTS);
    }

    const PIN_ADDR: u64 = 0xdbbc_907f_2153_1a73;
    const PIN_INTS: u64 = 0x980f_7cb1_72fd_eb6c;
}
