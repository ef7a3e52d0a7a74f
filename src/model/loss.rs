//! Losses of the three heads and of distillation, computed on the host in
//! f64 from the (small) logits, exactly as transformers reduces them.

use crate::error::{Error, Result};

/// A loss value and the gradient of `scale · loss` with respect to the logits.
#[derive(Clone, Debug, PartialEq)]
pub struct LossGrad {
    pub loss: f64,
    pub dlogits: Vec<f32>,
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let mx = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let lse = mx + row.iter().map(|&v| (v as f64 - mx).exp()).sum::<f64>().ln();
    row.iter().map(|&v| v as f64 - lse).collect()
}

/// Mean cross-entropy over rows of `[rows, classes]` logits (`CrossEntropyLoss`).
pub fn cross_entropy(
    logits: &[f32],
    labels: &[u32],
    classes: usize,
    scale: f32,
) -> Result<LossGrad> {
    let rows = labels.len();
    if classes == 0 || logits.len() != rows * classes {
        return Err(Error::shape(
            "cross_entropy",
            format!(
                "{} logits for {rows} rows × {classes} classes",
                logits.len()
            ),
        ));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes) {
        return Err(Error::msg(format!(
            "label {bad} is out of range for a head with {classes} outputs"
        )));
    }
    let mut loss = 0.0;
    let mut d = vec![0.0f32; logits.len()];
    for (r, &y) in labels.iter().enumerate() {
        let ls = log_softmax(&logits[r * classes..(r + 1) * classes]);
        loss -= ls[y as usize];
        for c in 0..classes {
            let p = ls[c].exp();
            let g = p - if c == y as usize { 1.0 } else { 0.0 };
            d[r * classes + c] = (g * scale as f64 / rows as f64) as f32;
        }
    }
    Ok(LossGrad {
        loss: loss / rows.max(1) as f64,
        dlogits: d,
    })
}

/// Mean squared error of one-output logits (`MSELoss`, regression).
pub fn mse(logits: &[f32], targets: &[f32], scale: f32) -> Result<LossGrad> {
    if logits.len() != targets.len() {
        return Err(Error::shape(
            "mse",
            format!("{} predictions for {} targets", logits.len(), targets.len()),
        ));
    }
    let n = targets.len().max(1) as f64;
    let mut loss = 0.0;
    let d = logits
        .iter()
        .zip(targets)
        .map(|(&p, &t)| {
            let e = p as f64 - t as f64;
            loss += e * e;
            (2.0 * e * scale as f64 / n) as f32
        })
        .collect();
    Ok(LossGrad {
        loss: loss / n,
        dlogits: d,
    })
}

/// Extractive QA (`BertForQuestionAnswering`): logits `[B·S, 2]` (start, end
/// interleaved); positions clamped to `[0, S]`, position `S` ignored; loss =
/// (mean CE of starts + mean CE of ends) / 2.
pub fn span_loss(
    logits: &[f32],
    starts: &[u32],
    ends: &[u32],
    seq: usize,
    scale: f32,
) -> Result<LossGrad> {
    let b = starts.len();
    if logits.len() != b * seq * 2 || ends.len() != b {
        return Err(Error::shape(
            "span_loss",
            format!("{} logits for {b} rows × {seq} tokens × 2", logits.len()),
        ));
    }
    let mut d = vec![0.0f32; logits.len()];
    let mut total = 0.0;
    for (which, pos) in [(0usize, starts), (1usize, ends)] {
        let valid: Vec<(usize, usize)> = pos
            .iter()
            .enumerate()
            .map(|(r, &p)| (r, (p as usize).min(seq)))
            .filter(|&(_, p)| p < seq)
            .collect();
        if valid.is_empty() {
            continue; // CrossEntropyLoss of only ignored targets is NaN in torch; contribute nothing.
        }
        let cnt = valid.len() as f64;
        let mut l = 0.0;
        for (r, p) in valid {
            let row: Vec<f32> = (0..seq)
                .map(|s| logits[(r * seq + s) * 2 + which])
                .collect();
            let ls = log_softmax(&row);
            l -= ls[p];
            for s in 0..seq {
                let g = ls[s].exp() - if s == p { 1.0 } else { 0.0 };
                d[(r * seq + s) * 2 + which] = (g / cnt / 2.0 * scale as f64) as f32;
            }
        }
        total += l / cnt / 2.0;
    }
    Ok(LossGrad {
        loss: total,
        dlogits: d,
    })
}

