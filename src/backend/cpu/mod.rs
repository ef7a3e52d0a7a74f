//! The CPU backend: the reference implementation of every operation.
//!
//! Parallel with rayon, deterministic by construction: work is split into
//! fixed-size chunks (never by thread count) and partial results of
//! reductions are combined in chunk order, so a result does not depend on how
//! many threads ran it. Matrix products use the `gemm` crate, which splits
//! only the output among threads (never the k dimension).

mod compress;
pub mod svd;

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

fn not_on_cpu(op: &str, name: &str, what: &str, dt: DType, dev: String) -> Error {
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

pub(crate) fn check_len(op: &str, name: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::shape(
            op,
            format!("{name} has {got} elements, expected {want}"),
        ));
    }
    Ok(())
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
fn par_chunks<T: Send, F>(out: &mut [T], f: F)
where
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(ci, chunk)| f(ci * CHUNK, chunk));
}

impl CpuBackend {
    fn gemm_impl(&self, g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
        g.validate(a.len(), b.len(), c.len())?;
        if g.batch > 1 && g.stride_c < (g.m.saturating_sub(1)) * g.ldc + g.n {
            return Err(Error::shape(
                "gemm",
                "batch matrices of C overlap (stride_c too small)",
            ));
        }
        if g.m == 0 || g.n == 0 || g.batch == 0 {
            return Ok(());
        }
        // Emulate reduced-precision products by rounding the inputs once.
        let round: Option<fn(f32) -> f32> = match g.precision {
            Precision::F32 => None,
            Precision::Tf32 => Some(round_tf32),
            Precision::Bf16 => Some(round_bf16),
        };
        let a_r: Vec<f32>;
        let b_r: Vec<f32>;
        let (a, b) = match round {
            None => (a, b),
            Some(r) => {
                a_r = a.par_iter().map(|&x| r(x)).collect();
                b_r = b.par_iter().map(|&x| r(x)).collect();
                (&a_r[..], &b_r[..])
            }
        };
        let (lhs_rs, lhs_cs) = if g.trans_a {
            (1, g.lda as isize)
        } else {
            (g.lda as isize, 1)
        };
        let (rhs_rs, rhs_cs) = if g.trans_b {
            (1, g.ldb as isize)
        } else {
            (g.ldb as isize, 1)
        };
        let run = |bi: usize, c_ptr: *mut f32, par: gemm::Parallelism| {
            if g.k == 0 {
                // Nothing to multiply: C = beta·C.
                for i in 0..g.m {
                    for j in 0..g.n {
                        // SAFETY: (i, j) lies inside batch matrix bi, validated above.
                        unsafe {
                            let p = c_ptr.add(g.offset_c + bi * g.stride_c + i * g.ldc + j);
                            *p = if g.beta == 0.0 { 0.0 } else { g.beta * *p };
                        }
                    }
                }
                return;
            }
            // SAFETY: validate() checked every element of every batch matrix is
            // in bounds; batch matrices of C do not overlap (checked above).
            unsafe {
                gemm::gemm(
                    g.m,
                    g.n,
                    g.k,
                    c_ptr.add(g.offset_c + bi * g.stride_c),
                    1,
                    g.ldc as isize,
                    g.beta != 0.0,
                    a.as_ptr().add(g.offset_a + bi * g.stride_a),
                    lhs_cs,
                    lhs_rs,
                    b.as_ptr().add(g.offset_b + bi * g.stride_b),
                    rhs_cs,
                    rhs_rs,
                    g.beta,
                    g.alpha,
                    false,
                    false,
                    false,
                    par,
                )
            }
        };
        let c_ptr = SendPtr(c.as_mut_ptr());
        if g.batch == 1 {
            run(0, c_ptr.0, gemm::Parallelism::Rayon(0));
        } else {
            (0..g.batch).into_par_iter().for_each(|bi| {
                let p = c_ptr;
                run(bi, p.get(), gemm::Parallelism::None)
            });
        }
        Ok(())
    }
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

impl Backend for CpuBackend {
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

