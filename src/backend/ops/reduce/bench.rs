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
    let cols = 4 * h;
    let e = (n * cols) as f64;
    let n_weights: usize = bert_shapes(scale).iter().map(|(o, i)| o * i).sum();
    let mut out = Vec::new();
    {
        let x = rand_tensor(be, seed, 50, &[n, cols], 1.0)?;
        let mut y = be.zeros(&[cols], DType::F32)?;
        out.push(OpWorkload::memory(
            "col_sum (bias gradient)",
            format!("{n}×{cols}"),
            e,
            4.0 * e + 4.0 * cols as f64,
            move |be| be.col_sum(&x, &mut y, false),
        ));
    }
    {
        let x = rand_tensor(be, seed, 51, &[n_weights], 1e-3)?;
        out.push(OpWorkload::memory(
            "sum_squares (gradient norm)",
            format!("{} weights", fmt_count(n_weights)),
            2.0 * n_weights as f64,
            4.0 * n_weights as f64,
            move |be| be.sum_squares(&x).map(|_| ()),
        ));
    }
    Ok(out)
}
