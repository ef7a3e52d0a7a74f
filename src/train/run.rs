//! What `finetune`, `compress` and `eval` share: picking the device, loading
//! tokenizer, data and model, building the batch stream, and running the
//! trainer with evaluation and best-model keeping.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use crate::backend::select_backend;
use crate::backend::{Backend, BackendRef};
use crate::data::dataset::{BatchConfig, BatchIter, Dataset};
use crate::data::task::{load_task, TaskData, TaskSpec};
use crate::data::tokenizer::Tokenizer;
use crate::device::DeviceChoice;
use crate::error::{Error, Result, ResultExt};
use crate::model::io::expand_home;
use crate::model::io::FloatFormat;
use crate::model::weights::{save_model_dir, LoadReport};
use crate::model::Bert;
use crate::train::config::TrainSection;
use crate::train::eval::evaluate;
use crate::train::optimizer::AdamWConfig;
use crate::train::trainer::{self, EvalResult, TrainConfig, TrainHooks, TrainSummary};

/// Picks the backend and says which device runs.
pub fn backend(choice: DeviceChoice, quiet: bool) -> Result<BackendRef> {
    let be = select_backend(choice, &mut |m| eprintln!("note: {m}"))?;
    if !quiet {
        eprintln!("device: {}", be.name());
    }
    Ok(be)
}

/// Tokenized training / dev data of a run.
pub struct RunData {
    pub task: TaskData,
    pub train: Option<Arc<Dataset>>,
    pub dev: Option<Dataset>,
}

/// Loads the tokenizer of `model_dir` and the task's data.
pub fn load_data(
    model_dir: &Path,
    spec: &TaskSpec,
    max_train_rows: Option<usize>,
) -> Result<(Tokenizer, RunData)> {
    let tok = Tokenizer::from_dir(model_dir)?;
    let mut spec = spec.clone();
    for p in [
        &mut spec.data_dir,
        &mut spec.train,
        &mut spec.dev,
        &mut spec.test,
    ] {
        if let Some(x) = p.as_mut() {
            *x = expand_home(x);
        }
    }
    let mut task = load_task(&spec, &tok)?;
    let mut train = task.train.take();
    if let (Some(n), Some(t)) = (max_train_rows, train.as_ref()) {
        if n < t.len() {
            let ids: Vec<usize> = (0..n).collect();
            train = Some(t.subset(format!("{} (first {n})", t.name), &ids)?);
        }
    }
    let dev = task.dev.take();
    Ok((
        tok,
        RunData {
            task,
            train: train.map(Arc::new),
            dev,
        },
    ))
}

pub fn model_path(p: &Path) -> PathBuf {
    expand_home(p)
}

/// Optimizer steps for a training section over `ds`.
pub fn total_steps(t: &TrainSection, ds: &Dataset) -> Result<u64> {
    if let Some(s) = t.steps {
        if s == 0 {
            return Err(Error::msg("train.steps must be at least 1"));
        }
        return Ok(s);
    }
    if !t.epochs.is_finite() || t.epochs <= 0.0 {
        return Err(Error::msg(format!(
            "train.epochs = {} must be positive",
            t.epochs
        )));
    }
    let batches = ds.len().div_ceil(t.batch_size.max(1)) as f64;
    Ok(((t.epochs * batches) / t.grad_accum.max(1) as f64)
        .ceil()
        .max(1.0) as u64)
}

pub fn train_config(t: &TrainSection, total: u64, output: &Path, quiet: bool) -> TrainConfig {
    TrainConfig {
        seed: t.seed,
        batch_size: t.batch_size,
        grad_accum: t.grad_accum,
        total_steps: total,
        warmup_steps: (t.warmup_ratio * total as f64).round() as u64,
        optimizer: AdamWConfig {
            lr: t.lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: t.weight_decay,
            score_lr: t.score_lr,
            max_grad_norm: t.max_grad_norm,
        },
        precision: t.precision,
        log_every: t.log_every,
        eval_every: t.eval_every,
        checkpoint_every: t.checkpoint_every,
        output_dir: output.to_path_buf(),
        keep_best: t.keep_best,
        quiet,
        stop_after: t.stop_after,
        divergence: trainer::DivergenceRule {
            loss_factor: t.divergence_loss_factor,
            grad_norm: t.divergence_grad_norm,
        },
    }
}

