//! The CPU reference of `GemmOps`.

use rayon::prelude::*;

use crate::backend::cpu::*;
use crate::backend::*;
use crate::error::{Error, Result};

impl GemmOps for CpuBackend {
    fn gemm(&self, g: &Gemm, a: &Tensor, b: &Tensor, c: &mut Tensor) -> Result<()> {
        let a = f32s("gemm", "a", a)?;
        let b = f32s("gemm", "b", b)?;
        let c = f32s_mut("gemm", "c", c)?;
        self.gemm_impl(g, a, b, c)
    }
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
