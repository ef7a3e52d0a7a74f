//! Embedding lookups: row gather and the deterministic scatter-add of their gradient (`kernels/embedding.cu`).
//!
//! In this folder: the contract (the trait below, its parameter types and
//! checks), the CPU reference (`cpu.rs`), the CUDA launcher (`cuda.rs`), the
//! test bodies (`tests.rs`, run on every device present) and the benchmark
//! workloads (`bench.rs`).

pub(crate) mod bench;
mod cpu;
mod cuda;

use crate::backend::*;
use crate::error::Result;

/// Embedding lookups: row gather and the deterministic scatter-add of their gradient (`kernels/embedding.cu`).
pub trait EmbeddingOps {
    /// `out[i] (+)= table[ids[i]]` (ids I32; each must be `< table rows`).
    fn gather_rows(
        &self,
        table: &Tensor,
        ids: &Tensor,
        out: &mut Tensor,
        accumulate: bool,
    ) -> Result<()>;

    /// `table_grad[ids[i]] += d[i]`, summed in the order of `i` (deterministic).
    fn scatter_add_rows(&self, d: &Tensor, ids: &Tensor, table_grad: &mut Tensor) -> Result<()>;
}
