//! The backend API: tensors and every operation the model, the trainer and the
//! compression methods need, with two implementations:
//!
//! - [`cpu::CpuBackend`]: rayon + the `gemm` crate. It is the reference every
//!   GPU kernel is tested against, and what CI runs, so it is exact and
//!   deterministic (reductions have a fixed order; no result depends on the
//!   number of threads).
//! - [`cuda::CudaBackend`]: cuBLAS / cuBLASLt plus the kernels in `kernels/*.cu`.
//!
//! Model code takes a `&dyn Backend` and never looks at where a tensor lives.
//! Conventions: tensors are dense and row-major; a linear layer computes
//! `y = x·Wᵀ + b` with `W` of shape `out × in`. Operations write into outputs
//! the caller allocated; "accumulate" means `+=`, otherwise outputs are
//! overwritten.

pub mod cpu;
pub mod cuda;
pub mod lowrank_sparse;
pub mod philox;
pub mod select;

use std::sync::Arc;

use half::bf16;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use cpu::CpuBackend;
pub use select::{gpu_for_test, select_backend};

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    F32,
    Bf16,
    U8,
    I32,
}

impl DType {
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::Bf16 => 2,
            DType::U8 => 1,
        }
    }
}

/// Where a tensor lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        })
    }
}

/// Host storage.
#[derive(Clone, Debug)]
pub enum CpuStorage {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
    U8(Vec<u8>),
    I32(Vec<i32>),
}

/// Device or host storage of a tensor.
pub enum Storage {
    Cpu(CpuStorage),
    Cuda(cuda::CudaStorage),
}

/// A dense row-major tensor on one device.
pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor({:?}, {:?}, {})",
            self.shape,
            self.dtype(),
            self.device()
        )
    }
}

impl Tensor {
    /// Wraps storage; the element count must match the shape.
    pub fn from_storage(shape: &[usize], storage: Storage) -> Result<Tensor> {
        let t = Tensor {
            shape: shape.to_vec(),
            storage,
        };
        let len = t.storage_len();
        if len != t.numel() {
            return Err(Error::shape(
                "Tensor::from_storage",
                format!(
                    "shape {shape:?} has {} elements but storage has {len}",
                    t.numel()
                ),
            ));
        }
        Ok(t)
    }

    /// A host tensor of f32 values.
    pub fn cpu_f32(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_storage(shape, Storage::Cpu(CpuStorage::F32(data)))
    }
    pub fn cpu_u8(data: Vec<u8>, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_storage(shape, Storage::Cpu(CpuStorage::U8(data)))
    }
    pub fn cpu_i32(data: Vec<i32>, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_storage(shape, Storage::Cpu(CpuStorage::I32(data)))
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Changes the shape, keeping the element count.
    pub fn reshape(&mut self, shape: &[usize]) -> Result<()> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!("{:?} -> {shape:?}", self.shape),
            ));
        }
        self.shape = shape.to_vec();
        Ok(())
    }
    /// `(rows, cols)` where cols is the last dimension and rows the product of the others.
    pub fn rows_cols(&self) -> (usize, usize) {
        let cols = *self.shape.last().unwrap_or(&1);
        let rows = self.numel().checked_div(cols).unwrap_or(0);
        (rows, cols)
    }
    pub fn dtype(&self) -> DType {
        match &self.storage {
            Storage::Cpu(CpuStorage::F32(_)) => DType::F32,
            Storage::Cpu(CpuStorage::Bf16(_)) => DType::Bf16,
            Storage::Cpu(CpuStorage::U8(_)) => DType::U8,
            Storage::Cpu(CpuStorage::I32(_)) => DType::I32,
            Storage::Cuda(c) => c.dtype(),
        }
    }
    pub fn device(&self) -> DeviceKind {
        match &self.storage {
            Storage::Cpu(_) => DeviceKind::Cpu,
            Storage::Cuda(_) => DeviceKind::Cuda,
        }
    }
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    pub fn storage_mut(&mut self) -> &mut Storage {
        &mut self.storage
    }
    fn storage_len(&self) -> usize {
        match &self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => v.len(),
            Storage::Cpu(CpuStorage::Bf16(v)) => v.len(),
            Storage::Cpu(CpuStorage::U8(v)) => v.len(),
            Storage::Cpu(CpuStorage::I32(v)) => v.len(),
            Storage::Cuda(c) => c.len(),
        }
    }
    pub fn size_bytes(&self) -> usize {
        self.numel() * self.dtype().size_bytes()
    }

    /// Host f32 data (error on a device tensor or another dtype).
    pub fn host_f32(&self) -> Result<&[f32]> {
        match &self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => Ok(v),
            _ => Err(self.wrong("host f32")),
        }
    }
    pub fn host_f32_mut(&mut self) -> Result<&mut [f32]> {
        match &mut self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => Ok(v),
            _ => Err(Error::shape(
                "host_f32_mut",
                format!("tensor {:?} is not host f32", self.shape),
            )),
        }
    }
    pub fn host_bf16(&self) -> Result<&[bf16]> {
        match &self.storage {
            Storage::Cpu(CpuStorage::Bf16(v)) => Ok(v),
            _ => Err(self.wrong("host bf16")),
        }
    }
    pub fn host_bf16_mut(&mut self) -> Result<&mut [bf16]> {
        match &mut self.storage {
            Storage::Cpu(CpuStorage::Bf16(v)) => Ok(v),
            _ => Err(Error::shape(
                "host_bf16_mut",
                format!("tensor {:?} is not host bf16", self.shape),
            )),
        }
    }
    pub fn host_u8(&self) -> Result<&[u8]> {
        match &self.storage {
            Storage::Cpu(CpuStorage::U8(v)) => Ok(v),
            _ => Err(self.wrong("host u8")),
        }
    }
    pub fn host_u8_mut(&mut self) -> Result<&mut [u8]> {
        match &mut self.storage {
            Storage::Cpu(CpuStorage::U8(v)) => Ok(v),
            _ => Err(Error::shape(
                "host_u8_mut",
                format!("tensor {:?} is not host u8", self.shape),
            )),
        }
    }
    pub fn host_i32(&self) -> Result<&[i32]> {
        match &self.storage {
            Storage::Cpu(CpuStorage::I32(v)) => Ok(v),
            _ => Err(self.wrong("host i32")),
        }
    }
    pub fn host_i32_mut(&mut self) -> Result<&mut [i32]> {
        match &mut self.storage {
            Storage::Cpu(CpuStorage::I32(v)) => Ok(v),
            _ => Err(Error::shape(
                "host_i32_mut",
                format!("tensor {:?} is not host i32", self.shape),
            )),
        }
    }
    fn wrong(&self, want: &str) -> Error {
        Error::shape(
            want,
            format!(
                "tensor {:?} is {:?} on {}",
                self.shape,
                self.dtype(),
                self.device()
            ),
        )
    }
}

