//! Trainable parameters: value, gradient and AdamW state on the backend.

use crate::backend::{Backend, DType, Tensor};
use crate::error::Result;

/// Which optimizer settings a parameter gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamGroup {
    /// Model weights: the main learning rate; weight decay if `decay`.
    Weights,
    /// Movement-pruning scores: their own learning rate, no weight decay.
    Scores,
}

pub struct Param {
    /// The Hugging Face name (`bert.encoder.layer.0.attention.self.query.weight`).
    pub name: String,
    pub value: Tensor,
    pub grad: Tensor,
    /// AdamW first / second moments, allocated at the first step.
    pub adam: Option<(Tensor, Tensor)>,
    /// Weight decay applies (not to biases and LayerNorm weights).
    pub decay: bool,
    pub group: ParamGroup,
    /// Frozen parameters get no gradient and no optimizer step.
    pub frozen: bool,
}

impl std::fmt::Debug for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Param({}, {:?})", self.name, self.value.shape())
    }
}

impl Param {
    /// A parameter with a zero gradient buffer.
    pub fn new(
        be: &dyn Backend,
        name: impl Into<String>,
        value: Tensor,
        decay: bool,
    ) -> Result<Param> {
        let grad = be.zeros(value.shape(), DType::F32)?;
        Ok(Param {
            name: name.into(),
            value,
            grad,
            adam: None,
            decay,
            group: ParamGroup::Weights,
            frozen: false,
        })
    }

    /// From host values.
    pub fn from_host(
        be: &dyn Backend,
        name: impl Into<String>,
        data: &[f32],
        shape: &[usize],
        decay: bool,
    ) -> Result<Param> {
        let value = be.from_f32(data, shape)?;
        Param::new(be, name, value, decay)
    }

    pub fn numel(&self) -> usize {
        self.value.numel()
    }

    /// The AdamW moments, allocated (zero) on first use.
    pub fn adam_state(&mut self, be: &dyn Backend) -> Result<(&mut Tensor, &mut Tensor)> {
        if self.adam.is_none() {
            let m = be.zeros(self.value.shape(), DType::F32)?;
            let v = be.zeros(self.value.shape(), DType::F32)?;
            self.adam = Some((m, v));
        }
        let (m, v) = self.adam.as_mut().expect("allocated above");
        Ok((m, v))
    }
}

/// Visits parameters; `Err` stops the walk.
pub type ParamVisitor<'a> = dyn FnMut(&mut Param) -> Result<()> + 'a;

/// Visits named non-parameter state tensors (masks, score averages, …) that a
/// checkpoint must hold for a bit-identical resume.
pub type StateVisitor<'a> = dyn FnMut(&str, &mut Tensor) -> Result<()> + 'a;
