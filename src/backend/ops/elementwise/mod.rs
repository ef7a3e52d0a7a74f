//! Elementwise maps, masks, bias, activations, dropout and strided row copies (`kernels/elementwise.cu`).
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

/// A strided block copy: `rows × cols` elements from `src` to `dst`, row `r`
/// starting at `src_offset + r·src_stride` and `dst_offset + r·dst_stride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowCopy {
    pub rows: usize,
    pub cols: usize,
    pub src_offset: usize,
    pub src_stride: usize,
    pub dst_offset: usize,
    pub dst_stride: usize,
    /// `dst += src` instead of `dst = src`.
    pub accumulate: bool,
}

/// Elementwise maps, masks, bias, activations, dropout and strided row copies (`kernels/elementwise.cu`).
pub trait ElementwiseOps {
    /// `y = alpha·x + beta·y`.
    fn axpby(&self, alpha: f32, x: &Tensor, beta: f32, y: &mut Tensor) -> Result<()>;

    /// `t *= alpha`.
    fn scale(&self, t: &mut Tensor, alpha: f32) -> Result<()>;

    /// `out = a ⊙ b` elementwise.
    fn mul(&self, a: &Tensor, b: &Tensor, out: &mut Tensor) -> Result<()>;

    /// `out = x ⊙ mask` (mask U8, 0 or 1).
    fn mul_mask(&self, x: &Tensor, mask: &Tensor, out: &mut Tensor) -> Result<()>;

    /// `out += mask ⊙ x` (a select: entries where the U8 mask is 0 keep
    /// `out`); no mask: `out += x`.
    fn masked_add(&self, x: &Tensor, mask: Option<&Tensor>, out: &mut Tensor) -> Result<()>;

    /// `y[r, c] += bias[c]` for `y` viewed as `rows × bias.numel()`.
    fn add_row_bias(&self, y: &mut Tensor, bias: &Tensor) -> Result<()>;

    /// Exact (erf) GELU.
    fn gelu(&self, x: &Tensor, y: &mut Tensor) -> Result<()>;

    /// `dx = dy · gelu'(x)`.
    fn gelu_backward(&self, x: &Tensor, dy: &Tensor, dx: &mut Tensor) -> Result<()>;

    fn tanh(&self, x: &Tensor, y: &mut Tensor) -> Result<()>;

    /// `dx = dy · (1 − y²)` with `y = tanh(x)`.
    fn tanh_backward(&self, y: &Tensor, dy: &Tensor, dx: &mut Tensor) -> Result<()>;

    /// Inverted dropout: `y_i = x_i · s` with `s = 1/(1−p)` (computed once) if `u_i ≥ p` else 0, where
    /// `u_i = philox::uniform(seed, stream, i)`. Applying it to `dy` with the
    /// same `(seed, stream)` is its backward. `p = 0` copies.
    fn dropout(&self, x: &Tensor, y: &mut Tensor, p: f32, seed: u64, stream: u64) -> Result<()>;

    fn copy_rows(&self, src: &Tensor, dst: &mut Tensor, spec: &RowCopy) -> Result<()>;
}
