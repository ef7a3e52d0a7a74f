//! The `lpaf` command.

pub mod bench_cmd;
pub mod commands;
pub mod compress_cmd;
pub mod config;
pub mod info_cmd;
pub mod plot_cmd;
pub mod sweep_cmd;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::cli::config::ConfigTable;
use crate::error::Result;

#[derive(Parser, Debug)]
#[command(
    name = "lpaf",
    version,
    about = "Compress BERT models by pruning and low-rank factorization (LPAF, LoSparse, movement pruning, SVD)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Fine-tune a BERT model on a task (the dense baseline and teacher).
    Finetune(RunArgs),
    /// Compress a model with a recipe (movement, soft_movement, magnitude, svd, losparse, lpaf).
    Compress(CompressArgs),
    /// Evaluate a model directory (dense or compressed) on a task's dev data.
    Eval(EvalArgs),
    /// Write a compressed model back as a plain Hugging Face checkpoint (W = U·V + S).
    Export(ExportArgs),
    /// Per-matrix rank / nnz / kept ratio of a model directory; --rank adds numerical ranks.
    Info(InfoArgs),
    /// Benchmarks: `kernels` (every operation against the ceilings measured in the same run) or `train` (step times).
    Bench(BenchArgs),
    /// Convert a model's weights to f16 / bf16 / f32 (e.g. to carry an F16 copy).
    Convert(ConvertArgs),
    /// Pictures (PNG / SVG): training curves of runs, singular-value spectra, a kernel roofline.
    Plot(plot_cmd::PlotArgs),
    /// Run a sweep file (recipes × kept ratios × seeds × overrides) locally or as Slurm arrays, and collect its table.
    Sweep(sweep_cmd::SweepArgs),
}

/// Data, training and run options shared by `finetune` and `compress`. Every
/// flag overrides the same key of the `--config` / `--recipe` file.
#[derive(Args, Debug, Default, Clone)]
pub struct CommonArgs {
    /// Model directory (Hugging Face BERT, `config.json` + `model.safetensors`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Output directory (checkpoints, log.jsonl, best / final models).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// auto (GPU when usable), cpu or cuda.
    #[arg(long)]
    pub device: Option<String>,
    /// Task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli, squad, squad_v2, polarity, csv, tsv, jsonl.
    #[arg(long)]
    pub task: Option<String>,
    /// Directory with the task's files under their usual names.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub train: Option<PathBuf>,
    #[arg(long)]
    pub dev: Option<PathBuf>,
    /// csv / tsv / jsonl: text column(s) and label column.
    #[arg(long)]
    pub text_a: Option<String>,
    #[arg(long)]
    pub text_b: Option<String>,
    #[arg(long)]
    pub label: Option<String>,
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    /// Without a dev file, hold out this fraction of the training rows (seeded).
    #[arg(long)]
    pub dev_split: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub grad_accum: Option<usize>,
    #[arg(long)]
    pub epochs: Option<f64>,
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long)]
    pub lr: Option<f32>,
    #[arg(long)]
    pub warmup_ratio: Option<f64>,
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// f32, tf32 or bf16 (GPU matmul precision; the CPU emulates the rounding).
    #[arg(long)]
    pub precision: Option<String>,
    #[arg(long)]
    pub eval_every: Option<u64>,
    #[arg(long)]
    pub log_every: Option<u64>,
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Use only the first N training rows (quick runs).
    #[arg(long)]
    pub max_train_rows: Option<usize>,
    /// Any key of the configuration: `--set train.lr=3e-5` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Continue the run in OUTPUT from its checkpoint (recovering one left by
    /// an interrupted save).
    #[arg(long)]
    pub resume: bool,
    /// Start over in an OUTPUT that holds an earlier run: removes that run's
    /// checkpoint, log, models and summary (nothing else).
    #[arg(long)]
    pub overwrite: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

