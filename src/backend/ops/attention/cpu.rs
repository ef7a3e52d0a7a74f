//! The CPU reference of `AttentionOps`.

use rayon::prelude::*;

use crate::backend::cpu::*;
use crate::backend::*;
use crate::error::{Error, Result};

impl AttentionOps for CpuBackend {
    fn split_heads(
        &self,
        x: &Tensor,
        out: &mut Tensor,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<()> {
        permute_heads("split_heads", x, out, batch, seq, heads, true)
    }

    fn merge_heads(
        &self,
        x: &Tensor,
        out: &mut Tensor,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<()> {
        permute_heads("merge_heads", x, out, batch, seq, heads, false)
    }

    fn attention_softmax(
        &self,
        scores: &mut Tensor,
        key_mask: &Tensor,
        heads: usize,
        scale: f32,
    ) -> Result<()> {
        let op = "attention_softmax";
        let km = u8s(op, "key_mask", key_mask)?;
        let shape = scores.shape().to_vec();
        if shape.len() != 4 || shape[1] != heads || shape[2] != shape[3] {
            return Err(Error::shape(
                op,
                format!("scores must be [B, {heads}, S, S], got {shape:?}"),
            ));
        }
        let (b, s) = (shape[0], shape[2]);
        check_len(op, "key_mask", km.len(), b * s)?;
        let ss = f32s_mut(op, "scores", scores)?;
        ss.par_chunks_mut(s).enumerate().for_each(|(row, r)| {
            let bi = row / (heads * s);
            let m = &km[bi * s..(bi + 1) * s];
            // A NaN score makes the row NaN (f32::max would drop it).
            let mut mx = f32::NEG_INFINITY;
            for j in 0..s {
                if m[j] != 0 {
                    mx = nan_max(mx, scale * r[j]);
                }
            }
            if mx == f32::NEG_INFINITY {
                r.iter_mut().for_each(|v| *v = 0.0);
                return;
            }
            let mut sum = 0.0f32;
            for j in 0..s {
                r[j] = if m[j] != 0 {
                    (scale * r[j] - mx).exp()
                } else {
                    0.0
                };
                sum += r[j];
            }
            let inv = 1.0 / sum;
            r.iter_mut().for_each(|v| *v *= inv);
        });
        Ok(())
    }

    fn softmax_backward(&self, probs: &Tensor, dprobs: &mut Tensor, scale: f32) -> Result<()> {
        let op = "softmax_backward";
        let ps = f32s(op, "probs", probs)?;
        let s = *probs.shape().last().unwrap_or(&0);
        let ds = f32s_mut(op, "dprobs", dprobs)?;
        check_len(op, "dprobs", ds.len(), ps.len())?;
        if s == 0 {
            return Ok(());
        }
        ds.par_chunks_mut(s).enumerate().for_each(|(row, d)| {
            let p = &ps[row * s..(row + 1) * s];
            let dot: f32 = p.iter().zip(d.iter()).map(|(p, d)| p * d).sum();
            for j in 0..s {
                d[j] = scale * p[j] * (d[j] - dot);
            }
        });
        Ok(())
    }
}

/// `[B·S, H·D] ↔ [B, H, S, D]`.
fn permute_heads(
    op: &str,
    x: &Tensor,
    out: &mut Tensor,
    b: usize,
    s: usize,
    h: usize,
    split: bool,
) -> Result<()> {
    let xs = f32s(op, "x", x)?;
    let os = f32s_mut(op, "out", out)?;
    let n = xs.len();
    check_len(op, "out", os.len(), n)?;
    if b * s * h == 0 || n % (b * s * h) != 0 {
        return Err(Error::shape(
            op,
            format!("{n} elements do not split into B={b}, S={s}, H={h}"),
        ));
    }
    let d = n / (b * s * h);
    // Parallel over destination rows of length d.
    os.par_chunks_mut(d).enumerate().for_each(|(row, o)| {
        let src_row = if split {
            // dst [bi, hi, si] <- src [bi, si, hi]
            let (bi, rem) = (row / (h * s), row % (h * s));
            let (hi, si) = (rem / s, rem % s);
            (bi * s + si) * h + hi
        } else {
            // dst [bi, si, hi] <- src [bi, hi, si]
            let (bi, rem) = (row / (s * h), row % (s * h));
            let (si, hi) = (rem / h, rem % h);
            (bi * h + hi) * s + si
        };
        o.copy_from_slice(&xs[src_row * d..(src_row + 1) * d]);
    });
    Ok(())
}
