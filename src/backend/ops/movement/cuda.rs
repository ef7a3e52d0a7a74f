//! The CUDA launcher of `MovementOps`.

use crate::backend::cuda::*;
use crate::backend::*;
use crate::error::{Error, Result};

impl MovementOps for CudaBackend {
    fn movement_grads(
        &self,
        w: &Tensor,
        g: &Tensor,
        mask: &Tensor,
        grad_w: &mut Tensor,
        scores: &mut Tensor,
        rule: ScoreRule,
    ) -> Result<()> {
        let op = "movement_grads";
        let n = same_numel(
            op,
            &[
                ("w", w),
                ("grad_wprime", g),
                ("mask", mask),
                ("grad_w", &*grad_w),
                ("scores", &*scores),
            ],
        )?;
        let args = [
            KArg::Ptr(self.ptr(op, "w", w, DType::F32)?),
            KArg::Ptr(self.ptr(op, "grad_wprime", g, DType::F32)?),
            KArg::Ptr(self.ptr(op, "mask", mask, DType::U8)?),
            KArg::Ptr(self.ptr_mut(op, "grad_w", grad_w, DType::F32)?),
            KArg::Ptr(self.ptr_mut(op, "scores", scores, DType::F32)?),
            KArg::U64(n as u64),
            KArg::I32((rule == ScoreRule::Accumulate) as i32),
        ];
        self.launch(
            "movement",
            "movement_grads",
            self.stride_cfg(n.div_ceil(4)),
            &args,
        )
    }

    fn sigmoid_mask(
        &self,
        scores: &Tensor,
        tau: f32,
        mask: &mut Tensor,
        dscores: Option<&mut Tensor>,
        coef: f32,
    ) -> Result<usize> {
        let op = "sigmoid_mask";
        if !(tau > 0.0 && tau < 1.0) {
            return Err(Error::shape(
                op,
                format!("tau = {tau} must lie strictly between 0 and 1"),
            ));
        }
        let t = tau as f64;
        let logit = (t / (1.0 - t)).ln();
        let n = scores.numel();
        check_len(op, "mask", mask.numel(), n)?;
        let pd = match dscores {
            Some(d) if coef != 0.0 => opt_ptr_mut(self, op, "dscores", Some(d), n)?,
            Some(d) => {
                check_len(op, "dscores", d.numel(), n)?;
                0
            }
            None => 0,
        };
        let mut count = self.zeros(&[2], DType::I32)?;
        let pc = self.ptr_mut(op, "count", &mut count, DType::I32)?;
        let args = [
            KArg::Ptr(self.ptr(op, "scores", scores, DType::F32)?),
            KArg::Ptr(self.ptr_mut(op, "mask", mask, DType::U8)?),
            KArg::Ptr(pd),
            KArg::U64(n as u64),
            KArg::U64(logit.to_bits()),
            KArg::F32(coef),
            KArg::Ptr(pc),
        ];
        let blocks = n
            .div_ceil(BLOCK as usize)
            .clamp(1, self.sm_count as usize * 16);
        self.launch(
            "movement",
            "sigmoid_mask",
            cfg((blocks as u32, 1, 1), BLOCK, 0),
            &args,
        )?;
        Ok(read_u64s(self, pc, 1)?[0] as usize)
    }
}
