//! Operations over all of a model's gradients at once (`kernels/grads.cu`):
//! the global L2 norm and the clip factor of `torch.nn.utils.clip_grad_norm_`,
//! written to a device tensor so that a training step never waits for the
//! host, the gradients scaled by it, and the gradients zeroed. On the GPU each
//! is one launch (the norm two) for the whole model, over one table of the
//! gradients uploaded once.
//!
//! In this folder: the contract (the trait below), the CPU reference
//! (`cpu.rs`), the CUDA launcher (`cuda.rs`), the test bodies (`tests.rs`,
//! run on every device present) and the benchmark workloads (`bench.rs`).

pub(crate) mod bench;
mod cpu;
mod cuda;

use crate::backend::*;
use crate::error::Result;

/// Visits a fixed sequence of tensors: calls its argument once per tensor,
/// always in the same order (a model's trainable gradients, say).
pub type TensorWalk<'a> = dyn FnMut(&mut dyn FnMut(&mut Tensor) -> Result<()>) -> Result<()> + 'a;

/// The clip factor of `torch.nn.utils.clip_grad_norm_` for a global norm:
/// `min(1, max_norm / (norm + 1e-6))` in f64, 1 when `max_norm ≤ 0` (and for
/// a NaN norm, as `f64::min` gives). The kernel computes the same.
pub fn clip_factor(norm: f64, max_norm: f32) -> f32 {
    if max_norm <= 0.0 {
        return 1.0;
    }
    (max_norm as f64 / (norm + 1e-6)).min(1.0) as f32
}

/// Norm, clipping and zeroing over every tensor a walk visits.
pub trait GradsOps {
    /// `stats = [‖g‖₂, clip_factor(‖g‖₂, max_norm)]` (F32, 2 elements) over
    /// every tensor `grads` visits: per tensor the f64 sum of squares of
    /// [`ReduceOps::sum_squares`], added in visit order. Nothing is read back.
    fn grad_norm_clip(
        &self,
        grads: &mut TensorWalk<'_>,
        max_norm: f32,
        stats: &mut Tensor,
    ) -> Result<()>;

    /// `g *= stats[1]` for every tensor `grads` visits (nothing when the
    /// factor is 1), with `stats` as [`GradsOps::grad_norm_clip`] wrote it.
    fn scale_by_clip_factor(&self, grads: &mut TensorWalk<'_>, stats: &Tensor) -> Result<()>;

    /// Every F32 tensor `grads` visits set to zero.
    fn zero_all(&self, grads: &mut TensorWalk<'_>) -> Result<()>;
}

/// `stats` is an F32 tensor of two elements.
pub(crate) fn check_stats(op: &str, stats: &Tensor) -> Result<()> {
    if stats.dtype() != DType::F32 {
        return Err(Error::shape(
            op,
            format!("stats is {:?}, expected F32", stats.dtype()),
        ));
    }
    check_len(op, "stats", stats.numel(), 2)
}
