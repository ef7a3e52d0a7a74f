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

pub mod tokenizer;

pub use tokenizer::{Encoded, Pieces, Tokenizer};
