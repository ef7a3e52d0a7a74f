//! AdamW over every trainable parameter (docs/algorithms.md §1): decoupled weight decay,
//! none on biases and LayerNorm weights, gradient-norm clipping on the device, and separate
//! settings for movement-pruning scores.

use serde::{Deserialize, Serialize};

use crate::backend::{AdamWSlot, AdamWStep, Backend, DType, DeviceKind, Tensor};
use crate::error::Result;
use crate::model::param::{Param, ParamGroup};
use crate::model::Bert;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Learning rate of movement scores (no weight decay), docs/algorithms.md §2.
    pub score_lr: f32,
    /// Global gradient-norm clip (0 = off).
    pub max_grad_norm: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 2e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            score_lr: 1e-2,
            max_grad_norm: 1.0,
        }
    }
}

/// Gradient-norm clipping of a step, as [`clip_gradients`] did it.
pub struct Clip {
    /// `[norm, factor]` (F32, 2 elements), where the gradients live.
    pub stats: Tensor,
    /// The `grad_scale` the optimizer applies: the factor itself on the CPU
    /// (the gradients were not scaled), 1 on a GPU (they were).
    pub grad_scale: f32,
}

/// Clips every trainable gradient (weights and scores together, as
/// `clip_grad_norm_(model.parameters())` takes them) by their global norm,
/// without waiting for the device. On a GPU the norm and factor stay there
/// and the gradients are scaled in place (one launch), so the optimizer
/// runs with `grad_scale` 1; on the CPU, where reading is free, the factor
/// goes to the optimizer as its `grad_scale` instead of a pass over every
/// gradient. Both give the same bits: `(g·f)·1 = g·f`.
pub fn clip_gradients(be: &dyn Backend, model: &mut Bert, max_norm: f32) -> Result<Clip> {
    let mut stats = be.empty(&[2], DType::F32)?;
    let mut walk = |f: &mut dyn FnMut(&mut Tensor) -> Result<()>| {
        model.visit_params(&mut |p| if p.frozen { Ok(()) } else { f(&mut p.grad) })
    };
    be.grad_norm_clip(&mut walk, max_norm, &mut stats)?;
    let grad_scale = if be.kind() == DeviceKind::Cpu {
        be.to_f32(&stats)?[1]
    } else {
        be.scale_by_clip_factor(&mut walk, &stats)?;
        1.0
    };
    Ok(Clip { stats, grad_scale })
}

/// The AdamW hyper-parameters of one parameter at this step: the group's
/// learning rate (`lr` for weights, `score_lr` for scores) and weight decay.
pub fn step_params(
    cfg: &AdamWConfig,
    p: &Param,
    step: u64,
    lr: f32,
    score_lr: f32,
    grad_scale: f32,
) -> AdamWStep {
    let (lr, wd) = match p.group {
        ParamGroup::Weights => (lr, if p.decay { cfg.weight_decay } else { 0.0 }),
        ParamGroup::Scores => (score_lr, 0.0),
    };
    AdamWStep {
        lr,
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.eps,
        weight_decay: wd,
        step,
        grad_scale,
    }
}

/// One AdamW update of a parameter (moments allocated on first use).
pub fn adamw_param(be: &dyn Backend, p: &mut Param, hp: &AdamWStep) -> Result<()> {
    if p.frozen {
        return Ok(());
    }
    p.adam_state(be)?;
    let Param {
        value, grad, adam, ..
    } = p;
    let (m, v) = adam.as_mut().expect("allocated by adam_state");
    be.adamw(value, grad, m, v, hp)
}

/// One AdamW update of every trainable parameter `include` accepts, each with
/// `hp_for`'s hyper-parameters (moments allocated on first use): one launch
/// on the GPU, the same result as [`adamw_param`] on each in turn.
pub fn adamw_all(
    be: &dyn Backend,
    model: &mut Bert,
    include: &dyn Fn(&Param) -> bool,
    hp_for: &dyn Fn(&Param) -> AdamWStep,
) -> Result<()> {
    model.visit_params(&mut |p| {
        if !p.frozen && include(p) {
            p.adam_state(be)?;
        }
        Ok(())
    })?;
    be.adamw_many(&mut |f| {
        model.visit_params(&mut |p| {
            if p.frozen || !include(p) {
                return Ok(());
            }
            let hp = hp_for(p);
            let Param {
                value, grad, adam, ..
            } = p;
            let (m, v) = adam.as_mut().expect("allocated above");
            f(AdamWSlot {
                p: value,
                g: grad,
                m,
                v,
                hp,
            })
        })
    })
}
