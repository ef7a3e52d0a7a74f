//! SQuAD v1.1 / v2.0: reading, features with a document stride, span
//! decoding of start / end logits, and the official evaluation (EM / F1).
//!
//! Features follow Hugging Face `run_qa`: `[CLS] question [SEP] context
//! window [SEP]`, token types 0 / 1; the question is left-stripped and
//! truncated to `max_query_len` tokens (the original BERT rule); the context
//! is cut into windows of `max_seq_len − question − 3` tokens, consecutive
//! windows overlapping by `doc_stride` tokens (the fast tokenizers' `stride`,
//! not the original BERT step). Training targets come from the first answer;
//! an answer not wholly inside a window, or an unanswerable question, gets
//! start = end = 0 (`[CLS]`). Unlike `run_qa` the start search stops at the
//! window's last context token (`run_qa` can run into `[SEP]` when the answer
//! starts in the window's last token).
//!
//! All character positions are Unicode scalar values (Python string indices),
//! the unit of `answer_start`.

use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::feature::{Feature, FeatureLabel};
use super::tokenizer::{Pieces, Tokenizer};
use crate::error::{Error, Result};

/// One gold answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SquadAnswer {
    pub text: String,
    /// Character index of the answer in the context.
    pub start: usize,
}

/// One question with its context.
#[derive(Clone, Debug, PartialEq)]
pub struct SquadExample {
    pub id: String,
    pub title: String,
    pub question: String,
    /// Shared by the questions of one paragraph.
    pub context: Arc<str>,
    /// Empty for unanswerable (v2) questions.
    pub answers: Vec<SquadAnswer>,
    pub is_impossible: bool,
}

#[derive(Deserialize)]
struct JsonFile {
    data: Vec<JsonArticle>,
}

#[derive(Deserialize)]
struct JsonArticle {
    #[serde(default)]
    title: String,
    paragraphs: Vec<JsonParagraph>,
}

#[derive(Deserialize)]
struct JsonParagraph {
    context: String,
    qas: Vec<JsonQa>,
}

#[derive(Deserialize)]
struct JsonQa {
    id: String,
    question: String,
    #[serde(default)]
    answers: Vec<JsonAnswer>,
    #[serde(default)]
    is_impossible: bool,
}

#[derive(Deserialize)]
struct JsonAnswer {
    text: String,
    answer_start: i64,
}

/// Read a SQuAD v1.1 or v2.0 JSON file (`data[].paragraphs[].qas[]`).
/// Answers must lie inside their context (checked by character position;
/// the text itself is not compared, as in `run_qa`).
pub fn read_squad(path: impl AsRef<Path>) -> Result<Vec<SquadExample>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
    let file: JsonFile = serde_json::from_slice(bytes)
        .map_err(|e| Error::data(path, e.line(), format!("not a SQuAD file: {e}")))?;
    let mut out = Vec::new();
    for art in file.data {
        for para in art.paragraphs {
            let n_chars = para.context.chars().count();
            let context: Arc<str> = Arc::from(para.context);
            for qa in para.qas {
                let mut answers = Vec::with_capacity(qa.answers.len());
                for a in qa.answers {
                    let len = a.text.chars().count();
                    if a.answer_start < 0 || a.answer_start as usize + len > n_chars {
                        return Err(Error::msg(format!(
                            "{}: question {}: answer `{}` at character {} does not fit in its {}-character context",
                            path.display(),
                            qa.id,
                            a.text,
                            a.answer_start,
                            n_chars
                        )));
                    }
                    answers.push(SquadAnswer {
                        text: a.text,
                        start: a.answer_start as usize,
                    });
                }
                out.push(SquadExample {
                    id: qa.id,
                    title: art.title.clone(),
                    question: qa.question,
                    context: context.clone(),
                    answers,
                    is_impossible: qa.is_impossible,
                });
            }
        }
    }
    Ok(out)
}

/// Feature construction parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SquadConfig {
    pub max_seq_len: usize,
    /// Overlap in tokens between consecutive context windows.
    pub doc_stride: usize,
    pub max_query_len: usize,
}

impl Default for SquadConfig {
    fn default() -> Self {
        SquadConfig {
            max_seq_len: 384,
            doc_stride: 128,
            max_query_len: 64,
        }
    }
}

/// What maps a feature's tokens back to its example.
#[derive(Clone, Debug, PartialEq)]
pub struct SquadFeatureMeta {
    /// Index of the example in the dataset's example list.
    pub example: usize,
    /// Per token: character span in the context, `None` outside the context.
    pub offsets: Vec<Option<(u32, u32)>>,
}

