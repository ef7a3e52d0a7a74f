//! What every operation's benchmark workload (`ops/<operation>/bench.rs`)
//! implements, and the sizes and inputs they share: BERT-base shapes at a
//! scale, inputs drawn from Philox (the same on every device).

use serde::Serialize;

use crate::backend::*;
use crate::error::Result;

/// What limits a workload.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Bound {
    /// Memory bandwidth: compared with the copy ceiling.
    Memory,
    /// Matrix products at this precision: compared with the GEMM ceiling.
    Compute(Precision),
}

/// A timed piece of work with its FLOP and byte counts.
pub trait Workload {
    fn name(&self) -> String;
    fn size(&self) -> String;
    fn bound(&self) -> Bound;
    fn flops(&self) -> f64;
    /// The fewest bytes the work must move through memory.
    fn bytes(&self) -> f64;
    fn run(&mut self, be: &dyn Backend) -> Result<()>;
}

/// BERT-base's sizes at a scale: hidden size (a multiple of 32) and tokens.
pub fn scaled_dims(scale: f64) -> (usize, usize) {
    let h = ((768.0 * scale.sqrt() / 32.0).round() as usize).max(1) * 32;
    let n = ((4096.0 * scale / 32.0).round() as usize).max(1) * 32;
    (h, n)
}

/// The 72 encoder matrices of BERT-base at a scale (per layer Q, K, V, O,
/// intermediate, output), `(out, in)`.
pub fn bert_shapes(scale: f64) -> Vec<(usize, usize)> {
    let (h, _) = scaled_dims(scale);
    (0..12)
        .flat_map(|_| [(h, h), (h, h), (h, h), (h, h), (4 * h, h), (h, 4 * h)])
        .collect()
}

pub fn rand_f32(seed: u64, stream: u64, n: usize, amp: f32) -> Vec<f32> {
    (0..n)
        .map(|i| amp * (2.0 * philox::uniform(seed, stream, i as u64) - 1.0))
        .collect()
}

pub fn rand_mask(seed: u64, stream: u64, n: usize, keep: f32) -> Vec<u8> {
    (0..n)
        .map(|i| (philox::uniform(seed, stream, i as u64) < keep) as u8)
        .collect()
}

pub fn fmt_count(n: usize) -> String {
    if n >= 1_000_000 {
        format!("{:.1} M", n as f64 / 1e6)
    } else if n >= 10_000 {
        format!("{:.0} k", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}

pub fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "fp32",
        Precision::Tf32 => "tf32",
        Precision::Bf16 => "bf16",
    }
}
