//! Generic CSV / TSV / JSONL files with named text and label columns.
//!
//! CSV and TSV have a header row and standard `"` quoting (RFC 4180, fields
//! may span lines); JSONL has one JSON object per non-empty line. A UTF-8 BOM
//! at the start is ignored. Labels are resolved by a [`LabelSpec`]:
//! strings become class ids through a label vocabulary (sorted, or given),
//! integers can be used as class ids directly, or values are regression
//! targets.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::glue::{csv_error, open_lf};
use super::{Target, TaskKind, TextData, TextExample};
use crate::error::{Error, Result};

/// File format of a generic table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    Csv,
    Tsv,
    Jsonl,
}

impl TableFormat {
    /// From a file extension (`csv`, `tsv`, `jsonl` / `json`).
    pub fn from_path(path: &Path) -> Option<TableFormat> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(TableFormat::Csv),
            "tsv" | "tab" => Some(TableFormat::Tsv),
            "jsonl" | "json" | "ndjson" => Some(TableFormat::Jsonl),
            _ => None,
        }
    }
}

/// Which columns hold the text(s) and the label.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableSpec {
    pub format: TableFormat,
    pub text_a: String,
    /// Second text of a pair.
    pub text_b: Option<String>,
    /// Label column; `None` reads the file unlabelled.
    pub label: Option<String>,
}

/// How label values become targets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelSpec {
    /// Class names = the sorted distinct values of the training file
    /// (numerically when all are integers, else by string).
    #[default]
    Auto,
    /// Class names given explicitly (id = position); other values are errors.
    Names(Vec<String>),
    /// Values are integer class ids `0..n` (n = largest id in training + 1).
    Integer,
    /// Values are real numbers (one-output regression).
    Regression,
}

/// One row of a table before label resolution.
#[derive(Clone, Debug, PartialEq)]
pub struct RawRow {
    pub text_a: String,
    pub text_b: Option<String>,
    pub label: Option<String>,
    /// 1-based line where the row starts.
    pub line: usize,
}

/// Read a CSV / TSV / JSONL file. When `spec.label` is set and
/// `require_label` is false, a file without that column is read unlabelled
/// (test files); otherwise a missing column is an error.
pub fn read_table(
    path: impl AsRef<Path>,
    spec: &TableSpec,
    require_label: bool,
) -> Result<Vec<RawRow>> {
    let path = path.as_ref();
    match spec.format {
        TableFormat::Csv => read_delimited(path, spec, b',', require_label),
        TableFormat::Tsv => read_delimited(path, spec, b'\t', require_label),
        TableFormat::Jsonl => read_jsonl(path, spec, require_label),
    }
}

/// Checks the `"` quoting of a CSV / TSV file before it is parsed. Quoted
/// fields may span lines (RFC 4180), so a quote that is never closed would
/// otherwise swallow every following row into one field. Refused, naming the
/// line where the quote opened: a quoted field still open at the end of the
/// file, and a closing quote followed by anything but the delimiter or the
/// end of the line (what a stray or missing quote leaves behind).
pub fn check_quotes(path: &Path, bytes: &[u8], delim: u8) -> Result<()> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let mut line = 1usize;
    let mut field_start = true;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'"' && field_start {
            let open = line;
            i += 1;
            loop {
                match bytes.get(i) {
                    None => {
                        return Err(Error::data(
                            path,
                            open,
                            "unterminated quote: the quoted field opened on this line runs to the end of the file",
                        ))
                    }
                    Some(b'"') if bytes.get(i + 1) == Some(&b'"') => i += 2,
                    Some(b'"') => {
                        i += 1;
                        match bytes.get(i) {
                            None | Some(b'\n') | Some(b'\r') => {}
                            Some(&d) if d == delim => {}
                            Some(&other) => {
                                return Err(Error::data(
                                    path,
                                    open,
                                    format!(
                                        "the quoted field opened on this line closes on line {line} and is \
                                         followed by `{}` instead of the delimiter or the end of the line \
                                         (a missing or stray quote?)",
                                        (other as char).escape_default()
                                    ),
                                ))
                            }
                        }
                        break;
                    }
                    Some(b'\n') => {
                        line += 1;
                        i += 1;
                    }
                    Some(_) => i += 1,
                }
            }
            field_start = false;
            continue;
        }
        if c == delim {
            field_start = true;
        } else if c == b'\n' {
            line += 1;
            field_start = true;
        } else if c != b'\r' {
            field_start = false;
        }
        i += 1;
    }
    Ok(())
}

fn read_delimited(
    path: &Path,
    spec: &TableSpec,
    delim: u8,
    require_label: bool,
) -> Result<Vec<RawRow>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    check_quotes(path, &bytes, delim)?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delim)
        .has_headers(true)
        .flexible(true)
        .from_reader(open_lf(path)?);
    let header = reader.headers().map_err(|e| csv_error(path, e))?.clone();
    if header.is_empty() {
        return Err(Error::data(
            path,
            1,
            "empty file (a header row is required)",
        ));
    }
    let find = |name: &str| header.iter().position(|h| h.trim() == name);
    let missing = |name: &str| {
        Error::data(
            path,
            1,
            format!(
                "no column `{name}` in the header (found: {})",
                header.iter().collect::<Vec<_>>().join(", ")
            ),
        )
    };
    let a = find(&spec.text_a).ok_or_else(|| missing(&spec.text_a))?;
    let b = match &spec.text_b {
        Some(n) => Some(find(n).ok_or_else(|| missing(n))?),
        None => None,
    };
    let l = match &spec.label {
        Some(n) => match find(n) {
            Some(i) => Some(i),
            None if require_label => return Err(missing(n)),
            None => None,
        },
        None => None,
    };
    let needed = 1 + a.max(b.unwrap_or(0)).max(l.unwrap_or(0));
    let mut rows = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| csv_error(path, e))?;
        let line = rec.position().map_or(0, |p| p.line() as usize);
        if rec.len() < needed || rec.len() > header.len() {
            return Err(Error::data(
                path,
                line,
                format!(
                    "expected {} fields (as in the header), found {}",
                    header.len(),
                    rec.len()
                ),
            ));
        }
        rows.push(RawRow {
            text_a: rec[a].to_string(),
            text_b: b.map(|i| rec[i].to_string()),
            label: l.map(|i| rec[i].trim().to_string()),
            line,
        });
    }
    Ok(rows)
}

