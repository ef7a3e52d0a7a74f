//! Attention's head permutations and masked softmax, forward and backward (`kernels/attention.cu`).
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

/// Attention's head permutations and masked softmax, forward and backward (`kernels/attention.cu`).
pub trait AttentionOps {
    /// `[B·S, H·D] → [B, H, S, D]`.
    fn split_heads(
        &self,
        x: &Tensor,
        out: &mut Tensor,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<()>;

    /// `[B, H, S, D] → [B·S, H·D]`.
    fn merge_heads(
        &self,
        x: &Tensor,
        out: &mut Tensor,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<()>;

    /// In place on `[B, H, S, S]` scores: `p = softmax(scale·s)` over keys,
    /// with keys whose `key_mask[b, j]` (U8 `[B, S]`) is 0 given probability 0.
    fn attention_softmax(
        &self,
        scores: &mut Tensor,
        key_mask: &Tensor,
        heads: usize,
        scale: f32,
    ) -> Result<()>;

    /// In place: `dprobs ← scale · p ⊙ (dp − Σ_j p_j·dp_j)` per row (the
    /// gradient with respect to the unscaled scores).
    fn softmax_backward(&self, probs: &Tensor, dprobs: &mut Tensor, scale: f32) -> Result<()>;
}
