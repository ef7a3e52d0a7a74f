//! LoSparse (Li et al., ICML 2023; docs/algorithms.md §3): `W ≈ U·V + S`, U·V from a
//! truncated SVD, S the residual, pruned by a global threshold on smoothed
//! sensitivity scores that follows a cubic schedule with its own unit.
//!
//! Differences from the published code, on purpose: the pruner state (score
//! averages, window position) is checkpointed, so a resumed run is identical;
//! the option `hard_mask` keeps pruned entries at zero between pruning events.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::backend::{Backend, DType, ImportanceStep, Tensor, TopkRule, TopkScope};
use crate::compress::factorize::{bias_param, plain_svd};
use crate::compress::layers::{sparse_nnz, LowRankSparseLinear};
use crate::compress::rank::uniform_rank;
use crate::error::{Error, Result};
use crate::model::bert::{linear_prefix, Bert};
use crate::model::linear::DenseLinear;
use crate::model::param::Param;
use crate::train::optimizer::adamw_all;
use crate::train::schedule::CubicSchedule;
use crate::train::trainer::TrainHooks;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoSparseSettings {
    /// ρ: low-rank parameter ratio.
    pub rank_ratio: f64,
    /// γ_T: final kept fraction of S entries (over all matrices).
    pub final_kept: f64,
    /// Δ: window / pruning interval in steps.
    pub delta_t: u64,
    pub beta1: f32,
    /// 1.0 = sensitivity only (published default); < 1 also tracks uncertainty.
    pub beta2: f32,
    /// Rows of S are scored (and pruned) together (published default).
    pub structured: bool,
    pub hard_mask: bool,
    /// The schedule's unit U in steps, and warm-up / cool-down lengths in units.
    pub unit_steps: u64,
    pub initial_warmup: u64,
    pub final_warmup: u64,
}

/// Replaces every dense encoder matrix by `U·V + S` at rank `⌈ρ·out·in/(out+in)⌉`.
/// The SVD runs on the backend (the weighted solver with ω = 1, i.e. plain
/// truncated SVD). Returns the total low-rank parameter count.
pub fn install_losparse(
    be: &dyn Backend,
    model: &mut Bert,
    s: &LoSparseSettings,
    seed: u64,
) -> Result<usize> {
    let mut lowrank_params = 0;
    let nl = model.layers.len();
    for li in 0..nl {
        // One batched SVD call per layer (6 matrices of mixed shapes).
        let mut ws = Vec::new();
        let mut ranks = Vec::new();
        for slot in 0..6 {
            let l = &model.layers[li].linears[slot];
            let d = l.as_any().downcast_ref::<DenseLinear>().ok_or_else(|| {
                Error::msg(format!(
                    "{}: LoSparse starts from a dense matrix, found '{}'",
                    linear_prefix(li, slot),
                    l.kind()
                ))
            })?;
            let (o, i) = (d.out_features_(), d.in_features_());
            ws.push(be.clone_tensor(&d.weight.value)?);
            ranks.push(uniform_rank(s.rank_ratio, o, i));
        }
        let factors = plain_svd(be, &ws, &ranks, seed ^ li as u64)?;
        for (slot, f) in factors.into_iter().enumerate() {
            let prefix = linear_prefix(li, slot);
            let d = model.layers[li].linears[slot]
                .as_any()
                .downcast_ref::<DenseLinear>()
                .expect("checked above");
            let (o, i, rank) = (d.out_features_(), d.in_features_(), ranks[slot]);
            let w = be.to_f32(&ws[slot])?;
            let (u, v) = (f.u, f.v);
            // S = W − U·V on the host in f64 (once).
            let mut sres = w.clone();
            for a in 0..o {
                for k in 0..rank {
                    let uk = u[a * rank + k] as f64;
                    for b in 0..i {
                        sres[a * i + b] =
                            (sres[a * i + b] as f64 - uk * v[k * i + b] as f64) as f32;
                    }
                }
            }
            let bias = bias_param(be, &prefix, &d.bias.value)?;
            let layer = LowRankSparseLinear::new(
                be,
                &prefix,
                &u,
                &v,
                &sres,
                bias,
                o,
                i,
                rank,
                s.hard_mask,
                s.beta2 < 1.0,
            )?;
            lowrank_params += rank * (o + i);
            model.layers[li].linears[slot] = Box::new(layer);
        }
    }
    Ok(lowrank_params)
}

