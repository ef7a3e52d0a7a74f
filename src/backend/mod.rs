//! The backend API: tensors and every operation the model, the trainer and the
//! compression methods need, with two implementations:
//!
//! - [`cpu::CpuBackend`]: rayon + the `gemm` crate. It is the reference every
//!   GPU kernel is tested against, and what CI runs, so it is exact and
//!   deterministic (reductions have a fixed order; no result depends on the
//!   number of threads).
//! - [`cuda::CudaBackend`]: cuBLAS / cuBLASLt plus the kernels in `kernels/*.cu`.
//!
//! Model code takes a `&dyn Backend` and never looks at where a tensor lives.
//! Conventions: tensors are dense and row-major; a linear layer computes
//! `y = x·Wᵀ + b` with `W` of shape `out × in`. Operations write into outputs
//! the caller allocated; "accumulate" means `+=`, otherwise outputs are
//! overwritten.

pub mod cpu;
pub mod cuda;
pub mod ops;
pub mod philox;
pub mod select;

use std::sync::Arc;

use half::bf16;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use cpu::CpuBackend;
pub use ops::lowrank_sparse;
pub use ops::{
    adamw::*, attention::*, cross_entropy::*, elementwise::*, embedding::*, gemm::*, grads::*,
    layernorm::*, losparse_importance::*, movement::*, reduce::*, topk::*, weighted_svd::*,
};
pub use select::{gpu_for_test, select_backend};

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    F32,
    Bf16,
    U8,
    I32,
}

impl DType {
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::Bf16 => 2,
            DType::U8 => 1,
        }
    }
}

/// Where a tensor lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        })
    }
}

/// Host storage.
#[derive(Clone, Debug)]
pub enum CpuStorage {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
    U8(Vec<u8>),
    I32(Vec<i32>),
}

/// Device or host storage of a tensor.
pub enum Storage {
    Cpu(CpuStorage),
    Cuda(cuda::CudaStorage),
}

/// A dense row-major tensor on one device.
pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor({:?}, {:?}, {})",
            self.shape,
            self.dtype(),
            self.device()
        )
    }
}

impl Tensor {
    /// Wraps storage; the element count must match the shape.
    pub fn from_storage(shape: &[usize], storage: Storage) -> Result<Tensor> {
        let t = Tensor {
            shape: shape.to_vec(),
            storage,
        };
        let len = t.storage_len();
        if len != t.numel() {
            return Err(Error::shape(
                "Tensor::from_storage",
                format!(
                    "shape {shape:?} has {} elements but storage has {len}",
                    t.numel()
                ),
            ));
        }
        Ok(t)
    }

