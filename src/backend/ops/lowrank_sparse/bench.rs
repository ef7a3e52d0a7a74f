//! The benchmark workload of the fused U·V + S layer for `lpaf bench kernels` and
//! `benches/kernels.rs`: its FLOPs and the fewest bytes it must move, so its
//! time is reported as a fraction of the ceiling measured in the same run.

use crate::backend::ops::workload::*;
use crate::backend::*;
use crate::error::Result;

/// Which layer a [`Layer`] workload runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// `lowrank_sparse_forward` + `_backward`: `w_eff = M⊙S + U·V`, one dense GEMM per product.
    Fused,
    /// The papers' PyTorch form: `x·Vᵀ·Uᵀ + x·(M⊙S)ᵀ` and its backward.
    TwoPath,
    /// A dense linear layer of the same shape.
    Dense,
}

/// Forward + backward of one `out × in` layer at N tokens (LoSparse: rank for
/// ρ = 0.1, 10 % of S kept).
pub struct Layer {
    kind: LayerKind,
    prec: Precision,
    n: usize,
    out: usize,
    inp: usize,
    r: usize,
    x: Tensor,
    u: Tensor,
    v: Tensor,
    s: Tensor,
    m: Tensor,
    b: Tensor,
    dy: Tensor,
    w_eff: Tensor,
    y: Tensor,
    dx: Tensor,
    du: Tensor,
    dv: Tensor,
    ds: Tensor,
    db: Tensor,
    dw: Tensor,
    t: Tensor,
    dt: Tensor,
}

impl Layer {
    pub fn new(
        be: &dyn Backend,
        kind: LayerKind,
        prec: Precision,
        scale: f64,
        seed: u64,
    ) -> Result<Self> {
        let (h, n) = scaled_dims(scale);
        let (out, inp) = (4 * h, h);
        let r = ((0.1 * (out * inp) as f64) / (out + inp) as f64).ceil() as usize;
        let f = |stream: u64, len: usize, shape: &[usize], amp: f32| {
            be.from_f32(&rand_f32(seed, stream, len, amp), shape)
        };
        Ok(Layer {
            kind,
            prec,
            n,
            out,
            inp,
            r,
            x: f(500, n * inp, &[n, inp], 1.0)?,
            u: f(501, out * r, &[out, r], 0.05)?,
            v: f(502, r * inp, &[r, inp], 0.05)?,
            s: f(503, out * inp, &[out, inp], 0.05)?,
            m: be.from_u8(&rand_mask(seed, 504, out * inp, 0.1), &[out, inp])?,
            b: f(505, out, &[out], 0.1)?,
            dy: f(506, n * out, &[n, out], 0.01)?,
            w_eff: be.zeros(&[out, inp], DType::F32)?,
            y: be.zeros(&[n, out], DType::F32)?,
            dx: be.zeros(&[n, inp], DType::F32)?,
            du: be.zeros(&[out, r], DType::F32)?,
            dv: be.zeros(&[r, inp], DType::F32)?,
            ds: be.zeros(&[out, inp], DType::F32)?,
            db: be.zeros(&[out], DType::F32)?,
            dw: be.zeros(&[out, inp], DType::F32)?,
            t: be.zeros(&[n, r], DType::F32)?,
            dt: be.zeros(&[n, r], DType::F32)?,
        })
    }

    fn two_path(&mut self, be: &dyn Backend) -> Result<()> {
        let (n, o, i, r, p) = (self.n, self.out, self.inp, self.r, self.prec);
        // forward: t = x·Vᵀ, y = t·Uᵀ + x·(M⊙S)ᵀ + b
        be.mul_mask(&self.s, &self.m, &mut self.w_eff)?;
        be.gemm(
            &Gemm::nt(n, r, i).precision(p),
            &self.x,
            &self.v,
            &mut self.t,
        )?;
        be.gemm(
            &Gemm::nt(n, o, r).precision(p),
            &self.t,
            &self.u,
            &mut self.y,
        )?;
        be.gemm(
            &Gemm::nt(n, o, i).beta(1.0).precision(p),
            &self.x,
            &self.w_eff,
            &mut self.y,
        )?;
        be.add_row_bias(&mut self.y, &self.b)?;
        // backward
        be.gemm(
            &Gemm::tn(o, i, n).precision(p),
            &self.dy,
            &self.x,
            &mut self.dw,
        )?;
        be.mul_mask(&self.dw, &self.m, &mut self.w_eff)?;
        be.axpby(1.0, &self.w_eff, 1.0, &mut self.ds)?;
        be.mul_mask(&self.s, &self.m, &mut self.w_eff)?;
        be.gemm(
            &Gemm::nn(n, i, o).precision(p),
            &self.dy,
            &self.w_eff,
            &mut self.dx,
        )?;
        be.gemm(
            &Gemm::nn(n, r, o).precision(p),
            &self.dy,
            &self.u,
            &mut self.dt,
        )?;
        be.gemm(
            &Gemm::nn(n, i, r).beta(1.0).precision(p),
            &self.dt,
            &self.v,
            &mut self.dx,
        )?;
        be.gemm(
            &Gemm::tn(o, r, n).beta(1.0).precision(p),
            &self.dy,
            &self.t,
            &mut self.du,
        )?;
        be.gemm(
            &Gemm::tn(r, i, n).beta(1.0).precision(p),
            &self.dt,
            &self.x,
            &mut self.dv,
        )?;
        be.col_sum(&self.dy, &mut self.db, true)
    }

