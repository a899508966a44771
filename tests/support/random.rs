//! Reproducible randomness: a small generator for hand-rolled loops, and the seeds and knobs of
//! the proptest runs, read from the environment.

use proptest::test_runner::{RngAlgorithm, TestRng};

/// xorshift64: fixed seed, same sequence on every machine. Not for anything but tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The number in the environment variable `name`, or `default` when it is not set. Panics on a
/// value that is not a number (a typo would otherwise silently run the default).
pub fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// A proptest generator seeded from `phrase` with `seed` (an environment knob) mixed in: the
/// same cases on every run unless the seed changes.
pub fn seeded_rng(mut phrase: [u8; 32], seed: u64) -> TestRng {
    for (b, s) in phrase.iter_mut().zip(seed.to_le_bytes()) {
        *b ^= s;
    }
    TestRng::from_seed(RngAlgorithm::ChaCha, &phrase)
}
