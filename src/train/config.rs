//! `[train]`: the optimisation settings shared by every command that trains.

use serde::{Deserialize, Serialize};

use crate::backend::Precision;

fn d_batch() -> usize {
    32
}
fn d_one() -> usize {
    1
}
fn d_epochs() -> f64 {
    3.0
}
fn d_lr() -> f32 {
    2e-5
}
fn d_warmup() -> f64 {
    0.1
}
fn d_wd() -> f32 {
    0.01
}
fn d_clip() -> f32 {
    1.0
}
fn d_seed() -> u64 {
    42
}
fn d_log() -> u64 {
    10
}
fn d_eval_bs() -> usize {
    64
}
fn d_score_lr() -> f32 {
    1e-2
}
fn d_true() -> bool {
    true
}
fn d_div_loss() -> f64 {
    10.0
}
fn d_div_grad() -> f64 {
    1e6
}

/// `[train]`: the optimisation settings shared by every command that trains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    #[serde(default = "d_seed")]
    pub seed: u64,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    #[serde(default = "d_one")]
    pub grad_accum: usize,
    /// Passes over the training data (ignored when `steps` is set).
    #[serde(default = "d_epochs")]
    pub epochs: f64,
    /// Optimizer steps (overrides `epochs`).
    #[serde(default)]
    pub steps: Option<u64>,
    #[serde(default = "d_lr")]
    pub lr: f32,
    /// Fraction of the steps spent in linear warm-up.
    #[serde(default = "d_warmup")]
    pub warmup_ratio: f64,
    #[serde(default = "d_wd")]
    pub weight_decay: f32,
    #[serde(default = "d_clip")]
    pub max_grad_norm: f32,
    /// Learning rate of movement scores (docs/algorithms.md §2).
    #[serde(default = "d_score_lr")]
    pub score_lr: f32,
    #[serde(default)]
    pub precision: Precision,
    #[serde(default = "d_log")]
    pub log_every: u64,
    /// 0 = at the end only.
    #[serde(default)]
    pub eval_every: u64,
    /// 0 = at the end only.
    #[serde(default)]
    pub checkpoint_every: u64,
    #[serde(default = "d_eval_bs")]
    pub eval_batch_size: usize,
    /// Use only the first N training rows (after the dev split): quick runs.
    #[serde(default)]
    pub max_train_rows: Option<usize>,
    /// Keep the best evaluated model.
    #[serde(default = "d_true")]
    pub keep_best: bool,
    /// Stop this invocation after this many steps, leaving a checkpoint to
    /// `--resume` from (0 = run to the end).
    #[serde(default)]
    pub stop_after: u64,
    /// Divergence rule (docs/robustness.md): the run stops when the mean loss
    /// of the last 5 steps exceeds this many times max(1, the first step's
    /// loss) (0 = off). A non-finite loss or gradient norm always stops it.
    #[serde(default = "d_div_loss")]
    pub divergence_loss_factor: f64,
    /// The run stops when the gradient norm before clipping exceeds this (0 = off).
    #[serde(default = "d_div_grad")]
    pub divergence_grad_norm: f64,
}

impl TrainSection {
    /// Refuses values no run can use, naming the key (and its flag).
    pub fn validate(&self) -> crate::error::Result<()> {
        let pos = |name: &str, v: f64| -> crate::error::Result<()> {
            if !(v.is_finite() && v > 0.0) {
                crate::bail!("{name} = {v}: must be a positive finite number");
            }
            Ok(())
        };
        pos("train.lr (--lr)", self.lr as f64)?;
        pos("train.score_lr", self.score_lr as f64)?;
        pos("train.max_grad_norm", self.max_grad_norm as f64)?;
        let wr = self.warmup_ratio;
        if !(0.0..=1.0).contains(&wr) {
            crate::bail!("train.warmup_ratio (--warmup-ratio) = {wr}: must be in [0, 1]");
        }
        let wd = self.weight_decay;
        if !(wd.is_finite() && wd >= 0.0) {
            crate::bail!("train.weight_decay (--weight-decay) = {wd}: must be ≥ 0 and finite");
        }
        if self.steps.is_none() {
            pos("train.epochs (--epochs)", self.epochs)?;
        }
        for (name, v) in [
            ("train.batch_size (--batch-size)", self.batch_size),
            ("train.grad_accum (--grad-accum)", self.grad_accum),
            ("train.eval_batch_size", self.eval_batch_size),
        ] {
            if v == 0 {
                crate::bail!("{name} must be at least 1");
            }
        }
        if self.steps == Some(0) {
            crate::bail!("train.steps (--steps) must be at least 1");
        }
        Ok(())
    }
}

impl Default for TrainSection {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}
