//! The CPU reference of `MovementOps`.

use rayon::prelude::*;

use crate::backend::cpu::*;
use crate::backend::*;
use crate::error::{Error, Result};

impl MovementOps for CpuBackend {
    fn movement_grads(
        &self,
        w: &Tensor,
        g: &Tensor,
        mask: &Tensor,
        grad_w: &mut Tensor,
        scores: &mut Tensor,
        rule: ScoreRule,
    ) -> Result<()> {
        let op = "movement_grads";
        same_numel(
            op,
            &[
                ("w", w),
                ("grad_wprime", g),
                ("mask", mask),
                ("grad_w", &*grad_w),
                ("scores", &*scores),
            ],
        )?;
        let ws = f32s(op, "w", w)?;
        let gs = f32s(op, "grad_wprime", g)?;
        let ms = u8s(op, "mask", mask)?;
        let sc = f32s_mut(op, "scores", scores)?;
        let sp = SendPtr(sc.as_mut_ptr());
        let gw = f32s_mut(op, "grad_w", grad_w)?;
        par_chunks(gw, |start, gw| {
            for (i, gwi) in gw.iter_mut().enumerate() {
                let j = start + i;
                // SAFETY: j < n (same_numel); chunks are disjoint, one writer per element.
                let s = unsafe { &mut *sp.get().add(j) };
                movement_element(ws[j], gs[j], ms[j], gwi, s, rule);
            }
        });
        Ok(())
    }

    fn sigmoid_mask(
        &self,
        scores: &Tensor,
        tau: f32,
        mask: &mut Tensor,
        dscores: Option<&mut Tensor>,
        coef: f32,
    ) -> Result<usize> {
        let op = "sigmoid_mask";
        let logit = sigmoid_logit(op, tau)?;
        let ss = f32s(op, "scores", scores)?;
        let n = ss.len();
        let dp = match dscores {
            Some(d) if coef != 0.0 => {
                let ds = f32s_mut(op, "dscores", d)?;
                check_len(op, "dscores", ds.len(), n)?;
                Some(SendPtr(ds.as_mut_ptr()))
            }
            Some(d) => {
                check_len(op, "dscores", d.numel(), n)?;
                None
            }
            None => None,
        };
        let ms = u8s_mut(op, "mask", mask)?;
        check_len(op, "mask", ms.len(), n)?;
        let kept = ms
            .par_chunks_mut(CHUNK)
            .enumerate()
            .map(|(ci, m)| {
                let mut kept = 0usize;
                for (i, mi) in m.iter_mut().enumerate() {
                    let j = ci * CHUNK + i;
                    let x = ss[j];
                    let keep = (x as f64) > logit;
                    *mi = keep as u8;
                    kept += keep as usize;
                    if let Some(d) = dp {
                        let s = 1.0 / (1.0 + (-x).exp());
                        // SAFETY: j < n; chunks are disjoint.
                        unsafe { *d.get().add(j) += coef * s * (1.0 - s) };
                    }
                }
                kept
            })
            .sum();
        Ok(kept)
    }
}

/// `grad_w += G⊙M` and `scores ±= G⊙W` for one element.
#[inline]
pub(crate) fn movement_element(
    w: f32,
    g: f32,
    m: u8,
    grad_w: &mut f32,
    score: &mut f32,
    rule: ScoreRule,
) {
    if m != 0 {
        *grad_w += g;
    }
    match rule {
        ScoreRule::Adam => *score += g * w,
        ScoreRule::Accumulate => *score -= g * w,
    }
}

/// The soft-movement mask threshold `ln(τ/(1−τ))` (f64), or an error for τ ∉ (0, 1).
pub(crate) fn sigmoid_logit(op: &str, tau: f32) -> Result<f64> {
    if !(tau > 0.0 && tau < 1.0) {
        return Err(Error::shape(
            op,
            format!("tau = {tau} must lie strictly between 0 and 1"),
        ));
    }
    let t = tau as f64;
    Ok((t / (1.0 - t)).ln())
}
