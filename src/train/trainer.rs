//! The training loop shared by fine-tuning and every compression method:
//! micro-batches with gradient accumulation, host-side losses, AdamW with
//! clipping and a linear schedule, periodic evaluation with best-model
//! keeping, atomic checkpoints with everything needed for a bit-identical
//! resume, a progress bar and a JSON-lines log. Compression methods plug in
//! through [`TrainHooks`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::backend::{Backend, DType, Precision, Tensor};
use crate::data::{Batch, Labels};
use crate::error::{Error, Result, ResultExt};
use crate::model::loss::{self, LossGrad};
use crate::model::{Bert, StepCtx};
use crate::train::checkpoint::{self, TrainerState};
use crate::train::log::RunLog;
use crate::train::optimizer::{adamw_all, clip_gradients, step_params, AdamWConfig};
use crate::train::schedule::LinearSchedule;

/// An endless, resumable stream of training batches.
pub trait BatchSource {
    fn next_batch(&mut self) -> Result<Batch>;
    /// `(epoch, position)` of the next batch.
    fn cursor(&self) -> (u64, u64);
    fn set_cursor(&mut self, epoch: u64, position: u64) -> Result<()>;
}

/// Evaluation results: named metrics (the first one named in `main` decides
/// the best checkpoint) and the mean loss when labels were present.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    pub metrics: Vec<(String, f64)>,
    pub loss: Option<f64>,
    pub main: String,
}

