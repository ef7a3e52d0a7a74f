//! Movement pruning (hard and soft) and magnitude pruning (docs/algorithms.md §2) as
//! training hooks: each step's kept fraction follows the cubic schedule, and
//! the masks are the exact top-k of the scores (or `|W|`), per matrix or
//! global over all matrices, found and applied by the top-k kernels.
//!
//! Visibility (the measured warning of docs/algorithms.md §2): at every log
//! point the hooks report the fraction of mask entries that changed since the
//! last log ("churn") and the overlap of the movement mask with the magnitude
//! mask of the same size.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::backend::{Backend, ScoreRule, Tensor, TopkRule, TopkScope};
use crate::compress::layers::{MaskKind, MaskedLinear};
use crate::error::{Error, Result};
use crate::model::bert::{linear_prefix, Bert};
use crate::model::linear::DenseLinear;
use crate::model::param::Param;
use crate::train::schedule::CubicSchedule;
use crate::train::trainer::TrainHooks;

/// Per-matrix top-k, or one threshold over all matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PruneScope {
    #[default]
    PerMatrix,
    Global,
}

/// How movement scores start (`pruning.score_init`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScoreInit {
    /// `Sc = 0` (docs/algorithms.md §2): the mask is decided by movement alone.
    #[default]
    Zero,
    /// `Sc ∝ |W|` per matrix (see [`init_scores`]): the first masks are the
    /// magnitude masks and movement reorders them. Short runs need this: from
    /// zero the scores are still noise when pruning starts, and the random
    /// mask they give destroys the pre-trained model (recipes/movement.toml).
    Magnitude,
}

/// Sets the scores of every movement layer: for [`ScoreInit::Magnitude`],
/// `Sc = scale·drift·|W|/mean|W|` of its matrix, where `drift` is the most an
/// Adam-trained score can move over the run (`score_lr·steps/2` under the
/// linear warm-up/decay schedule: each Adam step moves a score by at most
/// about its learning rate). So `scale` is the strength of the magnitude
/// prior against movement, independent of the run's length. Called once
/// after [`install_masked`]; a resumed run then loads its trained scores
/// from the checkpoint.
pub fn init_scores(
    be: &dyn Backend,
    model: &mut Bert,
    init: ScoreInit,
    scale: f64,
    drift: f64,
) -> Result<()> {
    if init == ScoreInit::Zero {
        return Ok(());
    }
    for l in masked_layers(model) {
        let Some(sc) = l.scores.as_mut() else {
            continue;
        };
        let w = be.to_f32(&l.weight.value)?;
        let mean = w.iter().map(|v| v.abs() as f64).sum::<f64>() / w.len().max(1) as f64;
        // An all-zero matrix keeps zero scores (nothing to rank by).
        let k = if mean > 0.0 {
            scale * drift / mean
        } else {
            0.0
        };
        let v: Vec<f32> = w.iter().map(|x| (x.abs() as f64 * k) as f32).collect();
        sc.value = be.from_f32(&v, l.weight.value.shape())?;
    }
    Ok(())
}

/// Replaces every dense encoder matrix by a [`MaskedLinear`] of the given kind.
pub fn install_masked(be: &dyn Backend, model: &mut Bert, kind: MaskKind) -> Result<()> {
    for (li, layer) in model.layers.iter_mut().enumerate() {
        for slot in 0..6 {
            let prefix = linear_prefix(li, slot);
            let dense = layer.linears[slot]
                .as_any()
                .downcast_ref::<DenseLinear>()
                .ok_or_else(|| {
                    Error::msg(format!(
                        "{prefix}: pruning needs a dense matrix, found '{}'",
                        layer.linears[slot].kind()
                    ))
                })?;
            let weight = Param::new(
                be,
                format!("{prefix}.weight"),
                be.clone_tensor(&dense.weight.value)?,
                true,
            )?;
            let bias = Param::new(
                be,
                format!("{prefix}.bias"),
                be.clone_tensor(&dense.bias.value)?,
                false,
            )?;
            layer.linears[slot] = Box::new(MaskedLinear::new(be, &prefix, weight, bias, kind)?);
        }
    }
    Ok(())
}

/// The masked layers of a model, in layer / slot order.
pub fn masked_layers(model: &mut Bert) -> Vec<&mut MaskedLinear> {
    model
        .layers
        .iter_mut()
        .flat_map(|l| l.linears.iter_mut())
        .filter_map(|l| l.as_any_mut().downcast_mut::<MaskedLinear>())
        .collect()
}

