//! `lpaf bench kernels`: every operation's workload (each folder's
//! `src/backend/ops/<operation>/bench.rs`) measured on one backend, against the
//! ceilings measured in the same run (device-to-device copy bandwidth, GEMM
//! rate at fp32 / tf32 / bf16), with the goals of the compression kernels
//! (docs/algorithms.md §6) and whether they are met.
//!
//! Every workload counts its FLOPs and the fewest bytes it must move; a time is
//! the median over `repeats` samples after `warmup` runs, each sample a batch
//! of runs long enough (≥ `min_sample_s`) that the synchronisation around it is
//! negligible. Sizes are BERT-base's at `scale = 1` (85 M encoder weights,
//! N = 4096 tokens) and shrink with `scale` so the same code runs on the CPU
//! in a test. Timing uses the host clock around `Backend::synchronize` (the
//! trait offers no device events).
//!
//! The workloads are public so that `benches/kernels.rs` (criterion) times the
//! same code.

use std::fmt;
use std::time::Instant;

use serde::Serialize;

use crate::backend::ops;
pub use crate::backend::ops::workload::*;
use crate::backend::*;
use crate::error::Result;

pub use crate::backend::ops::gemm::bench::SquareGemm;
pub use crate::backend::ops::losparse_importance::bench::Importance;
pub use crate::backend::ops::lowrank_sparse::bench::{Layer, LayerKind};
pub use crate::backend::ops::movement::bench::MovementGrads;
pub use crate::backend::ops::topk::bench::Topk;
pub use crate::backend::ops::weighted_svd::bench::WeightedSvd;

/// What to measure and how.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct KernelBenchOptions {
    /// Size factor: 1 = BERT-base (85 M encoder weights; a 3072×768 layer at
    /// N = 4096). Matrix sides scale with √scale, token counts with scale.
    pub scale: f64,
    /// Untimed runs before measuring.
    pub warmup: usize,
    /// Timed samples; the median is reported.
    pub repeats: usize,
    /// Shortest sample, in seconds (short kernels are run several times per sample).
    pub min_sample_s: f64,
    pub seed: u64,
}

impl Default for KernelBenchOptions {
    fn default() -> Self {
        KernelBenchOptions {
            scale: 1.0,
            warmup: 3,
            repeats: 10,
            min_sample_s: 0.005,
            seed: 0,
        }
    }
}

impl KernelBenchOptions {
    /// Tiny sizes and few repeats: for tests and a quick look on the CPU.
    pub fn quick(scale: f64) -> Self {
        KernelBenchOptions {
            scale,
            warmup: 1,
            repeats: 3,
            min_sample_s: 0.0,
            seed: 0,
        }
    }
}

/// One measured line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct KernelBenchRow {
    pub kernel: String,
    pub size: String,
    pub bound: Bound,
    pub flops: f64,
    pub bytes: f64,
    /// Median seconds per run (None when the run failed).
    pub seconds: Option<f64>,
    /// Achieved rate over the ceiling of `bound`.
    pub ceiling_fraction: Option<f64>,
    pub goal: String,
    /// None when the goal does not apply at this scale / device, or the run failed.
    pub goal_met: Option<bool>,
    /// The error, when the run failed.
    pub error: Option<String>,
}

/// The ceilings and every kernel's line.
#[derive(Clone, Debug, Serialize)]
pub struct KernelBenchReport {
    pub device: String,
    pub options: KernelBenchOptions,
    /// Device-to-device copy, bytes read + written per second.
    pub copy_bytes_per_s: f64,
    pub copy_size: String,
    /// GEMM rate (FLOP/s) per precision, at `gemm_n`³.
    pub gemm_flops_per_s: Vec<(Precision, f64)>,
    pub gemm_n: usize,
    pub rows: Vec<KernelBenchRow>,
}

// ---- workloads ----------------------------------------------------------------------------

/// A large device-to-device copy (bytes read + written).
struct Copy {
    n: usize,
    src: Tensor,
    dst: Tensor,
}