impl EvalResult {
    pub fn main_value(&self) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(k, _)| *k == self.main)
            .map(|(_, v)| *v)
    }
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.metrics {
            m.insert(k.clone(), json!(v));
        }
        if let Some(l) = self.loss {
            m.insert("eval_loss".into(), json!(l));
        }
        Value::Object(m)
    }
    pub fn summary(&self) -> String {
        self.metrics
            .iter()
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Extra loss terms computed from the same forward pass (distillation).
pub struct ExtraLoss {
    pub loss: f64,
    /// Added to the task loss's gradient with respect to the logits.
    pub dlogits: Vec<f32>,
    /// Gradients on the hidden states (index 0: embeddings, i + 1: layer i).
    pub hidden: Option<Vec<Option<Tensor>>>,
}

/// How a compression method takes part in training. Every method's state
/// that is not in the model (schedule position, counters) goes through
/// `state` / `restore` into the checkpoint.
pub trait TrainHooks {
    /// Before the first micro-batch of optimizer step `step` (0-based).
    fn on_step_begin(&mut self, _be: &dyn Backend, _model: &mut Bert, _step: u64) -> Result<()> {
        Ok(())
    }
    /// Extra loss for a micro-batch (after the student's forward).
    fn extra_loss(
        &mut self,
        _be: &dyn Backend,
        _ctx: &StepCtx,
        _batch: &Batch,
        _student: &Bert,
        _logits: &[f32],
        _scale: f32,
    ) -> Result<Option<ExtraLoss>> {
        Ok(None)
    }
    /// True when `extra_loss` needs the logits on the host (distillation):
    /// the step's loss is then computed on the host too. True unless a hook
    /// says otherwise, so that a hook with an extra loss is never skipped.
    fn uses_logits(&self) -> bool {
        true
    }
    /// Replaces the optimizer update of a parameter when it returns true
    /// (LoSparse fuses AdamW with its importance update).
    fn custom_update(
        &mut self,
        _be: &dyn Backend,
        _model: &mut Bert,
        _hp_for: &dyn Fn(&crate::model::Param) -> crate::backend::AdamWStep,
    ) -> Result<bool> {
        Ok(false)
    }
    /// After the optimizer step of `step`, before gradients are cleared.
    fn on_step_end(&mut self, _be: &dyn Backend, _model: &mut Bert, _step: u64) -> Result<()> {
        Ok(())
    }
    /// Fields added to logged steps (kept ratio, thresholds, churn…).
    fn log_fields(&mut self, _be: &dyn Backend, _model: &mut Bert) -> Result<Vec<(String, Value)>> {
        Ok(Vec::new())
    }
    /// A short progress-bar note (e.g. "kept 0.31").
    fn bar_note(&self) -> String {
        String::new()
    }
    fn state(&self) -> Value {
        Value::Null
    }
    fn restore(&mut self, _state: &Value) -> Result<()> {
        Ok(())
    }
}

/// Plain fine-tuning: no hooks.
pub struct NoHooks;
impl TrainHooks for NoHooks {
    fn uses_logits(&self) -> bool {
        false
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub seed: u64,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub total_steps: u64,
    pub warmup_steps: u64,
    pub optimizer: AdamWConfig,
    pub precision: Precision,
    /// Log every this many steps (1 = every step).
    pub log_every: u64,
    /// Evaluate every this many steps (0 = only at the end).
    pub eval_every: u64,
    /// Save a resumable checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: u64,
    pub output_dir: PathBuf,
    /// Keep the best evaluated model in `output_dir/best`.
    pub keep_best: bool,
    pub quiet: bool,
    /// Stop after this many steps of this invocation (tests of resume; 0 = no limit).
    pub stop_after: u64,
    pub divergence: DivergenceRule,
}

/// When a run counts as diverged (docs/robustness.md). A non-finite loss,
/// gradient norm or evaluation loss always does.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DivergenceRule {
    /// Diverged when the mean loss of the last [`DIVERGENCE_WINDOW`] steps
    /// exceeds this many times max(1, the first step's loss) (0 = off).
    pub loss_factor: f64,
    /// Diverged when the gradient norm before clipping exceeds this (0 = off).
    pub grad_norm: f64,
}

impl Default for DivergenceRule {
    fn default() -> Self {
        DivergenceRule {
            loss_factor: 10.0,
            grad_norm: 1e6,
        }
    }
}

/// Steps in the divergence rule's moving window.
pub const DIVERGENCE_WINDOW: usize = 5;

impl DivergenceRule {
    /// Records a step's loss and gradient norm in `state`; says why the run
    /// diverged, if it did.
    fn check(&self, state: &mut TrainerState, loss: f64, norm: f64) -> Option<String> {
        if !loss.is_finite() {
            return Some(format!("the loss became {loss}"));
        }
        if !norm.is_finite() {
            return Some(format!("the gradient norm became {norm}"));
        }
        if self.grad_norm > 0.0 && norm > self.grad_norm {
            return Some(format!(
                "the gradient norm {norm:.4e} exceeds train.divergence_grad_norm = {:.4e}",
                self.grad_norm
            ));
        }
        state.recent_losses.push(loss);
        if state.recent_losses.len() > DIVERGENCE_WINDOW {
            state.recent_losses.remove(0);
        }
        // The first step's loss, floored at 1 so that a run starting from a
        // fine-tuned model (loss ≈ 0) may rise to chance level without
        // counting as diverged.
        let reference = *state.reference_loss.get_or_insert(loss.max(1.0));
        let mean = state.recent_losses.iter().sum::<f64>() / state.recent_losses.len() as f64;
        if self.loss_factor > 0.0 && mean > self.loss_factor * reference {
            return Some(format!(
                "the mean loss of the last {} steps, {mean:.4e}, exceeds train.divergence_loss_factor = {} × {reference:.4} \
                 (the first step's loss, at least 1)",
                state.recent_losses.len(),
                self.loss_factor
            ));
        }
        None
    }
}

/// What a finished run reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainSummary {
    pub steps: u64,
    pub final_eval: Option<EvalResult>,
    pub best_metric: Option<f64>,
    pub best_step: Option<u64>,
    pub train_seconds: f64,
    pub samples_per_second: f64,
    pub final_loss: Option<f64>,
}

