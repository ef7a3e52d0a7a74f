//! Evaluation of a model on a dataset: predictions, the task's metrics, and
//! the mean loss when the data is labelled. Also the [`BatchSource`] of the
//! data module's batch iterator.

use crate::backend::{Backend, Precision};
use crate::data::dataset::{BatchIter, Cursor, Dataset};
use crate::data::squad::{squad_evaluate, squad_postprocess, QaConfig};
use crate::data::{Batch, Labels, TaskKind};
use crate::error::{Error, Result};
use crate::model::{Bert, StepCtx};
use crate::train::metrics::{
    argmax_rows, classification_metrics, regression_metrics, squad_metrics, Metric,
};
use crate::train::trainer::{task_loss, BatchSource, EvalResult};

impl BatchSource for BatchIter {
    fn next_batch(&mut self) -> Result<Batch> {
        BatchIter::next_batch(self)
    }
    fn cursor(&self) -> (u64, u64) {
        let c = BatchIter::cursor(self);
        (c.epoch, c.position as u64)
    }
    fn set_cursor(&mut self, epoch: u64, position: u64) -> Result<()> {
        BatchIter::set_cursor(
            self,
            Cursor {
                epoch,
                position: position as usize,
            },
        )
    }
}

/// Predictions of a dataset, row by row.
#[derive(Clone, Debug, PartialEq)]
pub enum Predictions {
    Classes(Vec<u32>),
    Values(Vec<f32>),
    /// Per feature: start and end logits over its padded length.
    Spans {
        start: Vec<Vec<f32>>,
        end: Vec<Vec<f32>>,
    },
}

/// Runs the model over every feature (no dropout); returns predictions and
/// the mean loss when labelled.
pub fn predict(
    be: &dyn Backend,
    model: &mut Bert,
    ds: &Dataset,
    batch_size: usize,
    precision: Precision,
) -> Result<(Predictions, Option<f64>)> {
    if ds.kind != model.task {
        return Err(Error::msg(format!(
            "{}: data is {:?} but the model's head is {:?}",
            ds.name, ds.kind, model.task
        )));
    }
    let ctx = StepCtx::eval(precision);
    let mut classes = Vec::new();
    let mut values = Vec::new();
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    let mut loss_sum = 0.0;
    let mut loss_n = 0usize;
    for (bi, batch) in ds.eval_batches(batch_size, 8).enumerate() {
        let logits = be.to_f32(&model.forward(be, &ctx, &batch)?)?;
        // NaN propagates through every kernel; a score from it would be noise.
        let bad = logits.iter().filter(|x| !x.is_finite()).count();
        if bad > 0 {
            return Err(Error::msg(format!(
                "{}: the model's output is not finite ({bad} NaN or infinite logits in evaluation batch {bi}): \
                 its weights or the computation hold non-finite values",
                ds.name
            )));
        }
        if batch.labels != Labels::None {
            loss_sum += task_loss(model, &batch, &logits, 1.0)?.loss * batch.size as f64;
            loss_n += batch.size;
        }
        match &model.task {
            TaskKind::Classification { num_labels } => {
                classes.extend(argmax_rows(&logits, *num_labels)?)
            }
            TaskKind::Regression => values.extend_from_slice(&logits),
            TaskKind::QuestionAnswering => {
                let s = batch.seq_len;
                for r in 0..batch.size {
                    starts.push((0..s).map(|i| logits[(r * s + i) * 2]).collect());
                    ends.push((0..s).map(|i| logits[(r * s + i) * 2 + 1]).collect());
                }
            }
        }
    }
    model.clear_activations();
    let preds = match &model.task {
        TaskKind::Classification { .. } => Predictions::Classes(classes),
        TaskKind::Regression => Predictions::Values(values),
        TaskKind::QuestionAnswering => Predictions::Spans {
            start: starts,
            end: ends,
        },
    };
    Ok((preds, (loss_n > 0).then(|| loss_sum / loss_n as f64)))
}

/// Evaluates with the given metrics (the first is the main one).
pub fn evaluate(
    be: &dyn Backend,
    model: &mut Bert,
    ds: &Dataset,
    metrics: &[Metric],
    batch_size: usize,
    precision: Precision,
) -> Result<EvalResult> {
    let (preds, loss) = predict(be, model, ds, batch_size, precision)?;
    let scored = match preds {
        Predictions::Classes(p) => {
            let gold = ds
                .class_labels()
                .ok_or_else(|| Error::msg(format!("{}: no labels to evaluate against", ds.name)))?;
            classification_metrics(metrics, &p, &gold)?
        }
        Predictions::Values(p) => {
            let gold = ds
                .values()
                .ok_or_else(|| Error::msg(format!("{}: no labels to evaluate against", ds.name)))?;
            regression_metrics(metrics, &p, &gold)?
        }
        Predictions::Spans { start, end } => {
            let sq = ds
                .squad
                .as_ref()
                .ok_or_else(|| Error::msg(format!("{}: not a SQuAD dataset", ds.name)))?;
            let cfg = QaConfig {
                v2: sq.v2,
                ..QaConfig::default()
            };
            let answers = squad_postprocess(&sq.examples, &sq.metas, &start, &end, &cfg)?;
            squad_metrics(&squad_evaluate(&sq.examples, &answers, sq.v2))
        }
    };
    let main = metrics
        .first()
        .map(|m| m.name().to_string())
        .unwrap_or_default();
    Ok(EvalResult {
        metrics: scored
            .into_iter()
            .map(|(m, v)| (m.name().to_string(), v))
            .collect(),
        loss,
        main,
    })
}
