//! The CPU backend: the reference implementation of every operation.
//!
//! Parallel with rayon, deterministic by construction: work is split into
//! fixed-size chunks (never by thread count) and partial results of
//! reductions are combined in chunk order, so a result does not depend on how
//! many threads ran it. Matrix products use the `gemm` crate, which splits
//! only the output among threads (never the k dimension).

use half::bf16;
use rayon::prelude::*;

use super::*;
use crate::error::{Error, Result};

/// Elements per parallel task for elementwise work.
pub(crate) const CHUNK: usize = 1 << 14;

/// The rayon-based reference backend.
#[derive(Default, Debug, Clone)]
pub struct CpuBackend;

impl CpuBackend {
    pub fn new() -> CpuBackend {
        CpuBackend
    }
}

/// An element type of CPU storage: one generic accessor instead of one per dtype.
pub(crate) trait CpuElem: Sized {
    /// `f32`, `u8`, … as the error messages say it.
    const NAME: &'static str;
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]>;
}

macro_rules! cpu_elem {
    ($t:ty, $variant:ident, $name:literal) => {
        impl CpuElem for $t {
            const NAME: &'static str = $name;
            fn slice(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
cpu_elem!(f32, F32, "an f32");
cpu_elem!(u8, U8, "a u8");
cpu_elem!(i32, I32, "an i32");

pub(crate) fn not_on_cpu(op: &str, name: &str, what: &str, dt: DType, dev: String) -> Error {
    Error::shape(
        op,
        format!("{name} must be {what} tensor on the CPU, got {dt:?} on {dev}"),
    )
}

/// The elements of a CPU tensor of type `T`; an error naming `op` and
/// `name` otherwise.
pub(crate) fn host<'a, T: CpuElem>(op: &str, name: &str, t: &'a Tensor) -> Result<&'a [T]> {
    match t.storage() {
        Storage::Cpu(c) => T::slice(c),
        _ => None,
    }
    .ok_or_else(|| not_on_cpu(op, name, T::NAME, t.dtype(), t.device().to_string()))
}

/// [`host`], writable.
pub(crate) fn host_mut<'a, T: CpuElem>(
    op: &str,
    name: &str,
    t: &'a mut Tensor,
) -> Result<&'a mut [T]> {
    let (dt, dev) = (t.dtype(), t.device().to_string());
    match t.storage_mut() {
        Storage::Cpu(c) => T::slice_mut(c),
        _ => None,
    }
    .ok_or_else(|| not_on_cpu(op, name, T::NAME, dt, dev))
}

pub(crate) fn f32s<'a>(op: &str, name: &str, t: &'a Tensor) -> Result<&'a [f32]> {
    host(op, name, t)
}
pub(crate) fn f32s_mut<'a>(op: &str, name: &str, t: &'a mut Tensor) -> Result<&'a mut [f32]> {
    host_mut(op, name, t)
}
pub(crate) fn u8s<'a>(op: &str, name: &str, t: &'a Tensor) -> Result<&'a [u8]> {
    host(op, name, t)
}
pub(crate) fn u8s_mut<'a>(op: &str, name: &str, t: &'a mut Tensor) -> Result<&'a mut [u8]> {
    host_mut(op, name, t)
}
pub(crate) fn i32s<'a>(op: &str, name: &str, t: &'a Tensor) -> Result<&'a [i32]> {
    host(op, name, t)
}

/// Rounds to the nearest bf16 value (ties to even), kept as f32.
#[inline]
pub fn round_bf16(x: f32) -> f32 {
    bf16::from_f32(x).to_f32()
}

/// Rounds to TF32 (10 explicit mantissa bits, ties to even), kept as f32.
#[inline]
pub fn round_tf32(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    let b = x.to_bits();
    let lsb = (b >> 13) & 1;
    f32::from_bits(b.wrapping_add(0x0fff + lsb) & !0x1fff)
}

/// Exact GELU, `x·Φ(x)` with the erf form.
#[inline]
pub fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Derivative of the exact GELU.
#[inline]
pub fn gelu_grad_f32(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2));
    let pdf = (-0.5 * x * x).exp() * 0.398_942_3; // 1/sqrt(2π)
    cdf + x * pdf
}

/// Applies `f` to fixed-size chunks of `out` in parallel (with the chunk's start index).
pub(crate) fn par_chunks<T: Send, F>(out: &mut [T], f: F)
where
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(ci, chunk)| f(ci * CHUNK, chunk));
}

#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
// SAFETY: used only to hand disjoint regions of one buffer to rayon tasks.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    #[inline]
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

