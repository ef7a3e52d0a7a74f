//! The benchmark workload of this folder's operation for `lpaf bench kernels`
//! and `benches/kernels.rs`: clipping every gradient of BERT-base's matrices.

use crate::backend::ops::workload::*;
use crate::backend::*;
use crate::error::Result;

/// Norm and scaling over the gradients of every weight matrix at BERT-base
/// shapes (`scale` as in [`scaled_dims`]): reads them twice, writes them once.
pub fn workloads(be: &dyn Backend, scale: f64, seed: u64) -> Result<Vec<Box<dyn Workload>>> {
    let shapes = bert_shapes(scale);
    let n: usize = shapes.iter().map(|(o, i)| o * i).sum();
    let mut grads = Vec::new();
    for (k, (o, i)) in shapes.iter().enumerate() {
        // Large enough that the factor is below 1 and the scaling runs.
        grads.push(rand_tensor(be, seed, 60 + k as u64, &[*o, *i], 1.0)?);
    }
    let mut stats = be.zeros(&[2], DType::F32)?;
    let count = grads.len();
    Ok(vec![OpWorkload::memory(
        "grad_norm_clip + scale (all gradients)",
        format!("{count} tensors, {} weights", fmt_count(n)),
        3.0 * n as f64,
        12.0 * n as f64,
        move |be| {
            let mut walk = |f: &mut dyn FnMut(&mut Tensor) -> Result<()>| {
                grads.iter_mut().try_for_each(|g| f(g))
            };
            be.grad_norm_clip(&mut walk, 1.0, &mut stats)?;
            be.scale_by_clip_factor(&mut walk, &stats)
        },
    )])
}