    fn gemm(&self, g: &Gemm, a: &Tensor, b: &Tensor, c: &mut Tensor) -> Result<()> {
        let a = f32s("gemm", "a", a)?;
        let b = f32s("gemm", "b", b)?;
        let c = f32s_mut("gemm", "c", c)?;
        self.gemm_impl(g, a, b, c)
    }

    fn axpby(&self, alpha: f32, x: &Tensor, beta: f32, y: &mut Tensor) -> Result<()> {
        let xs = f32s("axpby", "x", x)?;
        let ys = f32s_mut("axpby", "y", y)?;
        check_len("axpby", "y", ys.len(), xs.len())?;
        par_chunks(ys, |start, ys| {
            let xs = &xs[start..start + ys.len()];
            if beta == 0.0 {
                ys.iter_mut().zip(xs).for_each(|(y, x)| *y = alpha * x);
            } else {
                ys.iter_mut()
                    .zip(xs)
                    .for_each(|(y, x)| *y = alpha * x + beta * *y);
            }
        });
        Ok(())
    }

    fn scale(&self, t: &mut Tensor, alpha: f32) -> Result<()> {
        let ts = f32s_mut("scale", "t", t)?;
        par_chunks(ts, |_, ts| ts.iter_mut().for_each(|x| *x *= alpha));
        Ok(())
    }

    fn mul(&self, a: &Tensor, b: &Tensor, out: &mut Tensor) -> Result<()> {
        let xs = f32s("mul", "a", a)?;
        let ys = f32s("mul", "b", b)?;
        let os = f32s_mut("mul", "out", out)?;
        check_len("mul", "b", ys.len(), xs.len())?;
        check_len("mul", "out", os.len(), xs.len())?;
        par_chunks(os, |s, os| {
            os.iter_mut()
                .enumerate()
                .for_each(|(i, o)| *o = xs[s + i] * ys[s + i])
        });
        Ok(())
    }

    fn mul_mask(&self, x: &Tensor, mask: &Tensor, out: &mut Tensor) -> Result<()> {
        let xs = f32s("mul_mask", "x", x)?;
        let ms = u8s("mul_mask", "mask", mask)?;
        let os = f32s_mut("mul_mask", "out", out)?;
        check_len("mul_mask", "mask", ms.len(), xs.len())?;
        check_len("mul_mask", "out", os.len(), xs.len())?;
        par_chunks(os, |s, os| {
            for (i, o) in os.iter_mut().enumerate() {
                *o = if ms[s + i] != 0 { xs[s + i] } else { 0.0 };
            }
        });
        Ok(())
    }

    fn masked_add(&self, x: &Tensor, mask: Option<&Tensor>, out: &mut Tensor) -> Result<()> {
        let op = "masked_add";
        let xs = f32s(op, "x", x)?;
        let ms = mask.map(|m| u8s(op, "mask", m)).transpose()?;
        let os = f32s_mut(op, "out", out)?;
        check_len(op, "out", os.len(), xs.len())?;
        if let Some(m) = ms {
            check_len(op, "mask", m.len(), xs.len())?;
        }
        par_chunks(os, |s, os| {
            for (i, o) in os.iter_mut().enumerate() {
                if ms.is_none_or(|m| m[s + i] != 0) {
                    *o += xs[s + i];
                }
            }
        });
        Ok(())
    }

    fn add_row_bias(&self, y: &mut Tensor, bias: &Tensor) -> Result<()> {
        let bs = f32s("add_row_bias", "bias", bias)?;
        let ys = f32s_mut("add_row_bias", "y", y)?;
        let cols = bs.len();
        if cols == 0 || ys.len() % cols != 0 {
            return Err(Error::shape(
                "add_row_bias",
                format!("y has {} elements, not a multiple of {cols}", ys.len()),
            ));
        }
        ys.par_chunks_mut(cols)
            .for_each(|row| row.iter_mut().zip(bs).for_each(|(y, b)| *y += b));
        Ok(())
    }

