//! Recipes: one TOML file per method (see `recipes/`), every hyper-parameter of
//! docs/algorithms.md named. Unknown keys are errors; impossible budgets are
//! refused before any work starts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::backend::ScoreRule;
use crate::compress::distill::DistillSettings;
use crate::compress::prune::{PruneScope, ScoreInit};
use crate::compress::rank::RankAllocation;
use crate::data::task::TaskSpec;
use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::train::config::TrainSection;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Movement,
    SoftMovement,
    Magnitude,
    Svd,
    Losparse,
    Lpaf,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Movement => "movement",
            Method::SoftMovement => "soft_movement",
            Method::Magnitude => "magnitude",
            Method::Svd => "svd",
            Method::Losparse => "losparse",
            Method::Lpaf => "lpaf",
        }
    }
}

fn d_kept() -> f64 {
    0.1
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    /// Parameters kept in the compressible matrices ÷ their dense count.
    #[serde(default = "d_kept")]
    pub kept_ratio: f64,
}

impl Default for TargetSection {
    fn default() -> Self {
        TargetSection {
            kept_ratio: d_kept(),
        }
    }
}

fn d_iw() -> f64 {
    0.1
}
fn d_fw() -> f64 {
    0.3
}
fn d_init_scale() -> f64 {
    1.0
}
fn d_interval() -> u64 {
    1
}
fn d_tau() -> f32 {
    0.5
}
fn d_lambda() -> f32 {
    1.0
}
fn d_min_kept() -> f64 {
    0.005
}

/// `[pruning]`: movement / soft movement / magnitude (docs/algorithms.md §2),
/// also LPAF's stage 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruningSection {
    /// `adam` (scores trained by AdamW at train.score_lr) or `accumulate` (Sc −= W⊙∂L/∂W').
    #[serde(default)]
    pub score_rule: ScoreRule,
    /// `per_matrix` or `global` top-k.
    #[serde(default)]
    pub scope: PruneScope,
    /// `zero` (the published definition, docs/algorithms.md §2) or `magnitude`:
    /// scores start proportional to `|W|`, so movement refines the magnitude
    /// mask instead of starting from noise.
    #[serde(default)]
    pub score_init: ScoreInit,
    /// Mean initial score of each matrix (`score_init = "magnitude"`) as a
    /// multiple of the most an Adam score can move over the run,
    /// `train.score_lr·steps/2`: the magnitude prior's strength against
    /// movement, the same for any run length.
    #[serde(default = "d_init_scale")]
    pub score_init_scale: f64,
    /// Fraction of the steps at kept = 1 before the cubic descent.
    #[serde(default = "d_iw")]
    pub initial_warmup: f64,
    /// Fraction of the steps at the final kept fraction after it.
    #[serde(default = "d_fw")]
    pub final_warmup: f64,
    /// Hard masks (movement, magnitude) are recomputed every this many steps
    /// (and at the first step at the target), not every step.
    #[serde(default = "d_interval")]
    pub mask_interval: u64,
    /// Soft movement: mask = σ(Sc) > τ; penalty λ·mean σ(Sc); at least `min_kept` per matrix.
    #[serde(default = "d_tau")]
    pub soft_tau: f32,
    #[serde(default = "d_lambda")]
    pub soft_lambda: f32,
    #[serde(default = "d_min_kept")]
    pub soft_min_kept: f64,
}

