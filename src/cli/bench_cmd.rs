//! `lpaf bench kernels` / `lpaf bench train`.

use crate::backend::{DeviceKind, Precision};
use crate::bench::kernels::{self, KernelBenchOptions};
use crate::bench::train::{self, TrainBenchOptions, METHODS};
use crate::cli::BenchArgs;
use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::model::BertConfig;
use crate::train::run::backend;

pub fn bench(a: BenchArgs) -> Result<()> {
    let choice: DeviceChoice = a.device.parse()?;
    if a.repeats == 0 || a.repeats > 10_000 {
        return Err(Error::msg(format!(
            "--repeats {}: must be in 1..=10000",
            a.repeats
        )));
    }
    match a.what.as_str() {
        "train" => bench_train(a, choice),
        "kernels" => bench_kernels(a, choice),
        other => Err(Error::msg(format!(
            "unknown benchmark '{other}' (expected kernels or train)"
        ))),
    }
}

/// MiniLM-L6's shape (random weights).
pub fn minilm_config() -> BertConfig {
    let mut c = BertConfig::tiny(30522, 384, 6, 12, 1536);
    c.max_position_embeddings = 512;
    c
}

/// The largest `--scale` of `bench kernels`: 4× BERT-base's sizes.
pub const MAX_KERNEL_SCALE: f64 = 4.0;
/// The largest `--batch` of `bench train`.
pub const MAX_BENCH_BATCH: usize = 4096;

/// Total memory of this machine in bytes (Linux `/proc/meminfo`), if known.
fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A rough upper estimate of what one training step of `config` at
/// `batch × seq` keeps (fp32): weights with gradients and two AdamW moments,
/// and per layer the activations saved for the backward pass.
pub fn train_step_bytes(config: &BertConfig, batch: usize, seq: usize) -> f64 {
    let (h, f, l) = (
        config.hidden_size as f64,
        config.intermediate_size as f64,
        config.num_hidden_layers as f64,
    );
    let heads = config.num_attention_heads as f64;
    let weights = config.vocab_size as f64 * h + l * (4.0 * h * h + 2.0 * h * f);
    let tokens = (batch * seq) as f64;
    let per_layer = tokens * (12.0 * h + 3.0 * f) + 3.0 * batch as f64 * heads * (seq * seq) as f64;
    4.0 * (4.0 * weights + l * per_layer)
}

fn check_memory(what: &str, bytes: f64) -> Result<()> {
    if let Some(m) = machine_memory() {
        if bytes > m as f64 {
            return Err(Error::msg(format!(
                "{what} needs about {:.1} GiB, more than this machine's {:.1} GiB: lower it",
                bytes / (1u64 << 30) as f64,
                m as f64 / (1u64 << 30) as f64
            )));
        }
    }
    Ok(())
}

