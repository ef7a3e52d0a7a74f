//! Singular values, numerical rank, and rank allocation under a parameter
//! budget (docs/algorithms.md §4.3).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, CpuBackend, DType, TopkRule, TopkScope};
use crate::compress::format::dense_matrix;
use crate::error::{Error, Result};
use crate::model::bert::{linear_prefix, slot_shape};
use crate::model::io::HostTensor;

/// The relative threshold of the numerical rank (docs/algorithms.md §4.1).
pub const RANK_REL_TOL: f64 = 1e-3;

/// Names, shapes and dense values of every compressible matrix of a model.
pub type Matrices = (Vec<String>, Vec<(usize, usize)>, Vec<Vec<f32>>);

/// Every compressible matrix of the model directory `dir` (dense or
/// compressed; a compressed matrix is rebuilt as `U·V + S`), layer by layer.
pub fn model_matrices(dir: &std::path::Path) -> Result<Matrices> {
    // The format validator first: a bad compressed directory is an error, not a panic.
    let v = crate::compress::format::validate_dir(dir)?;
    let (config, tensors) = (v.config, v.tensors);
    let mut names = Vec::new();
    let mut shapes = Vec::new();
    let mut mats = Vec::new();
    for l in 0..config.num_hidden_layers {
        for s in 0..6 {
            let p = linear_prefix(l, s);
            let (o, i) = slot_shape(&config, s);
            let w = match tensors.get(&format!("{p}.weight")) {
                Some(t) => HostTensor::as_f32(t, &p)?.to_vec(),
                None => dense_matrix(&tensors, &p, o, i)?,
            };
            names.push(p);
            shapes.push((o, i));
            mats.push(w);
        }
    }
    Ok((names, shapes, mats))
}

/// Magnitude pruning of each `dense[i]` to the non-zero count of `like[i]`
/// (the same density per matrix), on the CPU backend.
pub fn magnitude_pruned_like(
    dense: &[Vec<f32>],
    like: &[Vec<f32>],
    shapes: &[(usize, usize)],
) -> Result<Vec<Vec<f32>>> {
    let be: &dyn Backend = &CpuBackend::new();
    let mut pruned = Vec::new();
    for ((w, m), &(o, i)) in dense.iter().zip(like).zip(shapes) {
        let k = m.iter().filter(|&&v| v != 0.0).count();
        let t = be.from_f32(w, &[o, i])?;
        let th = be.topk_threshold(&[&t], k, TopkRule::ExactK, TopkScope::Entries, true)?;
        let mut mask = be.zeros(&[o, i], DType::U8)?;
        let mut wt = be.from_f32(w, &[o, i])?;
        be.topk_apply(&[&t], &th, &mut [&mut mask], &mut [&mut wt])?;
        pruned.push(be.to_f32(&wt)?);
    }
    Ok(pruned)
}

/// Singular values (descending) of a row-major `rows × cols` matrix, in f64.
pub fn singular_values(data: &[f32], rows: usize, cols: usize) -> Result<Vec<f64>> {
    if data.len() != rows * cols {
        return Err(Error::shape(
            "singular_values",
            format!("{} values for {rows}×{cols}", data.len()),
        ));
    }
    if rows == 0 || cols == 0 {
        return Ok(Vec::new());
    }
    let m = faer::Mat::<f64>::from_fn(rows, cols, |i, j| data[i * cols + j] as f64);
    m.as_ref()
        .singular_values()
        .map_err(|e| Error::msg(format!("SVD did not converge: {e:?}")))
}

/// Singular values of many matrices in parallel.
pub fn singular_values_many(mats: &[(&[f32], usize, usize)]) -> Result<Vec<Vec<f64>>> {
    mats.par_iter()
        .map(|(d, r, c)| singular_values(d, *r, *c))
        .collect()
}

/// Numerical rank: singular values above `rel_tol · σ_max`
/// (docs/algorithms.md §4.1 uses 1e-3).
pub fn numerical_rank(svals: &[f64], rel_tol: f64) -> usize {
    let Some(&max) = svals.first() else { return 0 };
    if max == 0.0 {
        return 0;
    }
    svals.iter().filter(|&&s| s > rel_tol * max).count()
}

