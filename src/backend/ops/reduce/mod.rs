//! Reductions in a fixed order: column sums and the sum of squares (`kernels/reduce.cu`).
//!
//! The contract is the trait below; `cpu.rs` is the reference, `cuda.rs` the launcher.

mod cpu;
mod cuda;

use crate::backend::*;
use crate::error::Result;

/// Reductions in a fixed order: column sums and the sum of squares (`kernels/reduce.cu`).
#[allow(clippy::wrong_self_convention)]
pub trait ReduceOps {
    /// `out[c] (+)= Σ_r x[r, c]` for `x` viewed as `rows × out.numel()`.
    fn col_sum(&self, x: &Tensor, out: &mut Tensor, accumulate: bool) -> Result<()>;

    /// `Σ x²` in a fixed order (f64 result), for gradient norms and losses.
    fn sum_squares(&self, x: &Tensor) -> Result<f64>;
}
