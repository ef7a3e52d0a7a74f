//! The CPU reference of `TopkOps`.

use rayon::prelude::*;

use crate::backend::cpu::*;
use crate::backend::*;
use crate::error::{Error, Result};

impl TopkOps for CpuBackend {
    fn topk_threshold(
        &self,
        scores: &[&Tensor],
        k: usize,
        rule: TopkRule,
        scope: TopkScope,
        abs: bool,
    ) -> Result<TopkThreshold> {
        let op = "topk_threshold";
        check_topk_scores(op, scores, k)?;
        let data: Vec<&[f32]> = scores
            .iter()
            .enumerate()
            .map(|(i, t)| f32s(op, &format!("scores[{i}]"), t))
            .collect::<Result<_>>()?;
        if k == 0 {
            return Ok(TopkThreshold::none(rule, scope, abs));
        }
        let (key, greater, ties) = match scope {
            TopkScope::Entries => {
                // One parallel job over the chunks of every tensor.
                let chunks: Vec<&[f32]> = data.iter().flat_map(|s| s.chunks(CHUNK)).collect();
                radix_select(k as u64, |mask, prefix, shift, bits| {
                    let nb = 1usize << bits;
                    chunks
                        .par_iter()
                        .fold(
                            || vec![0u64; nb],
                            |mut h, c| {
                                for &x in c.iter() {
                                    let key = topk_key(x, abs);
                                    if key & mask == prefix {
                                        h[((key >> shift) as usize) & (nb - 1)] += 1;
                                    }
                                }
                                h
                            },
                        )
                        .reduce(|| vec![0u64; nb], add_hists)
                })
            }
            TopkScope::RowMean => {
                let rows = row_keys(op, &data, scores, abs)?;
                radix_select(k as u64, |mask, prefix, shift, bits| {
                    let nb = 1usize << bits;
                    let mut h = vec![0u64; nb];
                    for &(key, w) in &rows {
                        if key & mask == prefix {
                            h[((key >> shift) as usize) & (nb - 1)] += w as u64;
                        }
                    }
                    h
                })
            }
        };
        Ok(TopkThreshold::from_key(
            key,
            k,
            greater as usize,
            ties as usize,
            rule,
            scope,
            abs,
        ))
    }

    fn topk_apply(
        &self,
        scores: &[&Tensor],
        th: &TopkThreshold,
        masks: &mut [&mut Tensor],
        apply: &mut [&mut Tensor],
    ) -> Result<usize> {
        let op = "topk_apply";
        check_topk_apply(op, scores, masks, apply)?;
        let data: Vec<&[f32]> = scores
            .iter()
            .enumerate()
            .map(|(i, t)| f32s(op, &format!("scores[{i}]"), t))
            .collect::<Result<_>>()?;
        let mut mdata: Vec<&mut [u8]> = Vec::with_capacity(masks.len());
        for (i, m) in masks.iter_mut().enumerate() {
            mdata.push(u8s_mut(op, &format!("masks[{i}]"), m)?);
        }
        let mut adata: Vec<Option<&mut [f32]>> = Vec::with_capacity(scores.len());
        if apply.is_empty() {
            adata.resize_with(scores.len(), || None);
        } else {
            for (i, a) in apply.iter_mut().enumerate() {
                adata.push(Some(f32s_mut(op, &format!("apply[{i}]"), a)?));
            }
        }
        if th.keep_none {
            for (m, a) in mdata.iter_mut().zip(adata.iter_mut()) {
                m.par_iter_mut().for_each(|x| *x = 0);
                if let Some(a) = a {
                    a.par_iter_mut().for_each(|x| *x = 0.0);
                }
            }
            return Ok(0);
        }
        let kth = th.key();
        let partial = th.partial_ties();
        let mut kept = 0usize;
        match th.scope {
            TopkScope::Entries => {
                // Ties before each chunk, in global index order (only when ranking them).
                let mut tie_base: Vec<Vec<usize>> = Vec::new();
                if partial {
                    let mut run = 0usize;
                    for s in &data {
                        let counts: Vec<usize> = s
                            .par_chunks(CHUNK)
                            .map(|c| c.iter().filter(|&&x| topk_key(x, th.abs) == kth).count())
                            .collect();
                        let mut base = Vec::with_capacity(counts.len());
                        for c in counts {
                            base.push(run);
                            run += c;
                        }
                        tie_base.push(base);
                    }
                }
                for (t, ((s, m), a)) in data
                    .iter()
                    .zip(mdata.iter_mut())
                    .zip(adata.iter_mut())
                    .enumerate()
                {
                    let abs = th.abs;
                    let quota = th.tie_quota;
                    let bases = tie_base.get(t);
                    let per_chunk = |ci: usize, m: &mut [u8], a: Option<&mut [f32]>| -> usize {
                        let sc = &s[ci * CHUNK..ci * CHUNK + m.len()];
                        if partial {
                            let mut seen = bases.map(|b| b[ci]).unwrap_or(0);
                            let mut flags = vec![false; sc.len()];
                            for (f, &x) in flags.iter_mut().zip(sc) {
                                let key = topk_key(x, abs);
                                *f = key > kth
                                    || (key == kth && {
                                        seen += 1;
                                        seen <= quota
                                    });
                            }
                            write_mask(|i| flags[i], m, a)
                        } else {
                            write_mask(|i| topk_key(sc[i], abs) >= kth, m, a)
                        }
                    };
                    kept += match a {
                        Some(a) => m
                            .par_chunks_mut(CHUNK)
                            .zip(a.par_chunks_mut(CHUNK))
                            .enumerate()
                            .map(|(ci, (m, a))| per_chunk(ci, m, Some(a)))
                            .sum::<usize>(),
                        None => m
                            .par_chunks_mut(CHUNK)
                            .enumerate()
                            .map(|(ci, m)| per_chunk(ci, m, None))
                            .sum::<usize>(),
                    };
                }
            }
            TopkScope::RowMean => {
                let rows = row_keys(op, &data, scores, th.abs)?;
                // Entries kept per row: whole rows above the threshold, and the
                // first `tie_quota` tied entries in index order.
                let mut keep_rows = Vec::with_capacity(rows.len());
                let mut ties_before = 0usize;
                for &(key, cols) in &rows {
                    let cols = cols as usize;
                    keep_rows.push(if key > kth {
                        cols
                    } else if key < kth {
                        0
                    } else if partial {
                        let keepn = th.tie_quota.saturating_sub(ties_before).min(cols);
                        ties_before += cols;
                        keepn
                    } else {
                        cols
                    });
                }
                let mut row0 = 0usize;
                for ((t, m), a) in scores.iter().zip(mdata.iter_mut()).zip(adata.iter_mut()) {
                    let (nrows, cols) = t.rows_cols();
                    if cols == 0 || t.numel() == 0 {
                        continue;
                    }
                    let keep = &keep_rows[row0..row0 + nrows];
                    kept += match a {
                        Some(a) => m
                            .par_chunks_mut(cols)
                            .zip(a.par_chunks_mut(cols))
                            .enumerate()
                            .map(|(r, (m, a))| write_mask(|c| c < keep[r], m, Some(a)))
                            .sum::<usize>(),
                        None => m
                            .par_chunks_mut(cols)
                            .enumerate()
                            .map(|(r, m)| write_mask(|c| c < keep[r], m, None))
                            .sum::<usize>(),
                    };
                    row0 += nrows;
                }
            }
        }
        Ok(kept)
    }
}

