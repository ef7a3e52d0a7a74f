//! Distillation from a fine-tuned teacher (docs/algorithms.md §3):
//! `CE + α_out·KL(softmax(z_t/T) ‖ softmax(z_s/T))·T² + α_layer·Σ_l MSE(h_s^l, h_t^l)`
//! over the embedding output and every layer output. Wraps another method's hooks.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backend::{Backend, DType};
use crate::data::{Batch, TaskKind};
use crate::error::{Error, Result};
use crate::model::loss;
use crate::model::{Bert, StepCtx};
use crate::train::trainer::{ExtraLoss, TrainHooks};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistillSettings {
    pub alpha_out: f32,
    pub alpha_layer: f32,
    pub temperature: f32,
}

impl Default for DistillSettings {
    fn default() -> Self {
        DistillSettings {
            alpha_out: 1.0,
            alpha_layer: 0.0,
            temperature: 2.0,
        }
    }
}

/// Student and teacher logits of one softmax, its width, and where its
/// gradient entries go in the logits.
type KlPart = (Vec<f32>, Vec<f32>, usize, Box<dyn Fn(usize) -> usize>);

pub struct DistillHooks<H: TrainHooks> {
    pub inner: H,
    pub teacher: Bert,
    pub settings: DistillSettings,
}

/// Checks that a teacher can teach this student; errors say what differs.
pub fn check_teacher(student: &Bert, teacher: &Bert, settings: &DistillSettings) -> Result<()> {
    let (s, t) = (&student.config, &teacher.config);
    if s.vocab_size != t.vocab_size {
        return Err(Error::msg(format!(
            "teacher vocabulary ({} tokens) does not match the student's ({}): they must share a tokenizer",
            t.vocab_size, s.vocab_size
        )));
    }
    if student.task != teacher.task {
        return Err(Error::msg(format!(
            "teacher head {:?} does not match the student's {:?} (labels must agree)",
            teacher.task, student.task
        )));
    }
    if settings.alpha_layer > 0.0
        && (s.hidden_size != t.hidden_size || s.num_hidden_layers != t.num_hidden_layers)
    {
        return Err(Error::msg(format!(
            "layer distillation needs the same depth and width: teacher {}×{}, student {}×{}",
            t.num_hidden_layers, t.hidden_size, s.num_hidden_layers, s.hidden_size
        )));
    }
    if settings.temperature <= 0.0 {
        return Err(Error::msg("distillation temperature must be positive"));
    }
    Ok(())
}

impl<H: TrainHooks> TrainHooks for DistillHooks<H> {
    fn on_step_begin(&mut self, be: &dyn Backend, model: &mut Bert, step: u64) -> Result<()> {
        self.inner.on_step_begin(be, model, step)
    }

    /// The teacher's logits are compared with the student's on the host.
    fn uses_logits(&self) -> bool {
        true
    }

    fn extra_loss(
        &mut self,
        be: &dyn Backend,
        ctx: &StepCtx,
        batch: &Batch,
        student: &Bert,
        logits: &[f32],
        scale: f32,
    ) -> Result<Option<ExtraLoss>> {
        let st = &self.settings;
        let tctx = StepCtx {
            training: false,
            ..*ctx
        };
        let t_logits = be.to_f32(&self.teacher.forward(be, &tctx, batch)?)?;
        let mut total = 0.0;
        let mut dlogits = vec![0.0f32; logits.len()];
        if st.alpha_out > 0.0 {
            let parts: Vec<KlPart> = match student.task {
                TaskKind::QuestionAnswering => {
                    // Start and end distributions over the tokens of each row.
                    let s = batch.seq_len;
                    (0..2)
                        .map(|w| {
                            let pick = |z: &[f32]| z.chunks(2).map(|c| c[w]).collect::<Vec<f32>>();
                            let map: Box<dyn Fn(usize) -> usize> = Box::new(move |i| i * 2 + w);
                            (pick(logits), pick(&t_logits), s, map)
                        })
                        .collect()
                }
                TaskKind::Regression => Vec::new(),
                TaskKind::Classification { num_labels } => vec![(
                    logits.to_vec(),
                    t_logits.clone(),
                    num_labels,
                    Box::new(|i| i),
                )],
            };
            if student.task == TaskKind::Regression {
                let g = loss::mse(logits, &t_logits, scale * st.alpha_out)?;
                total += st.alpha_out as f64 * g.loss;
                dlogits
                    .iter_mut()
                    .zip(&g.dlogits)
                    .for_each(|(d, g)| *d += g);
            }
            for (zs, zt, classes, map) in parts {
                let g = loss::distill_kl(&zs, &zt, classes, st.temperature, scale * st.alpha_out)?;
                total += st.alpha_out as f64 * g.loss;
                for (i, v) in g.dlogits.iter().enumerate() {
                    dlogits[map(i)] += v;
                }
            }
        }
        let mut hidden = None;
        if st.alpha_layer > 0.0 {
            let hs = student
                .hidden_states()
                .ok_or_else(|| Error::msg("student hidden states missing"))?;
            let ht = self
                .teacher
                .hidden_states()
                .ok_or_else(|| Error::msg("teacher hidden states missing"))?;
            let mut grads = Vec::with_capacity(hs.len());
            for (a, b) in hs.iter().zip(ht) {
                let n = a.numel() as f64;
                let mut diff = be.empty(a.shape(), DType::F32)?;
                be.copy(a, &mut diff)?;
                be.axpby(-1.0, b, 1.0, &mut diff)?;
                total += st.alpha_layer as f64 * be.sum_squares(&diff)? / n;
                be.scale(
                    &mut diff,
                    (2.0 * st.alpha_layer as f64 * scale as f64 / n) as f32,
                )?;
                grads.push(Some(diff));
            }
            hidden = Some(grads);
        }
        self.teacher.clear_activations();
        Ok(Some(ExtraLoss {
            loss: total,
            dlogits,
            hidden,
        }))
    }

    fn custom_update(
        &mut self,
        be: &dyn Backend,
        model: &mut Bert,
        hp_for: &dyn Fn(&crate::model::Param) -> crate::backend::AdamWStep,
    ) -> Result<bool> {
        self.inner.custom_update(be, model, hp_for)
    }
    fn on_step_end(&mut self, be: &dyn Backend, model: &mut Bert, step: u64) -> Result<()> {
        self.inner.on_step_end(be, model, step)
    }
    fn log_fields(&mut self, be: &dyn Backend, model: &mut Bert) -> Result<Vec<(String, Value)>> {
        self.inner.log_fields(be, model)
    }
    fn bar_note(&self) -> String {
        self.inner.bar_note()
    }
    fn state(&self) -> Value {
        self.inner.state()
    }
    fn restore(&mut self, state: &Value) -> Result<()> {
        self.inner.restore(state)
    }
}
