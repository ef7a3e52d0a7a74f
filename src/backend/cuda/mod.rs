//! The CUDA backend: cuBLAS for matrix products, the kernels of
//! `kernels/*.cu` for everything else.
//!
//! One context, one stream: every operation is queued in order on it, so no
//! event tracking is needed (it is switched off) and results are reproducible.
//! Kernels are loaded once from the embedded fatbins; functions are looked up
//! once and cached. Kernel arguments are raw device pointers and scalars
//! ([`KArg`]); every launch and cuBLAS call turns a failure into an
//! [`Error::Cuda`] naming the operation.
//!
//! Memory, transfers and the launch helpers are in `base.rs`; every
//! operation's launcher is in its folder, `src/backend/ops/<operation>/cuda.rs`.

mod base;

pub(crate) use base::*;

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut,
    LaunchConfig, PushKernelArg,
};
use half::bf16;

use super::*;
use crate::error::{Error, Result};

/// Device storage of a tensor: a buffer and its logical length (a buffer
/// always holds at least one element, so that empty tensors — a rank-0 factor,
/// say — are representable).
pub struct CudaStorage {
    /// Taken out only by `Drop`, which hands the buffer back to the pool.
    pub(crate) data: ManuallyDrop<CudaData>,
    pub(crate) len: usize,
    /// Where the buffer goes when the tensor is dropped (None: freed).
    pool: Option<Arc<Mutex<BufferPool>>>,
    /// For an I32 tensor uploaded from the host: the smallest and largest
    /// value it holds, so that id checks need not read the device. Cleared
    /// when a kernel may write the tensor (`ptr_mut`).
    pub(crate) i32_range: Option<(i32, i32)>,
    /// The buffer's device address.
    pub(crate) addr: u64,
    /// Changes whenever the contents may change (`touch`: every `ptr_mut`,
    /// copy into it, write); unique across all buffers, so that a converted
    /// copy made at one generation is known stale at any other.
    pub(crate) generation: u64,
}

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

impl CudaStorage {
    /// True when the values are known (recorded at upload) to lie in
    /// `0..bound`; false when out of it or not known.
    pub(crate) fn i32_known_below(&self, bound: usize) -> bool {
        matches!(self.i32_range, Some((lo, hi)) if lo >= 0 && (hi as usize) < bound)
    }

