//! Exact top-k thresholds (radix select) and the masks they give (`kernels/topk.cu`; docs/algorithms.md §6).
//!
//! In this folder: the contract (the trait below, its parameter types and
//! checks), the CPU reference (`cpu.rs`), the CUDA launcher (`cuda.rs`), the
//! test bodies (`tests.rs`, run on every device present) and the benchmark
//! workloads (`bench.rs`).

pub(crate) mod bench;
mod cpu;
mod cuda;

use crate::backend::*;
use crate::error::{Error, Result};

/// Which entries a top-k selection keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopkRule {
    /// Exactly `k` entries: those a full sort by (score descending, global
    /// index ascending) puts first. Ties at the threshold go to the lower index,
    /// where the global index runs through the matrices in the order given,
    /// each flattened row-major.
    ExactK,
    /// Every entry whose score is ≥ the k-th largest score (ties kept; may keep
    /// more than k). `k = 0` keeps nothing.
    KeepTies,
}

/// What a selection ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopkScope {
    /// Each entry by its own score.
    Entries,
    /// Each entry by the mean of its row (whole rows go together); k still
    /// counts entries, so rows of different lengths weigh by their length.
    RowMean,
}

/// The threshold a selection found: keep every entry whose key is above
/// `threshold` and, for [`TopkRule::ExactK`], the first `tie_quota` entries
/// (in global index order) whose key equals it; for `KeepTies` every entry
/// equal to it. Scores are compared in the total order of `f32::total_cmp`
/// (−0 < +0; NaN above +∞), on `|x|` when `abs` was asked for (see
/// [`topk_key`]); with [`TopkScope::RowMean`] the key of an entry is that of
/// its row's mean ([`topk_row_mean`]) and `threshold` is a row mean. `kept`
/// is the number of entries the mask will keep, `ties` the number of entries
/// whose key equals the threshold's (so `tie_quota == ties` means that every
/// tie is kept and the apply pass needs no tie ranking).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TopkThreshold {
    pub threshold: f32,
    pub tie_quota: usize,
    pub ties: usize,
    pub kept: usize,
    pub rule: TopkRule,
    pub scope: TopkScope,
    pub abs: bool,
    /// No entry is kept (k = 0): the threshold is meaningless.
    pub keep_none: bool,
}

impl TopkThreshold {
    /// The threshold of `k = 0`: nothing is kept.
    pub fn none(rule: TopkRule, scope: TopkScope, abs: bool) -> TopkThreshold {
        TopkThreshold {
            threshold: 0.0,
            tie_quota: 0,
            ties: 0,
            kept: 0,
            rule,
            scope,
            abs,
            keep_none: true,
        }
    }

    /// Builds the threshold from the k-th largest key `key`, the number of
    /// entries with a larger key (`greater`) and with an equal one (`ties`).
    pub fn from_key(
        key: u32,
        k: usize,
        greater: usize,
        ties: usize,
        rule: TopkRule,
        scope: TopkScope,
        abs: bool,
    ) -> TopkThreshold {
        let (tie_quota, kept) = match rule {
            TopkRule::ExactK => (k - greater, k),
            TopkRule::KeepTies => (ties, greater + ties),
        };
        TopkThreshold {
            threshold: topk_key_value(key),
            tie_quota,
            ties,
            kept,
            rule,
            scope,
            abs,
            keep_none: false,
        }
    }

    /// The ordering key of the threshold (see [`topk_key`]).
    pub fn key(&self) -> u32 {
        topk_key(self.threshold, self.abs)
    }

    /// True when only the first `tie_quota` of the `ties` equal entries are kept,
    /// so the apply pass has to rank the ties by global index.
    pub fn partial_ties(&self) -> bool {
        !self.keep_none && self.rule == TopkRule::ExactK && self.tie_quota < self.ties
    }
}

/// The ordering key of a score: a `u32` whose unsigned order is the order of
/// `f32::total_cmp` on `x` (on `|x|` when `abs`). Both backends rank by it.
#[inline]
pub fn topk_key(x: f32, abs: bool) -> u32 {
    // Negative: all bits flipped; positive: the sign bit set. Branch-free, as
    // scores have random signs.
    let b = if abs {
        x.to_bits() & 0x7fff_ffff
    } else {
        x.to_bits()
    };
    b ^ (((b as i32 >> 31) as u32) | 0x8000_0000)
}

/// The f32 whose key is `key` (the inverse of [`topk_key`] without `abs`).
#[inline]
pub fn topk_key_value(key: u32) -> f32 {
    if key & 0x8000_0000 != 0 {
        f32::from_bits(key & 0x7fff_ffff)
    } else {
        f32::from_bits(!key)
    }
}

