//! `lpaf bench kernels`: the four compression kernels of docs/algorithms.md §6
//! measured on one backend, against the ceilings measured in the same run
//! (device-to-device copy bandwidth, GEMM rate at fp32 / tf32 / bf16), with the
//! goals of the kernel work and whether they are met.
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

use crate::backend::*;
use crate::error::Result;

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

/// What limits a workload.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Bound {
    /// Memory bandwidth: compared with the copy ceiling.
    Memory,
    /// Matrix products at this precision: compared with the GEMM ceiling.
    Compute(Precision),
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

fn rand_f32(seed: u64, stream: u64, n: usize, amp: f32) -> Vec<f32> {
    (0..n)
        .map(|i| amp * (2.0 * philox::uniform(seed, stream, i as u64) - 1.0))
        .collect()
}

fn rand_mask(seed: u64, stream: u64, n: usize, keep: f32) -> Vec<u8> {
    (0..n)
        .map(|i| (philox::uniform(seed, stream, i as u64) < keep) as u8)
        .collect()
}

fn fmt_count(n: usize) -> String {
    if n >= 1_000_000 {
        format!("{:.1} M", n as f64 / 1e6)
    } else if n >= 10_000 {
        format!("{:.0} k", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}

// ---- workloads ----------------------------------------------------------------------------

/// Movement pruning's backward over every encoder weight (one flat tensor).
pub struct MovementGrads {
    n: usize,
    w: Tensor,
    g: Tensor,
    m: Tensor,
    gw: Tensor,
    sc: Tensor,
}

impl MovementGrads {
    pub fn new(be: &dyn Backend, n: usize, seed: u64) -> Result<Self> {
        Ok(MovementGrads {
            n,
            w: be.from_f32(&rand_f32(seed, 1, n, 0.05), &[n])?,
            g: be.from_f32(&rand_f32(seed, 2, n, 1e-3), &[n])?,
            m: be.from_u8(&rand_mask(seed, 3, n, 0.1), &[n])?,
            gw: be.from_f32(&rand_f32(seed, 4, n, 1e-3), &[n])?,
            sc: be.from_f32(&rand_f32(seed, 5, n, 1e-3), &[n])?,
        })
    }
}

impl Workload for MovementGrads {
    fn name(&self) -> String {
        "score accumulation (movement_grads)".into()
    }
    fn size(&self) -> String {
        format!("{} weights", fmt_count(self.n))
    }
    fn bound(&self) -> Bound {
        Bound::Memory
    }
    fn flops(&self) -> f64 {
        3.0 * self.n as f64
    }
    fn bytes(&self) -> f64 {
        // read W, G, M; read + write grad_w and scores
        25.0 * self.n as f64
    }
    fn run(&mut self, be: &dyn Backend) -> Result<()> {
        be.movement_grads(
            &self.w,
            &self.g,
            &self.m,
            &mut self.gw,
            &mut self.sc,
            ScoreRule::Adam,
        )
    }
}

/// LoSparse's importance step closing a window (Ī and Ū), or AdamW on S fused
/// with a mid-window importance step.
pub struct Importance {
    n: usize,
    fused_adamw: bool,
    t: Vec<Tensor>,
    g: Tensor,
}

impl Importance {
    pub fn new(be: &dyn Backend, n: usize, fused_adamw: bool, seed: u64) -> Result<Self> {
        let mut t = Vec::new();
        for k in 0..6 {
            t.push(
                be.from_f32(
                    &rand_f32(seed, 10 + k, n, 0.01)
                        .iter()
                        .map(|x| x.abs())
                        .collect::<Vec<_>>(),
                    &[n],
                )?,
            );
        }
        Ok(Importance {
            n,
            fused_adamw,
            t,
            g: be.from_f32(&rand_f32(seed, 20, n, 1e-3), &[n])?,
        })
    }
}

impl Workload for Importance {
    fn name(&self) -> String {
        if self.fused_adamw {
            "AdamW + LoSparse importance (fused)".into()
        } else {
            "LoSparse importance (window close, Ī and Ū)".into()
        }
    }
    fn size(&self) -> String {
        format!("{} entries of S", fmt_count(self.n))
    }
    fn bound(&self) -> Bound {
        Bound::Memory
    }
    fn flops(&self) -> f64 {
        (if self.fused_adamw { 20.0 } else { 12.0 }) * self.n as f64
    }
    fn bytes(&self) -> f64 {
        // fused, mid-window: read S, ∇S, m, v, ipt; write S, m, v, ipt.
        // closing: read S, ∇S, ipt, Ī, Ū; write ipt, Ī, Ū.
        (if self.fused_adamw { 36.0 } else { 32.0 }) * self.n as f64
    }
    fn run(&mut self, be: &dyn Backend) -> Result<()> {
        let [s, m, v, ipt, ibar, ubar] = &mut self.t[..] else {
            unreachable!("six state tensors")
        };
        if self.fused_adamw {
            let hp = AdamWStep {
                lr: 1e-4,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
                step: 10,
                grad_scale: 1.0,
            };
            let st = ImportanceStep {
                count: 2,
                close: false,
                beta1: 0.85,
                beta2: 0.95,
            };
            be.adamw_with_importance(s, &self.g, m, v, &hp, ipt, ibar, None, &st)
        } else {
            let st = ImportanceStep {
                count: 10,
                close: true,
                beta1: 0.85,
                beta2: 0.95,
            };
            be.losparse_importance(s, &self.g, ipt, ibar, Some(ubar), &st)
        }
    }
}

/// Global top-k over the scores of all 72 encoder matrices: the threshold
/// alone, or the mask-and-apply pass (`W' = M⊙W`) given a threshold.
pub struct Topk {
    n: usize,
    k: usize,
    apply_pass: bool,
    scores: Vec<Tensor>,
    masks: Vec<Tensor>,
    apply: Vec<Tensor>,
    th: Option<TopkThreshold>,
}

impl Topk {
    pub fn new(
        be: &dyn Backend,
        scale: f64,
        keep: f64,
        apply_pass: bool,
        seed: u64,
    ) -> Result<Self> {
        let shapes = bert_shapes(scale);
        let mut t = Topk {
            n: 0,
            k: 0,
            apply_pass,
            scores: Vec::new(),
            masks: Vec::new(),
            apply: Vec::new(),
            th: None,
        };
        for (j, &(o, i)) in shapes.iter().enumerate() {
            t.scores
                .push(be.from_f32(&rand_f32(seed, 100 + j as u64, o * i, 1.0), &[o, i])?);
            if apply_pass {
                t.masks.push(be.zeros(&[o, i], DType::U8)?);
                t.apply
                    .push(be.from_f32(&rand_f32(seed, 200 + j as u64, o * i, 0.05), &[o, i])?);
            }
            t.n += o * i;
        }
        t.k = (keep * t.n as f64) as usize;
        if apply_pass {
            let refs: Vec<&Tensor> = t.scores.iter().collect();
            t.th =
                Some(be.topk_threshold(&refs, t.k, TopkRule::ExactK, TopkScope::Entries, false)?);
        }
        Ok(t)
    }
}

impl Workload for Topk {
    fn name(&self) -> String {
        if self.apply_pass {
            "top-k mask + apply (W' = M⊙W)".into()
        } else {
            "global top-k threshold".into()
        }
    }
    fn size(&self) -> String {
        format!(
            "{} scores in {} matrices, k = {}",
            fmt_count(self.n),
            self.scores.len(),
            fmt_count(self.k)
        )
    }
    fn bound(&self) -> Bound {
        Bound::Memory
    }
    fn flops(&self) -> f64 {
        0.0
    }
    fn bytes(&self) -> f64 {
        // threshold: one read of the scores; apply: read scores, write mask, read + write W'.
        (if self.apply_pass { 13.0 } else { 4.0 }) * self.n as f64
    }
    fn run(&mut self, be: &dyn Backend) -> Result<()> {
        let refs: Vec<&Tensor> = self.scores.iter().collect();
        match &self.th {
            None => be
                .topk_threshold(&refs, self.k, TopkRule::ExactK, TopkScope::Entries, false)
                .map(|_| ()),
            Some(th) => {
                let mut m: Vec<&mut Tensor> = self.masks.iter_mut().collect();
                let mut a: Vec<&mut Tensor> = self.apply.iter_mut().collect();
                be.topk_apply(&refs, th, &mut m, &mut a).map(|_| ())
            }
        }
    }
}

/// The sparsity-aware SVD of all 72 encoder matrices at 10 % kept (ranks
/// meeting 10 % of the dense parameters), `steps` EM steps.
pub struct WeightedSvd {
    shapes: Vec<(usize, usize)>,
    ranks: Vec<usize>,
    w: Vec<Tensor>,
    m: Vec<Tensor>,
    opts: WeightedSvdOptions,
}

impl WeightedSvd {
    pub fn new(be: &dyn Backend, scale: f64, steps: usize, seed: u64) -> Result<Self> {
        let shapes = bert_shapes(scale);
        let mut s = WeightedSvd {
            ranks: Vec::new(),
            w: Vec::new(),
            m: Vec::new(),
            opts: WeightedSvdOptions {
                max_steps: steps,
                rel_tol: 0.0,
                seed,
                ..Default::default()
            },
            shapes,
        };
        for (j, &(o, i)) in s.shapes.iter().enumerate() {
            let mask = rand_mask(seed, 300 + j as u64, o * i, 0.1);
            let w: Vec<f32> = rand_f32(seed, 400 + j as u64, o * i, 0.05)
                .iter()
                .zip(&mask)
                .map(|(x, &k)| if k != 0 { *x } else { 0.0 })
                .collect();
            s.w.push(be.from_f32(&w, &[o, i])?);
            s.m.push(be.from_u8(&mask, &[o, i])?);
            s.ranks
                .push(((0.1 * (o * i) as f64) / (o + i) as f64).floor().max(1.0) as usize);
        }
        Ok(s)
    }
}

impl Workload for WeightedSvd {
    fn name(&self) -> String {
        "weighted SVD (EM, 72 matrices)".into()
    }
    fn size(&self) -> String {
        let (o, i) = self.shapes[4];
        format!(
            "{}×{} … {}×{}, ranks {}–{}, {} EM steps",
            self.shapes[0].0,
            self.shapes[0].1,
            o,
            i,
            self.ranks.iter().min().unwrap_or(&0),
            self.ranks.iter().max().unwrap_or(&0),
            self.opts.max_steps
        )
    }
    fn bound(&self) -> Bound {
        Bound::Compute(Precision::F32)
    }
    fn flops(&self) -> f64 {
        let sweeps = (self.opts.init_power_iters.max(1)
            + self.opts.max_steps * self.opts.power_iters.max(1)) as f64;
        let steps = self.opts.max_steps as f64;
        self.shapes
            .iter()
            .zip(&self.ranks)
            .map(|(&(o, n), &r)| {
                let (o, n, r) = (o as f64, n as f64, r as f64);
                // per sweep: X·P and Qᵀ·X, CholeskyQR2 of Y and of Bᵀ; per EM step A = Q·B
                sweeps * (4.0 * o * n * r + 8.0 * (o + n) * r * r) + (steps + 1.0) * 2.0 * o * n * r
            })
            .sum()
    }
    fn bytes(&self) -> f64 {
        let sweeps = (self.opts.init_power_iters.max(1)
            + self.opts.max_steps * self.opts.power_iters.max(1)) as f64;
        let steps = self.opts.max_steps as f64;
        // X read twice per sweep; per EM step A written, then W, M, A read and X written.
        self.shapes
            .iter()
            .map(|&(o, n)| (o * n) as f64 * (8.0 * sweeps + 17.0 * (steps + 1.0)))
            .sum()
    }
    fn run(&mut self, be: &dyn Backend) -> Result<()> {
        let problems: Vec<WeightedSvdProblem> = (0..self.w.len())
            .map(|j| WeightedSvdProblem {
                w: &self.w[j],
                mask: &self.m[j],
                omega: 0.0,
                rank: self.ranks[j],
            })
            .collect();
        be.weighted_svd(&problems, &self.opts).map(|_| ())
    }
}

/// Which layer a [`Layer`] workload runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// `lowrank_sparse_forward` + `_backward`: `w_eff = M⊙S + U·V`, one dense GEMM per product.
    Fused,
    /// The papers' PyTorch form: `x·Vᵀ·Uᵀ + x·(M⊙S)ᵀ` and its backward.
    TwoPath,
    /// A dense linear layer of the same shape.
    Dense,
}

/// Forward + backward of one `out × in` layer at N tokens (LoSparse: rank for
/// ρ = 0.1, 10 % of S kept).
pub struct Layer {
    kind: LayerKind,
    prec: Precision,
    n: usize,
    out: usize,
    inp: usize,
    r: usize,
    x: Tensor,
    u: Tensor,
    v: Tensor,
    s: Tensor,
    m: Tensor,
    b: Tensor,
    dy: Tensor,
    w_eff: Tensor,
    y: Tensor,
    dx: Tensor,
    du: Tensor,
    dv: Tensor,
    ds: Tensor,
    db: Tensor,
    dw: Tensor,
    t: Tensor,
    dt: Tensor,
}

impl Layer {
    pub fn new(
        be: &dyn Backend,
        kind: LayerKind,
        prec: Precision,
        scale: f64,
        seed: u64,
    ) -> Result<Self> {
        let (h, n) = scaled_dims(scale);
        let (out, inp) = (4 * h, h);
        let r = ((0.1 * (out * inp) as f64) / (out + inp) as f64).ceil() as usize;
        let f = |stream: u64, len: usize, shape: &[usize], amp: f32| {
            be.from_f32(&rand_f32(seed, stream, len, amp), shape)
        };
        Ok(Layer {
            kind,
            prec,
            n,
            out,
            inp,
            r,
            x: f(500, n * inp, &[n, inp], 1.0)?,
            u: f(501, out * r, &[out, r], 0.05)?,
            v: f(502, r * inp, &[r, inp], 0.05)?,
            s: f(503, out * inp, &[out, inp], 0.05)?,
            m: be.from_u8(&rand_mask(seed, 504, out * inp, 0.1), &[out, inp])?,
            b: f(505, out, &[out], 0.1)?,
            dy: f(506, n * out, &[n, out], 0.01)?,
            w_eff: be.zeros(&[out, inp], DType::F32)?,
            y: be.zeros(&[n, out], DType::F32)?,
            dx: be.zeros(&[n, inp], DType::F32)?,
            du: be.zeros(&[out, r], DType::F32)?,
            dv: be.zeros(&[r, inp], DType::F32)?,
            ds: be.zeros(&[out, inp], DType::F32)?,
            db: be.zeros(&[out], DType::F32)?,
            dw: be.zeros(&[out, inp], DType::F32)?,
            t: be.zeros(&[n, r], DType::F32)?,
            dt: be.zeros(&[n, r], DType::F32)?,
        })
    }

    fn two_path(&mut self, be: &dyn Backend) -> Result<()> {
        let (n, o, i, r, p) = (self.n, self.out, self.inp, self.r, self.prec);
        // forward: t = x·Vᵀ, y = t·Uᵀ + x·(M⊙S)ᵀ + b
        be.mul_mask(&self.s, &self.m, &mut self.w_eff)?;
        be.gemm(
            &Gemm::nt(n, r, i).precision(p),
            &self.x,
            &self.v,
            &mut self.t,
        )?;
        be.gemm(
            &Gemm::nt(n, o, r).precision(p),
            &self.t,
            &self.u,
            &mut self.y,
        )?;
        be.gemm(
            &Gemm::nt(n, o, i).beta(1.0).precision(p),
            &self.x,
            &self.w_eff,
            &mut self.y,
        )?;
        be.add_row_bias(&mut self.y, &self.b)?;
        // backward
        be.gemm(
            &Gemm::tn(o, i, n).precision(p),
            &self.dy,
            &self.x,
            &mut self.dw,
        )?;
        be.mul_mask(&self.dw, &self.m, &mut self.w_eff)?;
        be.axpby(1.0, &self.w_eff, 1.0, &mut self.ds)?;
        be.mul_mask(&self.s, &self.m, &mut self.w_eff)?;
        be.gemm(
            &Gemm::nn(n, i, o).precision(p),
            &self.dy,
            &self.w_eff,
            &mut self.dx,
        )?;
        be.gemm(
            &Gemm::nn(n, r, o).precision(p),
            &self.dy,
            &self.u,
            &mut self.dt,
        )?;
        be.gemm(
            &Gemm::nn(n, i, r).beta(1.0).precision(p),
            &self.dt,
            &self.v,
            &mut self.dx,
        )?;
        be.gemm(
            &Gemm::tn(o, r, n).beta(1.0).precision(p),
            &self.dy,
            &self.t,
            &mut self.du,
        )?;
        be.gemm(
            &Gemm::tn(r, i, n).beta(1.0).precision(p),
            &self.dt,
            &self.x,
            &mut self.dv,
        )?;
        be.col_sum(&self.dy, &mut self.db, true)
    }

    fn dense(&mut self, be: &dyn Backend) -> Result<()> {
        let (n, o, i, p) = (self.n, self.out, self.inp, self.prec);
        // W is `s` here.
        be.gemm(
            &Gemm::nt(n, o, i).precision(p),
            &self.x,
            &self.s,
            &mut self.y,
        )?;
        be.add_row_bias(&mut self.y, &self.b)?;
        be.gemm(
            &Gemm::tn(o, i, n).beta(1.0).precision(p),
            &self.dy,
            &self.x,
            &mut self.dw,
        )?;
        be.gemm(
            &Gemm::nn(n, i, o).precision(p),
            &self.dy,
            &self.s,
            &mut self.dx,
        )?;
        be.col_sum(&self.dy, &mut self.db, true)
    }
}

impl Workload for Layer {
    fn name(&self) -> String {
        let what = match self.kind {
            LayerKind::Fused => "fused U·V+S layer fwd+bwd",
            LayerKind::TwoPath => "two-path x·Vᵀ·Uᵀ + x·(M⊙S)ᵀ fwd+bwd",
            LayerKind::Dense => "dense layer fwd+bwd",
        };
        format!("{what} ({})", precision_name(self.prec))
    }
    fn size(&self) -> String {
        if self.kind == LayerKind::Dense {
            format!("{}×{}, N = {}", self.out, self.inp, self.n)
        } else {
            format!("{}×{}, N = {}, r = {}", self.out, self.inp, self.n, self.r)
        }
    }
    fn bound(&self) -> Bound {
        Bound::Compute(self.prec)
    }
    fn flops(&self) -> f64 {
        let (n, o, i, r) = (
            self.n as f64,
            self.out as f64,
            self.inp as f64,
            self.r as f64,
        );
        match self.kind {
            LayerKind::Dense => 6.0 * n * o * i,
            LayerKind::Fused => 6.0 * n * o * i + 6.0 * o * i * r,
            LayerKind::TwoPath => 6.0 * n * o * i + 6.0 * n * r * (o + i),
        }
    }
    fn bytes(&self) -> f64 {
        // x, dy, y, dx once; the weight-sized tensors a few times.
        let (n, o, i) = (self.n as f64, self.out as f64, self.inp as f64);
        4.0 * (2.0 * n * (o + i)) + 4.0 * 4.0 * o * i
    }
    fn run(&mut self, be: &dyn Backend) -> Result<()> {
        match self.kind {
            LayerKind::Fused => {
                crate::backend::lowrank_sparse::forward(
                    &*be,
                    &self.x,
                    &self.u,
                    &self.v,
                    Some(&self.s),
                    Some(&self.m),
                    Some(&self.b),
                    &mut self.w_eff,
                    &mut self.y,
                    self.prec,
                )?;
                crate::backend::lowrank_sparse::backward(
                    &*be,
                    &self.x,
                    &self.u,
                    &self.v,
                    Some(&self.m),
                    &self.w_eff,
                    &self.dy,
                    Some(&mut self.dx),
                    &mut self.du,
                    &mut self.dv,
                    Some(&mut self.ds),
                    Some(&mut self.db),
                    &mut self.dw,
                    self.prec,
                )
            }
            LayerKind::TwoPath => self.two_path(be),
            LayerKind::Dense => self.dense(be),
        }
    }
}

fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "fp32",
        Precision::Tf32 => "tf32",
        Precision::Bf16 => "bf16",
    }
}

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

/// A square GEMM at one precision.
struct SquareGemm {
    n: usize,
    prec: Precision,
    a: Tensor,
    b: Tensor,
    c: Tensor,
}

impl Workload for SquareGemm {
    fn name(&self) -> String {
        format!("gemm {}", precision_name(self.prec))
    }
    fn size(&self) -> String {
        format!("{}³", self.n)
    }
    fn bound(&self) -> Bound {
        Bound::Compute(self.prec)
    }
    fn flops(&self) -> f64 {
        2.0 * (self.n as f64).powi(3)
    }
    fn bytes(&self) -> f64 {
        12.0 * (self.n * self.n) as f64
    }
    fn run(&mut self, be: &dyn Backend) -> Result<()> {
        be.gemm(
            &Gemm::nn(self.n, self.n, self.n).precision(self.prec),
            &self.a,
            &self.b,
            &mut self.c,
        )
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
    Ok(report)
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