/// Precision of a matrix product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Full fp32 arithmetic.
    #[default]
    F32,
    /// fp32 storage, TF32 tensor-core products (inputs rounded to 10-bit mantissa).
    Tf32,
    /// Inputs rounded to bf16, products accumulated in fp32, fp32 output.
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Precision::F32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(Error::msg(format!(
                "unknown precision '{s}' (expected f32, tf32 or bf16)"
            ))),
        }
    }
}

/// A (strided-batched) row-major matrix product
/// `C[b] = alpha · op(A[b]) · op(B[b]) + beta · C[b]` for `b in 0..batch`,
/// where `op(A)` is `m × k`, `op(B)` is `k × n` and `C` is `m × n`.
///
/// Leading dimensions are row strides of the matrices *as stored*: `A` is
/// stored `m × k` (or `k × m` when `trans_a`), so `lda ≥ k` (or `≥ m`).
/// Offsets and batch strides are in elements. All three tensors are F32.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    pub beta: f32,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub offset_a: usize,
    pub offset_b: usize,
    pub offset_c: usize,
    pub batch: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
    pub precision: Precision,
}

impl Gemm {
    /// `C = op(A)·op(B)` with packed leading dimensions, one matrix, alpha 1, beta 0.
    pub fn new(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> Gemm {
        Gemm {
            m,
            n,
            k,
            trans_a,
            trans_b,
            alpha: 1.0,
            beta: 0.0,
            lda: if trans_a { m } else { k },
            ldb: if trans_b { k } else { n },
            ldc: n,
            offset_a: 0,
            offset_b: 0,
            offset_c: 0,
            batch: 1,
            stride_a: m * k,
            stride_b: k * n,
            stride_c: m * n,
            precision: Precision::F32,
        }
    }
    /// `A·B`.
    pub fn nn(m: usize, n: usize, k: usize) -> Gemm {
        Gemm::new(m, n, k, false, false)
    }
    /// `A·Bᵀ` (B stored `n × k`): the linear-layer forward `x·Wᵀ`.
    pub fn nt(m: usize, n: usize, k: usize) -> Gemm {
        Gemm::new(m, n, k, false, true)
    }
    /// `Aᵀ·B` (A stored `k × m`): the weight gradient `dyᵀ·x`.
    pub fn tn(m: usize, n: usize, k: usize) -> Gemm {
        Gemm::new(m, n, k, true, false)
    }
    pub fn alpha(mut self, alpha: f32) -> Gemm {
        self.alpha = alpha;
        self
    }
    pub fn beta(mut self, beta: f32) -> Gemm {
        self.beta = beta;
        self
    }
    pub fn precision(mut self, p: Precision) -> Gemm {
        self.precision = p;
        self
    }
    /// Packed strided batch of `batch` products.
    pub fn batched(mut self, batch: usize) -> Gemm {
        self.batch = batch;
        self
    }
    /// Flops of the product (2·m·n·k per matrix).
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64 * self.batch as f64
    }

    /// Checks that every matrix of the batch lies inside the three buffers.
    pub fn validate(&self, a_len: usize, b_len: usize, c_len: usize) -> Result<()> {
        let (ar, ac) = if self.trans_a {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        };
        let (br, bc) = if self.trans_b {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        };
        let check = |name: &str,
                     rows: usize,
                     cols: usize,
                     ld: usize,
                     off: usize,
                     stride: usize,
                     len: usize| {
            if rows == 0 || cols == 0 || self.batch == 0 {
                return Ok(());
            }
            if ld < cols {
                return Err(Error::shape(
                    "gemm",
                    format!("ld{name} = {ld} < {cols} columns"),
                ));
            }
            let last = off + (self.batch - 1) * stride + (rows - 1) * ld + cols;
            if last > len {
                return Err(Error::shape(
                    "gemm",
                    format!(
                        "{name} ({rows}×{cols}, ld {ld}, offset {off}, batch {} stride {stride}) needs {last} elements, buffer has {len}",
                        self.batch
                    ),
                ));
            }
            Ok(())
        };
        check("a", ar, ac, self.lda, self.offset_a, self.stride_a, a_len)?;
        check("b", br, bc, self.ldb, self.offset_b, self.stride_b, b_len)?;
        check(
            "c",
            self.m,
            self.n,
            self.ldc,
            self.offset_c,
            self.stride_c,
            c_len,
        )
    }
}

