//! Helpers shared by the operations' test bodies (`src/backend/ops/*/tests.rs`).

use lpaf::backend::prelude::*;
use lpaf::backend::*;

use crate::common::*;

/// The GPU backend, or return from the test (skipped) when there is none.
macro_rules! gpu_or_skip {
    ($name:expr) => {
        match lpaf::backend::gpu_for_test($name) {
            Some(g) => g,
            None => return,
        }
    };
}
pub(crate) use gpu_or_skip;

pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

pub fn rel64(a: &[f32], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(1e-300)).sqrt()
}

/// `C = A·B` in f64 (row-major, `A` m×k, `B` k×n).
pub fn mm(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for l in 0..k {
            let x = a[i * k + l];
            for j in 0..n {
                c[i * n + j] += x * b[l * n + j];
            }
        }
    }
    c
}

pub fn tr(a: &[f64], m: usize, n: usize) -> Vec<f64> {
    let mut t = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            t[j * m + i] = a[i * n + j];
        }
    }
    t
}

pub fn product(be: &dyn Backend, res: &WeightedSvdResult) -> Vec<f64> {
    let (o, r) = (res.u.shape()[0], res.u.shape()[1]);
    let n = res.v.shape()[1];
    mm(
        &f64s(&be.to_f32(&res.u).unwrap()),
        &f64s(&be.to_f32(&res.v).unwrap()),
        o,
        r,
        n,
    )
}

pub const SHAPES: [(usize, usize); 3] = [(768, 768), (3072, 768), (768, 3072)];

pub fn up(be: &dyn Backend, data: &[f32], shape: &[usize]) -> Tensor {
    be.from_f32(data, shape).unwrap()
}

pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

pub const TOKENS: usize = 4096;

pub const HIDDEN: usize = 768;

pub const INTER: usize = 3072;

pub const BATCH: usize = 32;

pub const HEADS: usize = 12;

pub const SEQ: usize = 128;

pub const F32_TOL: f64 = 1e-5;

pub fn put(be: &dyn Backend, data: &[f32], shape: &[usize]) -> Tensor {
    be.from_f32(data, shape).expect("from_f32")
}

/// A device tensor full of NaN (an output the operation must overwrite).
pub fn poisoned(g: &dyn Backend, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    put(g, &vec![f32::NAN; n], shape)
}

pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    let e = rel_err(got, want);
    assert!(e <= tol, "{what}: relative error {e:.3e} exceeds {tol:.0e}");
}

/// Bit-for-bit equality (NaN payloads included).
pub fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{what}: element {i} is {:e} ({:#010x}), expected {:e} ({:#010x})",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

pub fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Positive values in [lo, hi).
pub fn rand_pos(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    rand_vec(seed, n, 1.0)
        .into_iter()
        .map(|u| lo + (u + 1.0) * 0.5 * (hi - lo))
        .collect()
}

/// One test body run on every device present (candle's `test_device!`):
/// `test_device!(body)` makes `body::on_cpu`, and `body::gpu_on_cuda` on the
/// CUDA device (the emulated one in CI; it skips without a device, or fails
/// with `LPAF_REQUIRE_GPU=1`). A body is `fn body(be: &dyn Backend)`.
macro_rules! test_device {
    ($($body:ident),* $(,)?) => {
        $(
            mod $body {
                #[test]
                fn on_cpu() {
                    super::$body(&lpaf::backend::CpuBackend::new());
                }
                #[test]
                fn gpu_on_cuda() {
                    if let Some(g) = lpaf::backend::gpu_for_test(concat!(stringify!($body), " on CUDA")) {
                        super::$body(&*g);
                    }
                }
            }
        )*
    };
}
pub(crate) use test_device;

/// An F32 tensor on `be`.
pub fn tb(be: &dyn Backend, data: Vec<f32>, shape: &[usize]) -> Tensor {
    be.from_f32(&data, shape).unwrap()
}

/// A U8 tensor on `be`.
pub fn tu8b(be: &dyn Backend, data: Vec<u8>, shape: &[usize]) -> Tensor {
    be.from_u8(&data, shape).unwrap()
}
