//! The subcommands.

use std::path::Path;

use serde_json::json;

use crate::backend::Precision;
use crate::cli::config::{ConfigTable, FinetuneConfig};
use crate::cli::{Command, ConvertArgs, EvalArgs, ExportArgs, RunArgs};
use crate::compress::format::{export_dense, load_compressed};
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

/// Locks a run's output directory (see train::rundir) and prints what
/// claiming it did.
pub fn claim_output(
    output: &Path,
    common: &crate::cli::CommonArgs,
) -> Result<crate::train::rundir::RunDirLock> {
    let (lock, notes) = crate::train::rundir::claim(output, common.resume, common.overwrite)?;
    for n in notes {
        eprintln!("note: {n}");
    }
    Ok(lock)
}

pub fn dispatch(cmd: Command) -> Result<()> {
    match cmd {
        Command::Finetune(a) => finetune(a),
        Command::Compress(a) => crate::cli::compress_cmd::compress(a),
        Command::Eval(a) => eval(a),
        Command::Export(a) => export(a),
        Command::Info(a) => crate::cli::info_cmd::info(a),
        Command::Bench(a) => crate::cli::bench_cmd::bench(a),
        Command::Convert(a) => convert(a),
        Command::Plot(a) => crate::cli::plot_cmd::plot(a),
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
    cfg.train.validate()?;
    let quiet = a.common.quiet;
    let model_dir = model_path(&cfg.model);
    check_model_config(&model_dir, cfg.data.max_seq_len)?;
    let _lock = claim_output(&cfg.output, &a.common)?;
    crate::train::rundir::write_data_split(&cfg.output, cfg.data.dev_split, cfg.data.split_seed)?;
    let be = backend(cfg.device, quiet)?;
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
    crate::outln!("{}", run::final_line(&summary))?;
    crate::outln!(
        "models: {} (best), {} (final); log: {}",
        cfg.output.join("best").display(),
        cfg.output.join("final").display(),
        cfg.output.join("log.jsonl").display()
    )?;
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    let choice: DeviceChoice = a.device.parse()?;
    let precision: Precision = a.precision.parse()?;
    let model_dir = model_path(&a.model);
    // The held-out split: the one the run that made this model recorded,
    // unless given (a different split would overlap its training rows).
    let split_seed = match (
        a.split_seed,
        crate::train::rundir::read_data_split(&model_dir)?,
    ) {
        (Some(s), _) => s,
        (None, Some((_, s, file))) => {
            if a.dev_split.is_some() {
                eprintln!(
                    "note: split seed {s}, as recorded by the training run in {}",
                    file.display()
                );
            }
            s
        }
        (None, None) => TaskSpec::default().split_seed,
    };
    // Labels are mapped through the model's own label names (config.json
    // id2label), not re-derived from the dev file.
    let model_labels = model_label_names(&model_dir)?;
    let mut spec = TaskSpec {
        task: a.task.clone(),
        data_dir: a.data_dir.clone(),
        train: a.train.clone(),
        dev: a.dev.clone(),
        text_a: a.text_a.clone().unwrap_or_default(),
        text_b: a.text_b.clone(),
        label: a.label.clone(),
        max_seq_len: a.max_seq_len,
        dev_split: a.dev_split,
        split_seed,
        ..TaskSpec::default()
    };
    if let Some(names) = &model_labels {
        if matches!(a.task.as_str(), "csv" | "tsv" | "jsonl") {
            spec.labels = crate::data::table::LabelSpec::Names(names.clone());
        }
    }
    check_model_config(&model_dir, a.max_seq_len)?;
    let be = backend(choice, false)?;
    let (_tok, data) = load_data(&model_dir, &spec, None).map_err(|e| match &model_labels {
        Some(n) => Error::msg(format!(
            "{e} (labels are read as the model's classes {}, from {}/config.json id2label)",
            n.join(", "),
            model_dir.display()
        )),
        None => e,
    })?;
    if let Some(names) = &model_labels {
        if !data.task.label_names.is_empty() && &data.task.label_names != names {
            return Err(Error::msg(format!(
                "{}: the model's classes are [{}] (config.json id2label) but task {} has [{}]",
                model_dir.display(),
                names.join(", "),
                a.task,
                data.task.label_names.join(", ")
            )));
        }
    }
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
    if let Some(l) = r.loss.filter(|l| !l.is_finite()) {
        return Err(Error::msg(format!(
            "{}: the evaluation loss is {l}: the model's output is not finite",
            model_dir.display()
        )));
    }
    crate::outln!("{}: {}", dev.name, r.summary())?;
    if let Some(l) = r.loss {
        crate::outln!("loss {l:.4}")?;
    }
    if let Some(p) = &a.json {
        let v =
            json!({"model": a.model, "data": dev.name, "rows": dev.len(), "metrics": r.to_json()});
        crate::model::io::write_atomic(p, serde_json::to_string_pretty(&v)?.as_bytes())?;
    }
    Ok(())
}

/// The class names a model's config.json gives (id2label in id order), or
/// None when it has none or only the generic `LABEL_i` names.
fn model_label_names(model_dir: &Path) -> Result<Option<Vec<String>>> {
    let root = model_root(model_dir)?;
    let cfg = crate::model::config::BertConfig::load(&root.join("config.json"))?;
    Ok(cfg.label_names().filter(|n| {
        !n.is_empty()
            && !n
                .iter()
                .enumerate()
                .all(|(i, s)| *s == format!("LABEL_{i}"))
    }))
}

/// Refuses an output directory that is the input, lies inside it or holds
/// it, or already exists (unless `overwrite`).
fn check_new_output(input: &Path, output: &Path, overwrite: bool) -> Result<()> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (i, o) = (canon(input), canon(output));
    if o == i || o.starts_with(&i) || i.starts_with(&o) {
        return Err(Error::msg(format!(
            "output {} is (or contains, or lies inside) the input {}; write to a new directory",
            output.display(),
            input.display()
        )));
    }
    if output.exists() {
        if !output.is_dir() {
            return Err(Error::msg(format!(
                "{}: exists and is not a directory",
                output.display()
            )));
        }
        let empty = std::fs::read_dir(output)
            .map_err(|e| Error::io(output, e))?
            .next()
            .is_none();
        if !empty && !overwrite {
            return Err(Error::msg(format!(
                "{}: exists and is not empty; pass --overwrite to replace it or choose a new directory",
                output.display()
            )));
        }
    }
    Ok(())
}

