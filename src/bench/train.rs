//! `lpaf bench train`: the time of one training step (forward, loss,
//! backward, gradient-norm clipping, optimizer, and the method's own per-step
//! work, as the trainer runs them) of a randomly
//! initialised BERT at batch 32 × sequence 128, for each precision and
//! compression method, with the model-FLOPs utilisation against the bf16 /
//! fp32 GEMM rate measured in the same run.
//!
//! FLOPs counted: 6 · (encoder matrix parameters) · tokens for the linear
//! layers (2 forward + 4 backward per weight per token) plus attention
//! `12 · B · S² · H` per layer (QKᵀ and P·V, forward and backward), as the
//! physical floor in docs/baselines.md does. Compressed methods are charged
//! the same dense FLOPs, so their MFU is comparable to dense ("useful work").

use std::time::Instant;

use serde::Serialize;

use crate::backend::{Backend, DType, Gemm, Precision, ScoreRule};
use crate::compress::layers::MaskKind;
use crate::compress::losparse::{install_losparse, LoSparseHooks, LoSparseSettings};
use crate::compress::lpaf::MixedRankHooks;
use crate::compress::prune::{install_masked, PruneHooks, PruneKind, PruneScope, PruneSettings};
use crate::data::{Batch, Labels, TaskKind};
use crate::error::{Error, Result};
use crate::model::{Bert, BertConfig, StepCtx};
use crate::train::optimizer::{adamw_all, clip_gradients, step_params, AdamWConfig};
use crate::train::schedule::CubicSchedule;
use crate::train::trainer::{loss_and_backward, NoHooks, TrainHooks};

#[derive(Clone, Debug)]
pub struct TrainBenchOptions {
    pub config: BertConfig,
    pub size_name: String,
    pub batch: usize,
    pub seq: usize,
    pub precisions: Vec<Precision>,
    pub methods: Vec<String>,
    pub warmup: usize,
    pub repeats: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainBenchRow {
    pub model: String,
    pub method: String,
    pub precision: String,
    pub step_ms: f64,
    pub forward_ms: f64,
    pub samples_per_s: f64,
    pub tflops: f64,
    /// Model FLOPs utilisation against the GEMM ceiling of this precision (measured).
    pub mfu: f64,
    pub ceiling_tflops: f64,
    /// Step time relative to the dense step at the same precision.
    pub vs_dense: Option<f64>,
    /// True on the emulated CUDA device: the times are the host's, not a GPU's.
    pub emulated: bool,
    /// Per-step device counters (the emulated device counts everything).
    #[serde(flatten)]
    pub counters: Option<StepCounters>,
}

/// What one training step asks of the device, averaged over the measured
/// steps (after warm-up: a step's allocations, syncs and copies in steady
/// state). Peak memory is over those steps.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StepCounters {
    /// "emulator" (everything, from below the driver API) or "engine"
    /// (what lpaf counts itself on a real GPU: launches, library calls,
    /// syncs, allocations; the byte fields are then null).
    pub counted_by: &'static str,
    pub launches_per_step: f64,
    pub library_calls_per_step: f64,
    pub syncs_per_step: f64,
    pub allocs_per_step: f64,
    pub frees_per_step: f64,
    pub memsets_per_step: f64,
    pub h2d_bytes_per_step: f64,
    pub d2h_bytes_per_step: f64,
    pub d2d_bytes_per_step: f64,
    pub peak_device_bytes: u64,
    /// Launches (and library calls) per step by kernel, most first, as the
    /// engine counts them.
    pub by_kernel: Vec<(String, f64)>,
}

impl StepCounters {
    fn per_step(d: &crate::device::emulator::EmuCounters, steps: usize) -> StepCounters {
        let n = steps.max(1) as f64;
        StepCounters {
            counted_by: "emulator",
            launches_per_step: d.kernel_launches as f64 / n,
            library_calls_per_step: d.library_calls as f64 / n,
            syncs_per_step: d.host_syncs as f64 / n,
            allocs_per_step: d.allocs as f64 / n,
            frees_per_step: d.frees as f64 / n,
            memsets_per_step: d.memsets as f64 / n,
            h2d_bytes_per_step: d.h2d_bytes as f64 / n,
            d2h_bytes_per_step: d.d2h_bytes as f64 / n,
            d2d_bytes_per_step: d.d2d_bytes as f64 / n,
            peak_device_bytes: d.peak_device_bytes,
            by_kernel: Vec::new(),
        }
    }

