//! The CUDA launcher of `LayerNormOps`.

use crate::backend::cuda::*;
use crate::backend::*;
use crate::error::{Error, Result};

impl LayerNormOps for CudaBackend {
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
}
