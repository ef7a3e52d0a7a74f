//! The subcommands.

use std::path::Path;

use serde_json::json;

use crate::backend::Precision;
use crate::cli::config::{ConfigTable, FinetuneConfig};
use crate::cli::{Command, ConvertArgs, EvalArgs, ExportArgs, RunArgs};
use crate::compress::format::{export_dense, load_compressed, recount, stats_table};
use crate::data::task::TaskSpec;
use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::model::bert::DenseFactory;
use crate::model::io::{read_safetensors, write_safetensors, FloatFormat};
use crate::model::weights::{load_model_dir, model_root};
use crate::train::eval::evaluate;
use crate::train::run::{
    self, backend, load_data, model_path, report_load, run_training, save_dense, write_summary,
};
use crate::train::trainer::{fingerprint, NoHooks};

pub fn dispatch(cmd: Command) -> Result<()> {
    match cmd {
        Command::Finetune(a) => finetune(a),
        Command::Compress(a) => crate::cli::compress_cmd::compress(a),
        Command::Eval(a) => eval(a),
        Command::Export(a) => export(a),
        Command::Info(a) => crate::cli::info_cmd::info(a),
        Command::Bench(a) => crate::cli::bench_cmd::bench(a),
        Command::Convert(a) => convert(a),
        Command::Sweep(a) => crate::cli::sweep_cmd::sweep(a),
    }
}

fn finetune(a: RunArgs) -> Result<()> {
    let mut table = match &a.config {
        Some(p) => ConfigTable::from_file(p)?,
        None => ConfigTable::empty(),
    };
    a.common.apply(&mut table)?;
    let cfg: FinetuneConfig = table.parse()?;
    let quiet = a.common.quiet;
    let be = backend(cfg.device, quiet)?;
    let model_dir = model_path(&cfg.model);
    let (_tok, data) = load_data(&model_dir, &cfg.data, cfg.train.max_train_rows)?;
    let (mut model, report) = load_model_dir(
        be.as_ref(),
        &model_dir,
        Some(data.task.kind.clone()),
        cfg.train.seed,
        &DenseFactory,
    )?;
    report_load(&report, quiet);
    let fp = fingerprint(
        &json!({"cmd": "finetune", "model": cfg.model, "data": cfg.data, "train": cfg.train}),
    );
    let labels = data.task.label_names.clone();
    let md = model_dir.clone();
    let mut save_best = |be: &dyn crate::backend::Backend,
                         m: &mut crate::model::Bert,
                         dir: &Path| save_dense(be, m, dir, &md, &labels);
    let summary = run_training(
        be.as_ref(),
        &mut model,
        &data,
        &cfg.train,
        &cfg.output,
        &mut NoHooks,
        &mut save_best,
        a.common.resume,
        &fp,
        quiet,
    )?;
    save_dense(
        be.as_ref(),
        &model,
        &cfg.output.join("final"),
        &model_dir,
        &data.task.label_names,
    )?;
    write_summary(
        &cfg.output,
        &summary,
        json!({"command": "finetune", "device": be.name(), "config": cfg,
            "reproduction": crate::train::provenance::reproduction(
                be.as_ref(), cfg.train.precision, cfg.train.seed, &cfg,
                &crate::train::provenance::data_files(&cfg.data), &model_dir)?}),
    )?;
    println!("{}", run::final_line(&summary));
    println!(
        "models: {} (best), {} (final); log: {}",
        cfg.output.join("best").display(),
        cfg.output.join("final").display(),
        cfg.output.join("log.jsonl").display()
    );
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    let choice: DeviceChoice = a.device.parse()?;
    let precision: Precision = a.precision.parse()?;
    let be = backend(choice, false)?;
    let spec = TaskSpec {
        task: a.task.clone(),
        data_dir: a.data_dir.clone(),
        train: a.train.clone(),
        dev: a.dev.clone(),
        text_a: a.text_a.clone().unwrap_or_default(),
        text_b: a.text_b.clone(),
        label: a.label.clone(),
        max_seq_len: a.max_seq_len,
        dev_split: a.dev_split,
        split_seed: a.split_seed,
        ..TaskSpec::default()
    };
    let model_dir = model_path(&a.model);
    let (_tok, data) = load_data(&model_dir, &spec, None)?;
    let dev = data.dev.as_ref().ok_or_else(|| {
        Error::msg(
            "no dev data to evaluate (give --dev, a data directory with one, or --dev-split)",
        )
    })?;
    let (mut model, report) = load_compressed(be.as_ref(), &model_dir, 0)?;
    report_load(&report, false);
    if model.task != data.task.kind {
        return Err(Error::msg(format!(
            "{}: the model's head is {:?} but the task's data is {:?}",
            model_dir.display(),
            model.task,
            data.task.kind
        )));
    }
    let r = evaluate(
        be.as_ref(),
        &mut model,
        dev,
        &data.task.metrics,
        a.batch_size,
        precision,
    )?;
    println!("{}: {}", dev.name, r.summary());
    if let Some(l) = r.loss {
        println!("loss {l:.4}");
    }
    if let Some(p) = &a.json {
        let v =
            json!({"model": a.model, "data": dev.name, "rows": dev.len(), "metrics": r.to_json()});
        crate::model::io::write_atomic(p, serde_json::to_string_pretty(&v)?.as_bytes())?;
    }
    Ok(())
}

fn export(a: ExportArgs) -> Result<()> {
    if !a.dense {
        return Err(Error::msg(
            "lpaf export writes a dense Hugging Face checkpoint: pass --dense",
        ));
    }
    let be = crate::backend::CpuBackend::new();
    export_dense(&be, &a.input, &a.output)?;
    println!(
        "wrote {} (W = U·V + S, loadable by transformers)",
        a.output.display()
    );
    Ok(())
}

fn convert(a: ConvertArgs) -> Result<()> {
    let format = match a.dtype.to_ascii_lowercase().as_str() {
        "f16" | "fp16" | "float16" => FloatFormat::F16,
        "bf16" => FloatFormat::Bf16,
        "f32" | "fp32" | "float32" => FloatFormat::F32,
        other => {
            return Err(Error::msg(format!(
                "--dtype {other}: expected f16, bf16 or f32"
            )))
        }
    };
    let root = model_root(&a.input)?;
    let tensors = read_safetensors(&root.join("model.safetensors"))?;
    std::fs::create_dir_all(&a.output).map_err(|e| Error::io(&a.output, e))?;
    write_safetensors(
        &a.output.join("model.safetensors"),
        &tensors,
        format,
        Some(crate::model::weights::format_metadata()),
    )?;
    for f in std::fs::read_dir(&root)
        .map_err(|e| Error::io(&root, e))?
        .flatten()
    {
        let p = f.path();
        let name = f.file_name();
        if p.is_file() && name != "model.safetensors" {
            std::fs::copy(&p, a.output.join(&name)).map_err(|e| Error::io(&p, e))?;
        }
    }
    println!(
        "wrote {} ({} tensors as {:?})",
        a.output.display(),
        tensors.len(),
        format
    );
    Ok(())
}

/// Shared by `info`: the statistics table of a model directory.
pub fn print_stats(dir: &Path, as_json: bool) -> Result<()> {
    let (m, t) = recount(dir)?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"matrices": m, "total": t}))?
        );
    } else {
        print!("{}", stats_table(&m, &t));
    }
    Ok(())
}
