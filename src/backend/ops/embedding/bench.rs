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
    let vocab = ((30522.0 * scale) as usize).max(1024);
    let ids: Vec<i32> = (0..n)
        .map(|i| (philox::uniform(seed, 40, i as u64) * vocab as f32) as i32 % vocab as i32)
        .collect();
    let e = (n * h) as f64;
    let size = format!("{n} of {vocab}×{h}");
    let mut out = Vec::new();
    {
        let table = rand_tensor(be, seed, 41, &[vocab, h], 1.0)?;
        let ids = be.from_i32(&ids, &[n])?;
        let mut y = be.zeros(&[n, h], DType::F32)?;
        out.push(OpWorkload::memory(
            "gather_rows",
            size.clone(),
            0.0,
            8.0 * e + 4.0 * n as f64,
            move |be| be.gather_rows(&table, &ids, &mut y, false),
        ));
    }
    {
        let d = rand_tensor(be, seed, 42, &[n, h], 1.0)?;
        let ids = be.from_i32(&ids, &[n])?;
        let mut grad = be.zeros(&[vocab, h], DType::F32)?;
        // Reads d and the ids, reads and writes the rows it touches (at most n).
        out.push(OpWorkload::memory(
            "scatter_add_rows",
            size,
            e,
            12.0 * e + 4.0 * n as f64,
            move |be| be.scatter_add_rows(&d, &ids, &mut grad),
        ));
    }
    Ok(out)
}
