//! LoSparse's sensitivity importance, alone or fused with AdamW on `S` (`kernels/losparse_importance.cu`; docs/algorithms.md §5).
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

/// One LoSparse importance update (docs/algorithms.md §3), applied after the
/// optimizer step.
/// `count` is this step's 1-based position in the window: the running mean
/// becomes `ipt = ((count−1)·ipt + |S⊙∇S|)/count` (for `count = 1` simply
/// `ipt = |S⊙∇S|`, so nothing needs resetting between windows). When `close`
/// is set (the window's last step), `Ī ← β1·Ī + (1−β1)·ipt` and, when `ubar`
/// is given, `Ū ← β2·Ū + (1−β2)·|ipt − Ī|` (with the new Ī).
///
/// Every step is one f32 operation in this order, with `1−β` computed in f32
/// once (no fused multiply-add): the CUDA kernels reproduce the CPU bit for bit.
/// `count = 0` is an error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImportanceStep {
    pub count: u32,
    pub close: bool,
    pub beta1: f32,
    pub beta2: f32,
}

/// LoSparse's sensitivity importance, alone or fused with AdamW on `S` (`kernels/losparse_importance.cu`; docs/algorithms.md §5).
pub trait LosparseImportanceOps: BackendCore + AdamWOps + ElementwiseOps {
    /// LoSparse's importance update in one pass (see [`ImportanceStep`]).
    fn losparse_importance(
        &self,
        s: &Tensor,
        grad_s: &Tensor,
        ipt: &mut Tensor,
        ibar: &mut Tensor,
        ubar: Option<&mut Tensor>,
        step: &ImportanceStep,
    ) -> Result<()>;

    /// AdamW on `S` followed by the importance update with the *updated* `S`
    /// (the reference order: step, then `|S⊙∇S|`). The gradient in the
    /// importance is the one AdamW used, `hp.grad_scale·grad_s` (the reference
    /// computes it from the clipped `p.grad`). The CUDA backend fuses both into
    /// one pass and matches the CPU bit for bit.
    #[allow(clippy::too_many_arguments)]
    fn adamw_with_importance(
        &self,
        s: &mut Tensor,
        grad_s: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        hp: &AdamWStep,
        ipt: &mut Tensor,
        ibar: &mut Tensor,
        ubar: Option<&mut Tensor>,
        step: &ImportanceStep,
    ) -> Result<()> {
        self.adamw(s, grad_s, m, v, hp)?;
        if hp.grad_scale == 1.0 {
            self.losparse_importance(s, grad_s, ipt, ibar, ubar, step)
        } else {
            let mut g = self.clone_tensor(grad_s)?;
            self.scale(&mut g, hp.grad_scale)?;
            self.losparse_importance(s, &g, ipt, ibar, ubar, step)
        }
    }
}
