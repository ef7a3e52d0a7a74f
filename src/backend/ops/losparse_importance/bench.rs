//! The benchmark workload of LoSparse's importance update for `lpaf bench kernels` and
//! `benches/kernels.rs`: its FLOPs and the fewest bytes it must move, so its
//! time is reported as a fraction of the ceiling measured in the same run.

use crate::backend::ops::workload::*;
use crate::backend::*;
use crate::error::Result;

/// LoSparse's importance step closing a window (Ī and Ū), or AdamW on S fused
/// with a mid-window importance step.
pub struct Importance {
    n: usize,
    fused_adamw: bool,
    t: Vec<Tensor>,
    g: Tensor,
}

impl Importance {
    pub fn new(be: &dyn Backend, n: usize, fused_adamw: bool, seed: u64) -> Result<Self> {
        let mut t = Vec::new();
        for k in 0..6 {
            t.push(
                be.from_f32(
                    &rand_f32(seed, 10 + k, n, 0.01)
                        .iter()
                        .map(|x| x.abs())
                        .collect::<Vec<_>>(),
                    &[n],
                )?,
            );
        }
        Ok(Importance {
            n,
            fused_adamw,
            t,
            g: be.from_f32(&rand_f32(seed, 20, n, 1e-3), &[n])?,
        })
    }
}

impl Workload for Importance {
    fn name(&self) -> String {
        if self.fused_adamw {
            "AdamW + LoSparse importance (fused)".into()
        } else {
            "LoSparse importance (window close, Ī and Ū)".into()
        }
    }
    fn size(&self) -> String {
        format!("{} entries of S", fmt_count(self.n))
    }
    fn bound(&self) -> Bound {
        Bound::Memory
    }
    fn flops(&self) -> f64 {
        (if self.fused_adamw { 20.0 } else { 12.0 }) * self.n as f64
    }
    fn bytes(&self) -> f64 {
        // fused, mid-window: read S, ∇S, m, v, ipt; write S, m, v, ipt.
        // closing: read S, ∇S, ipt, Ī, Ū; write ipt, Ī, Ū.
        (if self.fused_adamw { 36.0 } else { 32.0 }) * self.n as f64
    }
    fn run(&mut self, be: &dyn Backend) -> Result<()> {
        let [s, m, v, ipt, ibar, ubar] = &mut self.t[..] else {
            unreachable!("six state tensors")
        };
        if self.fused_adamw {
            let hp = AdamWStep {
                lr: 1e-4,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
                step: 10,
                grad_scale: 1.0,
            };
            let st = ImportanceStep {
                count: 2,
                close: false,
                beta1: 0.85,
                beta2: 0.95,
            };
            be.adamw_with_importance(s, &self.g, m, v, &hp, ipt, ibar, None, &st)
        } else {
            let st = ImportanceStep {
                count: 10,
                close: true,
                beta1: 0.85,
                beta2: 0.95,
            };
            be.losparse_importance(s, &self.g, ipt, ibar, Some(ubar), &st)
        }
    }
}
