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
    let size = format!("{n}×{h}");
    let (e, nf, hf) = ((n * h) as f64, n as f64, h as f64);
    let x = rand_tensor(be, seed, 20, &[n, h], 2.0)?;
    let gamma = rand_tensor(be, seed, 21, &[h], 1.0)?;
    let beta = rand_tensor(be, seed, 22, &[h], 0.1)?;
    let mut out = Vec::new();
    {
        let (x, g, b) = (
            be.clone_tensor(&x)?,
            be.clone_tensor(&gamma)?,
            be.clone_tensor(&beta)?,
        );
        let mut y = be.zeros(&[n, h], DType::F32)?;
        let mut mean = be.zeros(&[n], DType::F32)?;
        let mut rstd = be.zeros(&[n], DType::F32)?;
        out.push(OpWorkload::memory(
            "layer_norm",
            size.clone(),
            8.0 * e,
            8.0 * e + 8.0 * nf + 8.0 * hf,
            move |be| be.layer_norm(&x, &g, &b, 1e-12, &mut y, &mut mean, &mut rstd),
        ));
    }
    {
        let mut y = be.zeros(&[n, h], DType::F32)?;
        let mut mean = be.zeros(&[n], DType::F32)?;
        let mut rstd = be.zeros(&[n], DType::F32)?;
        be.layer_norm(&x, &gamma, &beta, 1e-12, &mut y, &mut mean, &mut rstd)?;
        let dy = rand_tensor(be, seed, 23, &[n, h], 1.0)?;
        let (x, g) = (be.clone_tensor(&x)?, be.clone_tensor(&gamma)?);
        let mut dx = be.zeros(&[n, h], DType::F32)?;
        let mut dg = be.zeros(&[h], DType::F32)?;
        let mut db = be.zeros(&[h], DType::F32)?;
        out.push(OpWorkload::memory(
            "layer_norm_backward",
            size,
            12.0 * e,
            12.0 * e + 8.0 * nf + 20.0 * hf,
            move |be| be.layer_norm_backward(&dy, &x, &g, &mean, &rstd, &mut dx, &mut dg, &mut db),
        ));
    }
    Ok(out)
}
