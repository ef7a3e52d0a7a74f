//! The CUDA launcher of `AdamWOps`.

use crate::backend::cuda::*;
use crate::backend::*;
use crate::error::Result;

impl AdamWOps for CudaBackend {
    fn adamw(
        &self,
        p: &mut Tensor,
        g: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        hp: &AdamWStep,
    ) -> Result<()> {
        let op = "adamw";
        let pg = self.ptr(op, "grad", g, DType::F32)?;
        let n = g.numel();
        let pm = self.ptr_mut(op, "m", m, DType::F32)?;
        check_len(op, "m", m.numel(), n)?;
        let pv = self.ptr_mut(op, "v", v, DType::F32)?;
        check_len(op, "v", v.numel(), n)?;
        let pp = self.ptr_mut(op, "param", p, DType::F32)?;
        check_len(op, "param", p.numel(), n)?;
        if n == 0 {
            return Ok(());
        }
        // The scalars exactly as the CPU computes them (f32).
        let (bc1, bc2) = hp.bias_corrections();
        let step_size = hp.lr / bc1;
        let bc2_sqrt = bc2.sqrt();
        let decay = 1.0 - hp.lr * hp.weight_decay;
        self.launch(
            "adamw",
            "adamw_f32",
            self.stride_cfg(n.div_ceil(4)),
            &[
                KArg::Ptr(pp),
                KArg::Ptr(pg),
                KArg::Ptr(pm),
                KArg::Ptr(pv),
                KArg::U64(n as u64),
                KArg::F32(hp.grad_scale),
                KArg::F32(decay),
                KArg::F32(1.0 - hp.beta1),
                KArg::F32(hp.beta2),
                KArg::F32(1.0 - hp.beta2),
                KArg::F32(hp.eps),
                KArg::F32(step_size),
                KArg::F32(bc2_sqrt),
            ],
        )
    }
}
