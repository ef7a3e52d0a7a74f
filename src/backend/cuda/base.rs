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

use super::*;

/// Threads per block of every 1-D, warp-per-row and compression kernel (`TPB`
/// in kernels/topk.cu, whose launch bounds and tiles assume it).
pub(crate) const BLOCK: u32 = 256;
/// Rows per block of the warp-per-row kernels (one warp per row).
pub(crate) const ROWS_PER_BLOCK: u64 = (BLOCK / 32) as u64;
/// Largest grid.y / grid.z of a launch.
pub(crate) const MAX_GRID_Y: usize = 65_535;
/// Largest grid.x we ever ask for.
pub(crate) const MAX_GRID_X: usize = i32::MAX as usize;
/// Fixed row chunking of the column reductions (col_sum, LayerNorm's
/// dgamma/dbeta): a function of the row count only, so the summation order
/// is the same on every run and every device. At most 256 chunks of at least
/// 64 rows. Returns (rows per chunk, chunks).
pub(crate) fn col_chunks(rows: usize) -> (usize, usize) {
    let rpc = rows.div_ceil(256).max(64);
    (rpc, rows.div_ceil(rpc))
}

/// An element type of device storage, for [`CudaBackend::upload`] and
/// [`CudaBackend::download`].
pub(crate) trait CudaElem: cudarc::driver::DeviceRepr + Copy + Default + Unpin {
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

/// Blocks of `sum_squares_f64` (kernels/reduce.cu) over `n` elements: a
/// function of `n` only, so the partials are the same on every run; the
/// many-tensor norm of ops/grads splits each tensor the same way, which
/// makes its result the per-tensor sums'.
pub(crate) fn sum_squares_blocks(n: usize) -> usize {
    n.div_ceil(4096).clamp(1, 1024)
}

pub(crate) fn too_large(op: &str, what: &str, v: usize, max: usize) -> Error {
    Error::shape(op, format!("{what} = {v} exceeds the kernel limit {max}"))
}

impl CudaBackend {
    pub(crate) fn new_tensor(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let s = self.alloc_storage(n, dtype)?;
        Tensor::from_storage(shape, Storage::Cuda(s))
    }