/// Logit distillation: `KL(softmax(z_t/T) ‖ softmax(z_s/T)) · T²`, mean over
/// rows (`batchmean`); the gradient is with respect to the student logits.
pub fn distill_kl(
    student: &[f32],
    teacher: &[f32],
    classes: usize,
    temperature: f32,
    scale: f32,
) -> Result<LossGrad> {
    if student.len() != teacher.len() || classes == 0 || student.len() % classes != 0 {
        return Err(Error::shape(
            "distill_kl",
            format!(
                "student {} vs teacher {} logits",
                student.len(),
                teacher.len()
            ),
        ));
    }
    let rows = student.len() / classes;
    let t = temperature as f64;
    let mut loss = 0.0;
    let mut d = vec![0.0f32; student.len()];
    for r in 0..rows {
        let zs: Vec<f32> = student[r * classes..(r + 1) * classes]
            .iter()
            .map(|&v| (v as f64 / t) as f32)
            .collect();
        let zt: Vec<f32> = teacher[r * classes..(r + 1) * classes]
            .iter()
            .map(|&v| (v as f64 / t) as f32)
            .collect();
        let ls = log_softmax(&zs);
        let lt = log_softmax(&zt);
        for c in 0..classes {
            let pt = lt[c].exp();
            loss += pt * (lt[c] - ls[c]);
            // d/dz_s of T²·KL = T²·(p_s − p_t)/T = T·(p_s − p_t).
            d[r * classes + c] = ((ls[c].exp() - pt) * t * scale as f64 / rows as f64) as f32;
        }
    }
    Ok(LossGrad {
        loss: loss * t * t / rows.max(1) as f64,
        dlogits: d,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric<F: Fn(&[f32]) -> f64>(f: F, x: &[f32]) -> Vec<f64> {
        (0..x.len())
            .map(|i| {
                let h = 1e-3f32;
                let mut a = x.to_vec();
                a[i] += h;
                let mut b = x.to_vec();
                b[i] -= h;
                (f(&a) - f(&b)) / (2.0 * h as f64)
            })
            .collect()
    }

    #[test]
    fn gradients_match_finite_differences() {
        let z = [0.3f32, -1.2, 0.7, 2.0, 0.1, -0.4];
        let ce = cross_entropy(&z, &[2, 0], 3, 1.0).unwrap();
        let num = numeric(|x| cross_entropy(x, &[2, 0], 3, 1.0).unwrap().loss, &z);
        for (a, b) in ce.dlogits.iter().zip(&num) {
            assert!((*a as f64 - b).abs() < 1e-3, "{a} vs {b}");
        }
        let t = [1.0f32, 0.5, -0.3, 0.2, 0.9, 0.0];
        let kl = distill_kl(&z, &t, 3, 2.0, 1.0).unwrap();
        let num = numeric(|x| distill_kl(x, &t, 3, 2.0, 1.0).unwrap().loss, &z);
        for (a, b) in kl.dlogits.iter().zip(&num) {
            assert!((*a as f64 - b).abs() < 1e-3, "{a} vs {b}");
        }
        let q: Vec<f32> = (0..12).map(|i| ((i * 7 % 5) as f32 - 2.0) * 0.3).collect();
        let sp = span_loss(&q, &[1, 3], &[2, 0], 3, 1.0).unwrap();
        let num = numeric(|x| span_loss(x, &[1, 3], &[2, 0], 3, 1.0).unwrap().loss, &q);
        for (a, b) in sp.dlogits.iter().zip(&num) {
            assert!((*a as f64 - b).abs() < 1e-3, "{a} vs {b}");
        }
        let m = mse(&[0.5, -1.0], &[0.0, 1.0], 1.0).unwrap();
        assert!((m.loss - (0.25 + 4.0) / 2.0).abs() < 1e-12);
        assert_eq!(m.dlogits, vec![0.5, -2.0]);
    }

    #[test]
    fn bad_labels_are_errors() {
        assert!(cross_entropy(&[0.0, 1.0], &[2], 2, 1.0).is_err());
        assert!(mse(&[0.0], &[1.0, 2.0], 1.0).is_err());
    }
}
