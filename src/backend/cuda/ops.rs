//! The Backend implementation for CUDA: memory, cuBLAS products and the
//! kernels of `kernels/*.cu`. The compression kernels are in `compress.rs`.
//!
//! Every operation validates dtypes and shapes on the host exactly as the CPU
//! reference does (same `Error::shape(op, ..)` style) before anything is
//! queued, so no kernel is launched with sizes that do not fit its buffers.
//! Launch shapes:
//! - elementwise: 1-D grid-stride, 256 threads, vectorised (16-byte) loops
//!   with a scalar tail; the grid never changes a result;
//! - row kernels (LayerNorm, softmax): one warp per row, 8 rows per block;
//! - column reductions: block (32, 8) over (columns, row lanes) and a grid of
//!   fixed row chunks (a function of the shape only), then an in-order finalize;
//! - sum of squares: f64 block partials over a grid that depends only on n,
//!   added on the host in order.

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::driver::DevicePtrMut;

use super::*;
use crate::backend::cpu::check_len;

/// Threads per block of the 1-D and warp-per-row kernels.
const BLOCK: u32 = 256;
/// Rows per block of the warp-per-row kernels (one warp per row).
const ROWS_PER_BLOCK: u64 = (BLOCK / 32) as u64;
/// Largest grid.y / grid.z of a launch.
const MAX_GRID_Y: usize = 65_535;
/// Largest grid.x we ever ask for.
const MAX_GRID_X: usize = i32::MAX as usize;
/// scatter_add_rows ranks ids in tiles of this many (kernels/embedding.cu RANK_TILE).
const RANK_TILE: usize = 1024;
/// Positions per piece of scatter_add_rows' segmented sums (at least).
const SCATTER_PIECE: usize = 32;

/// Fixed row chunking of the column reductions (col_sum, LayerNorm's
/// dgamma/dbeta): a function of the row count only, so the summation order
/// is the same on every run and every device. At most 256 chunks of at least
/// 64 rows. Returns (rows per chunk, chunks).
fn col_chunks(rows: usize) -> (usize, usize) {
    let rpc = rows.div_ceil(256).max(64);
    (rpc, rows.div_ceil(rpc))
}

/// Picks the register-cached softmax variant (`S % 4 == 0`, `S <= 1024`) or the generic one.
fn softmax_variant(s: usize, fwd: bool) -> &'static str {
    let v = if s % 4 != 0 || s > 1024 {
        0
    } else if s <= 128 {
        1
    } else if s <= 256 {
        2
    } else if s <= 512 {
        4
    } else {
        8
    };
    match (fwd, v) {
        (true, 1) => "softmax_fwd_v1",
        (true, 2) => "softmax_fwd_v2",
        (true, 4) => "softmax_fwd_v4",
        (true, 8) => "softmax_fwd_v8",
        (true, _) => "softmax_fwd_generic",
        (false, 1) => "softmax_bwd_v1",
        (false, 2) => "softmax_bwd_v2",
        (false, 4) => "softmax_bwd_v4",
        (false, 8) => "softmax_bwd_v8",
        (false, _) => "softmax_bwd_generic",
    }
}

/// An element type of device storage, for [`CudaBackend::upload`] and
/// [`CudaBackend::download`].
trait CudaElem: cudarc::driver::DeviceRepr + Copy + Default + Unpin {
    const DTYPE: DType;
    fn slice(d: &CudaData) -> Option<&CudaSlice<Self>>;
    fn slice_mut(d: &mut CudaData) -> Option<&mut CudaSlice<Self>>;
}

macro_rules! cuda_elem {
    ($t:ty, $variant:ident) => {
        impl CudaElem for $t {
            const DTYPE: DType = DType::$variant;
            fn slice(d: &CudaData) -> Option<&CudaSlice<Self>> {
                match d {
                    CudaData::$variant(x) => Some(x),
                    _ => None,
                }
            }
            fn slice_mut(d: &mut CudaData) -> Option<&mut CudaSlice<Self>> {
                match d {
                    CudaData::$variant(x) => Some(x),
                    _ => None,
                }
            }
        }
    };
}
cuda_elem!(f32, F32);
cuda_elem!(bf16, Bf16);
cuda_elem!(u8, U8);
cuda_elem!(i32, I32);

fn too_large(op: &str, what: &str, v: usize, max: usize) -> Error {
    Error::shape(op, format!("{what} = {v} exceeds the kernel limit {max}"))
}

impl CudaBackend {
    fn new_tensor(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let s = self.alloc_storage(n, dtype)?;
        Tensor::from_storage(shape, Storage::Cuda(s))
    }

    /// A device tensor of `shape` holding `data` (one implementation for
    /// every element type).
    fn upload<T: CudaElem>(&self, op: &str, data: &[T], shape: &[usize]) -> Result<Tensor> {
        let mut t = self.new_tensor(shape, T::DTYPE)?;
        if data.len() != t.numel() {
            return Err(Error::shape(
                op,
                format!("{} values for shape {shape:?}", data.len()),
            ));
        }
        if let Storage::Cuda(s) = t.storage_mut() {
            if let Some(x) = T::slice_mut(&mut s.data) {
                if !data.is_empty() {
                    let mut view = x.slice_mut(0..data.len());
                    self.stream
                        .memcpy_htod(data, &mut view)
                        .map_err(|e| Error::cuda("cuMemcpyHtoD", e))?;
                }
            }
        }
        Ok(t)
    }