/// Tokenize examples into features (several per example when the context
/// needs more than one window). Returns the features and, parallel to them,
/// their metadata.
pub fn squad_features(
    examples: &[SquadExample],
    tok: &Tokenizer,
    cfg: &SquadConfig,
) -> Result<(Vec<Feature>, Vec<SquadFeatureMeta>)> {
    let special = tok.num_special_tokens(true);
    if cfg.max_seq_len <= special + 1 {
        return Err(Error::msg(format!(
            "SQuAD: max sequence length {} is too short",
            cfg.max_seq_len
        )));
    }
    // Tokenize each distinct context once (questions of a paragraph share it).
    let mut ctx_of = Vec::with_capacity(examples.len());
    let mut contexts: Vec<&Arc<str>> = Vec::new();
    for ex in examples {
        if contexts.last().is_none_or(|c| !Arc::ptr_eq(c, &ex.context)) {
            contexts.push(&ex.context);
        }
        ctx_of.push(contexts.len() - 1);
    }
    let ctx_pieces: Vec<Pieces> = contexts
        .par_iter()
        .map(|c| tok.pieces(c))
        .collect::<Result<_>>()?;
    let per_example: Vec<Vec<(Feature, SquadFeatureMeta)>> = examples
        .par_iter()
        .enumerate()
        .map(|(i, ex)| example_features(i, ex, &ctx_pieces[ctx_of[i]], tok, cfg, special))
        .collect::<Result<_>>()?;
    let mut feats = Vec::new();
    let mut metas = Vec::new();
    for (f, m) in per_example.into_iter().flatten() {
        feats.push(f);
        metas.push(m);
    }
    Ok((feats, metas))
}

fn example_features(
    index: usize,
    ex: &SquadExample,
    ctx: &Pieces,
    tok: &Tokenizer,
    cfg: &SquadConfig,
    special: usize,
) -> Result<Vec<(Feature, SquadFeatureMeta)>> {
    let q = tok.pieces(ex.question.trim_start())?;
    let q_len = q.ids.len().min(cfg.max_query_len);
    let q_ids = &q.ids[..q_len];
    let window = cfg.max_seq_len.saturating_sub(q_len + special);
    if window == 0 || cfg.doc_stride >= window {
        return Err(Error::msg(format!(
            "SQuAD question {}: with max sequence length {} and a {q_len}-token question, \
             {window} context tokens fit per window, which must exceed the document stride {}",
            ex.id, cfg.max_seq_len, cfg.doc_stride
        )));
    }
    // Character span of the first answer, if any.
    let answer = match ex.is_impossible {
        true => None,
        false => ex
            .answers
            .first()
            .map(|a| (a.start, a.start + a.text.chars().count())),
    };
    let n = ctx.ids.len();
    let mut out = Vec::new();
    let mut start = 0usize;
    loop {
        let end = (start + window).min(n);
        let mut ids = Vec::with_capacity(q_len + end - start + special);
        let mut types = Vec::with_capacity(ids.capacity());
        let mut offsets = Vec::with_capacity(ids.capacity());
        ids.push(tok.cls_id());
        ids.extend_from_slice(q_ids);
        ids.push(tok.sep_id());
        types.resize(ids.len(), 0u8);
        offsets.resize(ids.len(), None);
        let ctx_first = ids.len();
        for t in start..end {
            ids.push(ctx.ids[t]);
            types.push(1);
            offsets.push(Some((ctx.offsets[t].0 as u32, ctx.offsets[t].1 as u32)));
        }
        ids.push(tok.sep_id());
        types.push(1);
        offsets.push(None);
        let (s, e) = match answer {
            Some((a0, a1)) if end > start => {
                let toks = &ctx.offsets[start..end];
                if toks[0].0 <= a0 && toks[toks.len() - 1].1 >= a1 {
                    let s = toks.iter().rposition(|o| o.0 <= a0).unwrap_or(0);
                    let e = toks
                        .iter()
                        .position(|o| o.1 >= a1)
                        .unwrap_or(toks.len() - 1);
                    ((ctx_first + s) as u32, (ctx_first + e.max(s)) as u32)
                } else {
                    (0, 0)
                }
            }
            _ => (0, 0),
        };
        out.push((
            Feature {
                input_ids: ids,
                token_type_ids: types,
                label: FeatureLabel::Span { start: s, end: e },
            },
            SquadFeatureMeta {
                example: index,
                offsets,
            },
        ));
        if end >= n {
            break;
        }
        start += window - cfg.doc_stride;
    }
    Ok(out)
}

