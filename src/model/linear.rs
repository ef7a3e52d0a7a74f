//! The compressible-linear seam. Every encoder matrix (Q, K, V, attention
//! output, intermediate, output) is a `Box<dyn LinearOp>`: the dense layer
//! here, or one of the compressed forms of `crate::compress` (masked,
//! factorized, low-rank + sparse, mixed-rank), swapped in without touching the
//! rest of the model.

use std::any::Any;
use std::collections::BTreeMap;

use crate::backend::{Backend, Gemm, Precision, Tensor};
use crate::error::{Error, Result};
use crate::model::io::HostTensor;
use crate::model::param::{Param, ParamVisitor, StateVisitor};

/// What a layer needs to know about the current step.
#[derive(Clone, Copy, Debug)]
pub struct StepCtx {
    pub precision: Precision,
    /// Training (dropout on, compressed layers update their state) or evaluation.
    pub training: bool,
    pub seed: u64,
    /// Optimizer step (0-based) and micro-batch within it: dropout streams and
    /// mixed-rank draws are functions of these.
    pub step: u64,
    pub micro: u32,
}

impl StepCtx {
    pub fn eval(precision: Precision) -> StepCtx {
        StepCtx {
            precision,
            training: false,
            seed: 0,
            step: 0,
            micro: 0,
        }
    }
    /// A dropout stream id, unique per (step, micro-batch, layer, site).
    pub fn stream(&self, layer: usize, site: u32) -> u64 {
        (self.step << 24) ^ ((self.micro as u64) << 16) ^ ((layer as u64) << 4) ^ site as u64
    }
}

/// `y = x·W_effᵀ + b` for `x` of shape `[N, in]`.
pub trait LinearOp: Send + Sync {
    /// A short name of the form ("dense", "masked", "factorized", …).
    fn kind(&self) -> &'static str;
    fn in_features(&self) -> usize;
    fn out_features(&self) -> usize;
    /// Writes `y` (`[N, out]`).
    fn forward(
        &mut self,
        be: &dyn Backend,
        ctx: &StepCtx,
        x: &Tensor,
        y: &mut Tensor,
    ) -> Result<()>;
    /// Accumulates parameter gradients for the last forward's input `x` and
    /// writes `dx` (`[N, in]`, overwritten) when asked.
    fn backward(
        &mut self,
        be: &dyn Backend,
        ctx: &StepCtx,
        x: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
    ) -> Result<()>;
    fn visit_params(&mut self, f: &mut ParamVisitor<'_>) -> Result<()>;
    /// Non-parameter state a checkpoint must keep (default: none).
    fn visit_state(&mut self, _f: &mut StateVisitor<'_>) -> Result<()> {
        Ok(())
    }
    /// The tensors this layer stores in a model file, keyed by suffix
    /// (`weight`, `bias`, `lowrank_u`, `sparse_values`, …).
    fn export(&self, be: &dyn Backend) -> Result<BTreeMap<String, HostTensor>>;
    /// Parameters stored for the matrix (not the bias), for kept-ratio accounting.
    fn stored_matrix_params(&self) -> usize;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Ownership as `Any`, to move a layer's parts into another form.
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

/// The dense linear layer.
pub struct DenseLinear {
    pub weight: Param,
    pub bias: Param,
}

impl DenseLinear {
    /// From host weights (`out × in`) and bias (`out`); `prefix` is the Hugging
    /// Face module name, e.g. `bert.encoder.layer.0.attention.self.query`.
    pub fn from_host(
        be: &dyn Backend,
        prefix: &str,
        w: &[f32],
        b: &[f32],
        out: usize,
        inp: usize,
    ) -> Result<DenseLinear> {
        if w.len() != out * inp || b.len() != out {
            return Err(Error::shape(
                "DenseLinear",
                format!(
                    "{prefix}: weight has {} values for {out}×{inp}, bias {} for {out}",
                    w.len(),
                    b.len()
                ),
            ));
        }
        Ok(DenseLinear {
            weight: Param::from_host(be, format!("{prefix}.weight"), w, &[out, inp], true)?,
            bias: Param::from_host(be, format!("{prefix}.bias"), b, &[out], false)?,
        })
    }
}

/// `y = x·Wᵀ + b` (shared by every form that ends in a dense product).
pub fn dense_forward(
    be: &dyn Backend,
    p: Precision,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    y: &mut Tensor,
) -> Result<()> {
    let (n, inp) = x.rows_cols();
    let out = w.shape()[0];
    if w.numel() != out * inp {
        return Err(Error::shape(
            "linear forward",
            format!("x is [{n}, {inp}] but W is {:?}", w.shape()),
        ));
    }
    be.gemm(&Gemm::nt(n, out, inp).precision(p), x, w, y)?;
    if let Some(b) = b {
        be.add_row_bias(y, b)?;
    }
    Ok(())
}

/// Gradients of `y = x·Wᵀ + b`: `dW (+)= dyᵀ·x`, `db += Σ dy`, `dx = dy·W`.
#[allow(clippy::too_many_arguments)]
pub fn dense_backward(
    be: &dyn Backend,
    p: Precision,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    dw: Option<(&mut Tensor, f32)>,
    db: Option<&mut Tensor>,
    dx: Option<&mut Tensor>,
) -> Result<()> {
    let (n, inp) = x.rows_cols();
    let out = w.shape()[0];
    if let Some((dw, beta)) = dw {
        be.gemm(&Gemm::tn(out, inp, n).beta(beta).precision(p), dy, x, dw)?;
    }
    if let Some(db) = db {
        be.col_sum(dy, db, true)?;
    }
    if let Some(dx) = dx {
        be.gemm(&Gemm::nn(n, inp, out).precision(p), dy, w, dx)?;
    }
    Ok(())
}

impl LinearOp for DenseLinear {
    fn kind(&self) -> &'static str {
        "dense"
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
        dense_forward(
            be,
            ctx.precision,
            x,
            &self.weight.value,
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
        let dw = if self.weight.frozen {
            None
        } else {
            Some((&mut self.weight.grad, 1.0))
        };
        let db = if self.bias.frozen {
            None
        } else {
            Some(&mut self.bias.grad)
        };
        dense_backward(be, ctx.precision, x, &self.weight.value, dy, dw, db, dx)
    }
    fn visit_params(&mut self, f: &mut ParamVisitor<'_>) -> Result<()> {
        f(&mut self.weight)?;
        f(&mut self.bias)
    }
    fn export(&self, be: &dyn Backend) -> Result<BTreeMap<String, HostTensor>> {
        let mut m = BTreeMap::new();
        m.insert(
            "weight".into(),
            HostTensor::f32(self.weight.value.shape(), be.to_f32(&self.weight.value)?),
        );
        m.insert(
            "bias".into(),
            HostTensor::f32(self.bias.value.shape(), be.to_f32(&self.bias.value)?),
        );
        Ok(m)
    }
    fn stored_matrix_params(&self) -> usize {
        self.weight.numel()
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
