//! The CUDA launcher of `CrossEntropyOps`.

use cudarc::driver::LaunchConfig;

use super::{check_args, check_labels};
use crate::backend::cuda::*;
use crate::backend::*;
use crate::error::Result;

impl CrossEntropyOps for CudaBackend {
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
        // Labels uploaded from the host carry their range: in range, nothing
        // is read back; otherwise they are read to find the first bad one.
        if !self.storage(op, "labels", labels)?.i32_known_below(classes) {
            check_labels(&self.to_i32(labels)?, classes)?;
        }
        let px = self.ptr(op, "logits", logits, DType::F32)?;
        let py = self.ptr(op, "labels", labels, DType::I32)?;
        let pd = self.ptr_mut(op, "dlogits", dlogits, DType::F32)?;
        let pl = self.ptr_mut(op, "loss", loss, DType::F32)?;
        // f64 row losses as pairs of f32 words.
        let row_loss = self.scratch(2 * rows, DType::F32)?;
        let pr = self.raw_ptr(&row_loss);
        let one = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        self.launch(
            "cross_entropy",
            "cross_entropy_f32",
            one,
            &[
                KArg::Ptr(px),
                KArg::Ptr(py),
                KArg::U32(rows as u32),
                KArg::U32(classes as u32),
                KArg::F32(scale),
                KArg::U32(accumulate as u32),
                KArg::Ptr(pd),
                KArg::Ptr(pr),
                KArg::Ptr(pl),
            ],
        )
    }
}
