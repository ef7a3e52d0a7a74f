//! Reductions in a fixed order: column sums and the sum of squares (`kernels/reduce.cu`).
//!
//! In this folder: the contract (the trait below, its parameter types and
//! checks), the CPU reference (`cpu.rs`), the CUDA launcher (`cuda.rs`), the
//! test bodies (`tests.rs`, run on every device present) and the benchmark
//! workloads (`bench.rs`).

pub(crate) mod bench;
mod cpu;
mod cuda;

use crate::backend::*;
use crate::error::Result;

/// Reductions in a fixed order: column sums and the sum of squares (`kernels/reduce.cu`).
pub trait ReduceOps {
    /// `out[c] (+)= Σ_r x[r, c]` for `x` viewed as `rows × out.numel()`.
    fn col_sum(&self, x: &Tensor, out: &mut Tensor, accumulate: bool) -> Result<()>;

    /// `Σ x²` in a fixed order (f64 result), for gradient norms and losses.
    fn sum_squares(&self, x: &Tensor) -> Result<f64>;
}
