//! The CUDA launcher of `TopkOps`.

use crate::backend::cuda::*;
use crate::backend::*;
use crate::error::{Error, Result};

impl TopkOps for CudaBackend {
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
        if k == 0 {
            return Ok(TopkThreshold::none(rule, scope, abs));
        }
        let seg = segments(self, op, scores, &[], &[])?;
        let (key, greater, ties) = match scope {
            TopkScope::Entries => {
                // Scratch (I32 words): state 8×u64 | hist1 4096×u64 | coarse 256×u32 | fine 2^20×u32.
                const STATE: usize = 0;
                const HIST1: usize = 16;
                const COARSE: usize = HIST1 + 8192;
                const FINE: usize = COARSE + 256;
                let mut scratch = self.zeros(&[FINE + (1 << 20)], DType::I32)?;
                let base = self.ptr_mut(op, "scratch", &mut scratch, DType::I32)?;
                let at = |w: usize| base + 4 * w as u64;
                let table = self.ptr(op, "segments", &seg.table, DType::I32)?;
                let grid = cfg((seg.tiles as u32, 1, 1), BLOCK, 0);
                let one = cfg((1, 1, 1), BLOCK, 0);
                let nseg = KArg::I32(seg.nseg as i32);
                let absa = KArg::I32(abs as i32);
                self.launch(
                    "topk",
                    "topk_hist1",
                    grid,
                    &[KArg::Ptr(table), nseg, absa, KArg::Ptr(at(HIST1))],
                )?;
                self.launch(
                    "topk",
                    "topk_select1",
                    one,
                    &[
                        KArg::Ptr(at(HIST1)),
                        KArg::Ptr(at(STATE)),
                        KArg::U64(k as u64),
                    ],
                )?;
                self.launch(
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
                self.launch(
                    "topk",
                    "topk_select2",
                    one,
                    &[
                        KArg::Ptr(at(COARSE)),
                        KArg::Ptr(at(FINE)),
                        KArg::Ptr(at(STATE)),
                    ],
                )?;
                let st = read_u64s(self, at(STATE), 4)?;
                (st[2] as u32, st[1], st[3])
            }
            TopkScope::RowMean => {
                let (keys, _cols) = row_keys(self, op, &seg, abs)?;
                let keys: Vec<u32> = self
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

    fn topk_apply(
        &self,
        scores: &[&Tensor],
        th: &TopkThreshold,
        masks: &mut [&mut Tensor],
        apply: &mut [&mut Tensor],
    ) -> Result<usize> {
        let op = "topk_apply";
        check_topk_apply(op, scores, masks, apply)?;
        let mut mp = Vec::with_capacity(masks.len());
        for (i, m) in masks.iter_mut().enumerate() {
            mp.push(self.ptr_mut(op, &format!("masks[{i}]"), m, DType::U8)?);
        }
        let mut ap = Vec::with_capacity(apply.len());
        for (i, a) in apply.iter_mut().enumerate() {
            ap.push(self.ptr_mut(op, &format!("apply[{i}]"), a, DType::F32)?);
        }
        let seg = segments(self, op, scores, &mp, &ap)?;
        if seg.nseg == 0 {
            return Ok(0);
        }
        let table = KArg::Ptr(self.ptr(op, "segments", &seg.table, DType::I32)?);
        let nseg = KArg::I32(seg.nseg as i32);
        let absa = KArg::I32(th.abs as i32);
        let kth = th.key();
        let grid = cfg((seg.tiles as u32, 1, 1), BLOCK, 0);
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
            self.launch("topk", "topk_apply_entries", grid, &args)
        };
        if th.keep_none {
            entries(0, 0)?;
            return Ok(0);
        }
        match th.scope {
            TopkScope::Entries if th.partial_ties() => {
                let mut counts = empty(self, &[seg.tiles], DType::I32)?;
                let mut base = empty(self, &[2 * seg.tiles], DType::I32)?;
                let pc = self.ptr_mut(op, "tile counts", &mut counts, DType::I32)?;
                let pb = self.ptr_mut(op, "tile base", &mut base, DType::I32)?;
                self.launch(
                    "topk",
                    "topk_tie_count",
                    grid,
                    &[table, nseg, absa, KArg::U32(kth), KArg::Ptr(pc)],
                )?;
                self.launch(
                    "topk",
                    "topk_scan_tiles",
                    cfg((1, 1, 1), 1024, 0),
                    &[KArg::Ptr(pc), KArg::U64(seg.tiles as u64), KArg::Ptr(pb)],
                )?;
                entries(2, pb)?;
            }
            TopkScope::Entries => entries(1, 0)?,
            TopkScope::RowMean => {
                let (keys, mut keep) = row_keys(self, op, &seg, th.abs)?;
                let pk = self.ptr(op, "row keys", &keys, DType::I32)?;
                let pkeep = self.ptr_mut(op, "row keep", &mut keep, DType::I32)?;
                self.launch(
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
                self.launch(
                    "topk",
                    "topk_apply_rows",
                    grid,
                    &[table, nseg, KArg::Ptr(pkeep)],
                )?;
            }
        }
        Ok(th.kept)
    }
}

/// Elements per top-k tile (`TILE` in topk.cu).
const TILE: usize = 8192;

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
    let warps_per_block = (BLOCK / 32) as usize;
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
        cfg((blocks as u32, 1, 1), BLOCK, 0),
        &args,
    )?;
    Ok((keys, cols))
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

#[cfg(test)]
mod tests {
    use super::*;

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