/// The score of a row under [`TopkScope::RowMean`]: the mean of the row's
/// entries (of their absolute values when `abs`), summed in f64 by 32
/// interleaved partial sums (partial `l` adds entries `l, l+32, …` in order)
/// that are then combined pairwise as a warp's xor-shuffle tree does
/// (`p[i] += p[i+16]`, then `+8`, `+4`, `+2`, `+1`), divided by the row
/// length in f64 and rounded to f32. A NaN mean becomes the canonical
/// positive NaN. The CUDA kernel computes exactly this, so CPU and GPU
/// masks agree bit for bit.
pub fn topk_row_mean(row: &[f32], abs: bool) -> f32 {
    let mut p = [0.0f64; 32];
    for (i, &x) in row.iter().enumerate() {
        let v = if abs { x.abs() } else { x };
        p[i % 32] += v as f64;
    }
    let mut w = 16;
    while w >= 1 {
        for i in 0..w {
            p[i] += p[i + w];
        }
        w /= 2;
    }
    let m = (p[0] / row.len() as f64) as f32;
    if m.is_nan() {
        f32::NAN
    } else {
        m
    }
}

/// Checks the arguments of [`Backend::topk_apply`]; returns the element count of each score tensor.
pub fn check_topk_apply(
    op: &str,
    scores: &[&Tensor],
    masks: &[&mut Tensor],
    apply: &[&mut Tensor],
) -> Result<Vec<usize>> {
    if masks.len() != scores.len() {
        return Err(Error::shape(
            op,
            format!("{} masks for {} score tensors", masks.len(), scores.len()),
        ));
    }
    if !apply.is_empty() && apply.len() != scores.len() {
        return Err(Error::shape(
            op,
            format!(
                "{} tensors to apply to for {} score tensors (give none or one each)",
                apply.len(),
                scores.len()
            ),
        ));
    }
    let mut lens = Vec::with_capacity(scores.len());
    for (i, s) in scores.iter().enumerate() {
        want_dtype(op, &format!("scores[{i}]"), s, DType::F32)?;
        want_dtype(op, &format!("masks[{i}]"), masks[i], DType::U8)?;
        if masks[i].numel() != s.numel() {
            return Err(Error::shape(
                op,
                format!(
                    "masks[{i}] {:?} does not match scores[{i}] {:?}",
                    masks[i].shape(),
                    s.shape()
                ),
            ));
        }
        if let Some(a) = apply.get(i) {
            want_dtype(op, &format!("apply[{i}]"), a, DType::F32)?;
            if a.numel() != s.numel() {
                return Err(Error::shape(
                    op,
                    format!(
                        "apply[{i}] {:?} does not match scores[{i}] {:?}",
                        a.shape(),
                        s.shape()
                    ),
                ));
            }
        }
        lens.push(s.numel());
    }
    Ok(lens)
}

/// Checks the scores of [`Backend::topk_threshold`]; returns the total entry count.
pub fn check_topk_scores(op: &str, scores: &[&Tensor], k: usize) -> Result<usize> {
    let mut total = 0usize;
    for (i, s) in scores.iter().enumerate() {
        want_dtype(op, &format!("scores[{i}]"), s, DType::F32)?;
        total += s.numel();
    }
    if k > total {
        return Err(Error::shape(
            op,
            format!("k = {k} exceeds the {total} entries of the scores"),
        ));
    }
    Ok(total)
}

/// Exact top-k thresholds (radix select) and the masks they give (`kernels/topk.cu`; docs/algorithms.md §6).
pub trait TopkOps {
    /// Finds the top-k threshold over one or several score tensors of any
    /// shapes (F32). `k` counts entries and must be `≤` their total number
    /// (`k = 0` gives a threshold that keeps nothing). For `RowMean` a row is
    /// the last dimension of a tensor. The result is exact (a radix select on
    /// the keys of [`topk_key`]), identical on every backend.
    fn topk_threshold(
        &self,
        scores: &[&Tensor],
        k: usize,
        rule: TopkRule,
        scope: TopkScope,
        abs: bool,
    ) -> Result<TopkThreshold>;

    /// Writes the masks (U8 0/1, same element counts as `scores`) of a threshold
    /// found by [`Backend::topk_threshold`] on the same scores, and in the same
    /// pass applies them: `apply[i] ⊙= mask[i]` in place (a pruned entry is set
    /// to +0, whatever it held), where `apply` is empty or holds one F32
    /// tensor per score tensor (`W' = M⊙W` written into a copy of W, or
    /// LoSparse's `S` zeroed). Returns the number of entries kept: the CPU
    /// counts them, the CUDA backend returns `th.kept` without a device
    /// round trip (equal when the scores are those the threshold was found on).
    fn topk_apply(
        &self,
        scores: &[&Tensor],
        th: &TopkThreshold,
        masks: &mut [&mut Tensor],
        apply: &mut [&mut Tensor],
    ) -> Result<usize>;
}
