//! The benchmark workloads of this folder's operations for `lpaf bench kernels`
//! and `benches/kernels.rs`: their FLOPs and the fewest bytes they must move,
//! so each time is reported as a fraction of the ceiling measured in the same run.

use crate::backend::ops::workload::*;
use crate::backend::*;
use crate::error::Result;

/// The workloads of this folder's operations at BERT-base shapes (`scale`
/// as in [`scaled_dims`]).
pub fn workloads(be: &dyn Backend, scale: f64, seed: u64) -> Result<Vec<Box<dyn Workload>>> {
    let (h, n) = scaled_dims(scale);
    let (rows, cols) = (n, 4 * h);
    let e = rows * cols;
    let size = format!("{rows}×{cols}");
    let x = rand_tensor(be, seed, 10, &[rows, cols], 2.0)?;
    let dy = rand_tensor(be, seed, 11, &[rows, cols], 1.0)?;
    let mask = be.from_u8(&rand_mask(seed, 12, e, 0.5), &[rows, cols])?;
    let bias = rand_tensor(be, seed, 13, &[cols], 0.1)?;
    let f = e as f64;
    let mut out = Vec::new();
    {
        let (x, mut y) = (be.clone_tensor(&x)?, be.clone_tensor(&dy)?);
        out.push(OpWorkload::memory(
            "axpby",
            size.clone(),
            3.0 * f,
            12.0 * f,
            move |be| be.axpby(0.5, &x, 0.5, &mut y),
        ));
    }
    {
        let (x, mut y) = (be.clone_tensor(&x)?, be.zeros(&[rows, cols], DType::F32)?);
        // FLOPs: the arithmetic around erf (erf itself not counted).
        out.push(OpWorkload::memory(
            "gelu",
            size.clone(),
            4.0 * f,
            8.0 * f,
            move |be| be.gelu(&x, &mut y),
        ));
    }
    {
        let (x, dy, mut dx) = (
            be.clone_tensor(&x)?,
            be.clone_tensor(&dy)?,
            be.zeros(&[rows, cols], DType::F32)?,
        );
        out.push(OpWorkload::memory(
            "gelu_backward",
            size.clone(),
            8.0 * f,
            12.0 * f,
            move |be| be.gelu_backward(&x, &dy, &mut dx),
        ));
    }
    {
        let (x, mut y) = (be.clone_tensor(&x)?, be.zeros(&[rows, cols], DType::F32)?);
        out.push(OpWorkload::memory(
            "dropout p=0.1",
            size.clone(),
            f,
            8.0 * f,
            move |be| be.dropout(&x, &mut y, 0.1, 7, 1),
        ));
    }
    {
        let (mut y, b) = (be.clone_tensor(&x)?, be.clone_tensor(&bias)?);
        out.push(OpWorkload::memory(
            "add_row_bias",
            size.clone(),
            f,
            8.0 * f + 4.0 * cols as f64,
            move |be| be.add_row_bias(&mut y, &b),
        ));
    }
    {
        let (x, m, mut y) = (
            be.clone_tensor(&x)?,
            be.clone_tensor(&mask)?,
            be.zeros(&[rows, cols], DType::F32)?,
        );
        out.push(OpWorkload::memory(
            "mul_mask",
            size.clone(),
            f,
            9.0 * f,
            move |be| be.mul_mask(&x, &m, &mut y),
        ));
    }
    {
        let (x, m, mut y) = (
            be.clone_tensor(&x)?,
            be.clone_tensor(&mask)?,
            be.clone_tensor(&dy)?,
        );
        out.push(OpWorkload::memory(
            "masked_add",
            size.clone(),
            f,
            13.0 * f,
            move |be| be.masked_add(&x, Some(&m), &mut y),
        ));
    }
    {
        // The [CLS] rows of every sequence of 128 tokens into a dense batch.
        let seqs = (n / 128).max(1);
        let src = rand_tensor(be, seed, 14, &[n, h], 1.0)?;
        let mut dst = be.zeros(&[seqs, h], DType::F32)?;
        let spec = RowCopy {
            rows: seqs,
            cols: h,
            src_offset: 0,
            src_stride: 128.min(n) * h,
            dst_offset: 0,
            dst_stride: h,
            accumulate: false,
        };
        out.push(OpWorkload::memory(
            "copy_rows ([CLS])",
            format!("{seqs}×{h}"),
            0.0,
            8.0 * (seqs * h) as f64,
            move |be| be.copy_rows(&src, &mut dst, &spec),
        ));
    }
    Ok(out)
}