    fn col_sum(&self, x: &Tensor, out: &mut Tensor, accumulate: bool) -> Result<()> {
        let xs = f32s("col_sum", "x", x)?;
        let os = f32s_mut("col_sum", "out", out)?;
        let cols = os.len();
        if cols == 0 || xs.len() % cols != 0 {
            return Err(Error::shape(
                "col_sum",
                format!("x has {} elements, not a multiple of {cols}", xs.len()),
            ));
        }
        let rows = xs.len() / cols;
        // Each task owns a block of columns and walks the rows in order.
        os.par_chunks_mut(64).enumerate().for_each(|(bi, ob)| {
            let c0 = bi * 64;
            let mut acc = vec![0.0f32; ob.len()];
            for r in 0..rows {
                let row = &xs[r * cols + c0..r * cols + c0 + ob.len()];
                acc.iter_mut().zip(row).for_each(|(a, x)| *a += x);
            }
            for (o, a) in ob.iter_mut().zip(acc) {
                *o = if accumulate { *o + a } else { a };
            }
        });
        Ok(())
    }

    fn gelu(&self, x: &Tensor, y: &mut Tensor) -> Result<()> {
        let xs = f32s("gelu", "x", x)?;
        let ys = f32s_mut("gelu", "y", y)?;
        check_len("gelu", "y", ys.len(), xs.len())?;
        par_chunks(ys, |s, ys| {
            ys.iter_mut()
                .enumerate()
                .for_each(|(i, y)| *y = gelu_f32(xs[s + i]))
        });
        Ok(())
    }

    fn gelu_backward(&self, x: &Tensor, dy: &Tensor, dx: &mut Tensor) -> Result<()> {
        let xs = f32s("gelu_backward", "x", x)?;
        let dys = f32s("gelu_backward", "dy", dy)?;
        let dxs = f32s_mut("gelu_backward", "dx", dx)?;
        check_len("gelu_backward", "dy", dys.len(), xs.len())?;
        check_len("gelu_backward", "dx", dxs.len(), xs.len())?;
        par_chunks(dxs, |s, d| {
            d.iter_mut()
                .enumerate()
                .for_each(|(i, d)| *d = dys[s + i] * gelu_grad_f32(xs[s + i]))
        });
        Ok(())
    }

    fn tanh(&self, x: &Tensor, y: &mut Tensor) -> Result<()> {
        let xs = f32s("tanh", "x", x)?;
        let ys = f32s_mut("tanh", "y", y)?;
        check_len("tanh", "y", ys.len(), xs.len())?;
        par_chunks(ys, |s, ys| {
            ys.iter_mut()
                .enumerate()
                .for_each(|(i, y)| *y = xs[s + i].tanh())
        });
        Ok(())
    }

    fn tanh_backward(&self, y: &Tensor, dy: &Tensor, dx: &mut Tensor) -> Result<()> {
        let ys = f32s("tanh_backward", "y", y)?;
        let dys = f32s("tanh_backward", "dy", dy)?;
        let dxs = f32s_mut("tanh_backward", "dx", dx)?;
        check_len("tanh_backward", "dy", dys.len(), ys.len())?;
        check_len("tanh_backward", "dx", dxs.len(), ys.len())?;
        par_chunks(dxs, |s, d| {
            d.iter_mut()
                .enumerate()
                .for_each(|(i, d)| *d = dys[s + i] * (1.0 - ys[s + i] * ys[s + i]))
        });
        Ok(())
    }

