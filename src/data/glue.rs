//! The nine GLUE tasks as distributed (tab-separated, not quoted: `"` is an
//! ordinary character, as Python's `csv.QUOTE_NONE`).
//!
//! | task | text A | text B | label | label names (id order, as HF `glue`) |
//! |---|---|---|---|---|
//! | CoLA | col 3 (no header) | – | col 1 | unacceptable, acceptable |
//! | SST-2 | `sentence` | – | `label` | negative, positive |
//! | MRPC | `#1 String` | `#2 String` | `Quality` | not_equivalent, equivalent |
//! | QQP | `question1` | `question2` | `is_duplicate` | not_duplicate, duplicate |
//! | STS-B | `sentence1` | `sentence2` | `score` | regression |
//! | MNLI | `sentence1` | `sentence2` | `gold_label` | entailment, neutral, contradiction |
//! | QNLI | `question` | `sentence` | `label` | entailment, not_entailment |
//! | RTE | `sentence1` | `sentence2` | `label` | entailment, not_entailment |
//! | WNLI | `sentence1` | `sentence2` | `label` | not_entailment, entailment |
//!
//! CoLA train/dev files have no header (source, label, original label,
//! sentence); its test file has the header `index  sentence`. Files whose
//! header lacks the label column (test files) are read unlabelled.

use std::io::Read;
use std::path::Path;

use super::{Target, TaskKind, TextData, TextExample};
use crate::error::{Error, Result};

/// One of the nine GLUE tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GlueTask {
    Cola,
    Sst2,
    Mrpc,
    Qqp,
    Stsb,
    Mnli,
    Qnli,
    Rte,
    Wnli,
}

/// How a task's label column is written.
#[derive(Clone, Copy)]
enum LabelCol {
    /// The class id as an integer.
    Index,
    /// The class name.
    Name,
    /// A real value.
    Score,
}

impl GlueTask {
    pub const ALL: [GlueTask; 9] = [
        GlueTask::Cola,
        GlueTask::Sst2,
        GlueTask::Mrpc,
        GlueTask::Qqp,
        GlueTask::Stsb,
        GlueTask::Mnli,
        GlueTask::Qnli,
        GlueTask::Rte,
        GlueTask::Wnli,
    ];

    /// Lower-case name (`cola`, `sst2`, …).
    pub fn name(self) -> &'static str {
        match self {
            GlueTask::Cola => "cola",
            GlueTask::Sst2 => "sst2",
            GlueTask::Mrpc => "mrpc",
            GlueTask::Qqp => "qqp",
            GlueTask::Stsb => "stsb",
            GlueTask::Mnli => "mnli",
            GlueTask::Qnli => "qnli",
            GlueTask::Rte => "rte",
            GlueTask::Wnli => "wnli",
        }
    }

    /// Parse a task name (case-insensitive; `sst-2`, `sts-b` accepted).
    pub fn from_name(name: &str) -> Option<GlueTask> {
        let n: String = name
            .to_ascii_lowercase()
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect();
        GlueTask::ALL.into_iter().find(|t| t.name() == n)
    }

    /// Class names in id order (empty for STS-B).
    pub fn label_names(self) -> &'static [&'static str] {
        match self {
            GlueTask::Cola => &["unacceptable", "acceptable"],
            GlueTask::Sst2 => &["negative", "positive"],
            GlueTask::Mrpc => &["not_equivalent", "equivalent"],
            GlueTask::Qqp => &["not_duplicate", "duplicate"],
            GlueTask::Stsb => &[],
            GlueTask::Mnli => &["entailment", "neutral", "contradiction"],
            GlueTask::Qnli | GlueTask::Rte => &["entailment", "not_entailment"],
            GlueTask::Wnli => &["not_entailment", "entailment"],
        }
    }

    pub fn kind(self) -> TaskKind {
        match self {
            GlueTask::Stsb => TaskKind::Regression,
            t => TaskKind::Classification {
                num_labels: t.label_names().len(),
            },
        }
    }

    /// Whether examples are sentence pairs.
    pub fn is_pair(self) -> bool {
        !matches!(self, GlueTask::Cola | GlueTask::Sst2)
    }

    /// File names in a GLUE task directory: train, dev sets (MNLI: matched,
    /// mismatched), test sets.
    pub fn files(
        self,
    ) -> (
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
    ) {
        match self {
            GlueTask::Mnli => (
                "train.tsv",
                &["dev_matched.tsv", "dev_mismatched.tsv"],
                &["test_matched.tsv", "test_mismatched.tsv"],
            ),
            _ => ("train.tsv", &["dev.tsv"], &["test.tsv"]),
        }
    }

    fn columns(self) -> (&'static str, Option<&'static str>, &'static str, LabelCol) {
        match self {
            GlueTask::Cola => ("sentence", None, "label", LabelCol::Index),
            GlueTask::Sst2 => ("sentence", None, "label", LabelCol::Index),
            GlueTask::Mrpc => ("#1 String", Some("#2 String"), "Quality", LabelCol::Index),
            GlueTask::Qqp => (
                "question1",
                Some("question2"),
                "is_duplicate",
                LabelCol::Index,
            ),
            GlueTask::Stsb => ("sentence1", Some("sentence2"), "score", LabelCol::Score),
            GlueTask::Mnli => ("sentence1", Some("sentence2"), "gold_label", LabelCol::Name),
            GlueTask::Qnli => ("question", Some("sentence"), "label", LabelCol::Name),
            GlueTask::Rte => ("sentence1", Some("sentence2"), "label", LabelCol::Name),
            GlueTask::Wnli => ("sentence1", Some("sentence2"), "label", LabelCol::Index),
        }
    }
}

