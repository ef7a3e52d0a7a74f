//! LPAF (Ren & Zhu; docs/algorithms.md §4): movement pruning, then sparsity-aware SVD of
//! each pruned matrix with ranks allocated to meet the budget exactly, then
//! mixed-rank fine-tuning in which each layer uses its frozen sparse matrix
//! with a probability that falls to zero, ending purely low-rank.
//!
//! Stage 1 is [`crate::compress::prune`]; this module is stages 2–4.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::backend::{Backend, Tensor, WeightedSvdOptions};
use crate::compress::factorize::{bias_param, factorize};
use crate::compress::layers::{FactorizedLinear, MaskedLinear, MixedRankLinear};
use crate::compress::rank::{allocate, numerical_rank, singular_values_many, RankAllocation};
use crate::error::{Error, Result};
use crate::model::bert::{linear_prefix, Bert};
use crate::train::trainer::TrainHooks;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FactorizeSettings {
    /// Weight ω of pruned entries in the objective (0: reconstruct only the kept weights).
    pub omega: f32,
    pub em_steps: usize,
    pub rel_tol: f64,
    pub power_iters: usize,
    pub init_power_iters: usize,
    pub allocation: RankAllocation,
}

/// One matrix of the factorization report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FactorizedMatrix {
    pub name: String,
    pub rank: usize,
    /// Numerical rank of the pruned matrix (σ > 1e-3·σ_max).
    pub numerical_rank: usize,
    /// Weighted objective after the initial SVD and after the last EM step.
    pub objective_first: f64,
    pub objective_last: f64,
    pub em_steps: usize,
}

/// Replaces every (finalized) masked matrix `W_s` by a mixed-rank layer whose
/// factors minimise `Σ Ω (W_s − U·V)²` at the allocated rank, with
/// `Σ r·(out+in) ≤ ⌊kept · dense params⌋`.
pub fn factorize_pruned(
    be: &dyn Backend,
    model: &mut Bert,
    kept: f64,
    s: &FactorizeSettings,
    seed: u64,
) -> Result<Vec<FactorizedMatrix>> {
    if !(kept > 0.0 && kept <= 1.0) {
        return Err(Error::msg(format!("kept ratio {kept} must be in (0, 1]")));
    }
    let mut names = Vec::new();
    let mut shapes = Vec::new();
    let mut host = Vec::new();
    // The masked weights W_s and masks, on the backend, for the batched solver.
    let mut ws: Vec<Tensor> = Vec::new();
    let mut masks: Vec<Tensor> = Vec::new();
    for (li, layer) in model.layers.iter().enumerate() {
        for (slot, l) in layer.linears.iter().enumerate() {
            let m = l.as_any().downcast_ref::<MaskedLinear>().ok_or_else(|| {
                Error::msg(format!(
                    "{}: LPAF factorizes pruned matrices, found '{}'",
                    linear_prefix(li, slot),
                    l.kind()
                ))
            })?;
            let mut w = be.empty(m.weight.value.shape(), crate::backend::DType::F32)?;
            be.mul_mask(&m.weight.value, &m.mask, &mut w)?;
            host.push(be.to_f32(&w)?);
            ws.push(w);
            masks.push(be.clone_tensor(&m.mask)?);
            shapes.push((m.out_features_(), m.in_features_()));
            names.push(linear_prefix(li, slot));
        }
    }
    let dense: usize = shapes.iter().map(|(o, i)| o * i).sum();
    let budget = (kept * dense as f64).floor() as usize;
    let mats: Vec<(&[f32], usize, usize)> = host
        .iter()
        .zip(&shapes)
        .map(|(h, &(o, i))| (&h[..], o, i))
        .collect();
    let svals = singular_values_many(&mats)?;
    let ranks = allocate(s.allocation, &svals, &shapes, budget)?;
    let opts = WeightedSvdOptions {
        max_steps: s.em_steps,
        rel_tol: s.rel_tol,
        power_iters: s.power_iters,
        init_power_iters: s.init_power_iters,
        seed,
    };
    let results = factorize(be, &ws, Some(&masks), s.omega, &ranks, &opts)?;
    let mut report = Vec::new();
    let mut idx = 0;
    for layer in model.layers.iter_mut() {
        for slot in 0..6 {
            let r = &results[idx];
            let (o, i) = shapes[idx];
            let prefix = &names[idx];
            let old = layer.linears[slot]
                .as_any()
                .downcast_ref::<MaskedLinear>()
                .expect("checked above");
            let bias = bias_param(be, prefix, &old.bias.value)?;
            let factor = FactorizedLinear::new(be, prefix, &r.u, &r.v, bias, o, i, ranks[idx])?;
            let sparse =
                std::mem::replace(&mut ws[idx], be.zeros(&[0], crate::backend::DType::F32)?);
            layer.linears[slot] = Box::new(MixedRankLinear::new(factor, sparse, idx as u64));
            report.push(FactorizedMatrix {
                name: prefix.clone(),
                rank: ranks[idx],
                numerical_rank: numerical_rank(&svals[idx], 1e-3),
                objective_first: r.objective.first().copied().unwrap_or(0.0),
                objective_last: r.objective.last().copied().unwrap_or(0.0),
                em_steps: r.objective.len().saturating_sub(1),
            });
            idx += 1;
        }
    }
    Ok(report)
}

