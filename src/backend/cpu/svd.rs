//! CPU reference of the sparsity-aware (weighted) SVD, SPEC §4.2. TEMPORARY STUB: being written.
use crate::backend::*;
use crate::error::{Error, Result};

pub fn weighted_svd(
    problems: &[WeightedSvdProblem<'_>],
    opts: &WeightedSvdOptions,
) -> Result<Vec<WeightedSvdResult>> {
    let _ = (problems, opts);
    Err(Error::msg("weighted_svd: not implemented yet"))
}
