//! The CPU reference of `ReduceOps`.

use rayon::prelude::*;

use crate::backend::cpu::*;
use crate::backend::*;
use crate::error::{Error, Result};

impl ReduceOps for CpuBackend {
    fn col_sum(&self, x: &Tensor, out: &mut Tensor, accumulate: bool) -> Result<()> {
        let xs = f32s("col_sum", "x", x)?;
        let os = f32s_mut("col_sum", "out", out)?;
        let cols = os.len();
        if cols == 0 || xs.len() % cols != 0 {
            return Err(Error::shape(
                "col_sum",
                format!("x has {} elements, not a multiple of {cols}", xs.len()),
            ));
        }
        let rows = xs.len() / cols;
        // Each task owns a block of columns and walks the rows in order.
        os.par_chunks_mut(64).enumerate().for_each(|(bi, ob)| {
            let c0 = bi * 64;
            let mut acc = vec![0.0f32; ob.len()];
            for r in 0..rows {
                let row = &xs[r * cols + c0..r * cols + c0 + ob.len()];
                acc.iter_mut().zip(row).for_each(|(a, x)| *a += x);
            }
            for (o, a) in ob.iter_mut().zip(acc) {
                *o = if accumulate { *o + a } else { a };
            }
        });
        Ok(())
    }

    fn sum_squares(&self, x: &Tensor) -> Result<f64> {
        let xs = f32s("sum_squares", "x", x)?;
        let partial: Vec<f64> = xs
            .par_chunks(CHUNK)
            .map(|c| c.iter().map(|&v| v as f64 * v as f64).sum::<f64>())
            .collect();
        Ok(partial.iter().sum())
    }
}
