//! lpaf: a CUDA-first engine for compressing BERT-family models by pruning and
//! low-rank factorization (LPAF, LoSparse, movement / magnitude pruning, SVD).
//!
//! Layers, from the bottom:
//! - [`device`]: finding a GPU without panicking; choosing the backend.
//! - [`kernels`]: the embedded CUDA fatbins built from `kernels/*.cu`.
//! - [`backend`]: tensors and every operation, on the CPU (the reference) and on CUDA.
//! - [`model`]: BERT (config, weights, tokenizer, forward / backward) with a
//!   swappable compressible-linear seam.
//! - [`data`]: datasets (GLUE, CSV/TSV/JSONL, SQuAD, polarity) and batching.
//! - [`train`]: optimizer, schedules, trainer, checkpoints, metrics, logs.
//! - [`compress`]: the compression methods, recipes and export.
//! - [`sweep`]: sweep files expanded into runs, run locally or on Slurm, collected.
//! - [`bench`]: `lpaf bench kernels` and `lpaf bench train`.
//! - [`plot`]: `lpaf plot` (training curves, spectra, rooflines; PNG / SVG).
//! - [`cli`]: the `lpaf` command.
//! - [`out`]: standard output that ends quietly on a closed pipe (used by every layer that prints).

#[cfg(all(feature = "cuda12", feature = "cuda13"))]
compile_error!(
    "features cuda12 and cuda13 exclude each other: the CUDA 12 build is \
     `cargo build --no-default-features --features cuda12`"
);
#[cfg(not(any(feature = "cuda12", feature = "cuda13")))]
compile_error!("one of the features cuda13 (the default) or cuda12 is needed");

pub mod backend;
pub mod bench;
pub mod cli;
pub mod compress;
pub mod data;
pub mod device;
pub mod error;
pub mod fault; // crash points for the crash tests (docs/robustness.md)
pub mod kernels;
pub mod model;
pub mod out;
pub mod plot;
pub mod sweep;
pub mod train;

pub use error::{Error, Result};
