//! The CPU reference of `GradsOps`.

use super::check_stats;
use crate::backend::cpu::*;
use crate::backend::*;
use crate::error::Result;

impl GradsOps for CpuBackend {
    fn grad_norm_clip(
        &self,
        grads: &mut TensorWalk<'_>,
        max_norm: f32,
        stats: &mut Tensor,
    ) -> Result<()> {
        check_stats("grad_norm_clip", stats)?;
        let mut total = 0.0f64;
        grads(&mut |g| {
            total += self.sum_squares(g)?;
            Ok(())
        })?;
        let norm = total.sqrt();
        let s = f32s_mut("grad_norm_clip", "stats", stats)?;
        s[0] = norm as f32;
        s[1] = clip_factor(norm, max_norm);
        Ok(())
    }

    fn scale_by_clip_factor(&self, grads: &mut TensorWalk<'_>, stats: &Tensor) -> Result<()> {
        check_stats("scale_by_clip_factor", stats)?;
        let f = f32s("scale_by_clip_factor", "stats", stats)?[1];
        if f == 1.0 {
            return Ok(());
        }
        grads(&mut |g| self.scale(g, f))
    }

    fn zero_all(&self, grads: &mut TensorWalk<'_>) -> Result<()> {
        grads(&mut |g| {
            f32s_mut("zero_all", "gradient", g)?;
            self.fill(g, 0.0)
        })
    }
}