    fn dropout(&self, x: &Tensor, y: &mut Tensor, p: f32, seed: u64, stream: u64) -> Result<()> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::msg(format!(
                "dropout: probability {p} outside [0, 1)"
            )));
        }
        let xs = f32s("dropout", "x", x)?;
        let ys = f32s_mut("dropout", "y", y)?;
        check_len("dropout", "y", ys.len(), xs.len())?;
        if p == 0.0 {
            ys.copy_from_slice(xs);
            return Ok(());
        }
        let scale = 1.0 / (1.0 - p);
        par_chunks(ys, |s, ys| {
            for (i, y) in ys.iter_mut().enumerate() {
                let keep = philox::uniform(seed, stream, (s + i) as u64) >= p;
                *y = if keep { xs[s + i] * scale } else { 0.0 };
            }
        });
        Ok(())
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
        let xs = f32s(op, "x", x)?;
        let gs = f32s(op, "gamma", gamma)?;
        let bs = f32s(op, "beta", beta)?;
        let cols = gs.len();
        check_len(op, "beta", bs.len(), cols)?;
        if cols == 0 || xs.len() % cols != 0 {
            return Err(Error::shape(
                op,
                format!("x has {} elements, not a multiple of {cols}", xs.len()),
            ));
        }
        let rows = xs.len() / cols;
        let ys = f32s_mut(op, "y", y)?;
        check_len(op, "y", ys.len(), xs.len())?;
        let mut stats = vec![(0.0f32, 0.0f32); rows];
        ys.par_chunks_mut(cols)
            .zip(stats.par_iter_mut())
            .enumerate()
            .for_each(|(r, (yr, st))| {
                let xr = &xs[r * cols..(r + 1) * cols];
                let mu = xr.iter().sum::<f32>() / cols as f32;
                let var = xr.iter().map(|v| (v - mu) * (v - mu)).sum::<f32>() / cols as f32;
                let rs = 1.0 / (var + eps).sqrt();
                for c in 0..cols {
                    yr[c] = (xr[c] - mu) * rs * gs[c] + bs[c];
                }
                *st = (mu, rs);
            });
        let ms = f32s_mut(op, "mean", mean)?;
        check_len(op, "mean", ms.len(), rows)?;
        ms.iter_mut().zip(&stats).for_each(|(m, s)| *m = s.0);
        let rss = f32s_mut(op, "rstd", rstd)?;
        check_len(op, "rstd", rss.len(), rows)?;
        rss.iter_mut().zip(&stats).for_each(|(m, s)| *m = s.1);
        Ok(())
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
        let dys = f32s(op, "dy", dy)?;
        let xs = f32s(op, "x", x)?;
        let gs = f32s(op, "gamma", gamma)?;
        let ms = f32s(op, "mean", mean)?;
        let rs = f32s(op, "rstd", rstd)?;
        let cols = gs.len();
        if cols == 0 || xs.len() % cols != 0 {
            return Err(Error::shape(
                op,
                format!("x has {} elements, not a multiple of {cols}", xs.len()),
            ));
        }
        let rows = xs.len() / cols;
        check_len(op, "dy", dys.len(), xs.len())?;
        check_len(op, "mean", ms.len(), rows)?;
        check_len(op, "rstd", rs.len(), rows)?;
        let dxs = f32s_mut(op, "dx", dx)?;
        check_len(op, "dx", dxs.len(), xs.len())?;
        dxs.par_chunks_mut(cols).enumerate().for_each(|(r, dxr)| {
            let xr = &xs[r * cols..(r + 1) * cols];
            let dyr = &dys[r * cols..(r + 1) * cols];
            let (mu, rsd) = (ms[r], rs[r]);
            let mut sum_dyg = 0.0f32;
            let mut sum_dyg_xhat = 0.0f32;
            for c in 0..cols {
                let xhat = (xr[c] - mu) * rsd;
                let dyg = dyr[c] * gs[c];
                sum_dyg += dyg;
                sum_dyg_xhat += dyg * xhat;
            }
            let inv_n = 1.0 / cols as f32;
            for c in 0..cols {
                let xhat = (xr[c] - mu) * rsd;
                let dyg = dyr[c] * gs[c];
                dxr[c] = rsd * (dyg - inv_n * sum_dyg - xhat * inv_n * sum_dyg_xhat);
            }
        });
        let dgs = f32s_mut(op, "dgamma", dgamma)?;
        check_len(op, "dgamma", dgs.len(), cols)?;
        let mut dg_acc = vec![0.0f32; cols];
        let mut db_acc = vec![0.0f32; cols];
        dg_acc
            .par_chunks_mut(64)
            .zip(db_acc.par_chunks_mut(64))
            .enumerate()
            .for_each(|(bi, (dg, db))| {
                let c0 = bi * 64;
                for r in 0..rows {
                    for j in 0..dg.len() {
                        let c = c0 + j;
                        let xhat = (xs[r * cols + c] - ms[r]) * rs[r];
                        dg[j] += dys[r * cols + c] * xhat;
                        db[j] += dys[r * cols + c];
                    }
                }
            });
        dgs.iter_mut().zip(&dg_acc).for_each(|(d, a)| *d += a);
        let dbs = f32s_mut(op, "dbeta", dbeta)?;
        check_len(op, "dbeta", dbs.len(), cols)?;
        dbs.iter_mut().zip(&db_acc).for_each(|(d, a)| *d += a);
        Ok(())
    }

    fn split_heads(
        &self,
        x: &Tensor,
        out: &mut Tensor,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<()> {
        permute_heads("split_heads", x, out, batch, seq, heads, true)
    }

    fn merge_heads(
        &self,
        x: &Tensor,
        out: &mut Tensor,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<()> {
        permute_heads("merge_heads", x, out, batch, seq, heads, false)
    }

    fn attention_softmax(
        &self,
        scores: &mut Tensor,
        key_mask: &Tensor,
        heads: usize,
        scale: f32,
    ) -> Result<()> {
        let op = "attention_softmax";
        let km = u8s(op, "key_mask", key_mask)?;
        let shape = scores.shape().to_vec();
        if shape.len() != 4 || shape[1] != heads || shape[2] != shape[3] {
            return Err(Error::shape(
                op,
                format!("scores must be [B, {heads}, S, S], got {shape:?}"),
            ));
        }
        let (b, s) = (shape[0], shape[2]);
        check_len(op, "key_mask", km.len(), b * s)?;
        let ss = f32s_mut(op, "scores", scores)?;
        ss.par_chunks_mut(s).enumerate().for_each(|(row, r)| {
            let bi = row / (heads * s);
            let m = &km[bi * s..(bi + 1) * s];
            // A NaN score makes the row NaN (f32::max would drop it).
            let mut mx = f32::NEG_INFINITY;
            for j in 0..s {
                if m[j] != 0 {
                    mx = nan_max(mx, scale * r[j]);
                }
            }
            if mx == f32::NEG_INFINITY {
                r.iter_mut().for_each(|v| *v = 0.0);
                return;
            }
            let mut sum = 0.0f32;
            for j in 0..s {
                r[j] = if m[j] != 0 {
                    (scale * r[j] - mx).exp()
                } else {
                    0.0
                };
                sum += r[j];
            }
            let inv = 1.0 / sum;
            r.iter_mut().for_each(|v| *v *= inv);
        });
        Ok(())
    }

    fn softmax_backward(&self, probs: &Tensor, dprobs: &mut Tensor, scale: f32) -> Result<()> {
        let op = "softmax_backward";
        let ps = f32s(op, "probs", probs)?;
        let s = *probs.shape().last().unwrap_or(&0);
        let ds = f32s_mut(op, "dprobs", dprobs)?;
        check_len(op, "dprobs", ds.len(), ps.len())?;
        if s == 0 {
            return Ok(());
        }
        ds.par_chunks_mut(s).enumerate().for_each(|(row, d)| {
            let p = &ps[row * s..(row + 1) * s];
            let dot: f32 = p.iter().zip(d.iter()).map(|(p, d)| p * d).sum();
            for j in 0..s {
                d[j] = scale * p[j] * (d[j] - dot);
            }
        });
        Ok(())
    }

    fn gather_rows(
        &self,
        table: &Tensor,
        ids: &Tensor,
        out: &mut Tensor,
        accumulate: bool,
    ) -> Result<()> {
        let op = "gather_rows";
        let ts = f32s(op, "table", table)?;
        let is = i32s(op, "ids", ids)?;
        let (rows, cols) = table.rows_cols();
        check_ids(op, is, rows)?;
        let os = f32s_mut(op, "out", out)?;
        check_len(op, "out", os.len(), is.len() * cols)?;
        os.par_chunks_mut(cols.max(1))
            .zip(is.par_iter())
            .for_each(|(o, &id)| {
                let src = &ts[id as usize * cols..(id as usize + 1) * cols];
                if accumulate {
                    o.iter_mut().zip(src).for_each(|(o, s)| *o += s);
                } else {
                    o.copy_from_slice(src);
                }
            });
        Ok(())
    }

    fn scatter_add_rows(&self, d: &Tensor, ids: &Tensor, table_grad: &mut Tensor) -> Result<()> {
        let op = "scatter_add_rows";
        let ds = f32s(op, "d", d)?;
        let is = i32s(op, "ids", ids)?;
        let (rows, cols) = table_grad.rows_cols();
        check_ids(op, is, rows)?;
        check_len(op, "d", ds.len(), is.len() * cols)?;
        let tg = f32s_mut(op, "table_grad", table_grad)?;
        // Each task owns a block of columns of every table row and visits the
        // ids in order: the sum order is fixed.
        let block = 64usize;
        let nblocks = cols.div_ceil(block);
        let tp = SendPtr(tg.as_mut_ptr());
        (0..nblocks).into_par_iter().for_each(|bi| {
            let p = tp;
            let c0 = bi * block;
            let c1 = (c0 + block).min(cols);
            for (i, &id) in is.iter().enumerate() {
                for c in c0..c1 {
                    // SAFETY: ids were checked to be < rows; each task writes only
                    // its own column block.
                    unsafe { *p.get().add(id as usize * cols + c) += ds[i * cols + c] };
                }
            }
        });
        Ok(())
    }

    fn copy_rows(&self, src: &Tensor, dst: &mut Tensor, spec: &RowCopy) -> Result<()> {
        let op = "copy_rows";
        let ss = f32s(op, "src", src)?;
        let ds = f32s_mut(op, "dst", dst)?;
        if spec.rows == 0 || spec.cols == 0 {
            return Ok(());
        }
        let s_end = spec.src_offset + (spec.rows - 1) * spec.src_stride + spec.cols;
        let d_end = spec.dst_offset + (spec.rows - 1) * spec.dst_stride + spec.cols;
        if s_end > ss.len() || d_end > ds.len() || (spec.rows > 1 && spec.dst_stride < spec.cols) {
            return Err(Error::shape(
                op,
                format!(
                    "{spec:?} out of bounds (src {}, dst {})",
                    ss.len(),
                    ds.len()
                ),
            ));
        }
        for r in 0..spec.rows {
            let s = &ss[spec.src_offset + r * spec.src_stride..][..spec.cols];
            let d = &mut ds[spec.dst_offset + r * spec.dst_stride..][..spec.cols];
            if spec.accumulate {
                d.iter_mut().zip(s).for_each(|(d, s)| *d += s);
            } else {
                d.copy_from_slice(s);
            }
        }
        Ok(())
    }

    fn sum_squares(&self, x: &Tensor) -> Result<f64> {
        let xs = f32s("sum_squares", "x", x)?;
        let partial: Vec<f64> = xs
            .par_chunks(CHUNK)
            .map(|c| c.iter().map(|&v| v as f64 * v as f64).sum::<f64>())
            .collect();
        Ok(partial.iter().sum())
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
        let gs = f32s(op, "grad", g)?;
        let n = gs.len();
        let ms = f32s_mut(op, "m", m)?;
        check_len(op, "m", ms.len(), n)?;
        let ms = SendPtr(ms.as_mut_ptr());
        let vs = f32s_mut(op, "v", v)?;
        check_len(op, "v", vs.len(), n)?;
        let vs = SendPtr(vs.as_mut_ptr());
        let ps = f32s_mut(op, "param", p)?;
        check_len(op, "param", ps.len(), n)?;
        let (bc1, bc2) = hp.bias_corrections();
        let step_size = hp.lr / bc1;
        let bc2_sqrt = bc2.sqrt();
        let decay = 1.0 - hp.lr * hp.weight_decay;
        par_chunks(ps, |s, ps| {
            let (mp, vp) = (ms, vs);
            for (i, p) in ps.iter_mut().enumerate() {
                let j = s + i;
                // SAFETY: j < n; chunks are disjoint, so each m[j], v[j] has one writer.
                let (m, v) = unsafe { (&mut *mp.get().add(j), &mut *vp.get().add(j)) };
                adamw_element(p, gs[j], m, v, hp, decay, step_size, bc2_sqrt);
            }
        });
        Ok(())
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
        compress::movement_grads(w, grad_wprime, mask, grad_w, scores, rule)
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
        compress::losparse_importance(s, grad_s, ipt, ibar, ubar, step)
    }

    fn topk_threshold(
        &self,
        scores: &[&Tensor],
        k: usize,
        rule: TopkRule,
        scope: TopkScope,
        abs: bool,
    ) -> Result<TopkThreshold> {
        compress::topk_threshold(scores, k, rule, scope, abs)
    }

    fn topk_apply(
        &self,
        scores: &[&Tensor],
        th: &TopkThreshold,
        masks: &mut [&mut Tensor],
        apply: &mut [&mut Tensor],
    ) -> Result<usize> {
        compress::topk_apply(scores, th, masks, apply)
    }

    fn sigmoid_mask(
        &self,
        scores: &Tensor,
        tau: f32,
        mask: &mut Tensor,
        dscores: Option<&mut Tensor>,
        l1_grad_coef: f32,
    ) -> Result<usize> {
        compress::sigmoid_mask(scores, tau, mask, dscores, l1_grad_coef)
    }

    fn weighted_svd(
        &self,
        problems: &[WeightedSvdProblem<'_>],
        opts: &WeightedSvdOptions,
    ) -> Result<Vec<WeightedSvdResult>> {
        svd::weighted_svd(problems, opts)
    }
}

/// One element of AdamW exactly as `torch.optim.AdamW` (non-fused, single tensor) orders it.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn adamw_element(
    p: &mut f32,
    grad: f32,
    m: &mut f32,
    v: &mut f32,
    hp: &AdamWStep,
    decay: f32,
    step_size: f32,
    bc2_sqrt: f32,
) {
    let g = grad * hp.grad_scale;
    *p *= decay;
    *m += (g - *m) * (1.0 - hp.beta1);
    *v = *v * hp.beta2 + (1.0 - hp.beta2) * g * g;
    let denom = v.sqrt() / bc2_sqrt + hp.eps;
    *p -= step_size * *m / denom;
}

fn check_ids(op: &str, ids: &[i32], rows: usize) -> Result<()> {
    if let Some((i, &bad)) = ids
        .iter()
        .enumerate()
        .find(|(_, &id)| id < 0 || id as usize >= rows)
    {
        return Err(Error::shape(
            op,
            format!("id {bad} at position {i} is outside the table's {rows} rows"),
        ));
    }
    Ok(())
}

/// `[B·S, H·D] ↔ [B, H, S, D]`.
fn permute_heads(
    op: &str,
    x: &Tensor,
    out: &mut Tensor,
    b: usize,
    s: usize,
    h: usize,
    split: bool,
) -> Result<()> {
    let xs = f32s(op, "x", x)?;
    let os = f32s_mut(op, "out", out)?;
    let n = xs.len();
    check_len(op, "out", os.len(), n)?;
    if b * s * h == 0 || n % (b * s * h) != 0 {
        return Err(Error::shape(
            op,
            format!("{n} elements do not split into B={b}, S={s}, H={h}"),
        ));
    }
    let d = n / (b * s * h);
    // Parallel over destination rows of length d.
    os.par_chunks_mut(d).enumerate().for_each(|(row, o)| {
        let src_row = if split {
            // dst [bi, hi, si] <- src [bi, si, hi]
            let (bi, rem) = (row / (h * s), row % (h * s));
            let (hi, si) = (rem / s, rem % s);
            (bi * s + si) * h + hi
        } else {
            // dst [bi, si, hi] <- src [bi, hi, si]
            let (bi, rem) = (row / (s * h), row % (s * h));
            let (si, hi) = (rem / h, rem % h);
            (bi * h + hi) * s + si
        };
        o.copy_from_slice(&xs[src_row * d..(src_row + 1) * d]);
    });
    Ok(())
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