    fn dense(&mut self, be: &dyn Backend) -> Result<()> {
        let (n, o, i, p) = (self.n, self.out, self.inp, self.prec);
        // W is `s` here.
        be.gemm(
            &Gemm::nt(n, o, i).precision(p),
            &self.x,
            &self.s,
            &mut self.y,
        )?;
        be.add_row_bias(&mut self.y, &self.b)?;
        be.gemm(
            &Gemm::tn(o, i, n).beta(1.0).precision(p),
            &self.dy,
            &self.x,
            &mut self.dw,
        )?;
        be.gemm(
            &Gemm::nn(n, i, o).precision(p),
            &self.dy,
            &self.s,
            &mut self.dx,
        )?;
        be.col_sum(&self.dy, &mut self.db, true)
    }
}

impl Workload for Layer {
    fn name(&self) -> String {
        let what = match self.kind {
            LayerKind::Fused => "fused U·V+S layer fwd+bwd",
            LayerKind::TwoPath => "two-path x·Vᵀ·Uᵀ + x·(M⊙S)ᵀ fwd+bwd",
            LayerKind::Dense => "dense layer fwd+bwd",
        };
        format!("{what} ({})", precision_name(self.prec))
    }
    fn size(&self) -> String {
        if self.kind == LayerKind::Dense {
            format!("{}×{}, N = {}", self.out, self.inp, self.n)
        } else {
            format!("{}×{}, N = {}, r = {}", self.out, self.inp, self.n, self.r)
        }
    }
    fn bound(&self) -> Bound {
        Bound::Compute(self.prec)
    }
    fn flops(&self) -> f64 {
        let (n, o, i, r) = (
            self.n as f64,
            self.out as f64,
            self.inp as f64,
            self.r as f64,
        );
        match self.kind {
            LayerKind::Dense => 6.0 * n * o * i,
            LayerKind::Fused => 6.0 * n * o * i + 6.0 * o * i * r,
            LayerKind::TwoPath => 6.0 * n * o * i + 6.0 * n * r * (o + i),
        }
    }
    fn bytes(&self) -> f64 {
        // x, dy, y, dx once; the weight-sized tensors a few times.
        let (n, o, i) = (self.n as f64, self.out as f64, self.inp as f64);
        4.0 * (2.0 * n * (o + i)) + 4.0 * 4.0 * o * i
    }
    fn run(&mut self, be: &dyn Backend) -> Result<()> {
        match self.kind {
            LayerKind::Fused => {
                crate::backend::lowrank_sparse::forward(
                    &*be,
                    &self.x,
                    &self.u,
                    &self.v,
                    Some(&self.s),
                    Some(&self.m),
                    Some(&self.b),
                    &mut self.w_eff,
                    &mut self.y,
                    self.prec,
                )?;
                crate::backend::lowrank_sparse::backward(
                    &*be,
                    &self.x,
                    &self.u,
                    &self.v,
                    Some(&self.m),
                    &self.w_eff,
                    &self.dy,
                    Some(&mut self.dx),
                    &mut self.du,
                    &mut self.dv,
                    Some(&mut self.ds),
                    Some(&mut self.db),
                    &mut self.dw,
                    self.prec,
                )
            }
            LayerKind::TwoPath => self.two_path(be),
            LayerKind::Dense => self.dense(be),
        }
    }
}