impl std::fmt::Display for GlueTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Column positions of one file.
struct Layout {
    text_a: usize,
    text_b: Option<usize>,
    label: Option<usize>,
    /// Fields a row must have.
    needed: usize,
}

fn find_col(header: &csv::StringRecord, name: &str) -> Option<usize> {
    header.iter().position(|h| h.trim() == name)
}

/// Read a GLUE TSV file of `task`. With `lenient`, rows with too few fields
/// are skipped (their lines listed in [`TextData::skipped`], as HF `glue`
/// drops "corrupted rows"); otherwise they are errors. Bad labels are always
/// errors naming file and line.
pub fn read_glue(task: GlueTask, path: impl AsRef<Path>, lenient: bool) -> Result<TextData> {
    let path = path.as_ref();
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .quoting(false)
        .has_headers(false)
        .flexible(true)
        .from_reader(open_lf(path)?);
    let (col_a, col_b, col_label, label_col) = task.columns();
    let mut layout: Option<Layout> = None;
    // Fields in the header, when the file has one (extra fields on a row are
    // refused like missing ones).
    let mut header_len: Option<usize> = None;
    let mut examples = Vec::new();
    let mut skipped = Vec::new();
    let names = task.label_names();
    for rec in reader.records() {
        let rec = rec.map_err(|e| csv_error(path, e))?;
        let line = rec.position().map_or(0, |p| p.line() as usize);
        if layout.is_none() {
            let first = rec.get(0).unwrap_or("").trim();
            if task == GlueTask::Cola && first != "index" {
                // No header: source, label, original label, sentence.
                layout = Some(Layout {
                    text_a: 3,
                    text_b: None,
                    label: Some(1),
                    needed: 4,
                });
            } else {
                let need = |name: &str| {
                    find_col(&rec, name).ok_or_else(|| {
                        Error::data(
                            path,
                            line,
                            format!(
                                "{task}: header lacks the column `{name}` (found: {})",
                                rec.iter().collect::<Vec<_>>().join(", ")
                            ),
                        )
                    })
                };
                let text_a = need(col_a)?;
                let text_b = col_b.map(need).transpose()?;
                let label = find_col(&rec, col_label);
                let needed = 1 + text_a.max(text_b.unwrap_or(0)).max(label.unwrap_or(0));
                layout = Some(Layout {
                    text_a,
                    text_b,
                    label,
                    needed,
                });
                header_len = Some(rec.len());
                continue;
            }
        }
        let Some(lay) = layout.as_ref() else { continue };
        if rec.len() == 1 && rec.get(0).is_some_and(|f| f.trim().is_empty()) {
            continue; // blank line
        }
        if let Some(h) = header_len.filter(|&h| rec.len() > h) {
            if lenient {
                skipped.push(line);
                continue;
            }
            return Err(Error::data(
                path,
                line,
                format!(
                    "{task}: {} tab-separated fields, more than the header's {h}",
                    rec.len()
                ),
            ));
        }
        if rec.len() < lay.needed {
            if lenient {
                skipped.push(line);
                continue;
            }
            return Err(Error::data(
                path,
                line,
                format!(
                    "{task}: expected at least {} tab-separated fields, found {}",
                    lay.needed,
                    rec.len()
                ),
            ));
        }
        let text_a = rec[lay.text_a].to_string();
        let text_b = lay.text_b.map(|i| rec[i].to_string());
        let label = match lay.label {
            None => None,
            Some(i) => Some(
                parse_label(&rec[i], label_col, names)
                    .map_err(|m| Error::data(path, line, format!("{task}: {m}")))?,
            ),
        };
        examples.push(TextExample {
            text_a,
            text_b,
            label,
            line,
        });
    }
    if layout.is_none() {
        return Err(Error::data(path, 1, format!("{task}: empty file")));
    }
    Ok(TextData {
        source: path.to_path_buf(),
        kind: task.kind(),
        label_names: names.iter().map(|s| s.to_string()).collect(),
        examples,
        skipped,
    })
}