    /// The elements of a device tensor of type `T` (waits for the stream).
    fn download<T: CudaElem>(&self, op: &str, t: &Tensor) -> Result<Vec<T>> {
        let s = self.storage(op, "tensor", t)?;
        let Some(x) = T::slice(&s.data) else {
            return Err(Error::shape(op, format!("tensor is {:?}", s.dtype())));
        };
        let mut out = vec![T::default(); s.len];
        if s.len > 0 {
            self.stream
                .memcpy_dtoh(&x.slice(0..s.len), &mut out)
                .map_err(|e| Error::cuda("cuMemcpyDtoH", e))?;
        }
        self.synchronize()?;
        Ok(out)
    }

    /// A bf16 copy of an f32 tensor, for bf16 products.
    fn to_bf16_copy(&self, t: &Tensor) -> Result<Tensor> {
        let mut out = self.new_tensor(t.shape(), DType::Bf16)?;
        self.cast(t, &mut out)?;
        Ok(out)
    }
}

impl CudaBackend {
    /// A 1-D grid-stride launch over `items` work items: 256-thread blocks,
    /// at most 32 blocks per multiprocessor (the kernels loop, so the grid
    /// never changes a result).
    fn stride_cfg(&self, items: usize) -> LaunchConfig {
        let cap = self.sm_count.max(1) as u64 * 32;
        let blocks = (items as u64).div_ceil(BLOCK as u64).clamp(1, cap) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Warp-per-row kernels: 8 rows per 256-thread block (they grid-stride
    /// over rows beyond 2^20 blocks).
    fn rows_cfg(&self, rows: usize) -> LaunchConfig {
        let blocks = (rows as u64).div_ceil(ROWS_PER_BLOCK).clamp(1, 1 << 20) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Row-wise 2-D kernels: x over `units` columns (blocks of up to 256
    /// threads, a multiple of 32 that fits short rows), y over `rows` (at
    /// most 65535 blocks; the kernels grid-stride in both directions).
    fn rows_2d_cfg(units: usize, rows: usize) -> LaunchConfig {
        let block_x = units.div_ceil(32).clamp(1, BLOCK as usize / 32) * 32;
        LaunchConfig {
            grid_dim: (
                units.div_ceil(block_x).clamp(1, 1024) as u32,
                rows.clamp(1, MAX_GRID_Y) as u32,
                1,
            ),
            block_dim: (block_x as u32, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Column-reduction kernels: block (32, 8), grid (ceil(units / 32), chunks).
    fn col_cfg(&self, op: &str, units: usize, chunks: usize) -> Result<LaunchConfig> {
        let gx = units.div_ceil(32);
        if gx > MAX_GRID_X {
            return Err(too_large(op, "columns", units, MAX_GRID_X * 32));
        }
        if chunks > MAX_GRID_Y {
            return Err(too_large(op, "row chunks", chunks, MAX_GRID_Y));
        }
        Ok(LaunchConfig {
            grid_dim: (gx.max(1) as u32, chunks.max(1) as u32, 1),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        })
    }

    /// A device scratch buffer (uninitialised; every kernel that reads it
    /// first writes what it reads).
    fn scratch(&self, n: usize, dtype: DType) -> Result<CudaStorage> {
        self.alloc_storage(n, dtype)
    }

    /// Elementwise `kernel(a, out, n)` with `out` the length of `a`.
    fn unary(&self, op: &str, kernel: &'static str, x: &Tensor, y: &mut Tensor) -> Result<()> {
        let px = self.ptr(op, "x", x, DType::F32)?;
        let py = self.ptr_mut(op, "y", y, DType::F32)?;
        let n = x.numel();
        check_len(op, "y", y.numel(), n)?;
        if n == 0 {
            return Ok(());
        }
        self.launch(
            "elementwise",
            kernel,
            self.stride_cfg(n.div_ceil(4)),
            &[KArg::Ptr(px), KArg::Ptr(py), KArg::U64(n as u64)],
        )
    }

    /// Elementwise `kernel(a, b, out, n)`, `b` and `out` the length of `a`.
    #[allow(clippy::too_many_arguments)]
    fn binary(
        &self,
        op: &str,
        kernel: &'static str,
        a_name: &str,
        a: &Tensor,
        b_name: &str,
        b: &Tensor,
        out_name: &str,
        out: &mut Tensor,
    ) -> Result<()> {
        let pa = self.ptr(op, a_name, a, DType::F32)?;
        let pb = self.ptr(op, b_name, b, DType::F32)?;
        let po = self.ptr_mut(op, out_name, out, DType::F32)?;
        let n = a.numel();
        check_len(op, b_name, b.numel(), n)?;
        check_len(op, out_name, out.numel(), n)?;
        if n == 0 {
            return Ok(());
        }
        self.launch(
            "elementwise",
            kernel,
            self.stride_cfg(n.div_ceil(4)),
            &[
                KArg::Ptr(pa),
                KArg::Ptr(pb),
                KArg::Ptr(po),
                KArg::U64(n as u64),
            ],
        )
    }

    /// Checks every id is in `0..rows` on the device (the first bad position
    /// is found with an integer atomicMin), with the CPU's error message.
    /// Reads back one int, so it waits for the queued work.
    fn check_ids(&self, op: &str, ids: &Tensor, rows: usize) -> Result<()> {
        let pi = self.ptr(op, "ids", ids, DType::I32)?;
        let n = ids.numel();
        if n == 0 {
            return Ok(());
        }
        if n > i32::MAX as usize {
            return Err(too_large(op, "number of ids", n, i32::MAX as usize));
        }
        let mut flag = self.from_i32(&[i32::MAX], &[1])?;
        let pf = self.ptr_mut(op, "flag", &mut flag, DType::I32)?;
        self.launch(
            "embedding",
            "check_ids_i32",
            self.stride_cfg(n),
            &[
                KArg::Ptr(pi),
                KArg::U64(n as u64),
                KArg::U64(rows as u64),
                KArg::Ptr(pf),
            ],
        )?;
        let first = self.to_i32(&flag)?.first().copied().unwrap_or(i32::MAX);
        if first == i32::MAX || first < 0 {
            return Ok(());
        }
        let pos = first as usize;
        let bad = self.read_i32_at(ids, pos)?;
        Err(Error::shape(
            op,
            format!("id {bad} at position {pos} is outside the table's {rows} rows"),
        ))
    }

    /// One element of an I32 device tensor.
    fn read_i32_at(&self, t: &Tensor, pos: usize) -> Result<i32> {
        let s = self.storage("read_i32_at", "tensor", t)?;
        let CudaData::I32(x) = &s.data else {
            return Err(Error::shape(
                "read_i32_at",
                format!("tensor is {:?}", s.dtype()),
            ));
        };
        if pos >= s.len {
            return Err(Error::shape(
                "read_i32_at",
                format!("position {pos} of {}", s.len),
            ));
        }
        let mut one = [0i32; 1];
        self.stream
            .memcpy_dtoh(&x.slice(pos..pos + 1), &mut one[..])
            .map_err(|e| Error::cuda("cuMemcpyDtoH", e))?;
        self.synchronize()?;
        Ok(one[0])
    }

    /// `[B·S, H·D] ↔ [B, H, S, D]` (kernels/attention.cu permute_heads_*).
    #[allow(clippy::too_many_arguments)]
    fn permute_heads(
        &self,
        op: &str,
        x: &Tensor,
        out: &mut Tensor,
        b: usize,
        s: usize,
        h: usize,
        split: bool,
    ) -> Result<()> {
        let px = self.ptr(op, "x", x, DType::F32)?;
        let po = self.ptr_mut(op, "out", out, DType::F32)?;
        let n = x.numel();
        check_len(op, "out", out.numel(), n)?;
        let bsh = b.checked_mul(s).and_then(|v| v.checked_mul(h)).unwrap_or(0);
        if bsh == 0 || n % bsh != 0 {
            return Err(Error::shape(
                op,
                format!("{n} elements do not split into B={b}, S={s}, H={h}"),
            ));
        }
        let d = n / bsh;
        if d == 0 {
            return Ok(());
        }
        // Destination row (bi·P + p)·Q + q comes from source row (bi·Q + q)·P + p.
        let (p_dim, q_dim) = if split { (h, s) } else { (s, h) };
        let (kernel, total, dv) = if d % 4 == 0 {
            ("permute_heads_f32x4", n / 4, d / 4)
        } else {
            ("permute_heads_f32", n, d)
        };
        self.launch(
            "attention",
            kernel,
            self.stride_cfg(total),
            &[
                KArg::Ptr(px),
                KArg::Ptr(po),
                KArg::U64(total as u64),
                KArg::U64(p_dim as u64),
                KArg::U64(q_dim as u64),
                KArg::U64(dv as u64),
            ],
        )
    }
}

impl Backend for CudaBackend {
    fn kind(&self) -> DeviceKind {
        DeviceKind::Cuda
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn engine_counters(&self) -> Option<EngineCounters> {
        Some(self.counts.snapshot())
    }

    fn empty(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        // Outputs that are fully overwritten skip the memset.
        self.new_tensor(shape, dtype)
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
        self.upload("from_f32", data, shape)
    }

    fn from_u8(&self, data: &[u8], shape: &[usize]) -> Result<Tensor> {
        self.upload("from_u8", data, shape)
    }

    fn from_i32(&self, data: &[i32], shape: &[usize]) -> Result<Tensor> {
        self.upload("from_i32", data, shape)
    }

    fn to_f32(&self, t: &Tensor) -> Result<Vec<f32>> {
        match t.dtype() {
            DType::Bf16 => Ok(self
                .download::<bf16>("to_f32", t)?
                .iter()
                .map(|v| v.to_f32())
                .collect()),
            _ => self.download("to_f32", t),
        }
    }

    fn to_u8(&self, t: &Tensor) -> Result<Vec<u8>> {
        self.download("to_u8", t)
    }

    fn to_i32(&self, t: &Tensor) -> Result<Vec<i32>> {
        self.download("to_i32", t)
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
        let op = "fill";
        let n = t.numel();
        let dtype = t.dtype();
        // The stored bit pattern, converted on the host exactly as the CPU
        // converts (`as` casts saturate; bf16 rounds to nearest even).
        let (kernel, bits, per_vec) = match dtype {
            DType::F32 => ("fill_u32", value.to_bits(), 4),
            DType::I32 => ("fill_u32", (value as i32) as u32, 4),
            DType::Bf16 => ("fill_u16", bf16::from_f32(value).to_bits() as u32, 8),
            DType::U8 => ("fill_u8", (value as u8) as u32, 16),
        };
        let p = self.ptr_mut(op, "t", t, dtype)?;
        if n == 0 {
            return Ok(());
        }
        self.launch(
            "elementwise",
            kernel,
            self.stride_cfg(n.div_ceil(per_vec)),
            &[KArg::Ptr(p), KArg::U64(n as u64), KArg::U32(bits)],
        )
    }

    fn cast(&self, src: &Tensor, dst: &mut Tensor) -> Result<()> {
        let op = "cast";
        same_numel(op, &[("src", src), ("dst", dst)])?;
        let (sd, dd) = (src.dtype(), dst.dtype());
        let kernel = match (sd, dd) {
            (DType::F32, DType::Bf16) => "cast_f32_bf16",
            (DType::Bf16, DType::F32) => "cast_bf16_f32",
            (DType::U8, DType::F32) => "cast_u8_f32",
            (DType::F32, DType::F32) => return self.copy(src, dst),
            _ => {
                return Err(Error::shape(
                    op,
                    format!("unsupported cast {sd:?} -> {dd:?}"),
                ))
            }
        };
        let ps = self.ptr(op, "src", src, sd)?;
        let pd = self.ptr_mut(op, "dst", dst, dd)?;
        let n = src.numel();
        if n == 0 {
            return Ok(());
        }
        self.launch(
            "elementwise",
            kernel,
            self.stride_cfg(n.div_ceil(4)),
            &[KArg::Ptr(ps), KArg::Ptr(pd), KArg::U64(n as u64)],
        )
    }

    fn synchronize(&self) -> Result<()> {
        super::Counts::bump(&self.counts.syncs);
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
        super::Counts::bump(&self.counts.library_calls);
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

    fn axpby(&self, alpha: f32, x: &Tensor, beta: f32, y: &mut Tensor) -> Result<()> {
        let op = "axpby";
        let px = self.ptr(op, "x", x, DType::F32)?;
        let py = self.ptr_mut(op, "y", y, DType::F32)?;
        let n = x.numel();
        check_len(op, "y", y.numel(), n)?;
        if n == 0 {
            return Ok(());
        }
        self.launch(
            "elementwise",
            "axpby_f32",
            self.stride_cfg(n.div_ceil(4)),
            &[
                KArg::Ptr(px),
                KArg::Ptr(py),
                KArg::U64(n as u64),
                KArg::F32(alpha),
                KArg::F32(beta),
                KArg::U32((beta != 0.0) as u32),
            ],
        )
    }

    fn scale(&self, t: &mut Tensor, alpha: f32) -> Result<()> {
        let pt = self.ptr_mut("scale", "t", t, DType::F32)?;
        let n = t.numel();
        if n == 0 {
            return Ok(());
        }
        self.launch(
            "elementwise",
            "scale_f32",
            self.stride_cfg(n.div_ceil(4)),
            &[KArg::Ptr(pt), KArg::U64(n as u64), KArg::F32(alpha)],
        )
    }

    fn mul(&self, a: &Tensor, b: &Tensor, out: &mut Tensor) -> Result<()> {
        let op = "mul";
        let pa = self.ptr(op, "a", a, DType::F32)?;
        let pb = self.ptr(op, "b", b, DType::F32)?;
        let po = self.ptr_mut(op, "out", out, DType::F32)?;
        let n = a.numel();
        check_len(op, "b", b.numel(), n)?;
        check_len(op, "out", out.numel(), n)?;
        if n == 0 {
            return Ok(());
        }
        self.launch(
            "elementwise",
            "mul_f32",
            self.stride_cfg(n.div_ceil(4)),
            &[
                KArg::Ptr(pa),
                KArg::Ptr(pb),
                KArg::Ptr(po),
                KArg::U64(n as u64),
            ],
        )
    }

    fn mul_mask(&self, x: &Tensor, mask: &Tensor, out: &mut Tensor) -> Result<()> {
        let op = "mul_mask";
        let px = self.ptr(op, "x", x, DType::F32)?;
        let pm = self.ptr(op, "mask", mask, DType::U8)?;
        let po = self.ptr_mut(op, "out", out, DType::F32)?;
        let n = x.numel();
        check_len(op, "mask", mask.numel(), n)?;
        check_len(op, "out", out.numel(), n)?;
        if n == 0 {
            return Ok(());
        }
        self.launch(
            "elementwise",
            "mul_mask_f32",
            self.stride_cfg(n.div_ceil(4)),
            &[
                KArg::Ptr(px),
                KArg::Ptr(pm),
                KArg::Ptr(po),
                KArg::U64(n as u64),
            ],
        )
    }

    fn masked_add(&self, x: &Tensor, mask: Option<&Tensor>, out: &mut Tensor) -> Result<()> {
        let op = "masked_add";
        let px = self.ptr(op, "x", x, DType::F32)?;
        let pm = match mask {
            Some(m) => self.ptr(op, "mask", m, DType::U8)?,
            None => 0,
        };
        let po = self.ptr_mut(op, "out", out, DType::F32)?;
        let n = x.numel();
        if let Some(m) = mask {
            check_len(op, "mask", m.numel(), n)?;
        }
        check_len(op, "out", out.numel(), n)?;
        if n == 0 {
            return Ok(());
        }
        self.launch(
            "elementwise",
            "masked_add_f32",
            self.stride_cfg(n.div_ceil(4)),
            &[
                KArg::Ptr(px),
                KArg::Ptr(pm),
                KArg::Ptr(po),
                KArg::U64(n as u64),
            ],
        )
    }

    fn add_row_bias(&self, y: &mut Tensor, bias: &Tensor) -> Result<()> {
        let op = "add_row_bias";
        let pb = self.ptr(op, "bias", bias, DType::F32)?;
        let py = self.ptr_mut(op, "y", y, DType::F32)?;
        let cols = bias.numel();
        let n = y.numel();
        if cols == 0 || n % cols != 0 {
            return Err(Error::shape(
                op,
                format!("y has {n} elements, not a multiple of {cols}"),
            ));
        }
        if n == 0 {
            return Ok(());
        }
        let rows = n / cols;
        let (kernel, units) = if cols % 4 == 0 {
            ("add_row_bias_f32x4", cols / 4)
        } else {
            ("add_row_bias_f32", cols)
        };
        self.launch(
            "elementwise",
            kernel,
            Self::rows_2d_cfg(units, rows),
            &[
                KArg::Ptr(py),
                KArg::Ptr(pb),
                KArg::U64(rows as u64),
                KArg::U64(units as u64),
            ],
        )
    }

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

    fn gelu(&self, x: &Tensor, y: &mut Tensor) -> Result<()> {
        self.unary("gelu", "gelu_f32", x, y)
    }

    fn gelu_backward(&self, x: &Tensor, dy: &Tensor, dx: &mut Tensor) -> Result<()> {
        self.binary(
            "gelu_backward",
            "gelu_backward_f32",
            "x",
            x,
            "dy",
            dy,
            "dx",
            dx,
        )
    }

    fn tanh(&self, x: &Tensor, y: &mut Tensor) -> Result<()> {
        self.unary("tanh", "tanh_f32", x, y)
    }

    fn tanh_backward(&self, y: &Tensor, dy: &Tensor, dx: &mut Tensor) -> Result<()> {
        self.binary(
            "tanh_backward",
            "tanh_backward_f32",
            "y",
            y,
            "dy",
            dy,
            "dx",
            dx,
        )
    }

    fn dropout(&self, x: &Tensor, y: &mut Tensor, p: f32, seed: u64, stream: u64) -> Result<()> {
        let op = "dropout";
        if !(0.0..1.0).contains(&p) {
            return Err(Error::msg(format!(
                "dropout: probability {p} outside [0, 1)"
            )));
        }
        let px = self.ptr(op, "x", x, DType::F32)?;
        let py = self.ptr_mut(op, "y", y, DType::F32)?;
        let n = x.numel();
        check_len(op, "y", y.numel(), n)?;
        if n == 0 {
            return Ok(());
        }
        if p == 0.0 {
            return self.copy(x, y);
        }
        let scale = 1.0 / (1.0 - p);
        self.launch(
            "elementwise",
            "dropout_f32",
            self.stride_cfg(n.div_ceil(4)),
            &[
                KArg::Ptr(px),
                KArg::Ptr(py),
                KArg::U64(n as u64),
                KArg::F32(p),
                KArg::F32(scale),
                KArg::U64(seed),
                KArg::U64(stream),
            ],
        )
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
        let op = "layer_norm";
        let px = self.ptr(op, "x", x, DType::F32)?;
        let pg = self.ptr(op, "gamma", gamma, DType::F32)?;
        let pb = self.ptr(op, "beta", beta, DType::F32)?;
        let cols = gamma.numel();
        check_len(op, "beta", beta.numel(), cols)?;
        if cols == 0 || x.numel() % cols != 0 {
            return Err(Error::shape(
                op,
                format!("x has {} elements, not a multiple of {cols}", x.numel()),
            ));
        }
        let rows = x.numel() / cols;
        let py = self.ptr_mut(op, "y", y, DType::F32)?;
        check_len(op, "y", y.numel(), x.numel())?;
        let pm = self.ptr_mut(op, "mean", mean, DType::F32)?;
        check_len(op, "mean", mean.numel(), rows)?;
        let pr = self.ptr_mut(op, "rstd", rstd, DType::F32)?;
        check_len(op, "rstd", rstd.numel(), rows)?;
        if rows == 0 {
            return Ok(());
        }
        let ptrs = [
            KArg::Ptr(px),
            KArg::Ptr(pg),
            KArg::Ptr(pb),
            KArg::Ptr(py),
            KArg::Ptr(pm),
            KArg::Ptr(pr),
            KArg::U64(rows as u64),
        ];
        if cols % 4 == 0 && cols <= 1024 {
            let mut args = ptrs.to_vec();
            args.extend([KArg::U32(cols as u32), KArg::F32(eps)]);
            self.launch(
                "layernorm",
                "layer_norm_fwd_f32x4",
                self.rows_cfg(rows),
                &args,
            )
        } else {
            let mut args = ptrs.to_vec();
            args.extend([KArg::U64(cols as u64), KArg::F32(eps)]);
            self.launch(
                "layernorm",
                "layer_norm_fwd_f32",
                self.rows_cfg(rows),
                &args,
            )
        }
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
        let op = "layer_norm_backward";
        let pdy = self.ptr(op, "dy", dy, DType::F32)?;
        let px = self.ptr(op, "x", x, DType::F32)?;
        let pg = self.ptr(op, "gamma", gamma, DType::F32)?;
        let pm = self.ptr(op, "mean", mean, DType::F32)?;
        let pr = self.ptr(op, "rstd", rstd, DType::F32)?;
        let cols = gamma.numel();
        if cols == 0 || x.numel() % cols != 0 {
            return Err(Error::shape(
                op,
                format!("x has {} elements, not a multiple of {cols}", x.numel()),
            ));
        }
        let rows = x.numel() / cols;
        check_len(op, "dy", dy.numel(), x.numel())?;
        check_len(op, "mean", mean.numel(), rows)?;
        check_len(op, "rstd", rstd.numel(), rows)?;
        let pdx = self.ptr_mut(op, "dx", dx, DType::F32)?;
        check_len(op, "dx", dx.numel(), x.numel())?;
        let pdg = self.ptr_mut(op, "dgamma", dgamma, DType::F32)?;
        check_len(op, "dgamma", dgamma.numel(), cols)?;
        let pdb = self.ptr_mut(op, "dbeta", dbeta, DType::F32)?;
        check_len(op, "dbeta", dbeta.numel(), cols)?;
        if rows == 0 {
            return Ok(());
        }
        // dx: one warp per row.
        let ptrs = [
            KArg::Ptr(pdy),
            KArg::Ptr(px),
            KArg::Ptr(pg),
            KArg::Ptr(pm),
            KArg::Ptr(pr),
            KArg::Ptr(pdx),
            KArg::U64(rows as u64),
        ];
        if cols % 4 == 0 && cols <= 1024 {
            let mut args = ptrs.to_vec();
            args.push(KArg::U32(cols as u32));
            self.launch(
                "layernorm",
                "layer_norm_bwd_dx_f32x4",
                self.rows_cfg(rows),
                &args,
            )?;
        } else {
            let mut args = ptrs.to_vec();
            args.push(KArg::U64(cols as u64));
            self.launch(
                "layernorm",
                "layer_norm_bwd_dx_f32",
                self.rows_cfg(rows),
                &args,
            )?;
        }
        // dgamma, dbeta: fixed row chunks, then an in-order finalize.
        let (rpc, chunks) = col_chunks(rows);
        let pgs = self.scratch(chunks * cols, DType::F32)?;
        let pbs = self.scratch(chunks * cols, DType::F32)?;
        let (ppg, ppb) = (self.raw_ptr(&pgs), self.raw_ptr(&pbs));
        let (kernel, units) = if cols % 4 == 0 {
            ("ln_param_partials_f32x4", cols / 4)
        } else {
            ("ln_param_partials_f32", cols)
        };
        self.launch(
            "layernorm",
            kernel,
            self.col_cfg(op, units, chunks)?,
            &[
                KArg::Ptr(pdy),
                KArg::Ptr(px),
                KArg::Ptr(pm),
                KArg::Ptr(pr),
                KArg::Ptr(ppg),
                KArg::Ptr(ppb),
                KArg::U64(rows as u64),
                KArg::U64(units as u64),
                KArg::U64(rpc as u64),
            ],
        )?;
        self.launch(
            "layernorm",
            "ln_param_finalize_f32",
            self.stride_cfg(cols),
            &[
                KArg::Ptr(ppg),
                KArg::Ptr(ppb),
                KArg::Ptr(pdg),
                KArg::Ptr(pdb),
                KArg::U64(cols as u64),
                KArg::U64(chunks as u64),
            ],
        )
    }

    fn split_heads(
        &self,
        x: &Tensor,
        out: &mut Tensor,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<()> {
        self.permute_heads("split_heads", x, out, batch, seq, heads, true)
    }

    fn merge_heads(
        &self,
        x: &Tensor,
        out: &mut Tensor,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<()> {
        self.permute_heads("merge_heads", x, out, batch, seq, heads, false)
    }

    fn attention_softmax(
        &self,
        scores: &mut Tensor,
        key_mask: &Tensor,
        heads: usize,
        scale: f32,
    ) -> Result<()> {
        let op = "attention_softmax";
        let pm = self.ptr(op, "key_mask", key_mask, DType::U8)?;
        let shape = scores.shape().to_vec();
        if shape.len() != 4 || shape[1] != heads || shape[2] != shape[3] {
            return Err(Error::shape(
                op,
                format!("scores must be [B, {heads}, S, S], got {shape:?}"),
            ));
        }
        let (b, s) = (shape[0], shape[2]);
        check_len(op, "key_mask", key_mask.numel(), b * s)?;
        let ps = self.ptr_mut(op, "scores", scores, DType::F32)?;
        let rows = b * heads * s;
        if rows == 0 {
            return Ok(());
        }
        if s > u32::MAX as usize || heads > u32::MAX as usize {
            return Err(too_large(op, "S or heads", s.max(heads), u32::MAX as usize));
        }
        self.launch(
            "attention",
            softmax_variant(s, true),
            self.rows_cfg(rows),
            &[
                KArg::Ptr(ps),
                KArg::Ptr(pm),
                KArg::U64(rows as u64),
                KArg::U32(s as u32),
                KArg::U32(heads as u32),
                KArg::F32(scale),
            ],
        )
    }

    fn softmax_backward(&self, probs: &Tensor, dprobs: &mut Tensor, scale: f32) -> Result<()> {
        let op = "softmax_backward";
        let pp = self.ptr(op, "probs", probs, DType::F32)?;
        let s = *probs.shape().last().unwrap_or(&0);
        let pd = self.ptr_mut(op, "dprobs", dprobs, DType::F32)?;
        check_len(op, "dprobs", dprobs.numel(), probs.numel())?;
        if s == 0 || probs.numel() == 0 {
            return Ok(());
        }
        if s > u32::MAX as usize {
            return Err(too_large(op, "row length", s, u32::MAX as usize));
        }
        let rows = probs.numel() / s;
        self.launch(
            "attention",
            softmax_variant(s, false),
            self.rows_cfg(rows),
            &[
                KArg::Ptr(pp),
                KArg::Ptr(pd),
                KArg::U64(rows as u64),
                KArg::U32(s as u32),
                KArg::F32(scale),
            ],
        )
    }

    fn gather_rows(
        &self,
        table: &Tensor,
        ids: &Tensor,
        out: &mut Tensor,
        accumulate: bool,
    ) -> Result<()> {
        let op = "gather_rows";
        let pt = self.ptr(op, "table", table, DType::F32)?;
        let pi = self.ptr(op, "ids", ids, DType::I32)?;
        let (rows, cols) = table.rows_cols();
        let n = ids.numel();
        let po = self.ptr_mut(op, "out", out, DType::F32)?;
        // Cheap host checks first, then the ids (which waits for the device).
        let want = n
            .checked_mul(cols)
            .ok_or_else(|| too_large(op, "ids × columns", n, usize::MAX / cols.max(1)))?;
        self.check_ids(op, ids, rows)?;
        check_len(op, "out", out.numel(), want)?;
        if want == 0 {
            return Ok(());
        }
        let (kernel, units) = if cols % 4 == 0 {
            ("gather_rows_f32x4", cols / 4)
        } else {
            ("gather_rows_f32", cols)
        };
        self.launch(
            "embedding",
            kernel,
            Self::rows_2d_cfg(units, n),
            &[
                KArg::Ptr(pt),
                KArg::Ptr(pi),
                KArg::Ptr(po),
                KArg::U64(n as u64),
                KArg::U64(units as u64),
                KArg::U64(rows as u64),
                KArg::U32(accumulate as u32),
            ],
        )
    }

    fn scatter_add_rows(&self, d: &Tensor, ids: &Tensor, table_grad: &mut Tensor) -> Result<()> {
        let op = "scatter_add_rows";
        let pd = self.ptr(op, "d", d, DType::F32)?;
        let pi = self.ptr(op, "ids", ids, DType::I32)?;
        let (rows, cols) = table_grad.rows_cols();
        let n = ids.numel();
        let ptg = self.ptr_mut(op, "table_grad", table_grad, DType::F32)?;
        self.check_ids(op, ids, rows)?;
        let want = n
            .checked_mul(cols)
            .ok_or_else(|| too_large(op, "ids × columns", n, usize::MAX / cols.max(1)))?;
        check_len(op, "d", d.numel(), want)?;
        if want == 0 {
            return Ok(());
        }
        let max_ids = MAX_GRID_Y * RANK_TILE;
        if n > max_ids {
            return Err(too_large(op, "number of ids", n, max_ids));
        }
        if cols.div_ceil(BLOCK as usize) > MAX_GRID_X {
            return Err(too_large(op, "columns", cols, MAX_GRID_X));
        }
        // Pieces of the sorted positions: at least 32, and at most 65535 of them.
        let piece = n.div_ceil(MAX_GRID_Y).max(SCATTER_PIECE);
        let pieces = n.div_ceil(piece);
        // 1. rank[i] = position of (ids[i], i) in sorted order; perm / sid.
        let rank = self.zeros(&[n], DType::I32)?;
        let prank = self.ptr(op, "rank", &rank, DType::I32)?;
        let perm = self.scratch(n, DType::I32)?;
        let sid = self.scratch(n, DType::I32)?;
        let (pperm, psid) = (self.raw_ptr(&perm), self.raw_ptr(&sid));
        let rank_cfg = LaunchConfig {
            grid_dim: (n.div_ceil(128) as u32, n.div_ceil(RANK_TILE) as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        self.launch(
            "embedding",
            "scatter_rank_count",
            rank_cfg,
            &[KArg::Ptr(pi), KArg::U32(n as u32), KArg::Ptr(prank)],
        )?;
        self.launch(
            "embedding",
            "scatter_rank_place",
            self.stride_cfg(n),
            &[
                KArg::Ptr(pi),
                KArg::Ptr(prank),
                KArg::U32(n as u32),
                KArg::Ptr(pperm),
                KArg::Ptr(psid),
            ],
        )?;
        // 2. per-piece segment sums; 3. segments crossing pieces.
        let first = self.scratch(pieces * cols, DType::F32)?;
        let last = self.scratch(pieces * cols, DType::F32)?;
        let (pfirst, plast) = (self.raw_ptr(&first), self.raw_ptr(&last));
        let piece_cfg = LaunchConfig {
            grid_dim: (cols.div_ceil(BLOCK as usize) as u32, pieces as u32, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        self.launch(
            "embedding",
            "scatter_pieces_f32",
            piece_cfg,
            &[
                KArg::Ptr(pd),
                KArg::Ptr(pperm),
                KArg::Ptr(psid),
                KArg::Ptr(ptg),
                KArg::Ptr(pfirst),
                KArg::Ptr(plast),
                KArg::U32(n as u32),
                KArg::U64(cols as u64),
                KArg::U32(piece as u32),
            ],
        )?;
        self.launch(
            "embedding",
            "scatter_combine_f32",
            piece_cfg,
            &[
                KArg::Ptr(psid),
                KArg::Ptr(ptg),
                KArg::Ptr(pfirst),
                KArg::Ptr(plast),
                KArg::U32(n as u32),
                KArg::U64(cols as u64),
                KArg::U32(piece as u32),
                KArg::U32(pieces as u32),
            ],
        )
    }

    fn copy_rows(&self, src: &Tensor, dst: &mut Tensor, spec: &RowCopy) -> Result<()> {
        let op = "copy_rows";
        let ps = self.ptr(op, "src", src, DType::F32)?;
        let pd = self.ptr_mut(op, "dst", dst, DType::F32)?;
        if spec.rows == 0 || spec.cols == 0 {
            return Ok(());
        }
        let end = |off: usize, stride: usize| {
            (spec.rows - 1)
                .checked_mul(stride)
                .and_then(|v| v.checked_add(off))
                .and_then(|v| v.checked_add(spec.cols))
        };
        let fits = |e: Option<usize>, len: usize| matches!(e, Some(e) if e <= len);
        if !fits(end(spec.src_offset, spec.src_stride), src.numel())
            || !fits(end(spec.dst_offset, spec.dst_stride), dst.numel())
            || (spec.rows > 1 && spec.dst_stride < spec.cols)
        {
            return Err(Error::shape(
                op,
                format!(
                    "{spec:?} out of bounds (src {}, dst {})",
                    src.numel(),
                    dst.numel()
                ),
            ));
        }
        let aligned = [
            spec.cols,
            spec.src_offset,
            spec.src_stride,
            spec.dst_offset,
            spec.dst_stride,
        ]
        .iter()
        .all(|v| v % 4 == 0);
        let (kernel, q) = if aligned {
            ("copy_rows_f32x4", 4)
        } else {
            ("copy_rows_f32", 1)
        };
        let units = spec.cols / q;
        let cfg = Self::rows_2d_cfg(units, spec.rows);
        self.launch(
            "elementwise",
            kernel,
            cfg,
            &[
                KArg::Ptr(ps),
                KArg::Ptr(pd),
                KArg::U64(spec.rows as u64),
                KArg::U64(units as u64),
                KArg::U64((spec.src_offset / q) as u64),
                KArg::U64((spec.src_stride / q) as u64),
                KArg::U64((spec.dst_offset / q) as u64),
                KArg::U64((spec.dst_stride / q) as u64),
                KArg::U32(spec.accumulate as u32),
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
        let blocks = n.div_ceil(4096).clamp(1, 1024);
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

    fn adamw(
        &self,
        p: &mut Tensor,
        g: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        hp: &AdamWStep,
    ) -> Result<()> {
        let op = "adamw";
        let pg = self.ptr(op, "grad", g, DType::F32)?;
        let n = g.numel();
        let pm = self.ptr_mut(op, "m", m, DType::F32)?;
        check_len(op, "m", m.numel(), n)?;
        let pv = self.ptr_mut(op, "v", v, DType::F32)?;
        check_len(op, "v", v.numel(), n)?;
        let pp = self.ptr_mut(op, "param", p, DType::F32)?;
        check_len(op, "param", p.numel(), n)?;
        if n == 0 {
            return Ok(());
        }
        // The scalars exactly as the CPU computes them (f32).
        let (bc1, bc2) = hp.bias_corrections();
        let step_size = hp.lr / bc1;
        let bc2_sqrt = bc2.sqrt();
        let decay = 1.0 - hp.lr * hp.weight_decay;
        self.launch(
            "optim",
            "adamw_f32",
            self.stride_cfg(n.div_ceil(4)),
            &[
                KArg::Ptr(pp),
                KArg::Ptr(pg),
                KArg::Ptr(pm),
                KArg::Ptr(pv),
                KArg::U64(n as u64),
                KArg::F32(hp.grad_scale),
                KArg::F32(decay),
                KArg::F32(1.0 - hp.beta1),
                KArg::F32(hp.beta2),
                KArg::F32(1.0 - hp.beta2),
                KArg::F32(hp.eps),
                KArg::F32(step_size),
                KArg::F32(bc2_sqrt),
            ],
        )
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_chunks_cover_the_rows() {
        for rows in [
            1usize,
            63,
            64,
            65,
            4096,
            16_384,
            16_385,
            1 << 22,
            10_000_019,
        ] {
            let (rpc, chunks) = col_chunks(rows);
            assert!(rpc >= 64 && (1..=256).contains(&chunks), "{rows}");
            assert!(rpc * chunks >= rows && rpc * (chunks - 1) < rows, "{rows}");
        }
    }

    #[test]
    fn softmax_variants_fit_the_row_length() {
        assert_eq!(softmax_variant(128, true), "softmax_fwd_v1");
        assert_eq!(softmax_variant(132, true), "softmax_fwd_v2");
        assert_eq!(softmax_variant(384, false), "softmax_bwd_v4");
        assert_eq!(softmax_variant(1024, true), "softmax_fwd_v8");
        assert_eq!(softmax_variant(1028, true), "softmax_fwd_generic");
        assert_eq!(softmax_variant(130, false), "softmax_bwd_generic");
    }
}