    /// A host tensor of f32 values.
    pub fn cpu_f32(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_storage(shape, Storage::Cpu(CpuStorage::F32(data)))
    }
    pub fn cpu_u8(data: Vec<u8>, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_storage(shape, Storage::Cpu(CpuStorage::U8(data)))
    }
    pub fn cpu_i32(data: Vec<i32>, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_storage(shape, Storage::Cpu(CpuStorage::I32(data)))
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Changes the shape, keeping the element count.
    pub fn reshape(&mut self, shape: &[usize]) -> Result<()> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!("{:?} -> {shape:?}", self.shape),
            ));
        }
        self.shape = shape.to_vec();
        Ok(())
    }
    /// `(rows, cols)` where cols is the last dimension and rows the product of the others.
    pub fn rows_cols(&self) -> (usize, usize) {
        let cols = *self.shape.last().unwrap_or(&1);
        let rows = self.numel().checked_div(cols).unwrap_or(0);
        (rows, cols)
    }
    pub fn dtype(&self) -> DType {
        match &self.storage {
            Storage::Cpu(CpuStorage::F32(_)) => DType::F32,
            Storage::Cpu(CpuStorage::Bf16(_)) => DType::Bf16,
            Storage::Cpu(CpuStorage::U8(_)) => DType::U8,
            Storage::Cpu(CpuStorage::I32(_)) => DType::I32,
            Storage::Cuda(c) => c.dtype(),
        }
    }
    pub fn device(&self) -> DeviceKind {
        match &self.storage {
            Storage::Cpu(_) => DeviceKind::Cpu,
            Storage::Cuda(_) => DeviceKind::Cuda,
        }
    }
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    pub fn storage_mut(&mut self) -> &mut Storage {
        &mut self.storage
    }
    fn storage_len(&self) -> usize {
        match &self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => v.len(),
            Storage::Cpu(CpuStorage::Bf16(v)) => v.len(),
            Storage::Cpu(CpuStorage::U8(v)) => v.len(),
            Storage::Cpu(CpuStorage::I32(v)) => v.len(),
            Storage::Cuda(c) => c.len(),
        }
    }
    pub fn size_bytes(&self) -> usize {
        self.numel() * self.dtype().size_bytes()
    }

    /// Host f32 data (error on a device tensor or another dtype).
    pub fn host_f32(&self) -> Result<&[f32]> {
        match &self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => Ok(v),
            _ => Err(self.wrong("host f32")),
        }
    }
    pub fn host_f32_mut(&mut self) -> Result<&mut [f32]> {
        match &mut self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => Ok(v),
            _ => Err(Error::shape(
                "host_f32_mut",
                format!("tensor {:?} is not host f32", self.shape),
            )),
        }
    }
    pub fn host_bf16(&self) -> Result<&[bf16]> {
        match &self.storage {
            Storage::Cpu(CpuStorage::Bf16(v)) => Ok(v),
            _ => Err(self.wrong("host bf16")),
        }
    }
    pub fn host_bf16_mut(&mut self) -> Result<&mut [bf16]> {
        match &mut self.storage {
            Storage::Cpu(CpuStorage::Bf16(v)) => Ok(v),
            _ => Err(Error::shape(
                "host_bf16_mut",
                format!("tensor {:?} is not host bf16", self.shape),
            )),
        }
    }
    pub fn host_u8(&self) -> Result<&[u8]> {
        match &self.storage {
            Storage::Cpu(CpuStorage::U8(v)) => Ok(v),
            _ => Err(self.wrong("host u8")),
        }
    }
    pub fn host_u8_mut(&mut self) -> Result<&mut [u8]> {
        match &mut self.storage {
            Storage::Cpu(CpuStorage::U8(v)) => Ok(v),
            _ => Err(Error::shape(
                "host_u8_mut",
                format!("tensor {:?} is not host u8", self.shape),
            )),
        }
    }
    pub fn host_i32(&self) -> Result<&[i32]> {
        match &self.storage {
            Storage::Cpu(CpuStorage::I32(v)) => Ok(v),
            _ => Err(self.wrong("host i32")),
        }
    }
    pub fn host_i32_mut(&mut self) -> Result<&mut [i32]> {
        match &mut self.storage {
            Storage::Cpu(CpuStorage::I32(v)) => Ok(v),
            _ => Err(Error::shape(
                "host_i32_mut",
                format!("tensor {:?} is not host i32", self.shape),
            )),
        }
    }
    fn wrong(&self, want: &str) -> Error {
        Error::shape(
            want,
            format!(
                "tensor {:?} is {:?} on {}",
                self.shape,
                self.dtype(),
                self.device()
            ),
        )
    }
}

/// Precision of a matrix product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Full fp32 arithmetic.
    #[default]
    F32,
    /// fp32 storage, TF32 tensor-core products (inputs rounded to 10-bit mantissa).
    Tf32,
    /// Inputs rounded to bf16, products accumulated in fp32, fp32 output.
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Precision::F32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(Error::msg(format!(
                "unknown precision '{s}' (expected f32, tf32 or bf16)"
            ))),
        }
    }
}

/// What the engine itself counts of its device work (the CUDA backend):
/// kernel launches, library (cuBLAS) calls, host synchronisations and device
/// allocations, cumulative. The emulated GPU counts more (bytes copied, peak
/// memory) from below: `crate::device::emulator::counters`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineCounters {
    pub launches: u64,
    pub library_calls: u64,
    pub syncs: u64,
    pub allocs: u64,
}