/// Span decoding parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QaConfig {
    /// Start / end candidates kept per feature, and answers kept per example.
    pub n_best: usize,
    /// Longest answer in tokens.
    pub max_answer_len: usize,
    /// v2: answer "no answer" when `null score − best span score` exceeds this.
    pub null_threshold: f32,
    /// SQuAD v2 (questions may be unanswerable).
    pub v2: bool,
}

impl Default for QaConfig {
    fn default() -> Self {
        QaConfig {
            n_best: 20,
            max_answer_len: 30,
            null_threshold: 0.0,
            v2: false,
        }
    }
}

/// The predicted answer of one question.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SquadPrediction {
    pub id: String,
    /// The answer text cut from the original context (empty = no answer).
    pub text: String,
    /// Best span score (start + end logit), `None` when no span was valid.
    pub score: Option<f32>,
    /// v2: the smallest null score over the example's features minus the
    /// best span score.
    pub null_score_diff: Option<f32>,
}

/// Indices of the `k` largest values, largest first (ties: lower index first).
fn top_k(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Substring of `s` by character positions.
fn char_slice(s: &str, start: usize, end: usize) -> &str {
    let mut it = s
        .char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(s.len()));
    let b0 = it.nth(start).unwrap_or(s.len());
    let b1 = if end > start {
        it.nth(end - start - 1).unwrap_or(s.len())
    } else {
        b0
    };
    &s[b0..b1]
}

/// Turn per-feature start / end logits into one answer per example (Hugging
/// Face `postprocess_qa_predictions`): the `n_best` largest start and end
/// logits of each feature over its real tokens are paired; pairs outside the
/// context, with end < start or longer than `max_answer_len` tokens are
/// dropped; the best `n_best` by `start + end` are kept over all features of
/// the example. v2 also keeps the null score `start[0] + end[0]` (minimum over
/// features) and answers "" when it beats the best span by more than the
/// threshold. Examples without any valid span get "".
///
/// `start_logits[f]` / `end_logits[f]` belong to feature `f` (`metas[f]`) and
/// may be longer than the feature (padding is ignored).
pub fn squad_postprocess(
    examples: &[SquadExample],
    metas: &[SquadFeatureMeta],
    start_logits: &[Vec<f32>],
    end_logits: &[Vec<f32>],
    cfg: &QaConfig,
) -> Result<Vec<SquadPrediction>> {
    if start_logits.len() != metas.len() || end_logits.len() != metas.len() {
        return Err(Error::msg(format!(
            "SQuAD postprocessing: {} features but {} / {} logit rows",
            metas.len(),
            start_logits.len(),
            end_logits.len()
        )));
    }
    let mut by_example: Vec<Vec<usize>> = vec![Vec::new(); examples.len()];
    for (f, m) in metas.iter().enumerate() {
        let slot = by_example.get_mut(m.example).ok_or_else(|| {
            Error::msg(format!(
                "SQuAD postprocessing: feature {f} names example {} of {}",
                m.example,
                examples.len()
            ))
        })?;
        slot.push(f);
    }
    let mut out = Vec::with_capacity(examples.len());
    for (ex, feats) in examples.iter().zip(&by_example) {
        // (score, feature, start token, end token)
        let mut cands: Vec<(f32, usize, usize, usize)> = Vec::new();
        let mut null: Option<f32> = None;
        for &f in feats {
            let offs = &metas[f].offsets;
            let (sl, el) = (&start_logits[f], &end_logits[f]);
            if sl.len() < offs.len() || el.len() < offs.len() {
                return Err(Error::msg(format!(
                    "SQuAD postprocessing: feature {f} has {} tokens but {} / {} logits",
                    offs.len(),
                    sl.len(),
                    el.len()
                )));
            }
            let (sl, el) = (&sl[..offs.len()], &el[..offs.len()]);
            let fnull = sl[0] + el[0];
            if null.is_none_or(|n| n > fnull) {
                null = Some(fnull);
            }
            let ends = top_k(el, cfg.n_best);
            for s in top_k(sl, cfg.n_best) {
                for &e in &ends {
                    let (Some(_), Some(_)) = (offs[s], offs[e]) else {
                        continue;
                    };
                    if e < s || e - s + 1 > cfg.max_answer_len {
                        continue;
                    }
                    cands.push((sl[s] + el[e], f, s, e));
                }
            }
        }
        cands.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then((a.1, a.2, a.3).cmp(&(b.1, b.2, b.3)))
        });
        cands.truncate(cfg.n_best);
        let best = cands.first().map(|&(score, f, s, e)| {
            let (c0, _) = metas[f].offsets[s].unwrap_or((0, 0));
            let (_, c1) = metas[f].offsets[e].unwrap_or((0, 0));
            (
                score,
                char_slice(&ex.context, c0 as usize, c1 as usize).to_string(),
            )
        });
        let (text, score, diff) = match (best, cfg.v2) {
            (None, _) => (String::new(), None, None),
            (Some((score, text)), false) => (text, Some(score), None),
            (Some((score, text)), true) => {
                let diff = null.unwrap_or(f32::NEG_INFINITY) - score;
                let text = if diff > cfg.null_threshold {
                    String::new()
                } else {
                    text
                };
                (text, Some(score), Some(diff))
            }
        };
        out.push(SquadPrediction {
            id: ex.id.clone(),
            text,
            score,
            null_score_diff: diff,
        });
    }
    Ok(out)
}