impl Default for PruningSection {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

fn d_rho() -> f64 {
    0.05
}
fn d_delta() -> u64 {
    10
}
fn d_b1() -> f32 {
    0.85
}
fn d_b2() -> f32 {
    1.0
}
fn d_true() -> bool {
    true
}
fn d_iw_units() -> u64 {
    1
}
fn d_fw_units() -> u64 {
    5
}

/// `[losparse]` (docs/algorithms.md §3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoSparseSection {
    /// ρ: rank `⌈ρ·out·in/(out+in)⌉` per matrix.
    #[serde(default = "d_rho")]
    pub rank_ratio: f64,
    /// Or one explicit rank for every matrix.
    #[serde(default)]
    pub rank: Option<usize>,
    /// γ_T, the final kept fraction of S; default: what the target leaves
    /// after the low-rank part (`kept_ratio − low-rank fraction`).
    #[serde(default)]
    pub final_kept: Option<f64>,
    /// Δ: importance window and pruning interval (steps).
    #[serde(default = "d_delta")]
    pub delta_t: u64,
    #[serde(default = "d_b1")]
    pub beta1: f32,
    /// 1 = sensitivity only (published default); < 1 multiplies by the uncertainty Ū.
    #[serde(default = "d_b2")]
    pub beta2: f32,
    /// Score rows of S together (published default).
    #[serde(default = "d_true")]
    pub structured: bool,
    /// Pruned entries get zero gradient and Adam state (engine option).
    #[serde(default)]
    pub hard_mask: bool,
    /// The schedule's unit U in steps. The published 6400 exceeds whole
    /// small-task runs; default: a tenth of the run.
    #[serde(default)]
    pub unit_steps: Option<u64>,
    /// Units at kept = 1, and at γ_T at the end.
    #[serde(default = "d_iw_units")]
    pub initial_warmup: u64,
    #[serde(default = "d_fw_units")]
    pub final_warmup: u64,
}

impl Default for LoSparseSection {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// `[svd]`: the plain SVD baseline (factorize the fine-tuned model, then fine-tune).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SvdSection {
    #[serde(default = "uniform")]
    pub allocation: RankAllocation,
    /// One explicit rank for every matrix (instead of the budget).
    #[serde(default)]
    pub rank: Option<usize>,
}

fn uniform() -> RankAllocation {
    RankAllocation::Uniform
}

impl Default for SvdSection {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

fn d_em() -> usize {
    10
}
fn d_tol() -> f64 {
    1e-4
}
fn d_pi() -> usize {
    1
}
fn d_ipi() -> usize {
    6
}
fn d_p0() -> f64 {
    0.5
}
fn d_half() -> f64 {
    0.5
}

/// `[lpaf]` (docs/algorithms.md §4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LpafSection {
    /// γ_s: kept fraction of each matrix after stage 1 (default: the target kept ratio).
    #[serde(default)]
    pub sparse_kept: Option<f64>,
    /// ω: weight of pruned entries in the factorization objective.
    #[serde(default)]
    pub omega: f32,
    #[serde(default = "d_em")]
    pub em_steps: usize,
    #[serde(default = "d_tol")]
    pub rel_tol: f64,
    #[serde(default = "d_pi")]
    pub power_iters: usize,
    #[serde(default = "d_ipi")]
    pub init_power_iters: usize,
    /// `energy` (default) or `uniform`.
    #[serde(default)]
    pub allocation: RankAllocation,
    /// p₀: initial probability of the sparse path in mixed-rank fine-tuning.
    #[serde(default = "d_p0")]
    pub p0: f64,
    /// Fraction of stage 3 after which training is purely low-rank.
    #[serde(default = "d_half")]
    pub mixed_fraction: f64,
    /// Stage 3 length (default: the same as stage 1, from `[train]`).
    #[serde(default)]
    pub finetune_steps: Option<u64>,
    #[serde(default)]
    pub finetune_epochs: Option<f64>,
    #[serde(default)]
    pub finetune_lr: Option<f32>,
}

impl Default for LpafSection {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// `[distill]`: optional distillation from a fine-tuned teacher.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillSection {
    pub teacher: PathBuf,
    #[serde(default = "one")]
    pub alpha_out: f32,
    #[serde(default)]
    pub alpha_layer: f32,
    #[serde(default = "two")]
    pub temperature: f32,
}

fn one() -> f32 {
    1.0
}
fn two() -> f32 {
    2.0
}