impl BackendCore for CpuBackend {
    fn kind(&self) -> DeviceKind {
        DeviceKind::Cpu
    }

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let storage = match dtype {
            DType::F32 => CpuStorage::F32(vec![0.0; n]),
            DType::Bf16 => CpuStorage::Bf16(vec![bf16::ZERO; n]),
            DType::U8 => CpuStorage::U8(vec![0; n]),
            DType::I32 => CpuStorage::I32(vec![0; n]),
        };
        Tensor::from_storage(shape, Storage::Cpu(storage))
    }

    fn from_f32(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Tensor::cpu_f32(data.to_vec(), shape)
    }

    fn from_u8(&self, data: &[u8], shape: &[usize]) -> Result<Tensor> {
        Tensor::cpu_u8(data.to_vec(), shape)
    }

    fn from_i32(&self, data: &[i32], shape: &[usize]) -> Result<Tensor> {
        Tensor::cpu_i32(data.to_vec(), shape)
    }

    fn to_f32(&self, t: &Tensor) -> Result<Vec<f32>> {
        match t.storage() {
            Storage::Cpu(CpuStorage::F32(v)) => Ok(v.clone()),
            Storage::Cpu(CpuStorage::Bf16(v)) => Ok(v.iter().map(|x| x.to_f32()).collect()),
            _ => Err(Error::shape(
                "to_f32",
                format!("{t:?} is not a CPU f32/bf16 tensor"),
            )),
        }
    }

    fn to_u8(&self, t: &Tensor) -> Result<Vec<u8>> {
        Ok(u8s("to_u8", "tensor", t)?.to_vec())
    }

    fn to_i32(&self, t: &Tensor) -> Result<Vec<i32>> {
        Ok(i32s("to_i32", "tensor", t)?.to_vec())
    }

    fn copy(&self, src: &Tensor, dst: &mut Tensor) -> Result<()> {
        same_numel("copy", &[("src", src), ("dst", dst)])?;
        let Storage::Cpu(s) = src.storage() else {
            return Err(Error::shape("copy", "src is not on the CPU"));
        };
        let s = s.clone();
        let dd = dst.dtype();
        match (s, dst.storage_mut()) {
            (CpuStorage::F32(s), Storage::Cpu(CpuStorage::F32(d))) => d.copy_from_slice(&s),
            (CpuStorage::Bf16(s), Storage::Cpu(CpuStorage::Bf16(d))) => d.copy_from_slice(&s),
            (CpuStorage::U8(s), Storage::Cpu(CpuStorage::U8(d))) => d.copy_from_slice(&s),
            (CpuStorage::I32(s), Storage::Cpu(CpuStorage::I32(d))) => d.copy_from_slice(&s),
            _ => {
                return Err(Error::shape(
                    "copy",
                    format!("dtype {:?} -> {dd:?} or device mismatch", src.dtype()),
                ))
            }
        }
        Ok(())
    }

    fn fill(&self, t: &mut Tensor, value: f32) -> Result<()> {
        match t.storage_mut() {
            Storage::Cpu(CpuStorage::F32(v)) => v.par_iter_mut().for_each(|x| *x = value),
            Storage::Cpu(CpuStorage::Bf16(v)) => {
                let b = bf16::from_f32(value);
                v.par_iter_mut().for_each(|x| *x = b)
            }
            Storage::Cpu(CpuStorage::U8(v)) => v.par_iter_mut().for_each(|x| *x = value as u8),
            Storage::Cpu(CpuStorage::I32(v)) => v.par_iter_mut().for_each(|x| *x = value as i32),
            Storage::Cuda(_) => return Err(Error::shape("fill", "tensor is not on the CPU")),
        }
        Ok(())
    }

    fn cast(&self, src: &Tensor, dst: &mut Tensor) -> Result<()> {
        same_numel("cast", &[("src", src), ("dst", dst)])?;
        let (sd, dd) = (src.dtype(), dst.dtype());
        match (src.storage(), dst.storage_mut()) {
            (Storage::Cpu(CpuStorage::F32(s)), Storage::Cpu(CpuStorage::Bf16(d))) => d
                .par_iter_mut()
                .zip(s.par_iter())
                .for_each(|(d, s)| *d = bf16::from_f32(*s)),
            (Storage::Cpu(CpuStorage::Bf16(s)), Storage::Cpu(CpuStorage::F32(d))) => d
                .par_iter_mut()
                .zip(s.par_iter())
                .for_each(|(d, s)| *d = s.to_f32()),
            (Storage::Cpu(CpuStorage::U8(s)), Storage::Cpu(CpuStorage::F32(d))) => d
                .par_iter_mut()
                .zip(s.par_iter())
                .for_each(|(d, s)| *d = *s as f32),
            (Storage::Cpu(CpuStorage::F32(s)), Storage::Cpu(CpuStorage::F32(d))) => {
                d.copy_from_slice(s)
            }
            _ => {
                return Err(Error::shape(
                    "cast",
                    format!("unsupported cast {sd:?} -> {dd:?} (or not on the CPU)"),
                ))
            }
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

/// max that propagates NaN (as the CUDA kernels' `nan_max`): f32::max
/// returns the other operand when one is NaN.
#[inline]
pub(crate) fn nan_max(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() {
        b
    } else {
        a
    }
}
