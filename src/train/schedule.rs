//! Learning-rate and sparsity schedules.

use serde::{Deserialize, Serialize};

/// Linear warm-up then linear decay to 0 (transformers'
/// `get_linear_schedule_with_warmup`): the multiplier at optimizer step `t`
/// (0-based) is `t / warmup` during warm-up, then `(total − t) / (total − warmup)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearSchedule {
    pub base_lr: f32,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl LinearSchedule {
    pub fn lr(&self, step: u64) -> f32 {
        let mult = if step < self.warmup_steps {
            step as f64 / self.warmup_steps.max(1) as f64
        } else {
            let rest = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
            (self.total_steps.saturating_sub(step) as f64 / rest).max(0.0)
        };
        (self.base_lr as f64 * mult) as f32
    }
}

/// The cubic sparsity schedule of movement pruning (Sanh et al.;
/// docs/algorithms.md §2, §3):
/// the kept fraction stays at `initial` for `warmup` steps, then falls as
/// `final + (initial − final)·(1 − (t − warmup)/(span))³` over `span` steps,
/// then stays at `final` (for `cooldown` steps until the end).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CubicSchedule {
    pub initial: f64,
    pub final_kept: f64,
    pub warmup: u64,
    pub span: u64,
}

impl CubicSchedule {
    /// Builds the schedule for `total` steps with `warmup` initial steps and
    /// `cooldown` final steps at the target.
    pub fn new(
        initial: f64,
        final_kept: f64,
        total: u64,
        warmup: u64,
        cooldown: u64,
    ) -> CubicSchedule {
        let span = total.saturating_sub(warmup).saturating_sub(cooldown);
        CubicSchedule {
            initial,
            final_kept,
            warmup,
            span,
        }
    }

    /// Kept fraction at step `t` (0-based).
    pub fn kept(&self, t: u64) -> f64 {
        if t < self.warmup {
            return self.initial;
        }
        if self.span == 0 || t >= self.warmup + self.span {
            return self.final_kept;
        }
        let p = (t - self.warmup) as f64 / self.span as f64;
        self.final_kept + (self.initial - self.final_kept) * (1.0 - p).powi(3)
    }

    /// Whether step `t` is still inside the falling (cubic) phase.
    pub fn in_cubic_phase(&self, t: u64) -> bool {
        t >= self.warmup && t < self.warmup + self.span
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_schedule_matches_transformers() {
        let s = LinearSchedule {
            base_lr: 1.0,
            warmup_steps: 10,
            total_steps: 110,
        };
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(5) - 0.5).abs() < 1e-7);
        assert_eq!(s.lr(10), 1.0);
        assert!((s.lr(60) - 0.5).abs() < 1e-7);
        assert_eq!(s.lr(110), 0.0);
        assert_eq!(s.lr(200), 0.0);
    }

    #[test]
    fn cubic_schedule_values() {
        let c = CubicSchedule::new(1.0, 0.1, 100, 10, 20);
        assert_eq!(c.kept(0), 1.0);
        assert_eq!(c.kept(9), 1.0);
        assert_eq!(c.kept(10), 1.0);
        // Halfway through the 70-step span: 0.1 + 0.9·0.5³.
        assert!((c.kept(45) - (0.1 + 0.9 * 0.125)).abs() < 1e-12);
        assert_eq!(c.kept(80), 0.1);
        assert_eq!(c.kept(99), 0.1);
        assert!(c.in_cubic_phase(10) && c.in_cubic_phase(79) && !c.in_cubic_phase(80));
    }
}
