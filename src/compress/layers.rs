//! The compressed forms of an encoder matrix, each a [`LinearOp`] that drops
//! into the model's seam:
//!
//! - [`MaskedLinear`]: `W' = M⊙W` with a top-k mask of movement scores
//!   (straight-through gradients, docs/algorithms.md §2), of `|W|` (magnitude
//!   pruning), or of `σ(Sc) > τ` (soft movement).
//! - [`FactorizedLinear`]: `W ≈ U·V` (plain SVD, LPAF's output).
//! - [`LowRankSparseLinear`]: `W ≈ U·V + S` (LoSparse, docs/algorithms.md §3),
//!   on the fused kernels of docs/algorithms.md §6.4.
//! - [`MixedRankLinear`]: LPAF's mixed-rank fine-tuning
//!   (docs/algorithms.md §4.4): each step uses the frozen sparse `W_s` with
//!   probability `p_t`, else `U·V`.

use std::any::Any;
use std::collections::BTreeMap;

use crate::backend::{philox, Backend, DType, Gemm, ScoreRule, Tensor};
use crate::error::{Error, Result};
use crate::model::io::HostTensor;
use crate::model::linear::{dense_backward, dense_forward, LinearOp, StepCtx};
use crate::model::param::{Param, ParamGroup, ParamVisitor, StateVisitor};

/// Where a [`MaskedLinear`]'s mask comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaskKind {
    /// Top-k of learned scores (hard movement pruning).
    Movement(ScoreRule),
    /// `σ(Sc) > τ` with an L1 penalty on `σ(Sc)`.
    SoftMovement,
    /// Top-k of `|W|`; no scores.
    Magnitude,
    /// A fixed mask (a loaded pruned model).
    Fixed,
}

/// Compressed-row storage of a matrix's non-zeros.
pub fn to_csr(values: &[f32], rows: usize, cols: usize) -> (Vec<f32>, Vec<i32>, Vec<i32>) {
    let mut vals = Vec::new();
    let mut idx = Vec::new();
    let mut ptr = Vec::with_capacity(rows + 1);
    ptr.push(0i32);
    for r in 0..rows {
        for c in 0..cols {
            let v = values[r * cols + c];
            if v != 0.0 {
                vals.push(v);
                idx.push(c as i32);
            }
        }
        ptr.push(vals.len() as i32);
    }
    (vals, idx, ptr)
}

/// Dense matrix from CSR tensors; errors name the matrix.
pub fn from_csr(
    name: &str,
    vals: &[f32],
    idx: &[i64],
    ptr: &[i64],
    rows: usize,
    cols: usize,
) -> Result<Vec<f32>> {
    if ptr.len() != rows + 1
        || vals.len() != idx.len()
        || ptr.first() != Some(&0)
        || *ptr.last().unwrap_or(&-1) as usize != vals.len()
    {
        return Err(Error::msg(format!(
            "{name}: malformed CSR (indptr of {} for {rows} rows, {} values, {} indices)",
            ptr.len(),
            vals.len(),
            idx.len()
        )));
    }
    let mut out = vec![0.0f32; rows * cols];
    for r in 0..rows {
        let (a, b) = (ptr[r], ptr[r + 1]);
        if a > b || b as usize > vals.len() {
            return Err(Error::msg(format!(
                "{name}: indptr is not non-decreasing at row {r}"
            )));
        }
        for j in a as usize..b as usize {
            let c = idx[j];
            if c < 0 || c as usize >= cols {
                return Err(Error::msg(format!(
                    "{name}: column index {c} out of range at row {r}"
                )));
            }
            out[r * cols + c as usize] = vals[j];
        }
    }
    Ok(out)
}

fn csr_tensors(out: &mut BTreeMap<String, HostTensor>, dense: &[f32], rows: usize, cols: usize) {
    let (v, i, p) = to_csr(dense, rows, cols);
    out.insert("sparse_values".into(), HostTensor::f32(&[v.len()], v));
    out.insert("sparse_indices".into(), HostTensor::i32(&[i.len()], i));
    out.insert("sparse_indptr".into(), HostTensor::i32(&[p.len()], p));
}

