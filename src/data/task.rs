//! From a task name and paths to tokenized datasets.
//!
//! Files come from explicit paths (which must exist) or from a data
//! directory, where these names are looked for (missing ones are skipped):
//!
//! | task | train | dev | test (only with `load_test`) |
//! |---|---|---|---|
//! | GLUE | `train.tsv` | `dev.tsv` (MNLI: `dev_matched.tsv`, then `dev_mismatched.tsv` as an extra dev set) | `test.tsv` (MNLI: `test_matched.tsv`, `test_mismatched.tsv`) |
//! | squad / squad_v2 | `train-v1.1.json` / `train-v2.0.json` | `dev-v1.1.json` / `dev-v2.0.json` | – |
//! | polarity | `polarity.csv` | – | – |
//! | csv / tsv / jsonl | `train.<ext>` | `dev.<ext>` | `test.<ext>` |
//!
//! Without a dev file, `dev_split` carves a deterministic dev set out of the
//! training data ([`split_indices`](super::split_indices)).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::dataset::Dataset;
use super::glue::{read_glue, GlueTask};
use super::polarity::read_polarity;
use super::squad::{read_squad, SquadConfig};
use super::table::{read_table, LabelSpec, TableFormat, TableSpec};
use super::tokenizer::Tokenizer;
use super::TaskKind;
use crate::data::metric::Metric;
use crate::error::{Error, Result};

/// Every task name [`Task::from_name`] accepts.
pub const TASK_NAMES: [&str; 15] = [
    "cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli", "squad", "squad_v2",
    "polarity", "csv", "tsv", "jsonl",
];

/// A task: what is read, how, and which metrics it reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    Glue(GlueTask),
    Squad { v2: bool },
    Polarity,
    Table(TableFormat),
}

impl Task {
    /// Parse a task name; an unknown name gives an error listing the valid ones.
    pub fn from_name(name: &str) -> Result<Task> {
        if let Some(t) = GlueTask::from_name(name) {
            return Ok(Task::Glue(t));
        }
        match name.to_ascii_lowercase().replace('-', "_").as_str() {
            "squad" | "squad_v1" | "squad1" => Ok(Task::Squad { v2: false }),
            "squad_v2" | "squad2" => Ok(Task::Squad { v2: true }),
            "polarity" => Ok(Task::Polarity),
            "csv" => Ok(Task::Table(TableFormat::Csv)),
            "tsv" => Ok(Task::Table(TableFormat::Tsv)),
            "jsonl" => Ok(Task::Table(TableFormat::Jsonl)),
            _ => Err(Error::msg(format!(
                "unknown task `{name}` (valid: {})",
                TASK_NAMES.join(", ")
            ))),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Task::Glue(t) => t.name(),
            Task::Squad { v2: false } => "squad",
            Task::Squad { v2: true } => "squad_v2",
            Task::Polarity => "polarity",
            Task::Table(TableFormat::Csv) => "csv",
            Task::Table(TableFormat::Tsv) => "tsv",
            Task::Table(TableFormat::Jsonl) => "jsonl",
        }
    }

    /// Metrics reported for this task (first = the main one), as HF
    /// `run_glue` / `run_qa`; generic tables: accuracy (+ F1 when binary),
    /// or Pearson + Spearman for regression.
    pub fn metrics(&self, kind: &TaskKind) -> Vec<Metric> {
        match self {
            Task::Glue(t) => crate::data::metric::glue_metrics(*t).to_vec(),
            Task::Squad { .. } => vec![Metric::SquadF1, Metric::ExactMatch],
            Task::Polarity | Task::Table(_) => match kind {
                TaskKind::Regression => vec![Metric::Pearson, Metric::Spearman],
                TaskKind::Classification { num_labels: 2 } => vec![Metric::Accuracy, Metric::F1],
                _ => vec![Metric::Accuracy],
            },
        }
    }
}

/// Everything needed to load a task's data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskSpec {
    /// One of [`TASK_NAMES`].
    pub task: String,
    /// Directory with the task's files under their usual names.
    pub data_dir: Option<PathBuf>,
    pub train: Option<PathBuf>,
    pub dev: Option<PathBuf>,
    pub test: Option<PathBuf>,
    /// Also read test files found in `data_dir`.
    pub load_test: bool,
    /// csv / tsv / jsonl: the text column (required), the second text
    /// column of pairs, and the label column (default `label`).
    pub text_a: String,
    pub text_b: Option<String>,
    pub label: Option<String>,
    /// csv / tsv / jsonl: how labels become targets.
    pub labels: LabelSpec,
    /// Maximum tokens per feature; default 128, SQuAD 384.
    pub max_seq_len: Option<usize>,
    /// SQuAD: overlap of context windows in tokens.
    pub doc_stride: usize,
    /// SQuAD: question tokens kept.
    pub max_query_len: usize,
    /// Without a dev file: hold out this fraction of the training rows.
    pub dev_split: Option<f64>,
    pub split_seed: u64,
    /// Keep the class proportions in the held-out split.
    pub stratify: bool,
    /// GLUE: skip rows with missing fields instead of failing.
    pub lenient: bool,
}

