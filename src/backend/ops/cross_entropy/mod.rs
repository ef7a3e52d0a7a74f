//! The cross-entropy loss of classification logits on the device
//! (`kernels/cross_entropy.cu`), `CrossEntropyLoss`'s mean over rows: the
//! loss stays where the logits are, so a training step reads nothing back
//! (the trainer reads it when it logs). `model::loss::cross_entropy` is the
//! host version the other losses sit beside; the two agree to f64 rounding.
//!
//! In this folder: the contract (the trait below, its checks), the CPU
//! reference (`cpu.rs`), the CUDA launcher (`cuda.rs`), the test bodies
//! (`tests.rs`, run on every device present) and the benchmark workload
//! (`bench.rs`).

pub(crate) mod bench;
mod cpu;
mod cuda;

use crate::backend::*;
use crate::error::{Error, Result};

/// The cross-entropy loss of classification logits.
pub trait CrossEntropyOps {
    /// For `logits` `[rows, classes]` (F32) and `labels` `[rows]` (I32, each
    /// in `0..classes`): `dlogits = scale · ∂L/∂logits` (overwritten) and
    /// `loss[0] (+)= scale · L`, with `L` the mean over rows of
    /// `logsumexp(row) − row[label]`, computed in f64 and added in row order.
    fn cross_entropy(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        scale: f32,
        dlogits: &mut Tensor,
        loss: &mut Tensor,
        accumulate: bool,
    ) -> Result<()>;
}

/// Shapes and dtypes; returns (rows, classes).
pub(crate) fn check_args(
    logits: &Tensor,
    labels: &Tensor,
    dlogits: &Tensor,
    loss: &Tensor,
) -> Result<(usize, usize)> {
    let op = "cross_entropy";
    for (name, t, want) in [
        ("logits", logits, DType::F32),
        ("labels", labels, DType::I32),
        ("dlogits", dlogits, DType::F32),
        ("loss", loss, DType::F32),
    ] {
        if t.dtype() != want {
            return Err(Error::shape(
                op,
                format!("{name} is {:?}, expected {want:?}", t.dtype()),
            ));
        }
    }
    let rows = labels.numel();
    let classes = if rows == 0 { 0 } else { logits.numel() / rows };
    if classes == 0 || logits.numel() != rows * classes {
        return Err(Error::shape(
            op,
            format!(
                "{} logits for {rows} labels (expected rows × classes)",
                logits.numel()
            ),
        ));
    }
    if rows > u32::MAX as usize || classes > u32::MAX as usize {
        return Err(Error::shape(
            op,
            format!("{rows} rows × {classes} classes is too large"),
        ));
    }
    check_len(op, "dlogits", dlogits.numel(), logits.numel())?;
    check_len(op, "loss", loss.numel(), 1)?;
    Ok((rows, classes))
}

/// The error for the first label out of `0..classes`, as the host loss words it.
pub(crate) fn check_labels(labels: &[i32], classes: usize) -> Result<()> {
    match labels.iter().find(|&&l| l < 0 || l as usize >= classes) {
        Some(bad) => Err(Error::msg(format!(
            "label {bad} is out of range for a head with {classes} outputs"
        ))),
        None => Ok(()),
    }
}