/// A strided block copy: `rows × cols` elements from `src` to `dst`, row `r`
/// starting at `src_offset + r·src_stride` and `dst_offset + r·dst_stride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowCopy {
    pub rows: usize,
    pub cols: usize,
    pub src_offset: usize,
    pub src_stride: usize,
    pub dst_offset: usize,
    pub dst_stride: usize,
    /// `dst += src` instead of `dst = src`.
    pub accumulate: bool,
}

/// Hyper-parameters of one AdamW step, as `torch.optim.AdamW` computes it:
/// `g = grad·grad_scale; m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²;
/// p ← p·(1 − lr·wd); p ← p − lr/bc1 · m / (√v/√bc2 + eps)`
/// with `bc1 = 1 − β1^t`, `bc2 = 1 − β2^t`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// 1-based step count `t`.
    pub step: u64,
    /// Multiplies the gradient first (gradient clipping / accumulation averaging).
    pub grad_scale: f32,
}

impl AdamWStep {
    pub fn bias_corrections(&self) -> (f32, f32) {
        let t = self.step as i32;
        (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t))
    }
}

/// How movement-pruning scores are updated (docs/algorithms.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScoreRule {
    /// `dSc += G⊙W`: the scores' gradient, for an AdamW optimizer of scores.
    #[default]
    Adam,
    /// `Sc -= G⊙W`: the paper's movement, accumulated directly.
    Accumulate,
}

/// One LoSparse importance update (docs/algorithms.md §3), applied after the
/// optimizer step.
/// `count` is this step's 1-based position in the window: the running mean
/// becomes `ipt = ((count−1)·ipt + |S⊙∇S|)/count` (for `count = 1` simply
/// `ipt = |S⊙∇S|`, so nothing needs resetting between windows). When `close`
/// is set (the window's last step), `Ī ← β1·Ī + (1−β1)·ipt` and, when `ubar`
/// is given, `Ū ← β2·Ū + (1−β2)·|ipt − Ī|` (with the new Ī).
///
/// Every step is one f32 operation in this order, with `1−β` computed in f32
/// once (no fused multiply-add): the CUDA kernels reproduce the CPU bit for bit.
/// `count = 0` is an error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImportanceStep {
    pub count: u32,
    pub close: bool,
    pub beta1: f32,
    pub beta2: f32,
}

/// Which entries a top-k selection keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopkRule {
    /// Exactly `k` entries: those a full sort by (score descending, global
    /// index ascending) puts first. Ties at the threshold go to the lower index,
    /// where the global index runs through the matrices in the order given,
    /// each flattened row-major.
    ExactK,
    /// Every entry whose score is ≥ the k-th largest score (ties kept; may keep
    /// more than k). `k = 0` keeps nothing.
    KeepTies,
}

/// What a selection ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopkScope {
    /// Each entry by its own score.
    Entries,
    /// Each entry by the mean of its row (whole rows go together); k still
    /// counts entries, so rows of different lengths weigh by their length.
    RowMean,
}

/// The threshold a selection found: keep every entry whose key is above
/// `threshold` and, for [`TopkRule::ExactK`], the first `tie_quota` entries
/// (in global index order) whose key equals it; for `KeepTies` every entry
/// equal to it. Scores are compared in the total order of `f32::total_cmp`
/// (−0 < +0; NaN above +∞), on `|x|` when `abs` was asked for (see
/// [`topk_key`]); with [`TopkScope::RowMean`] the key of an entry is that of
/// its row's mean ([`topk_row_mean`]) and `threshold` is a row mean. `kept`
/// is the number of entries the mask will keep, `ties` the number of entries
/// whose key equals the threshold's (so `tie_quota == ties` means that every
/// tie is kept and the apply pass needs no tie ranking).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TopkThreshold {
    pub threshold: f32,
    pub tie_quota: usize,
    pub ties: usize,
    pub kept: usize,
    pub rule: TopkRule,
    pub scope: TopkScope,
    pub abs: bool,
    /// No entry is kept (k = 0): the threshold is meaningless.
    pub keep_none: bool,
}

impl TopkThreshold {
    /// The threshold of `k = 0`: nothing is kept.
    pub fn none(rule: TopkRule, scope: TopkScope, abs: bool) -> TopkThreshold {
        TopkThreshold {
            threshold: 0.0,
            tie_quota: 0,
            ties: 0,
            kept: 0,
            rule,
            scope,
            abs,
            keep_none: true,
        }
    }

