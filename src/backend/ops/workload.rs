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

/// A workload whose run is a closure over the tensors it owns: how the
/// operations with one call per run (elementwise, LayerNorm, softmax, …)
/// state theirs in a few lines.
pub struct OpWorkload {
    pub name: String,
    pub size: String,
    pub bound: Bound,
    pub flops: f64,
    pub bytes: f64,
    #[allow(clippy::type_complexity)]
    pub run: Box<dyn FnMut(&dyn Backend) -> Result<()>>,
}

impl OpWorkload {
    /// A memory-bound workload.
    pub fn memory(
        name: &str,
        size: String,
        flops: f64,
        bytes: f64,
        run: impl FnMut(&dyn Backend) -> Result<()> + 'static,
    ) -> Box<dyn Workload> {
        Box::new(OpWorkload {
            name: name.to_string(),
            size,
            bound: Bound::Memory,
            flops,
            bytes,
            run: Box::new(run),
        })
    }
}

impl Workload for OpWorkload {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn size(&self) -> String {
        self.size.clone()
    }
    fn bound(&self) -> Bound {
        self.bound
    }
    fn flops(&self) -> f64 {
        self.flops
    }
    fn bytes(&self) -> f64 {
        self.bytes
    }
    fn run(&mut self, be: &dyn Backend) -> Result<()> {
        (self.run)(be)
    }
}

/// An F32 tensor of Philox values in `[-amp, amp)`.
pub fn rand_tensor(
    be: &dyn Backend,
    seed: u64,
    stream: u64,
    shape: &[usize],
    amp: f32,
) -> Result<Tensor> {
    let n = shape.iter().product();
    be.from_f32(&rand_f32(seed, stream, n, amp), shape)
}

/// The attention shape of BERT-base at a scale: (batch, heads, sequence),
/// sequence 128 and 64-wide heads, the batch from the token count.
pub fn attention_dims(scale: f64) -> (usize, usize, usize) {
    let (h, n) = scaled_dims(scale);
    let s = 128.min(n);
    ((n / s).max(1), (h / 64).max(1), s)
}
