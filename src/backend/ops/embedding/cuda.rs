//! The CUDA launcher of `EmbeddingOps`.

use cudarc::driver::LaunchConfig;

use crate::backend::cuda::*;
use crate::backend::*;
use crate::error::{Error, Result};

impl EmbeddingOps for CudaBackend {
    fn gather_rows(
        &self,
        table: &Tensor,
        ids: &Tensor,
        out: &mut Tensor,
        accumulate: bool,
    ) -> Result<()> {
        let op = "gather_rows";
        let pt = self.ptr(op, "table", table, DType::F32)?;
        let pi = self.ptr(op, "ids", ids, DType::I32)?;
        let (rows, cols) = table.rows_cols();
        let n = ids.numel();
        let po = self.ptr_mut(op, "out", out, DType::F32)?;
        // Cheap host checks first, then the ids (which waits for the device).
        let want = n
            .checked_mul(cols)
            .ok_or_else(|| too_large(op, "ids × columns", n, usize::MAX / cols.max(1)))?;
        self.check_ids(op, ids, rows)?;
        check_len(op, "out", out.numel(), want)?;
        if want == 0 {
            return Ok(());
        }
        let (kernel, units) = if cols % 4 == 0 {
            ("gather_rows_f32x4", cols / 4)
        } else {
            ("gather_rows_f32", cols)
        };
        self.launch(
            "embedding",
            kernel,
            Self::rows_2d_cfg(units, n),
            &[
                KArg::Ptr(pt),
                KArg::Ptr(pi),
                KArg::Ptr(po),
                KArg::U64(n as u64),
                KArg::U64(units as u64),
                KArg::U64(rows as u64),
                KArg::U32(accumulate as u32),
            ],
        )
    }