fn export(a: ExportArgs) -> Result<()> {
    if !a.dense {
        return Err(Error::msg(
            "lpaf export writes a dense Hugging Face checkpoint: pass --dense",
        ));
    }
    check_new_output(&a.input, &a.output, a.overwrite)?;
    let be = crate::backend::CpuBackend::new();
    crate::train::checkpoint::write_dir_atomic(&a.output, |tmp| export_dense(&be, &a.input, tmp))
        .map_err(|e| Error::msg(format!("exporting {}: {e}", a.input.display())))?;
    crate::outln!(
        "wrote {} (W = U·V + S, loadable by transformers)",
        a.output.display()
    )?;
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
    check_new_output(&a.input, &a.output, a.overwrite)?;
    let weights = root.join("model.safetensors");
    let tensors = read_safetensors(&weights)?;
    crate::model::weights::warn_non_finite(
        &weights,
        &crate::model::weights::non_finite_tensors(&tensors),
    );
    crate::train::checkpoint::write_dir_atomic(&a.output, |out| {
        write_safetensors(
            &out.join("model.safetensors"),
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
                std::fs::copy(&p, out.join(&name)).map_err(|e| Error::io(&p, e))?;
            }
        }
        Ok(())
    })?;
    crate::outln!(
        "wrote {} ({} tensors as {:?})",
        a.output.display(),
        tensors.len(),
        format
    )?;
    Ok(())
}

/// Reads the model's config.json (model type, sizes) and checks the
/// requested sequence length against it before any data or weights load.
fn check_model_config(model_dir: &Path, max_seq_len: Option<usize>) -> Result<()> {
    let root = model_root(model_dir)?;
    let p = root.join("config.json");
    let c = crate::model::config::BertConfig::load(&p)?;
    c.check_max_seq_len(max_seq_len, &p)
}
