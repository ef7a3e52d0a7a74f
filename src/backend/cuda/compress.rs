//! CUDA implementations of the four compression kernels
//! (docs/algorithms.md §6); the device code is in
//! `kernels/{score_accum,topk,weighted_svd}.cu`.
//!
//! - Score accumulation: one memory-bound pass each; AdamW and the LoSparse
//!   importance share one pass (`adamw_importance`). Bit-identical to the CPU.
//! - Top-k: radix select in two reads of the scores (12 + 20 key bits, integer
//!   histograms), one host read-back of 32 bytes; the apply pass writes the
//!   U8 masks and zeroes `apply` in the same pass, ranking ties by a per-tile
//!   count + scan only when some ties are dropped. `RowMean` computes row
//!   keys on the device (same f64 summation order as the CPU) and selects
//!   over them on the host (one value per row).
//! - Weighted SVD: problems grouped by (out, in, rank, ω) into strided
//!   batches; cuBLAS strided-batched f32 GEMMs; `orth` by CholeskyQR2 (first
//!   pass shifted) with the r×r Cholesky + triangular inverse in one kernel
//!   per batch (shared memory, r ≤ 110; larger r on the host in f64); the EM
//!   blend fused with the objective (fixed-order f64 reduction); the final
//!   r×r SVD on the host with faer (`R` of the last CholeskyQR2 of `Bᵀ`).
//! - Fused U·V + S: elementwise kernels around cuBLAS (see the trait docs).

use cudarc::driver::LaunchConfig;

use super::*;
use crate::backend::cpu::svd::thin_svd_seq;

const TPB: u32 = 256;
/// Elements per top-k tile (`TILE` in topk.cu).
const TILE: usize = 8192;
/// Largest rank whose r×r Cholesky runs in one block's 48 KB of shared memory.
const CHOL_MAX_RANK: usize = 110;

// ---- small helpers -----------------------------------------------------------------

/// Grid for a grid-stride elementwise kernel over `n` elements, 4 per thread.
fn elem_cfg(be: &CudaBackend, n: usize) -> LaunchConfig {
    let vecs = n.div_ceil(4).max(1);
    let blocks = vecs
        .div_ceil(TPB as usize)
        .min(be.sm_count as usize * 16)
        .max(1);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (TPB, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn cfg(grid: (u32, u32, u32), block: u32, smem: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (block, 1, 1),
        shared_mem_bytes: smem,
    }
}

/// An uninitialised device tensor.
fn empty(be: &CudaBackend, shape: &[usize], dtype: DType) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    Tensor::from_storage(shape, Storage::Cuda(be.alloc_storage(n, dtype)?))
}

/// Makes the backend's context current on this thread (the raw driver calls
/// below need it; cudarc's safe calls do this themselves).
fn bind(be: &CudaBackend) -> Result<()> {
    be.ctx
        .bind_to_thread()
        .map_err(|e| Error::cuda("cuCtxSetCurrent", e))
}

fn dtod(be: &CudaBackend, dst: u64, src: u64, bytes: usize) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    bind(be)?;
    // SAFETY: callers pass ranges inside live buffers.
    unsafe { cudarc::driver::result::memcpy_dtod_async(dst, src, bytes, be.stream.cu_stream()) }
        .map_err(|e| Error::cuda("cuMemcpyDtoDAsync", e))
}

/// Reads `n` u64 values at a device address (waits for the stream).
fn read_u64s(be: &CudaBackend, src: u64, n: usize) -> Result<Vec<u64>> {
    let mut out = vec![0u64; n];
    bind(be)?;
    // SAFETY: `src` holds n u64 values; the stream is synchronised before use.
    unsafe { cudarc::driver::result::memcpy_dtoh_async(&mut out[..], src, be.stream.cu_stream()) }
        .map_err(|e| Error::cuda("cuMemcpyDtoHAsync", e))?;
    be.synchronize()?;
    Ok(out)
}

/// Device u64 values (stored in an I32 tensor of twice the length).
fn upload_u64(be: &CudaBackend, data: &[u64]) -> Result<Tensor> {
    let words: &[i32] = bytemuck::cast_slice(data);
    be.from_i32(words, &[words.len()])
}

/// Overwrites the first `data.len()` elements of an F32 device tensor.
fn write_f32(be: &CudaBackend, t: &mut Tensor, data: &[f32]) -> Result<()> {
    if data.len() > t.numel() {
        return Err(Error::shape(
            "write_f32",
            format!("{} values for {} elements", data.len(), t.numel()),
        ));
    }
    if data.is_empty() {
        return Ok(());
    }
    let stream = be.stream.clone();
    match t.storage_mut() {
        Storage::Cuda(CudaStorage {
            data: CudaData::F32(x),
            ..
        }) => stream
            .memcpy_htod(data, &mut x.slice_mut(0..data.len()))
            .map_err(|e| Error::cuda("cuMemcpyHtoD", e)),
        _ => Err(Error::shape("write_f32", "not an F32 device tensor")),
    }
}

fn opt_ptr_mut(
    be: &CudaBackend,
    op: &str,
    name: &str,
    t: Option<&mut Tensor>,
    n: usize,
) -> Result<u64> {
    match t {
        Some(t) => {
            check_n(op, name, t, n)?;
            be.ptr_mut(op, name, t, DType::F32)
        }
        None => Ok(0),
    }
}

fn check_n(op: &str, name: &str, t: &Tensor, n: usize) -> Result<()> {
    if t.numel() != n {
        return Err(Error::shape(
            op,
            format!("{name} has {} elements, expected {n}", t.numel()),
        ));
    }
    Ok(())
}

// ---- score accumulation -----------------------------------------------------------

/// The scalars of an importance step, computed exactly as the CPU reference does.
fn importance_args(op: &str, step: &ImportanceStep) -> Result<[KArg; 8]> {
    if step.count == 0 {
        return Err(Error::shape(op, "ImportanceStep::count is 1-based; got 0"));
    }
    Ok([
        KArg::F32(step.count as f32),
        KArg::F32((step.count - 1) as f32),
        KArg::I32((step.count == 1) as i32),
        KArg::I32(step.close as i32),
        KArg::F32(step.beta1),
        KArg::F32(1.0 - step.beta1),
        KArg::F32(step.beta2),
        KArg::F32(1.0 - step.beta2),
    ])
}

pub(crate) fn movement_grads(
    be: &CudaBackend,
    w: &Tensor,
    g: &Tensor,
    mask: &Tensor,
    grad_w: &mut Tensor,
    scores: &mut Tensor,
    rule: ScoreRule,
) -> Result<()> {
    let op = "movement_grads";
    let n = same_numel(
        op,
        &[
            ("w", w),
            ("grad_wprime", g),
            ("mask", mask),
            ("grad_w", &*grad_w),
            ("scores", &*scores),
        ],
    )?;
    let args = [
        KArg::Ptr(be.ptr(op, "w", w, DType::F32)?),
        KArg::Ptr(be.ptr(op, "grad_wprime", g, DType::F32)?),
        KArg::Ptr(be.ptr(op, "mask", mask, DType::U8)?),
        KArg::Ptr(be.ptr_mut(op, "grad_w", grad_w, DType::F32)?),
        KArg::Ptr(be.ptr_mut(op, "scores", scores, DType::F32)?),
        KArg::U64(n as u64),
        KArg::I32((rule == ScoreRule::Accumulate) as i32),
    ];
    be.launch("score_accum", "movement_grads", elem_cfg(be, n), &args)
}

