//! `lpaf bench kernels` / `lpaf bench train`.

use crate::cli::BenchArgs;
use crate::error::{Error, Result};

pub fn bench(a: BenchArgs) -> Result<()> {
    match a.what.as_str() {
        "kernels" | "train" => Err(Error::msg(format!("lpaf bench {}: being written", a.what))),
        other => Err(Error::msg(format!(
            "unknown benchmark '{other}' (expected kernels or train)"
        ))),
    }
}