fn read_jsonl(path: &Path, spec: &TableSpec, require_label: bool) -> Result<Vec<RawRow>> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&text);
    let mut rows = Vec::new();
    let mut labeled: Option<bool> = None;
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let lineno = i + 1;
        let line =
            std::str::from_utf8(line).map_err(|_| Error::data(path, lineno, "invalid UTF-8"))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::data(path, lineno, format!("malformed JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::data(path, lineno, "expected a JSON object"))?;
        let text_field = |name: &str| -> Result<String> {
            match obj.get(name) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(Error::data(
                    path,
                    lineno,
                    format!("field `{name}` is not a string: {other}"),
                )),
                None => Err(Error::data(path, lineno, format!("missing field `{name}`"))),
            }
        };
        let text_a = text_field(&spec.text_a)?;
        let text_b = spec.text_b.as_deref().map(text_field).transpose()?;
        let label = match &spec.label {
            None => None,
            Some(name) => match obj.get(name) {
                None | Some(serde_json::Value::Null) => {
                    if require_label {
                        return Err(Error::data(
                            path,
                            lineno,
                            format!("missing label field `{name}`"),
                        ));
                    }
                    None
                }
                Some(serde_json::Value::String(s)) => Some(s.trim().to_string()),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    Some(v.to_string())
                }
                Some(other) => {
                    return Err(Error::data(
                        path,
                        lineno,
                        format!("label `{name}` is not a string or number: {other}"),
                    ))
                }
            },
        };
        match labeled {
            None => labeled = Some(label.is_some()),
            Some(l) if l != label.is_some() => {
                return Err(Error::data(
                    path,
                    lineno,
                    "some rows have a label and some do not",
                ));
            }
            _ => {}
        }
        rows.push(RawRow {
            text_a,
            text_b,
            label,
            line: lineno,
        });
    }
    Ok(rows)
}

/// Sorted distinct values: numerically when every value is an integer.
fn sorted_vocab(rows: &[RawRow]) -> Vec<String> {
    let set: BTreeSet<&str> = rows.iter().filter_map(|r| r.label.as_deref()).collect();
    let mut v: Vec<String> = set.into_iter().map(str::to_string).collect();
    if v.iter().all(|s| s.parse::<i64>().is_ok()) {
        v.sort_by_key(|s| s.parse::<i64>().unwrap_or(0));
    }
    v
}

impl LabelSpec {
    /// The task kind and class names this spec gives for a training file.
    pub fn vocabulary(&self, train: &[RawRow]) -> Result<(TaskKind, Vec<String>)> {
        let names = match self {
            LabelSpec::Regression => return Ok((TaskKind::Regression, Vec::new())),
            LabelSpec::Auto => sorted_vocab(train),
            LabelSpec::Names(n) => n.clone(),
            LabelSpec::Integer => {
                let max = train
                    .iter()
                    .filter_map(|r| r.label.as_deref()?.parse::<u32>().ok())
                    .max()
                    .unwrap_or(0);
                (0..=max).map(|i| i.to_string()).collect()
            }
        };
        if names.len() < 2 {
            return Err(Error::msg(format!(
                "a classification task needs at least 2 classes, found {} ({})",
                names.len(),
                names.join(", ")
            )));
        }
        Ok((
            TaskKind::Classification {
                num_labels: names.len(),
            },
            names,
        ))
    }

    /// Resolve the rows of one file against the class names of the task.
    pub fn resolve(
        &self,
        path: &Path,
        rows: Vec<RawRow>,
        kind: &TaskKind,
        names: &[String],
    ) -> Result<TextData> {
        let mut examples = Vec::with_capacity(rows.len());
        for r in rows {
            let label = match &r.label {
                None => None,
                Some(v) if v.is_empty() => return Err(Error::data(path, r.line, "empty label")),
                Some(v) => Some(match self {
                    LabelSpec::Regression => match v.parse::<f32>() {
                        Ok(x) if x.is_finite() => Target::Value(x),
                        _ => {
                            return Err(Error::data(
                                path,
                                r.line,
                                format!("label `{v}` is not a number"),
                            ))
                        }
                    },
                    LabelSpec::Integer => match v.parse::<u32>() {
                        Ok(x) if (x as usize) < names.len() => Target::Class(x),
                        _ => {
                            return Err(Error::data(
                                path,
                                r.line,
                                format!("label `{v}` is not a class id 0..{}", names.len() - 1),
                            ))
                        }
                    },
                    LabelSpec::Auto | LabelSpec::Names(_) => {
                        match names.iter().position(|n| n == v) {
                            Some(i) => Target::Class(i as u32),
                            None => {
                                return Err(Error::data(
                                    path,
                                    r.line,
                                    format!("unknown label `{v}` (classes: {})", names.join(", ")),
                                ))
                            }
                        }
                    }
                }),
            };
            examples.push(TextExample {
                text_a: r.text_a,
                text_b: r.text_b,
                label,
                line: r.line,
            });
        }
        Ok(TextData {
            source: path.to_path_buf(),
            kind: kind.clone(),
            label_names: names.to_vec(),
            examples,
            skipped: Vec::new(),
        })
    }
}