/// Prints what loading a model did (heads created, tensors ignored).
pub fn report_load(r: &LoadReport, quiet: bool) {
    // Shown even when quiet: a model with NaN weights gives NaN outputs.
    crate::model::weights::warn_non_finite(&r.weights, &r.non_finite);
    if quiet {
        return;
    }
    for c in &r.created {
        eprintln!("note: created a new head layer: {c}");
    }
    if !r.ignored.is_empty() {
        eprintln!(
            "note: {} tensors of {} not used (e.g. {})",
            r.ignored.len(),
            r.weights.display(),
            r.ignored[0]
        );
    }
}

/// Runs the trainer on a run's data; the best model (dense Hugging Face
/// format, or `save_best` for compressed forms) goes to `output/best`.
#[allow(clippy::too_many_arguments)]
pub fn run_training(
    be: &dyn Backend,
    model: &mut Bert,
    data: &RunData,
    t: &TrainSection,
    output: &Path,
    hooks: &mut dyn TrainHooks,
    save_best: &mut dyn FnMut(&dyn Backend, &mut Bert, &Path) -> Result<()>,
    resume: bool,
    fingerprint: &str,
    quiet: bool,
) -> Result<TrainSummary> {
    let train = data
        .train
        .clone()
        .ok_or_else(|| Error::msg("no training data (give train data or a data directory)"))?;
    let total = total_steps(t, &train)?;
    let mut iter = BatchIter::new(
        train.clone(),
        BatchConfig {
            batch_size: t.batch_size,
            shuffle: true,
            seed: t.seed,
            drop_last: false,
            pad_multiple: 8,
        },
    )?;
    let cfg = train_config(t, total, output, quiet);
    if !quiet {
        eprintln!(
            "training {} on {} rows for {total} steps (batch {} × {} accumulation, {:?})",
            data.task.task.name(),
            train.len(),
            t.batch_size,
            t.grad_accum,
            t.precision
        );
    }
    let metrics = data.task.metrics.clone();
    let dev = data.dev.as_ref();
    let (ebs, prec) = (t.eval_batch_size, t.precision);
    let mut eval = |be: &dyn Backend, m: &mut Bert| -> Result<EvalResult> {
        match dev {
            Some(d) => evaluate(be, m, d, &metrics, ebs, prec),
            None => Ok(EvalResult::default()),
        }
    };
    trainer::train(
        be,
        model,
        &mut iter,
        &cfg,
        hooks,
        &mut eval,
        save_best,
        resume,
        fingerprint,
    )
}

/// Saves a dense model as a Hugging Face directory.
pub fn save_dense(
    be: &dyn Backend,
    model: &Bert,
    dir: &Path,
    model_dir: &Path,
    labels: &[String],
) -> Result<()> {
    let labels = if labels.is_empty() {
        None
    } else {
        Some(labels)
    };
    crate::train::checkpoint::write_dir_atomic(dir, |tmp| {
        save_model_dir(be, model, tmp, Some(model_dir), labels, FloatFormat::F32)
    })
    .with_context(|| format!("saving {}", dir.display()))
}

/// Writes `summary.json` in the output directory and prints the final metrics.
pub fn write_summary(
    output: &Path,
    summary: &TrainSummary,
    extra: serde_json::Value,
) -> Result<()> {
    let mut v = serde_json::to_value(summary)?;
    if let (serde_json::Value::Object(m), serde_json::Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    let text = serde_json::to_string_pretty(&v)?;
    crate::model::io::write_atomic(&output.join("summary.json"), text.as_bytes())?;
    Ok(())
}

/// The line printed at the end of a run.
pub fn final_line(summary: &TrainSummary) -> String {
    let ev = summary
        .final_eval
        .as_ref()
        .map(|e| e.summary())
        .unwrap_or_else(|| "no dev set".into());
    format!(
        "done: {} steps in {:.1} s ({:.1} samples/s); dev: {ev}{}",
        summary.steps,
        summary.train_seconds,
        summary.samples_per_second,
        summary
            .best_metric
            .map(|b| format!("; best {b:.4} at step {}", summary.best_step.unwrap_or(0)))
            .unwrap_or_default()
    )
}

pub fn json_metrics(r: &EvalResult) -> serde_json::Value {
    json!({"metrics": r.to_json(), "main": r.main})
}
