//! Benchmarks behind `lpaf bench`: [`train`] (step times per method and
//! precision with model-FLOPs utilisation) and [`kernels`] (the compression
//! kernels of docs/algorithms.md §6 against the device's measured ceilings).

pub mod kernels;
pub mod train;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seeded uniform values in [-1, 1) (benchmarks never time zeros).
pub fn random_values(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}
