//! Matrix products (cuBLAS on CUDA, the `gemm` crate on the CPU).
//!
//! In this folder: the contract (the trait below, its parameter types and
//! checks), the CPU reference (`cpu.rs`), the CUDA launcher (`cuda.rs`), the
//! test bodies (`tests.rs`, run on every device present) and the benchmark
//! workloads (`bench.rs`).

pub(crate) mod bench;
mod cpu;
mod cuda;

use crate::backend::*;
use crate::error::{Error, Result};

/// A (strided-batched) row-major matrix product
/// `C[b] = alpha · op(A[b]) · op(B[b]) + beta · C[b]` for `b in 0..batch`,
/// where `op(A)` is `m × k`, `op(B)` is `k × n` and `C` is `m × n`.
///
/// Leading dimensions are row strides of the matrices *as stored*: `A` is
/// stored `m × k` (or `k × m` when `trans_a`), so `lda ≥ k` (or `≥ m`).
/// Offsets and batch strides are in elements. All three tensors are F32.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    pub beta: f32,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub offset_a: usize,
    pub offset_b: usize,
    pub offset_c: usize,
    pub batch: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
    pub precision: Precision,
}

impl Gemm {
    /// `C = op(A)·op(B)` with packed leading dimensions, one matrix, alpha 1, beta 0.
    pub fn new(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> Gemm {
        Gemm {
            m,
            n,
            k,
            trans_a,
            trans_b,
            alpha: 1.0,
            beta: 0.0,
            lda: if trans_a { m } else { k },
            ldb: if trans_b { k } else { n },
            ldc: n,
            offset_a: 0,
            offset_b: 0,
            offset_c: 0,
            batch: 1,
            stride_a: m * k,
            stride_b: k * n,
            stride_c: m * n,
            precision: Precision::F32,
        }
    }
    /// `A·B`.
    pub fn nn(m: usize, n: usize, k: usize) -> Gemm {
        Gemm::new(m, n, k, false, false)
    }
    /// `A·Bᵀ` (B stored `n × k`): the linear-layer forward `x·Wᵀ`.
    pub fn nt(m: usize, n: usize, k: usize) -> Gemm {
        Gemm::new(m, n, k, false, true)
    }
    /// `Aᵀ·B` (A stored `k × m`): the weight gradient `dyᵀ·x`.
    pub fn tn(m: usize, n: usize, k: usize) -> Gemm {
        Gemm::new(m, n, k, true, false)
    }
    pub fn alpha(mut self, alpha: f32) -> Gemm {
        self.alpha = alpha;
        self
    }
    pub fn beta(mut self, beta: f32) -> Gemm {
        self.beta = beta;
        self
    }
    pub fn precision(mut self, p: Precision) -> Gemm {
        self.precision = p;
        self
    }
    /// Packed strided batch of `batch` products.
    pub fn batched(mut self, batch: usize) -> Gemm {
        self.batch = batch;
        self
    }
    /// Flops of the product (2·m·n·k per matrix).
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64 * self.batch as f64
    }

    /// Checks that every matrix of the batch lies inside the three buffers.
    pub fn validate(&self, a_len: usize, b_len: usize, c_len: usize) -> Result<()> {
        let (ar, ac) = if self.trans_a {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        };
        let (br, bc) = if self.trans_b {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        };
        let check = |name: &str,
                     rows: usize,
                     cols: usize,
                     ld: usize,
                     off: usize,
                     stride: usize,
                     len: usize| {
            if rows == 0 || cols == 0 || self.batch == 0 {
                return Ok(());
            }
            if ld < cols {
                return Err(Error::shape(
                    "gemm",
                    format!("ld{name} = {ld} < {cols} columns"),
                ));
            }
            let last = off + (self.batch - 1) * stride + (rows - 1) * ld + cols;
            if last > len {
                return Err(Error::shape(
                    "gemm",
                    format!(
                        "{name} ({rows}×{cols}, ld {ld}, offset {off}, batch {} stride {stride}) needs {last} elements, buffer has {len}",
                        self.batch
                    ),
                ));
            }
            Ok(())
        };
        check("a", ar, ac, self.lda, self.offset_a, self.stride_a, a_len)?;
        check("b", br, bc, self.ldb, self.offset_b, self.stride_b, b_len)?;
        check(
            "c",
            self.m,
            self.n,
            self.ldc,
            self.offset_c,
            self.stride_c,
            c_len,
        )
    }
}

/// Matrix products (cuBLAS on CUDA, the `gemm` crate on the CPU).
pub trait GemmOps {
    fn gemm(&self, g: &Gemm, a: &Tensor, b: &Tensor, c: &mut Tensor) -> Result<()>;
}