impl Workload for Copy {
    fn name(&self) -> String {
        "copy".into()
    }
    fn size(&self) -> String {
        format!("{} MiB", (self.n * 4) >> 20)
    }
    fn bound(&self) -> Bound {
        Bound::Memory
    }
    fn flops(&self) -> f64 {
        0.0
    }
    fn bytes(&self) -> f64 {
        8.0 * self.n as f64
    }
    fn run(&mut self, be: &dyn Backend) -> Result<()> {
        be.copy(&self.src, &mut self.dst)
    }
}

/// A parallel host memcpy: the CPU's copy ceiling.
struct HostCopy {
    src: Vec<f32>,
    dst: Vec<f32>,
}

impl Workload for HostCopy {
    fn name(&self) -> String {
        "copy".into()
    }
    fn size(&self) -> String {
        format!("{} MiB", (self.src.len() * 4) >> 20)
    }
    fn bound(&self) -> Bound {
        Bound::Memory
    }
    fn flops(&self) -> f64 {
        0.0
    }
    fn bytes(&self) -> f64 {
        8.0 * self.src.len() as f64
    }
    fn run(&mut self, _be: &dyn Backend) -> Result<()> {
        use rayon::prelude::*;
        self.dst
            .par_chunks_mut(1 << 16)
            .zip(self.src.par_chunks(1 << 16))
            .for_each(|(d, s)| d.copy_from_slice(s));
        Ok(())
    }
}

