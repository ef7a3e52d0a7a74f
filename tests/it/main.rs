//! The one integration-test crate (one binary to carry to the GPU machine).
//! GPU tests print "skipped: no CUDA device" and pass without a GPU; with
//! `LPAF_REQUIRE_GPU=1` they fail instead.

mod backend_core;
mod bad_inputs;
mod bench_kernels;
mod cli;
mod common;
mod compress;
mod data;
mod gpu_compress;
mod gpu_step;
mod layers;
mod model;
mod ops_support;
mod plot;
mod robustness;
mod sweep;
mod train;

// Every operation's test body lives in its folder beside its CPU reference
// and CUDA launcher (src/backend/ops/<operation>/tests.rs).
#[path = "../../src/backend/ops/adamw/tests.rs"]
mod ops_adamw;
#[path = "../../src/backend/ops/attention/tests.rs"]
mod ops_attention;
#[path = "../../src/backend/ops/cross_entropy/tests.rs"]
mod ops_cross_entropy;
#[path = "../../src/backend/ops/elementwise/tests.rs"]
mod ops_elementwise;
#[path = "../../src/backend/ops/embedding/tests.rs"]
mod ops_embedding;
#[path = "../../src/backend/ops/gemm/tests.rs"]
mod ops_gemm;
#[path = "../../src/backend/ops/grads/tests.rs"]
mod ops_grads;
#[path = "../../src/backend/ops/layernorm/tests.rs"]
mod ops_layernorm;
#[path = "../../src/backend/ops/losparse_importance/tests.rs"]
mod ops_losparse_importance;
#[path = "../../src/backend/ops/lowrank_sparse/tests.rs"]
mod ops_lowrank_sparse;
#[path = "../../src/backend/ops/movement/tests.rs"]
mod ops_movement;
#[path = "../../src/backend/ops/reduce/tests.rs"]
mod ops_reduce;
#[path = "../../src/backend/ops/topk/tests.rs"]
mod ops_topk;
#[path = "../../src/backend/ops/weighted_svd/tests.rs"]
mod ops_weighted_svd;