    /// Marks the contents as (about to be) changed.
    pub(crate) fn touch(&mut self) {
        self.generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for CudaStorage {
    fn drop(&mut self) {
        // SAFETY: `data` is never used again after this.
        let data = unsafe { ManuallyDrop::take(&mut self.data) };
        if let Some(pool) = &self.pool {
            // The bf16 copy of this buffer goes too, dropped after the lock
            // is released (dropping it takes the lock again).
            let copy = pool.lock().ok().and_then(|mut p| {
                p.give(data);
                p.bf16_copies.remove(&self.addr)
            });
            drop(copy);
        }
    }
}

/// Device buffers of dropped tensors, kept for reuse by the next allocation
/// of the same element type and capacity. A training step allocates the same
/// sizes every time, so after the first step nothing is allocated (or freed)
/// in a step; reuse is in stream order (one stream), so no event is needed.
/// Emptied, and the allocation retried, when the device runs out of memory.
#[derive(Default)]
pub(crate) struct BufferPool {
    free: HashMap<(DType, usize), Vec<CudaData>>,
    cached_bytes: usize,
    /// bf16 copies of live F32 tensors made for bf16 GEMMs, by the source's
    /// address: (the source's generation then, the copy). A GEMM operand
    /// used again unchanged (a weight, an activation saved for the backward)
    /// is converted once; an entry leaves with its source.
    pub(crate) bf16_copies: HashMap<u64, (u64, Arc<Tensor>)>,
}

impl BufferPool {
    fn key(d: &CudaData) -> (DType, usize) {
        match d {
            CudaData::F32(x) => (DType::F32, x.len()),
            CudaData::Bf16(x) => (DType::Bf16, x.len()),
            CudaData::U8(x) => (DType::U8, x.len()),
            CudaData::I32(x) => (DType::I32, x.len()),
        }
    }
    fn give(&mut self, d: CudaData) {
        let k = Self::key(&d);
        self.cached_bytes += k.0.size_bytes() * k.1;
        self.free.entry(k).or_default().push(d);
    }
    fn take(&mut self, dtype: DType, cap: usize) -> Option<CudaData> {
        let d = self.free.get_mut(&(dtype, cap))?.pop()?;
        self.cached_bytes -= dtype.size_bytes() * cap;
        Some(d)
    }
    /// Frees every cached buffer (returns the bytes released).
    fn clear(&mut self) -> usize {
        let b = self.cached_bytes;
        self.free.clear();
        self.cached_bytes = 0;
        b
    }
}

/// The typed device buffer behind a [`CudaStorage`].
pub enum CudaData {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<bf16>),
    U8(CudaSlice<u8>),
    I32(CudaSlice<i32>),
}

impl CudaStorage {
    pub fn dtype(&self) -> DType {
        match &*self.data {
            CudaData::F32(_) => DType::F32,
            CudaData::Bf16(_) => DType::Bf16,
            CudaData::U8(_) => DType::U8,
            CudaData::I32(_) => DType::I32,
        }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A kernel argument: a device pointer or a scalar, passed by value.
#[derive(Clone, Copy, Debug)]
pub(crate) enum KArg {
    Ptr(u64),
    U32(u32),
    I32(i32),
    U64(u64),
    F32(f32),
}

impl KArg {
    fn kind(&self) -> crate::kernels::ParamKind {
        use crate::kernels::ParamKind as P;
        match self {
            KArg::Ptr(_) => P::Ptr,
            KArg::U32(_) => P::U32,
            KArg::I32(_) => P::I32,
            KArg::U64(_) => P::U64,
            KArg::F32(_) => P::F32,
        }
    }
}

pub struct CudaBackend {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: CudaBlas,
    modules: HashMap<&'static str, Arc<CudaModule>>,
    functions: Mutex<HashMap<(&'static str, &'static str), CudaFunction>>,
    pub(crate) sm_count: u32,
    name: String,
    pub(crate) counts: Counts,
    /// None when `LPAF_CUDA_POOL=0` (every tensor allocates and frees).
    pool: Option<Arc<Mutex<BufferPool>>>,
    /// Launches by kernel name, cumulative (`launches_by_kernel`).
    pub(crate) by_kernel: Mutex<HashMap<&'static str, u64>>,
    /// Uploaded gradient tables of ops/grads, keyed by their bytes.
    pub(crate) grad_tables: Mutex<Vec<(Vec<u8>, Arc<Tensor>)>>,
}

/// [`EngineCounters`] as the backend updates them.
#[derive(Default)]
pub(crate) struct Counts {
    pub launches: AtomicU64,
    pub library_calls: AtomicU64,
    pub syncs: AtomicU64,
    pub allocs: AtomicU64,
}

impl Counts {
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn snapshot(&self) -> EngineCounters {
        EngineCounters {
            launches: self.launches.load(Ordering::Relaxed),
            library_calls: self.library_calls.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            allocs: self.allocs.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBackend({})", self.name)
    }
}

impl CudaBackend {
    /// Opens device `ordinal`, loads every embedded kernel module and creates
    /// the cuBLAS handle. Fails (never panics) without a driver, a device,
    /// cuBLAS, or kernels compiled into this binary.
    pub fn new(ordinal: usize) -> Result<CudaBackend> {
        crate::kernels::require_kernels(crate::kernels::NVCC_VERSION)?;
        let info = crate::device::probe_cuda()?;
        if ordinal >= info.device_count {
            return Err(Error::cuda(
                "CudaBackend::new",
                format!(
                    "device {ordinal} requested but only {} present",
                    info.device_count
                ),
            ));
        }
        // SAFETY: only dlopen-probes libcublas.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(Error::cuda(
                "CudaBackend::new",
                format!(
                    "libcublas (CUDA {}) was not found on the library path (LD_LIBRARY_PATH)",
                    crate::device::BUILD_CUDA_VERSION / 1000
                ),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| Error::cuda("cuCtxCreate", e))?;
        // One stream for everything: order is implied, so cudarc's per-buffer
        // events would only add cost.
        // SAFETY: called before any buffer is allocated in this context.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(|e| Error::cuda("cuStreamCreate", e))?;
        let blas = CudaBlas::new(stream.clone()).map_err(|e| Error::cuda("cublasCreate", e))?;
        let mut modules = HashMap::new();
        for (name, image) in crate::kernels::FATBINS {
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_binary(image.to_vec()))
                .map_err(|e| Error::cuda(format!("loading kernels/{name}.cu"), e))?;
            modules.insert(*name, module);
        }
        let sm_count = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(|e| Error::cuda("cuDeviceGetAttribute", e))? as u32;
        Ok(CudaBackend {
            ctx,
            stream,
            blas,
            modules,
            functions: Mutex::new(HashMap::new()),
            sm_count,
            name: info.name,
            counts: Counts::default(),
            pool: (std::env::var("LPAF_CUDA_POOL").as_deref() != Ok("0"))
                .then(|| Arc::new(Mutex::new(BufferPool::default()))),
            grad_tables: Mutex::new(Vec::new()),
            by_kernel: Mutex::new(HashMap::new()),
        })
    }

    /// The kernel `name` of `kernels/<module>.cu` (cached).
    pub(crate) fn function(
        &self,
        module: &'static str,
        name: &'static str,
    ) -> Result<CudaFunction> {
        let mut cache = self.functions.lock().expect("function cache poisoned");
        if let Some(f) = cache.get(&(module, name)) {
            return Ok(f.clone());
        }
        let m = self.modules.get(module).ok_or_else(|| {
            Error::cuda(
                name,
                format!("no kernel module kernels/{module}.cu in this binary"),
            )
        })?;
        let f = m
            .load_function(name)
            .map_err(|e| Error::cuda(format!("loading kernel {module}::{name}"), e))?;
        cache.insert((module, name), f.clone());
        Ok(f)
    }

    /// Counts one launch of `name` for `launches_by_kernel`.
    pub(crate) fn count_kernel(&self, name: &'static str) {
        if let Ok(mut m) = self.by_kernel.lock() {
            *m.entry(name).or_default() += 1;
        }
    }

    /// Queues kernel `module::name` with the given arguments.
    pub(crate) fn launch(
        &self,
        module: &'static str,
        name: &'static str,
        cfg: LaunchConfig,
        args: &[KArg],
    ) -> Result<()> {
        let kinds: Vec<crate::kernels::ParamKind> = args.iter().map(KArg::kind).collect();
        if let Some(why) = crate::kernels::signature_mismatch(module, name, &kinds) {
            return Err(Error::cuda(name, why));
        }
        if cfg.grid_dim.0 == 0 || cfg.grid_dim.1 == 0 || cfg.grid_dim.2 == 0 {
            return Ok(());
        }
        let f = self.function(module, name)?;
        Counts::bump(&self.counts.launches);
        self.count_kernel(name);
        let mut b = self.stream.launch_builder(&f);
        for a in args {
            match a {
                KArg::Ptr(p) => b.arg(p),
                KArg::U32(v) => b.arg(v),
                KArg::I32(v) => b.arg(v),
                KArg::U64(v) => b.arg(v),
                KArg::F32(v) => b.arg(v),
            };
        }
        // SAFETY: callers pass pointers of live buffers of the right dtype and
        // sizes checked against the kernel's indexing.
        unsafe { b.launch(cfg) }.map_err(|e| Error::cuda(format!("{module}::{name}"), e))?;
        Ok(())
    }

    /// A device buffer of `n` elements (uninitialised): a cached one of the
    /// same type and capacity when the pool has it, else a new allocation.
    pub(crate) fn alloc_storage(&self, n: usize, dtype: DType) -> Result<CudaStorage> {
        let cap = n.max(1);
        let cached = self
            .pool
            .as_ref()
            .and_then(|p| p.lock().ok()?.take(dtype, cap));
        let data = match cached {
            Some(d) => d,
            None => match self.alloc_data(cap, dtype) {
                Ok(d) => d,
                // Out of memory with buffers cached: free them and retry once.
                Err(e) => match &self.pool {
                    Some(p) if p.lock().map(|mut p| p.clear()).unwrap_or(0) > 0 => {
                        self.alloc_data(cap, dtype)?
                    }
                    _ => return Err(e),
                },
            },
        };
        let addr = match &data {
            CudaData::F32(x) => x.device_ptr(&self.stream).0,
            CudaData::Bf16(x) => x.device_ptr(&self.stream).0,
            CudaData::U8(x) => x.device_ptr(&self.stream).0,
            CudaData::I32(x) => x.device_ptr(&self.stream).0,
        };
        Ok(CudaStorage {
            data: ManuallyDrop::new(data),
            len: n,
            pool: self.pool.clone(),
            i32_range: None,
            addr,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// A bf16 copy of the F32 tensor `t` for a bf16 GEMM: the pool's copy
    /// when it was made from these same contents (same generation), else a
    /// new conversion, which the pool keeps while `t` lives.
    pub(crate) fn bf16_copy_of(&self, t: &Tensor) -> Result<Arc<Tensor>> {
        let s = self.storage("bf16 copy", "tensor", t)?;
        let (addr, generation) = (s.addr, s.generation);
        let Some(pool) = &self.pool else {
            return Ok(Arc::new(self.to_bf16_copy(t)?));
        };
        if let Some((g, c)) = pool
            .lock()
            .ok()
            .and_then(|p| p.bf16_copies.get(&addr).cloned())
        {
            if g == generation {
                return Ok(c);
            }
        }
        let c = Arc::new(self.to_bf16_copy(t)?);
        let old = pool
            .lock()
            .ok()
            .and_then(|mut p| p.bf16_copies.insert(addr, (generation, c.clone())));
        drop(old);
        Ok(c)
    }

    fn alloc_data(&self, cap: usize, dtype: DType) -> Result<CudaData> {
        let op = "cuMemAlloc";
        Counts::bump(&self.counts.allocs);
        // SAFETY: the contents are uninitialised; every constructor writes
        // them before they are read (zeros() memsets).
        unsafe {
            Ok(match dtype {
                DType::F32 => CudaData::F32(
                    self.stream
                        .alloc::<f32>(cap)
                        .map_err(|e| Error::cuda(op, e))?,
                ),
                DType::Bf16 => CudaData::Bf16(
                    self.stream
                        .alloc::<bf16>(cap)
                        .map_err(|e| Error::cuda(op, e))?,
                ),
                DType::U8 => CudaData::U8(
                    self.stream
                        .alloc::<u8>(cap)
                        .map_err(|e| Error::cuda(op, e))?,
                ),
                DType::I32 => CudaData::I32(
                    self.stream
                        .alloc::<i32>(cap)
                        .map_err(|e| Error::cuda(op, e))?,
                ),
            })
        }
    }

    /// Frees the device buffers the pool keeps for reuse (bytes released).
    pub(crate) fn release_pool(&self) -> usize {
        self.pool
            .as_ref()
            .and_then(|p| p.lock().ok().map(|mut p| p.clear()))
            .unwrap_or(0)
    }

    pub(crate) fn storage<'a>(
        &self,
        op: &str,
        name: &str,
        t: &'a Tensor,
    ) -> Result<&'a CudaStorage> {
        match t.storage() {
            Storage::Cuda(s) => Ok(s),
            Storage::Cpu(_) => Err(Error::shape(
                op,
                format!("{name} is on the CPU, expected a CUDA tensor"),
            )),
        }
    }

    /// Device pointer of a CUDA tensor of the given dtype (error naming the
    /// operation and argument otherwise).
    pub(crate) fn ptr(&self, op: &str, name: &str, t: &Tensor, dtype: DType) -> Result<u64> {
        let s = self.storage(op, name, t)?;
        if s.dtype() != dtype {
            return Err(Error::shape(
                op,
                format!("{name} is {:?}, expected {dtype:?}", s.dtype()),
            ));
        }
        Ok(self.raw_ptr(s))
    }

    /// Like [`CudaBackend::ptr`] for an output.
    pub(crate) fn ptr_mut(
        &self,
        op: &str,
        name: &str,
        t: &mut Tensor,
        dtype: DType,
    ) -> Result<u64> {
        let stream = self.stream.clone();
        match t.storage_mut() {
            Storage::Cuda(s) => {
                if s.dtype() != dtype {
                    return Err(Error::shape(
                        op,
                        format!("{name} is {:?}, expected {dtype:?}", s.dtype()),
                    ));
                }
                s.i32_range = None;
                s.touch();
                Ok(match &mut *s.data {
                    CudaData::F32(x) => x.device_ptr_mut(&stream).0,
                    CudaData::Bf16(x) => x.device_ptr_mut(&stream).0,
                    CudaData::U8(x) => x.device_ptr_mut(&stream).0,
                    CudaData::I32(x) => x.device_ptr_mut(&stream).0,
                })
            }
            Storage::Cpu(_) => Err(Error::shape(
                op,
                format!("{name} is on the CPU, expected a CUDA tensor"),
            )),
        }
    }

    pub(crate) fn raw_ptr(&self, s: &CudaStorage) -> u64 {
        s.addr
    }

    /// The card's multiprocessor count (for persistent grids).
    pub fn multiprocessors(&self) -> u32 {
        self.sm_count
    }

    /// The context (for benchmarks that time with events).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every operation is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
}
