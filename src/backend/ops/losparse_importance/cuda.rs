//! The CUDA launcher of `LosparseImportanceOps`.

use crate::backend::cuda::*;
use crate::backend::*;
use crate::error::{Error, Result};

impl LosparseImportanceOps for CudaBackend {
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
        let imp = importance_args(op, step)?;
        let n = same_numel(
            op,
            &[
                ("s", s),
                ("grad_s", grad_s),
                ("ipt", &*ipt),
                ("ibar", &*ibar),
            ],
        )?;
        let mut args = vec![
            KArg::Ptr(self.ptr(op, "s", s, DType::F32)?),
            KArg::Ptr(self.ptr(op, "grad_s", grad_s, DType::F32)?),
            KArg::Ptr(self.ptr_mut(op, "ipt", ipt, DType::F32)?),
            KArg::Ptr(self.ptr_mut(op, "ibar", ibar, DType::F32)?),
            KArg::Ptr(opt_ptr_mut(self, op, "ubar", ubar, n)?),
            KArg::U64(n as u64),
        ];
        args.extend_from_slice(&imp);
        self.launch(
            "losparse_importance",
            "losparse_importance",
            self.stride_cfg(n.div_ceil(4)),
            &args,
        )
    }

    fn adamw_with_importance(
        &self,
        s: &mut Tensor,
        grad_s: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        hp: &AdamWStep,
        ipt: &mut Tensor,
        ibar: &mut Tensor,
        ubar: Option<&mut Tensor>,
        step: &ImportanceStep,
    ) -> Result<()> {
        let op = "adamw_with_importance";
        let imp = importance_args(op, step)?;
        let n = same_numel(
            op,
            &[
                ("s", &*s),
                ("grad_s", grad_s),
                ("m", &*m),
                ("v", &*v),
                ("ipt", &*ipt),
                ("ibar", &*ibar),
            ],
        )?;
        // The same f32 scalars as CpuBackend::adamw.
        let (bc1, bc2) = hp.bias_corrections();
        let step_size = hp.lr / bc1;
        let bc2_sqrt = bc2.sqrt();
        let decay = 1.0 - hp.lr * hp.weight_decay;
        let mut args = vec![
            KArg::Ptr(self.ptr_mut(op, "s", s, DType::F32)?),
            KArg::Ptr(self.ptr(op, "grad_s", grad_s, DType::F32)?),
            KArg::Ptr(self.ptr_mut(op, "m", m, DType::F32)?),
            KArg::Ptr(self.ptr_mut(op, "v", v, DType::F32)?),
            KArg::Ptr(self.ptr_mut(op, "ipt", ipt, DType::F32)?),
            KArg::Ptr(self.ptr_mut(op, "ibar", ibar, DType::F32)?),
            KArg::Ptr(opt_ptr_mut(self, op, "ubar", ubar, n)?),
            KArg::U64(n as u64),
            KArg::F32(hp.grad_scale),
            KArg::F32(decay),
            KArg::F32(1.0 - hp.beta1),
            KArg::F32(hp.beta2),
            KArg::F32(1.0 - hp.beta2),
            KArg::F32(step_size),
            KArg::F32(bc2_sqrt),
            KArg::F32(hp.eps),
        ];
        args.extend_from_slice(&imp);
        self.launch(
            "losparse_importance",
            "adamw_importance",
            self.stride_cfg(n.div_ceil(4)),
            &args,
        )
    }
}

/// The scalars of an importance step, computed exactly as the CPU reference does.
fn importance_args(op: &str, step: &ImportanceStep) -> Result<[KArg; 8]> {
    if step.count == 0 {
        return Err(Error::shape(op, "ImportanceStep::count is 1-based; got 0"));
    }
    Ok([
        KArg::F32(step.count as f32),
        KArg::F32((step.count - 1) as f32),
        KArg::I32((step.count == 1) as i32),
        KArg::I32(step.close as i32),
        KArg::F32(step.beta1),
        KArg::F32(1.0 - step.beta1),
        KArg::F32(step.beta2),
        KArg::F32(1.0 - step.beta2),
    ])
}