/// Median seconds per run of `w` (see the module docs).
pub fn time_workload(
    be: &dyn Backend,
    opts: &KernelBenchOptions,
    w: &mut dyn Workload,
) -> Result<f64> {
    for _ in 0..opts.warmup {
        w.run(be)?;
    }
    be.synchronize()?;
    let t0 = Instant::now();
    w.run(be)?;
    be.synchronize()?;
    let one = t0.elapsed().as_secs_f64().max(1e-9);
    let inner = ((opts.min_sample_s / one).ceil() as usize).clamp(1, 1000);
    let mut samples = Vec::with_capacity(opts.repeats.max(1));
    for _ in 0..opts.repeats.max(1) {
        be.synchronize()?;
        let t = Instant::now();
        for _ in 0..inner {
            w.run(be)?;
        }
        be.synchronize()?;
        samples.push(t.elapsed().as_secs_f64() / inner as f64);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// A row's goal from its time: the text and whether it is met.
type GoalFn<'a> = dyn Fn(f64, &KernelBenchReport) -> (String, Option<bool>) + 'a;

/// Measures the ceilings and every kernel on `backend`.
pub fn run(backend: &dyn Backend, opts: &KernelBenchOptions) -> Result<KernelBenchReport> {
    let be = backend;
    let gpu = be.kind() == DeviceKind::Cuda;
    let s = opts.scale;
    let seed = opts.seed;
    // Ceilings. On the CPU the copy is a plain parallel memcpy of host
    // buffers (what a CPU kernel streams at), not `Backend::copy`.
    let copy_n =
        (((if gpu { 1usize << 28 } else { 1 << 26 }) as f64 * s.min(1.0)) as usize).max(1 << 24);
    let (copy_bw, copy_size) = if gpu {
        let src = be.from_f32(&rand_f32(seed, 900, copy_n, 1.0), &[copy_n])?;
        let mut copy = Copy {
            n: copy_n,
            src,
            dst: be.zeros(&[copy_n], DType::F32)?,
        };
        (
            copy.bytes() / time_workload(be, opts, &mut copy)?,
            copy.size(),
        )
    } else {
        let mut copy = HostCopy {
            src: rand_f32(seed, 900, copy_n, 1.0),
            dst: vec![0.0; copy_n],
        };
        (
            copy.bytes() / time_workload(be, opts, &mut copy)?,
            copy.size(),
        )
    };
    let gemm_n =
        ((((if gpu { 8192.0 } else { 1024.0 }) * s.cbrt()) / 64.0).round() as usize).max(1) * 64;
    let mut gemm_rates = Vec::new();
    {
        let a = be.from_f32(
            &rand_f32(seed, 901, gemm_n * gemm_n, 1.0),
            &[gemm_n, gemm_n],
        )?;
        let b = be.from_f32(
            &rand_f32(seed, 902, gemm_n * gemm_n, 1.0),
            &[gemm_n, gemm_n],
        )?;
        let mut g = SquareGemm {
            n: gemm_n,
            prec: Precision::F32,
            a,
            b,
            c: be.zeros(&[gemm_n, gemm_n], DType::F32)?,
        };
        for prec in [Precision::F32, Precision::Tf32, Precision::Bf16] {
            g.prec = prec;
            // A precision the backend cannot run yet is reported as 0.
            let rate = time_workload(be, opts, &mut g)
                .map(|t| g.flops() / t)
                .unwrap_or(0.0);
            gemm_rates.push((prec, rate));
        }
    }
    let mut report = KernelBenchReport {
        device: be.name(),
        options: *opts,
        copy_bytes_per_s: copy_bw,
        copy_size,
        gemm_flops_per_s: gemm_rates,
        gemm_n,
        rows: Vec::new(),
    };
    let full_size = s == 1.0 && gpu;
    let n_weights: usize = bert_shapes(s).iter().map(|(o, i)| o * i).sum();

    let add = |report: &mut KernelBenchReport, w: Result<Box<dyn Workload>>, goal: &GoalFn<'_>| {
        let mut row = KernelBenchRow {
            kernel: String::new(),
            size: String::new(),
            bound: Bound::Memory,
            flops: 0.0,
            bytes: 0.0,
            seconds: None,
            ceiling_fraction: None,
            goal: String::new(),
            goal_met: None,
            error: None,
        };
        let mut w = match w {
            Ok(w) => w,
            Err(e) => {
                row.kernel = "(setup failed)".into();
                row.error = Some(e.to_string());
                report.rows.push(row);
                return None;
            }
        };
        row.kernel = w.name();
        row.size = w.size();
        row.bound = w.bound();
        row.flops = w.flops();
        row.bytes = w.bytes();
        match time_workload(be, opts, w.as_mut()) {
            Ok(t) => {
                row.seconds = Some(t);
                row.ceiling_fraction = Some(match row.bound {
                    Bound::Memory => row.bytes / t / report.copy_bytes_per_s,
                    Bound::Compute(p) => {
                        let c = report
                            .gemm_flops_per_s
                            .iter()
                            .find(|(q, _)| *q == p)
                            .map(|x| x.1)
                            .unwrap_or(0.0);
                        if c > 0.0 {
                            row.flops / t / c
                        } else {
                            f64::NAN
                        }
                    }
                });
                let (g, met) = goal(t, report);
                row.goal = g;
                row.goal_met = met;
            }
            Err(e) => {
                row.goal = goal(f64::NAN, report).0;
                row.error = Some(e.to_string());
            }
        }
        let t = row.seconds;
        report.rows.push(row);
        t
    };
    let no_goal = |_: f64, _: &KernelBenchReport| (String::new(), None);

    add(
        &mut report,
        MovementGrads::new(be, n_weights, seed).map(|w| Box::new(w) as Box<dyn Workload>),
        &no_goal,
    );
    add(
        &mut report,
        Importance::new(be, n_weights, false, seed).map(|w| Box::new(w) as Box<dyn Workload>),
        &no_goal,
    );
    add(
        &mut report,
        Importance::new(be, n_weights, true, seed).map(|w| Box::new(w) as Box<dyn Workload>),
        &no_goal,
    );
    let read_s = 4.0 * n_weights as f64 / copy_bw;
    add(
        &mut report,
        Topk::new(be, s, 0.1, false, seed).map(|w| Box::new(w) as Box<dyn Workload>),
        &|t, _| {
            (
                format!("≤ 3× one read ({:.3} ms)", 3.0 * read_s * 1e3),
                Some(t <= 3.0 * read_s).filter(|_| t.is_finite()),
            )
        },
    );
    add(
        &mut report,
        Topk::new(be, s, 0.1, true, seed).map(|w| Box::new(w) as Box<dyn Workload>),
        &|t, r| {
            let bw = 13.0 * n_weights as f64 / t;
            (
                "≥ 80 % of copy bandwidth".into(),
                Some(bw >= 0.8 * r.copy_bytes_per_s).filter(|_| t.is_finite()),
            )
        },
    );
    add(
        &mut report,
        WeightedSvd::new(be, s, 10, seed).map(|w| Box::new(w) as Box<dyn Workload>),
        &|t, _| {
            (
                "≤ 100 ms (H100, scale 1)".into(),
                Some(t <= 0.1).filter(|_| full_size && t.is_finite()),
            )
        },
    );
    for prec in [Precision::F32, Precision::Tf32, Precision::Bf16] {
        let dense = add(
            &mut report,
            Layer::new(be, LayerKind::Dense, prec, s, seed)
                .map(|w| Box::new(w) as Box<dyn Workload>),
            &no_goal,
        );
        let vs_dense = move |t: f64, _: &KernelBenchReport| match dense {
            Some(d) => (
                format!("≤ 1.15× dense ({:.2}×)", t / d),
                Some(t <= 1.15 * d).filter(|_| t.is_finite()),
            ),
            None => ("≤ 1.15× dense".into(), None),
        };
        add(
            &mut report,
            Layer::new(be, LayerKind::Fused, prec, s, seed)
                .map(|w| Box::new(w) as Box<dyn Workload>),
            &vs_dense,
        );
        let vs_dense_info = move |t: f64, _: &KernelBenchReport| match dense {
            Some(d) => (format!("({:.2}× dense)", t / d), None),
            None => (String::new(), None),
        };
        add(
            &mut report,
            Layer::new(be, LayerKind::TwoPath, prec, s, seed)
                .map(|w| Box::new(w) as Box<dyn Workload>),
            &vs_dense_info,
        );
    }
    // Every other operation's workloads (each folder's bench.rs), measured
    // against the same ceilings.
    for group in BASIC_OPS {
        match group(be, s, seed) {
            Ok(ws) => {
                for w in ws {
                    add(&mut report, Ok(w), &no_goal);
                }
            }
            Err(e) => {
                add(&mut report, Err(e), &no_goal);
            }
        }
    }
    Ok(report)
}

/// An operation folder's `bench::workloads`.
type WorkloadsFn = fn(&dyn Backend, f64, u64) -> Result<Vec<Box<dyn Workload>>>;

/// The folders whose workloads have no goal of their own (the compression
/// kernels' rows above carry theirs).
const BASIC_OPS: [WorkloadsFn; 9] = [
    ops::gemm::bench::workloads,
    ops::elementwise::bench::workloads,
    ops::layernorm::bench::workloads,
    ops::attention::bench::workloads,
    ops::embedding::bench::workloads,
    ops::reduce::bench::workloads,
    ops::grads::bench::workloads,
    ops::cross_entropy::bench::workloads,
    ops::adamw::bench::workloads,
];

/// The workloads of every operation other than the compression kernels, for
/// `benches/kernels.rs`.
pub fn basic_workloads(be: &dyn Backend, scale: f64, seed: u64) -> Result<Vec<Box<dyn Workload>>> {
    let mut out = Vec::new();
    for group in BASIC_OPS {
        out.extend(group(be, scale, seed)?);
    }
    Ok(out)
}

impl KernelBenchReport {
    /// The row of a kernel whose name starts with `prefix`.
    pub fn row(&self, prefix: &str) -> Option<&KernelBenchRow> {
        self.rows.iter().find(|r| r.kernel.starts_with(prefix))
    }

    /// The report as JSON lines, what `lpaf plot --roofline` reads: first a
    /// `"record": "ceilings"` line (copy bandwidth in bytes/s, GEMM FLOP/s per
    /// precision), then one `"record": "kernel"` line per kernel with its
    /// FLOPs, bytes and median seconds (null when the run failed).
    pub fn to_jsonl(&self) -> Result<String> {
        let gemm: serde_json::Map<String, serde_json::Value> = self
            .gemm_flops_per_s
            .iter()
            .map(|(p, r)| (precision_name(*p).to_string(), serde_json::json!(r)))
            .collect();
        let mut out = serde_json::to_string(&serde_json::json!({
            "record": "ceilings",
            "device": self.device,
            "scale": self.options.scale,
            "copy_bytes_per_s": self.copy_bytes_per_s,
            "copy_size": self.copy_size,
            "gemm_n": self.gemm_n,
            "gemm_flops_per_s": gemm,
        }))?;
        out.push('\n');
        for r in &self.rows {
            let bound = match r.bound {
                Bound::Memory => "memory".to_string(),
                Bound::Compute(p) => format!("compute {}", precision_name(p)),
            };
            out.push_str(&serde_json::to_string(&serde_json::json!({
                "record": "kernel",
                "kernel": r.kernel,
                "size": r.size,
                "bound": bound,
                "flops": r.flops,
                "bytes": r.bytes,
                "seconds": r.seconds,
                "ceiling_fraction": r.ceiling_fraction,
                "error": r.error,
            }))?);
            out.push('\n');
        }
        Ok(out)
    }
}

fn rate(v: f64, unit: &str) -> String {
    if v >= 1e12 {
        format!("{:.2} T{unit}", v / 1e12)
    } else if v >= 1e9 {
        format!("{:.1} G{unit}", v / 1e9)
    } else {
        format!("{:.1} M{unit}", v / 1e6)
    }
}

impl fmt::Display for KernelBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "## Kernel benchmark on {} (scale {})",
            self.device, self.options.scale
        )?;
        writeln!(f)?;
        writeln!(f, "| ceiling | size | rate |")?;
        writeln!(f, "|---|---|---|")?;
        writeln!(
            f,
            "| device copy (read + write) | {} | {} |",
            self.copy_size,
            rate(self.copy_bytes_per_s, "B/s")
        )?;
        for (p, r) in &self.gemm_flops_per_s {
            let v = if *r > 0.0 {
                rate(*r, "FLOP/s")
            } else {
                "not available".into()
            };
            writeln!(
                f,
                "| GEMM {} | {}³ | {} |",
                precision_name(*p),
                self.gemm_n,
                v
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "| kernel | size | time (ms) | achieved | of ceiling | goal | met |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|---|")?;
        for r in &self.rows {
            let (time, achieved, frac) = match r.seconds {
                Some(t) => {
                    let ach = match r.bound {
                        Bound::Memory => rate(r.bytes / t, "B/s"),
                        Bound::Compute(_) => rate(r.flops / t, "FLOP/s"),
                    };
                    let frac = r
                        .ceiling_fraction
                        .filter(|x| x.is_finite())
                        .map(|x| format!("{:.0} %", 100.0 * x));
                    (
                        format!("{:.3}", t * 1e3),
                        ach,
                        frac.unwrap_or_else(|| "—".into()),
                    )
                }
                None => (
                    "—".into(),
                    format!("error: {}", r.error.as_deref().unwrap_or("?")),
                    "—".into(),
                ),
            };
            let ceiling = match r.bound {
                Bound::Memory => "copy".to_string(),
                Bound::Compute(p) => format!("GEMM {}", precision_name(p)),
            };
            let met = match r.goal_met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            };
            writeln!(
                f,
                "| {} | {} | {time} | {achieved} | {frac} of {ceiling} | {} | {met} |",
                r.kernel, r.size, r.goal
            )?;
        }
        Ok(())
    }
}
