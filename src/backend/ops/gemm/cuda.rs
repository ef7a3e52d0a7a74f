//! The CUDA launcher of `GemmOps`.

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};

use crate::backend::cuda::*;
use crate::backend::*;
use crate::error::{Error, Result};

impl GemmOps for CudaBackend {
    fn gemm(&self, g: &Gemm, a: &Tensor, b: &Tensor, c: &mut Tensor) -> Result<()> {
        g.validate(a.numel(), b.numel(), c.numel())?;
        want_dtype("gemm", "a", a, DType::F32)?;
        want_dtype("gemm", "b", b, DType::F32)?;
        want_dtype("gemm", "c", c, DType::F32)?;
        if g.m == 0 || g.n == 0 || g.batch == 0 {
            return Ok(());
        }
        for (name, v) in [
            ("m", g.m),
            ("n", g.n),
            ("k", g.k),
            ("lda", g.lda),
            ("ldb", g.ldb),
            ("ldc", g.ldc),
            ("batch", g.batch),
        ] {
            if v > i32::MAX as usize {
                return Err(Error::shape(
                    "gemm",
                    format!("{name} = {v} exceeds cuBLAS's int range"),
                ));
            }
        }
        // Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap
        // the operands; each row-major buffer read column-major is its transpose.
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        let (a16, b16);
        let (pa, pb, in_type, elem, compute) = match g.precision {
            Precision::F32 | Precision::Tf32 => (
                self.ptr("gemm", "a", a, DType::F32)?,
                self.ptr("gemm", "b", b, DType::F32)?,
                cudaDataType::CUDA_R_32F,
                4u64,
                if g.precision == Precision::Tf32 {
                    cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
                } else {
                    cublasComputeType_t::CUBLAS_COMPUTE_32F
                },
            ),
            Precision::Bf16 => {
                // Converted once per contents: a weight, or an activation
                // used by the forward and again by the backward, is cast once.
                a16 = self.bf16_copy_of(a)?;
                b16 = self.bf16_copy_of(b)?;
                (
                    self.ptr("gemm", "a", &a16, DType::Bf16)?,
                    self.ptr("gemm", "b", &b16, DType::Bf16)?,
                    cudaDataType::CUDA_R_16BF,
                    2u64,
                    cublasComputeType_t::CUBLAS_COMPUTE_32F,
                )
            }
        };
        let pc = self.ptr_mut("gemm", "c", c, DType::F32)?;
        // With k = 0 nothing of A or B is read (C = beta·C), but their packed
        // leading dimension can be 0, which cuBLAS rejects (ld < max(1, rows)):
        // pass the smallest value it accepts instead.
        let (lda, ldb) = if g.k == 0 {
            (
                g.lda.max(if g.trans_a { g.m } else { 1 }).max(1),
                g.ldb.max(if g.trans_b { 1 } else { g.n }).max(1),
            )
        } else {
            (g.lda, g.ldb)
        };
        Counts::bump(&self.counts.library_calls);
        self.count_kernel(match g.precision {
            Precision::F32 => "cublas gemm f32",
            Precision::Tf32 => "cublas gemm tf32",
            Precision::Bf16 => "cublas gemm bf16",
        });
        // cuBLAS runs in the calling thread's current context.
        self.ctx
            .bind_to_thread()
            .map_err(|e| Error::cuda("cuCtxSetCurrent", e))?;
        let alpha = g.alpha;
        let beta = g.beta;
        // SAFETY: validate() checked every matrix of the batch lies inside its
        // buffer; pointers are live device buffers of the stated types.
        unsafe {
            cudarc::cublas::result::gemm_strided_batched_ex(
                *self.blas.handle(),
                op(g.trans_b),
                op(g.trans_a),
                g.n as i32,
                g.m as i32,
                g.k as i32,
                &alpha as *const f32 as *const _,
                (pb + g.offset_b as u64 * elem) as *const _,
                in_type,
                ldb as i32,
                g.stride_b as i64,
                (pa + g.offset_a as u64 * elem) as *const _,
                in_type,
                lda as i32,
                g.stride_a as i64,
                &beta as *const f32 as *const _,
                (pc + g.offset_c as u64 * 4) as *mut _,
                cudaDataType::CUDA_R_32F,
                g.ldc as i32,
                g.stride_c as i64,
                g.batch as i32,
                compute,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| {
            Error::cuda(
                format!(
                    "cublasGemmStridedBatchedEx {}x{}x{} batch {}",
                    g.m, g.n, g.k, g.batch
                ),
                e,
            )
        })
    }
}