    fn scatter_add_rows(&self, d: &Tensor, ids: &Tensor, table_grad: &mut Tensor) -> Result<()> {
        let op = "scatter_add_rows";
        let pd = self.ptr(op, "d", d, DType::F32)?;
        let pi = self.ptr(op, "ids", ids, DType::I32)?;
        let (rows, cols) = table_grad.rows_cols();
        let n = ids.numel();
        let ptg = self.ptr_mut(op, "table_grad", table_grad, DType::F32)?;
        self.check_ids(op, ids, rows)?;
        let want = n
            .checked_mul(cols)
            .ok_or_else(|| too_large(op, "ids × columns", n, usize::MAX / cols.max(1)))?;
        check_len(op, "d", d.numel(), want)?;
        if want == 0 {
            return Ok(());
        }
        let max_ids = MAX_GRID_Y * RANK_TILE;
        if n > max_ids {
            return Err(too_large(op, "number of ids", n, max_ids));
        }
        if cols.div_ceil(BLOCK as usize) > MAX_GRID_X {
            return Err(too_large(op, "columns", cols, MAX_GRID_X));
        }
        // Pieces of the sorted positions: at least 32, and at most 65535 of them.
        let piece = n.div_ceil(MAX_GRID_Y).max(SCATTER_PIECE);
        let pieces = n.div_ceil(piece);
        // 1. rank[i] = position of (ids[i], i) in sorted order; perm / sid.
        let rank = self.zeros(&[n], DType::I32)?;
        let prank = self.ptr(op, "rank", &rank, DType::I32)?;
        let perm = self.scratch(n, DType::I32)?;
        let sid = self.scratch(n, DType::I32)?;
        let (pperm, psid) = (self.raw_ptr(&perm), self.raw_ptr(&sid));
        let rank_cfg = LaunchConfig {
            grid_dim: (n.div_ceil(128) as u32, n.div_ceil(RANK_TILE) as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        self.launch(
            "embedding",
            "scatter_rank_count",
            rank_cfg,
            &[KArg::Ptr(pi), KArg::U32(n as u32), KArg::Ptr(prank)],
        )?;
        self.launch(
            "embedding",
            "scatter_rank_place",
            self.stride_cfg(n),
            &[
                KArg::Ptr(pi),
                KArg::Ptr(prank),
                KArg::U32(n as u32),
                KArg::Ptr(pperm),
                KArg::Ptr(psid),
            ],
        )?;
        // 2. per-piece segment sums; 3. segments crossing pieces.
        let first = self.scratch(pieces * cols, DType::F32)?;
        let last = self.scratch(pieces * cols, DType::F32)?;
        let (pfirst, plast) = (self.raw_ptr(&first), self.raw_ptr(&last));
        let piece_cfg = LaunchConfig {
            grid_dim: (cols.div_ceil(BLOCK as usize) as u32, pieces as u32, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        self.launch(
            "embedding",
            "scatter_pieces_f32",
            piece_cfg,
            &[
                KArg::Ptr(pd),
                KArg::Ptr(pperm),
                KArg::Ptr(psid),
                KArg::Ptr(ptg),
                KArg::Ptr(pfirst),
                KArg::Ptr(plast),
                KArg::U32(n as u32),
                KArg::U64(cols as u64),
                KArg::U32(piece as u32),
            ],
        )?;
        self.launch(
            "embedding",
            "scatter_combine_f32",
            piece_cfg,
            &[
                KArg::Ptr(psid),
                KArg::Ptr(ptg),
                KArg::Ptr(pfirst),
                KArg::Ptr(plast),
                KArg::U32(n as u32),
                KArg::U64(cols as u64),
                KArg::U32(piece as u32),
                KArg::U32(pieces as u32),
            ],
        )
    }
}

/// scatter_add_rows ranks ids in tiles of this many (kernels/embedding.cu RANK_TILE).
const RANK_TILE: usize = 1024;

/// Positions per piece of scatter_add_rows' segmented sums (at least).
const SCATTER_PIECE: usize = 32;

impl CudaBackend {
    /// Checks every id is in `0..rows`, with the CPU's error message: from
    /// the range recorded at upload when there is one, else on the device
    /// (the first bad position is found with an integer atomicMin), which
    /// reads back one int and so waits for the queued work.
    fn check_ids(&self, op: &str, ids: &Tensor, rows: usize) -> Result<()> {
        let pi = self.ptr(op, "ids", ids, DType::I32)?;
        let n = ids.numel();
        if n == 0 {
            return Ok(());
        }
        if n > i32::MAX as usize {
            return Err(too_large(op, "number of ids", n, i32::MAX as usize));
        }
        // Ids uploaded from the host carry their range: in bounds, nothing to
        // read back (a step's gathers and scatters then never wait).
        if self.storage(op, "ids", ids)?.i32_known_below(rows) {
            return Ok(());
        }
        let mut flag = self.from_i32(&[i32::MAX], &[1])?;
        let pf = self.ptr_mut(op, "flag", &mut flag, DType::I32)?;
        self.launch(
            "embedding",
            "check_ids_i32",
            self.stride_cfg(n),
            &[
                KArg::Ptr(pi),
                KArg::U64(n as u64),
                KArg::U64(rows as u64),
                KArg::Ptr(pf),
            ],
        )?;
        let first = self.to_i32(&flag)?.first().copied().unwrap_or(i32::MAX);
        if first == i32::MAX || first < 0 {
            return Ok(());
        }
        let pos = first as usize;
        let bad = self.read_i32_at(ids, pos)?;
        Err(Error::shape(
            op,
            format!("id {bad} at position {pos} is outside the table's {rows} rows"),
        ))
    }

    /// One element of an I32 device tensor.
    fn read_i32_at(&self, t: &Tensor, pos: usize) -> Result<i32> {
        let s = self.storage("read_i32_at", "tensor", t)?;
        let CudaData::I32(x) = &*s.data else {
            return Err(Error::shape(
                "read_i32_at",
                format!("tensor is {:?}", s.dtype()),
            ));
        };
        if pos >= s.len {
            return Err(Error::shape(
                "read_i32_at",
                format!("position {pos} of {}", s.len),
            ));
        }
        let mut one = [0i32; 1];
        self.stream
            .memcpy_dtoh(&x.slice(pos..pos + 1), &mut one[..])
            .map_err(|e| Error::cuda("cuMemcpyDtoH", e))?;
        self.synchronize()?;
        Ok(one[0])
    }
}