/// `W ← M⊙W` and scores dropped, for every masked layer (end of pruning).
pub fn finalize_masks(be: &dyn Backend, model: &mut Bert) -> Result<()> {
    for l in masked_layers(model) {
        l.finalize(be)?;
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PruneSettings {
    pub kind: PruneKind,
    pub scope: PruneScope,
    pub schedule: CubicSchedule,
    /// Soft movement: threshold τ on σ(Sc) and L1 coefficient λ.
    pub soft_tau: f32,
    pub soft_lambda: f32,
    /// Soft movement keeps at least this fraction per matrix
    /// (docs/algorithms.md §2: 0.5 %).
    pub soft_min_kept: f64,
    /// Hard masks are recomputed every this many steps (and at the first
    /// step at the target), not every step.
    pub mask_interval: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneKind {
    Movement,
    SoftMovement,
    Magnitude,
}

impl PruneKind {
    pub fn mask_kind(self, rule: ScoreRule) -> MaskKind {
        match self {
            PruneKind::Movement => MaskKind::Movement(rule),
            PruneKind::SoftMovement => MaskKind::SoftMovement,
            PruneKind::Magnitude => MaskKind::Magnitude,
        }
    }
}

/// The training hooks of pruning.
pub struct PruneHooks {
    pub settings: PruneSettings,
    /// Kept fraction the schedule asked for at the last update.
    pub target_kept: f64,
    /// Entries kept in total / in all matrices at the last update.
    pub kept: usize,
    pub total: usize,
    /// The threshold of the last update (global scope: the single one).
    pub last_threshold: Option<f32>,
    /// Host copy of the masks at the last log point (for churn).
    snapshot: Option<Vec<Vec<u8>>>,
}

impl PruneHooks {
    pub fn new(settings: PruneSettings) -> PruneHooks {
        PruneHooks {
            target_kept: settings.schedule.initial,
            settings,
            kept: 0,
            total: 0,
            last_threshold: None,
            snapshot: None,
        }
    }

    /// Recomputes every mask for kept fraction `kept` (⌊kept·numel⌋ entries).
    pub fn update_masks(&mut self, be: &dyn Backend, model: &mut Bert, kept: f64) -> Result<()> {
        let s = self.settings.clone();
        let mut layers = masked_layers(model);
        let total: usize = layers.iter().map(|l| l.numel()).sum();
        let mut kept_now = 0usize;
        match s.kind {
            PruneKind::SoftMovement => {
                for l in layers.iter_mut() {
                    let n = l.numel();
                    let coef = s.soft_lambda / n as f32;
                    let MaskedLinear { scores, mask, .. } = &mut **l;
                    let sc = scores
                        .as_mut()
                        .ok_or_else(|| Error::msg("soft movement layer without scores"))?;
                    let Param { value, grad, .. } = sc;
                    let mut k = be.sigmoid_mask(value, s.soft_tau, mask, Some(grad), coef)?;
                    let min_k = (s.soft_min_kept * n as f64).ceil() as usize;
                    if k < min_k {
                        let th = be.topk_threshold(
                            &[&*value],
                            min_k,
                            TopkRule::ExactK,
                            TopkScope::Entries,
                            false,
                        )?;
                        k = be.topk_apply(&[&*value], &th, &mut [mask], &mut [])?;
                    }
                    l.kept = k;
                    kept_now += k;
                }
            }
            PruneKind::Movement | PruneKind::Magnitude => {
                let abs = s.kind == PruneKind::Magnitude;
                match s.scope {
                    PruneScope::PerMatrix => {
                        for l in layers.iter_mut() {
                            let k = (kept * l.numel() as f64).floor() as usize;
                            let MaskedLinear {
                                scores,
                                mask,
                                weight,
                                ..
                            } = &mut **l;
                            let src: &Tensor = if abs {
                                &weight.value
                            } else {
                                &scores.as_ref().expect("movement scores").value
                            };
                            let th = be.topk_threshold(
                                &[src],
                                k,
                                TopkRule::ExactK,
                                TopkScope::Entries,
                                abs,
                            )?;
                            let got = be.topk_apply(&[src], &th, &mut [mask], &mut [])?;
                            self.last_threshold = Some(th.threshold);
                            l.kept = got;
                            kept_now += got;
                        }
                    }
                    PruneScope::Global => {
                        let k = (kept * total as f64).floor() as usize;
                        let mut srcs: Vec<&Tensor> = Vec::with_capacity(layers.len());
                        let mut masks: Vec<&mut Tensor> = Vec::with_capacity(layers.len());
                        for l in layers.iter_mut() {
                            let MaskedLinear {
                                scores,
                                mask,
                                weight,
                                ..
                            } = &mut **l;
                            srcs.push(if abs {
                                &weight.value
                            } else {
                                &scores.as_ref().expect("movement scores").value
                            });
                            masks.push(mask);
                        }
                        let th =
                            be.topk_threshold(&srcs, k, TopkRule::ExactK, TopkScope::Entries, abs)?;
                        kept_now = be.topk_apply(&srcs, &th, &mut masks, &mut [])?;
                        self.last_threshold = Some(th.threshold);
                        drop(srcs);
                        drop(masks);
                        for l in layers.iter_mut() {
                            l.kept = be.to_u8(&l.mask)?.iter().filter(|&&m| m != 0).count();
                        }
                    }
                }
            }
        }
        self.target_kept = kept;
        self.kept = kept_now;
        self.total = total;
        Ok(())
    }

    /// Mask churn since the last call and overlap with the magnitude mask of the same size.
    fn diagnostics(&mut self, be: &dyn Backend, model: &mut Bert) -> Result<(Option<f64>, f64)> {
        let mut masks = Vec::new();
        let mut overlap_num = 0usize;
        let mut overlap_den = 0usize;
        for l in masked_layers(model) {
            let m = be.to_u8(&l.mask)?;
            if self.settings.kind != PruneKind::Magnitude {
                let k = m.iter().filter(|&&v| v != 0).count();
                let th = be.topk_threshold(
                    &[&l.weight.value],
                    k,
                    TopkRule::ExactK,
                    TopkScope::Entries,
                    true,
                )?;
                let mut mag = be.zeros(l.weight.value.shape(), crate::backend::DType::U8)?;
                be.topk_apply(&[&l.weight.value], &th, &mut [&mut mag], &mut [])?;
                let mag = be.to_u8(&mag)?;
                overlap_num += m
                    .iter()
                    .zip(&mag)
                    .filter(|(a, b)| **a != 0 && **b != 0)
                    .count();
                overlap_den += k;
            }
            masks.push(m);
        }
        let churn = self.snapshot.as_ref().map(|old| {
            let changed: usize = old
                .iter()
                .zip(&masks)
                .map(|(a, b)| a.iter().zip(b).filter(|(x, y)| x != y).count())
                .sum();
            let n: usize = masks.iter().map(|m| m.len()).sum();
            changed as f64 / n.max(1) as f64
        });
        self.snapshot = Some(masks);
        let overlap = if overlap_den == 0 {
            1.0
        } else {
            overlap_num as f64 / overlap_den as f64
        };
        Ok((churn, overlap))
    }

    pub fn kept_fraction(&self) -> f64 {
        self.kept as f64 / self.total.max(1) as f64
    }
}

impl TrainHooks for PruneHooks {
    fn uses_logits(&self) -> bool {
        false
    }
    fn on_step_begin(&mut self, be: &dyn Backend, model: &mut Bert, step: u64) -> Result<()> {
        let sched = &self.settings.schedule;
        let kept = sched.kept(step);
        let every = self.settings.mask_interval.max(1);
        let reaches_target =
            kept == sched.final_kept && (step == 0 || sched.kept(step - 1) != kept);
        // The mask is model state (checkpointed), so skipping is resume-safe.
        if self.settings.kind != PruneKind::SoftMovement
            && every > 1
            && step % every != 0
            && !reaches_target
        {
            return Ok(());
        }
        self.update_masks(be, model, kept)
    }

    fn log_fields(&mut self, be: &dyn Backend, model: &mut Bert) -> Result<Vec<(String, Value)>> {
        let (churn, overlap) = self.diagnostics(be, model)?;
        let densities: Vec<f64> = masked_layers(model)
            .iter()
            .map(|l| l.kept as f64 / l.numel() as f64)
            .collect();
        let mut v = vec![
            ("kept_target".to_string(), json!(self.target_kept)),
            ("kept_ratio".to_string(), json!(self.kept_fraction())),
            ("layer_density".to_string(), json!(densities)),
            ("mask_churn".to_string(), json!(churn)),
        ];
        if self.settings.kind != PruneKind::Magnitude {
            v.push(("magnitude_overlap".to_string(), json!(overlap)));
        }
        if let Some(t) = self.last_threshold {
            v.push(("threshold".to_string(), json!(t)));
        }
        Ok(v)
    }

    fn bar_note(&self) -> String {
        format!("kept {:.3}", self.kept_fraction())
    }

    fn state(&self) -> Value {
        json!({"target_kept": self.target_kept, "kept": self.kept, "total": self.total, "last_threshold": self.last_threshold})
    }

    fn restore(&mut self, state: &Value) -> Result<()> {
        // Masks themselves are model state (restored with the checkpoint);
        // these are the reported figures.
        self.target_kept = state["target_kept"].as_f64().unwrap_or(self.target_kept);
        self.kept = state["kept"].as_u64().unwrap_or(0) as usize;
        self.total = state["total"].as_u64().unwrap_or(0) as usize;
        self.last_threshold = state["last_threshold"].as_f64().map(|v| v as f32);
        Ok(())
    }
}

/// `LinearOp` kinds present, for messages.
pub fn layer_kinds(model: &Bert) -> Vec<&'static str> {
    model
        .layers
        .iter()
        .flat_map(|l| l.linears.iter().map(|x| x.kind()))
        .collect()
}

/// Shorthand used by tests: the host masks of every masked layer.
pub fn host_masks(be: &dyn Backend, model: &mut Bert) -> Result<Vec<Vec<u8>>> {
    masked_layers(model)
        .iter()
        .map(|l| be.to_u8(&l.mask))
        .collect()
}