impl Default for TaskSpec {
    fn default() -> Self {
        TaskSpec {
            task: String::new(),
            data_dir: None,
            train: None,
            dev: None,
            test: None,
            load_test: false,
            text_a: String::new(),
            text_b: None,
            label: None,
            labels: LabelSpec::Auto,
            max_seq_len: None,
            doc_stride: 128,
            max_query_len: 64,
            dev_split: None,
            split_seed: 42,
            stratify: true,
            lenient: false,
        }
    }
}

impl TaskSpec {
    /// A spec for `task` reading from `data_dir`.
    pub fn new(task: impl Into<String>, data_dir: impl Into<PathBuf>) -> TaskSpec {
        TaskSpec {
            task: task.into(),
            data_dir: Some(data_dir.into()),
            ..TaskSpec::default()
        }
    }
}

/// The loaded datasets of a task.
#[derive(Clone, Debug)]
pub struct TaskData {
    pub task: Task,
    pub kind: TaskKind,
    /// Class names (empty for regression and QA).
    pub label_names: Vec<String>,
    pub metrics: Vec<Metric>,
    pub train: Option<Dataset>,
    /// The main evaluation set.
    pub dev: Option<Dataset>,
    /// Further evaluation sets (MNLI mismatched).
    pub extra_dev: Vec<Dataset>,
    /// Unlabelled (usually) test sets.
    pub test: Vec<Dataset>,
}

/// Which file to read: explicit (must exist) or found in the data directory.
fn pick(explicit: &Option<PathBuf>, dir: &Option<PathBuf>, name: &str) -> Result<Option<PathBuf>> {
    if let Some(p) = explicit {
        if !p.is_file() {
            return Err(Error::msg(format!("{}: no such file", p.display())));
        }
        return Ok(Some(p.clone()));
    }
    Ok(dir.as_ref().map(|d| d.join(name)).filter(|p| p.is_file()))
}

fn set_name(task: &Task, path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("data");
    format!("{}/{stem}", task.name())
}