fn bench_train(a: BenchArgs, choice: DeviceChoice) -> Result<()> {
    if let Some(p) = &a.jsonl {
        return Err(Error::msg(format!(
            "--jsonl {}: only `bench kernels` writes the roofline's JSON lines (a training step has no byte count); use --json here",
            p.display()
        )));
    }
    let be = backend(choice, false)?;
    let gpu = be.kind() == DeviceKind::Cuda;
    let emulated = crate::device::emulator::active();
    let size = if a.size == "auto" {
        if emulated {
            "base-structure".to_string()
        } else if gpu {
            "base".to_string()
        } else {
            "minilm".to_string()
        }
    } else {
        a.size.clone()
    };
    let config = match size.as_str() {
        "base" => BertConfig::base(),
        "minilm" => minilm_config(),
        // BERT-base's structure (12 layers, 12 heads, the vocabulary) at a
        // quarter of its width: the same launches, syncs and allocations per
        // step (they follow the structure), at a cost the emulator can run.
        "base-structure" => BertConfig::tiny(30522, 192, 12, 12, 768),
        other => {
            return Err(Error::msg(format!(
                "--size {other}: expected base, base-structure or minilm"
            )))
        }
    };
    if emulated {
        eprintln!(
            "note: emulated CUDA device: per-step counters, no times; model {size} \
             (base-structure = 12 layers, 12 heads, hidden 192, intermediate 768)"
        );
    }
    // Refused before anything is allocated: a sequence longer than the
    // model's position embeddings, an absurd batch, or a step that would
    // not fit in this machine's memory.
    if a.seq == 0 || a.seq > config.max_position_embeddings {
        return Err(Error::msg(format!(
            "--seq {}: must be in 1..={} (the {size} model's max_position_embeddings)",
            a.seq, config.max_position_embeddings
        )));
    }
    if a.batch == 0 || a.batch > MAX_BENCH_BATCH {
        return Err(Error::msg(format!(
            "--batch {}: must be in 1..={MAX_BENCH_BATCH}",
            a.batch
        )));
    }
    let precisions: Vec<Precision> = if a.precisions.is_empty() {
        if emulated {
            // TF32 has fp32's structure: the same counts.
            vec![Precision::F32, Precision::Bf16]
        } else if gpu {
            vec![Precision::F32, Precision::Tf32, Precision::Bf16]
        } else {
            vec![Precision::F32]
        }
    } else {
        a.precisions
            .iter()
            .map(|p| p.parse())
            .collect::<Result<_>>()?
    };
    let methods: Vec<String> = if a.methods.is_empty() {
        METHODS.iter().map(|s| s.to_string()).collect()
    } else {
        a.methods.clone()
    };
    let (batch, seq) = if emulated && a.size == "auto" {
        (a.batch.min(8), a.seq)
    } else if gpu || a.size != "auto" {
        (a.batch, a.seq)
    } else {
        (a.batch.min(8), a.seq.min(64))
    };
    if !gpu {
        // Host memory; on a GPU the device reports an allocation it cannot make.
        check_memory(
            &format!("--batch {batch} --seq {seq}"),
            train_step_bytes(&config, batch, seq),
        )?;
    }
    let o = TrainBenchOptions {
        config,
        size_name: format!("{size} (b{batch}×s{seq})"),
        batch,
        seq,
        precisions,
        methods,
        warmup: if emulated {
            2
        } else if gpu {
            3
        } else {
            1
        },
        repeats: if emulated {
            1
        } else if gpu {
            a.repeats
        } else {
            a.repeats.min(3)
        },
    };
    let rows = train::run(be.as_ref(), &o, &mut |m| eprintln!("{m}"))?;
    crate::out!("{}", train::table(&rows))?;
    let kernels = train::kernels_lines(&rows, 10);
    if !kernels.is_empty() {
        crate::out!("\nlaunches per step by kernel (most first):\n{kernels}")?;
    }
    if let Some(p) = &a.json {
        let mut s = String::new();
        for r in &rows {
            s.push_str(&serde_json::to_string(r)?);
            s.push('\n');
        }
        crate::model::io::write_atomic(p, s.as_bytes())?;
    }
    Ok(())
}

fn bench_kernels(a: BenchArgs, choice: DeviceChoice) -> Result<()> {
    let be = backend(choice, false)?;
    let gpu = be.kind() == DeviceKind::Cuda;
    // The CPU runs BERT-base-sized problems for minutes: default to a tenth.
    if !(a.scale.is_finite() && a.scale > 0.0 && a.scale <= MAX_KERNEL_SCALE) {
        return Err(Error::msg(format!(
            "--scale {}: must be a number in (0, {MAX_KERNEL_SCALE}] (1 = BERT-base's sizes)",
            a.scale
        )));
    }
    let scale = if !gpu && a.scale == 1.0 {
        0.05
    } else {
        a.scale
    };
    // BERT-base's 85 M encoder weights scale linearly; the benchmarks keep
    // about a dozen f32 copies of them (weights, scores, moments, masks).
    if !gpu {
        check_memory(&format!("--scale {scale}"), 85e6 * scale * 4.0 * 12.0)?;
    }
    let opts = KernelBenchOptions {
        scale,
        repeats: a.repeats.max(1),
        ..KernelBenchOptions::default()
    };
    if !gpu {
        eprintln!("note: CPU run at scale {scale} (the goals are for an H100 at scale 1)");
    }
    let report = kernels::run(be.as_ref(), &opts)?;
    crate::out!("{report}")?;
    if let Some(p) = &a.json {
        crate::model::io::write_atomic(p, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    if let Some(p) = &a.jsonl {
        crate::model::io::write_atomic(p, report.to_jsonl()?.as_bytes())?;
    }
    Ok(())
}
