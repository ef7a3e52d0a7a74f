//! Factorizing a set of matrices: the one path of the SVD baseline
//! (docs/algorithms.md §5), LoSparse's initialisation (§3) and LPAF's
//! stage 2 (§4.2). Each caller chooses the matrices, masks, ω and ranks and
//! builds its own layers from the factors.

use crate::backend::{Backend, DType, Tensor, WeightedSvdOptions, WeightedSvdProblem};
use crate::error::Result;
use crate::model::param::Param;

/// The factors of one matrix, on the host: `U` (`out × r`) and `V`
/// (`r × in`) with `√Σ` on both sides, and the EM objective per step.
pub struct Factors {
    pub u: Vec<f32>,
    pub v: Vec<f32>,
    pub objective: Vec<f64>,
}

/// Options of a plain truncated SVD: one step of the weighted solver (with
/// ω = 1 nothing is weighted), more subspace sweeps from the random start.
fn plain_svd_options(seed: u64) -> WeightedSvdOptions {
    WeightedSvdOptions {
        max_steps: 1,
        rel_tol: 0.0,
        power_iters: 2,
        init_power_iters: 12,
        seed,
    }
}

/// Rank-`ranks[k]` factors of every `ws[k]`, minimising
/// `Σ Ω ⊙ (W − U·V)²` with `Ω = 1` where `masks[k]` is 1 and `omega`
/// elsewhere (`masks = None`: every entry kept, a plain SVD); one batched
/// [`Backend::weighted_svd`] call.
pub fn factorize(
    be: &dyn Backend,
    ws: &[Tensor],
    masks: Option<&[Tensor]>,
    omega: f32,
    ranks: &[usize],
    opts: &WeightedSvdOptions,
) -> Result<Vec<Factors>> {
    let ones: Vec<Tensor>;
    let masks = match masks {
        Some(m) => m,
        None => {
            ones = ws
                .iter()
                .map(|w| {
                    let mut m = be.zeros(w.shape(), DType::U8)?;
                    be.fill(&mut m, 1.0)?;
                    Ok(m)
                })
                .collect::<Result<_>>()?;
            &ones
        }
    };
    let problems: Vec<WeightedSvdProblem<'_>> = (0..ws.len())
        .map(|k| WeightedSvdProblem {
            w: &ws[k],
            mask: &masks[k],
            omega,
            rank: ranks[k],
        })
        .collect();
    be.weighted_svd(&problems, opts)?
        .into_iter()
        .map(|r| {
            Ok(Factors {
                u: be.to_f32(&r.u)?,
                v: be.to_f32(&r.v)?,
                objective: r.objective,
            })
        })
        .collect()
}

/// Plain truncated SVD factors of every `ws[k]` at `ranks[k]` (the SVD
/// baseline and LoSparse's initialisation).
pub fn plain_svd(
    be: &dyn Backend,
    ws: &[Tensor],
    ranks: &[usize],
    seed: u64,
) -> Result<Vec<Factors>> {
    factorize(be, ws, None, 1.0, ranks, &plain_svd_options(seed))
}

/// A copy of a replaced layer's bias as the trainable parameter
/// `<prefix>.bias` of the new one.
pub fn bias_param(be: &dyn Backend, prefix: &str, bias: &Tensor) -> Result<Param> {
    Param::new(be, format!("{prefix}.bias"), be.clone_tensor(bias)?, false)
}