/// The loss of one micro-batch and the backward pass from it. For
/// classification the loss is computed where the logits are and added to
/// `device_loss` (`scale · loss`; created on first use), and nothing is read
/// back; otherwise — regression, spans, or hooks that need the host logits
/// (distillation) — on the host, and the unscaled loss is returned.
#[allow(clippy::too_many_arguments)]
pub fn loss_and_backward(
    be: &dyn Backend,
    model: &mut Bert,
    hooks: &mut dyn TrainHooks,
    ctx: &StepCtx,
    batch: &Batch,
    logits_t: &Tensor,
    scale: f32,
    device_loss: &mut Option<Tensor>,
) -> Result<Option<f64>> {
    if let Labels::Class(y) = &batch.labels {
        let labels: Option<Vec<i32>> = y.iter().map(|&l| i32::try_from(l).ok()).collect();
        if let (Some(labels), false) = (labels, hooks.uses_logits()) {
            let labels = be.from_i32(&labels, &[labels.len()])?;
            let mut d = be.empty(logits_t.shape(), DType::F32)?;
            let accumulate = device_loss.is_some();
            let loss = match device_loss {
                Some(t) => t,
                None => device_loss.insert(be.zeros(&[1], DType::F32)?),
            };
            be.cross_entropy(logits_t, &labels, scale, &mut d, loss, accumulate)?;
            model.backward(be, &d, None)?;
            return Ok(None);
        }
    }
    let logits = be.to_f32(logits_t)?;
    let mut lg = task_loss(model, batch, &logits, scale)?;
    let mut hidden = None;
    if let Some(extra) = hooks.extra_loss(be, ctx, batch, model, &logits, scale)? {
        lg.loss += extra.loss;
        for (d, e) in lg.dlogits.iter_mut().zip(&extra.dlogits) {
            *d += e;
        }
        hidden = extra.hidden;
    }
    if lg.loss.is_finite() {
        let d = be.from_f32(&lg.dlogits, logits_t.shape())?;
        model.backward(be, &d, hidden.as_deref())?;
    }
    Ok(Some(lg.loss))
}

/// The task loss of a micro-batch from host logits.
pub fn task_loss(model: &Bert, batch: &Batch, logits: &[f32], scale: f32) -> Result<LossGrad> {
    match &batch.labels {
        Labels::Class(y) => loss::cross_entropy(logits, y, model.num_labels(), scale),
        Labels::Regression(y) => loss::mse(logits, y, scale),
        Labels::Span { start, end } => loss::span_loss(logits, start, end, batch.seq_len, scale),
        Labels::None => Err(Error::msg("training batch has no labels")),
    }
}

/// A stable fingerprint of the settings a resume must share.
pub fn fingerprint(v: &impl Serialize) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    // FNV-1a: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// At most this many steps between two divergence checks (when nothing is
/// logged, evaluated or saved for longer).
const MAX_PENDING_CHECKS: usize = 64;

pub const CHECKPOINT_DIR: &str = "checkpoint";
pub const BEST_DIR: &str = "best";
pub const LOG_FILE: &str = "log.jsonl";

