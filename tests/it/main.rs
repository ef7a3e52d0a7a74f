//! The one integration-test crate (one binary to carry to the GPU machine).
//! GPU tests print "skipped: no CUDA device" and pass without a GPU; with
//! `LPAF_REQUIRE_GPU=1` they fail instead.

mod backend_cpu;
mod bad_inputs;
mod cli;
mod common;
mod compress;
mod data;
mod gpu_compress;
mod gpu_ops;
mod gpu_step;
mod kernels_cpu;
mod kernels_gpu;
mod layers;
mod model;
mod plot;
mod robustness;
mod sweep;
mod train;
