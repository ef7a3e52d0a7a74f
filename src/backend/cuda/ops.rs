//! The Backend implementation for CUDA: memory, cuBLAS products and the
//! kernels of `kernels/*.cu`. The compression kernels are in `compress.rs`.
#![allow(unused_variables)]

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::driver::{DevicePtr, DevicePtrMut};

use super::*;

fn todo(op: &str) -> Error {
    Error::cuda(op, "not implemented yet")
}

impl CudaBackend {
    fn new_tensor(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let s = self.alloc_storage(n, dtype)?;
        Tensor::from_storage(shape, Storage::Cuda(s))
    }

    /// A bf16 copy of an f32 tensor, for bf16 products.
    fn to_bf16_copy(&self, t: &Tensor) -> Result<Tensor> {
        let mut out = self.new_tensor(t.shape(), DType::Bf16)?;
        self.cast(t, &mut out)?;
        Ok(out)
    }
}

impl Backend for CudaBackend {
    fn kind(&self) -> DeviceKind {
        DeviceKind::Cuda
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let mut t = self.new_tensor(shape, dtype)?;
        if let Storage::Cuda(s) = t.storage_mut() {
            let r = match &mut s.data {
                CudaData::F32(x) => self.stream.memset_zeros(x),
                CudaData::Bf16(x) => self.stream.memset_zeros(x),
                CudaData::U8(x) => self.stream.memset_zeros(x),
                CudaData::I32(x) => self.stream.memset_zeros(x),
            };
            r.map_err(|e| Error::cuda("cuMemsetD8Async", e))?;
        }
        Ok(t)
    }

    fn from_f32(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        let mut t = self.new_tensor(shape, DType::F32)?;
        if data.len() != t.numel() {
            return Err(Error::shape(
                "from_f32",
                format!("{} values for shape {shape:?}", data.len()),
            ));
        }
        if let Storage::Cuda(CudaStorage {
            data: CudaData::F32(x),
            ..
        }) = t.storage_mut()
        {
            if !data.is_empty() {
                let mut view = x.slice_mut(0..data.len());
                self.stream
                    .memcpy_htod(data, &mut view)
                    .map_err(|e| Error::cuda("cuMemcpyHtoD", e))?;
            }
        }
        Ok(t)
    }

    fn from_u8(&self, data: &[u8], shape: &[usize]) -> Result<Tensor> {
        let mut t = self.new_tensor(shape, DType::U8)?;
        if data.len() != t.numel() {
            return Err(Error::shape(
                "from_u8",
                format!("{} values for shape {shape:?}", data.len()),
            ));
        }
        if let Storage::Cuda(CudaStorage {
            data: CudaData::U8(x),
            ..
        }) = t.storage_mut()
        {
            if !data.is_empty() {
                let mut view = x.slice_mut(0..data.len());
                self.stream
                    .memcpy_htod(data, &mut view)
                    .map_err(|e| Error::cuda("cuMemcpyHtoD", e))?;
            }
        }
        Ok(t)
    }

    fn from_i32(&self, data: &[i32], shape: &[usize]) -> Result<Tensor> {
        let mut t = self.new_tensor(shape, DType::I32)?;
        if data.len() != t.numel() {
            return Err(Error::shape(
                "from_i32",
                format!("{} values for shape {shape:?}", data.len()),
            ));
        }
        if let Storage::Cuda(CudaStorage {
            data: CudaData::I32(x),
            ..
        }) = t.storage_mut()
        {
            if !data.is_empty() {
                let mut view = x.slice_mut(0..data.len());
                self.stream
                    .memcpy_htod(data, &mut view)
                    .map_err(|e| Error::cuda("cuMemcpyHtoD", e))?;
            }
        }
        Ok(t)
    }

    fn to_f32(&self, t: &Tensor) -> Result<Vec<f32>> {
        let s = self.storage("to_f32", "tensor", t)?;
        let n = s.len;
        match &s.data {
            CudaData::F32(x) => {
                let mut out = vec![0.0f32; n];
                if n > 0 {
                    self.stream
                        .memcpy_dtoh(&x.slice(0..n), &mut out)
                        .map_err(|e| Error::cuda("cuMemcpyDtoH", e))?;
                }
                self.synchronize()?;
                Ok(out)
            }
            CudaData::Bf16(x) => {
                let mut out = vec![bf16::ZERO; n];
                if n > 0 {
                    self.stream
                        .memcpy_dtoh(&x.slice(0..n), &mut out)
                        .map_err(|e| Error::cuda("cuMemcpyDtoH", e))?;
                }
                self.synchronize()?;
                Ok(out.iter().map(|v| v.to_f32()).collect())
            }
            _ => Err(Error::shape("to_f32", format!("tensor is {:?}", s.dtype()))),
        }
    }

    fn to_u8(&self, t: &Tensor) -> Result<Vec<u8>> {
        let s = self.storage("to_u8", "tensor", t)?;
        let CudaData::U8(x) = &s.data else {
            return Err(Error::shape("to_u8", format!("tensor is {:?}", s.dtype())));
        };
        let mut out = vec![0u8; s.len];
        if s.len > 0 {
            self.stream
                .memcpy_dtoh(&x.slice(0..s.len), &mut out)
                .map_err(|e| Error::cuda("cuMemcpyDtoH", e))?;
        }
        self.synchronize()?;
        Ok(out)
    }

