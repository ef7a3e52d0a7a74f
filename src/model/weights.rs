//! Hugging Face model directories: finding the weights (plain, `bert.`-less,
//! sentence-transformers layouts), normalising tensor names, building the
//! model, and saving a directory `transformers` loads without warnings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::backend::Backend;
use crate::data::TaskKind;
use crate::error::{Error, Result, ResultExt};
use crate::model::bert::{Bert, LinearFactory};
use crate::model::config::BertConfig;
use crate::model::io::{read_safetensors, write_safetensors, FloatFormat, HostData, HostTensor};

/// Tokenizer and auxiliary files copied along with a model.
pub const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
];

/// What loading did besides building the model.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// The weights file read.
    pub weights: PathBuf,
    /// Head layers created fresh (absent from the checkpoint, or of another shape).
    pub created: Vec<String>,
    /// Tensors of the file the model does not use (MLM heads, buffers).
    pub ignored: Vec<String>,
    /// Tensors holding NaN or infinite values, with their count ("name (n of N)").
    pub non_finite: Vec<String>,
}

/// Prints a warning naming the tensors of `file` that hold NaN or infinite
/// values (`non_finite_tensors`), if any.
pub fn warn_non_finite(file: &Path, bad: &[String]) {
    if !bad.is_empty() {
        eprintln!(
            "warning: {}: {} tensor(s) hold NaN or infinite values: {}",
            file.display(),
            bad.len(),
            bad.join(", ")
        );
    }
}

/// The tensors of `tensors` that hold NaN or infinite values, as
/// "name (n of N)": a model with them gives non-finite outputs.
pub fn non_finite_tensors(tensors: &BTreeMap<String, HostTensor>) -> Vec<String> {
    let mut bad = Vec::new();
    for (name, t) in tensors {
        if let HostData::F32(v) = &t.data {
            let n = v.iter().filter(|x| !x.is_finite()).count();
            if n > 0 {
                bad.push(format!("{name} ({n} of {})", v.len()));
            }
        }
    }
    bad
}

/// The directory holding `config.json` + weights: `dir` itself, or the
/// transformer module of a sentence-transformers layout (`0_Transformer/`).
pub fn model_root(dir: &Path) -> Result<PathBuf> {
    if !dir.is_dir() {
        return Err(Error::msg(format!(
            "{}: model directory not found",
            dir.display()
        )));
    }
    if dir.join("config.json").is_file() {
        return Ok(dir.to_path_buf());
    }
    let st = dir.join("0_Transformer");
    if st.join("config.json").is_file() {
        return Ok(st);
    }
    Err(Error::msg(format!(
        "{}: no config.json (neither here nor in 0_Transformer/)",
        dir.display()
    )))
}

fn weights_file(root: &Path) -> Result<PathBuf> {
    let p = root.join("model.safetensors");
    if p.is_file() {
        return Ok(p);
    }
    if root.join("pytorch_model.bin").is_file() {
        return Err(Error::msg(format!(
            "{}: only pytorch_model.bin found; lpaf reads safetensors (convert with transformers: \
             model.save_pretrained(dir, safe_serialization=True))",
            root.display()
        )));
    }
    Err(Error::msg(format!(
        "{}: model.safetensors not found",
        root.display()
    )))
}

/// Maps any supported tensor naming to the `BertFor*` names used internally:
/// encoder parts under `bert.`, heads (`classifier.*`, `qa_outputs.*`) bare.
/// Returns `None` for tensors the model never uses.
pub fn canonical_name(name: &str) -> Option<String> {
    let mut n = name;
    for p in ["0.auto_model.", "auto_model.", "model."] {
        if let Some(rest) = n.strip_prefix(p) {
            n = rest;
        }
    }
    let n = n
        .replace("LayerNorm.gamma", "LayerNorm.weight")
        .replace("LayerNorm.beta", "LayerNorm.bias");
    if n.ends_with("position_ids") || n.starts_with("cls.") {
        return None;
    }
    if n.starts_with("bert.") || n.starts_with("classifier.") || n.starts_with("qa_outputs.") {
        return Some(n);
    }
    if n.starts_with("embeddings.") || n.starts_with("encoder.") || n.starts_with("pooler.") {
        return Some(format!("bert.{n}"));
    }
    None
}

/// The task a checkpoint's head implies, when it has one.
pub fn task_from_tensors(
    tensors: &BTreeMap<String, HostTensor>,
    config: &BertConfig,
) -> Option<TaskKind> {
    if tensors.contains_key("qa_outputs.weight") {
        return Some(TaskKind::QuestionAnswering);
    }
    let c = tensors.get("classifier.weight")?;
    let n = c.shape[0];
    if n == 1 || config.problem_type.as_deref() == Some("regression") {
        Some(TaskKind::Regression)
    } else {
        Some(TaskKind::Classification { num_labels: n })
    }
}

