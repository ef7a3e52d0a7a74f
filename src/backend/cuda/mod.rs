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
    pub(crate) data: CudaData,
    pub(crate) len: usize,
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
        match &self.data {
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

    /// Allocates a device buffer of `n` elements (uninitialised).
    pub(crate) fn alloc_storage(&self, n: usize, dtype: DType) -> Result<CudaStorage> {
        let op = "cuMemAlloc";
        Counts::bump(&self.counts.allocs);
        // SAFETY: the contents are uninitialised; every constructor below
        // writes them before they are read (zeros() memsets).
        let cap = n.max(1);
        let data = unsafe {
            match dtype {
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
            }
        };
        Ok(CudaStorage { data, len: n })
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
                Ok(match &mut s.data {
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
        match &s.data {
            CudaData::F32(x) => x.device_ptr(&self.stream).0,
            CudaData::Bf16(x) => x.device_ptr(&self.stream).0,
            CudaData::U8(x) => x.device_ptr(&self.stream).0,
            CudaData::I32(x) => x.device_ptr(&self.stream).0,
        }
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
