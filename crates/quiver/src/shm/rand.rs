//! [`SplitMix64`]: the one pseudo-random generator of the crate and the
//! tools around it, seeded explicitly so every run can be repeated.
//!
//! It is small, fast and good enough for test data, fault injection and the
//! example's rows; it is not for secrets (random object IDs come from the
//! OS). It lives in `shm`, the bottom layer, only so that every layer may
//! use it; it does not talk to the OS.

/// Sebastiano Vigna's SplitMix64: a 64-bit counter stepped by the golden
/// ratio and passed through a finaliser. Every seed, zero included, gives a
/// full-period sequence, and equal seeds give equal sequences on every
/// platform (the example's data and its pinned checksums depend on it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose sequence is fixed by `seed`.
    pub const fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `[0, n)` (`0` when `n` is 0). The modulo bias is below
    /// `n / 2^64`: nothing for the small ranges it serves.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64().checked_rem(n).unwrap_or(0)
    }

    /// Uniform in `[0, 1)`, with 53 random bits.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_sequence() {
        // The first outputs for seed 1234567 of the reference C code
        // (prng.di.unimi.it/splitmix64.c).
        let mut g = SplitMix64::new(1234567);
        assert_eq!(g.next_u64(), 6457827717110365317);
        assert_eq!(g.next_u64(), 3203168211198807973);
        assert_eq!(g.next_u64(), 9817491932198370423);
    }

    #[test]
    fn below_stays_in_range() {
        let mut g = SplitMix64::new(0);
        assert!((0..1000).all(|_| g.below(7) < 7));
        assert_eq!(g.below(0), 0);
        assert!((0..1000).map(|_| g.unit_f64()).all(|x| (0.0..1.0).contains(&x)));
    }
}
