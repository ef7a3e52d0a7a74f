//! The CPU reference of `EmbeddingOps`.

use rayon::prelude::*;

use crate::backend::cpu::*;
use crate::backend::*;
use crate::error::{Error, Result};

impl EmbeddingOps for CpuBackend {
    fn gather_rows(
        &self,
        table: &Tensor,
        ids: &Tensor,
        out: &mut Tensor,
        accumulate: bool,
    ) -> Result<()> {
        let op = "gather_rows";
        let ts = f32s(op, "table", table)?;
        let is = i32s(op, "ids", ids)?;
        let (rows, cols) = table.rows_cols();
        check_ids(op, is, rows)?;
        let os = f32s_mut(op, "out", out)?;
        check_len(op, "out", os.len(), is.len() * cols)?;
        os.par_chunks_mut(cols.max(1))
            .zip(is.par_iter())
            .for_each(|(o, &id)| {
                let src = &ts[id as usize * cols..(id as usize + 1) * cols];
                if accumulate {
                    o.iter_mut().zip(src).for_each(|(o, s)| *o += s);
                } else {
                    o.copy_from_slice(src);
                }
            });
        Ok(())
    }

    fn scatter_add_rows(&self, d: &Tensor, ids: &Tensor, table_grad: &mut Tensor) -> Result<()> {
        let op = "scatter_add_rows";
        let ds = f32s(op, "d", d)?;
        let is = i32s(op, "ids", ids)?;
        let (rows, cols) = table_grad.rows_cols();
        check_ids(op, is, rows)?;
        check_len(op, "d", ds.len(), is.len() * cols)?;
        let tg = f32s_mut(op, "table_grad", table_grad)?;
        // Each task owns a block of columns of every table row and visits the
        // ids in order: the sum order is fixed.
        let block = 64usize;
        let nblocks = cols.div_ceil(block);
        let tp = SendPtr(tg.as_mut_ptr());
        (0..nblocks).into_par_iter().for_each(|bi| {
            let p = tp;
            let c0 = bi * block;
            let c1 = (c0 + block).min(cols);
            for (i, &id) in is.iter().enumerate() {
                for c in c0..c1 {
                    // SAFETY: ids were checked to be < rows; each task writes only
                    // its own column block.
                    unsafe { *p.get().add(id as usize * cols + c) += ds[i * cols + c] };
                }
            }
        });
        Ok(())
    }
}

fn check_ids(op: &str, ids: &[i32], rows: usize) -> Result<()> {
    if let Some((i, &bad)) = ids
        .iter()
        .enumerate()
        .find(|(_, &id)| id < 0 || id as usize >= rows)
    {
        return Err(Error::shape(
            op,
            format!("id {bad} at position {i} is outside the table's {rows} rows"),
        ));
    }
    Ok(())
}
