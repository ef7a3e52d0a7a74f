//! CPU references of the compression kernels (docs/algorithms.md §6): score
//! accumulation, exact top-k, soft-movement masks and the fused low-rank +
//! sparse layer. The weighted SVD is in `svd.rs`.
//!
//! Elementwise formulas are written once per element (`*_element`) in the
//! exact f32 operation order the CUDA kernels use (no fused multiply-add on
//! either side), so GPU results match these bit for bit.

use rayon::prelude::*;

use super::*;

// ---- score accumulation ----------------------------------------------------

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

pub(crate) fn movement_grads(
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

/// The scalars of one importance update, computed once in f32.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ImportanceParams {
    pub count: f32,
    pub count_m1: f32,
    pub first: bool,
    pub close: bool,
    pub beta1: f32,
    pub one_m_beta1: f32,
    pub beta2: f32,
    pub one_m_beta2: f32,
}

impl ImportanceParams {
    pub(crate) fn new(op: &str, step: &ImportanceStep) -> Result<ImportanceParams> {
        if step.count == 0 {
            return Err(Error::shape(op, "ImportanceStep::count is 1-based; got 0"));
        }
        Ok(ImportanceParams {
            count: step.count as f32,
            count_m1: (step.count - 1) as f32,
            first: step.count == 1,
            close: step.close,
            beta1: step.beta1,
            one_m_beta1: 1.0 - step.beta1,
            beta2: step.beta2,
            one_m_beta2: 1.0 - step.beta2,
        })
    }
}

/// One element of the LoSparse importance update (see [`ImportanceStep`]).
#[inline]
pub(crate) fn importance_element(
    s: f32,
    g: f32,
    ipt: &mut f32,
    ibar: &mut f32,
    ubar: Option<&mut f32>,
    p: &ImportanceParams,
) {
    let imp = (s * g).abs();
    *ipt = if p.first {
        imp
    } else {
        (p.count_m1 * *ipt + imp) / p.count
    };
    if p.close {
        *ibar = p.beta1 * *ibar + p.one_m_beta1 * *ipt;
        if let Some(u) = ubar {
            *u = p.beta2 * *u + p.one_m_beta2 * (*ipt - *ibar).abs();
        }
    }
}

pub(crate) fn losparse_importance(
    s: &Tensor,
    grad_s: &Tensor,
    ipt: &mut Tensor,
    ibar: &mut Tensor,
    ubar: Option<&mut Tensor>,
    step: &ImportanceStep,
) -> Result<()> {
    let op = "losparse_importance";
    let p = ImportanceParams::new(op, step)?;
    same_numel(
        op,
        &[
            ("s", s),
            ("grad_s", grad_s),
            ("ipt", &*ipt),
            ("ibar", &*ibar),
        ],
    )?;
    let n = s.numel();
    let ss = f32s(op, "s", s)?;
    let gs = f32s(op, "grad_s", grad_s)?;
    let up = match ubar {
        Some(u) => {
            let us = f32s_mut(op, "ubar", u)?;
            check_len(op, "ubar", us.len(), n)?;
            Some(SendPtr(us.as_mut_ptr()))
        }
        None => None,
    };
    let bp = SendPtr(f32s_mut(op, "ibar", ibar)?.as_mut_ptr());
    let ip = f32s_mut(op, "ipt", ipt)?;
    par_chunks(ip, |start, ip| {
        let (bp, up) = (bp, up);
        for (i, ipt) in ip.iter_mut().enumerate() {
            let j = start + i;
            // SAFETY: j < n; chunks are disjoint, one writer per element.
            let ib = unsafe { &mut *bp.get().add(j) };
            let ub = up.map(|u| unsafe { &mut *u.get().add(j) });
            importance_element(ss[j], gs[j], ipt, ib, ub, &p);
        }
    });
    Ok(())
}

// ---- exact top-k ------------------------------------------------------------

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

pub(crate) fn topk_threshold(
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

pub(crate) fn topk_apply(
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

pub(crate) fn sigmoid_mask(
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
