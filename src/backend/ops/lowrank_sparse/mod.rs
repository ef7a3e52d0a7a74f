//! The fused low-rank + sparse layer (`y = x·(U·V + M⊙S)ᵀ + b`, LoSparse;
//! docs/algorithms.md §6.4), written once for every device from the
//! backend's primitives: a select into `w_eff`, the cuBLAS / CPU GEMMs, the
//! bias and column-sum primitives and `masked_add`. The CPU reference and
//! the CUDA path are therefore the same composition; only the primitives
//! differ (and are tested against each other one by one).

pub(crate) mod bench;

use crate::backend::{check_len, want_dtype, Backend, DType, Gemm, Precision, Tensor};
use crate::error::{Error, Result};

/// Fused low-rank + sparse forward: `w_eff = U·V + M⊙S` (`S`, `M` optional;
/// no `M` means all ones), then `y = x·w_effᵀ + b`. `w_eff` (`out × in`) is
/// kept for the backward. One select `w_eff = M⊙S`, one GEMM
/// `w_eff += U·V` (beta 1), the dense GEMM `x·w_effᵀ` and the bias, every
/// GEMM at `precision`.
#[allow(clippy::too_many_arguments)]
pub fn forward<B: Backend + ?Sized>(
    be: &B,
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
    let op = "lowrank_sparse_forward";
    let d = LowrankDims::check(
        op,
        x,
        u,
        v,
        &[
            ("s", s, DType::F32),
            ("mask", mask, DType::U8),
            ("w_eff", Some(&*w_eff), DType::F32),
        ],
        bias,
    )?;
    if mask.is_some() && s.is_none() {
        return Err(Error::shape(op, "a mask was given without a sparse part s"));
    }
    check_len(op, "y", y.numel(), d.n * d.out)?;
    match (s, mask) {
        (Some(s), Some(m)) => be.mul_mask(s, m, w_eff)?,
        (Some(s), None) => be.copy(s, w_eff)?,
        (None, _) => {}
    }
    if d.rank > 0 {
        let g = Gemm::nn(d.out, d.inp, d.rank)
            .beta(if s.is_some() { 1.0 } else { 0.0 })
            .precision(precision);
        be.gemm(&g, u, v, w_eff)?;
    } else if s.is_none() {
        // Rank 0 and no sparse part: the weight is zero (no k = 0 GEMM).
        be.fill(w_eff, 0.0)?;
    }
    be.gemm(
        &Gemm::nt(d.n, d.out, d.inp).precision(precision),
        x,
        w_eff,
        y,
    )?;
    if let Some(b) = bias {
        if d.n > 0 && d.out > 0 {
            be.add_row_bias(y, b)?;
        }
    }
    Ok(())
}

/// Its backward: `dx = dy·w_eff` (overwritten, when asked), and accumulated
/// `dU += dW·Vᵀ`, `dV += Uᵀ·dW`, `dS += M⊙dW`, `db += Σ_rows dy` where
/// `dW = dyᵀ·x`. `dw_scratch` (`out × in`) holds `dW`.
#[allow(clippy::too_many_arguments)]
pub fn backward<B: Backend + ?Sized>(
    be: &B,
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
    let op = "lowrank_sparse_backward";
    let d = LowrankDims::check(
        op,
        x,
        u,
        v,
        &[
            ("mask", mask, DType::U8),
            ("w_eff", Some(w_eff), DType::F32),
            ("dw_scratch", Some(&*dw_scratch), DType::F32),
            ("ds", ds.as_deref(), DType::F32),
        ],
        db.as_deref(),
    )?;
    check_len(op, "dy", dy.numel(), d.n * d.out)?;
    check_len(op, "du", du.numel(), d.out * d.rank)?;
    check_len(op, "dv", dv.numel(), d.rank * d.inp)?;
    if let Some(dx) = &dx {
        check_len(op, "dx", dx.numel(), d.n * d.inp)?;
    }
    // dW = dyᵀ·x
    be.gemm(
        &Gemm::tn(d.out, d.inp, d.n).precision(precision),
        dy,
        x,
        dw_scratch,
    )?;
    if let Some(dx) = dx {
        be.gemm(
            &Gemm::nn(d.n, d.inp, d.out).precision(precision),
            dy,
            w_eff,
            dx,
        )?;
    }
    if d.rank > 0 {
        be.gemm(
            &Gemm::nt(d.out, d.rank, d.inp)
                .beta(1.0)
                .precision(precision),
            dw_scratch,
            v,
            du,
        )?;
        be.gemm(
            &Gemm::tn(d.rank, d.inp, d.out)
                .beta(1.0)
                .precision(precision),
            u,
            dw_scratch,
            dv,
        )?;
    }
    if let Some(ds) = ds {
        be.masked_add(dw_scratch, mask, ds)?;
    }
    if let Some(db) = db {
        if d.n > 0 && d.out > 0 {
            be.col_sum(dy, db, true)?;
        }
    }
    Ok(())
}

/// Shapes of a fused low-rank + sparse layer (see [`lowrank_sparse::forward`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LowrankDims {
    /// Rows of `x` (tokens).
    pub n: usize,
    pub inp: usize,
    pub out: usize,
    pub rank: usize,
}

impl LowrankDims {
    /// Checks `x`, `u` (`out × r`), `v` (`r × in`) and the optional tensors
    /// (`out × in` ones by element count, `bias` of `out`).
    pub fn check(
        op: &str,
        x: &Tensor,
        u: &Tensor,
        v: &Tensor,
        out_by_in: &[(&str, Option<&Tensor>, DType)],
        bias: Option<&Tensor>,
    ) -> Result<LowrankDims> {
        if u.shape().len() != 2 || v.shape().len() != 2 {
            return Err(Error::shape(
                op,
                format!("u {:?} and v {:?} must be matrices", u.shape(), v.shape()),
            ));
        }
        let (out, rank) = (u.shape()[0], u.shape()[1]);
        let (rv, inp) = (v.shape()[0], v.shape()[1]);
        if rv != rank {
            return Err(Error::shape(
                op,
                format!(
                    "u {:?} and v {:?} disagree on the rank",
                    u.shape(),
                    v.shape()
                ),
            ));
        }
        want_dtype(op, "x", x, DType::F32)?;
        want_dtype(op, "u", u, DType::F32)?;
        want_dtype(op, "v", v, DType::F32)?;
        if inp == 0 || x.numel() % inp != 0 || x.shape().last() != Some(&inp) {
            return Err(Error::shape(
                op,
                format!("x {:?} must have {inp} columns", x.shape()),
            ));
        }
        let n = x.numel() / inp;
        for (name, t, dt) in out_by_in {
            if let Some(t) = t {
                want_dtype(op, name, t, *dt)?;
                if t.numel() != out * inp {
                    return Err(Error::shape(
                        op,
                        format!("{name} {:?} must have {out}×{inp} elements", t.shape()),
                    ));
                }
            }
        }
        if let Some(b) = bias {
            want_dtype(op, "bias", b, DType::F32)?;
            if b.numel() != out {
                return Err(Error::shape(
                    op,
                    format!("bias {:?} must have {out} elements", b.shape()),
                ));
            }
        }
        Ok(LowrankDims { n, inp, out, rank })
    }
}