impl DistillSection {
    pub fn settings(&self) -> DistillSettings {
        DistillSettings {
            alpha_out: self.alpha_out,
            alpha_layer: self.alpha_layer,
            temperature: self.temperature,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub method: Method,
    /// The starting checkpoint: pre-trained (movement, magnitude, LoSparse,
    /// LPAF; docs/algorithms.md §0) or fine-tuned (SVD; or any method as an option).
    pub model: PathBuf,
    pub output: PathBuf,
    #[serde(default)]
    pub device: DeviceChoice,
    pub data: TaskSpec,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub target: TargetSection,
    #[serde(default)]
    pub pruning: PruningSection,
    #[serde(default)]
    pub losparse: LoSparseSection,
    #[serde(default)]
    pub svd: SvdSection,
    #[serde(default)]
    pub lpaf: LpafSection,
    #[serde(default)]
    pub distill: Option<DistillSection>,
}

impl Recipe {
    /// Refuses impossible settings before any work.
    pub fn validate(&self) -> Result<()> {
        self.train.validate()?;
        let k = self.target.kept_ratio;
        if !(k > 0.0 && k <= 1.0) {
            return Err(Error::msg(format!(
                "target.kept_ratio = {k}: must be in (0, 1]"
            )));
        }
        let frac = |name: &str, v: f64| -> Result<()> {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::msg(format!("{name} = {v}: must be in [0, 1]")));
            }
            Ok(())
        };
        frac("pruning.initial_warmup", self.pruning.initial_warmup)?;
        frac("pruning.final_warmup", self.pruning.final_warmup)?;
        if self.pruning.initial_warmup + self.pruning.final_warmup > 1.0 {
            return Err(Error::msg(
                "pruning.initial_warmup + pruning.final_warmup exceed the whole run",
            ));
        }
        let s = self.pruning.score_init_scale;
        if !(s.is_finite() && s > 0.0) {
            return Err(Error::msg(format!(
                "pruning.score_init_scale = {s}: must be a positive number"
            )));
        }
        if self.pruning.mask_interval == 0 {
            return Err(Error::msg(
                "pruning.mask_interval must be at least 1 (steps)",
            ));
        }
        if self.pruning.score_init != ScoreInit::Zero
            && self.pruning.score_rule == ScoreRule::Accumulate
            && matches!(self.method, Method::Movement | Method::Lpaf)
        {
            return Err(Error::msg(
                "pruning.score_init = \"magnitude\" needs pruning.score_rule = \"adam\": \
                 its scale is set against the movement of Adam-trained scores",
            ));
        }
        if self.method == Method::SoftMovement && self.pruning.score_init != ScoreInit::Zero {
            return Err(Error::msg(
                "pruning.score_init = \"magnitude\" is for hard movement (movement, lpaf): \
                 soft movement thresholds σ(Sc) at soft_tau and needs scores that start at 0",
            ));
        }
        if let Some(s) = self.lpaf.finetune_lr {
            if !(s.is_finite() && s > 0.0) {
                return Err(Error::msg(format!(
                    "lpaf.finetune_lr = {s}: must be a positive finite number"
                )));
            }
        }
        if let Some(g) = self.lpaf.sparse_kept {
            if !(g > 0.0 && g <= 1.0) {
                return Err(Error::msg(format!(
                    "lpaf.sparse_kept = {g}: must be in (0, 1]"
                )));
            }
        }
        frac("lpaf.mixed_fraction", self.lpaf.mixed_fraction)?;
        frac("lpaf.p0", self.lpaf.p0)?;
        if !(0.0..=1.0).contains(&(self.lpaf.omega as f64)) {
            return Err(Error::msg(format!(
                "lpaf.omega = {}: must be in [0, 1]",
                self.lpaf.omega
            )));
        }
        if !(self.losparse.rank_ratio > 0.0 && self.losparse.rank_ratio < 1.0)
            && self.losparse.rank.is_none()
        {
            return Err(Error::msg(format!(
                "losparse.rank_ratio = {}: must be in (0, 1)",
                self.losparse.rank_ratio
            )));
        }
        if let Some(g) = self.losparse.final_kept {
            if !(0.0..=1.0).contains(&g) {
                return Err(Error::msg(format!(
                    "losparse.final_kept = {g}: must be in [0, 1]"
                )));
            }
        }
        if self.losparse.delta_t == 0 {
            return Err(Error::msg("losparse.delta_t must be at least 1"));
        }
        let (b1, b2) = (self.losparse.beta1, self.losparse.beta2);
        if !(b1 > 0.0 && b1 < 1.0 && b2 > 0.0 && b2 <= 1.0) {
            return Err(Error::msg(
                "losparse.beta1 must be in (0, 1) and losparse.beta2 in (0, 1]",
            ));
        }
        Ok(())
    }
}