/// Read and tokenize the data of a task.
pub fn load_task(spec: &TaskSpec, tok: &Tokenizer) -> Result<TaskData> {
    let task = Task::from_name(&spec.task)?;
    let max_len = spec.max_seq_len.unwrap_or(match task {
        Task::Squad { .. } => 384,
        _ => 128,
    });
    let (train_name, dev_names, test_names): (String, Vec<String>, Vec<String>) = match task {
        Task::Glue(t) => {
            let (tr, dv, te) = t.files();
            (
                tr.into(),
                dv.iter().map(|s| s.to_string()).collect(),
                te.iter().map(|s| s.to_string()).collect(),
            )
        }
        Task::Squad { v2 } => {
            let v = if v2 { "v2.0" } else { "v1.1" };
            (
                format!("train-{v}.json"),
                vec![format!("dev-{v}.json")],
                vec![],
            )
        }
        Task::Polarity => ("polarity.csv".into(), vec![], vec![]),
        Task::Table(f) => {
            let ext = match f {
                TableFormat::Csv => "csv",
                TableFormat::Tsv => "tsv",
                TableFormat::Jsonl => "jsonl",
            };
            (
                format!("train.{ext}"),
                vec![format!("dev.{ext}")],
                vec![format!("test.{ext}")],
            )
        }
    };
    let train_path = pick(&spec.train, &spec.data_dir, &train_name)?;
    let mut dev_paths = Vec::new();
    match &spec.dev {
        Some(_) => dev_paths.extend(pick(&spec.dev, &None, "")?),
        None => {
            for n in &dev_names {
                dev_paths.extend(pick(&None, &spec.data_dir, n)?);
            }
        }
    }
    let mut test_paths = Vec::new();
    match &spec.test {
        Some(_) => test_paths.extend(pick(&spec.test, &None, "")?),
        None if spec.load_test => {
            for n in &test_names {
                test_paths.extend(pick(&None, &spec.data_dir, n)?);
            }
        }
        None => {}
    }
    if train_path.is_none() && dev_paths.is_empty() {
        let looked = match &spec.data_dir {
            Some(d) => format!(
                " in {} (looked for {})",
                d.display(),
                std::iter::once(&train_name)
                    .chain(&dev_names)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => " (give a data directory or train / dev paths)".into(),
        };
        return Err(Error::msg(format!(
            "{}: no training or dev data{looked}",
            task.name()
        )));
    }

    let (kind, label_names, mut train, mut devs, tests) = match task {
        Task::Glue(_) | Task::Polarity => {
            let read = |p: &Path| match task {
                Task::Glue(t) => read_glue(t, p, spec.lenient),
                _ => read_polarity(p),
            };
            let ds = |p: &PathBuf| -> Result<Dataset> {
                Dataset::from_text(set_name(&task, p), &read(p)?, tok, max_len)
            };
            let (kind, names) = match task {
                Task::Glue(t) => (
                    t.kind(),
                    t.label_names().iter().map(|s| s.to_string()).collect(),
                ),
                _ => (
                    TaskKind::Classification { num_labels: 2 },
                    super::polarity::POLARITY_LABELS
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                ),
            };
            let train = train_path.as_ref().map(ds).transpose()?;
            let devs = dev_paths.iter().map(ds).collect::<Result<Vec<_>>>()?;
            let tests = test_paths.iter().map(ds).collect::<Result<Vec<_>>>()?;
            (kind, names, train, devs, tests)
        }
        Task::Squad { v2 } => {
            let cfg = SquadConfig {
                max_seq_len: max_len,
                doc_stride: spec.doc_stride,
                max_query_len: spec.max_query_len,
            };
            let ds = |p: &PathBuf| {
                Dataset::from_squad(set_name(&task, p), read_squad(p)?, tok, &cfg, v2)
            };
            let train = train_path.as_ref().map(ds).transpose()?;
            let devs = dev_paths.iter().map(ds).collect::<Result<Vec<_>>>()?;
            let tests = test_paths.iter().map(ds).collect::<Result<Vec<_>>>()?;
            (TaskKind::QuestionAnswering, Vec::new(), train, devs, tests)
        }
        Task::Table(format) => {
            if spec.text_a.is_empty() {
                return Err(Error::msg(format!(
                    "{}: the text column must be given",
                    task.name()
                )));
            }
            let table = TableSpec {
                format,
                text_a: spec.text_a.clone(),
                text_b: spec.text_b.clone(),
                label: Some(spec.label.clone().unwrap_or_else(|| "label".into())),
            };
            let train_rows = train_path
                .as_ref()
                .map(|p| read_table(p, &table, true))
                .transpose()?;
            let dev_rows = dev_paths
                .iter()
                .map(|p| read_table(p, &table, true).map(|r| (p, r)))
                .collect::<Result<Vec<_>>>()?;
            // The label vocabulary comes from the training file (else the first dev file).
            let vocab_rows = train_rows
                .as_deref()
                .or(dev_rows.first().map(|d| d.1.as_slice()))
                .unwrap_or(&[]);
            let (kind, names) = spec.labels.vocabulary(vocab_rows)?;
            let to_ds = |p: &PathBuf, rows| -> Result<Dataset> {
                let data = spec.labels.resolve(p, rows, &kind, &names)?;
                Dataset::from_text(set_name(&task, p), &data, tok, max_len)
            };
            let train = match (&train_path, train_rows) {
                (Some(p), Some(rows)) => Some(to_ds(p, rows)?),
                _ => None,
            };
            let devs = dev_rows
                .into_iter()
                .map(|(p, r)| to_ds(p, r))
                .collect::<Result<Vec<_>>>()?;
            let tests = test_paths
                .iter()
                .map(|p| to_ds(p, read_table(p, &table, false)?))
                .collect::<Result<Vec<_>>>()?;
            (kind, names, train, devs, tests)
        }
    };

    if devs.is_empty() {
        if let (Some(frac), Some(tr)) = (spec.dev_split, train.as_ref()) {
            let stratify = spec.stratify && matches!(kind, TaskKind::Classification { .. });
            let (t, d) = tr.split(frac, spec.split_seed, stratify)?;
            train = Some(t);
            devs.push(d);
        }
    }
    let mut devs = devs.into_iter();
    let dev = devs.next();
    let metrics = task.metrics(&kind);
    Ok(TaskData {
        task,
        kind,
        label_names,
        metrics,
        train,
        dev,
        extra_dev: devs.collect(),
        test: tests,
    })
}
