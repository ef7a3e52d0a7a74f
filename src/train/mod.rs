//! Training: AdamW, schedules, the trainer loop, checkpoints, metrics, logs.

pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod log;
pub mod metrics;
pub mod optimizer;
pub mod provenance;
pub mod run;
pub mod rundir;
pub mod schedule;
pub mod trainer;
