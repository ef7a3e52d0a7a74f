//! CPU references of the compression kernels (SPEC §6). TEMPORARY STUBS: being written.
#![allow(unused_variables, clippy::too_many_arguments)]
use super::*;

fn todo(op: &str) -> Error {
    Error::msg(format!("{op}: not implemented yet"))
}

pub(crate) fn movement_grads(
    w: &Tensor,
    g: &Tensor,
    mask: &Tensor,
    grad_w: &mut Tensor,
    scores: &mut Tensor,
    rule: ScoreRule,
) -> Result<()> {
    Err(todo("movement_grads"))
}
pub(crate) fn losparse_importance(
    s: &Tensor,
    grad_s: &Tensor,
    ipt: &mut Tensor,
    ibar: &mut Tensor,
    ubar: Option<&mut Tensor>,
    step: &ImportanceStep,
) -> Result<()> {
    Err(todo("losparse_importance"))
}
pub(crate) fn topk_threshold(
    scores: &[&Tensor],
    k: usize,
    rule: TopkRule,
    scope: TopkScope,
    abs: bool,
) -> Result<TopkThreshold> {
    Err(todo("topk_threshold"))
}
pub(crate) fn topk_apply(
    scores: &[&Tensor],
    th: &TopkThreshold,
    masks: &mut [&mut Tensor],
    apply: &mut [&mut Tensor],
) -> Result<usize> {
    Err(todo("topk_apply"))
}
pub(crate) fn sigmoid_mask(
    scores: &Tensor,
    tau: f32,
    mask: &mut Tensor,
    dscores: Option<&mut Tensor>,
    coef: f32,
) -> Result<usize> {
    Err(todo("sigmoid_mask"))
}
pub(crate) fn lowrank_sparse_forward(
    be: &CpuBackend,
    x: &Tensor,
    u: &Tensor,
    v: &Tensor,
    s: Option<&Tensor>,
    mask: Option<&Tensor>,
    bias: Option<&Tensor>,
    w_eff: &mut Tensor,
    y: &mut Tensor,
    precision: Precision,
) -> Result<()> {
    Err(todo("lowrank_sparse_forward"))
}
pub(crate) fn lowrank_sparse_backward(
    be: &CpuBackend,
    x: &Tensor,
    u: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    w_eff: &Tensor,
    dy: &Tensor,
    dx: Option<&mut Tensor>,
    du: &mut Tensor,
    dv: &mut Tensor,
    ds: Option<&mut Tensor>,
    db: Option<&mut Tensor>,
    dw_scratch: &mut Tensor,
    precision: Precision,
) -> Result<()> {
    Err(todo("lowrank_sparse_backward"))
}
