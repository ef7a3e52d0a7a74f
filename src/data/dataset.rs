//! Tokenized datasets, deterministic splits, seeded shuffling and batching.
//!
//! Randomness is a pure function of its seed: the order of epoch `e` is a
//! Fisher–Yates shuffle driven by `ChaCha8Rng::seed_from_u64(seed)` on stream
//! `e`; the train / dev split uses the same generator on stream `u64::MAX`.
//! Bounded draws use rejection sampling on `next_u64`, so the orders depend
//! only on the ChaCha8 stream (which `rand_chacha` keeps stable), not on how
//! a `rand` version maps words to ranges. A [`Cursor`] `(epoch, position)`
//! therefore pins the next batch exactly: a resumed run produces the same
//! batches as an uninterrupted one.

use std::sync::Arc;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::squad::{squad_features, SquadConfig, SquadExample, SquadFeatureMeta};
use super::tokenizer::Tokenizer;
use super::{Batch, Labels, Target, TaskKind, TextData};
use crate::error::{Error, Result};

pub use super::feature::{Feature, FeatureLabel};

/// SQuAD examples and the per-feature maps back to them.
#[derive(Clone, Debug, PartialEq)]
pub struct SquadData {
    pub examples: Vec<SquadExample>,
    /// Parallel to [`Dataset::features`].
    pub metas: Vec<SquadFeatureMeta>,
    pub v2: bool,
}

/// Tokenized features of one file (or split) of a task.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// E.g. `sst2/dev`, for logs.
    pub name: String,
    pub kind: TaskKind,
    /// Class names, index = class id (empty for regression and QA).
    pub label_names: Vec<String>,
    pub features: Vec<Feature>,
    /// Token id used for padding.
    pub pad_id: u32,
    /// Rows cut to the maximum sequence length.
    pub truncated: usize,
    /// Present for SQuAD datasets.
    pub squad: Option<SquadData>,
}

impl Dataset {
    /// Tokenize sentences / pairs to at most `max_len` tokens each.
    pub fn from_text(
        name: impl Into<String>,
        data: &TextData,
        tok: &Tokenizer,
        max_len: usize,
    ) -> Result<Dataset> {
        let encoded: Vec<(Feature, bool)> = data
            .examples
            .par_iter()
            .map(|ex| {
                let (ids, types, truncated) = tok
                    .encode_ids(&ex.text_a, ex.text_b.as_deref(), max_len)
                    .map_err(|e| Error::data(&data.source, ex.line, e.to_string()))?;
                let label = match ex.label {
                    None => FeatureLabel::None,
                    Some(Target::Class(c)) => FeatureLabel::Class(c),
                    Some(Target::Value(v)) => FeatureLabel::Value(v),
                };
                Ok((
                    Feature {
                        input_ids: ids,
                        token_type_ids: types.iter().map(|&t| t as u8).collect(),
                        label,
                    },
                    truncated,
                ))
            })
            .collect::<Result<_>>()?;
        let truncated = encoded.iter().filter(|e| e.1).count();
        Ok(Dataset {
            name: name.into(),
            kind: data.kind.clone(),
            label_names: data.label_names.clone(),
            features: encoded.into_iter().map(|e| e.0).collect(),
            pad_id: tok.pad_id(),
            truncated,
            squad: None,
        })
    }

    /// Tokenize SQuAD examples into (possibly several) windows each.
    /// Unanswerable questions count only for `v2` (they are read either way).
    pub fn from_squad(
        name: impl Into<String>,
        examples: Vec<SquadExample>,
        tok: &Tokenizer,
        cfg: &SquadConfig,
        v2: bool,
    ) -> Result<Dataset> {
        let (mut features, metas) = squad_features(&examples, tok, cfg)?;
        let labeled = examples
            .iter()
            .any(|e| !e.answers.is_empty() || e.is_impossible);
        if !labeled {
            for f in &mut features {
                f.label = FeatureLabel::None;
            }
        }
        Ok(Dataset {
            name: name.into(),
            kind: TaskKind::QuestionAnswering,
            label_names: Vec::new(),
            features,
            pad_id: tok.pad_id(),
            truncated: 0,
            squad: Some(SquadData {
                examples,
                metas,
                v2,
            }),
        })
    }

    pub fn len(&self) -> usize {
        self.features.len()
    }

    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// Whether the features carry targets.
    pub fn is_labeled(&self) -> bool {
        self.features
            .first()
            .is_some_and(|f| f.label != FeatureLabel::None)
    }