    /// Builds the threshold from the k-th largest key `key`, the number of
    /// entries with a larger key (`greater`) and with an equal one (`ties`).
    pub fn from_key(
        key: u32,
        k: usize,
        greater: usize,
        ties: usize,
        rule: TopkRule,
        scope: TopkScope,
        abs: bool,
    ) -> TopkThreshold {
        let (tie_quota, kept) = match rule {
            TopkRule::ExactK => (k - greater, k),
            TopkRule::KeepTies => (ties, greater + ties),
        };
        TopkThreshold {
            threshold: topk_key_value(key),
            tie_quota,
            ties,
            kept,
            rule,
            scope,
            abs,
            keep_none: false,
        }
    }

    /// The ordering key of the threshold (see [`topk_key`]).
    pub fn key(&self) -> u32 {
        topk_key(self.threshold, self.abs)
    }

    /// True when only the first `tie_quota` of the `ties` equal entries are kept,
    /// so the apply pass has to rank the ties by global index.
    pub fn partial_ties(&self) -> bool {
        !self.keep_none && self.rule == TopkRule::ExactK && self.tie_quota < self.ties
    }
}

/// The ordering key of a score: a `u32` whose unsigned order is the order of
/// `f32::total_cmp` on `x` (on `|x|` when `abs`). Both backends rank by it.
#[inline]
pub fn topk_key(x: f32, abs: bool) -> u32 {
    // Negative: all bits flipped; positive: the sign bit set. Branch-free, as
    // scores have random signs.
    let b = if abs {
        x.to_bits() & 0x7fff_ffff
    } else {
        x.to_bits()
    };
    b ^ (((b as i32 >> 31) as u32) | 0x8000_0000)
}

/// The f32 whose key is `key` (the inverse of [`topk_key`] without `abs`).
#[inline]
pub fn topk_key_value(key: u32) -> f32 {
    if key & 0x8000_0000 != 0 {
        f32::from_bits(key & 0x7fff_ffff)
    } else {
        f32::from_bits(!key)
    }
}

/// The score of a row under [`TopkScope::RowMean`]: the mean of the row's
/// entries (of their absolute values when `abs`), summed in f64 by 32
/// interleaved partial sums (partial `l` adds entries `l, l+32, …` in order)
/// that are then combined pairwise as a warp's xor-shuffle tree does
/// (`p[i] += p[i+16]`, then `+8`, `+4`, `+2`, `+1`), divided by the row
/// length in f64 and rounded to f32. A NaN mean becomes the canonical
/// positive NaN. The CUDA kernel computes exactly this, so CPU and GPU
/// masks agree bit for bit.
pub fn topk_row_mean(row: &[f32], abs: bool) -> f32 {
    let mut p = [0.0f64; 32];
    for (i, &x) in row.iter().enumerate() {
        let v = if abs { x.abs() } else { x };
        p[i % 32] += v as f64;
    }
    let mut w = 16;
    while w >= 1 {
        for i in 0..w {
            p[i] += p[i + w];
        }
        w /= 2;
    }
    let m = (p[0] / row.len() as f64) as f32;
    if m.is_nan() {
        f32::NAN
    } else {
        m
    }
}

/// A weighted low-rank problem of docs/algorithms.md §4.2: minimise
/// `Σ Ω_ij·(W_ij − (U·V)_ij)²` with `Ω = 1` where `mask` is set and `omega`
/// elsewhere (for ω ∈ {0, 1} this is `‖Ω⊙(W − U·V)‖²_F`).
pub struct WeightedSvdProblem<'a> {
    /// The (pruned) matrix `W_s`, `out × in`, F32.
    pub w: &'a Tensor,
    /// U8 `out × in`: 1 on kept entries.
    pub mask: &'a Tensor,
    pub omega: f32,
    pub rank: usize,
}

/// Options of the EM solver (docs/algorithms.md §4.2).
///
/// The algorithm, per problem (both backends; they differ only in rounding):
/// - random start `P₀` (`in × r`): entry `j` (row-major) is `2u − 1` with
///   `u = philox::uniform(seed, problem index in the call, j)` ([`svd_random_start`]);
/// - `init_power_iters` sweeps on `X₀ = W_s` (at least one): the first uses
///   `P = P₀`, later ones `P = orth(Bᵀ)`; a sweep is `Y = X·P`, `Q = orth(Y)`,
///   `B = Qᵀ·X`, and the current approximation is `A = Q·B`;
/// - EM step `k = 1, 2, …, max_steps`: `X_k = Ω⊙W_s + (1−Ω)⊙A_{k−1}`, then
///   `power_iters` sweeps (at least one) on `X_k`, each starting from
///   `P = orth(Bᵀ)` (the row space of the previous approximation). This warm
///   start makes `‖X_k − A_k‖ ≤ ‖X_k − A_{k−1}‖`, hence the weighted objective
///   never increases (in exact arithmetic);
/// - the objective `Σ Ω_ij (W − A)²_ij` (f64) of `A_0, A_1, …` is recorded; the
///   iteration stops after step `k` when `|f_{k−1} − f_k| < rel_tol·f_{k−1}`
///   ([`em_converged`]) or at `max_steps`;
/// - the factors come from the SVD of `B = U_b Σ V_bᵀ`: `U = Q·U_b·√Σ`,
///   `V = √Σ·V_bᵀ`, singular values descending.
///
/// The CPU computes in f64 with Householder QR for `orth`; the CUDA backend in
/// f32 with CholeskyQR2 (see `backend/cuda/compress.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightedSvdOptions {
    /// At most this many EM steps (K).
    pub max_steps: usize,
    /// Stop when the relative change of the objective falls below this.
    pub rel_tol: f64,
    /// Subspace-iteration sweeps per EM step (warm-started from the previous V).
    pub power_iters: usize,
    /// Sweeps for the first rank-r SVD of `X₀ = W_s` (random start).
    pub init_power_iters: usize,
    /// Seed of the random start.
    pub seed: u64,
}

