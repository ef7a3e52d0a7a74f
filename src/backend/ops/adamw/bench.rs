//! The benchmark workloads of this folder's operations for `lpaf bench kernels`
//! and `benches/kernels.rs`: their FLOPs and the fewest bytes they must move,
//! so each time is reported as a fraction of the ceiling measured in the same run.

use crate::backend::ops::workload::*;
use crate::backend::*;
use crate::error::Result;

/// The workloads of this folder's operations at BERT-base shapes (`scale`
/// as in [`scaled_dims`]).
pub fn workloads(be: &dyn Backend, scale: f64, seed: u64) -> Result<Vec<Box<dyn Workload>>> {
    let n: usize = bert_shapes(scale).iter().map(|(o, i)| o * i).sum();
    let mut p = rand_tensor(be, seed, 60, &[n], 0.05)?;
    let g = rand_tensor(be, seed, 61, &[n], 1e-3)?;
    let mut m = rand_tensor(be, seed, 62, &[n], 1e-4)?;
    let mut v = be.from_f32(&vec![1e-8; n], &[n])?;
    let hp = AdamWStep {
        lr: 1e-4,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
        step: 10,
        grad_scale: 1.0,
    };
    let f = n as f64;
    // Reads p, g, m, v; writes p, m, v.
    Ok(vec![OpWorkload::memory(
        "adamw",
        format!("{} weights", fmt_count(n)),
        12.0 * f,
        28.0 * f,
        move |be| be.adamw(&mut p, &g, &mut m, &mut v, &hp),
    )])
}
