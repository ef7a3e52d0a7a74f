//! The benchmark workload of the exact top-k for `lpaf bench kernels` and
//! `benches/kernels.rs`: its FLOPs and the fewest bytes it must move, so its
//! time is reported as a fraction of the ceiling measured in the same run.

use crate::backend::ops::workload::*;
use crate::backend::*;
use crate::error::Result;

/// Global top-k over the scores of all 72 encoder matrices: the threshold
/// alone, or the mask-and-apply pass (`W' = M⊙W`) given a threshold.
pub struct Topk {
    n: usize,
    k: usize,
    apply_pass: bool,
    scores: Vec<Tensor>,
    masks: Vec<Tensor>,
    apply: Vec<Tensor>,
    th: Option<TopkThreshold>,
}

impl Topk {
    pub fn new(
        be: &dyn Backend,
        scale: f64,
        keep: f64,
        apply_pass: bool,
        seed: u64,
    ) -> Result<Self> {
        let shapes = bert_shapes(scale);
        let mut t = Topk {
            n: 0,
            k: 0,
            apply_pass,
            scores: Vec::new(),
            masks: Vec::new(),
            apply: Vec::new(),
            th: None,
        };
        for (j, &(o, i)) in shapes.iter().enumerate() {
            t.scores
                .push(be.from_f32(&rand_f32(seed, 100 + j as u64, o * i, 1.0), &[o, i])?);
            if apply_pass {
                t.masks.push(be.zeros(&[o, i], DType::U8)?);
                t.apply
                    .push(be.from_f32(&rand_f32(seed, 200 + j as u64, o * i, 0.05), &[o, i])?);
            }
            t.n += o * i;
        }
        t.k = (keep * t.n as f64) as usize;
        if apply_pass {
            let refs: Vec<&Tensor> = t.scores.iter().collect();
            t.th =
                Some(be.topk_threshold(&refs, t.k, TopkRule::ExactK, TopkScope::Entries, false)?);
        }
        Ok(t)
    }
}

impl Workload for Topk {
    fn name(&self) -> String {
        if self.apply_pass {
            "top-k mask + apply (W' = M⊙W)".into()
        } else {
            "global top-k threshold".into()
        }
    }
    fn size(&self) -> String {
        format!(
            "{} scores in {} matrices, k = {}",
            fmt_count(self.n),
            self.scores.len(),
            fmt_count(self.k)
        )
    }
    fn bound(&self) -> Bound {
        Bound::Memory
    }
    fn flops(&self) -> f64 {
        0.0
    }
    fn bytes(&self) -> f64 {
        // threshold: one read of the scores; apply: read scores, write mask, read + write W'.
        (if self.apply_pass { 13.0 } else { 4.0 }) * self.n as f64
    }
    fn run(&mut self, be: &dyn Backend) -> Result<()> {
        let refs: Vec<&Tensor> = self.scores.iter().collect();
        match &self.th {
            None => be
                .topk_threshold(&refs, self.k, TopkRule::ExactK, TopkScope::Entries, false)
                .map(|_| ()),
            Some(th) => {
                let mut m: Vec<&mut Tensor> = self.masks.iter_mut().collect();
                let mut a: Vec<&mut Tensor> = self.apply.iter_mut().collect();
                be.topk_apply(&refs, th, &mut m, &mut a).map(|_| ())
            }
        }
    }
}