/// What every backend provides besides its operations: identity, memory,
/// transfers and synchronisation. Every method checks shapes and dtypes and
/// returns an [`Error`] naming the operation; none panics on bad input.
#[allow(clippy::wrong_self_convention)]
pub trait BackendCore: Send + Sync {
    fn kind(&self) -> DeviceKind;
    /// A human-readable device name ("cpu (2 threads)", "NVIDIA H100 80GB HBM3").
    fn name(&self) -> String;
    /// The engine's own counts of device work (None: the backend counts nothing).
    fn engine_counters(&self) -> Option<EngineCounters> {
        None
    }
    /// Cumulative launches by kernel (`module::kernel`, and `cublas <precision>`
    /// for library calls), for the counters' breakdown; empty when the
    /// backend counts nothing.
    fn launches_by_kernel(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
    /// Frees the memory the backend keeps for reuse (the CUDA buffer pool);
    /// returns the bytes released.
    fn release_cached(&self) -> usize {
        0
    }

    // ---- memory -------------------------------------------------------------
    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor>;
    /// A tensor whose contents will be overwritten before they are read (the
    /// CUDA backend skips the memset; the CPU zero-fills, as Rust requires).
    fn empty(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.zeros(shape, dtype)
    }
    fn from_f32(&self, data: &[f32], shape: &[usize]) -> Result<Tensor>;
    fn from_u8(&self, data: &[u8], shape: &[usize]) -> Result<Tensor>;
    fn from_i32(&self, data: &[i32], shape: &[usize]) -> Result<Tensor>;
    /// F32 or BF16 tensor to host f32.
    fn to_f32(&self, t: &Tensor) -> Result<Vec<f32>>;
    fn to_u8(&self, t: &Tensor) -> Result<Vec<u8>>;
    fn to_i32(&self, t: &Tensor) -> Result<Vec<i32>>;
    /// `dst = src`, same dtype and element count.
    fn copy(&self, src: &Tensor, dst: &mut Tensor) -> Result<()>;
    /// Sets every element (U8 / I32 tensors take the value cast).
    fn fill(&self, t: &mut Tensor, value: f32) -> Result<()>;
    /// Element-type conversion: F32 → BF16 (round to nearest even), BF16 → F32, U8 → F32.
    fn cast(&self, src: &Tensor, dst: &mut Tensor) -> Result<()>;
    /// Waits for all queued work (a no-op on the CPU).
    fn synchronize(&self) -> Result<()>;

    fn clone_tensor(&self, t: &Tensor) -> Result<Tensor> {
        let mut out = self.zeros(t.shape(), t.dtype())?;
        self.copy(t, &mut out)?;
        Ok(out)
    }
}

/// Declares `Backend` as [`BackendCore`] plus every operation trait (one
/// list), implements it for every type that implements them all, and makes
/// the `prelude` of all the traits.
macro_rules! backend_traits {
    ($($op:ident),* $(,)?) => {
        /// Everything a backend computes: [`BackendCore`] and one trait per
        /// operation, each defined in its folder under `ops/` with its CPU
        /// reference and its CUDA launcher beside it (docs/ARCHITECTURE.md,
        /// "Operations"). Implemented for every type that implements them all.
        pub trait Backend: BackendCore $(+ $op)* {}

        impl<T: BackendCore $(+ $op)*> Backend for T {}

        /// Every backend trait, for method calls on a concrete backend type
        /// (`CpuBackend::new().gemm(..)`); a `&dyn Backend` needs no import.
        pub mod prelude {
            pub use super::{Backend, BackendCore $(, $op)*};
        }
    };
}

backend_traits!(
    GemmOps,
    ElementwiseOps,
    LayerNormOps,
    AttentionOps,
    EmbeddingOps,
    ReduceOps,
    GradsOps,
    CrossEntropyOps,
    AdamWOps,
    MovementOps,
    LosparseImportanceOps,
    TopkOps,
    WeightedSvdOps,
);

pub type BackendRef = Arc<dyn Backend>;

/// `got == want` element counts, or an error naming the operation and the tensor.
pub fn check_len(op: &str, name: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::shape(
            op,
            format!("{name} has {got} elements, expected {want}"),
        ));
    }
    Ok(())
}

/// Checks that tensors have the same element count (named for the error).
pub fn same_numel(op: &str, tensors: &[(&str, &Tensor)]) -> Result<usize> {
    let n = tensors[0].1.numel();
    for (name, t) in tensors {
        if t.numel() != n {
            return Err(Error::shape(
                op,
                format!(
                    "{} has {} elements ({:?}) but {} has {n}",
                    name,
                    t.numel(),
                    t.shape(),
                    tensors[0].0
                ),
            ));
        }
    }
    Ok(n)
}

/// Checks a tensor's dtype (named for the error).
pub fn want_dtype(op: &str, name: &str, t: &Tensor, dtype: DType) -> Result<()> {
    if t.dtype() != dtype {
        return Err(Error::shape(
            op,
            format!("{name} is {:?}, expected {dtype:?}", t.dtype()),
        ));
    }
    Ok(())
}
