//! Row-wise LayerNorm forward and backward (`kernels/layernorm.cu`).
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

/// Row-wise LayerNorm forward and backward (`kernels/layernorm.cu`).
pub trait LayerNormOps {
    /// Row-wise LayerNorm over the last dimension; also writes the row mean
    /// and `1/√(var + eps)` for the backward.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f32,
        y: &mut Tensor,
        mean: &mut Tensor,
        rstd: &mut Tensor,
    ) -> Result<()>;

    /// Writes `dx`; accumulates `dgamma`, `dbeta`.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        gamma: &Tensor,
        mean: &Tensor,
        rstd: &Tensor,
        dx: &mut Tensor,
        dgamma: &mut Tensor,
        dbeta: &mut Tensor,
    ) -> Result<()>;
}
