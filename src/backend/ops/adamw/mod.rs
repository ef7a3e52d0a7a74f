//! The AdamW update, in `torch.optim.AdamW`'s order (`kernels/adamw.cu`).
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

/// Hyper-parameters of one AdamW step, as `torch.optim.AdamW` computes it:
/// `g = grad·grad_scale; m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²;
/// p ← p·(1 − lr·wd); p ← p − lr/bc1 · m / (√v/√bc2 + eps)`
/// with `bc1 = 1 − β1^t`, `bc2 = 1 − β2^t`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// 1-based step count `t`.
    pub step: u64,
    /// Multiplies the gradient first (gradient clipping / accumulation averaging).
    pub grad_scale: f32,
}

impl AdamWStep {
    pub fn bias_corrections(&self) -> (f32, f32) {
        let t = self.step as i32;
        (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t))
    }
}

/// The AdamW update, in `torch.optim.AdamW`'s order (`kernels/adamw.cu`).
pub trait AdamWOps {
    /// One AdamW update of `p` in place (see [`AdamWStep`]).
    fn adamw(
        &self,
        p: &mut Tensor,
        g: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        hp: &AdamWStep,
    ) -> Result<()>;

    /// [`AdamWOps::adamw`] for every parameter `params` visits, each with its
    /// own hyper-parameters; bit-identical to one `adamw` call per parameter
    /// in visit order. On the GPU: one launch for them all, over a table of
    /// their tensors and scalars uploaded with it.
    fn adamw_many(&self, params: &mut AdamWWalk<'_>) -> Result<()>;
}

/// One parameter of [`AdamWOps::adamw_many`]: its tensors and hyper-parameters.
pub struct AdamWSlot<'a> {
    pub p: &'a mut Tensor,
    pub g: &'a Tensor,
    pub m: &'a mut Tensor,
    pub v: &'a mut Tensor,
    pub hp: AdamWStep,
}

/// Visits the parameters of a multi-tensor AdamW step, in a fixed order.
pub type AdamWWalk<'a> = dyn FnMut(&mut dyn FnMut(AdamWSlot<'_>) -> Result<()>) -> Result<()> + 'a;

/// The f32 scalars of one step exactly as the CPU computes them: (grad_scale,
/// decay, 1 − β1, β2, 1 − β2, eps, step_size, √bc2), the order of the
/// kernel's `AdamWArgs`.
pub(crate) fn adamw_scalars(hp: &AdamWStep) -> [f32; 8] {
    let (bc1, bc2) = hp.bias_corrections();
    [
        hp.grad_scale,
        1.0 - hp.lr * hp.weight_decay,
        1.0 - hp.beta1,
        hp.beta2,
        1.0 - hp.beta2,
        hp.eps,
        hp.lr / bc1,
        bc2.sqrt(),
    ]
}