trait Shape2 {
    fn out_features_(&self) -> usize;
    fn in_features_(&self) -> usize;
}
impl Shape2 for MaskedLinear {
    fn out_features_(&self) -> usize {
        self.weight.value.shape()[0]
    }
    fn in_features_(&self) -> usize {
        self.weight.value.shape()[1]
    }
}

pub fn mixed_layers(model: &mut Bert) -> Vec<&mut MixedRankLinear> {
    model
        .layers
        .iter_mut()
        .flat_map(|l| l.linears.iter_mut())
        .filter_map(|l| l.as_any_mut().downcast_mut::<MixedRankLinear>())
        .collect()
}

/// Ends mixed-rank training: every layer becomes its factorized form.
pub fn finalize_lowrank(model: &mut Bert) {
    for layer in model.layers.iter_mut() {
        for slot in 0..6 {
            let is_mixed = layer.linears[slot].as_any().is::<MixedRankLinear>();
            if is_mixed {
                let placeholder: Box<dyn crate::model::LinearOp> = Box::new(Placeholder);
                let old = std::mem::replace(&mut layer.linears[slot], placeholder);
                let mixed = old
                    .into_any()
                    .downcast::<MixedRankLinear>()
                    .expect("checked");
                layer.linears[slot] = Box::new(mixed.factor);
            }
        }
    }
}

/// `p_t` falls linearly from `p0` to 0 at `end_step`, then stays 0
/// (docs/algorithms.md §4.4).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MixedRankSchedule {
    pub p0: f64,
    pub end_step: u64,
}

impl MixedRankSchedule {
    pub fn p(&self, step: u64) -> f64 {
        if step >= self.end_step || self.end_step == 0 {
            0.0
        } else {
            self.p0 * (1.0 - step as f64 / self.end_step as f64)
        }
    }
}

pub struct MixedRankHooks {
    pub schedule: MixedRankSchedule,
    pub p: f64,
}

impl TrainHooks for MixedRankHooks {
    fn uses_logits(&self) -> bool {
        false
    }
    fn on_step_begin(&mut self, _be: &dyn Backend, model: &mut Bert, step: u64) -> Result<()> {
        self.p = self.schedule.p(step);
        for l in mixed_layers(model) {
            l.p_sparse = self.p;
        }
        Ok(())
    }
    fn log_fields(&mut self, _be: &dyn Backend, model: &mut Bert) -> Result<Vec<(String, Value)>> {
        let ranks: Vec<usize> = mixed_layers(model)
            .iter()
            .map(|l| l.factor.rank())
            .collect();
        Ok(vec![
            ("p_sparse".into(), json!(self.p)),
            ("layer_rank".into(), json!(ranks)),
        ])
    }
    fn bar_note(&self) -> String {
        format!("p_sparse {:.2}", self.p)
    }
}

/// A stand-in used while moving a layer out of its slot.
struct Placeholder;
impl crate::model::LinearOp for Placeholder {
    fn kind(&self) -> &'static str {
        "placeholder"
    }
    fn in_features(&self) -> usize {
        0
    }
    fn out_features(&self) -> usize {
        0
    }
    fn forward(
        &mut self,
        _: &dyn Backend,
        _: &crate::model::StepCtx,
        _: &Tensor,
        _: &mut Tensor,
    ) -> Result<()> {
        Err(Error::msg("placeholder layer used"))
    }
    fn backward(
        &mut self,
        _: &dyn Backend,
        _: &crate::model::StepCtx,
        _: &Tensor,
        _: &Tensor,
        _: Option<&mut Tensor>,
    ) -> Result<()> {
        Err(Error::msg("placeholder layer used"))
    }
    fn visit_params(&mut self, _: &mut crate::model::param::ParamVisitor<'_>) -> Result<()> {
        Ok(())
    }
    fn export(
        &self,
        _: &dyn Backend,
    ) -> Result<std::collections::BTreeMap<String, crate::model::io::HostTensor>> {
        Ok(Default::default())
    }
    fn stored_matrix_params(&self) -> usize {
        0
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}
