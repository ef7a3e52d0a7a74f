//! Movement pruning's score accumulation and the soft-movement sigmoid mask (`kernels/movement.cu`; docs/algorithms.md §2).
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

/// How movement-pruning scores are updated (docs/algorithms.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScoreRule {
    /// `dSc += G⊙W`: the scores' gradient, for an AdamW optimizer of scores.
    #[default]
    Adam,
    /// `Sc -= G⊙W`: the paper's movement, accumulated directly.
    Accumulate,
}

/// Movement pruning's score accumulation and the soft-movement sigmoid mask (`kernels/movement.cu`; docs/algorithms.md §2).
pub trait MovementOps {
    /// Movement pruning's straight-through backward in one pass over
    /// `W`, `G = ∂L/∂W'` and the U8 mask: `grad_w += G⊙M`, and
    /// `scores += G⊙W` ([`ScoreRule::Adam`]: `scores` is `∂L/∂Sc`) or
    /// `scores −= G⊙W` ([`ScoreRule::Accumulate`]: `scores` is `Sc`).
    fn movement_grads(
        &self,
        w: &Tensor,
        grad_wprime: &Tensor,
        mask: &Tensor,
        grad_w: &mut Tensor,
        scores: &mut Tensor,
        rule: ScoreRule,
    ) -> Result<()>;

    /// Soft movement (docs/algorithms.md §2, an option): `mask = σ(Sc) > τ`, and if
    /// `l1_grad_coef` is not 0, `dscores += coef·σ(Sc)·(1−σ(Sc))` (the
    /// gradient of `λ·mean σ(Sc)` when `coef = λ/numel`). Returns entries kept.
    /// The mask is computed as `(Sc as f64) > ln(τ/(1−τ))` (the logit computed
    /// once in f64), so it does not depend on how `exp` rounds and is the same
    /// on every backend; `τ` must lie in (0, 1).
    fn sigmoid_mask(
        &self,
        scores: &Tensor,
        tau: f32,
        mask: &mut Tensor,
        dscores: Option<&mut Tensor>,
        l1_grad_coef: f32,
    ) -> Result<usize>;
}
