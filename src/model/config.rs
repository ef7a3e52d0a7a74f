//! `config.json` of a Hugging Face BERT: the fields the engine uses, with the
//! transformers defaults, and every other field kept so a saved model
//! round-trips.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, ResultExt};

fn d_vocab() -> usize {
    30522
}
fn d_hidden() -> usize {
    768
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    12
}
fn d_inter() -> usize {
    3072
}
fn d_act() -> String {
    "gelu".into()
}
fn d_drop() -> f32 {
    0.1
}
fn d_pos() -> usize {
    512
}
fn d_types() -> usize {
    2
}
fn d_init() -> f32 {
    0.02
}
fn d_eps() -> f32 {
    1e-12
}
fn d_pad() -> Option<i64> {
    Some(0)
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BertConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_drop")]
    pub hidden_dropout_prob: f32,
    #[serde(default = "d_drop")]
    pub attention_probs_dropout_prob: f32,
    #[serde(default = "d_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_types")]
    pub type_vocab_size: usize,
    #[serde(default = "d_init")]
    pub initializer_range: f32,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f32,
    #[serde(default)]
    pub classifier_dropout: Option<f32>,
    /// The word-embedding row that gets no gradient (`padding_idx` in transformers).
    #[serde(default = "d_pad")]
    pub pad_token_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label2id: Option<BTreeMap<String, i64>>,
    /// Every other field of the file, written back unchanged.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl BertConfig {
    /// The BERT-base configuration (random-init benchmarks).
    pub fn base() -> BertConfig {
        serde_json::from_str("{}").expect("defaults parse")
    }

    /// A small configuration for tests.
    pub fn tiny(
        vocab: usize,
        hidden: usize,
        layers: usize,
        heads: usize,
        inter: usize,
    ) -> BertConfig {
        let mut c = BertConfig::base();
        c.vocab_size = vocab;
        c.hidden_size = hidden;
        c.num_hidden_layers = layers;
        c.num_attention_heads = heads;
        c.intermediate_size = inter;
        c.max_position_embeddings = 128;
        c
    }

    pub fn load(path: &Path) -> Result<BertConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let c: BertConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid BERT config.json", path.display()))?;
        c.validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::msg(m));
        match self.extra.get("model_type") {
            None => {}
            Some(serde_json::Value::String(t)) if t == "bert" => {}
            Some(t) => {
                return bad(format!(
                    "model_type {t} is not supported: lpaf reads BERT models (model_type \"bert\")"
                ))
            }
        }
        // Bounds far above any BERT, so that a corrupt file is refused
        // before sizes computed from it are allocated.
        for (name, v, max) in [
            ("vocab_size", self.vocab_size, 1 << 24),
            ("hidden_size", self.hidden_size, 1 << 16),
            ("num_hidden_layers", self.num_hidden_layers, 1 << 10),
            ("num_attention_heads", self.num_attention_heads, 1 << 10),
            ("intermediate_size", self.intermediate_size, 1 << 18),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                1 << 20,
            ),
            ("type_vocab_size", self.type_vocab_size, 1 << 16),
        ] {
            if v > max {
                return bad(format!("{name} = {v} is implausibly large (at most {max})"));
            }
        }
        if self.intermediate_size == 0 {
            return bad("intermediate_size must be positive".into());
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return bad(format!(
                "layer_norm_eps = {} must be positive",
                self.layer_norm_eps
            ));
        }
        if !(self.initializer_range.is_finite() && self.initializer_range > 0.0) {
            return bad(format!(
                "initializer_range = {} must be positive",
                self.initializer_range
            ));
        }
        if let Some(p) = self.classifier_dropout {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("classifier_dropout = {p} is outside [0, 1)"));
            }
        }
        if self.hidden_size == 0 || self.num_attention_heads == 0 || self.num_hidden_layers == 0 {
            return bad(
                "hidden_size, num_attention_heads and num_hidden_layers must be positive".into(),
            );
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.vocab_size == 0 || self.max_position_embeddings == 0 || self.type_vocab_size == 0 {
            return bad(
                "vocab_size, max_position_embeddings and type_vocab_size must be positive".into(),
            );
        }
        if !matches!(self.hidden_act.as_str(), "gelu" | "gelu_python") {
            return bad(format!(
                "hidden_act '{}' is not supported (only the exact erf GELU, 'gelu')",
                self.hidden_act
            ));
        }
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("{name} = {p} is outside [0, 1)"));
            }
        }
        Ok(())
    }

    /// A requested sequence length (`--max-seq-len` / `data.max_seq_len`)
    /// must fit the position embeddings; checked at startup, not at the
    /// first long batch.
    pub fn check_max_seq_len(&self, max_seq_len: Option<usize>, path: &Path) -> Result<()> {
        if let Some(n) = max_seq_len {
            if n > self.max_position_embeddings {
                return Err(Error::msg(format!(
                    "--max-seq-len / data.max_seq_len = {n} is more than the model's \
                     max_position_embeddings = {} ({})",
                    self.max_position_embeddings,
                    path.display()
                )));
            }
            if n < 3 {
                return Err(Error::msg(format!(
                    "--max-seq-len / data.max_seq_len = {n}: at least 3 ([CLS], a token, [SEP])"
                )));
            }
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Dropout before the classifier (transformers: classifier_dropout or hidden_dropout_prob).
    pub fn classifier_dropout_prob(&self) -> f32 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }

    /// Label names in id order, if the config has them.
    pub fn label_names(&self) -> Option<Vec<String>> {
        let m = self.id2label.as_ref()?;
        let mut v: Vec<(usize, String)> = m
            .iter()
            .filter_map(|(k, v)| k.parse::<usize>().ok().map(|k| (k, v.clone())))
            .collect();
        v.sort();
        Some(v.into_iter().map(|(_, n)| n).collect())
    }

    /// Records the label names (and their count) for saving.
    pub fn set_labels(&mut self, names: &[String]) {
        self.id2label = Some(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (i.to_string(), n.clone()))
                .collect(),
        );
        self.label2id = Some(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i as i64))
                .collect(),
        );
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        crate::model::io::write_atomic(path, text.as_bytes())
    }
}