impl Default for WeightedSvdOptions {
    fn default() -> Self {
        WeightedSvdOptions {
            max_steps: 10,
            rel_tol: 1e-4,
            power_iters: 1,
            init_power_iters: 6,
            seed: 0,
        }
    }
}

/// Result of one weighted low-rank problem: `U = Q·U_b·√Σ` (`out × r`) and
/// `V = √Σ·V_bᵀ` (`r × in`), the singular values of `U·V`, and the objective
/// after the initial SVD and after each EM step (so `1 + steps` values; for
/// rank 0 the factors are empty and the objective is `[Σ Ω W²]`).
pub struct WeightedSvdResult {
    pub u: Tensor,
    pub v: Tensor,
    pub singular_values: Vec<f32>,
    pub objective: Vec<f64>,
}

/// What the engine itself counts of its device work (the CUDA backend):
/// kernel launches, library (cuBLAS) calls, host synchronisations and device
/// allocations, cumulative. The emulated GPU counts more (bytes copied, peak
/// memory) from below: `crate::device::emulator::counters`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineCounters {
    pub launches: u64,
    pub library_calls: u64,
    pub syncs: u64,
    pub allocs: u64,
}

/// Everything a backend computes. Every method checks shapes and dtypes and
/// returns an [`Error`] naming the operation; none panics on bad input.
#[allow(clippy::wrong_self_convention)]
pub trait Backend: Send + Sync {
    fn kind(&self) -> DeviceKind;
    /// A human-readable device name ("cpu (2 threads)", "NVIDIA H100 80GB HBM3").
    fn name(&self) -> String;
    /// The engine's own counts of device work (None: the backend counts nothing).
    fn engine_counters(&self) -> Option<EngineCounters> {
        None
    }

    // ---- memory -------------------------------------------------------------
    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor>;
    /// A tensor whose contents will be overwritten before they are read (the
    /// CUDA backend skips the memset; the CPU zero-fills, as Rust requires).
    fn empty(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.zeros(shape, dtype)
    }
    fn from_f32(&self, data: &[f32], shape: &[usize]) -> Result<Tensor>;
    fn from_u8(&self, data: &[u8], shape: &[usize]) -> Result<Tensor>;
    fn from_i32(&self, data: &[i32], shape: &[usize]) -> Result<Tensor>;
    /// F32 or BF16 tensor to host f32.
    fn to_f32(&self, t: &Tensor) -> Result<Vec<f32>>;
    fn to_u8(&self, t: &Tensor) -> Result<Vec<u8>>;
    fn to_i32(&self, t: &Tensor) -> Result<Vec<i32>>;
    /// `dst = src`, same dtype and element count.
    fn copy(&self, src: &Tensor, dst: &mut Tensor) -> Result<()>;
    /// Sets every element (U8 / I32 tensors take the value cast).
    fn fill(&self, t: &mut Tensor, value: f32) -> Result<()>;
    /// Element-type conversion: F32 → BF16 (round to nearest even), BF16 → F32, U8 → F32.
    fn cast(&self, src: &Tensor, dst: &mut Tensor) -> Result<()>;
    /// Waits for all queued work (a no-op on the CPU).
    fn synchronize(&self) -> Result<()>;

    fn clone_tensor(&self, t: &Tensor) -> Result<Tensor> {
        let mut out = self.zeros(t.shape(), t.dtype())?;
        self.copy(t, &mut out)?;
        Ok(out)
    }

    // ---- dense linear algebra -------------------------------------------------
    fn gemm(&self, g: &Gemm, a: &Tensor, b: &Tensor, c: &mut Tensor) -> Result<()>;

