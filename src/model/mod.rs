//! BERT: configuration, weight files, the model with explicit forward and
//! backward passes, heads and losses, and the compressible-linear seam.

pub mod bert;
pub mod config;
pub mod io;
pub mod linear;
pub mod loss;
pub mod param;
pub mod weights;

pub use bert::{Bert, Head};
pub use config::BertConfig;
pub use linear::{DenseLinear, LinearOp, StepCtx};
pub use param::{Param, ParamGroup};
