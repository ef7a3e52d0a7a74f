//! The CUDA launcher of `ReduceOps`.

use cudarc::driver::{DevicePtrMut, LaunchConfig};

use crate::backend::cuda::*;
use crate::backend::*;
use crate::error::{Error, Result};

impl ReduceOps for CudaBackend {
    fn col_sum(&self, x: &Tensor, out: &mut Tensor, accumulate: bool) -> Result<()> {
        let op = "col_sum";
        let px = self.ptr(op, "x", x, DType::F32)?;
        let po = self.ptr_mut(op, "out", out, DType::F32)?;
        let cols = out.numel();
        if cols == 0 || x.numel() % cols != 0 {
            return Err(Error::shape(
                op,
                format!("x has {} elements, not a multiple of {cols}", x.numel()),
            ));
        }
        let rows = x.numel() / cols;
        if rows == 0 {
            // An empty sum: out = 0 (or unchanged when accumulating).
            return if accumulate {
                Ok(())
            } else {
                self.fill(out, 0.0)
            };
        }
        let (rpc, chunks) = col_chunks(rows);
        let partials = self.scratch(chunks * cols, DType::F32)?;
        let pp = self.raw_ptr(&partials);
        let (kernel, units) = if cols % 4 == 0 {
            ("col_sum_partials_f32x4", cols / 4)
        } else {
            ("col_sum_partials_f32", cols)
        };
        self.launch(
            "reduce",
            kernel,
            self.col_cfg(op, units, chunks)?,
            &[
                KArg::Ptr(px),
                KArg::Ptr(pp),
                KArg::U64(rows as u64),
                KArg::U64(units as u64),
                KArg::U64(rpc as u64),
            ],
        )?;
        self.launch(
            "reduce",
            "col_sum_finalize_f32",
            self.stride_cfg(cols),
            &[
                KArg::Ptr(pp),
                KArg::Ptr(po),
                KArg::U64(cols as u64),
                KArg::U64(chunks as u64),
                KArg::U32(accumulate as u32),
            ],
        )
    }

    fn sum_squares(&self, x: &Tensor) -> Result<f64> {
        let op = "sum_squares";
        let px = self.ptr(op, "x", x, DType::F32)?;
        let n = x.numel();
        if n == 0 {
            return Ok(0.0);
        }
        // The grid depends on n only: the same partition on every run and device.
        let blocks = sum_squares_blocks(n);
        // SAFETY: every block writes its partial before it is read back.
        let mut partials = unsafe { self.stream.alloc::<f64>(blocks) }
            .map_err(|e| Error::cuda("cuMemAlloc", e))?;
        let pp = partials.device_ptr_mut(&self.stream).0;
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        self.launch(
            "reduce",
            "sum_squares_f64",
            cfg,
            &[KArg::Ptr(px), KArg::U64(n as u64), KArg::Ptr(pp)],
        )?;
        let host = self
            .stream
            .clone_dtoh(&partials)
            .map_err(|e| Error::cuda("cuMemcpyDtoH", e))?;
        self.synchronize()?;
        Ok(host.iter().sum())
    }
}
