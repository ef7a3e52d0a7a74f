//! Every operation of the backend, one folder each: its contract (parameter
//! types, validation and the trait its devices implement), its CPU reference
//! (`cpu.rs`), its CUDA launcher (`cuda.rs`, for the kernels of
//! `kernels/<operation>.cu`), its test body (`tests.rs`, compiled into the
//! integration-test crate and run on every device present) and its benchmark
//! workload (`bench.rs`, `lpaf bench kernels`). `lowrank_sparse` is a
//! composition of the others, written once for both devices.

pub mod adamw;
pub mod attention;
pub mod cross_entropy;
pub mod elementwise;
pub mod embedding;
pub mod gemm;
pub mod grads;
pub mod layernorm;
pub mod losparse_importance;
pub mod lowrank_sparse;
pub mod movement;
pub mod reduce;
pub mod topk;
pub mod weighted_svd;
pub mod workload;