trait DenseShape {
    fn out_features_(&self) -> usize;
    fn in_features_(&self) -> usize;
}
impl DenseShape for DenseLinear {
    fn out_features_(&self) -> usize {
        self.weight.value.shape()[0]
    }
    fn in_features_(&self) -> usize {
        self.weight.value.shape()[1]
    }
}

pub fn losparse_layers(model: &mut Bert) -> Vec<&mut LowRankSparseLinear> {
    model
        .layers
        .iter_mut()
        .flat_map(|l| l.linears.iter_mut())
        .filter_map(|l| l.as_any_mut().downcast_mut::<LowRankSparseLinear>())
        .collect()
}

pub struct LoSparseHooks {
    pub settings: LoSparseSettings,
    pub schedule: CubicSchedule,
    /// S entries kept at the last pruning, and the total.
    pub kept: usize,
    pub total: usize,
    pub last_threshold: Option<f32>,
    pub prunings: u64,
    /// Importance windows closed so far (Ī exists once one has).
    pub windows_closed: u64,
}

impl LoSparseHooks {
    pub fn new(settings: LoSparseSettings, total_steps: u64) -> LoSparseHooks {
        let u = settings.unit_steps.max(1);
        let schedule = CubicSchedule::new(
            1.0,
            settings.final_kept,
            total_steps,
            settings.initial_warmup * u,
            settings.final_warmup * u,
        );
        LoSparseHooks {
            settings,
            schedule,
            kept: 0,
            total: 0,
            last_threshold: None,
            prunings: 0,
            windows_closed: 0,
        }
    }

    /// Whether step `t` (0-based, after its optimizer update) prunes: every Δ
    /// steps inside the cubic phase, every step after it.
    pub fn prunes_at(&self, t: u64) -> bool {
        let sch = &self.schedule;
        if t < sch.warmup {
            return false;
        }
        if sch.in_cubic_phase(t) {
            (t + 1) % self.settings.delta_t.max(1) == 0
        } else {
            true
        }
    }

    /// Zeroes S below the global threshold keeping fraction `kept` of all S entries.
    pub fn prune(&mut self, be: &dyn Backend, model: &mut Bert, kept: f64) -> Result<()> {
        let s = self.settings.clone();
        let mut layers = losparse_layers(model);
        let total: usize = layers.iter().map(|l| l.s.numel()).sum();
        // Scores: Ī, or Ī·Ū with uncertainty. Before the first window has
        // closed (a run whose cubic phase is shorter than Δ) Ī is still zero
        // everywhere: every entry ties at the threshold and is kept, so that
        // pruning keeps all of S, with or without uncertainty.
        let early = self.windows_closed == 0;
        let mut products = Vec::new();
        if s.beta2 < 1.0 && !early {
            for l in layers.iter() {
                let mut p = be.empty(l.ibar.shape(), DType::F32)?;
                be.mul(
                    &l.ibar,
                    l.ubar.as_ref().expect("ubar allocated when beta2 < 1"),
                    &mut p,
                )?;
                products.push(p);
            }
        }
        let k = (kept * total as f64).floor() as usize;
        let scope = if s.structured {
            TopkScope::RowMean
        } else {
            TopkScope::Entries
        };
        let mut srcs: Vec<&Tensor> = Vec::new();
        let mut masks: Vec<&mut Tensor> = Vec::new();
        let mut targets: Vec<&mut Tensor> = Vec::new();
        for (idx, l) in layers.iter_mut().enumerate() {
            let LowRankSparseLinear {
                ibar, mask, s: sp, ..
            } = &mut **l;
            srcs.push(if s.beta2 < 1.0 && !early {
                &products[idx]
            } else {
                &*ibar
            });
            masks.push(mask);
            targets.push(&mut sp.value);
        }
        let th = be.topk_threshold(&srcs, k, TopkRule::KeepTies, scope, false)?;
        let got = be.topk_apply(&srcs, &th, &mut masks, &mut targets)?;
        drop(srcs);
        drop(masks);
        drop(targets);
        if s.hard_mask {
            // Pruned entries lose their Adam state too.
            for l in layers.iter_mut() {
                let LowRankSparseLinear { s: sp, mask, .. } = &mut **l;
                if let Some((m, v)) = &mut sp.adam {
                    for t in [m, v] {
                        let mut tmp = be.empty(t.shape(), DType::F32)?;
                        be.mul_mask(t, mask, &mut tmp)?;
                        *t = tmp;
                    }
                }
            }
        }
        self.kept = got;
        self.total = total;
        self.last_threshold = Some(th.threshold);
        self.prunings += 1;
        Ok(())
    }

