//! The benchmark workload of a square GEMM (the compute ceiling) for `lpaf bench kernels` and
//! `benches/kernels.rs`: its FLOPs and the fewest bytes it must move, so its
//! time is reported as a fraction of the ceiling measured in the same run.

use crate::backend::ops::workload::*;
use crate::backend::*;
use crate::error::Result;

/// A square GEMM at one precision.
pub struct SquareGemm {
    pub n: usize,
    pub prec: Precision,
    pub a: Tensor,
    pub b: Tensor,
    pub c: Tensor,
}

impl Workload for SquareGemm {
    fn name(&self) -> String {
        format!("gemm {}", precision_name(self.prec))
    }
    fn size(&self) -> String {
        format!("{}³", self.n)
    }
    fn bound(&self) -> Bound {
        Bound::Compute(self.prec)
    }
    fn flops(&self) -> f64 {
        2.0 * (self.n as f64).powi(3)
    }
    fn bytes(&self) -> f64 {
        12.0 * (self.n * self.n) as f64
    }
    fn run(&mut self, be: &dyn Backend) -> Result<()> {
        be.gemm(
            &Gemm::nn(self.n, self.n, self.n).precision(self.prec),
            &self.a,
            &self.b,
            &mut self.c,
        )
    }
}
