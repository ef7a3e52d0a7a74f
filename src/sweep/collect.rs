//! The results table of a sweep: one cell per (recipe [+ override], target
//! kept ratio), mean ± sd over its seeds, from the runs' `summary.json`.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::io::write_atomic;
use crate::sweep::{ratio_label, read_record, RunRecord};

/// One row of the table.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Cell {
    /// Recipe, with `-<tag>` for an override.
    pub recipe: String,
    pub target_kept_ratio: Option<f64>,
    pub metric: String,
    /// Finished seeds of the cell.
    pub seeds: Vec<u64>,
    pub mean: f64,
    /// Sample standard deviation over seeds (n − 1); `None` for one seed.
    pub sd: Option<f64>,
    /// Mean measured kept ratio (1 for dense fine-tuning).
    pub kept_ratio: f64,
    pub train_seconds: f64,
    pub samples_per_second: f64,
    /// Runs of the cell without a finished summary.
    pub missing: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Table {
    pub cells: Vec<Cell>,
}

/// (metric name, value, kept ratio, train seconds, samples/s) of a summary.
fn read_summary(path: &Path, want: Option<&str>) -> Result<Option<(String, f64, f64, f64, f64)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    if v.get("stopped").and_then(Value::as_bool) == Some(true) {
        return Ok(None);
    }
    // compress: dev_metrics + main_metric; finetune: final_eval {metrics, main}.
    let (metrics, main) = match v.get("dev_metrics") {
        Some(m) => {
            let main_value = v.get("main_metric").and_then(Value::as_f64);
            let list = pairs(m);
            let main = list
                .iter()
                .find(|(_, x)| Some(*x) == main_value)
                .map(|(k, _)| k.clone());
            (list, main)
        }
        None => {
            let fe = v.get("final_eval").cloned().unwrap_or(Value::Null);
            let list = fe.get("metrics").map(pairs).unwrap_or_default();
            let main = fe.get("main").and_then(Value::as_str).map(str::to_string);
            (list, main)
        }
    };
    let name = match want
        .map(str::to_string)
        .or(main)
        .or_else(|| metrics.first().map(|m| m.0.clone()))
    {
        Some(n) => n,
        None => return Err(Error::msg(format!("{}: no dev metrics", path.display()))),
    };
    let value = metrics
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, x)| *x)
        .ok_or_else(|| {
            Error::msg(format!(
                "{}: no metric '{name}' (it has {})",
                path.display(),
                metrics
                    .iter()
                    .map(|m| m.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let f = |k: &str| v.get(k).and_then(Value::as_f64);
    Ok(Some((
        name,
        value,
        f("kept_ratio").unwrap_or(1.0),
        f("train_seconds").unwrap_or(0.0),
        f("samples_per_second").unwrap_or(0.0),
    )))
}

/// `[["accuracy", 0.9], …]` or `{"accuracy": 0.9}` as pairs.
fn pairs(v: &Value) -> Vec<(String, f64)> {
    match v {
        Value::Array(a) => a
            .iter()
            .filter_map(|p| {
                let p = p.as_array()?;
                Some((p.first()?.as_str()?.to_string(), p.get(1)?.as_f64()?))
            })
            .collect(),
        Value::Object(m) => m
            .iter()
            .filter_map(|(k, x)| Some((k.clone(), x.as_f64()?)))
            .collect(),
        _ => Vec::new(),
    }
}

fn mean_sd(x: &[f64]) -> (f64, Option<f64>) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    if x.len() < 2 {
        return (mean, None);
    }
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
    (mean, Some(var.sqrt()))
}

/// Reads every `logs/*.json` record under `root` with its run's summary.
pub fn records(root: &Path) -> Result<Vec<RunRecord>> {
    let logs = root.join("logs");
    let entries = std::fs::read_dir(&logs).map_err(|e| {
        Error::msg(format!(
            "{}: not a sweep root (no readable logs/ folder: {e})",
            root.display()
        ))
    })?;
    let mut recs = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) == Some("json") {
            recs.push(read_record(&p)?);
        }
    }
    recs.sort_by_key(|r| r.run.index);
    Ok(recs)
}

/// The table of the runs recorded under `root`.
pub fn collect(root: &Path) -> Result<Table> {
    let recs = records(root)?;
    if recs.is_empty() {
        return Err(Error::msg(format!(
            "{}: no run records in logs/ (nothing ran yet)",
            root.display()
        )));
    }
    struct Acc {
        recipe: String,
        target: Option<f64>,
        metric: Option<String>,
        rows: Vec<(u64, f64, f64, f64, f64)>,
        missing: Vec<String>,
    }
    let mut cells: Vec<Acc> = Vec::new();
    for r in &recs {
        let label = match &r.run.tag {
            Some(t) => format!("{}-{t}", r.run.recipe),
            None => r.run.recipe.clone(),
        };
        let i = match cells.iter().position(|c| {
            c.recipe == label && c.target.map(f64::to_bits) == r.run.kept_ratio.map(f64::to_bits)
        }) {
            Some(i) => i,
            None => {
                cells.push(Acc {
                    recipe: label,
                    target: r.run.kept_ratio,
                    metric: None,
                    rows: Vec::new(),
                    missing: Vec::new(),
                });
                cells.len() - 1
            }
        };
        let summary = r.run.output.join("summary.json");
        let got = if summary.is_file() {
            read_summary(&summary, r.run.metric.as_deref())?
        } else {
            None
        };
        let c = &mut cells[i];
        match got {
            Some((name, v, kept, secs, sps)) => {
                if let Some(m) = &c.metric {
                    if *m != name {
                        return Err(Error::msg(format!(
                            "{}: metric '{name}' but the other seeds of {} have '{m}' (set \
                             `metric` in the sweep file)",
                            summary.display(),
                            c.recipe
                        )));
                    }
                }
                c.metric = Some(name);
                c.rows.push((r.run.seed, v, kept, secs, sps));
            }
            None => c.missing.push(r.run.name.clone()),
        }
    }
    let cells = cells
        .into_iter()
        .map(|c| {
            let col =
                |k: usize| -> Vec<f64> { c.rows.iter().map(|r| [r.1, r.2, r.3, r.4][k]).collect() };
            let (mean, sd) = if c.rows.is_empty() {
                (f64::NAN, None)
            } else {
                mean_sd(&col(0))
            };
            let avg = |k: usize| {
                if c.rows.is_empty() {
                    f64::NAN
                } else {
                    mean_sd(&col(k)).0
                }
            };
            Cell {
                recipe: c.recipe,
                target_kept_ratio: c.target,
                metric: c.metric.unwrap_or_default(),
                seeds: c.rows.iter().map(|r| r.0).collect(),
                mean,
                sd,
                kept_ratio: avg(1),
                train_seconds: avg(2),
                samples_per_second: avg(3),
                missing: c.missing,
            }
        })
        .collect();
    Ok(Table { cells })
}

impl Table {
    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "| recipe | target kept | kept | metric | mean ± sd | seeds | train s | samples/s |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for c in &self.cells {
            let target = c
                .target_kept_ratio
                .map(ratio_label)
                .unwrap_or_else(|| "1 (dense)".into());
            let value = if c.seeds.is_empty() {
                "–".to_string()
            } else {
                match c.sd {
                    Some(sd) => format!("{:.4} ± {sd:.4}", c.mean),
                    None => format!("{:.4}", c.mean),
                }
            };
            let n = c.seeds.len();
            let seeds = if c.missing.is_empty() {
                n.to_string()
            } else {
                format!("{n} of {}", n + c.missing.len())
            };
            let num = |x: f64, d: usize| {
                if x.is_nan() {
                    "–".into()
                } else {
                    format!("{x:.d$}")
                }
            };
            s.push_str(&format!(
                "| {} | {target} | {} | {} | {value} | {seeds} | {} | {} |\n",
                c.recipe,
                num(c.kept_ratio, 4),
                if c.metric.is_empty() {
                    "–"
                } else {
                    &c.metric
                },
                num(c.train_seconds, 1),
                num(c.samples_per_second, 1)
            ));
        }
        let missing: Vec<&str> = self
            .cells
            .iter()
            .flat_map(|c| c.missing.iter().map(String::as_str))
            .collect();
        if !missing.is_empty() {
            s.push_str(&format!("\nNot finished: {}\n", missing.join(", ")));
        }
        s
    }

    pub fn json_lines(&self) -> Result<String> {
        let mut s = String::new();
        for c in &self.cells {
            s.push_str(&serde_json::to_string(c)?);
            s.push('\n');
        }
        Ok(s)
    }

    /// Writes `results.md` and `results.jsonl` under `root`; returns their paths.
    pub fn write(&self, root: &Path) -> Result<(PathBuf, PathBuf)> {
        let md = root.join("results.md");
        let jl = root.join("results.jsonl");
        write_atomic(&md, self.markdown().as_bytes())?;
        write_atomic(&jl, self.json_lines()?.as_bytes())?;
        Ok((md, jl))
    }
}
