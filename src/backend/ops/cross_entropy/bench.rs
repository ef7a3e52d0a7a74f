//! The benchmark workload of this folder's operation for `lpaf bench kernels`
//! and `benches/kernels.rs`: the loss of a classification batch.

use crate::backend::ops::workload::*;
use crate::backend::*;
use crate::error::Result;

/// Cross-entropy of a batch of 32 rows × 2 classes (the polarity head): a
/// latency, not a bandwidth, workload; its bytes are the logits, labels and
/// gradient.
pub fn workloads(be: &dyn Backend, _scale: f64, seed: u64) -> Result<Vec<Box<dyn Workload>>> {
    let (rows, classes) = (32usize, 2usize);
    let logits = rand_tensor(be, seed, 80, &[rows, classes], 3.0)?;
    let labels: Vec<i32> = (0..rows as i32).map(|r| r % classes as i32).collect();
    let labels = be.from_i32(&labels, &[rows])?;
    let mut d = be.zeros(&[rows, classes], DType::F32)?;
    let mut loss = be.zeros(&[1], DType::F32)?;
    let e = (rows * classes) as f64;
    Ok(vec![OpWorkload::memory(
        "cross_entropy (classification loss)",
        format!("{rows}×{classes}"),
        8.0 * e,
        8.0 * e + 4.0 * rows as f64,
        move |be| be.cross_entropy(&logits, &labels, 1.0, &mut d, &mut loss, false),
    )])
}