    fn from_engine(
        a: &crate::backend::EngineCounters,
        b: &crate::backend::EngineCounters,
        steps: usize,
    ) -> StepCounters {
        let n = steps.max(1) as f64;
        StepCounters {
            counted_by: "engine",
            launches_per_step: (a.launches - b.launches) as f64 / n,
            library_calls_per_step: (a.library_calls - b.library_calls) as f64 / n,
            // Less the synchronize after each timed step.
            syncs_per_step: (a.syncs - b.syncs) as f64 / n - 1.0,
            allocs_per_step: (a.allocs - b.allocs) as f64 / n,
            frees_per_step: f64::NAN,
            memsets_per_step: f64::NAN,
            h2d_bytes_per_step: f64::NAN,
            d2h_bytes_per_step: f64::NAN,
            d2d_bytes_per_step: f64::NAN,
            peak_device_bytes: 0,
            by_kernel: Vec::new(),
        }
    }
}

pub const METHODS: [&str; 5] = ["dense", "movement", "magnitude", "losparse", "factorized"];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Dense-equivalent FLOPs of one training step.
pub fn step_flops(cfg: &BertConfig, batch: usize, seq: usize) -> f64 {
    let (h, i) = (cfg.hidden_size as f64, cfg.intermediate_size as f64);
    let per_layer = 4.0 * h * h + 2.0 * h * i;
    let tokens = (batch * seq) as f64;
    let linear = 6.0 * per_layer * cfg.num_hidden_layers as f64 * tokens;
    let attention = 12.0 * batch as f64 * (seq * seq) as f64 * h * cfg.num_hidden_layers as f64;
    linear + attention
}

/// The GEMM rate of the backend at a precision (TFLOP/s), on random data.
pub fn gemm_ceiling(be: &dyn Backend, p: Precision, n: usize, repeats: usize) -> Result<f64> {
    let a = be.from_f32(&crate::bench::random_values(1, n * n), &[n, n])?;
    let b = be.from_f32(&crate::bench::random_values(2, n * n), &[n, n])?;
    let mut c = be.zeros(&[n, n], DType::F32)?;
    let g = Gemm::nn(n, n, n).precision(p);
    be.gemm(&g, &a, &b, &mut c)?;
    be.synchronize()?;
    let mut times = Vec::new();
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        be.gemm(&g, &a, &b, &mut c)?;
        be.synchronize()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(g.flops() / median(times) / 1e12)
}

/// The benchmark's batch: `b` rows of `s` token ids, labels 0/1.
pub fn synthetic_batch(cfg: &BertConfig, b: usize, s: usize) -> Batch {
    let n = b * s;
    let ids: Vec<i32> = (0..n)
        .map(|i| {
            if i % s == 0 {
                101.min(cfg.vocab_size as i32 - 1)
            } else {
                ((i * 7919 + 13) % (cfg.vocab_size - 1)) as i32 + 1
            }
        })
        .collect();
    Batch {
        size: b,
        seq_len: s,
        input_ids: ids,
        token_type_ids: vec![0; n],
        attention_mask: vec![1; n],
        labels: Labels::Class((0..b).map(|i| (i % 2) as u32).collect()),
        feature_ids: (0..b).collect(),
    }
}

/// Builds the model of a method (random weights) and its hooks.
/// A random model of `cfg` prepared for `method`, with its hooks.
pub fn build(
    be: &dyn Backend,
    cfg: &BertConfig,
    method: &str,
) -> Result<(Bert, Box<dyn TrainHooks>)> {
    let mut m = Bert::random(
        be,
        cfg.clone(),
        TaskKind::Classification { num_labels: 2 },
        1,
    )?;
    let hooks: Box<dyn TrainHooks> = match method {
        "dense" => Box::new(NoHooks),
        "movement" | "magnitude" => {
            let kind = if method == "movement" {
                PruneKind::Movement
            } else {
                PruneKind::Magnitude
            };
            install_masked(be, &mut m, kind.mask_kind(ScoreRule::Adam))?;
            // Steady state of the schedule: 10 % kept, masks recomputed every step.
            Box::new(PruneHooks::new(PruneSettings {
                kind,
                scope: PruneScope::PerMatrix,
                schedule: CubicSchedule::new(0.1, 0.1, 1, 0, 0),
                soft_tau: 0.5,
                soft_lambda: 0.0,
                soft_min_kept: 0.005,
                mask_interval: 1,
            }))
        }
        "losparse" => {
            let s = LoSparseSettings {
                rank_ratio: 0.1,
                final_kept: 0.1,
                delta_t: 10,
                beta1: 0.85,
                beta2: 1.0,
                structured: true,
                hard_mask: false,
                unit_steps: 1,
                initial_warmup: 0,
                final_warmup: 0,
            };
            install_losparse(be, &mut m, &s, 1)?;
            Box::new(LoSparseHooks::new(s, 1))
        }
        "mixed" | "factorized" => {
            // LPAF's stage 3 at p = 0 (purely U·V at ρ 0.1): the factorized step.
            install_masked(be, &mut m, MaskKind::Magnitude)?;
            crate::compress::prune::finalize_masks(be, &mut m)?;
            let fs = crate::compress::lpaf::FactorizeSettings {
                omega: 1.0,
                em_steps: 1,
                rel_tol: 0.0,
                power_iters: 1,
                init_power_iters: 2,
                allocation: crate::compress::rank::RankAllocation::Uniform,
            };
            crate::compress::lpaf::factorize_pruned(be, &mut m, 0.1, &fs, 1)?;
            Box::new(MixedRankHooks {
                schedule: crate::compress::lpaf::MixedRankSchedule {
                    p0: 0.0,
                    end_step: 0,
                },
                p: 0.0,
            })
        }
        other => {
            return Err(Error::msg(format!(
                "unknown method '{other}' (expected {})",
                METHODS.join(", ")
            )))
        }
    };
    Ok((m, hooks))
}