    // ---- elementwise and reductions (all F32 unless said) ---------------------
    /// `y = alpha·x + beta·y`.
    fn axpby(&self, alpha: f32, x: &Tensor, beta: f32, y: &mut Tensor) -> Result<()>;
    /// `t *= alpha`.
    fn scale(&self, t: &mut Tensor, alpha: f32) -> Result<()>;
    /// `out = a ⊙ b` elementwise.
    fn mul(&self, a: &Tensor, b: &Tensor, out: &mut Tensor) -> Result<()>;
    /// `out = x ⊙ mask` (mask U8, 0 or 1).
    fn mul_mask(&self, x: &Tensor, mask: &Tensor, out: &mut Tensor) -> Result<()>;
    /// `out += mask ⊙ x` (a select: entries where the U8 mask is 0 keep
    /// `out`); no mask: `out += x`.
    fn masked_add(&self, x: &Tensor, mask: Option<&Tensor>, out: &mut Tensor) -> Result<()>;
    /// `y[r, c] += bias[c]` for `y` viewed as `rows × bias.numel()`.
    fn add_row_bias(&self, y: &mut Tensor, bias: &Tensor) -> Result<()>;
    /// `out[c] (+)= Σ_r x[r, c]` for `x` viewed as `rows × out.numel()`.
    fn col_sum(&self, x: &Tensor, out: &mut Tensor, accumulate: bool) -> Result<()>;
    /// Exact (erf) GELU.
    fn gelu(&self, x: &Tensor, y: &mut Tensor) -> Result<()>;
    /// `dx = dy · gelu'(x)`.
    fn gelu_backward(&self, x: &Tensor, dy: &Tensor, dx: &mut Tensor) -> Result<()>;
    fn tanh(&self, x: &Tensor, y: &mut Tensor) -> Result<()>;
    /// `dx = dy · (1 − y²)` with `y = tanh(x)`.
    fn tanh_backward(&self, y: &Tensor, dy: &Tensor, dx: &mut Tensor) -> Result<()>;
    /// Inverted dropout: `y_i = x_i / (1−p)` if `u_i ≥ p` else 0, where
    /// `u_i = philox::uniform(seed, stream, i)`. Applying it to `dy` with the
    /// same `(seed, stream)` is its backward. `p = 0` copies.
    fn dropout(&self, x: &Tensor, y: &mut Tensor, p: f32, seed: u64, stream: u64) -> Result<()>;
    /// Row-wise LayerNorm over the last dimension; also writes the row mean
    /// and `1/√(var + eps)` for the backward.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f32,
        y: &mut Tensor,
        mean: &mut Tensor,
        rstd: &mut Tensor,
    ) -> Result<()>;
    /// Writes `dx`; accumulates `dgamma`, `dbeta`.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        gamma: &Tensor,
        mean: &Tensor,
        rstd: &Tensor,
        dx: &mut Tensor,
        dgamma: &mut Tensor,
        dbeta: &mut Tensor,
    ) -> Result<()>;
    /// `[B·S, H·D] → [B, H, S, D]`.
    fn split_heads(
        &self,
        x: &Tensor,
        out: &mut Tensor,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<()>;
    /// `[B, H, S, D] → [B·S, H·D]`.
    fn merge_heads(
        &self,
        x: &Tensor,
        out: &mut Tensor,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<()>;
    /// In place on `[B, H, S, S]` scores: `p = softmax(scale·s)` over keys,
    /// with keys whose `key_mask[b, j]` (U8 `[B, S]`) is 0 given probability 0.
    fn attention_softmax(
        &self,
        scores: &mut Tensor,
        key_mask: &Tensor,
        heads: usize,
        scale: f32,
    ) -> Result<()>;
    /// In place: `dprobs ← scale · p ⊙ (dp − Σ_j p_j·dp_j)` per row (the
    /// gradient with respect to the unscaled scores).
    fn softmax_backward(&self, probs: &Tensor, dprobs: &mut Tensor, scale: f32) -> Result<()>;
    /// `out[i] (+)= table[ids[i]]` (ids I32; each must be `< table rows`).
    fn gather_rows(
        &self,
        table: &Tensor,
        ids: &Tensor,
        out: &mut Tensor,
        accumulate: bool,
    ) -> Result<()>;
    /// `table_grad[ids[i]] += d[i]`, summed in the order of `i` (deterministic).
    fn scatter_add_rows(&self, d: &Tensor, ids: &Tensor, table_grad: &mut Tensor) -> Result<()>;
    fn copy_rows(&self, src: &Tensor, dst: &mut Tensor, spec: &RowCopy) -> Result<()>;
    /// `Σ x²` in a fixed order (f64 result), for gradient norms and losses.
    fn sum_squares(&self, x: &Tensor) -> Result<f64>;
    /// One AdamW update of `p` in place (see [`AdamWStep`]).
    fn adamw(
        &self,
        p: &mut Tensor,
        g: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        hp: &AdamWStep,
    ) -> Result<()>;

    // ---- the four compression kernels (docs/algorithms.md §6) ------------------
    /// Movement pruning's straight-through backward in one pass over
    /// `W`, `G = ∂L/∂W'` and the U8 mask: `grad_w += G⊙M`, and
    /// `scores += G⊙W` ([`ScoreRule::Adam`]: `scores` is `∂L/∂Sc`) or
    /// `scores −= G⊙W` ([`ScoreRule::Accumulate`]: `scores` is `Sc`).
    fn movement_grads(
        &self,
        w: &Tensor,
        grad_wprime: &Tensor,
        mask: &Tensor,
        grad_w: &mut Tensor,
        scores: &mut Tensor,
        rule: ScoreRule,
    ) -> Result<()>;
    /// LoSparse's importance update in one pass (see [`ImportanceStep`]).
    fn losparse_importance(
        &self,
        s: &Tensor,
        grad_s: &Tensor,
        ipt: &mut Tensor,
        ibar: &mut Tensor,
        ubar: Option<&mut Tensor>,
        step: &ImportanceStep,
    ) -> Result<()>;
    /// AdamW on `S` followed by the importance update with the *updated* `S`
    /// (the reference order: step, then `|S⊙∇S|`). The gradient in the
    /// importance is the one AdamW used, `hp.grad_scale·grad_s` (the reference
    /// computes it from the clipped `p.grad`). The CUDA backend fuses both into
    /// one pass and matches the CPU bit for bit.
    #[allow(clippy::too_many_arguments)]
    fn adamw_with_importance(
        &self,
        s: &mut Tensor,
        grad_s: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        hp: &AdamWStep,
        ipt: &mut Tensor,
        ibar: &mut Tensor,
        ubar: Option<&mut Tensor>,
        step: &ImportanceStep,
    ) -> Result<()> {
        self.adamw(s, grad_s, m, v, hp)?;
        if hp.grad_scale == 1.0 {
            self.losparse_importance(s, grad_s, ipt, ibar, ubar, step)
        } else {
            let mut g = self.clone_tensor(grad_s)?;
            self.scale(&mut g, hp.grad_scale)?;
            self.losparse_importance(s, &g, ipt, ibar, ubar, step)
        }
    }
    /// Finds the top-k threshold over one or several score tensors of any
    /// shapes (F32). `k` counts entries and must be `≤` their total number
    /// (`k = 0` gives a threshold that keeps nothing). For `RowMean` a row is
    /// the last dimension of a tensor. The result is exact (a radix select on
    /// the keys of [`topk_key`]), identical on every backend.
    fn topk_threshold(
        &self,
        scores: &[&Tensor],
        k: usize,
        rule: TopkRule,
        scope: TopkScope,
        abs: bool,
    ) -> Result<TopkThreshold>;
    /// Writes the masks (U8 0/1, same element counts as `scores`) of a threshold
    /// found by [`Backend::topk_threshold`] on the same scores, and in the same
    /// pass applies them: `apply[i] ⊙= mask[i]` in place (a pruned entry is set
    /// to +0, whatever it held), where `apply` is empty or holds one F32
    /// tensor per score tensor (`W' = M⊙W` written into a copy of W, or
    /// LoSparse's `S` zeroed). Returns the number of entries kept: the CPU
    /// counts them, the CUDA backend returns `th.kept` without a device
    /// round trip (equal when the scores are those the threshold was found on).
    fn topk_apply(
        &self,
        scores: &[&Tensor],
        th: &TopkThreshold,
        masks: &mut [&mut Tensor],
        apply: &mut [&mut Tensor],
    ) -> Result<usize>;
    /// Soft movement (docs/algorithms.md §2, an option): `mask = σ(Sc) > τ`, and if
    /// `l1_grad_coef` is not 0, `dscores += coef·σ(Sc)·(1−σ(Sc))` (the
    /// gradient of `λ·mean σ(Sc)` when `coef = λ/numel`). Returns entries kept.
    /// The mask is computed as `(Sc as f64) > ln(τ/(1−τ))` (the logit computed
    /// once in f64), so it does not depend on how `exp` rounds and is the same
    /// on every backend; `τ` must lie in (0, 1).
    fn sigmoid_mask(
        &self,
        scores: &Tensor,
        tau: f32,
        mask: &mut Tensor,
        dscores: Option<&mut Tensor>,
        l1_grad_coef: f32,
    ) -> Result<usize>;
    /// The sparsity-aware SVD of docs/algorithms.md §4.2, batched over matrices of mixed
    /// shapes and ranks (see [`WeightedSvdOptions`] for the algorithm).
    /// Deterministic for a given seed. Errors: rank > min(out, in), a mask
    /// whose shape differs from `w`, `omega` outside [0, 1]. Rank 0 is allowed
    /// (empty factors).
    fn weighted_svd(
        &self,
        problems: &[WeightedSvdProblem<'_>],
        opts: &WeightedSvdOptions,
    ) -> Result<Vec<WeightedSvdResult>>;
}

pub type BackendRef = Arc<dyn Backend>;

/// The random start of problem `index` of a [`Backend::weighted_svd`] call:
/// `n` values `2u − 1`, `u = philox::uniform(seed, index, j)`.
pub fn svd_random_start(seed: u64, index: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|j| 2.0 * philox::uniform(seed, index as u64, j as u64) - 1.0)
        .collect()
}

/// The EM stopping rule: the relative change of the objective is below `rel_tol`
/// (or the objective is exactly 0 twice).
pub fn em_converged(prev: f64, cur: f64, rel_tol: f64) -> bool {
    let change = (prev - cur).abs();
    change < rel_tol * prev.abs() || (prev == 0.0 && cur == 0.0)
}

/// Checks one weighted-SVD problem; returns `(out, in)`.
pub fn check_svd_problem(op: &str, i: usize, p: &WeightedSvdProblem<'_>) -> Result<(usize, usize)> {
    let shape = p.w.shape();
    if shape.len() != 2 {
        return Err(Error::shape(
            op,
            format!("problem {i}: w must be a matrix, got shape {shape:?}"),
        ));
    }
    want_dtype(op, &format!("problem {i}: w"), p.w, DType::F32)?;
    want_dtype(op, &format!("problem {i}: mask"), p.mask, DType::U8)?;
    if p.mask.shape() != shape {
        return Err(Error::shape(
            op,
            format!(
                "problem {i}: mask shape {:?} differs from w shape {shape:?}",
                p.mask.shape()
            ),
        ));
    }
    if !(0.0..=1.0).contains(&p.omega) {
        return Err(Error::shape(
            op,
            format!("problem {i}: omega = {} is outside [0, 1]", p.omega),
        ));
    }
    let (out, inp) = (shape[0], shape[1]);
    if p.rank > out.min(inp) {
        return Err(Error::shape(
            op,
            format!("problem {i}: rank {} exceeds min({out}, {inp})", p.rank),
        ));
    }
    Ok((out, inp))
}

/// Checks the arguments of [`Backend::topk_apply`]; returns the element count of each score tensor.
pub fn check_topk_apply(
    op: &str,
    scores: &[&Tensor],
    masks: &[&mut Tensor],
    apply: &[&mut Tensor],
) -> Result<Vec<usize>> {
    if masks.len() != scores.len() {
        return Err(Error::shape(
            op,
            format!("{} masks for {} score tensors", masks.len(), scores.len()),
        ));
    }
    if !apply.is_empty() && apply.len() != scores.len() {
        return Err(Error::shape(
            op,
            format!(
                "{} tensors to apply to for {} score tensors (give none or one each)",
                apply.len(),
                scores.len()
            ),
        ));
    }
    let mut lens = Vec::with_capacity(scores.len());
    for (i, s) in scores.iter().enumerate() {
        want_dtype(op, &format!("scores[{i}]"), s, DType::F32)?;
        want_dtype(op, &format!("masks[{i}]"), masks[i], DType::U8)?;
        if masks[i].numel() != s.numel() {
            return Err(Error::shape(
                op,
                format!(
                    "masks[{i}] {:?} does not match scores[{i}] {:?}",
                    masks[i].shape(),
                    s.shape()
                ),
            ));
        }
        if let Some(a) = apply.get(i) {
            want_dtype(op, &format!("apply[{i}]"), a, DType::F32)?;
            if a.numel() != s.numel() {
                return Err(Error::shape(
                    op,
                    format!(
                        "apply[{i}] {:?} does not match scores[{i}] {:?}",
                        a.shape(),
                        s.shape()
                    ),
                ));
            }
        }
        lens.push(s.numel());
    }
    Ok(lens)
}

/// Checks the scores of [`Backend::topk_threshold`]; returns the total entry count.
pub fn check_topk_scores(op: &str, scores: &[&Tensor], k: usize) -> Result<usize> {
    let mut total = 0usize;
    for (i, s) in scores.iter().enumerate() {
        want_dtype(op, &format!("scores[{i}]"), s, DType::F32)?;
        total += s.numel();
    }
    if k > total {
        return Err(Error::shape(
            op,
            format!("k = {k} exceeds the {total} entries of the scores"),
        ));
    }
    Ok(total)
}

/// Shapes of a fused low-rank + sparse layer (see [`lowrank_sparse::forward`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LowrankDims {
    /// Rows of `x` (tokens).
    pub n: usize,
    pub inp: usize,
    pub out: usize,
    pub rank: usize,
}

