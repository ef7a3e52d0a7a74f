//! The CPU reference of `LosparseImportanceOps`.

use crate::backend::cpu::*;
use crate::backend::*;
use crate::error::{Error, Result};

impl LosparseImportanceOps for CpuBackend {
    fn losparse_importance(
        &self,
        s: &Tensor,
        grad_s: &Tensor,
        ipt: &mut Tensor,
        ibar: &mut Tensor,
        ubar: Option<&mut Tensor>,
        step: &ImportanceStep,
    ) -> Result<()> {
        let op = "losparse_importance";
        let p = ImportanceParams::new(op, step)?;
        same_numel(
            op,
            &[
                ("s", s),
                ("grad_s", grad_s),
                ("ipt", &*ipt),
                ("ibar", &*ibar),
            ],
        )?;
        let n = s.numel();
        let ss = f32s(op, "s", s)?;
        let gs = f32s(op, "grad_s", grad_s)?;
        let up = match ubar {
            Some(u) => {
                let us = f32s_mut(op, "ubar", u)?;
                check_len(op, "ubar", us.len(), n)?;
                Some(SendPtr(us.as_mut_ptr()))
            }
            None => None,
        };
        let bp = SendPtr(f32s_mut(op, "ibar", ibar)?.as_mut_ptr());
        let ip = f32s_mut(op, "ipt", ipt)?;
        par_chunks(ip, |start, ip| {
            let (bp, up) = (bp, up);
            for (i, ipt) in ip.iter_mut().enumerate() {
                let j = start + i;
                // SAFETY: j < n; chunks are disjoint, one writer per element.
                let ib = unsafe { &mut *bp.get().add(j) };
                let ub = up.map(|u| unsafe { &mut *u.get().add(j) });
                importance_element(ss[j], gs[j], ipt, ib, ub, &p);
            }
        });
        Ok(())
    }
}

/// The scalars of one importance update, computed once in f32.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ImportanceParams {
    pub count: f32,
    pub count_m1: f32,
    pub first: bool,
    pub close: bool,
    pub beta1: f32,
    pub one_m_beta1: f32,
    pub beta2: f32,
    pub one_m_beta2: f32,
}

impl ImportanceParams {
    pub(crate) fn new(op: &str, step: &ImportanceStep) -> Result<ImportanceParams> {
        if step.count == 0 {
            return Err(Error::shape(op, "ImportanceStep::count is 1-based; got 0"));
        }
        Ok(ImportanceParams {
            count: step.count as f32,
            count_m1: (step.count - 1) as f32,
            first: step.count == 1,
            close: step.close,
            beta1: step.beta1,
            one_m_beta1: 1.0 - step.beta1,
            beta2: step.beta2,
            one_m_beta2: 1.0 - step.beta2,
        })
    }
}

/// One element of the LoSparse importance update (see [`ImportanceStep`]).
#[inline]
pub(crate) fn importance_element(
    s: f32,
    g: f32,
    ipt: &mut f32,
    ibar: &mut f32,
    ubar: Option<&mut f32>,
    p: &ImportanceParams,
) {
    let imp = (s * g).abs();
    *ipt = if p.first {
        imp
    } else {
        (p.count_m1 * *ipt + imp) / p.count
    };
    if p.close {
        *ibar = p.beta1 * *ibar + p.one_m_beta1 * *ipt;
        if let Some(u) = ubar {
            *u = p.beta2 * *u + p.one_m_beta2 * (*ipt - *ibar).abs();
        }
    }
}
