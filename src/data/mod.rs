//! Datasets and batching: GLUE TSV, CSV / TSV / JSONL with named columns,
//! SQuAD v1.1 / v2.0, the Pang & Lee polarity CSV; tokenization into
//! features; seeded shuffling and dynamic padding.

use serde::{Deserialize, Serialize};

/// What a model head predicts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskKind {
    /// One label out of `num_labels` (one sentence or a pair).
    Classification { num_labels: usize },
    /// One real value (STS-B), MSE loss.
    Regression,
    /// Extractive QA: start / end logits over the tokens.
    QuestionAnswering,
}

/// Targets of a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Labels {
    None,
    Class(Vec<u32>),
    Regression(Vec<f32>),
    /// Token positions of the answer start / end (0 = `[CLS]` for "no answer").
    Span {
        start: Vec<u32>,
        end: Vec<u32>,
    },
}

/// A padded batch, row-major `[size, seq_len]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub size: usize,
    pub seq_len: usize,
    pub input_ids: Vec<i32>,
    pub token_type_ids: Vec<i32>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<u8>,
    pub labels: Labels,
    /// Index of each row's feature in its dataset (to map predictions back).
    pub feature_ids: Vec<usize>,
}

impl Batch {
    /// Tokens in the batch (`size · seq_len`).
    pub fn tokens(&self) -> usize {
        self.size * self.seq_len
    }
}

pub mod dataset;
pub mod feature;
pub mod glue;
pub mod metric;
pub mod polarity;
pub mod squad;
pub mod table;
pub mod task;
pub mod tokenizer;

pub use dataset::{
    epoch_order, split_indices, BatchConfig, BatchIter, Cursor, Dataset, Feature, FeatureLabel,
    SquadData,
};
pub use glue::{read_glue, GlueTask};
pub use polarity::{read_polarity, POLARITY_LABELS};
pub use squad::{
    normalize_answer, read_squad, squad_em_f1, squad_evaluate, squad_features, squad_postprocess,
    QaConfig, SquadAnswer, SquadConfig, SquadExample, SquadFeatureMeta, SquadPrediction,
    SquadScores,
};
pub use table::{read_table, LabelSpec, RawRow, TableFormat, TableSpec};
pub use task::{load_task, Task, TaskData, TaskSpec, TASK_NAMES};
pub use tokenizer::{Encoded, Pieces, Tokenizer};

use std::path::PathBuf;

/// The target of one example before tokenization.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Class index into the label names.
    Class(u32),
    /// Regression value.
    Value(f32),
}

/// One sentence or sentence pair read from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct TextExample {
    pub text_a: String,
    pub text_b: Option<String>,
    /// `None` for unlabelled (test) files; a file is all labelled or all not.
    pub label: Option<Target>,
    /// 1-based line of the row in its file.
    pub line: usize,
}

/// A classification / regression file read into memory.
#[derive(Clone, Debug, PartialEq)]
pub struct TextData {
    pub source: PathBuf,
    pub kind: TaskKind,
    /// Class names, index = class id (empty for regression).
    pub label_names: Vec<String>,
    pub examples: Vec<TextExample>,
    /// Lines skipped as malformed (only when reading leniently).
    pub skipped: Vec<usize>,
}

impl TextData {
    /// Whether the examples carry labels.
    pub fn is_labeled(&self) -> bool {
        self.examples.first().is_some_and(|e| e.label.is_some())
    }
}