    /// Longest feature in tokens.
    pub fn max_len(&self) -> usize {
        self.features
            .iter()
            .map(|f| f.input_ids.len())
            .max()
            .unwrap_or(0)
    }

    /// Gold class ids, when the dataset is labelled for classification.
    pub fn class_labels(&self) -> Option<Vec<u32>> {
        self.features
            .iter()
            .map(|f| match f.label {
                FeatureLabel::Class(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    /// Gold regression values, when the dataset is labelled for regression.
    pub fn values(&self) -> Option<Vec<f32>> {
        self.features
            .iter()
            .map(|f| match f.label {
                FeatureLabel::Value(v) => Some(v),
                _ => None,
            })
            .collect()
    }

    /// A padded batch of the given features (in that order). Rows are padded
    /// to the longest, rounded up to a multiple of `pad_multiple` (0 or 1: no
    /// rounding).
    pub fn batch(&self, ids: &[usize], pad_multiple: usize) -> Result<Batch> {
        if let Some(&bad) = ids.iter().find(|&&i| i >= self.len()) {
            return Err(Error::msg(format!(
                "{}: feature {bad} out of range ({} features)",
                self.name,
                self.len()
            )));
        }
        Ok(self.make_batch(ids, pad_multiple))
    }

    fn make_batch(&self, ids: &[usize], pad_multiple: usize) -> Batch {
        let longest = ids
            .iter()
            .map(|&i| self.features[i].input_ids.len())
            .max()
            .unwrap_or(0);
        let m = pad_multiple.max(1);
        let seq_len = longest.div_ceil(m) * m;
        let size = ids.len();
        let mut input_ids = vec![self.pad_id as i32; size * seq_len];
        let mut token_type_ids = vec![0i32; size * seq_len];
        let mut attention_mask = vec![0u8; size * seq_len];
        for (r, &i) in ids.iter().enumerate() {
            let f = &self.features[i];
            let row = r * seq_len;
            for (k, (&t, &ty)) in f.input_ids.iter().zip(&f.token_type_ids).enumerate() {
                input_ids[row + k] = t as i32;
                token_type_ids[row + k] = ty as i32;
                attention_mask[row + k] = 1;
            }
        }
        let labels = match ids.first().map(|&i| self.features[i].label) {
            None | Some(FeatureLabel::None) => Labels::None,
            Some(FeatureLabel::Class(_)) => Labels::Class(
                ids.iter()
                    .map(|&i| match self.features[i].label {
                        FeatureLabel::Class(c) => c,
                        _ => 0,
                    })
                    .collect(),
            ),
            Some(FeatureLabel::Value(_)) => Labels::Regression(
                ids.iter()
                    .map(|&i| match self.features[i].label {
                        FeatureLabel::Value(v) => v,
                        _ => 0.0,
                    })
                    .collect(),
            ),
            Some(FeatureLabel::Span { .. }) => {
                let (start, end) = ids
                    .iter()
                    .map(|&i| match self.features[i].label {
                        FeatureLabel::Span { start, end } => (start, end),
                        _ => (0, 0),
                    })
                    .unzip();
                Labels::Span { start, end }
            }
        };
        Batch {
            size,
            seq_len,
            input_ids,
            token_type_ids,
            attention_mask,
            labels,
            feature_ids: ids.to_vec(),
        }
    }

    /// All features in order, in batches of `batch_size` (the last may be
    /// smaller): for evaluation and prediction.
    pub fn eval_batches(
        &self,
        batch_size: usize,
        pad_multiple: usize,
    ) -> impl Iterator<Item = Batch> + '_ {
        let bs = batch_size.max(1);
        (0..self.len()).step_by(bs).map(move |s| {
            let ids: Vec<usize> = (s..(s + bs).min(self.len())).collect();
            self.make_batch(&ids, pad_multiple)
        })
    }

    /// Keep the given features (classification / regression), or, for SQuAD,
    /// the given *examples* with all their features.
    pub fn subset(&self, name: impl Into<String>, ids: &[usize]) -> Result<Dataset> {
        let mut out = Dataset {
            name: name.into(),
            features: Vec::new(),
            squad: None,
            ..self.clone_meta()
        };
        match &self.squad {
            None => {
                if let Some(&bad) = ids.iter().find(|&&i| i >= self.len()) {
                    return Err(Error::msg(format!(
                        "{}: feature {bad} out of range",
                        self.name
                    )));
                }
                out.features = ids.iter().map(|&i| self.features[i].clone()).collect();
            }
            Some(sq) => {
                let mut new_index = vec![usize::MAX; sq.examples.len()];
                let mut examples = Vec::with_capacity(ids.len());
                for (k, &i) in ids.iter().enumerate() {
                    let ex = sq.examples.get(i).ok_or_else(|| {
                        Error::msg(format!("{}: example {i} out of range", self.name))
                    })?;
                    new_index[i] = k;
                    examples.push(ex.clone());
                }
                let mut metas = Vec::new();
                for (f, m) in self.features.iter().zip(&sq.metas) {
                    let k = new_index[m.example];
                    if k != usize::MAX {
                        out.features.push(f.clone());
                        metas.push(SquadFeatureMeta {
                            example: k,
                            offsets: m.offsets.clone(),
                        });
                    }
                }
                out.squad = Some(SquadData {
                    examples,
                    metas,
                    v2: sq.v2,
                });
            }
        }
        Ok(out)
    }

    fn clone_meta(&self) -> Dataset {
        Dataset {
            name: self.name.clone(),
            kind: self.kind.clone(),
            label_names: self.label_names.clone(),
            features: Vec::new(),
            pad_id: self.pad_id,
            truncated: 0,
            squad: None,
        }
    }

    /// Split off a dev set of `fraction` of the rows (SQuAD: of the
    /// examples), see [`split_indices`]. Both parts keep the original order.
    pub fn split(&self, fraction: f64, seed: u64, stratify: bool) -> Result<(Dataset, Dataset)> {
        let (n, labels) = match &self.squad {
            Some(sq) => (sq.examples.len(), None),
            None => (
                self.len(),
                if stratify { self.class_labels() } else { None },
            ),
        };
        let (train, dev) = split_indices(n, labels.as_deref(), fraction, seed)?;
        Ok((
            self.subset(format!("{}[train]", self.name), &train)?,
            self.subset(format!("{}[dev]", self.name), &dev)?,
        ))
    }
}

/// Uniform integer in `0..bound` by rejection sampling.
fn below(rng: &mut ChaCha8Rng, bound: u64) -> u64 {
    let zone = u64::MAX - u64::MAX % bound;
    loop {
        let x = rng.next_u64();
        if x < zone {
            return x % bound;
        }
    }
}

fn shuffle(rng: &mut ChaCha8Rng, v: &mut [usize]) {
    for i in (1..v.len()).rev() {
        let j = below(rng, i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// The visiting order of epoch `epoch`: a permutation of `0..n` that depends
/// only on `(seed, epoch)`.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut v: Vec<usize> = (0..n).collect();
    shuffle(&mut rng, &mut v);
    v
}

/// Deterministic train / dev split of `0..n`, returned sorted. With `labels`
/// (stratified), each class is shuffled separately and contributes
/// `round(count · fraction)` rows to dev; otherwise all rows are shuffled
/// together and the first `round(n · fraction)` go to dev. Both parts must
/// come out non-empty.
pub fn split_indices(
    n: usize,
    labels: Option<&[u32]>,
    fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::msg(format!(
            "dev split fraction {fraction} is not between 0 and 1"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(u64::MAX);
    let groups: Vec<Vec<usize>> = match labels {
        Some(l) => {
            if l.len() != n {
                return Err(Error::msg(format!(
                    "split: {} labels for {n} rows",
                    l.len()
                )));
            }
            let k = l.iter().max().map_or(0, |&m| m as usize + 1);
            let mut g = vec![Vec::new(); k];
            for (i, &c) in l.iter().enumerate() {
                g[c as usize].push(i);
            }
            g
        }
        None => vec![(0..n).collect()],
    };
    let (mut train, mut dev) = (Vec::new(), Vec::new());
    for mut g in groups {
        shuffle(&mut rng, &mut g);
        let take = (g.len() as f64 * fraction).round() as usize;
        dev.extend_from_slice(&g[..take]);
        train.extend_from_slice(&g[take..]);
    }
    if train.is_empty() || dev.is_empty() {
        return Err(Error::msg(format!(
            "a {fraction} dev split of {n} rows leaves {} for training and {} for dev",
            train.len(),
            dev.len()
        )));
    }
    train.sort_unstable();
    dev.sort_unstable();
    Ok((train, dev))
}

/// Training batch settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchConfig {
    pub batch_size: usize,
    /// Shuffle every epoch (else dataset order).
    pub shuffle: bool,
    pub seed: u64,
    /// Drop an epoch's last, smaller batch.
    pub drop_last: bool,
    /// Round padded lengths up to a multiple of this (8 helps tensor cores;
    /// 0 or 1: no rounding).
    pub pad_multiple: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            batch_size: 32,
            shuffle: true,
            seed: 42,
            drop_last: false,
            pad_multiple: 8,
        }
    }
}

/// Where a [`BatchIter`] stands: the next batch starts at `position` in the
/// order of `epoch`. Save it with a checkpoint to resume exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    pub position: usize,
}

/// An endless stream of training batches, epoch after epoch (also an
/// [`Iterator`] that never ends).
#[derive(Clone, Debug)]
pub struct BatchIter {
    ds: Arc<Dataset>,
    cfg: BatchConfig,
    cursor: Cursor,
    order: Vec<usize>,
    order_epoch: Option<u64>,
}

impl BatchIter {
    /// Start at epoch 0.
    pub fn new(ds: Arc<Dataset>, cfg: BatchConfig) -> Result<BatchIter> {
        Self::resume(ds, cfg, Cursor::default())
    }

    /// Continue from a saved cursor.
    pub fn resume(ds: Arc<Dataset>, cfg: BatchConfig, cursor: Cursor) -> Result<BatchIter> {
        if cfg.batch_size == 0 {
            return Err(Error::msg("batch size must be at least 1"));
        }
        if ds.is_empty() {
            return Err(Error::msg(format!("{}: no training rows", ds.name)));
        }
        if cfg.drop_last && ds.len() < cfg.batch_size {
            return Err(Error::msg(format!(
                "{}: {} rows are fewer than one batch of {} with drop_last",
                ds.name,
                ds.len(),
                cfg.batch_size
            )));
        }
        let mut it = BatchIter {
            ds,
            cfg,
            cursor: Cursor::default(),
            order: Vec::new(),
            order_epoch: None,
        };
        it.set_cursor(cursor)?;
        Ok(it)
    }

    /// The position of the next batch.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// Move to a saved position (checked against the dataset size).
    pub fn set_cursor(&mut self, cursor: Cursor) -> Result<()> {
        if cursor.position > self.ds.len() {
            return Err(Error::msg(format!(
                "{}: saved data position {} is beyond its {} rows (different data?)",
                self.ds.name,
                cursor.position,
                self.ds.len()
            )));
        }
        self.cursor = cursor;
        Ok(())
    }

    /// The next batch (never runs out; `Result` for callers that want one).
    pub fn next_batch(&mut self) -> Result<Batch> {
        Ok(self.step())
    }

    /// The dataset batches are drawn from.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.ds
    }

    pub fn config(&self) -> &BatchConfig {
        &self.cfg
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.ds.len();
        if self.cfg.drop_last {
            n / self.cfg.batch_size
        } else {
            n.div_ceil(self.cfg.batch_size)
        }
    }

    fn epoch_done(&self) -> bool {
        let rest = self.ds.len() - self.cursor.position.min(self.ds.len());
        rest == 0 || (self.cfg.drop_last && rest < self.cfg.batch_size)
    }
}

impl Iterator for BatchIter {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        Some(self.step())
    }
}

impl BatchIter {
    fn step(&mut self) -> Batch {
        if self.epoch_done() {
            self.cursor = Cursor {
                epoch: self.cursor.epoch + 1,
                position: 0,
            };
        }
        if self.order_epoch != Some(self.cursor.epoch) {
            self.order = if self.cfg.shuffle {
                epoch_order(self.ds.len(), self.cfg.seed, self.cursor.epoch)
            } else {
                (0..self.ds.len()).collect()
            };
            self.order_epoch = Some(self.cursor.epoch);
        }
        let p = self.cursor.position;
        let end = (p + self.cfg.batch_size).min(self.ds.len());
        let batch = self
            .ds
            .make_batch(&self.order[p..end], self.cfg.pad_multiple);
        self.cursor.position = end;
        if self.epoch_done() {
            self.cursor = Cursor {
                epoch: self.cursor.epoch + 1,
                position: 0,
            };
        }
        batch
    }
}