pub(crate) fn losparse_importance(
    be: &CudaBackend,
    s: &Tensor,
    grad_s: &Tensor,
    ipt: &mut Tensor,
    ibar: &mut Tensor,
    ubar: Option<&mut Tensor>,
    step: &ImportanceStep,
) -> Result<()> {
    let op = "losparse_importance";
    let imp = importance_args(op, step)?;
    let n = same_numel(
        op,
        &[
            ("s", s),
            ("grad_s", grad_s),
            ("ipt", &*ipt),
            ("ibar", &*ibar),
        ],
    )?;
    let mut args = vec![
        KArg::Ptr(be.ptr(op, "s", s, DType::F32)?),
        KArg::Ptr(be.ptr(op, "grad_s", grad_s, DType::F32)?),
        KArg::Ptr(be.ptr_mut(op, "ipt", ipt, DType::F32)?),
        KArg::Ptr(be.ptr_mut(op, "ibar", ibar, DType::F32)?),
        KArg::Ptr(opt_ptr_mut(be, op, "ubar", ubar, n)?),
        KArg::U64(n as u64),
    ];
    args.extend_from_slice(&imp);
    be.launch("score_accum", "losparse_importance", elem_cfg(be, n), &args)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn adamw_with_importance(
    be: &CudaBackend,
    s: &mut Tensor,
    grad_s: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    hp: &AdamWStep,
    ipt: &mut Tensor,
    ibar: &mut Tensor,
    ubar: Option<&mut Tensor>,
    step: &ImportanceStep,
) -> Result<()> {
    let op = "adamw_with_importance";
    let imp = importance_args(op, step)?;
    let n = same_numel(
        op,
        &[
            ("s", &*s),
            ("grad_s", grad_s),
            ("m", &*m),
            ("v", &*v),
            ("ipt", &*ipt),
            ("ibar", &*ibar),
        ],
    )?;
    // The same f32 scalars as CpuBackend::adamw.
    let (bc1, bc2) = hp.bias_corrections();
    let step_size = hp.lr / bc1;
    let bc2_sqrt = bc2.sqrt();
    let decay = 1.0 - hp.lr * hp.weight_decay;
    let mut args = vec![
        KArg::Ptr(be.ptr_mut(op, "s", s, DType::F32)?),
        KArg::Ptr(be.ptr(op, "grad_s", grad_s, DType::F32)?),
        KArg::Ptr(be.ptr_mut(op, "m", m, DType::F32)?),
        KArg::Ptr(be.ptr_mut(op, "v", v, DType::F32)?),
        KArg::Ptr(be.ptr_mut(op, "ipt", ipt, DType::F32)?),
        KArg::Ptr(be.ptr_mut(op, "ibar", ibar, DType::F32)?),
        KArg::Ptr(opt_ptr_mut(be, op, "ubar", ubar, n)?),
        KArg::U64(n as u64),
        KArg::F32(hp.grad_scale),
        KArg::F32(decay),
        KArg::F32(1.0 - hp.beta1),
        KArg::F32(hp.beta2),
        KArg::F32(1.0 - hp.beta2),
        KArg::F32(step_size),
        KArg::F32(bc2_sqrt),
        KArg::F32(hp.eps),
    ];
    args.extend_from_slice(&imp);
    be.launch("score_accum", "adamw_importance", elem_cfg(be, n), &args)
}

pub(crate) fn sigmoid_mask(
    be: &CudaBackend,
    scores: &Tensor,
    tau: f32,
    mask: &mut Tensor,
    dscores: Option<&mut Tensor>,
    coef: f32,
) -> Result<usize> {
    let op = "sigmoid_mask";
    if !(tau > 0.0 && tau < 1.0) {
        return Err(Error::shape(
            op,
            format!("tau = {tau} must lie strictly between 0 and 1"),
        ));
    }
    let t = tau as f64;
    let logit = (t / (1.0 - t)).ln();
    let n = scores.numel();
    check_n(op, "mask", mask, n)?;
    let pd = match dscores {
        Some(d) if coef != 0.0 => opt_ptr_mut(be, op, "dscores", Some(d), n)?,
        Some(d) => {
            check_n(op, "dscores", d, n)?;
            0
        }
        None => 0,
    };
    let mut count = be.zeros(&[2], DType::I32)?;
    let pc = be.ptr_mut(op, "count", &mut count, DType::I32)?;
    let args = [
        KArg::Ptr(be.ptr(op, "scores", scores, DType::F32)?),
        KArg::Ptr(be.ptr_mut(op, "mask", mask, DType::U8)?),
        KArg::Ptr(pd),
        KArg::U64(n as u64),
        KArg::U64(logit.to_bits()),
        KArg::F32(coef),
        KArg::Ptr(pc),
    ];
    let blocks = n.div_ceil(TPB as usize).clamp(1, be.sm_count as usize * 16);
    be.launch(
        "score_accum",
        "sigmoid_mask",
        cfg((blocks as u32, 1, 1), TPB, 0),
        &args,
    )?;
    Ok(read_u64s(be, pc, 1)?[0] as usize)
}

// ---- top-k ----------------------------------------------------------------------------

/// The segment table of topk.cu (8 u64 per non-empty tensor).
struct Segments {
    table: Tensor,
    nseg: usize,
    tiles: usize,
    rows: usize,
    /// Per segment: (row count, row length).
    shapes: Vec<(usize, usize)>,
}

fn segments(
    be: &CudaBackend,
    op: &str,
    scores: &[&Tensor],
    masks: &[u64],
    apply: &[u64],
) -> Result<Segments> {
    let mut words = Vec::new();
    let (mut tiles, mut rows, mut total) = (0usize, 0usize, 0usize);
    let mut shapes = Vec::new();
    for (i, s) in scores.iter().enumerate() {
        let n = s.numel();
        if n == 0 {
            continue;
        }
        let (r, c) = s.rows_cols();
        if n > u32::MAX as usize {
            return Err(Error::shape(
                op,
                format!("scores[{i}] has {n} entries; at most 2^32 − 1 per tensor on CUDA"),
            ));
        }
        words.extend_from_slice(&[
            be.ptr(op, &format!("scores[{i}]"), s, DType::F32)?,
            masks.get(i).copied().unwrap_or(0),
            apply.get(i).copied().unwrap_or(0),
            n as u64,
            tiles as u64,
            rows as u64,
            c as u64,
            0,
        ]);
        shapes.push((r, c));
        tiles += n.div_ceil(TILE);
        rows += r;
        total += n;
    }
    if total > u32::MAX as usize {
        return Err(Error::shape(
            op,
            format!("{total} entries; at most 2^32 − 1 in one selection on CUDA"),
        ));
    }
    if tiles > i32::MAX as usize {
        return Err(Error::shape(op, "too many tiles"));
    }
    let nseg = shapes.len();
    let table = upload_u64(be, if words.is_empty() { &[0u64; 8] } else { &words })?;
    Ok(Segments {
        table,
        nseg,
        tiles,
        rows,
        shapes,
    })
}

/// Row keys (`topk_row_keys`) and row lengths, one per row of all segments.
fn row_keys(be: &CudaBackend, op: &str, seg: &Segments, abs: bool) -> Result<(Tensor, Tensor)> {
    let mut keys = empty(be, &[seg.rows.max(1)], DType::I32)?;
    let mut cols = empty(be, &[seg.rows.max(1)], DType::I32)?;
    let warps_per_block = (TPB / 32) as usize;
    let blocks = seg.rows.div_ceil(warps_per_block);
    if blocks > i32::MAX as usize {
        return Err(Error::shape(op, "too many rows"));
    }
    let args = [
        KArg::Ptr(be.ptr(op, "segments", &seg.table, DType::I32)?),
        KArg::I32(seg.nseg as i32),
        KArg::I32(abs as i32),
        KArg::U64(seg.rows as u64),
        KArg::Ptr(be.ptr_mut(op, "keys", &mut keys, DType::I32)?),
        KArg::Ptr(be.ptr_mut(op, "cols", &mut cols, DType::I32)?),
    ];
    be.launch(
        "topk",
        "topk_row_keys",
        cfg((blocks as u32, 1, 1), TPB, 0),
        &args,
    )?;
    Ok((keys, cols))
}

pub(crate) fn topk_threshold(
    be: &CudaBackend,
    scores: &[&Tensor],
    k: usize,
    rule: TopkRule,
    scope: TopkScope,
    abs: bool,
) -> Result<TopkThreshold> {
    let op = "topk_threshold";
    check_topk_scores(op, scores, k)?;
    if k == 0 {
        return Ok(TopkThreshold::none(rule, scope, abs));
    }
    let seg = segments(be, op, scores, &[], &[])?;
    let (key, greater, ties) = match scope {
        TopkScope::Entries => {
            // Scratch (I32 words): state 8×u64 | hist1 4096×u64 | coarse 256×u32 | fine 2^20×u32.
            const STATE: usize = 0;
            const HIST1: usize = 16;
            const COARSE: usize = HIST1 + 8192;
            const FINE: usize = COARSE + 256;
            let mut scratch = be.zeros(&[FINE + (1 << 20)], DType::I32)?;
            let base = be.ptr_mut(op, "scratch", &mut scratch, DType::I32)?;
            let at = |w: usize| base + 4 * w as u64;
            let table = be.ptr(op, "segments", &seg.table, DType::I32)?;
            let grid = cfg((seg.tiles as u32, 1, 1), TPB, 0);
            let one = cfg((1, 1, 1), TPB, 0);
            let nseg = KArg::I32(seg.nseg as i32);
            let absa = KArg::I32(abs as i32);
            be.launch(
                "topk",
                "topk_hist1",
                grid,
                &[KArg::Ptr(table), nseg, absa, KArg::Ptr(at(HIST1))],
            )?;
            be.launch(
                "topk",
                "topk_select1",
                one,
                &[
                    KArg::Ptr(at(HIST1)),
                    KArg::Ptr(at(STATE)),
                    KArg::U64(k as u64),
                ],
            )?;
            be.launch(
                "topk",
                "topk_hist2",
                grid,
                &[
                    KArg::Ptr(table),
                    nseg,
                    absa,
                    KArg::Ptr(at(STATE)),
                    KArg::Ptr(at(FINE)),
                    KArg::Ptr(at(COARSE)),
                ],
            )?;
            be.launch(
                "topk",
                "topk_select2",
                one,
                &[
                    KArg::Ptr(at(COARSE)),
                    KArg::Ptr(at(FINE)),
                    KArg::Ptr(at(STATE)),
                ],
            )?;
            let st = read_u64s(be, at(STATE), 4)?;
            (st[2] as u32, st[1], st[3])
        }
        TopkScope::RowMean => {
            let (keys, _cols) = row_keys(be, op, &seg, abs)?;
            let keys: Vec<u32> = be
                .to_i32(&keys)?
                .into_iter()
                .take(seg.rows)
                .map(|k| k as u32)
                .collect();
            let weights: Vec<u64> = seg
                .shapes
                .iter()
                .flat_map(|&(r, c)| std::iter::repeat_n(c as u64, r))
                .collect();
            select_weighted(&keys, &weights, k as u64)
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

/// The k-th largest key when key `i` counts `weights[i]` times: `(key, greater, ties)`.
fn select_weighted(keys: &[u32], weights: &[u64], k: u64) -> (u32, u64, u64) {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_unstable_by(|&a, &b| keys[b].cmp(&keys[a]));
    let mut acc = 0u64;
    let mut kth = keys.get(order[0]).copied().unwrap_or(0);
    for &i in &order {
        if acc + weights[i] >= k {
            kth = keys[i];
            break;
        }
        acc += weights[i];
    }
    let (mut greater, mut ties) = (0u64, 0u64);
    for (key, w) in keys.iter().zip(weights) {
        if *key > kth {
            greater += w;
        } else if *key == kth {
            ties += w;
        }
    }
    (kth, greater, ties)
}

pub(crate) fn topk_apply(
    be: &CudaBackend,
    scores: &[&Tensor],
    th: &TopkThreshold,
    masks: &mut [&mut Tensor],
    apply: &mut [&mut Tensor],
) -> Result<usize> {
    let op = "topk_apply";
    check_topk_apply(op, scores, masks, apply)?;
    let mut mp = Vec::with_capacity(masks.len());
    for (i, m) in masks.iter_mut().enumerate() {
        mp.push(be.ptr_mut(op, &format!("masks[{i}]"), m, DType::U8)?);
    }
    let mut ap = Vec::with_capacity(apply.len());
    for (i, a) in apply.iter_mut().enumerate() {
        ap.push(be.ptr_mut(op, &format!("apply[{i}]"), a, DType::F32)?);
    }
    let seg = segments(be, op, scores, &mp, &ap)?;
    if seg.nseg == 0 {
        return Ok(0);
    }
    let table = KArg::Ptr(be.ptr(op, "segments", &seg.table, DType::I32)?);
    let nseg = KArg::I32(seg.nseg as i32);
    let absa = KArg::I32(th.abs as i32);
    let kth = th.key();
    let grid = cfg((seg.tiles as u32, 1, 1), TPB, 0);
    let entries = |mode: i32, base: u64| {
        let args = [
            table,
            nseg,
            absa,
            KArg::U32(kth),
            KArg::I32(mode),
            KArg::U64(th.tie_quota as u64),
            KArg::Ptr(base),
        ];
        be.launch("topk", "topk_apply_entries", grid, &args)
    };
    if th.keep_none {
        entries(0, 0)?;
        return Ok(0);
    }
    match th.scope {
        TopkScope::Entries if th.partial_ties() => {
            let mut counts = empty(be, &[seg.tiles], DType::I32)?;
            let mut base = empty(be, &[2 * seg.tiles], DType::I32)?;
            let pc = be.ptr_mut(op, "tile counts", &mut counts, DType::I32)?;
            let pb = be.ptr_mut(op, "tile base", &mut base, DType::I32)?;
            be.launch(
                "topk",
                "topk_tie_count",
                grid,
                &[table, nseg, absa, KArg::U32(kth), KArg::Ptr(pc)],
            )?;
            be.launch(
                "topk",
                "topk_scan_tiles",
                cfg((1, 1, 1), 1024, 0),
                &[KArg::Ptr(pc), KArg::U64(seg.tiles as u64), KArg::Ptr(pb)],
            )?;
            entries(2, pb)?;
        }
        TopkScope::Entries => entries(1, 0)?,
        TopkScope::RowMean => {
            let (keys, mut keep) = row_keys(be, op, &seg, th.abs)?;
            let pk = be.ptr(op, "row keys", &keys, DType::I32)?;
            let pkeep = be.ptr_mut(op, "row keep", &mut keep, DType::I32)?;
            be.launch(
                "topk",
                "topk_row_keep",
                cfg((1, 1, 1), 1024, 0),
                &[
                    KArg::Ptr(pk),
                    KArg::Ptr(pkeep),
                    KArg::U64(seg.rows as u64),
                    KArg::U32(kth),
                    KArg::I32(th.partial_ties() as i32),
                    KArg::U64(th.tie_quota as u64),
                ],
            )?;
            be.launch(
                "topk",
                "topk_apply_rows",
                grid,
                &[table, nseg, KArg::Ptr(pkeep)],
            )?;
        }
    }
    Ok(th.kept)
}

// ---- weighted SVD ---------------------------------------------------------------------

/// What the EM driver needs besides the backend's GEMMs. The CUDA backend
/// implements it with the kernels of weighted_svd.cu; the unit tests below
/// implement it on the CPU (same f32 algorithm, host Cholesky) so that the
/// driver — buffer shapes, transposes, the factor split — runs without a GPU.
pub(crate) trait SvdDevice {
    fn be(&self) -> &dyn Backend;
    /// An uninitialised tensor.
    fn alloc(&self, shape: &[usize], dtype: DType) -> Result<Tensor>;
    /// `dst[dst_off..][..n] = src[src_off..][..n]` (elements; F32 or U8, same dtype).
    fn copy_part(
        &self,
        src: &Tensor,
        src_off: usize,
        dst: &mut Tensor,
        dst_off: usize,
        n: usize,
    ) -> Result<()>;
    /// Overwrites the first `data.len()` elements of an F32 tensor.
    fn write(&self, t: &mut Tensor, data: &[f32]) -> Result<()>;
    /// CholeskyQR's r×r step for a batch of `nb` Gram matrices: `rinv = R⁻¹`
    /// (and `rr = R`) with `G (+ shift) = RᵀR`; see `svd_chol_inv`.
    fn chol(
        &self,
        gram: &Tensor,
        r: usize,
        nb: usize,
        shift: bool,
        rinv: &mut Tensor,
        rr: Option<&mut Tensor>,
    ) -> Result<()>;
    /// `X = Ω⊙W + (1−Ω)⊙A` in place of `A` in `g.xa` (when `write_x`), and the
    /// objective `Σ Ω (W − A)²` of every matrix, as f64 bits in `g.obj`.
    fn blend(&self, g: &mut Group, write_x: bool) -> Result<()>;
}

impl SvdDevice for CudaBackend {
    fn be(&self) -> &dyn Backend {
        self
    }

    fn alloc(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        empty(self, shape, dtype)
    }

    fn copy_part(
        &self,
        src: &Tensor,
        src_off: usize,
        dst: &mut Tensor,
        dst_off: usize,
        n: usize,
    ) -> Result<()> {
        let op = "weighted_svd";
        let dt = src.dtype();
        if dst.dtype() != dt || src_off + n > src.numel() || dst_off + n > dst.numel() {
            return Err(Error::shape(op, "copy_part out of bounds"));
        }
        let es = dt.size_bytes();
        let ps = self.ptr(op, "src", src, dt)?;
        let pd = self.ptr_mut(op, "dst", dst, dt)?;
        dtod(
            self,
            pd + (dst_off * es) as u64,
            ps + (src_off * es) as u64,
            n * es,
        )
    }

    fn write(&self, t: &mut Tensor, data: &[f32]) -> Result<()> {
        write_f32(self, t, data)
    }

    fn chol(
        &self,
        gram: &Tensor,
        r: usize,
        nb: usize,
        shift: bool,
        rinv: &mut Tensor,
        rr: Option<&mut Tensor>,
    ) -> Result<()> {
        let op = "weighted_svd";
        if r <= CHOL_MAX_RANK {
            let pg = self.ptr(op, "gram", gram, DType::F32)?;
            let pri = self.ptr_mut(op, "rinv", rinv, DType::F32)?;
            let prr = match rr {
                Some(t) => self.ptr_mut(op, "r", t, DType::F32)?,
                None => 0,
            };
            let threads = if r <= 64 { 64 } else { 128 };
            self.launch(
                "weighted_svd",
                "svd_chol_inv",
                cfg((nb as u32, 1, 1), threads, (r * r * 4) as u32),
                &[
                    KArg::Ptr(pg),
                    KArg::Ptr(pri),
                    KArg::Ptr(prr),
                    KArg::I32(r as i32),
                    KArg::I32(shift as i32),
                ],
            )
        } else {
            chol_on_host(self, gram, r, shift, rinv, rr)
        }
    }

    fn blend(&self, g: &mut Group, write_x: bool) -> Result<()> {
        let op = "weighted_svd";
        let (nb, numel) = (g.nb(), g.o * g.n);
        let nblk = (if numel % 4 == 0 { numel / 4 } else { numel })
            .div_ceil(TPB as usize * 4)
            .clamp(1, 256);
        let mut partial = empty(self, &[2 * nb * nblk], DType::I32)?;
        let pp = self.ptr_mut(op, "partial", &mut partial, DType::I32)?;
        let kernel = if numel % 4 == 0 {
            "svd_blend4"
        } else {
            "svd_blend1"
        };
        let args = [
            KArg::Ptr(self.ptr(op, "w", &g.w, DType::F32)?),
            KArg::Ptr(self.ptr(op, "mask", &g.m, DType::U8)?),
            KArg::Ptr(self.ptr_mut(op, "x", &mut g.xa, DType::F32)?),
            KArg::U64(numel as u64),
            KArg::F32(g.omega),
            KArg::I32(write_x as i32),
            KArg::Ptr(pp),
        ];
        self.launch(
            "weighted_svd",
            kernel,
            cfg((nblk as u32, nb as u32, 1), TPB, 0),
            &args,
        )?;
        let po = self.ptr_mut(op, "objective", &mut g.obj, DType::I32)?;
        self.launch(
            "weighted_svd",
            "svd_sum_partials",
            cfg((nb as u32, 1, 1), TPB, 0),
            &[KArg::Ptr(pp), KArg::I32(nblk as i32), KArg::Ptr(po)],
        )
    }
}

/// `svd_chol_inv` on the host (f64) for every matrix of the batch.
fn chol_on_host(
    dev: &dyn SvdDevice,
    gram: &Tensor,
    r: usize,
    shift: bool,
    rinv: &mut Tensor,
    rr: Option<&mut Tensor>,
) -> Result<()> {
    let g = dev.be().to_f32(gram)?;
    let mut ri = Vec::with_capacity(g.len());
    let mut rf = Vec::with_capacity(g.len());
    for gm in g.chunks_exact(r * r) {
        let (a, b) = chol_inv_host(gm, r, shift);
        ri.extend(a);
        rf.extend(b);
    }
    dev.write(rinv, &ri)?;
    if let Some(t) = rr {
        dev.write(t, &rf)?;
    }
    Ok(())
}

/// One batch of problems of equal (out, in, rank, ω), in strided buffers.
pub(crate) struct Group {
    o: usize,
    n: usize,
    r: usize,
    omega: f32,
    /// Indices of the problems, in call order.
    members: Vec<usize>,
    w: Tensor,
    m: Tensor,
    /// The current approximation `A = Q·B`, overwritten by the blend with `X`.
    xa: Tensor,
    /// `Y`, then `Q` (`o × r` each).
    y1: Tensor,
    y2: Tensor,
    /// `B = Qᵀ·X` (`r × n`).
    b: Tensor,
    /// `P = orth(Bᵀ)` in p2 (`n × r`), p1 scratch.
    p1: Tensor,
    p2: Tensor,
    gram: Tensor,
    ri1: Tensor,
    ri2: Tensor,
    rr1: Tensor,
    rr2: Tensor,
    qfin: Tensor,
    bfin: Tensor,
    /// The objective of each matrix, f64 bits in I32 storage (`2·nb` words).
    obj: Tensor,
}

impl Group {
    fn nb(&self) -> usize {
        self.members.len()
    }
}

fn new_group(
    dev: &dyn SvdDevice,
    problems: &[WeightedSvdProblem<'_>],
    (o, n, r): (usize, usize, usize),
    omega: f32,
    members: Vec<usize>,
) -> Result<Group> {
    let nb = members.len();
    let numel = o * n;
    let f = |shape: &[usize]| dev.alloc(shape, DType::F32);
    let mut g = Group {
        o,
        n,
        r,
        omega,
        w: f(&[nb, o, n])?,
        m: dev.alloc(&[nb, o, n], DType::U8)?,
        xa: f(&[nb, o, n])?,
        y1: f(&[nb, o, r])?,
        y2: f(&[nb, o, r])?,
        b: f(&[nb, r, n])?,
        p1: f(&[nb, n, r])?,
        p2: f(&[nb, n, r])?,
        gram: f(&[nb, r, r])?,
        ri1: f(&[nb, r, r])?,
        ri2: f(&[nb, r, r])?,
        rr1: f(&[nb, r, r])?,
        rr2: f(&[nb, r, r])?,
        qfin: f(&[nb, o, r])?,
        bfin: f(&[nb, r, n])?,
        obj: dev.alloc(&[2 * nb], DType::I32)?,
        members,
    };
    for (slot, &i) in g.members.iter().enumerate() {
        let p = &problems[i];
        dev.copy_part(p.w, 0, &mut g.w, slot * numel, numel)?;
        dev.copy_part(p.mask, 0, &mut g.m, slot * numel, numel)?;
    }
    Ok(g)
}

/// Host version of `svd_chol_inv` (f64) for ranks whose Gram matrix does not fit
/// in shared memory: the same shift, pivot rule and outputs.
fn chol_inv_host(g: &[f32], r: usize, shift: bool) -> (Vec<f32>, Vec<f32>) {
    let mut a: Vec<f64> = (0..r * r)
        .map(|idx| {
            if idx % r <= idx / r {
                g[idx] as f64
            } else {
                0.0
            }
        })
        .collect();
    let maxd = (0..r).map(|i| a[i * r + i]).fold(0.0f64, f64::max);
    if shift {
        let s = r as f64 * 2f64.powi(-20) * maxd;
        (0..r).for_each(|i| a[i * r + i] += s);
    }
    let tol = r as f64 * 2f64.powi(-22) * maxd;
    for j in 0..r {
        let d = a[j * r + j];
        let ok = d > tol;
        let ljj = if ok { d.sqrt() } else { 0.0 };
        let inv = if ok { 1.0 / ljj } else { 0.0 };
        for i in j + 1..r {
            a[i * r + j] *= inv;
        }
        a[j * r + j] = ljj;
        for ii in j + 1..r {
            for kk in j + 1..=ii {
                a[ii * r + kk] -= a[ii * r + j] * a[kk * r + j];
            }
        }
    }
    let mut rr = vec![0.0f32; r * r];
    let mut rinv = vec![0.0f32; r * r];
    for i in 0..r {
        for j in i..r {
            rr[i * r + j] = a[j * r + i] as f32;
        }
    }
    for c in 0..r {
        let mut x = vec![0.0f64; r];
        for i in c..r {
            let mut acc = if i == c { 1.0 } else { 0.0 };
            for k in c..i {
                acc -= a[i * r + k] * x[k];
            }
            let lii = a[i * r + i];
            x[i] = if lii != 0.0 { acc / lii } else { 0.0 };
        }
        for i in c..r {
            rinv[c * r + i] = x[i] as f32;
        }
    }
    (rinv, rr)
}

/// CholeskyQR's r×r step on `gram`: `R⁻¹` into ri1/ri2 (pass 1/2, the first
/// shifted), `R` into rr1/rr2 when `keep_r`.
fn chol(dev: &dyn SvdDevice, g: &mut Group, pass: u8, keep_r: bool) -> Result<()> {
    let (r, nb) = (g.r, g.nb());
    let (ri, rr) = if pass == 1 {
        (&mut g.ri1, &mut g.rr1)
    } else {
        (&mut g.ri2, &mut g.rr2)
    };
    dev.chol(
        &g.gram,
        r,
        nb,
        pass == 1,
        ri,
        if keep_r { Some(rr) } else { None },
    )
}

/// `Q = orth(Y)` by CholeskyQR2, in place in y1 (y2 scratch).
fn orth_y(dev: &dyn SvdDevice, g: &mut Group) -> Result<()> {
    let be = dev.be();
    let (o, r, nb) = (g.o, g.r, g.nb());
    be.gemm(&Gemm::tn(r, r, o).batched(nb), &g.y1, &g.y1, &mut g.gram)?;
    chol(dev, g, 1, false)?;
    be.gemm(&Gemm::nn(o, r, r).batched(nb), &g.y1, &g.ri1, &mut g.y2)?;
    be.gemm(&Gemm::tn(r, r, o).batched(nb), &g.y2, &g.y2, &mut g.gram)?;
    chol(dev, g, 2, false)?;
    be.gemm(&Gemm::nn(o, r, r).batched(nb), &g.y2, &g.ri2, &mut g.y1)
}

/// `P = orth(Bᵀ)` by CholeskyQR2 into p2 (`Bᵀ = P·R`, `R = rr2·rr1` when `keep_r`).
fn orth_bt(dev: &dyn SvdDevice, g: &mut Group, keep_r: bool) -> Result<()> {
    let be = dev.be();
    let (n, r, nb) = (g.n, g.r, g.nb());
    be.gemm(&Gemm::nt(r, r, n).batched(nb), &g.b, &g.b, &mut g.gram)?;
    chol(dev, g, 1, keep_r)?;
    be.gemm(&Gemm::tn(n, r, r).batched(nb), &g.b, &g.ri1, &mut g.p1)?;
    be.gemm(&Gemm::tn(r, r, n).batched(nb), &g.p1, &g.p1, &mut g.gram)?;
    chol(dev, g, 2, keep_r)?;
    be.gemm(&Gemm::nn(n, r, r).batched(nb), &g.p1, &g.ri2, &mut g.p2)
}

/// One sweep of subspace iteration from p2 on `X` (W or the blended X).
fn sweep(dev: &dyn SvdDevice, g: &mut Group, on_w: bool) -> Result<()> {
    let be = dev.be();
    let (o, n, r, nb) = (g.o, g.n, g.r, g.nb());
    let gy = Gemm::nn(o, r, n).batched(nb);
    if on_w {
        be.gemm(&gy, &g.w, &g.p2, &mut g.y1)?;
    } else {
        be.gemm(&gy, &g.xa, &g.p2, &mut g.y1)?;
    }
    orth_y(dev, g)?;
    let gb = Gemm::tn(r, n, o).batched(nb);
    if on_w {
        be.gemm(&gb, &g.y1, &g.w, &mut g.b)
    } else {
        be.gemm(&gb, &g.y1, &g.xa, &mut g.b)
    }
}

/// `A = Q·B` into xa, then the blend (when `write_x`) and the objectives of A.
fn blend(dev: &dyn SvdDevice, g: &mut Group, write_x: bool) -> Result<()> {
    let (o, n, r, nb) = (g.o, g.n, g.r, g.nb());
    dev.be()
        .gemm(&Gemm::nn(o, n, r).batched(nb), &g.y1, &g.b, &mut g.xa)?;
    dev.blend(g, write_x)
}

/// The objectives written by the last [`blend`] (waits for the device).
fn objectives(dev: &dyn SvdDevice, g: &Group) -> Result<Vec<f64>> {
    let w = dev.be().to_i32(&g.obj)?;
    Ok(w.chunks_exact(2)
        .map(|p| f64::from_bits(p[0] as u32 as u64 | ((p[1] as u32 as u64) << 32)))
        .collect())
}

pub(crate) fn weighted_svd(
    be: &CudaBackend,
    problems: &[WeightedSvdProblem<'_>],
    opts: &WeightedSvdOptions,
) -> Result<Vec<WeightedSvdResult>> {
    let op = "weighted_svd";
    for (i, p) in problems.iter().enumerate() {
        be.ptr(op, &format!("problem {i}: w"), p.w, DType::F32)?;
        be.ptr(op, &format!("problem {i}: mask"), p.mask, DType::U8)?;
    }
    let res = svd_driver(be, problems, opts)?;
    be.synchronize()?;
    Ok(res)
}

/// The batched EM driver (see [`WeightedSvdOptions`] for the algorithm).
pub(crate) fn svd_driver(
    dev: &dyn SvdDevice,
    problems: &[WeightedSvdProblem<'_>],
    opts: &WeightedSvdOptions,
) -> Result<Vec<WeightedSvdResult>> {
    let op = "weighted_svd";
    let be = dev.be();
    let mut dims = Vec::with_capacity(problems.len());
    for (i, p) in problems.iter().enumerate() {
        dims.push(check_svd_problem(op, i, p)?);
    }
    let mut results: Vec<Option<WeightedSvdResult>> = (0..problems.len()).map(|_| None).collect();
    // Group by shape, rank and ω, in order of first appearance.
    let mut keys: Vec<(usize, usize, usize, u32)> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (i, p) in problems.iter().enumerate() {
        let (o, n) = dims[i];
        if p.rank == 0 {
            let w = be.to_f32(p.w)?;
            let m = be.to_u8(p.mask)?;
            let om = p.omega as f64;
            let obj: f64 = w
                .iter()
                .zip(&m)
                .map(|(&w, &m)| if m != 0 { 1.0 } else { om } * (w as f64) * (w as f64))
                .sum();
            results[i] = Some(WeightedSvdResult {
                u: dev.alloc(&[o, 0], DType::F32)?,
                v: dev.alloc(&[0, n], DType::F32)?,
                singular_values: Vec::new(),
                objective: vec![obj],
            });
            continue;
        }
        let key = (o, n, p.rank, p.omega.to_bits());
        match keys.iter().position(|k| *k == key) {
            Some(gi) => members[gi].push(i),
            None => {
                keys.push(key);
                members.push(vec![i]);
            }
        }
    }
    let mut groups = Vec::with_capacity(keys.len());
    for (key, mem) in keys.iter().zip(members) {
        groups.push(new_group(
            dev,
            problems,
            (key.0, key.1, key.2),
            f32::from_bits(key.3),
            mem,
        )?);
    }
    // Random starts and the initial sweeps on X₀ = W_s.
    for g in groups.iter_mut() {
        let mut start = Vec::with_capacity(g.nb() * g.n * g.r);
        for &i in &g.members {
            start.extend(svd_random_start(opts.seed, i, g.n * g.r));
        }
        dev.write(&mut g.p2, &start)?;
        sweep(dev, g, true)?;
        for _ in 1..opts.init_power_iters.max(1) {
            orth_bt(dev, g, false)?;
            sweep(dev, g, true)?;
        }
    }
    // EM: objective of A_k and stop test, then blend and warm-started sweeps.
    let mut objective: Vec<Vec<f64>> = vec![Vec::new(); problems.len()];
    let mut active: Vec<Vec<bool>> = groups.iter().map(|g| vec![true; g.nb()]).collect();
    for step in 0..=opts.max_steps {
        let last = step == opts.max_steps;
        // Queue every group's blend, then read the objectives (one wait).
        for (g, act) in groups.iter_mut().zip(&active) {
            if act.iter().any(|&a| a) {
                blend(dev, g, !last)?;
            }
        }
        for (g, act) in groups.iter_mut().zip(active.iter_mut()) {
            if !act.iter().any(|&a| a) {
                continue;
            }
            let obj = objectives(dev, g)?;
            for s in 0..g.nb() {
                if !act[s] {
                    continue;
                }
                let hist = &mut objective[g.members[s]];
                hist.push(obj[s]);
                let k = hist.len();
                if last || (k >= 2 && em_converged(hist[k - 2], hist[k - 1], opts.rel_tol)) {
                    // This problem's result is the current Q, B.
                    dev.copy_part(&g.y1, s * g.o * g.r, &mut g.qfin, s * g.o * g.r, g.o * g.r)?;
                    dev.copy_part(&g.b, s * g.r * g.n, &mut g.bfin, s * g.r * g.n, g.r * g.n)?;
                    act[s] = false;
                }
            }
        }
        if last {
            break;
        }
        for (g, act) in groups.iter_mut().zip(&active) {
            if act.iter().any(|&a| a) {
                for _ in 0..opts.power_iters.max(1) {
                    orth_bt(dev, g, false)?;
                    sweep(dev, g, false)?;
                }
            }
        }
    }
    // Factors: Bᵀ = P·R (CholeskyQR2), R = U_r·Σ·V_rᵀ on the host, so
    // B = V_r·Σ·(P·U_r)ᵀ: U = Q·(V_r·√Σ), V = (√Σ·U_rᵀ)·Pᵀ.
    for g in groups.iter_mut() {
        let (o, n, r, nb) = (g.o, g.n, g.r, g.nb());
        dev.copy_part(&g.bfin, 0, &mut g.b, 0, nb * r * n)?;
        orth_bt(dev, g, true)?;
        let rr1 = be.to_f32(&g.rr1)?;
        let rr2 = be.to_f32(&g.rr2)?;
        let mut mu = vec![0.0f32; nb * r * r];
        let mut mv = vec![0.0f32; nb * r * r];
        let mut sigmas = Vec::with_capacity(nb);
        for s in 0..nb {
            let (a2, a1) = (
                &rr2[s * r * r..(s + 1) * r * r],
                &rr1[s * r * r..(s + 1) * r * r],
            );
            // R = rr2·rr1 (both upper triangular), in f64.
            let mut rm = vec![0.0f64; r * r];
            for i in 0..r {
                for k in i..r {
                    let x = a2[i * r + k] as f64;
                    if x != 0.0 {
                        for j in k..r {
                            rm[i * r + j] += x * a1[k * r + j] as f64;
                        }
                    }
                }
            }
            let i = g.members[s];
            let (ur, sv, vr) = thin_svd_seq(&rm, r, r)
                .map_err(|e| Error::msg(format!("{op}: problem {i}: {e}")))?;
            let root: Vec<f64> = sv.iter().map(|x| x.max(0.0).sqrt()).collect();
            for a in 0..r {
                for b in 0..r {
                    mu[s * r * r + a * r + b] = (vr[a * r + b] * root[b]) as f32;
                    mv[s * r * r + a * r + b] = (root[a] * ur[b * r + a]) as f32;
                }
            }
            sigmas.push(sv.iter().map(|&x| x.max(0.0) as f32).collect::<Vec<_>>());
        }
        dev.write(&mut g.ri1, &mu)?;
        dev.write(&mut g.ri2, &mv)?;
        be.gemm(&Gemm::nn(o, r, r).batched(nb), &g.qfin, &g.ri1, &mut g.y2)?;
        be.gemm(&Gemm::nt(r, n, r).batched(nb), &g.ri2, &g.p2, &mut g.b)?;
        for (s, sv) in sigmas.into_iter().enumerate() {
            let i = g.members[s];
            let mut u = dev.alloc(&[o, r], DType::F32)?;
            let mut v = dev.alloc(&[r, n], DType::F32)?;
            dev.copy_part(&g.y2, s * o * r, &mut u, 0, o * r)?;
            dev.copy_part(&g.b, s * r * n, &mut v, 0, r * n)?;
            results[i] = Some(WeightedSvdResult {
                u,
                v,
                singular_values: sv,
                objective: std::mem::take(&mut objective[i]),
            });
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every problem solved"))
        .collect())
}

#[cfg(test)]
mod tests {
    //! The batched weighted-SVD driver run on the CPU through [`SvdDevice`]
    //! (f32 products, host Cholesky): checks everything but the kernels
    //! themselves against the f64 CPU reference.
    use super::*;
    use crate::backend::cpu::CpuBackend;

    struct CpuDev(CpuBackend);

    impl SvdDevice for CpuDev {
        fn be(&self) -> &dyn Backend {
            &self.0
        }
        fn alloc(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
            // NaN-poisoned, so that a read of an unwritten element shows.
            let mut t = self.0.zeros(shape, dtype)?;
            if dtype == DType::F32 {
                self.0.fill(&mut t, f32::NAN)?;
            }
            Ok(t)
        }
        fn copy_part(
            &self,
            src: &Tensor,
            so: usize,
            dst: &mut Tensor,
            d0: usize,
            n: usize,
        ) -> Result<()> {
            match src.dtype() {
                DType::F32 => {
                    let s = src.host_f32()?[so..so + n].to_vec();
                    dst.host_f32_mut()?[d0..d0 + n].copy_from_slice(&s);
                }
                DType::U8 => {
                    let s = src.host_u8()?[so..so + n].to_vec();
                    dst.host_u8_mut()?[d0..d0 + n].copy_from_slice(&s);
                }
                _ => unreachable!(),
            }
            Ok(())
        }
        fn write(&self, t: &mut Tensor, data: &[f32]) -> Result<()> {
            t.host_f32_mut()?[..data.len()].copy_from_slice(data);
            Ok(())
        }
        fn chol(
            &self,
            gram: &Tensor,
            r: usize,
            _nb: usize,
            shift: bool,
            rinv: &mut Tensor,
            rr: Option<&mut Tensor>,
        ) -> Result<()> {
            chol_on_host(self, gram, r, shift, rinv, rr)
        }
        fn blend(&self, g: &mut Group, write_x: bool) -> Result<()> {
            let numel = g.o * g.n;
            let w = g.w.host_f32()?.to_vec();
            let m = g.m.host_u8()?.to_vec();
            let xa = g.xa.host_f32_mut()?;
            let mut obj = Vec::new();
            for b in 0..g.members.len() {
                let mut acc = 0.0f64;
                for i in b * numel..(b + 1) * numel {
                    let d = w[i] as f64 - xa[i] as f64;
                    acc += if m[i] != 0 {
                        d * d
                    } else {
                        g.omega as f64 * d * d
                    };
                    if write_x && m[i] == 0 {
                        xa[i] = g.omega * w[i] + (1.0 - g.omega) * xa[i];
                    } else if write_x {
                        xa[i] = w[i];
                    }
                }
                obj.push(acc);
            }
            let words: Vec<i32> = bytemuck::cast_slice(&obj).to_vec();
            g.obj.host_i32_mut()?.copy_from_slice(&words);
            Ok(())
        }
    }

    fn rand(seed: u64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| 2.0 * crate::backend::philox::uniform(seed, 1, i as u64) - 1.0)
            .collect()
    }

    fn product(r: &WeightedSvdResult) -> Vec<f64> {
        let (o, k) = (r.u.shape()[0], r.u.shape()[1]);
        let n = r.v.shape()[1];
        let (u, v) = (r.u.host_f32().unwrap(), r.v.host_f32().unwrap());
        let mut p = vec![0.0f64; o * n];
        for i in 0..o {
            for l in 0..k {
                for j in 0..n {
                    p[i * n + j] += u[i * k + l] as f64 * v[l * n + j] as f64;
                }
            }
        }
        p
    }

    fn rel(a: &[f64], b: &[f64]) -> f64 {
        let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
        let den: f64 = b.iter().map(|y| y * y).sum();
        (num / den).sqrt()
    }

    #[test]
    fn batched_driver_matches_cpu_reference() {
        // Mixed shapes, two problems sharing a group, a rank-0 problem, and a
        // spectrum with a gap so that both solvers converge to the same answer.
        let shapes = [
            (40usize, 24usize, 5usize, 0.0f32),
            (24, 40, 4, 0.2),
            (40, 24, 5, 0.0),
            (17, 9, 0, 0.5),
            (30, 30, 30, 0.0),
        ];
        let mut ws = Vec::new();
        let mut ms = Vec::new();
        for (i, &(o, n, _, _)) in shapes.iter().enumerate() {
            let k = o.min(n);
            let a = rand(10 + i as u64, o * k);
            let b = rand(20 + i as u64, k * n);
            let mut w = vec![0.0f32; o * n];
            for l in 0..k {
                let s = 0.7f64.powi(l as i32);
                for x in 0..o {
                    for y in 0..n {
                        w[x * n + y] += (s * a[x * k + l] as f64 * b[l * n + y] as f64) as f32;
                    }
                }
            }
            let m: Vec<u8> = rand(30 + i as u64, o * n)
                .iter()
                .map(|&u| (u > -0.2) as u8)
                .collect();
            for (x, &mm) in w.iter_mut().zip(&m) {
                if mm == 0 {
                    *x = 0.0;
                }
            }
            ws.push(Tensor::cpu_f32(w, &[o, n]).unwrap());
            ms.push(Tensor::cpu_u8(m, &[o, n]).unwrap());
        }
        let problems: Vec<WeightedSvdProblem> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(_, _, r, omega))| WeightedSvdProblem {
                w: &ws[i],
                mask: &ms[i],
                omega,
                rank: r,
            })
            .collect();
        for opts in [
            WeightedSvdOptions {
                max_steps: 8,
                rel_tol: 0.0,
                seed: 3,
                ..Default::default()
            },
            WeightedSvdOptions {
                max_steps: 0,
                seed: 4,
                ..Default::default()
            },
        ] {
            let want = crate::backend::cpu::svd::weighted_svd(&problems, &opts).unwrap();
            let got = svd_driver(&CpuDev(CpuBackend::new()), &problems, &opts).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.u.shape(), w.u.shape(), "problem {i}");
                assert_eq!(g.v.shape(), w.v.shape(), "problem {i}");
                assert_eq!(g.objective.len(), w.objective.len(), "problem {i}");
                let scale: f64 = ws[i]
                    .host_f32()
                    .unwrap()
                    .iter()
                    .map(|&x| (x as f64).powi(2))
                    .sum();
                for (a, b) in g.objective.iter().zip(&w.objective) {
                    assert!(
                        (a - b).abs() <= 1e-4 * b.abs() + 1e-9 * scale,
                        "problem {i}: objective {a} vs {b}"
                    );
                }
                if shapes[i].2 == 0 {
                    continue;
                }
                let err = rel(&product(g), &product(w));
                assert!(err < 1e-4, "problem {i}: products differ by {err}");
                for (a, b) in g.singular_values.iter().zip(&w.singular_values) {
                    assert!(
                        (a - b).abs() <= 1e-4 * w.singular_values[0],
                        "problem {i}: σ {a} vs {b}"
                    );
                }
                // Balanced factors: UᵀU ≈ diag(σ).
                let (o, r) = (g.u.shape()[0], g.u.shape()[1]);
                let u = g.u.host_f32().unwrap();
                for a in 0..r {
                    for b in 0..r {
                        let d: f64 = (0..o)
                            .map(|x| u[x * r + a] as f64 * u[x * r + b] as f64)
                            .sum();
                        let want = if a == b {
                            g.singular_values[a] as f64
                        } else {
                            0.0
                        };
                        assert!(
                            (d - want).abs() < 1e-4 * g.singular_values[0] as f64,
                            "problem {i}: UᵀU[{a},{b}]"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn cholesky_qr_step_handles_rank_deficiency() {
        // Y (20×4) whose third column repeats the first: Q must come out with
        // orthonormal columns plus one zero column, never NaN.
        let (m, r) = (20usize, 4usize);
        let mut y = rand(5, m * r);
        for i in 0..m {
            y[i * r + 2] = y[i * r];
        }
        let be = CpuBackend::new();
        let yt = Tensor::cpu_f32(y.clone(), &[m, r]).unwrap();
        let mut q = yt;
        for pass in [true, false] {
            let mut g = be.zeros(&[r, r], DType::F32).unwrap();
            be.gemm(&Gemm::tn(r, r, m), &q, &q, &mut g).unwrap();
            let (rinv, _) = chol_inv_host(g.host_f32().unwrap(), r, pass);
            let rinv = Tensor::cpu_f32(rinv, &[r, r]).unwrap();
            let mut next = be.zeros(&[m, r], DType::F32).unwrap();
            be.gemm(&Gemm::nn(m, r, r), &q, &rinv, &mut next).unwrap();
            q = next;
        }
        let qv = q.host_f32().unwrap();
        assert!(qv.iter().all(|x| x.is_finite()));
        let mut zero_cols = 0;
        for a in 0..r {
            for b in 0..r {
                let d: f64 = (0..m)
                    .map(|x| qv[x * r + a] as f64 * qv[x * r + b] as f64)
                    .sum();
                if a == b && d < 1e-6 {
                    zero_cols += 1;
                } else if a == b {
                    assert!((d - 1.0).abs() < 1e-5, "column {a}: norm² {d}");
                } else {
                    assert!(d.abs() < 1e-5, "columns {a}, {b}: {d}");
                }
            }
        }
        assert_eq!(zero_cols, 1);
        // Q spans Y: Y − Q·QᵀY ≈ 0.
        for c in 0..r {
            for x in 0..m {
                let mut proj = 0.0f64;
                for a in 0..r {
                    let dot: f64 = (0..m)
                        .map(|z| qv[z * r + a] as f64 * y[z * r + c] as f64)
                        .sum();
                    proj += qv[x * r + a] as f64 * dot;
                }
                assert!((proj - y[x * r + c] as f64).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn weighted_selection_by_rows() {
        let keys = [5u32, 9, 5, 1, 9];
        let w = [3u64, 2, 4, 10, 1];
        assert_eq!(select_weighted(&keys, &w, 1), (9, 0, 3));
        assert_eq!(select_weighted(&keys, &w, 3), (9, 0, 3));
        assert_eq!(select_weighted(&keys, &w, 4), (5, 3, 7));
        assert_eq!(select_weighted(&keys, &w, 10), (5, 3, 7));
        assert_eq!(select_weighted(&keys, &w, 11), (1, 10, 10));
    }
}
