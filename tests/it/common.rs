//! Helpers shared by the integration tests.
#![allow(dead_code)]

use lpaf::backend::{Backend, CpuBackend, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Deterministic random normal-ish values in [-scale, scale) (uniform; fine for kernels).
pub fn rand_vec(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Random 0/1 mask with the given keep probability.
pub fn rand_mask(seed: u64, n: usize, keep: f64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_bool(keep) as u8).collect()
}

/// ‖a − b‖ / ‖b‖ in f64.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let mut num = 0.0f64;
    let mut den = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        assert!(x.is_finite(), "non-finite value {x}");
        num += (*x as f64 - *y as f64).powi(2);
        den += (*y as f64).powi(2);
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

pub fn cpu() -> CpuBackend {
    CpuBackend::new()
}

pub fn host(be: &dyn Backend, t: &Tensor) -> Vec<f32> {
    be.to_f32(t).expect("to_f32")
}

/// The repository root: where cargo built the tests, or — for a test
/// executable carried to another machine (scripts/run-on-gpu.sh) — the
/// current directory when it holds the fixtures.
pub fn repo_root() -> std::path::PathBuf {
    let built = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if built.join("tests/fixtures").is_dir() {
        return built;
    }
    std::env::current_dir().expect("current directory")
}

/// A committed fixture under tests/fixtures.
pub fn fixture(name: &str) -> std::path::PathBuf {
    repo_root().join("tests/fixtures").join(name)
}