impl LowrankDims {
    /// Checks `x`, `u` (`out × r`), `v` (`r × in`) and the optional tensors
    /// (`out × in` ones by element count, `bias` of `out`).
    pub fn check(
        op: &str,
        x: &Tensor,
        u: &Tensor,
        v: &Tensor,
        out_by_in: &[(&str, Option<&Tensor>, DType)],
        bias: Option<&Tensor>,
    ) -> Result<LowrankDims> {
        if u.shape().len() != 2 || v.shape().len() != 2 {
            return Err(Error::shape(
                op,
                format!("u {:?} and v {:?} must be matrices", u.shape(), v.shape()),
            ));
        }
        let (out, rank) = (u.shape()[0], u.shape()[1]);
        let (rv, inp) = (v.shape()[0], v.shape()[1]);
        if rv != rank {
            return Err(Error::shape(
                op,
                format!(
                    "u {:?} and v {:?} disagree on the rank",
                    u.shape(),
                    v.shape()
                ),
            ));
        }
        want_dtype(op, "x", x, DType::F32)?;
        want_dtype(op, "u", u, DType::F32)?;
        want_dtype(op, "v", v, DType::F32)?;
        if inp == 0 || x.numel() % inp != 0 || x.shape().last() != Some(&inp) {
            return Err(Error::shape(
                op,
                format!("x {:?} must have {inp} columns", x.shape()),
            ));
        }
        let n = x.numel() / inp;
        for (name, t, dt) in out_by_in {
            if let Some(t) = t {
                want_dtype(op, name, t, *dt)?;
                if t.numel() != out * inp {
                    return Err(Error::shape(
                        op,
                        format!("{name} {:?} must have {out}×{inp} elements", t.shape()),
                    ));
                }
            }
        }
        if let Some(b) = bias {
            want_dtype(op, "bias", b, DType::F32)?;
            if b.numel() != out {
                return Err(Error::shape(
                    op,
                    format!("bias {:?} must have {out} elements", b.shape()),
                ));
            }
        }
        Ok(LowrankDims { n, inp, out, rank })
    }
}

/// Checks that tensors have the same element count (named for the error).
pub fn same_numel(op: &str, tensors: &[(&str, &Tensor)]) -> Result<usize> {
    let n = tensors[0].1.numel();
    for (name, t) in tensors {
        if t.numel() != n {
            return Err(Error::shape(
                op,
                format!(
                    "{} has {} elements ({:?}) but {} has {n}",
                    name,
                    t.numel(),
                    t.shape(),
                    tensors[0].0
                ),
            ));
        }
    }
    Ok(n)
}

/// Checks a tensor's dtype (named for the error).
pub fn want_dtype(op: &str, name: &str, t: &Tensor, dtype: DType) -> Result<()> {
    if t.dtype() != dtype {
        return Err(Error::shape(
            op,
            format!("{name} is {:?}, expected {dtype:?}", t.dtype()),
        ));
    }
    Ok(())
}