/// How ranks are chosen under the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RankAllocation {
    /// Greedy: each next rank goes to the matrix whose next σ² per parameter
    /// (`σ²_{r+1} / (out + in)`) is largest, while it fits the budget.
    #[default]
    Energy,
    /// The same parameter ratio ρ for every matrix: `r = ⌈ρ·out·in/(out+in)⌉`
    /// (docs/algorithms.md §3), trimmed if the rounding overshoots the budget.
    Uniform,
    /// The energy rule on each matrix's spectrum divided by its own total
    /// energy (`σ²_{r+1} / (‖W‖²_F·(out+in))`): scale-free, so a matrix with
    /// small weights (MiniLM's value and attention-output matrices) is not
    /// starved to rank 6–10 by `energy`.
    Relative,
}

impl RankAllocation {
    /// Whether the allocation reads the singular values.
    pub fn needs_spectra(self) -> bool {
        self != RankAllocation::Uniform
    }
}

/// The LoSparse / uniform rank of an `out × in` matrix at parameter ratio ρ.
pub fn uniform_rank(rho: f64, out: usize, inp: usize) -> usize {
    let r = (rho * out as f64 * inp as f64 / (out + inp) as f64).ceil() as usize;
    r.min(out.min(inp))
}

#[derive(PartialEq)]
struct Candidate {
    gain: f64,
    matrix: usize,
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // Larger gain first; ties to the lower matrix index (deterministic).
        self.gain
            .total_cmp(&other.gain)
            .then_with(|| other.matrix.cmp(&self.matrix))
    }
}

