//! The CUDA launcher of `GradsOps`: the visited tensors become a table of
//! entries (pointer, length, their blocks in one grid), uploaded once and
//! reused while the same tensors are visited (a model's gradients never move).

use cudarc::driver::LaunchConfig;

use super::check_stats;
use crate::backend::cuda::*;
use crate::backend::*;
use crate::error::{Error, Result};

/// `GradEntry` of kernels/grads.cu: {float* x; u64 n; u32 first_block; u32 blocks}.
const ENTRY_BYTES: usize = 24;

/// The device table of a walk's tensors, with its entry and block counts.
struct GradTable {
    table: std::sync::Arc<Tensor>,
    count: u32,
    blocks: u32,
}

impl CudaBackend {
    /// The table of the non-empty F32 tensors `walk` visits (cached: the same
    /// tensors give the same bytes, and then the uploaded table is reused).
    fn grad_table(&self, op: &str, walk: &mut TensorWalk<'_>) -> Result<GradTable> {
        let mut bytes = Vec::new();
        let (mut count, mut blocks) = (0usize, 0usize);
        walk(&mut |g| {
            let n = g.numel();
            let p = self.ptr_mut(op, "gradient", g, DType::F32)?;
            if n == 0 {
                return Ok(());
            }
            let b = sum_squares_blocks(n);
            bytes.extend_from_slice(&p.to_le_bytes());
            bytes.extend_from_slice(&(n as u64).to_le_bytes());
            bytes.extend_from_slice(&(blocks as u32).to_le_bytes());
            bytes.extend_from_slice(&(b as u32).to_le_bytes());
            count += 1;
            blocks += b;
            if blocks > MAX_GRID_X.min(u32::MAX as usize) {
                return Err(too_large(op, "blocks of all gradients", blocks, MAX_GRID_X));
            }
            Ok(())
        })?;
        debug_assert_eq!(bytes.len(), count * ENTRY_BYTES);
        let mut cache = self
            .grad_tables
            .lock()
            .map_err(|_| Error::msg("grad table cache poisoned"))?;
        let table = match cache.iter().find(|(b, _)| *b == bytes) {
            Some((_, t)) => t.clone(),
            None => {
                let t = std::sync::Arc::new(self.from_u8(&bytes, &[bytes.len()])?);
                // A few tables (the model's, a test's); the oldest goes first.
                if cache.len() >= 4 {
                    cache.remove(0);
                }
                cache.push((bytes, t.clone()));
                t
            }
        };
        Ok(GradTable {
            table,
            count: count as u32,
            blocks: blocks as u32,
        })
    }
}

impl CudaBackend {
    /// `kernel(table, count, extra…)` of kernels/grads.cu over the table's
    /// blocks (`blocks`: the table's, or 1 for a one-block kernel).
    fn launch_grads(
        &self,
        t: &GradTable,
        kernel: &'static str,
        blocks: u32,
        extra: &[KArg],
    ) -> Result<()> {
        let pt = self.raw_ptr(self.storage(kernel, "table", &t.table)?);
        let mut args = vec![KArg::Ptr(pt), KArg::U32(t.count)];
        args.extend_from_slice(extra);
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        self.launch("grads", kernel, cfg, &args)
    }
}

impl GradsOps for CudaBackend {
    fn grad_norm_clip(
        &self,
        grads: &mut TensorWalk<'_>,
        max_norm: f32,
        stats: &mut Tensor,
    ) -> Result<()> {
        let op = "grad_norm_clip";
        check_stats(op, stats)?;
        let t = self.grad_table(op, grads)?;
        let ps = self.ptr_mut(op, "stats", stats, DType::F32)?;
        // f64 scratch as pairs of f32 words.
        let partials = self.scratch(2 * t.blocks.max(1) as usize, DType::F32)?;
        let sums = self.scratch(2 * t.count.max(1) as usize, DType::F32)?;
        let (pp, pq) = (self.raw_ptr(&partials), self.raw_ptr(&sums));
        self.launch_grads(&t, "grad_sumsq_many_f64", t.blocks, &[KArg::Ptr(pp)])?;
        self.launch_grads(
            &t,
            "grad_norm_finalize",
            1,
            &[
                KArg::Ptr(pp),
                KArg::Ptr(pq),
                KArg::F32(max_norm),
                KArg::Ptr(ps),
            ],
        )
    }

    fn scale_by_clip_factor(&self, grads: &mut TensorWalk<'_>, stats: &Tensor) -> Result<()> {
        let op = "scale_by_clip_factor";
        check_stats(op, stats)?;
        let ps = self.ptr(op, "stats", stats, DType::F32)?;
        let t = self.grad_table(op, grads)?;
        self.launch_grads(&t, "grad_scale_many", t.blocks, &[KArg::Ptr(ps)])
    }

    fn zero_all(&self, grads: &mut TensorWalk<'_>) -> Result<()> {
        let t = self.grad_table("zero_all", grads)?;
        self.launch_grads(&t, "grads_zero_many", t.blocks, &[])
    }
}
