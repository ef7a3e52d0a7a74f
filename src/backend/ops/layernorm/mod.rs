//! Row-wise LayerNorm forward and backward (`kernels/layernorm.cu`).
//!
//! The contract is the trait below; `cpu.rs` is the reference, `cuda.rs` the launcher.

mod cpu;
mod cuda;

use crate::backend::*;
use crate::error::Result;

/// Row-wise LayerNorm forward and backward (`kernels/layernorm.cu`).
#[allow(clippy::wrong_self_convention)]
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
