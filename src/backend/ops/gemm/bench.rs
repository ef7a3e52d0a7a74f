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

/// The workloads of this folder's operations at BERT-base shapes (`scale`
/// as in [`scaled_dims`]).
pub fn workloads(be: &dyn Backend, scale: f64, seed: u64) -> Result<Vec<Box<dyn Workload>>> {
    let (h, n) = scaled_dims(scale);
    let mut out: Vec<Box<dyn Workload>> = Vec::new();
    for prec in [Precision::F32, Precision::Tf32, Precision::Bf16] {
        // The intermediate linear layer's forward, y = x·Wᵀ.
        let x = rand_tensor(be, seed, 70, &[n, h], 1.0)?;
        let w = rand_tensor(be, seed, 71, &[4 * h, h], 0.05)?;
        let mut y = be.zeros(&[n, 4 * h], DType::F32)?;
        let g = Gemm::nt(n, 4 * h, h).precision(prec);
        out.push(Box::new(OpWorkload {
            name: format!("gemm linear {}", precision_name(prec)),
            size: format!("{n}×{h}·({}×{h})ᵀ", 4 * h),
            bound: Bound::Compute(prec),
            flops: 2.0 * (n * h * 4 * h) as f64,
            bytes: 4.0 * (n * h + 4 * h * h + n * 4 * h) as f64,
            run: Box::new(move |be| be.gemm(&g, &x, &w, &mut y)),
        }));
    }
    Ok(out)
}
