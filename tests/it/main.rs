//! The one integration-test crate (one binary to carry to the GPU machine).
//! GPU tests print "skipped: no CUDA device" and pass without a GPU; with
//! `LPAF_REQUIRE_GPU=1` they fail instead.

mod common;
mod backend_cpu;
mod gpu_ops;
mod kernels_cpu;
mod kernels_gpu;
mod data;
mod model;
mod train;
mod compress;
mod cli;
