//! The CUDA launcher of `AttentionOps`.

use crate::backend::cuda::*;
use crate::backend::*;
use crate::error::{Error, Result};

impl AttentionOps for CudaBackend {
    fn split_heads(
        &self,
        x: &Tensor,
        out: &mut Tensor,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<()> {
        self.permute_heads("split_heads", x, out, batch, seq, heads, true)
    }

    fn merge_heads(
        &self,
        x: &Tensor,
        out: &mut Tensor,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<()> {
        self.permute_heads("merge_heads", x, out, batch, seq, heads, false)
    }

    fn attention_softmax(
        &self,
        scores: &mut Tensor,
        key_mask: &Tensor,
        heads: usize,
        scale: f32,
    ) -> Result<()> {
        let op = "attention_softmax";
        let pm = self.ptr(op, "key_mask", key_mask, DType::U8)?;
        let shape = scores.shape().to_vec();
        if shape.len() != 4 || shape[1] != heads || shape[2] != shape[3] {
            return Err(Error::shape(
                op,
                format!("scores must be [B, {heads}, S, S], got {shape:?}"),
            ));
        }
        let (b, s) = (shape[0], shape[2]);
        check_len(op, "key_mask", key_mask.numel(), b * s)?;
        let ps = self.ptr_mut(op, "scores", scores, DType::F32)?;
        let rows = b * heads * s;
        if rows == 0 {
            return Ok(());
        }
        if s > u32::MAX as usize || heads > u32::MAX as usize {
            return Err(too_large(op, "S or heads", s.max(heads), u32::MAX as usize));
        }
        self.launch(
            "attention",
            softmax_variant(s, true),
            self.rows_cfg(rows),
            &[
                KArg::Ptr(ps),
                KArg::Ptr(pm),
                KArg::U64(rows as u64),
                KArg::U32(s as u32),
                KArg::U32(heads as u32),
                KArg::F32(scale),
            ],
        )
    }

    fn softmax_backward(&self, probs: &Tensor, dprobs: &mut Tensor, scale: f32) -> Result<()> {
        let op = "softmax_backward";
        let pp = self.ptr(op, "probs", probs, DType::F32)?;
        let s = *probs.shape().last().unwrap_or(&0);
        let pd = self.ptr_mut(op, "dprobs", dprobs, DType::F32)?;
        check_len(op, "dprobs", dprobs.numel(), probs.numel())?;
        if s == 0 || probs.numel() == 0 {
            return Ok(());
        }
        if s > u32::MAX as usize {
            return Err(too_large(op, "row length", s, u32::MAX as usize));
        }
        let rows = probs.numel() / s;
        self.launch(
            "attention",
            softmax_variant(s, false),
            self.rows_cfg(rows),
            &[
                KArg::Ptr(pp),
                KArg::Ptr(pd),
                KArg::U64(rows as u64),
                KArg::U32(s as u32),
                KArg::F32(scale),
            ],
        )
    }
}

/// Picks the register-cached softmax variant (`S % 4 == 0`, `S <= 1024`) or the generic one.
fn softmax_variant(s: usize, fwd: bool) -> &'static str {
    let v = if s % 4 != 0 || s > 1024 {
        0
    } else if s <= 128 {
        1
    } else if s <= 256 {
        2
    } else if s <= 512 {
        4
    } else {
        8
    };
    match (fwd, v) {
        (true, 1) => "softmax_fwd_v1",
        (true, 2) => "softmax_fwd_v2",
        (true, 4) => "softmax_fwd_v4",
        (true, 8) => "softmax_fwd_v8",
        (true, _) => "softmax_fwd_generic",
        (false, 1) => "softmax_bwd_v1",
        (false, 2) => "softmax_bwd_v2",
        (false, 4) => "softmax_bwd_v4",
        (false, 8) => "softmax_bwd_v8",
        (false, _) => "softmax_bwd_generic",
    }
}

impl CudaBackend {
    /// `[B·S, H·D] ↔ [B, H, S, D]` (kernels/attention.cu permute_heads_*).
    #[allow(clippy::too_many_arguments)]
    fn permute_heads(
        &self,
        op: &str,
        x: &Tensor,
        out: &mut Tensor,
        b: usize,
        s: usize,
        h: usize,
        split: bool,
    ) -> Result<()> {
        let px = self.ptr(op, "x", x, DType::F32)?;
        let po = self.ptr_mut(op, "out", out, DType::F32)?;
        let n = x.numel();
        check_len(op, "out", out.numel(), n)?;
        let bsh = b.checked_mul(s).and_then(|v| v.checked_mul(h)).unwrap_or(0);
        if bsh == 0 || n % bsh != 0 {
            return Err(Error::shape(
                op,
                format!("{n} elements do not split into B={b}, S={s}, H={h}"),
            ));
        }
        let d = n / bsh;
        if d == 0 {
            return Ok(());
        }
        // Destination row (bi·P + p)·Q + q comes from source row (bi·Q + q)·P + p.
        let (p_dim, q_dim) = if split { (h, s) } else { (s, h) };
        let (kernel, total, dv) = if d % 4 == 0 {
            ("permute_heads_f32x4", n / 4, d / 4)
        } else {
            ("permute_heads_f32", n, d)
        };
        self.launch(
            "attention",
            kernel,
            self.stride_cfg(total),
            &[
                KArg::Ptr(px),
                KArg::Ptr(po),
                KArg::U64(total as u64),
                KArg::U64(p_dim as u64),
                KArg::U64(q_dim as u64),
                KArg::U64(dv as u64),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_variants_fit_the_row_length() {
        assert_eq!(softmax_variant(128, true), "softmax_fwd_v1");
        assert_eq!(softmax_variant(132, true), "softmax_fwd_v2");
        assert_eq!(softmax_variant(384, false), "softmax_bwd_v4");
        assert_eq!(softmax_variant(1024, true), "softmax_fwd_v8");
        assert_eq!(softmax_variant(1028, true), "softmax_fwd_generic");
        assert_eq!(softmax_variant(130, false), "softmax_bwd_generic");
    }
}