    pub fn kept_fraction(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.kept as f64 / self.total as f64
        }
    }
}

impl TrainHooks for LoSparseHooks {
    fn uses_logits(&self) -> bool {
        false
    }
    fn custom_update(
        &mut self,
        be: &dyn Backend,
        model: &mut Bert,
        hp_for: &dyn Fn(&Param) -> crate::backend::AdamWStep,
    ) -> Result<bool> {
        // Every parameter but the S matrices: plain AdamW.
        let sparse_names: std::collections::HashSet<String> = losparse_layers(model)
            .iter()
            .map(|l| l.s.name.clone())
            .collect();
        adamw_all(be, model, &|p| !sparse_names.contains(&p.name), hp_for)?;
        // S: AdamW fused with the importance update (after the step, with ∇S).
        let step_hp = {
            let l = losparse_layers(model);
            l.first().map(|l| hp_for(&l.s))
        };
        let Some(first_hp) = step_hp else {
            return Ok(true);
        };
        let t = first_hp.step - 1; // 0-based step
        let delta = self.settings.delta_t.max(1);
        let step = ImportanceStep {
            count: (t % delta + 1) as u32,
            close: (t + 1) % delta == 0,
            beta1: self.settings.beta1,
            beta2: self.settings.beta2,
        };
        for l in losparse_layers(model) {
            let hp = hp_for(&l.s);
            let LowRankSparseLinear {
                s, ipt, ibar, ubar, ..
            } = l;
            if s.frozen {
                continue;
            }
            s.adam_state(be)?;
            let Param {
                value, grad, adam, ..
            } = s;
            let (m, v) = adam.as_mut().expect("allocated");
            be.adamw_with_importance(value, grad, m, v, &hp, ipt, ibar, ubar.as_mut(), &step)?;
        }
        if step.close {
            self.windows_closed += 1;
        }
        Ok(true)
    }

    fn on_step_end(&mut self, be: &dyn Backend, model: &mut Bert, step: u64) -> Result<()> {
        if self.prunes_at(step) {
            let kept = self.schedule.kept(step);
            self.prune(be, model, kept)?;
        }
        Ok(())
    }

    fn log_fields(&mut self, be: &dyn Backend, model: &mut Bert) -> Result<Vec<(String, Value)>> {
        let mut dens = Vec::new();
        for l in losparse_layers(model) {
            dens.push(sparse_nnz(be, l)? as f64 / l.s.numel() as f64);
        }
        Ok(vec![
            ("s_kept_ratio".into(), json!(self.kept_fraction())),
            ("s_layer_density".into(), json!(dens)),
            ("threshold".into(), json!(self.last_threshold)),
            ("prunings".into(), json!(self.prunings)),
        ])
    }

    fn bar_note(&self) -> String {
        format!("S kept {:.3}", self.kept_fraction())
    }

    fn state(&self) -> Value {
        json!({
            "kept": self.kept,
            "total": self.total,
            "last_threshold": self.last_threshold,
            "prunings": self.prunings,
            "windows_closed": self.windows_closed
        })
    }

    fn restore(&mut self, state: &Value) -> Result<()> {
        self.kept = state["kept"].as_u64().unwrap_or(0) as usize;
        self.total = state["total"].as_u64().unwrap_or(0) as usize;
        self.last_threshold = state["last_threshold"].as_f64().map(|v| v as f32);
        self.prunings = state["prunings"].as_u64().unwrap_or(0);
        self.windows_closed = state["windows_closed"].as_u64().unwrap_or(0);
        Ok(())
    }
}
