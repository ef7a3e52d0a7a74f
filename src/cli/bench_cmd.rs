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
    BertConfig::tiny(30522, 384, 6, 12, 1536)
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
    let mut config = match size.as_str() {
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
    config.max_position_embeddings = config.max_position_embeddings.max(a.seq);
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
    print!("{}", train::table(&rows));
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
    let scale = if !gpu && a.scale == 1.0 {
        0.05
    } else {
        a.scale
    };
    if scale <= 0.0 {
        return Err(Error::msg(format!("--scale {scale}: must be positive")));
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
    print!("{report}");
    if let Some(p) = &a.json {
        crate::model::io::write_atomic(p, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    if let Some(p) = &a.jsonl {
        crate::model::io::write_atomic(p, report.to_jsonl()?.as_bytes())?;
    }
    Ok(())
}