/// One training step as the trainer runs it (see the module's docs).
pub fn one_step(
    be: &dyn Backend,
    m: &mut Bert,
    hooks: &mut dyn TrainHooks,
    batch: &Batch,
    p: Precision,
    step: u64,
) -> Result<()> {
    hooks.on_step_begin(be, m, step)?;
    let ctx = StepCtx {
        precision: p,
        training: true,
        seed: 1,
        step,
        micro: 0,
    };
    let logits = m.forward(be, &ctx, batch)?;
    let mut loss = None;
    loss_and_backward(be, m, hooks, &ctx, batch, &logits, 1.0, &mut loss)?;
    // Clipping as the trainer does it: the global gradient norm first.
    let cfg = AdamWConfig::default();
    let gs = clip_gradients(be, m, cfg.max_grad_norm)?.grad_scale;
    let hp_for = |prm: &crate::model::Param| step_params(&cfg, prm, step + 1, 1e-5, 1e-2, gs);
    if !hooks.custom_update(be, m, &hp_for)? {
        adamw_all(be, m, &|_| true, &hp_for)?;
    }
    hooks.on_step_end(be, m, step)?;
    m.zero_grads(be)
}

/// Runs the benchmark; `ceiling` gives the GEMM rate per precision.
pub fn run(
    be: &dyn Backend,
    o: &TrainBenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<TrainBenchRow>> {
    let flops = step_flops(&o.config, o.batch, o.seq);
    let gemm_n = if be.kind() == crate::backend::DeviceKind::Cuda {
        8192
    } else {
        1024
    };
    let mut rows: Vec<TrainBenchRow> = Vec::new();
    let batch = synthetic_batch(&o.config, o.batch, o.seq);
    // On the emulated device a step's counters are the measurement; its
    // times are the host's and the GEMM "ceiling" would take minutes.
    let emulated = crate::device::emulator::active();
    for &p in &o.precisions {
        let ceiling = if emulated {
            f64::NAN
        } else {
            gemm_ceiling(be, p, gemm_n, 5)?
        };
        if !emulated {
            progress(&format!("{p:?} GEMM {gemm_n}³: {ceiling:.1} TFLOP/s"));
        }
        for method in &o.methods {
            // Each method's memory alone: the previous model's buffers leave
            // the pool, so the peak below is this method's working set.
            be.release_cached();
            let (mut m, mut hooks) = build(be, &o.config, method)?;
            let mut step = 0u64;
            for _ in 0..o.warmup {
                one_step(be, &mut m, hooks.as_mut(), &batch, p, step)?;
                step += 1;
            }
            be.synchronize()?;
            crate::device::emulator::reset_peak();
            let before = crate::device::emulator::counters();
            let before_engine = be.engine_counters();
            let before_kernels = be.launches_by_kernel();
            let mut times = Vec::new();
            for _ in 0..o.repeats.max(1) {
                let t = Instant::now();
                one_step(be, &mut m, hooks.as_mut(), &batch, p, step)?;
                be.synchronize()?;
                times.push(t.elapsed().as_secs_f64());
                step += 1;
            }
            // The measured steps' own counts (less the synchronize after each).
            let counters = match (before, crate::device::emulator::counters()) {
                (Some(b), Some(a)) => {
                    let mut d = a.since(&b);
                    d.host_syncs -= times.len() as u64;
                    Some(StepCounters::per_step(&d, times.len()))
                }
                _ => match (before_engine, be.engine_counters()) {
                    (Some(b), Some(a)) => Some(StepCounters::from_engine(&a, &b, times.len())),
                    _ => None,
                },
            };
            let counters = counters.map(|mut c| {
                c.by_kernel =
                    per_step_by_kernel(&before_kernels, &be.launches_by_kernel(), times.len());
                c
            });
            let mut ftimes = Vec::new();
            let ctx = StepCtx::eval(p);
            for _ in 0..o.repeats.max(1) {
                let t = Instant::now();
                m.forward(be, &ctx, &batch)?;
                be.synchronize()?;
                ftimes.push(t.elapsed().as_secs_f64());
            }
            m.clear_activations();
            let step_s = median(times);
            let dense = rows
                .iter()
                .find(|r| r.method == "dense" && r.precision == format!("{p:?}").to_lowercase())
                .map(|r| r.step_ms);
            let row = TrainBenchRow {
                model: o.size_name.clone(),
                method: method.clone(),
                precision: format!("{p:?}").to_lowercase(),
                step_ms: step_s * 1e3,
                forward_ms: median(ftimes) * 1e3,
                samples_per_s: o.batch as f64 / step_s,
                tflops: flops / step_s / 1e12,
                mfu: flops / step_s / 1e12 / ceiling,
                ceiling_tflops: ceiling,
                vs_dense: dense.map(|d| step_s * 1e3 / d),
                emulated,
                counters,
            };
            match row.counters.as_ref().filter(|_| emulated) {
                Some(c) => progress(&format!(
                    "{} {}: {:.0} launches, {:.0} library calls, {:.0} host syncs, {:.0} allocations per step",
                    row.method,
                    row.precision,
                    c.launches_per_step,
                    c.library_calls_per_step,
                    c.syncs_per_step,
                    c.allocs_per_step
                )),
                None => progress(&format!(
                    "{} {}: {:.2} ms/step",
                    row.method, row.precision, row.step_ms
                )),
            }
            rows.push(row);
        }
    }
    Ok(rows)
}

/// `after − before` per step, most launched first (ties by name).
fn per_step_by_kernel(
    before: &[(String, u64)],
    after: &[(String, u64)],
    steps: usize,
) -> Vec<(String, f64)> {
    let b: std::collections::HashMap<&str, u64> =
        before.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let mut out: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - b.get(k.as_str()).copied().unwrap_or(0)) as f64 / steps.max(1) as f64,
            )
        })
        .filter(|(_, v)| *v > 0.0)
        .collect();
    out.sort_by(|x, y| y.1.total_cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    out
}