/// Runs (or resumes, when `output_dir/checkpoint` exists and `resume`) training.
/// `evaluate` is called every `eval_every` steps and at the end; `save_best`
/// writes the best model (only called when `keep_best`).
#[allow(clippy::too_many_arguments)]
pub fn train(
    be: &dyn Backend,
    model: &mut Bert,
    data: &mut dyn BatchSource,
    cfg: &TrainConfig,
    hooks: &mut dyn TrainHooks,
    evaluate: &mut dyn FnMut(&dyn Backend, &mut Bert) -> Result<EvalResult>,
    save_best: &mut dyn FnMut(&dyn Backend, &mut Bert, &Path) -> Result<()>,
    resume: bool,
    run_fingerprint: &str,
) -> Result<TrainSummary> {
    if cfg.batch_size == 0 || cfg.grad_accum == 0 {
        return Err(Error::msg(
            "batch size and gradient accumulation must be at least 1",
        ));
    }
    let ckpt_dir = cfg.output_dir.join(CHECKPOINT_DIR);
    let mut state = TrainerState {
        lpaf_version: env!("CARGO_PKG_VERSION").to_string(),
        step: 0,
        total_steps: cfg.total_steps,
        seed: cfg.seed,
        epoch: 0,
        position: 0,
        best_metric: None,
        best_step: None,
        method: Value::Null,
        config_fingerprint: run_fingerprint.to_string(),
        reference_loss: None,
        recent_losses: Vec::new(),
    };
    let mut notes = checkpoint::recover_checkpoint(&ckpt_dir)?;
    if resume && ckpt_dir.join("trainer.json").is_file() {
        let saved = checkpoint::load_checkpoint(be, model, &ckpt_dir)?;
        if saved.config_fingerprint != run_fingerprint {
            return Err(Error::msg(format!(
                "{}: the checkpoint was made with other settings (fingerprint {} vs {}); use a new --output or the same settings",
                ckpt_dir.display(),
                saved.config_fingerprint,
                run_fingerprint
            )));
        }
        hooks
            .restore(&saved.method)
            .context("restoring the method's state")?;
        data.set_cursor(saved.epoch, saved.position)?;
        state = saved;
    }
    let sched = LinearSchedule {
        base_lr: cfg.optimizer.lr,
        warmup_steps: cfg.warmup_steps,
        total_steps: cfg.total_steps,
    };
    let log_path = cfg.output_dir.join(LOG_FILE);
    crate::train::log::rewind(&log_path, state.step)?;
    let mut log = RunLog::new(Some(&log_path), state.step, cfg.total_steps, cfg.quiet)?;
    for n in notes.drain(..) {
        log.println(&format!("note: {n}"));
    }
    if state.step > 0 {
        log.println(&format!(
            "resuming from {} at step {}",
            ckpt_dir.display(),
            state.step
        ));
    }
    model.zero_grads(be)?;
    let start_step = state.step;
    let mut last_eval: Option<EvalResult> = None;
    let mut recent_loss = Vec::new();
    let mut final_loss = None;
    let last_good = |state: &TrainerState| -> String {
        match checkpoint::checkpoint_complete(&ckpt_dir) {
            Ok(step) if step <= state.step => format!(
                "the last good checkpoint, {} (step {step}), is kept: resume from it with other settings under a new --output, or start over",
                ckpt_dir.display()
            ),
            _ => "no checkpoint had been saved".to_string(),
        }
    };
    // A diverged run stops here: logged, never evaluated, saved or kept as best.
    let stop_diverged = |log: &mut RunLog,
                         state: &TrainerState,
                         step: u64,
                         reason: String|
     -> Error {
        let _ = log.event(
            "diverged",
            json!({"step": step + 1, "reason": reason}),
            None,
        );
        log.finish();
        Error::msg(format!(
            "training diverged at step {}: {reason}. Nothing was saved from the diverged model; {}. \
             Lower train.lr, or set train.divergence_loss_factor / train.divergence_grad_norm (0 turns a check off)",
            step + 1,
            last_good(state)
        ))
    };
    // Steps whose divergence check waits for the next read of the device.
    // (step, its host loss, its device loss, [gradient norm, clip factor]).
    let mut pending: Vec<(u64, f64, Option<Tensor>, Tensor)> = Vec::new();
    let mut norm = f64::NAN;
    macro_rules! drain_checks {
        () => {
            for (at, host, dev, stats) in pending.drain(..) {
                let loss = match dev {
                    Some(t) => host + be.to_f32(&t)?[0] as f64,
                    None => host,
                };
                norm = be.to_f32(&stats)?[0] as f64;
                if let Some(reason) = cfg.divergence.check(&mut state, loss, norm) {
                    return Err(stop_diverged(&mut log, &state, at, reason));
                }
                recent_loss.push(loss);
                final_loss = Some(loss);
            }
        };
    }
    while state.step < cfg.total_steps {
        let step = state.step;
        hooks.on_step_begin(be, model, step)?;
        let mut step_loss = 0.0;
        let mut device_loss: Option<Tensor> = None;
        let mut step_samples = 0;
        for micro in 0..cfg.grad_accum {
            let batch = data.next_batch()?;
            let ctx = StepCtx {
                precision: cfg.precision,
                training: true,
                seed: cfg.seed,
                step,
                micro: micro as u32,
            };
            let logits_t = model.forward(be, &ctx, &batch)?;
            let scale = 1.0 / cfg.grad_accum as f32;
            let host_loss = loss_and_backward(
                be,
                model,
                hooks,
                &ctx,
                &batch,
                &logits_t,
                scale,
                &mut device_loss,
            )?;
            if let Some(l) = host_loss {
                if !l.is_finite() {
                    // An earlier step may have diverged first: report that one.
                    #[allow(unused_assignments)]
                    {
                        drain_checks!();
                    }
                    let reason = format!("the loss became {l}");
                    return Err(stop_diverged(&mut log, &state, step, reason));
                }
                step_loss += l / cfg.grad_accum as f64;
            }
            step_samples += batch.size;
        }
        // The norm and clip factor stay on the device; the divergence check
        // reads them later (see `pending` below), so the step never waits.
        let clip = clip_gradients(be, model, cfg.optimizer.max_grad_norm)?;
        let grad_scale = clip.grad_scale;
        pending.push((step, step_loss, device_loss, clip.stats));
        // Reading is free on the CPU: check this step now, before its update,
        // as on every device when nothing waits.
        if be.kind() == crate::backend::DeviceKind::Cpu {
            drain_checks!();
        }
        let lr = sched.lr(step);
        let score_lr = cfg.optimizer.score_lr
            * if cfg.optimizer.lr > 0.0 {
                lr / cfg.optimizer.lr
            } else {
                0.0
            };
        let opt = cfg.optimizer;
        let t = step + 1;
        let hp_for =
            move |p: &crate::model::Param| step_params(&opt, p, t, lr, score_lr, grad_scale);
        let updated = (|| -> Result<()> {
            if !hooks.custom_update(be, model, &hp_for)? {
                adamw_all(be, model, &|_| true, &hp_for)?;
            }
            hooks.on_step_end(be, model, step)?;
            model.zero_grads(be)
        })();
        if let Err(e) = updated {
            // A method's update may fail on what a diverged step left (NaN
            // scores, say): the divergence is then the error to report.
            #[allow(unused_assignments)]
            {
                drain_checks!();
            }
            return Err(e);
        }
        state.step += 1;
        log.add_samples(step_samples as u64);
        let (epoch, position) = data.cursor();
        state.epoch = epoch;
        state.position = position;

        let log_now =
            cfg.log_every > 0 && (state.step % cfg.log_every == 0 || state.step == cfg.total_steps);
        let at_end = state.step == cfg.total_steps;
        let eval_now = (cfg.eval_every > 0 && state.step % cfg.eval_every == 0) || at_end;
        let stop_now = cfg.stop_after > 0 && state.step - start_step >= cfg.stop_after;
        let save_now = (cfg.checkpoint_every > 0 && state.step % cfg.checkpoint_every == 0)
            || at_end
            || stop_now;
        // The divergence check of every step since the last one, in step
        // order, before anything is logged, evaluated or saved: one read of
        // the device per step checked, none in the steps between (on the
        // CPU nothing is pending here: each step was checked before its update).
        if log_now || eval_now || save_now || pending.len() >= MAX_PENDING_CHECKS {
            drain_checks!();
        }
        if log_now {
            let mean = recent_loss.iter().sum::<f64>() / recent_loss.len().max(1) as f64;
            recent_loss.clear();
            let mut rec = json!({"loss": mean, "lr": lr, "grad_norm": norm, "epoch": epoch});
            if let Value::Object(m) = &mut rec {
                for (k, v) in hooks.log_fields(be, model)? {
                    m.insert(k, v);
                }
            }
            let note = hooks.bar_note();
            log.step(
                state.step,
                rec,
                &format!(
                    "loss {mean:.4}{}{note}",
                    if note.is_empty() { "" } else { " " }
                ),
            )?;
        }
        let overhead = std::time::Instant::now();
        if eval_now {
            let r = evaluate(be, model)?;
            model.clear_activations();
            let bad = r
                .loss
                .filter(|l| !l.is_finite())
                .map(|l| format!("the evaluation loss became {l}"))
                .or_else(|| {
                    r.metrics
                        .iter()
                        .find(|(_, v)| !v.is_finite())
                        .map(|(k, v)| format!("the evaluation metric {k} became {v}"))
                });
            if let Some(reason) = bad {
                return Err(stop_diverged(&mut log, &state, state.step - 1, reason));
            }
            let mut rec = r.to_json();
            if let Value::Object(m) = &mut rec {
                m.insert("step".into(), json!(state.step));
            }
            log.event(
                "eval",
                rec,
                Some(&format!("step {}: {}", state.step, r.summary())),
            )?;
            if let Some(v) = r.main_value() {
                if state.best_metric.map(|b| v > b).unwrap_or(true) {
                    state.best_metric = Some(v);
                    state.best_step = Some(state.step);
                    if cfg.keep_best {
                        save_best(be, model, &cfg.output_dir.join(BEST_DIR))?;
                    }
                }
            }
            last_eval = Some(r);
        }
        if save_now {
            state.method = hooks.state();
            checkpoint::save_checkpoint(be, model, &state, &ckpt_dir)?;
        }
        log.exclude(overhead.elapsed().as_secs_f64());
        if stop_now {
            break;
        }
    }
    log.finish();
    let summary = TrainSummary {
        steps: state.step,
        final_eval: last_eval,
        best_metric: state.best_metric,
        best_step: state.best_step,
        train_seconds: log.train_seconds(),
        samples_per_second: log.samples_per_second(),
        final_loss,
    };
    log.event("summary", serde_json::to_value(&summary)?, None)?;
    Ok(summary)
}
