//! The benchmark workload of movement pruning's score accumulation for `lpaf bench kernels` and
//! `benches/kernels.rs`: its FLOPs and the fewest bytes it must move, so its
//! time is reported as a fraction of the ceiling measured in the same run.

use crate::backend::ops::workload::*;
use crate::backend::*;
use crate::error::Result;

/// Movement pruning's backward over every encoder weight (one flat tensor).
pub struct MovementGrads {
    n: usize,
    w: Tensor,
    g: Tensor,
    m: Tensor,
    gw: Tensor,
    sc: Tensor,
}

impl MovementGrads {
    pub fn new(be: &dyn Backend, n: usize, seed: u64) -> Result<Self> {
        Ok(MovementGrads {
            n,
            w: be.from_f32(&rand_f32(seed, 1, n, 0.05), &[n])?,
            g: be.from_f32(&rand_f32(seed, 2, n, 1e-3), &[n])?,
            m: be.from_u8(&rand_mask(seed, 3, n, 0.1), &[n])?,
            gw: be.from_f32(&rand_f32(seed, 4, n, 1e-3), &[n])?,
            sc: be.from_f32(&rand_f32(seed, 5, n, 1e-3), &[n])?,
        })
    }
}

impl Workload for MovementGrads {
    fn name(&self) -> String {
        "score accumulation (movement_grads)".into()
    }
    fn size(&self) -> String {
        format!("{} weights", fmt_count(self.n))
    }
    fn bound(&self) -> Bound {
        Bound::Memory
    }
    fn flops(&self) -> f64 {
        3.0 * self.n as f64
    }
    fn bytes(&self) -> f64 {
        // read W, G, M; read + write grad_w and scores
        25.0 * self.n as f64
    }
    fn run(&mut self, be: &dyn Backend) -> Result<()> {
        be.movement_grads(
            &self.w,
            &self.g,
            &self.m,
            &mut self.gw,
            &mut self.sc,
            ScoreRule::Adam,
        )
    }
}