fn count_nonzero_u8(be: &dyn Backend, t: &Tensor) -> Result<usize> {
    Ok(be.to_u8(t)?.iter().filter(|&&m| m != 0).count())
}

fn count_nonzero_f32(be: &dyn Backend, t: &Tensor) -> Result<usize> {
    Ok(be.to_f32(t)?.iter().filter(|&&v| v != 0.0).count())
}

fn bias_export(
    be: &dyn Backend,
    bias: &Param,
    out: &mut BTreeMap<String, HostTensor>,
) -> Result<()> {
    out.insert(
        "bias".into(),
        HostTensor::f32(bias.value.shape(), be.to_f32(&bias.value)?),
    );
    Ok(())
}

/// `W' = M⊙W`, `y = x·W'ᵀ + b`.
pub struct MaskedLinear {
    pub prefix: String,
    pub weight: Param,
    pub bias: Param,
    /// Movement scores `Sc` (movement / soft movement): trained by AdamW in
    /// the `Scores` group (rule `adam`), or a frozen parameter updated in the
    /// backward pass (rule `accumulate`).
    pub scores: Option<Param>,
    pub mask: Tensor,
    pub kind: MaskKind,
    masked: Tensor,
    grad_wprime: Tensor,
    scratch: Option<Tensor>,
    /// Entries kept by the current mask (host count, refreshed on mask updates).
    pub kept: usize,
}

impl MaskedLinear {
    /// Wraps dense weights; the mask starts all ones, scores at 0
    /// (docs/algorithms.md §2).
    pub fn new(
        be: &dyn Backend,
        prefix: &str,
        weight: Param,
        bias: Param,
        kind: MaskKind,
    ) -> Result<MaskedLinear> {
        let shape = weight.value.shape().to_vec();
        let n = weight.numel();
        let scores = match kind {
            MaskKind::Movement(rule) => {
                let mut p = Param::new(
                    be,
                    format!("{prefix}.mask_scores"),
                    be.zeros(&shape, DType::F32)?,
                    false,
                )?;
                p.group = ParamGroup::Scores;
                p.frozen = rule == ScoreRule::Accumulate;
                Some(p)
            }
            MaskKind::SoftMovement => {
                let mut p = Param::new(
                    be,
                    format!("{prefix}.mask_scores"),
                    be.zeros(&shape, DType::F32)?,
                    false,
                )?;
                p.group = ParamGroup::Scores;
                Some(p)
            }
            _ => None,
        };
        let mut mask = be.zeros(&shape, DType::U8)?;
        be.fill(&mut mask, 1.0)?;
        Ok(MaskedLinear {
            prefix: prefix.to_string(),
            masked: be.zeros(&shape, DType::F32)?,
            grad_wprime: be.zeros(&shape, DType::F32)?,
            scratch: None,
            weight,
            bias,
            scores,
            mask,
            kind,
            kept: n,
        })
    }

    /// `W ← M⊙W` and drops the scores (the end of pruning, docs/algorithms.md §2).
    pub fn finalize(&mut self, be: &dyn Backend) -> Result<()> {
        let mut w = be.empty(self.weight.value.shape(), DType::F32)?;
        be.mul_mask(&self.weight.value, &self.mask, &mut w)?;
        self.weight.value = w;
        self.weight.adam = None;
        self.scores = None;
        self.kind = MaskKind::Fixed;
        self.kept = count_nonzero_u8(be, &self.mask)?;
        Ok(())
    }

    pub fn numel(&self) -> usize {
        self.weight.numel()
    }
}