/// Digit layout of the radix select: 12 + 12 + 8 bits, most significant first.
const LEVELS: [(u32, u32); 3] = [(20, 12), (8, 12), (0, 8)];

/// Exact radix select of the `k`-th largest key (`1 ≤ k ≤ total`). `hist`
/// returns the histogram of digit `(key >> shift) & (2^bits − 1)` over the keys
/// with `key & mask == prefix`, weighted. Returns `(key, greater, ties)`.
fn radix_select(k: u64, hist: impl Fn(u32, u32, u32, u32) -> Vec<u64>) -> (u32, u64, u64) {
    let (mut prefix, mut mask, mut k_rem, mut greater, mut ties) = (0u32, 0u32, k, 0u64, 0u64);
    for (shift, bits) in LEVELS {
        let h = hist(mask, prefix, shift, bits);
        let mut above = 0u64;
        let mut chosen = 0usize;
        for b in (0..h.len()).rev() {
            if above + h[b] >= k_rem {
                chosen = b;
                break;
            }
            above += h[b];
        }
        greater += above;
        k_rem -= above;
        ties = h[chosen];
        prefix |= (chosen as u32) << shift;
        mask |= ((1u32 << bits) - 1) << shift;
    }
    (prefix, greater, ties)
}

fn add_hists(mut a: Vec<u64>, b: Vec<u64>) -> Vec<u64> {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    a
}

/// Row keys (and row lengths) of every score tensor, for `TopkScope::RowMean`.
fn row_keys(
    op: &str,
    scores: &[&[f32]],
    tensors: &[&Tensor],
    abs: bool,
) -> Result<Vec<(u32, u32)>> {
    let mut keys = Vec::new();
    for (t, s) in tensors.iter().zip(scores) {
        let (_, cols) = t.rows_cols();
        if cols == 0 || s.is_empty() {
            continue;
        }
        if cols > u32::MAX as usize {
            return Err(Error::shape(
                op,
                format!("rows of {cols} entries are too long"),
            ));
        }
        let part: Vec<(u32, u32)> = s
            .par_chunks(cols)
            .map(|row| (topk_key(topk_row_mean(row, abs), abs), cols as u32))
            .collect();
        keys.extend(part);
    }
    Ok(keys)
}

/// Writes one chunk of a mask (and applies it) given each element's keep flag.
#[inline]
fn write_mask(keep: impl Fn(usize) -> bool, m: &mut [u8], a: Option<&mut [f32]>) -> usize {
    let mut kept = 0usize;
    match a {
        Some(a) => {
            // Branch-free: keep decisions are unpredictable.
            for (i, (mi, ai)) in m.iter_mut().zip(a.iter_mut()).enumerate() {
                let k = keep(i);
                *mi = k as u8;
                *ai = if k { *ai } else { 0.0 };
                kept += k as usize;
            }
        }
        None => {
            for (i, mi) in m.iter_mut().enumerate() {
                let k = keep(i);
                *mi = k as u8;
                kept += k as usize;
            }
        }
    }
    kept
}
