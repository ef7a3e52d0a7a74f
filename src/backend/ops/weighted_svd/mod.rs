//! The sparsity-aware (weighted) SVD of docs/algorithms.md §4.2 (`kernels/weighted_svd.cu`).
//!
//! In this folder: the contract (the trait below, its parameter types and
//! checks), the CPU reference (`cpu.rs`), the CUDA launcher (`cuda.rs`), the
//! test bodies (`tests.rs`, run on every device present) and the benchmark
//! workloads (`bench.rs`).

pub(crate) mod batched;
pub(crate) mod bench;
pub(crate) mod cpu;
mod cuda;

use crate::backend::*;
use crate::error::{Error, Result};

/// A weighted low-rank problem of docs/algorithms.md §4.2: minimise
/// `Σ Ω_ij·(W_ij − (U·V)_ij)²` with `Ω = 1` where `mask` is set and `omega`
/// elsewhere (for ω ∈ {0, 1} this is `‖Ω⊙(W − U·V)‖²_F`).
pub struct WeightedSvdProblem<'a> {
    /// The (pruned) matrix `W_s`, `out × in`, F32.
    pub w: &'a Tensor,
    /// U8 `out × in`: 1 on kept entries.
    pub mask: &'a Tensor,
    pub omega: f32,
    pub rank: usize,
}

/// Options of the EM solver (docs/algorithms.md §4.2).
///
/// The algorithm, per problem (both backends; they differ only in rounding):
/// - random start `P₀` (`in × r`): entry `j` (row-major) is `2u − 1` with
///   `u = philox::uniform(seed, problem index in the call, j)` ([`svd_random_start`]);
/// - `init_power_iters` sweeps on `X₀ = W_s` (at least one): the first uses
///   `P = P₀`, later ones `P = orth(Bᵀ)`; a sweep is `Y = X·P`, `Q = orth(Y)`,
///   `B = Qᵀ·X`, and the current approximation is `A = Q·B`;
/// - EM step `k = 1, 2, …, max_steps`: `X_k = Ω⊙W_s + (1−Ω)⊙A_{k−1}`, then
///   `power_iters` sweeps (at least one) on `X_k`, each starting from
///   `P = orth(Bᵀ)` (the row space of the previous approximation). This warm
///   start makes `‖X_k − A_k‖ ≤ ‖X_k − A_{k−1}‖`, hence the weighted objective
///   never increases (in exact arithmetic);
/// - the objective `Σ Ω_ij (W − A)²_ij` (f64) of `A_0, A_1, …` is recorded; the
///   iteration stops after step `k` when `|f_{k−1} − f_k| < rel_tol·f_{k−1}`
///   ([`em_converged`]) or at `max_steps`;
/// - the factors come from the SVD of `B = U_b Σ V_bᵀ`: `U = Q·U_b·√Σ`,
///   `V = √Σ·V_bᵀ`, singular values descending.
///
/// The CPU computes in f64 with Householder QR for `orth`; the CUDA backend in
/// f32 with CholeskyQR2 (see `batched.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightedSvdOptions {
    /// At most this many EM steps (K).
    pub max_steps: usize,
    /// Stop when the relative change of the objective falls below this.
    pub rel_tol: f64,
    /// Subspace-iteration sweeps per EM step (warm-started from the previous V).
    pub power_iters: usize,
    /// Sweeps for the first rank-r SVD of `X₀ = W_s` (random start).
    pub init_power_iters: usize,
    /// Seed of the random start.
    pub seed: u64,
}

impl Default for WeightedSvdOptions {
    fn default() -> Self {
        WeightedSvdOptions {
            max_steps: 10,
            rel_tol: 1e-4,
            power_iters: 1,
            init_power_iters: 6,
            seed: 0,
        }
    }
}

/// Result of one weighted low-rank problem: `U = Q·U_b·√Σ` (`out × r`) and
/// `V = √Σ·V_bᵀ` (`r × in`), the singular values of `U·V`, and the objective
/// after the initial SVD and after each EM step (so `1 + steps` values; for
/// rank 0 the factors are empty and the objective is `[Σ Ω W²]`).
pub struct WeightedSvdResult {
    pub u: Tensor,
    pub v: Tensor,
    pub singular_values: Vec<f32>,
    pub objective: Vec<f64>,
}

/// The random start of problem `index` of a [`Backend::weighted_svd`] call:
/// `n` values `2u − 1`, `u = philox::uniform(seed, index, j)`.
pub fn svd_random_start(seed: u64, index: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|j| 2.0 * philox::uniform(seed, index as u64, j as u64) - 1.0)
        .collect()
}

/// The EM stopping rule: the relative change of the objective is below `rel_tol`
/// (or the objective is exactly 0 twice).
pub fn em_converged(prev: f64, cur: f64, rel_tol: f64) -> bool {
    let change = (prev - cur).abs();
    change < rel_tol * prev.abs() || (prev == 0.0 && cur == 0.0)
}

/// Checks one weighted-SVD problem; returns `(out, in)`.
pub fn check_svd_problem(op: &str, i: usize, p: &WeightedSvdProblem<'_>) -> Result<(usize, usize)> {
    let shape = p.w.shape();
    if shape.len() != 2 {
        return Err(Error::shape(
            op,
            format!("problem {i}: w must be a matrix, got shape {shape:?}"),
        ));
    }
    want_dtype(op, &format!("problem {i}: w"), p.w, DType::F32)?;
    want_dtype(op, &format!("problem {i}: mask"), p.mask, DType::U8)?;
    if p.mask.shape() != shape {
        return Err(Error::shape(
            op,
            format!(
                "problem {i}: mask shape {:?} differs from w shape {shape:?}",
                p.mask.shape()
            ),
        ));
    }
    if !(0.0..=1.0).contains(&p.omega) {
        return Err(Error::shape(
            op,
            format!("problem {i}: omega = {} is outside [0, 1]", p.omega),
        ));
    }
    let (out, inp) = (shape[0], shape[1]);
    if p.rank > out.min(inp) {
        return Err(Error::shape(
            op,
            format!("problem {i}: rank {} exceeds min({out}, {inp})", p.rank),
        ));
    }
    Ok((out, inp))
}

/// The sparsity-aware (weighted) SVD of docs/algorithms.md §4.2 (`kernels/weighted_svd.cu`).
pub trait WeightedSvdOps {
    /// The sparsity-aware SVD of docs/algorithms.md §4.2, batched over matrices of mixed
    /// shapes and ranks (see [`WeightedSvdOptions`] for the algorithm).
    /// Deterministic for a given seed. Errors: rank > min(out, in), a mask
    /// whose shape differs from `w`, `omega` outside [0, 1]. Rank 0 is allowed
    /// (empty factors).
    fn weighted_svd(
        &self,
        problems: &[WeightedSvdProblem<'_>],
        opts: &WeightedSvdOptions,
    ) -> Result<Vec<WeightedSvdResult>>;
}