/// One line per row: its most launched kernels per step (the counters'
/// breakdown), `top` of them.
pub fn kernels_lines(rows: &[TrainBenchRow], top: usize) -> String {
    let mut s = String::new();
    for r in rows {
        let Some(c) = &r.counters else { continue };
        if c.by_kernel.is_empty() {
            continue;
        }
        let parts: Vec<String> = c
            .by_kernel
            .iter()
            .take(top)
            .map(|(k, v)| format!("{k} {}", cnt(*v)))
            .collect();
        s.push_str(&format!(
            "{} {}: {}\n",
            r.method,
            r.precision,
            parts.join(", ")
        ));
    }
    s
}

/// The rows as a markdown table (the counters' table on the emulated device).
pub fn table(rows: &[TrainBenchRow]) -> String {
    if rows.iter().any(|r| r.emulated) {
        return counters_table(rows);
    }
    if rows.iter().any(|r| r.counters.is_some()) {
        return format!("{}\n{}", times_table(rows), counters_table(rows));
    }
    times_table(rows)
}

fn times_table(rows: &[TrainBenchRow]) -> String {
    let mut s = String::from("| model | method | precision | step ms | forward ms | samples/s | TFLOP/s | MFU | vs dense |\n|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.1} | {:.3} | {:.1} % of {:.3} | {} |\n",
            r.model,
            r.method,
            r.precision,
            r.step_ms,
            r.forward_ms,
            r.samples_per_s,
            r.tflops,
            100.0 * r.mfu,
            r.ceiling_tflops,
            r.vs_dense
                .map(|v| format!("{v:.2}×"))
                .unwrap_or_else(|| "–".into())
        ));
    }
    s
}

fn cnt(v: f64) -> String {
    if v.is_nan() {
        "–".to_string()
    } else {
        format!("{v:.0}")
    }
}

fn mib(b: f64) -> String {
    if b.is_nan() {
        "–".to_string()
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

/// Per-step device counters, one row per method and precision (no times:
/// on the emulated device they would be the host's).
pub fn counters_table(rows: &[TrainBenchRow]) -> String {
    let mut s = String::from(
        "| model | method | precision | launches | library calls | host syncs | allocations | frees | memsets | H→D | D→H | D→D | peak device memory |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let Some(c) = &r.counters else { continue };
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
            r.model,
            r.method,
            r.precision,
            c.launches_per_step,
            c.library_calls_per_step,
            c.syncs_per_step,
            c.allocs_per_step,
            cnt(c.frees_per_step),
            cnt(c.memsets_per_step),
            mib(c.h2d_bytes_per_step),
            mib(c.d2h_bytes_per_step),
            mib(c.d2d_bytes_per_step),
            if c.peak_device_bytes == 0 {
                "–".to_string()
            } else {
                mib(c.peak_device_bytes as f64)
            },
        ));
    }
    s
}
