//! A small, fast, seedable pseudo-random generator for jitter and sampling.
//!
//! Load balancers and backoff need a few random bits per call; a thread-local
//! or locked generator costs more than the decision itself. [`FastRng`] is a
//! `wyrand` generator owned by whoever uses it (each service clone keeps its
//! own), so drawing a number is a multiply and an add. It is not
//! cryptographically secure and must not be used where that matters.
//!
//! ```
//! use ha_core::rng::FastRng;
//!
//! let mut rng = FastRng::new(7);
//! let x = rng.below(10);
//! assert!(x < 10);
//! let f = rng.unit_f64();
//! assert!((0.0..1.0).contains(&f));
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

/// 2^64 divided by the golden ratio, odd: adding it to a counter visits
/// every 64-bit value once before repeating, and multiplying by it spreads
/// neighbouring seeds (0, 1, 2, ...) far apart. The one place the constant
/// lives, for every seed-mixing step in `ha`.
pub const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's finaliser: a bijection of `u64` whose every output bit
/// depends on every input bit, to turn a counter or a pair of seeds into
/// independent-looking values.
///
/// ```
/// use ha_core::rng::{mix64, GOLDEN_GAMMA};
///
/// // SplitMix64's first output for seed 0 (the reference implementation's).
/// assert_eq!(mix64(GOLDEN_GAMMA), 0xe220_a839_7b1d_cdaf);
/// ```
#[inline]
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A `wyrand` pseudo-random generator.
#[derive(Debug, Clone)]
pub struct FastRng {
    state: u64,
}

impl FastRng {
    /// A generator with a fixed seed: the same seed gives the same sequence.
    pub fn new(seed: u64) -> Self {
        FastRng { state: seed }
    }

    /// A generator seeded from process-wide entropy (the address-space
    /// randomised hasher keys) and a counter, distinct for every call.
    pub fn from_entropy() -> Self {
        use std::hash::{BuildHasher, Hasher};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        FastRng::new(h.finish())
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// A number uniformly drawn from `0..n` (`0` when `n` is `0`).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        // Lemire's multiply-shift: the bias is below 2^-64 * n, negligible here.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A float uniformly drawn from `[0, 1)`.
    #[inline]
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal draw (Box-Muller). The pair's second value is
    /// discarded so every draw consumes exactly two steps of the generator,
    /// which keeps seeded simulations replayable draw for draw.
    pub fn standard_normal(&mut self) -> f64 {
        // 1 - u is in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.unit_f64();
        let u2 = self.unit_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Where the clones of a service draw their seeds from.
///
/// Each clone of a balancer or a retry layer keeps its own [`FastRng`], so
/// clones that act together do not draw in step. A service seeded by its
/// user takes its clones' seeds from a counter it shares with them: the
/// same seed and the same calls give the same draws, run after run. An
/// unseeded one, as in production, takes them from a generator of the
/// cloning thread's own, and so touches no counter other threads write:
/// a stack cloned per request, as its docs show, would otherwise bounce
/// that counter's cache line between the cores on every request.
///
/// ```
/// use ha_core::rng::CloneSeeds;
///
/// let a = CloneSeeds::seeded(Some(7));
/// let b = CloneSeeds::seeded(Some(7));
/// assert_eq!(a.next(), b.next());
/// let free = CloneSeeds::seeded(None);
/// assert_ne!(free.next(), free.next());
/// ```
#[derive(Debug)]
pub enum CloneSeeds {
    /// From this counter, stepped by [`GOLDEN_GAMMA`]: reproducible.
    Counter(AtomicU64),
    /// From the cloning thread's generator.
    PerThread,
}

impl CloneSeeds {
    /// A counter starting from `seed` when there is one (reproducible
    /// seeds), else the cloning threads' generators.
    pub fn seeded(seed: Option<u64>) -> Self {
        seed.map_or(CloneSeeds::PerThread, |s| CloneSeeds::Counter(AtomicU64::new(s)))
    }
    /// A fresh source of the same kind, for a clone's own clones: a counter
    /// starting from `seed`, or the threads' generators.
    pub fn fork(&self, seed: u64) -> Self {
        match self {
            CloneSeeds::Counter(_) => CloneSeeds::seeded(Some(seed)),
            CloneSeeds::PerThread => CloneSeeds::PerThread,
        }
    }

    /// The next seed.
    #[inline]
    pub fn next(&self) -> u64 {
        match self {
            CloneSeeds::Counter(c) => c.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed),
            CloneSeeds::PerThread => thread_seed(),
        }
    }
}

/// The next draw of this thread's generator, seeded from entropy on first use.
fn thread_seed() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static THREAD_RNG: Cell<Option<FastRng>> = const { Cell::new(None) };
    }
    THREAD_RNG.with(|cell| {
        let mut rng = cell.take().unwrap_or_else(FastRng::from_entropy);
        let seed = rng.next_u64();
        cell.set(Some(rng));
        seed
    })
}

impl Default for FastRng {
    fn default() -> Self {
        FastRng::from_entropy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_different_seeds_differ() {
        let mut a = FastRng::new(1);
        let mut b = FastRng::new(1);
        let mut c = FastRng::new(2);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn counted_clone_seeds_repeat_and_per_thread_ones_do_not() {
        let (a, b) = (CloneSeeds::seeded(Some(5)), CloneSeeds::seeded(Some(5)));
        let xs: Vec<u64> = (0..4).map(|_| a.next()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next()).collect();
        assert_eq!(xs, ys);
        assert_eq!(xs[1].wrapping_sub(xs[0]), GOLDEN_GAMMA);
        let free = CloneSeeds::seeded(None);
        let zs: std::collections::HashSet<u64> = (0..64).map(|_| free.next()).collect();
        assert_eq!(zs.len(), 64);
        let other = std::thread::spawn(move || free.next()).join().expect("thread");
        assert!(!zs.contains(&other));
    }

    #[test]
    fn below_is_in_range_and_covers_it() {
        let mut r = FastRng::new(3);
        let mut seen = [0u32; 5];
        for _ in 0..10_000 {
            seen[r.below(5) as usize] += 1;
        }
        for count in seen {
            assert!((1_700..2_300).contains(&count), "{seen:?}");
        }
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn standard_normal_has_mean_0_and_sd_1() {
        let mut rng = FastRng::new(3);
        let v: Vec<f64> = (0..200_000).map(|_| rng.standard_normal()).collect();
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64).sqrt();
        assert!(m.abs() < 0.01, "{m}");
        assert!((sd - 1.0).abs() < 0.01, "{sd}");
        // About 2.28% beyond +2 sigma.
        let beyond = v.iter().filter(|&&x| x > 2.0).count() as f64 / v.len() as f64;
        assert!((beyond - 0.0228).abs() < 0.002, "{beyond}");
    }

    #[test]
    fn entropy_generators_differ() {
        assert_ne!(FastRng::from_entropy().next_u64(), FastRng::from_entropy().next_u64());
    }
}