impl CommonArgs {
    /// Applies the flags as overrides of their configuration keys.
    pub fn apply(&self, t: &mut ConfigTable) -> Result<()> {
        let s = |v: &Option<PathBuf>| {
            v.as_ref()
                .map(|p| toml::Value::String(p.display().to_string()))
        };
        let st = |v: &Option<String>| v.as_ref().map(|p| toml::Value::String(p.clone()));
        let int = |v: Option<u64>| v.map(|x| toml::Value::Integer(x as i64));
        let us = |v: Option<usize>| v.map(|x| toml::Value::Integer(x as i64));
        let fl = |v: Option<f64>| v.map(toml::Value::Float);
        let f32v = |v: Option<f32>| v.map(|x| toml::Value::Float(x as f64));
        let pairs: Vec<(&str, Option<toml::Value>)> = vec![
            ("model", s(&self.model)),
            ("output", s(&self.output)),
            ("device", st(&self.device)),
            ("data.task", st(&self.task)),
            ("data.data_dir", s(&self.data_dir)),
            ("data.train", s(&self.train)),
            ("data.dev", s(&self.dev)),
            ("data.text_a", st(&self.text_a)),
            ("data.text_b", st(&self.text_b)),
            ("data.label", st(&self.label)),
            ("data.max_seq_len", us(self.max_seq_len)),
            ("data.dev_split", fl(self.dev_split)),
            ("train.seed", int(self.seed)),
            ("train.batch_size", us(self.batch_size)),
            ("train.grad_accum", us(self.grad_accum)),
            ("train.epochs", fl(self.epochs)),
            ("train.steps", int(self.steps)),
            ("train.lr", f32v(self.lr)),
            ("train.warmup_ratio", fl(self.warmup_ratio)),
            ("train.weight_decay", f32v(self.weight_decay)),
            ("train.precision", st(&self.precision)),
            ("train.eval_every", int(self.eval_every)),
            ("train.log_every", int(self.log_every)),
            ("train.checkpoint_every", int(self.checkpoint_every)),
            ("train.max_train_rows", us(self.max_train_rows)),
        ];
        for (k, v) in pairs {
            if let Some(v) = v {
                t.set_value(k, v)?;
            }
        }
        // The data split seed follows the run seed unless set explicitly.
        if let Some(seed) = self.seed {
            if t.get("data.split_seed").is_none() {
                t.set_value("data.split_seed", toml::Value::Integer(seed as i64))?;
            }
        }
        t.apply_sets(&self.sets)
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A TOML file with the run's configuration (flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug)]
pub struct CompressArgs {
    /// The recipe (TOML): method and every hyper-parameter (see recipes/).
    #[arg(long)]
    pub recipe: PathBuf,
    /// Teacher for distillation (overrides distill.teacher).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Target kept ratio of the compressible matrices (overrides target.kept_ratio).
    #[arg(long)]
    pub kept_ratio: Option<f64>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model directory (dense Hugging Face or lpaf compressed).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub task: String,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub dev: Option<PathBuf>,
    #[arg(long)]
    pub train: Option<PathBuf>,
    #[arg(long)]
    pub text_a: Option<String>,
    #[arg(long)]
    pub text_b: Option<String>,
    #[arg(long)]
    pub label: Option<String>,
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    /// Evaluate on the held-out split of the training data (as the training run made it).
    #[arg(long)]
    pub dev_split: Option<f64>,
    /// Seed of the held-out split; default: the seed the run that made the
    /// model recorded (data_split.json beside or above it), else 42.
    #[arg(long)]
    pub split_seed: Option<u64>,
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, default_value = "f32")]
    pub precision: String,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Also write the metrics as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write the dense Hugging Face checkpoint (the only export there is; kept explicit).
    #[arg(long)]
    pub dense: bool,
    pub input: PathBuf,
    /// A new directory (an existing one only with --overwrite; never the input).
    pub output: PathBuf,
    /// Replace an existing output directory.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    pub model: PathBuf,
    /// Numerical ranks (σ > 1e-3·σ_max) of each matrix; with --dense, also of
    /// that dense model's matrices and of their magnitude-pruned versions at
    /// the same density.
    #[arg(long)]
    pub rank: bool,
    /// The dense fine-tuned model to compare ranks with.
    #[arg(long)]
    pub dense: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// kernels or train.
    pub what: String,
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Scale the problem sizes (1.0 = the BERT-base sizes of the goals).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Timed repetitions (median reported).
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    /// train: precisions to run (f32, tf32, bf16).
    #[arg(long, value_delimiter = ',')]
    pub precisions: Vec<String>,
    /// train: methods (dense, movement, magnitude, losparse, factorized, mixed).
    #[arg(long, value_delimiter = ',')]
    pub methods: Vec<String>,
    /// train: model size (base or minilm).
    #[arg(long, default_value = "auto")]
    pub size: String,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Also write the results here (kernels: one JSON object; train: JSON lines).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// kernels: also write JSON lines (the ceilings, then one line per kernel
    /// with FLOPs, bytes and seconds) here: the input of `lpaf plot --roofline`.
    #[arg(long)]
    pub jsonl: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    pub input: PathBuf,
    /// A new directory (an existing one only with --overwrite; never the input).
    pub output: PathBuf,
    /// Replace an existing output directory.
    #[arg(long)]
    pub overwrite: bool,
    /// f16, bf16 or f32.
    #[arg(long, default_value = "f16")]
    pub dtype: String,
}

/// Parses the command line and runs it.
pub fn main() -> Result<()> {
    let cli = Cli::parse();
    commands::dispatch(cli.command)
}