impl LinearOp for MaskedLinear {
    fn kind(&self) -> &'static str {
        "masked"
    }
    fn in_features(&self) -> usize {
        self.weight.value.shape()[1]
    }
    fn out_features(&self) -> usize {
        self.weight.value.shape()[0]
    }
    fn forward(
        &mut self,
        be: &dyn Backend,
        ctx: &StepCtx,
        x: &Tensor,
        y: &mut Tensor,
    ) -> Result<()> {
        be.mul_mask(&self.weight.value, &self.mask, &mut self.masked)?;
        dense_forward(
            be,
            ctx.precision,
            x,
            &self.masked,
            Some(&self.bias.value),
            y,
        )
    }
    fn backward(
        &mut self,
        be: &dyn Backend,
        ctx: &StepCtx,
        x: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
    ) -> Result<()> {
        let db = if self.bias.frozen {
            None
        } else {
            Some(&mut self.bias.grad)
        };
        dense_backward(
            be,
            ctx.precision,
            x,
            &self.masked,
            dy,
            Some((&mut self.grad_wprime, 0.0)),
            db,
            dx,
        )?;
        if self.weight.frozen {
            return Ok(());
        }
        match (&mut self.scores, self.kind) {
            (Some(sc), MaskKind::Movement(rule)) => {
                let target = if rule == ScoreRule::Accumulate {
                    &mut sc.value
                } else {
                    &mut sc.grad
                };
                be.movement_grads(
                    &self.weight.value,
                    &self.grad_wprime,
                    &self.mask,
                    &mut self.weight.grad,
                    target,
                    rule,
                )
            }
            (Some(sc), MaskKind::SoftMovement) => be.movement_grads(
                &self.weight.value,
                &self.grad_wprime,
                &self.mask,
                &mut self.weight.grad,
                &mut sc.grad,
                ScoreRule::Adam,
            ),
            _ => {
                // Magnitude / fixed masks: ∂L/∂W = G⊙M.
                if self.scratch.is_none() {
                    self.scratch = Some(be.zeros(self.weight.value.shape(), DType::F32)?);
                }
                let s = self.scratch.as_mut().expect("allocated");
                be.mul_mask(&self.grad_wprime, &self.mask, s)?;
                be.axpby(1.0, s, 1.0, &mut self.weight.grad)
            }
        }
    }
    fn visit_params(&mut self, f: &mut ParamVisitor<'_>) -> Result<()> {
        f(&mut self.weight)?;
        f(&mut self.bias)?;
        if let Some(s) = &mut self.scores {
            f(s)?;
        }
        Ok(())
    }
    fn visit_state(&mut self, f: &mut StateVisitor<'_>) -> Result<()> {
        f(&format!("{}.mask", self.prefix), &mut self.mask)
    }
    fn export(&self, be: &dyn Backend) -> Result<BTreeMap<String, HostTensor>> {
        let mut out = BTreeMap::new();
        let mut w = be.empty(self.weight.value.shape(), DType::F32)?;
        be.mul_mask(&self.weight.value, &self.mask, &mut w)?;
        let (o, i) = (self.out_features(), self.in_features());
        csr_tensors(&mut out, &be.to_f32(&w)?, o, i);
        bias_export(be, &self.bias, &mut out)?;
        Ok(out)
    }
    fn stored_matrix_params(&self) -> usize {
        self.kept
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// `y = (x·Vᵀ)·Uᵀ + b` with `U` `out × r`, `V` `r × in`.
pub struct FactorizedLinear {
    pub prefix: String,
    pub u: Param,
    pub v: Param,
    pub bias: Param,
    /// `x·Vᵀ` of the last forward, for the backward.
    t: Option<Tensor>,
}

impl FactorizedLinear {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        be: &dyn Backend,
        prefix: &str,
        u: &[f32],
        v: &[f32],
        bias: Param,
        out: usize,
        inp: usize,
        rank: usize,
    ) -> Result<FactorizedLinear> {
        if u.len() != out * rank || v.len() != rank * inp || bias.numel() != out {
            return Err(Error::shape(
                "FactorizedLinear",
                format!(
                    "{prefix}: U has {} values for {out}×{rank}, V {} for {rank}×{inp}",
                    u.len(),
                    v.len()
                ),
            ));
        }
        Ok(FactorizedLinear {
            prefix: prefix.to_string(),
            u: Param::from_host(be, format!("{prefix}.lowrank_u"), u, &[out, rank], true)?,
            v: Param::from_host(be, format!("{prefix}.lowrank_v"), v, &[rank, inp], true)?,
            bias,
            t: None,
        })
    }
    pub fn rank(&self) -> usize {
        self.u.value.shape()[1]
    }
}