    fn to_i32(&self, t: &Tensor) -> Result<Vec<i32>> {
        let s = self.storage("to_i32", "tensor", t)?;
        let CudaData::I32(x) = &s.data else {
            return Err(Error::shape("to_i32", format!("tensor is {:?}", s.dtype())));
        };
        let mut out = vec![0i32; s.len];
        if s.len > 0 {
            self.stream
                .memcpy_dtoh(&x.slice(0..s.len), &mut out)
                .map_err(|e| Error::cuda("cuMemcpyDtoH", e))?;
        }
        self.synchronize()?;
        Ok(out)
    }

    fn copy(&self, src: &Tensor, dst: &mut Tensor) -> Result<()> {
        same_numel("copy", &[("src", src), ("dst", dst)])?;
        if src.dtype() != dst.dtype() {
            return Err(Error::shape(
                "copy",
                format!("dtype {:?} -> {:?}", src.dtype(), dst.dtype()),
            ));
        }
        let n = src.numel();
        if n == 0 {
            return Ok(());
        }
        let s = self.storage("copy", "src", src)?;
        let stream = self.stream.clone();
        let Storage::Cuda(d) = dst.storage_mut() else {
            return Err(Error::shape("copy", "dst is on the CPU"));
        };
        let r = match (&s.data, &mut d.data) {
            (CudaData::F32(a), CudaData::F32(b)) => {
                stream.memcpy_dtod(&a.slice(0..n), &mut b.slice_mut(0..n))
            }
            (CudaData::Bf16(a), CudaData::Bf16(b)) => {
                stream.memcpy_dtod(&a.slice(0..n), &mut b.slice_mut(0..n))
            }
            (CudaData::U8(a), CudaData::U8(b)) => {
                stream.memcpy_dtod(&a.slice(0..n), &mut b.slice_mut(0..n))
            }
            (CudaData::I32(a), CudaData::I32(b)) => {
                stream.memcpy_dtod(&a.slice(0..n), &mut b.slice_mut(0..n))
            }
            _ => unreachable!("dtypes checked above"),
        };
        r.map_err(|e| Error::cuda("cuMemcpyDtoD", e))
    }

    fn fill(&self, t: &mut Tensor, value: f32) -> Result<()> {
        Err(todo("fill"))
    }

    fn cast(&self, src: &Tensor, dst: &mut Tensor) -> Result<()> {
        Err(todo("cast"))
    }

    fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| Error::cuda("cuStreamSynchronize", e))
    }

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
                a16 = self.to_bf16_copy(a)?;
                b16 = self.to_bf16_copy(b)?;
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
                g.ldb as i32,
                g.stride_b as i64,
                (pa + g.offset_a as u64 * elem) as *const _,
                in_type,
                g.lda as i32,
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

    fn axpby(&self, alpha: f32, x: &Tensor, beta: f32, y: &mut Tensor) -> Result<()> {
        Err(todo("axpby"))
    }
    fn scale(&self, t: &mut Tensor, alpha: f32) -> Result<()> {
        Err(todo("scale"))
    }
    fn mul(&self, a: &Tensor, b: &Tensor, out: &mut Tensor) -> Result<()> {
        Err(todo("mul"))
    }
    fn mul_mask(&self, x: &Tensor, mask: &Tensor, out: &mut Tensor) -> Result<()> {
        Err(todo("mul_mask"))
    }
    fn add_row_bias(&self, y: &mut Tensor, bias: &Tensor) -> Result<()> {
        Err(todo("add_row_bias"))
    }
    fn col_sum(&self, x: &Tensor, out: &mut Tensor, accumulate: bool) -> Result<()> {
        Err(todo("col_sum"))
    }
    fn gelu(&self, x: &Tensor, y: &mut Tensor) -> Result<()> {
        Err(todo("gelu"))
    }
    fn gelu_backward(&self, x: &Tensor, dy: &Tensor, dx: &mut Tensor) -> Result<()> {
        Err(todo("gelu_backward"))
    }
    fn tanh(&self, x: &Tensor, y: &mut Tensor) -> Result<()> {
        Err(todo("tanh"))
    }
    fn tanh_backward(&self, y: &Tensor, dy: &Tensor, dx: &mut Tensor) -> Result<()> {
        Err(todo("tanh_backward"))
    }
    fn dropout(&self, x: &Tensor, y: &mut Tensor, p: f32, seed: u64, stream: u64) -> Result<()> {
        Err(todo("dropout"))
    }
    fn layer_norm(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f32,
        y: &mut Tensor,
        mean: &mut Tensor,
        rstd: &mut Tensor,
    ) -> Result<()> {
        Err(todo("layer_norm"))
    }
    fn layer_norm_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        gamma: &Tensor,
        mean: &Tensor,
        rstd: &Tensor,
        dx: &mut Tensor,
        dgamma: &mut Tensor,
        dbeta: &mut Tensor,
    ) -> Result<()> {
        Err(todo("layer_norm_backward"))
    }
    fn split_heads(
        &self,
        x: &Tensor,
        out: &mut Tensor,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<()> {
        Err(todo("split_heads"))
    }
    fn merge_heads(
        &self,
        x: &Tensor,
        out: &mut Tensor,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<()> {
        Err(todo("merge_heads"))
    }
    fn attention_softmax(
        &self,
        scores: &mut Tensor,
        key_mask: &Tensor,
        heads: usize,
        scale: f32,
    ) -> Result<()> {
        Err(todo("attention_softmax"))
    }
    fn softmax_backward(&self, probs: &Tensor, dprobs: &mut Tensor, scale: f32) -> Result<()> {
        Err(todo("softmax_backward"))
    }
    fn gather_rows(
        &self,
        table: &Tensor,
        ids: &Tensor,
        out: &mut Tensor,
        accumulate: bool,
    ) -> Result<()> {
        Err(todo("gather_rows"))
    }
    fn scatter_add_rows(&self, d: &Tensor, ids: &Tensor, table_grad: &mut Tensor) -> Result<()> {
        Err(todo("scatter_add_rows"))
    }
    fn copy_rows(&self, src: &Tensor, dst: &mut Tensor, spec: &RowCopy) -> Result<()> {
        Err(todo("copy_rows"))
    }
    fn sum_squares(&self, x: &Tensor) -> Result<f64> {
        Err(todo("sum_squares"))
    }
    fn adamw(
        &self,
        p: &mut Tensor,
        g: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        hp: &AdamWStep,
    ) -> Result<()> {
        Err(todo("adamw"))
    }

    fn movement_grads(
        &self,
        w: &Tensor,
        grad_wprime: &Tensor,
        mask: &Tensor,
        grad_w: &mut Tensor,
        scores: &mut Tensor,
        rule: ScoreRule,
    ) -> Result<()> {
        compress::movement_grads(self, w, grad_wprime, mask, grad_w, scores, rule)
    }
    fn losparse_importance(
        &self,
        s: &Tensor,
        grad_s: &Tensor,
        ipt: &mut Tensor,
        ibar: &mut Tensor,
        ubar: Option<&mut Tensor>,
        step: &ImportanceStep,
    ) -> Result<()> {
        compress::losparse_importance(self, s, grad_s, ipt, ibar, ubar, step)
    }
    fn adamw_with_importance(
        &self,
        s: &mut Tensor,
        grad_s: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        hp: &AdamWStep,
        ipt: &mut Tensor,
        ibar: &mut Tensor,
        ubar: Option<&mut Tensor>,
        step: &ImportanceStep,
    ) -> Result<()> {
        compress::adamw_with_importance(self, s, grad_s, m, v, hp, ipt, ibar, ubar, step)
    }
    fn topk_threshold(
        &self,
        scores: &[&Tensor],
        k: usize,
        rule: TopkRule,
        scope: TopkScope,
        abs: bool,
    ) -> Result<TopkThreshold> {
        compress::topk_threshold(self, scores, k, rule, scope, abs)
    }
    fn topk_apply(
        &self,
        scores: &[&Tensor],
        th: &TopkThreshold,
        masks: &mut [&mut Tensor],
        apply: &mut [&mut Tensor],
    ) -> Result<usize> {
        compress::topk_apply(self, scores, th, masks, apply)
    }
    fn sigmoid_mask(
        &self,
        scores: &Tensor,
        tau: f32,
        mask: &mut Tensor,
        dscores: Option<&mut Tensor>,
        l1_grad_coef: f32,
    ) -> Result<usize> {
        compress::sigmoid_mask(self, scores, tau, mask, dscores, l1_grad_coef)
    }
    fn weighted_svd(
        &self,
        problems: &[WeightedSvdProblem<'_>],
        opts: &WeightedSvdOptions,
    ) -> Result<Vec<WeightedSvdResult>> {
        compress::weighted_svd(self, problems, opts)
    }
    fn lowrank_sparse_forward(
        &self,
        x: &Tensor,
        u: &Tensor,
        v: &Tensor,
        s: Option<&Tensor>,
        mask: Option<&Tensor>,
        bias: Option<&Tensor>,
        w_eff: &mut Tensor,
        y: &mut Tensor,
        precision: Precision,
    ) -> Result<()> {
        compress::lowrank_sparse_forward(self, x, u, v, s, mask, bias, w_eff, y, precision)
    }
    fn lowrank_sparse_backward(
        &self,
        x: &Tensor,
        u: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        w_eff: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
        du: &mut Tensor,
        dv: &mut Tensor,
        ds: Option<&mut Tensor>,
        db: Option<&mut Tensor>,
        dw_scratch: &mut Tensor,
        precision: Precision,
    ) -> Result<()> {
        compress::lowrank_sparse_backward(
            self, x, u, v, mask, w_eff, dy, dx, du, dv, ds, db, dw_scratch, precision,
        )
    }
}
