//! The CPU reference of `CrossEntropyOps`.

use super::{check_args, check_labels};
use crate::backend::cpu::*;
use crate::backend::*;
use crate::error::{Error, Result};

impl CrossEntropyOps for CpuBackend {
    fn cross_entropy(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        scale: f32,
        dlogits: &mut Tensor,
        loss: &mut Tensor,
        accumulate: bool,
    ) -> Result<()> {
        let op = "cross_entropy";
        let (rows, classes) = check_args(logits, labels, dlogits, loss)?;
        let x = f32s(op, "logits", logits)?;
        let y = match labels.storage() {
            Storage::Cpu(CpuStorage::I32(v)) => v.as_slice(),
            _ => return Err(Error::shape(op, "labels is not an I32 CPU tensor")),
        };
        check_labels(y, classes)?;
        let d = f32s_mut(op, "dlogits", dlogits)?;
        let mut total = 0.0f64;
        for r in 0..rows {
            let row = &x[r * classes..(r + 1) * classes];
            let mx = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let se: f64 = row.iter().map(|&v| (v as f64 - mx).exp()).sum();
            let lse = mx + se.ln();
            let yr = y[r] as usize;
            total += -(row[yr] as f64 - lse);
            for c in 0..classes {
                let p = (row[c] as f64 - lse).exp();
                let g = p - if c == yr { 1.0 } else { 0.0 };
                d[r * classes + c] = (g * scale as f64 / rows as f64) as f32;
            }
        }
        let v = (scale as f64 * (total / rows as f64)) as f32;
        let l = f32s_mut(op, "loss", loss)?;
        l[0] = if accumulate { l[0] + v } else { v };
        Ok(())
    }
}