impl LinearOp for FactorizedLinear {
    fn kind(&self) -> &'static str {
        "factorized"
    }
    fn in_features(&self) -> usize {
        self.v.value.shape()[1]
    }
    fn out_features(&self) -> usize {
        self.u.value.shape()[0]
    }
    fn forward(
        &mut self,
        be: &dyn Backend,
        ctx: &StepCtx,
        x: &Tensor,
        y: &mut Tensor,
    ) -> Result<()> {
        let (n, inp) = x.rows_cols();
        let (out, r) = (self.out_features(), self.rank());
        if inp != self.in_features() {
            return Err(Error::shape(
                "factorized forward",
                format!(
                    "{}: x has {inp} features, V expects {}",
                    self.prefix,
                    self.in_features()
                ),
            ));
        }
        let mut t = be.empty(&[n, r], DType::F32)?;
        be.gemm(
            &Gemm::nt(n, r, inp).precision(ctx.precision),
            x,
            &self.v.value,
            &mut t,
        )?;
        be.gemm(
            &Gemm::nt(n, out, r).precision(ctx.precision),
            &t,
            &self.u.value,
            y,
        )?;
        be.add_row_bias(y, &self.bias.value)?;
        self.t = Some(t);
        Ok(())
    }
    fn backward(
        &mut self,
        be: &dyn Backend,
        ctx: &StepCtx,
        x: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
    ) -> Result<()> {
        let t = self
            .t
            .take()
            .ok_or_else(|| Error::msg(format!("{}: backward without forward", self.prefix)))?;
        let (n, inp) = x.rows_cols();
        let (out, r) = (self.out_features(), self.rank());
        let p = ctx.precision;
        let mut dt = be.empty(&[n, r], DType::F32)?;
        be.gemm(
            &Gemm::nn(n, r, out).precision(p),
            dy,
            &self.u.value,
            &mut dt,
        )?;
        if !self.u.frozen {
            be.gemm(
                &Gemm::tn(out, r, n).beta(1.0).precision(p),
                dy,
                &t,
                &mut self.u.grad,
            )?;
        }
        if !self.v.frozen {
            be.gemm(
                &Gemm::tn(r, inp, n).beta(1.0).precision(p),
                &dt,
                x,
                &mut self.v.grad,
            )?;
        }
        if !self.bias.frozen {
            be.col_sum(dy, &mut self.bias.grad, true)?;
        }
        if let Some(dx) = dx {
            be.gemm(&Gemm::nn(n, inp, r).precision(p), &dt, &self.v.value, dx)?;
        }
        Ok(())
    }
    fn visit_params(&mut self, f: &mut ParamVisitor<'_>) -> Result<()> {
        f(&mut self.u)?;
        f(&mut self.v)?;
        f(&mut self.bias)
    }
    fn export(&self, be: &dyn Backend) -> Result<BTreeMap<String, HostTensor>> {
        let mut out = BTreeMap::new();
        out.insert(
            "lowrank_u".into(),
            HostTensor::f32(self.u.value.shape(), be.to_f32(&self.u.value)?),
        );
        out.insert(
            "lowrank_v".into(),
            HostTensor::f32(self.v.value.shape(), be.to_f32(&self.v.value)?),
        );
        bias_export(be, &self.bias, &mut out)?;
        Ok(out)
    }
    fn stored_matrix_params(&self) -> usize {
        self.rank() * (self.out_features() + self.in_features())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// LoSparse's `W ≈ U·V + S`: importance state for `S` and the fused kernels.
pub struct LowRankSparseLinear {
    pub prefix: String,
    pub u: Param,
    pub v: Param,
    pub s: Param,
    pub bias: Param,
    /// 1 on entries of `S` the last pruning kept.
    pub mask: Tensor,
    /// Option `hard_mask`: pruned entries are masked in forward / backward and
    /// their Adam state zeroed. Reference semantics (default): they stay
    /// trainable and may grow back between pruning events.
    pub hard_mask: bool,
    /// Window mean of `|S⊙∇S|`, its moving average `Ī` and uncertainty `Ū`.
    pub ipt: Tensor,
    pub ibar: Tensor,
    pub ubar: Option<Tensor>,
    w_eff: Tensor,
    dw: Tensor,
}

impl LowRankSparseLinear {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        be: &dyn Backend,
        prefix: &str,
        u: &[f32],
        v: &[f32],
        s: &[f32],
        bias: Param,
        out: usize,
        inp: usize,
        rank: usize,
        hard_mask: bool,
        uncertainty: bool,
    ) -> Result<LowRankSparseLinear> {
        if u.len() != out * rank || v.len() != rank * inp || s.len() != out * inp {
            return Err(Error::shape(
                "LowRankSparseLinear",
                format!("{prefix}: factor sizes do not match {out}×{inp} at rank {rank}"),
            ));
        }
        let mut mask = be.zeros(&[out, inp], DType::U8)?;
        let host_mask: Vec<u8> = s.iter().map(|&x| (x != 0.0) as u8).collect();
        let all_ones = host_mask.iter().all(|&m| m == 1);
        if all_ones {
            be.fill(&mut mask, 1.0)?;
        } else {
            mask = be.from_u8(&host_mask, &[out, inp])?;
        }
        Ok(LowRankSparseLinear {
            prefix: prefix.to_string(),
            u: Param::from_host(be, format!("{prefix}.lowrank_u"), u, &[out, rank], true)?,
            v: Param::from_host(be, format!("{prefix}.lowrank_v"), v, &[rank, inp], true)?,
            s: Param::from_host(be, format!("{prefix}.sparse"), s, &[out, inp], true)?,
            bias,
            mask,
            hard_mask,
            ipt: be.zeros(&[out, inp], DType::F32)?,
            ibar: be.zeros(&[out, inp], DType::F32)?,
            ubar: if uncertainty {
                Some(be.zeros(&[out, inp], DType::F32)?)
            } else {
                None
            },
            w_eff: be.zeros(&[out, inp], DType::F32)?,
            dw: be.zeros(&[out, inp], DType::F32)?,
        })
    }
    pub fn rank(&self) -> usize {
        self.u.value.shape()[1]
    }
}

