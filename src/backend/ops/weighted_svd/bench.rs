//! The benchmark workload of the weighted SVD for `lpaf bench kernels` and
//! `benches/kernels.rs`: its FLOPs and the fewest bytes it must move, so its
//! time is reported as a fraction of the ceiling measured in the same run.

use crate::backend::ops::workload::*;
use crate::backend::*;
use crate::error::Result;

/// The sparsity-aware SVD of all 72 encoder matrices at 10 % kept (ranks
/// meeting 10 % of the dense parameters), `steps` EM steps.
pub struct WeightedSvd {
    shapes: Vec<(usize, usize)>,
    ranks: Vec<usize>,
    w: Vec<Tensor>,
    m: Vec<Tensor>,
    opts: WeightedSvdOptions,
}

impl WeightedSvd {
    pub fn new(be: &dyn Backend, scale: f64, steps: usize, seed: u64) -> Result<Self> {
        let shapes = bert_shapes(scale);
        let mut s = WeightedSvd {
            ranks: Vec::new(),
            w: Vec::new(),
            m: Vec::new(),
            opts: WeightedSvdOptions {
                max_steps: steps,
                rel_tol: 0.0,
                seed,
                ..Default::default()
            },
            shapes,
        };
        for (j, &(o, i)) in s.shapes.iter().enumerate() {
            let mask = rand_mask(seed, 300 + j as u64, o * i, 0.1);
            let w: Vec<f32> = rand_f32(seed, 400 + j as u64, o * i, 0.05)
                .iter()
                .zip(&mask)
                .map(|(x, &k)| if k != 0 { *x } else { 0.0 })
                .collect();
            s.w.push(be.from_f32(&w, &[o, i])?);
            s.m.push(be.from_u8(&mask, &[o, i])?);
            s.ranks
                .push(((0.1 * (o * i) as f64) / (o + i) as f64).floor().max(1.0) as usize);
        }
        Ok(s)
    }
}

impl Workload for WeightedSvd {
    fn name(&self) -> String {
        "weighted SVD (EM, 72 matrices)".into()
    }
    fn size(&self) -> String {
        let (o, i) = self.shapes[4];
        format!(
            "{}×{} … {}×{}, ranks {}–{}, {} EM steps",
            self.shapes[0].0,
            self.shapes[0].1,
            o,
            i,
            self.ranks.iter().min().unwrap_or(&0),
            self.ranks.iter().max().unwrap_or(&0),
            self.opts.max_steps
        )
    }
    fn bound(&self) -> Bound {
        Bound::Compute(Precision::F32)
    }
    fn flops(&self) -> f64 {
        let sweeps = (self.opts.init_power_iters.max(1)
            + self.opts.max_steps * self.opts.power_iters.max(1)) as f64;
        let steps = self.opts.max_steps as f64;
        self.shapes
            .iter()
            .zip(&self.ranks)
            .map(|(&(o, n), &r)| {
                let (o, n, r) = (o as f64, n as f64, r as f64);
                // per sweep: X·P and Qᵀ·X, CholeskyQR2 of Y and of Bᵀ; per EM step A = Q·B
                sweeps * (4.0 * o * n * r + 8.0 * (o + n) * r * r) + (steps + 1.0) * 2.0 * o * n * r
            })
            .sum()
    }
    fn bytes(&self) -> f64 {
        let sweeps = (self.opts.init_power_iters.max(1)
            + self.opts.max_steps * self.opts.power_iters.max(1)) as f64;
        let steps = self.opts.max_steps as f64;
        // X read twice per sweep; per EM step A written, then W, M, A read and X written.
        self.shapes
            .iter()
            .map(|&(o, n)| (o * n) as f64 * (8.0 * sweeps + 17.0 * (steps + 1.0)))
            .sum()
    }
    fn run(&mut self, be: &dyn Backend) -> Result<()> {
        let problems: Vec<WeightedSvdProblem> = (0..self.w.len())
            .map(|j| WeightedSvdProblem {
                w: &self.w[j],
                mask: &self.m[j],
                omega: 0.0,
                rank: self.ranks[j],
            })
            .collect();
        be.weighted_svd(&problems, &self.opts).map(|_| ())
    }
}