/// Reads config and weights of a model directory, names normalised.
pub fn read_model_dir(
    dir: &Path,
) -> Result<(BertConfig, BTreeMap<String, HostTensor>, LoadReport)> {
    let root = model_root(dir)?;
    let config = BertConfig::load(&root.join("config.json"))?;
    let file = weights_file(&root)?;
    let raw = read_safetensors(&file)?;
    let mut report = LoadReport {
        weights: file.clone(),
        non_finite: non_finite_tensors(&raw),
        ..Default::default()
    };
    let mut tensors = BTreeMap::new();
    for (name, t) in raw {
        match canonical_name(&name) {
            Some(c) => {
                if tensors.insert(c.clone(), t).is_some() {
                    return Err(Error::msg(format!(
                        "{}: two tensors map to '{c}'",
                        file.display()
                    )));
                }
            }
            None => report.ignored.push(name),
        }
    }
    Ok((config, tensors, report))
}

/// Loads a Hugging Face BERT directory onto the backend. `task` defaults to
/// the checkpoint's own head; a head that is missing or of another size is
/// created fresh (seeded) and reported.
pub fn load_model_dir(
    be: &dyn Backend,
    dir: &Path,
    task: Option<TaskKind>,
    seed: u64,
    factory: &dyn LinearFactory,
) -> Result<(Bert, LoadReport)> {
    let (config, mut tensors, mut report) = read_model_dir(dir)?;
    let task = match task.or_else(|| task_from_tensors(&tensors, &config)) {
        Some(t) => t,
        None => {
            return Err(Error::msg(format!(
                "{}: the checkpoint has no task head; say which task to build (a dataset / --task)",
                dir.display()
            )))
        }
    };
    let bert = Bert::from_tensors(
        be,
        config,
        task,
        &mut tensors,
        factory,
        seed,
        &mut report.created,
    )
    .with_context(|| format!("loading {}", report.weights.display()))?;
    report.ignored.extend(tensors.into_keys());
    Ok((bert, report))
}

/// The `architectures` entry transformers needs to pick the head class.
fn architecture(task: &TaskKind) -> &'static str {
    match task {
        TaskKind::QuestionAnswering => "BertForQuestionAnswering",
        _ => "BertForSequenceClassification",
    }
}

/// Writes `config.json` + `model.safetensors` (+ tokenizer files copied from
/// `tokenizer_from`) into `dir`, each file atomically. `extra_tensors` and
/// `metadata` let the compressed format add its parts.
pub fn save_model_dir(
    be: &dyn Backend,
    bert: &Bert,
    dir: &Path,
    tokenizer_from: Option<&Path>,
    label_names: Option<&[String]>,
    format: FloatFormat,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut config = bert.config.clone();
    config.extra.insert(
        "architectures".into(),
        serde_json::json!([architecture(&bert.task)]),
    );
    config
        .extra
        .insert("model_type".into(), serde_json::json!("bert"));
    match &bert.task {
        TaskKind::Regression => {
            config.problem_type = Some("regression".into());
            config.set_labels(&["LABEL_0".to_string()]);
        }
        TaskKind::Classification { num_labels } => {
            config.problem_type = Some("single_label_classification".into());
            let names: Vec<String> = match label_names {
                Some(n) if n.len() == *num_labels => n.to_vec(),
                _ => (0..*num_labels).map(|i| format!("LABEL_{i}")).collect(),
            };
            config.set_labels(&names);
        }
        TaskKind::QuestionAnswering => {
            config.problem_type = None;
        }
    }
    config.save(&dir.join("config.json"))?;
    let tensors = bert.export(be)?;
    write_safetensors(
        &dir.join("model.safetensors"),
        &tensors,
        format,
        Some(format_metadata()),
    )?;
    if let Some(src) = tokenizer_from {
        copy_tokenizer_files(src, dir)?;
    }
    Ok(())
}

/// `{"format": "pt"}`: what transformers expects in the safetensors header.
pub fn format_metadata() -> std::collections::HashMap<String, String> {
    [("format".to_string(), "pt".to_string())]
        .into_iter()
        .collect()
}

/// Copies the tokenizer files present in `src` (or its transformer root) to `dst`.
pub fn copy_tokenizer_files(src: &Path, dst: &Path) -> Result<()> {
    let mut roots = vec![src.to_path_buf()];
    if let Ok(r) = model_root(src) {
        roots.push(r);
    }
    for f in TOKENIZER_FILES {
        if let Some(p) = roots.iter().map(|r| r.join(f)).find(|p| p.is_file()) {
            let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
            crate::model::io::write_atomic(&dst.join(f), &bytes)?;
        }
    }
    Ok(())
}
