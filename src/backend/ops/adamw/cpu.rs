//! The CPU reference of `AdamWOps`.

use crate::backend::cpu::*;
use crate::backend::*;
use crate::error::Result;

impl AdamWOps for CpuBackend {
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

    fn adamw_many(&self, params: &mut AdamWWalk<'_>) -> Result<()> {
        params(&mut |s| self.adamw(s.p, s.g, s.m, s.v, &s.hp))
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