/// Ranks meeting `budget` parameters (`Σ r·(out+in) ≤ budget`).
/// `svals[i]` are matrix i's singular values, descending; `shapes[i] = (out, in)`.
pub fn allocate(
    kind: RankAllocation,
    svals: &[Vec<f64>],
    shapes: &[(usize, usize)],
    budget: usize,
) -> Result<Vec<usize>> {
    if svals.len() != shapes.len() {
        return Err(Error::msg(
            "rank allocation: one spectrum per matrix is needed",
        ));
    }
    let cost = |i: usize| shapes[i].0 + shapes[i].1;
    // Every matrix keeps rank ≥ 1: a rank-0 factor pair makes the layer its
    // bias alone (and a k = 0 GEMM). A budget too small for that is refused.
    let floor: usize = (0..shapes.len()).map(cost).sum();
    let dense: usize = shapes.iter().map(|(o, i)| o * i).sum();
    if budget < floor {
        return Err(Error::msg(format!(
            "the kept-ratio budget of {budget} parameters ({:.6} of {dense}) cannot give each of the \
             {} matrices rank 1 (that needs {floor}, a kept ratio of at least {:.6}); \
             raise target.kept_ratio",
            budget as f64 / dense.max(1) as f64,
            shapes.len(),
            floor as f64 / dense.max(1) as f64
        )));
    }
    let relative: Vec<Vec<f64>>;
    let svals = if kind == RankAllocation::Relative {
        relative = svals
            .iter()
            .map(|sv| {
                let total: f64 = sv.iter().map(|s| s * s).sum();
                let scale = if total > 0.0 { total.sqrt() } else { 1.0 };
                sv.iter().map(|s| s / scale).collect()
            })
            .collect();
        &relative[..]
    } else {
        svals
    };
    match kind {
        RankAllocation::Energy | RankAllocation::Relative => {
            let mut ranks = vec![1usize; shapes.len()];
            let mut heap: BinaryHeap<Candidate> = (0..shapes.len())
                .filter(|&i| svals[i].len() > 1 && shapes[i].0.min(shapes[i].1) > 1)
                .map(|i| Candidate {
                    gain: svals[i][1] * svals[i][1] / cost(i) as f64,
                    matrix: i,
                })
                .collect();
            let mut used = floor;
            while let Some(c) = heap.pop() {
                let i = c.matrix;
                if used + cost(i) > budget {
                    // This matrix's next rank no longer fits; cheaper ones may.
                    continue;
                }
                used += cost(i);
                ranks[i] += 1;
                let r = ranks[i];
                if r < svals[i].len() && r < shapes[i].0.min(shapes[i].1) {
                    heap.push(Candidate {
                        gain: svals[i][r] * svals[i][r] / cost(i) as f64,
                        matrix: i,
                    });
                }
            }
            Ok(ranks)
        }
        RankAllocation::Uniform => {
            let rho = budget as f64 / dense.max(1) as f64;
            let mut ranks: Vec<usize> = shapes
                .iter()
                .map(|&(o, i)| uniform_rank(rho, o, i).max(1))
                .collect();
            // Rounding up may overshoot: take ranks back from the costliest matrices.
            let total = |r: &[usize]| {
                r.iter()
                    .enumerate()
                    .map(|(i, r)| r * cost(i))
                    .sum::<usize>()
            };
            while total(&ranks) > budget {
                let i = (0..ranks.len())
                    .filter(|&i| ranks[i] > 1)
                    .max_by_key(|&i| (ranks[i] * cost(i), usize::MAX - i));
                match i {
                    Some(i) => ranks[i] -= 1,
                    None => break,
                }
            }
            Ok(ranks)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_allocation_is_greedy_and_within_budget() {
        let svals = vec![vec![10.0, 1.0, 0.5], vec![5.0, 4.0, 3.0]];
        let shapes = vec![(3, 3), (3, 3)];
        // Each rank costs 6. Budget 18 → 3 ranks: 10², 5², 4².
        let r = allocate(RankAllocation::Energy, &svals, &shapes, 18).unwrap();
        assert_eq!(r, vec![1, 2]);
        let r = allocate(RankAllocation::Energy, &svals, &shapes, 17).unwrap();
        assert_eq!(r, vec![1, 1]);
        // A cheaper matrix still gets ranks when the best one no longer fits.
        let r = allocate(
            RankAllocation::Energy,
            &[vec![9.0, 8.0], vec![1.0]],
            &[(10, 10), (1, 1)],
            22,
        )
        .unwrap();
        assert_eq!(r, vec![1, 1]);
    }

    #[test]
    fn relative_allocation_ignores_each_matrix_scale() {
        // Matrix 1 is matrix 0 scaled by 1/100: energy gives every spare
        // rank to matrix 0, relative splits them evenly.
        let a = vec![4.0, 3.0, 2.0, 1.0];
        let b: Vec<f64> = a.iter().map(|s| s / 100.0).collect();
        let shapes = vec![(4, 4), (4, 4)];
        // Each rank costs 8; the floor is 16; 32 leaves two more ranks.
        let svals = vec![a.clone(), b.clone()];
        assert_eq!(
            allocate(RankAllocation::Energy, &svals, &shapes, 32).unwrap(),
            vec![3, 1]
        );
        assert_eq!(
            allocate(RankAllocation::Relative, &svals, &shapes, 32).unwrap(),
            vec![2, 2]
        );
        // Scaling every matrix by one factor changes nothing.
        let scaled: Vec<Vec<f64>> = svals
            .iter()
            .map(|v| v.iter().map(|s| s * 7.0).collect())
            .collect();
        assert_eq!(
            allocate(RankAllocation::Relative, &scaled, &shapes, 32).unwrap(),
            vec![2, 2]
        );
        assert!(
            RankAllocation::Relative.needs_spectra() && !RankAllocation::Uniform.needs_spectra()
        );
    }

    #[test]
    fn uniform_allocation_matches_losparse_rank() {
        assert_eq!(uniform_rank(0.05, 768, 768), 20);
        assert_eq!(uniform_rank(0.05, 3072, 768), 31);
        let shapes = vec![(768, 768), (3072, 768)];
        let budget = (0.1 * (768.0 * 768.0 + 3072.0 * 768.0)) as usize;
        let r = allocate(
            RankAllocation::Uniform,
            &[vec![1.0; 768], vec![1.0; 768]],
            &shapes,
            budget,
        )
        .unwrap();
        let used: usize = r.iter().zip(&shapes).map(|(r, (o, i))| r * (o + i)).sum();
        assert!(used <= budget, "{used} > {budget}");
    }

    #[test]
    fn singular_values_and_numerical_rank() {
        // A rank-1 outer product plus a rank-1 change of row 0: rank 2.
        let (r, c) = (6, 5);
        let mut m = vec![0.0f32; r * c];
        for i in 0..r {
            for j in 0..c {
                m[i * c + j] = (i as f32 + 1.0) * (j as f32 - 2.0);
            }
        }
        for v in m.iter_mut().take(c) {
            *v += 3.0; // row 0 perturbed: rank 2
        }
        let s = singular_values(&m, r, c).unwrap();
        assert_eq!(numerical_rank(&s, 1e-3), 2);
    }
}