fn parse_label(field: &str, col: LabelCol, names: &[&str]) -> std::result::Result<Target, String> {
    let f = field.trim();
    match col {
        LabelCol::Index => match f.parse::<u32>() {
            Ok(v) if (v as usize) < names.len() => Ok(Target::Class(v)),
            _ => Err(format!(
                "label `{f}` is not a class id 0..{}",
                names.len() - 1
            )),
        },
        LabelCol::Name => names
            .iter()
            .position(|n| *n == f)
            .map(|i| Target::Class(i as u32))
            .ok_or_else(|| format!("unknown label `{f}` (expected one of {})", names.join(", "))),
        LabelCol::Score => match f.parse::<f32>() {
            Ok(v) if v.is_finite() => Ok(Target::Value(v)),
            _ => Err(format!("score `{f}` is not a number")),
        },
    }
}

/// A `csv` error as a data error with the line it happened on.
pub(crate) fn csv_error(path: &Path, e: csv::Error) -> Error {
    let line = e.position().map_or(0, |p| p.line() as usize);
    match e.into_kind() {
        csv::ErrorKind::Io(io) => Error::io(path, io),
        csv::ErrorKind::Utf8 { pos, err } => Error::data(
            path,
            pos.map_or(line, |p| p.line() as usize),
            format!("invalid UTF-8 ({err})"),
        ),
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => Error::data(
            path,
            pos.map_or(line, |p| p.line() as usize),
            format!("expected {expected_len} fields, found {len}"),
        ),
        other => Error::data(path, line, format!("{other:?}")),
    }
}

/// Open a text file for the `csv` reader with CRLF turned into LF, so that
/// the reader's line numbers are right for Windows line endings too (it
/// counts `\n` bytes, and after a record ended by `\r` the `\n` is only
/// consumed with the next record). A CRLF inside a quoted field also becomes LF.
pub(crate) fn open_lf(path: &Path) -> Result<CrlfToLf<std::fs::File>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    Ok(CrlfToLf {
        inner: f,
        cr: false,
        buf: vec![0; 64 * 1024],
        start: 0,
        end: 0,
    })
}

/// A reader that drops every `\r` directly followed by `\n`.
pub(crate) struct CrlfToLf<R> {
    inner: R,
    /// A `\r` was held back at the end of the previous chunk.
    cr: bool,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<R: Read> Read for CrlfToLf<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.start == self.end {
                let n = self.inner.read(&mut self.buf)?;
                if n == 0 {
                    if self.cr {
                        self.cr = false;
                        out[0] = b'\r';
                        return Ok(1);
                    }
                    return Ok(0);
                }
                self.start = 0;
                self.end = n;
            }
            let mut w = 0;
            if self.cr {
                // The held `\r` is dropped before a `\n`, kept otherwise.
                self.cr = false;
                if self.buf[self.start] != b'\n' {
                    out[w] = b'\r';
                    w += 1;
                }
            }
            while self.start < self.end && w < out.len() {
                let b = self.buf[self.start];
                if b == b'\r' {
                    match self.buf[self.start + 1..self.end].first() {
                        Some(b'\n') => {
                            self.start += 1;
                            continue;
                        }
                        None => {
                            self.cr = true;
                            self.start += 1;
                            break;
                        }
                        Some(_) => {}
                    }
                }
                out[w] = b;
                w += 1;
                self.start += 1;
            }
            if w > 0 {
                return Ok(w);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out its bytes `chunk` at a time, so `\r\n` straddles reads.
    struct Trickle<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.chunk.min(self.data.len()).min(out.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn crlf_to_lf_across_chunk_borders() {
        let input = b"a\r\nb\rc\r\n\r\nd\r";
        for chunk in 1..=input.len() {
            for out_len in [1, 2, 64] {
                let mut r = CrlfToLf {
                    inner: Trickle { data: input, chunk },
                    cr: false,
                    buf: vec![0; chunk],
                    start: 0,
                    end: 0,
                };
                let mut got = Vec::new();
                let mut buf = vec![0; out_len];
                loop {
                    let n = r.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                assert_eq!(got, b"a\nb\rc\n\nd\r", "chunk {chunk}, out {out_len}");
            }
        }
    }
}