impl LinearOp for LowRankSparseLinear {
    fn kind(&self) -> &'static str {
        "lowrank+sparse"
    }
    fn in_features(&self) -> usize {
        self.v.value.shape()[1]
    }
    fn out_features(&self) -> usize {
        self.u.value.shape()[0]
    }
    fn forward(
        &mut self,
        be: &dyn Backend,
        ctx: &StepCtx,
        x: &Tensor,
        y: &mut Tensor,
    ) -> Result<()> {
        let mask = if self.hard_mask {
            Some(&self.mask)
        } else {
            None
        };
        crate::backend::lowrank_sparse::forward(
            &*be,
            x,
            &self.u.value,
            &self.v.value,
            Some(&self.s.value),
            mask,
            Some(&self.bias.value),
            &mut self.w_eff,
            y,
            ctx.precision,
        )
    }
    fn backward(
        &mut self,
        be: &dyn Backend,
        ctx: &StepCtx,
        x: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
    ) -> Result<()> {
        let mask = if self.hard_mask {
            Some(&self.mask)
        } else {
            None
        };
        crate::backend::lowrank_sparse::backward(
            &*be,
            x,
            &self.u.value,
            &self.v.value,
            mask,
            &self.w_eff,
            dy,
            dx,
            &mut self.u.grad,
            &mut self.v.grad,
            Some(&mut self.s.grad),
            Some(&mut self.bias.grad),
            &mut self.dw,
            ctx.precision,
        )
    }
    fn visit_params(&mut self, f: &mut ParamVisitor<'_>) -> Result<()> {
        f(&mut self.u)?;
        f(&mut self.v)?;
        f(&mut self.s)?;
        f(&mut self.bias)
    }
    fn visit_state(&mut self, f: &mut StateVisitor<'_>) -> Result<()> {
        f(&format!("{}.mask", self.prefix), &mut self.mask)?;
        f(&format!("{}.ipt", self.prefix), &mut self.ipt)?;
        f(&format!("{}.ibar", self.prefix), &mut self.ibar)?;
        if let Some(u) = &mut self.ubar {
            f(&format!("{}.ubar", self.prefix), u)?;
        }
        Ok(())
    }
    fn export(&self, be: &dyn Backend) -> Result<BTreeMap<String, HostTensor>> {
        let mut out = BTreeMap::new();
        out.insert(
            "lowrank_u".into(),
            HostTensor::f32(self.u.value.shape(), be.to_f32(&self.u.value)?),
        );
        out.insert(
            "lowrank_v".into(),
            HostTensor::f32(self.v.value.shape(), be.to_f32(&self.v.value)?),
        );
        let mut s = be.empty(self.s.value.shape(), DType::F32)?;
        be.mul_mask(&self.s.value, &self.mask, &mut s)?;
        csr_tensors(
            &mut out,
            &be.to_f32(&s)?,
            self.out_features(),
            self.in_features(),
        );
        bias_export(be, &self.bias, &mut out)?;
        Ok(out)
    }
    fn stored_matrix_params(&self) -> usize {
        // U, V and the non-zeros of S under the mask; counted exactly at export.
        self.rank() * (self.out_features() + self.in_features())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// Non-zeros of `M⊙S` of a LoSparse layer (host count).
pub fn sparse_nnz(be: &dyn Backend, l: &LowRankSparseLinear) -> Result<usize> {
    let mut s = be.empty(l.s.value.shape(), DType::F32)?;
    be.mul_mask(&l.s.value, &l.mask, &mut s)?;
    count_nonzero_f32(be, &s)
}

/// LPAF's mixed-rank layer: the frozen sparse `W_s` with probability `p`,
/// else the trainable `U·V` (sharing one bias). Evaluation uses `U·V`.
pub struct MixedRankLinear {
    pub factor: FactorizedLinear,
    /// `W_s = M⊙W` (dense storage, frozen: no gradient, no optimizer state).
    pub sparse: Tensor,
    /// Probability of the sparse path at the current step (set by the schedule).
    pub p_sparse: f64,
    /// Identifies the layer in the Philox stream of the draw.
    pub layer_id: u64,
    used_sparse: bool,
}

impl MixedRankLinear {
    pub fn new(factor: FactorizedLinear, sparse: Tensor, layer_id: u64) -> MixedRankLinear {
        MixedRankLinear {
            factor,
            sparse,
            p_sparse: 0.0,
            layer_id,
            used_sparse: false,
        }
    }

    /// The draw of step `step`: a pure function of (seed, step, layer), so a
    /// resumed run makes the same choices.
    pub fn uses_sparse(&self, ctx: &StepCtx) -> bool {
        ctx.training
            && self.p_sparse > 0.0
            && (philox::uniform(ctx.seed ^ 0x4c50_4146, ctx.step, self.layer_id) as f64)
                < self.p_sparse
    }
}

impl LinearOp for MixedRankLinear {
    fn kind(&self) -> &'static str {
        "mixed-rank"
    }
    fn in_features(&self) -> usize {
        self.factor.in_features()
    }
    fn out_features(&self) -> usize {
        self.factor.out_features()
    }
    fn forward(
        &mut self,
        be: &dyn Backend,
        ctx: &StepCtx,
        x: &Tensor,
        y: &mut Tensor,
    ) -> Result<()> {
        self.used_sparse = self.uses_sparse(ctx);
        if self.used_sparse {
            dense_forward(
                be,
                ctx.precision,
                x,
                &self.sparse,
                Some(&self.factor.bias.value),
                y,
            )
        } else {
            self.factor.forward(be, ctx, x, y)
        }
    }
    fn backward(
        &mut self,
        be: &dyn Backend,
        ctx: &StepCtx,
        x: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
    ) -> Result<()> {
        if self.used_sparse {
            let db = if self.factor.bias.frozen {
                None
            } else {
                Some(&mut self.factor.bias.grad)
            };
            dense_backward(be, ctx.precision, x, &self.sparse, dy, None, db, dx)
        } else {
            self.factor.backward(be, ctx, x, dy, dx)
        }
    }
    fn visit_params(&mut self, f: &mut ParamVisitor<'_>) -> Result<()> {
        self.factor.visit_params(f)
    }
    fn export(&self, be: &dyn Backend) -> Result<BTreeMap<String, HostTensor>> {
        self.factor.export(be)
    }
    fn stored_matrix_params(&self) -> usize {
        self.factor.stored_matrix_params()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}
