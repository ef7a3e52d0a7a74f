//! Evaluation metrics. All values are fractions (accuracy 0.91, not 91);
//! degenerate inputs (no variance, empty confusion rows) give 0 rather than
//! NaN, so "best so far" comparisons stay well defined.
//!
//! Which metrics a GLUE task reports follows Hugging Face `run_glue`: CoLA
//! Matthews correlation; MRPC and QQP accuracy and F1; STS-B Pearson and
//! Spearman; the others accuracy. SQuAD EM / F1 live in
//! [`crate::data::squad`] and are re-exported here.

pub use crate::data::squad::{normalize_answer, squad_em_f1, squad_evaluate, SquadScores};
// The metric names and which ones a task reports belong to the task
// definitions (data), below this module; re-exported here.
pub use crate::data::metric::{glue_metrics, Metric};
use crate::error::{Error, Result};

fn same_len(op: &str, a: usize, b: usize) -> Result<()> {
    if a != b {
        return Err(Error::shape(
            op,
            format!("{a} predictions for {b} gold labels"),
        ));
    }
    if a == 0 {
        return Err(Error::shape(op, "no predictions"));
    }
    Ok(())
}

/// Fraction of equal entries.
pub fn accuracy(pred: &[u32], gold: &[u32]) -> Result<f64> {
    same_len("accuracy", pred.len(), gold.len())?;
    Ok(pred.iter().zip(gold).filter(|(p, g)| p == g).count() as f64 / pred.len() as f64)
}

/// Binary F1 with class 1 positive (0 when there are no true positives).
pub fn f1_binary(pred: &[u32], gold: &[u32]) -> Result<f64> {
    same_len("f1", pred.len(), gold.len())?;
    let (mut tp, mut fp, mut fnn) = (0u64, 0u64, 0u64);
    for (&p, &g) in pred.iter().zip(gold) {
        match (p == 1, g == 1) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fnn += 1,
            _ => {}
        }
    }
    if tp == 0 {
        return Ok(0.0);
    }
    Ok(2.0 * tp as f64 / (2 * tp + fp + fnn) as f64)
}

/// Matthews correlation (the multi-class form of Gorodkin, as scikit-learn;
/// equal to the binary formula for two classes). 0 when undefined.
pub fn matthews_corr(pred: &[u32], gold: &[u32]) -> Result<f64> {
    same_len("mcc", pred.len(), gold.len())?;
    let k = pred.iter().chain(gold).max().map_or(0, |&m| m as usize + 1);
    let mut p_count = vec![0f64; k];
    let mut g_count = vec![0f64; k];
    let mut correct = 0f64;
    for (&p, &g) in pred.iter().zip(gold) {
        p_count[p as usize] += 1.0;
        g_count[g as usize] += 1.0;
        if p == g {
            correct += 1.0;
        }
    }
    let s = pred.len() as f64;
    let pg: f64 = p_count.iter().zip(&g_count).map(|(a, b)| a * b).sum();
    let pp: f64 = p_count.iter().map(|a| a * a).sum();
    let gg: f64 = g_count.iter().map(|a| a * a).sum();
    let den = ((s * s - pp) * (s * s - gg)).sqrt();
    if den == 0.0 {
        return Ok(0.0);
    }
    Ok((correct * s - pg) / den)
}

/// Pearson correlation (0 when either side is constant).
pub fn pearson(x: &[f32], y: &[f32]) -> Result<f64> {
    same_len("pearson", x.len(), y.len())?;
    let xs: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let ys: Vec<f64> = y.iter().map(|&v| v as f64).collect();
    Ok(pearson_f64(&xs, &ys))
}

fn pearson_f64(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (da, db) = (a - mx, b - my);
        sxy += da * db;
        sxx += da * da;
        syy += db * db;
    }
    if sxx == 0.0 || syy == 0.0 {
        return 0.0;
    }
    sxy / (sxx * syy).sqrt()
}

/// 1-based ranks, ties get the average of their ranks.
pub fn average_ranks(x: &[f32]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = r;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman rank correlation: Pearson of the average ranks.
pub fn spearman(x: &[f32], y: &[f32]) -> Result<f64> {
    same_len("spearman", x.len(), y.len())?;
    Ok(pearson_f64(&average_ranks(x), &average_ranks(y)))
}

/// Index of the largest logit of each row of a row-major `[n, num_labels]` array.
pub fn argmax_rows(logits: &[f32], num_labels: usize) -> Result<Vec<u32>> {
    if num_labels == 0 || logits.len() % num_labels != 0 {
        return Err(Error::shape(
            "argmax_rows",
            format!("{} logits in rows of {num_labels}", logits.len()),
        ));
    }
    Ok(logits
        .chunks(num_labels)
        .map(|row| {
            let mut best = 0;
            for (i, v) in row.iter().enumerate() {
                if *v > row[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect())
}

/// Compute classification metrics; regression / SQuAD metrics in the list
/// are errors.
pub fn classification_metrics(
    metrics: &[Metric],
    pred: &[u32],
    gold: &[u32],
) -> Result<Vec<(Metric, f64)>> {
    metrics
        .iter()
        .map(|&m| {
            let v = match m {
                Metric::Accuracy => accuracy(pred, gold)?,
                Metric::F1 => f1_binary(pred, gold)?,
                Metric::Mcc => matthews_corr(pred, gold)?,
                other => {
                    return Err(Error::msg(format!(
                        "{other} is not a classification metric"
                    )))
                }
            };
            Ok((m, v))
        })
        .collect()
}

/// Compute regression metrics (Pearson, Spearman).
pub fn regression_metrics(
    metrics: &[Metric],
    pred: &[f32],
    gold: &[f32],
) -> Result<Vec<(Metric, f64)>> {
    metrics
        .iter()
        .map(|&m| {
            let v = match m {
                Metric::Pearson => pearson(pred, gold)?,
                Metric::Spearman => spearman(pred, gold)?,
                other => return Err(Error::msg(format!("{other} is not a regression metric"))),
            };
            Ok((m, v))
        })
        .collect()
}

/// SQuAD scores as metric values (exact match, F1).
pub fn squad_metrics(scores: &SquadScores) -> Vec<(Metric, f64)> {
    vec![
        (Metric::SquadF1, scores.f1),
        (Metric::ExactMatch, scores.exact),
    ]
}
