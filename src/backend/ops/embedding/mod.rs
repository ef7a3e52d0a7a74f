//! Embedding lookups: row gather and the deterministic scatter-add of their gradient (`kernels/embedding.cu`).
//!
//! The contract is the trait below; `cpu.rs` is the reference, `cuda.rs` the launcher.

mod cpu;
mod cuda;

use crate::backend::*;
use crate::error::Result;

/// Embedding lookups: row gather and the deterministic scatter-add of their gradient (`kernels/embedding.cu`).
#[allow(clippy::wrong_self_convention)]
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