/// Official SQuAD answer normalisation: lower-case, drop ASCII punctuation,
/// drop the articles a / an / the (as whole words), collapse whitespace.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    // Replace every maximal run of word characters equal to an article by a space
    // (Python `re.sub(r"\b(a|an|the)\b", " ", text)`).
    let mut out = String::with_capacity(no_punct.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if matches!(word.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in no_punct.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn f1_one(pred: &str, gold: &str) -> f64 {
    let p = normalize_answer(pred);
    let g = normalize_answer(gold);
    let pt: Vec<&str> = p.split_whitespace().collect();
    let gt: Vec<&str> = g.split_whitespace().collect();
    if pt.is_empty() || gt.is_empty() {
        return (pt == gt) as u8 as f64;
    }
    let mut counts: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    for t in &gt {
        *counts.entry(t).or_default() += 1;
    }
    let mut same = 0i64;
    for t in &pt {
        if let Some(c) = counts.get_mut(t) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / pt.len() as f64;
    let recall = same as f64 / gt.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Exact match and F1 of one prediction: the maximum over the gold answers
/// (no gold answers = the empty answer).
pub fn squad_em_f1(pred: &str, golds: &[&str]) -> (f64, f64) {
    let golds: &[&str] = if golds.is_empty() { &[""] } else { golds };
    let p = normalize_answer(pred);
    let em = golds.iter().any(|g| normalize_answer(g) == p) as u8 as f64;
    let f1 = golds.iter().map(|g| f1_one(pred, g)).fold(0.0, f64::max);
    (em, f1)
}

/// SQuAD scores as fractions in [0, 1] (the official scripts print ×100).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SquadScores {
    pub exact: f64,
    pub f1: f64,
    pub total: usize,
    /// v2: (exact, f1, count) over answerable questions.
    pub has_ans: Option<(f64, f64, usize)>,
    /// v2: (exact, f1, count) over unanswerable questions.
    pub no_ans: Option<(f64, f64, usize)>,
}

/// The official evaluation (v1.1 script for `v2 = false`, v2.0 script
/// otherwise: gold answers that normalise to "" are dropped, and a question
/// without gold answers expects ""). Questions without a prediction score 0.
pub fn squad_evaluate(
    examples: &[SquadExample],
    predictions: &[SquadPrediction],
    v2: bool,
) -> SquadScores {
    let preds: std::collections::HashMap<&str, &str> = predictions
        .iter()
        .map(|p| (p.id.as_str(), p.text.as_str()))
        .collect();
    let (mut em, mut f1) = (0.0, 0.0);
    let mut has = (0.0, 0.0, 0usize);
    let mut no = (0.0, 0.0, 0usize);
    for ex in examples {
        let golds: Vec<&str> = ex
            .answers
            .iter()
            .map(|a| a.text.as_str())
            .filter(|g| !v2 || !normalize_answer(g).is_empty())
            .collect();
        let (e, f) = match preds.get(ex.id.as_str()) {
            Some(p) => squad_em_f1(p, &golds),
            None => (0.0, 0.0),
        };
        em += e;
        f1 += f;
        let slot = if golds.is_empty() { &mut no } else { &mut has };
        slot.0 += e;
        slot.1 += f;
        slot.2 += 1;
    }
    let n = examples.len().max(1) as f64;
    let part = |(e, f, c): (f64, f64, usize)| (e / c.max(1) as f64, f / c.max(1) as f64, c);
    SquadScores {
        exact: em / n,
        f1: f1 / n,
        total: examples.len(),
        has_ans: v2.then(|| part(has)),
        no_ans: v2.then(|| part(no)),
    }
}