    /// A device tensor of `shape` holding `data` (one implementation for
    /// every element type).
    pub(crate) fn upload<T: CudaElem>(
        &self,
        op: &str,
        data: &[T],
        shape: &[usize],
    ) -> Result<Tensor> {
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
    pub(crate) fn download<T: CudaElem>(&self, op: &str, t: &Tensor) -> Result<Vec<T>> {
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
    pub(crate) fn to_bf16_copy(&self, t: &Tensor) -> Result<Tensor> {
        let mut out = self.new_tensor(t.shape(), DType::Bf16)?;
        self.cast(t, &mut out)?;
        Ok(out)
    }
}

impl CudaBackend {
    /// A 1-D grid-stride launch over `items` work items: 256-thread blocks,
    /// at most 32 blocks per multiprocessor (the kernels loop, so the grid
    /// never changes a result).
    pub(crate) fn stride_cfg(&self, items: usize) -> LaunchConfig {
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
    pub(crate) fn rows_cfg(&self, rows: usize) -> LaunchConfig {
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
    pub(crate) fn rows_2d_cfg(units: usize, rows: usize) -> LaunchConfig {
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
    pub(crate) fn col_cfg(&self, op: &str, units: usize, chunks: usize) -> Result<LaunchConfig> {
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
    pub(crate) fn scratch(&self, n: usize, dtype: DType) -> Result<CudaStorage> {
        self.alloc_storage(n, dtype)
    }

    /// Elementwise `kernel(a, out, n)` with `out` the length of `a`.
    pub(crate) fn unary(
        &self,
        op: &str,
        kernel: &'static str,
        x: &Tensor,
        y: &mut Tensor,
    ) -> Result<()> {
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
    pub(crate) fn binary(
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
}

impl BackendCore for CudaBackend {
    fn kind(&self) -> DeviceKind {
        DeviceKind::Cuda
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn engine_counters(&self) -> Option<EngineCounters> {
        Some(self.counts.snapshot())
    }

    fn release_cached(&self) -> usize {
        self.release_pool()
    }

    fn launches_by_kernel(&self) -> Vec<(String, u64)> {
        let m = self.by_kernel.lock().map(|m| m.clone()).unwrap_or_default();
        m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    fn empty(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        // Outputs that are fully overwritten skip the memset.
        self.new_tensor(shape, dtype)
    }

    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let mut t = self.new_tensor(shape, dtype)?;
        if let Storage::Cuda(s) = t.storage_mut() {
            let r = match &mut *s.data {
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
        let mut t = self.upload("from_i32", data, shape)?;
        // Remembered so that gather / scatter check ids without a round trip.
        if let (Storage::Cuda(s), Some(lo), Some(hi)) = (
            t.storage_mut(),
            data.iter().min().copied(),
            data.iter().max().copied(),
        ) {
            s.i32_range = Some((lo, hi));
        }
        Ok(t)
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
        d.i32_range = s.i32_range;
        d.touch();
        let r = match (&*s.data, &mut *d.data) {
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
}

// ---- helpers of the compression launchers ----

pub(crate) fn cfg(grid: (u32, u32, u32), block: u32, smem: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (block, 1, 1),
        shared_mem_bytes: smem,
    }
}

/// An uninitialised device tensor.
pub(crate) fn empty(be: &CudaBackend, shape: &[usize], dtype: DType) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    Tensor::from_storage(shape, Storage::Cuda(be.alloc_storage(n, dtype)?))
}

/// Makes the backend's context current on this thread (the raw driver calls
/// below need it; cudarc's safe calls do this themselves).
pub(crate) fn bind(be: &CudaBackend) -> Result<()> {
    be.ctx
        .bind_to_thread()
        .map_err(|e| Error::cuda("cuCtxSetCurrent", e))
}

pub(crate) fn dtod(be: &CudaBackend, dst: u64, src: u64, bytes: usize) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    bind(be)?;
    // SAFETY: callers pass ranges inside live buffers.
    unsafe { cudarc::driver::result::memcpy_dtod_async(dst, src, bytes, be.stream.cu_stream()) }
        .map_err(|e| Error::cuda("cuMemcpyDtoDAsync", e))
}

/// Reads `n` u64 values at a device address (waits for the stream).
pub(crate) fn read_u64s(be: &CudaBackend, src: u64, n: usize) -> Result<Vec<u64>> {
    let mut out = vec![0u64; n];
    bind(be)?;
    // SAFETY: `src` holds n u64 values; the stream is synchronised before use.
    unsafe { cudarc::driver::result::memcpy_dtoh_async(&mut out[..], src, be.stream.cu_stream()) }
        .map_err(|e| Error::cuda("cuMemcpyDtoHAsync", e))?;
    be.synchronize()?;
    Ok(out)
}

/// Device u64 values (stored in an I32 tensor of twice the length).
pub(crate) fn upload_u64(be: &CudaBackend, data: &[u64]) -> Result<Tensor> {
    let words: &[i32] = bytemuck::cast_slice(data);
    be.from_i32(words, &[words.len()])
}

/// Overwrites the first `data.len()` elements of an F32 device tensor.
pub(crate) fn write_f32(be: &CudaBackend, t: &mut Tensor, data: &[f32]) -> Result<()> {
    if data.len() > t.numel() {
        return Err(Error::shape(
            "write_f32",
            format!("{} values for {} elements", data.len(), t.numel()),
        ));
    }
    if data.is_empty() {
        return Ok(());
    }
    let stream = be.stream.clone();
    match t.storage_mut() {
        Storage::Cuda(s) => {
            s.touch();
            match &mut *s.data {
                CudaData::F32(x) => stream
                    .memcpy_htod(data, &mut x.slice_mut(0..data.len()))
                    .map_err(|e| Error::cuda("cuMemcpyHtoD", e)),
                _ => Err(Error::shape("write_f32", "not an F32 device tensor")),
            }
        }
        _ => Err(Error::shape("write_f32", "not an F32 device tensor")),
    }
}

pub(crate) fn opt_ptr_mut(
    be: &CudaBackend,
    op: &str,
    name: &str,
    t: Option<&mut Tensor>,
    n: usize,
) -> Result<u64> {
    match t {
        Some(t) => {
            check_len(op, name, t.numel(), n)?;
            be.ptr_mut(op, name, t, DType::F32)
        }
        None => Ok(0),
    }
}
