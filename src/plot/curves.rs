//! Training curves from the `log.jsonl` of one or several run directories
//! (the records `train::log` writes): loss raw and smoothed, learning rate,
//! the dev metric at each evaluation, and for pruning runs the kept ratio
//! against its schedule, the mask churn and the overlap with the magnitude
//! mask (with the chance overlap of a random mask, which is the kept ratio).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::plot::{color, line_panel, save, Picture, Series, Style, Written};
use crate::train::trainer::LOG_FILE;

/// One logged step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepRecord {
    pub step: u64,
    pub loss: Option<f64>,
    pub lr: Option<f64>,
    pub kept_ratio: Option<f64>,
    pub kept_target: Option<f64>,
    pub mask_churn: Option<f64>,
    pub magnitude_overlap: Option<f64>,
}

/// A run's log, as read.
#[derive(Clone, Debug)]
pub struct RunLog {
    pub label: String,
    pub log: PathBuf,
    /// By step; a step logged twice (a resumed run) keeps its last record.
    pub steps: Vec<StepRecord>,
    /// The dev metric's name and its value at each evaluation's step.
    pub metric: Option<String>,
    pub evals: Vec<(u64, f64)>,
}

/// Metrics tried in this order when the log has no summary naming its main one.
const METRIC_ORDER: [&str; 7] = [
    "accuracy",
    "f1",
    "matthews",
    "pearson",
    "spearman",
    "exact_match",
    "mse",
];

fn line_err(log: &Path, n: usize, what: impl std::fmt::Display) -> Error {
    Error::msg(format!("{}:{n}: {what}", log.display()))
}

/// Reads `dir/log.jsonl`. An empty or malformed log is an error naming the
/// file and line.
pub fn read_run(dir: &Path, label: Option<&str>) -> Result<RunLog> {
    crate::ensure!(
        dir.is_dir(),
        "{}: not a run directory (expected a directory with {LOG_FILE})",
        dir.display()
    );
    let log = dir.join(LOG_FILE);
    crate::ensure!(
        log.is_file(),
        "{}: no {LOG_FILE} here (every lpaf finetune / compress run writes one in its output directory)",
        log.display()
    );
    let text = std::fs::read_to_string(&log).map_err(|e| Error::io(&log, e))?;
    let mut steps: BTreeMap<u64, StepRecord> = BTreeMap::new();
    let mut evals: BTreeMap<u64, Map<String, Value>> = BTreeMap::new();
    let mut main: Option<String> = None;
    let mut records = 0usize;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| line_err(&log, n, format!("not JSON ({e})")))?;
        let Value::Object(obj) = v else {
            return Err(line_err(&log, n, "not a JSON object"));
        };
        records += 1;
        let event = obj
            .get("event")
            .and_then(Value::as_str)
            .ok_or_else(|| line_err(&log, n, "no \"event\" field (not an lpaf run log?)"))?;
        let step = || {
            obj.get("step")
                .and_then(Value::as_u64)
                .ok_or_else(|| line_err(&log, n, format!("a {event} record without a \"step\"")))
        };
        let num = |k: &str| -> Result<Option<f64>> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| line_err(&log, n, format!("\"{k}\" is not a number: {x}"))),
            }
        };
        match event {
            "step" => {
                let s = step()?;
                steps.insert(
                    s,
                    StepRecord {
                        step: s,
                        loss: num("loss")?,
                        lr: num("lr")?,
                        kept_ratio: num("kept_ratio")?,
                        kept_target: num("kept_target")?,
                        mask_churn: num("mask_churn")?,
                        magnitude_overlap: num("magnitude_overlap")?,
                    },
                );
            }
            "eval" => {
                evals.insert(step()?, obj.clone());
            }
            "summary" => {
                main = obj
                    .get("final_eval")
                    .and_then(|f| f.get("main"))
                    .and_then(Value::as_str)
                    .map(String::from);
            }
            _ => {}
        }
    }
    crate::ensure!(records > 0, "{}: empty log (no records)", log.display());
    crate::ensure!(
        !steps.is_empty(),
        "{}: no step records (the run logged nothing yet?)",
        log.display()
    );
    let present = |k: &str| {
        evals
            .values()
            .any(|e| e.get(k).and_then(Value::as_f64).is_some())
    };
    let metric = main.filter(|m| present(m)).or_else(|| {
        METRIC_ORDER
            .iter()
            .find(|k| present(k))
            .map(|k| k.to_string())
            .or_else(|| {
                evals.values().flat_map(|e| e.iter()).find_map(|(k, v)| {
                    (v.is_number() && !["step", "elapsed_s", "eval_loss"].contains(&k.as_str()))
                        .then(|| k.clone())
                })
            })
    });
    let evals = match &metric {
        Some(m) => evals
            .iter()
            .filter_map(|(s, e)| e.get(m).and_then(Value::as_f64).map(|v| (*s, v)))
            .collect(),
        None => Vec::new(),
    };
    let label = match label {
        Some(l) => l.to_string(),
        None => dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.display().to_string()),
    };
    Ok(RunLog {
        label,
        log,
        steps: steps.into_values().collect(),
        metric,
        evals,
    })
}

/// Bias-corrected exponential moving average with weight `w` on the past.
pub fn smooth(values: &[(f64, f64)], w: f64) -> Vec<(f64, f64)> {
    let mut avg = 0.0;
    let mut norm = 0.0;
    values
        .iter()
        .map(|&(x, v)| {
            avg = w * avg + (1.0 - w) * v;
            norm = w * norm + (1.0 - w);
            (x, if norm > 0.0 { avg / norm } else { v })
        })
        .collect()
}

struct Curves<'a> {
    runs: &'a [RunLog],
    smooth: f64,
}

fn field(r: &RunLog, f: impl Fn(&StepRecord) -> Option<f64>) -> Vec<(f64, f64)> {
    r.steps
        .iter()
        .filter_map(|s| f(s).filter(|v| v.is_finite()).map(|v| (s.step as f64, v)))
        .collect()
}

fn main_line(label: &str, i: usize, points: Vec<(f64, f64)>) -> Series {
    Series {
        label: Some(label.to_string()),
        color: color(i),
        style: Style::Line(2),
        points,
    }
}

impl Picture for Curves<'_> {
    fn size(&self) -> (u32, u32) {
        (1500, 900)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(crate::plot::draw_err)?;
        let p = root.split_evenly((2, 3));
        let mut loss = Vec::new();
        let mut lr = Vec::new();
        let mut dev = Vec::new();
        let mut kept = Vec::new();
        let mut churn = Vec::new();
        let mut overlap = Vec::new();
        for (i, r) in self.runs.iter().enumerate() {
            let raw = field(r, |s| s.loss);
            if !raw.is_empty() {
                loss.push(Series {
                    label: None,
                    color: color(i),
                    style: Style::Faint,
                    points: raw.clone(),
                });
                loss.push(main_line(&r.label, i, smooth(&raw, self.smooth)));
            }
            let v = field(r, |s| s.lr);
            if !v.is_empty() {
                lr.push(main_line(&r.label, i, v));
            }
            if !r.evals.is_empty() {
                let pts: Vec<(f64, f64)> = r.evals.iter().map(|&(s, v)| (s as f64, v)).collect();
                dev.push(main_line(&r.label, i, pts.clone()));
                dev.push(Series {
                    label: None,
                    color: color(i),
                    style: Style::Dots,
                    points: pts,
                });
            }
            let k = field(r, |s| s.kept_ratio);
            if !k.is_empty() {
                kept.push(main_line(&r.label, i, k.clone()));
                let t = field(r, |s| s.kept_target);
                if !t.is_empty() {
                    kept.push(Series {
                        label: (i == 0).then(|| "schedule (dashed)".to_string()),
                        color: color(i),
                        style: Style::Dashed,
                        points: t,
                    });
                }
            }
            let c = field(r, |s| s.mask_churn);
            if !c.is_empty() {
                churn.push(main_line(&r.label, i, c));
            }
            let o = field(r, |s| s.magnitude_overlap);
            if !o.is_empty() {
                overlap.push(main_line(&r.label, i, o));
                if !k.is_empty() {
                    overlap.push(Series {
                        label: (i == 0).then(|| "chance = kept ratio (dashed)".to_string()),
                        color: color(i),
                        style: Style::Dashed,
                        points: k,
                    });
                }
            }
        }
        let mut metrics: Vec<&str> = self
            .runs
            .iter()
            .filter_map(|r| r.metric.as_deref())
            .collect();
        metrics.sort_unstable();
        metrics.dedup();
        let dev_title = if metrics.is_empty() {
            "dev metric".to_string()
        } else {
            format!("dev {}", metrics.join(" / "))
        };
        use SeriesLabelPosition::{LowerRight, UpperRight};
        let none = "not in these logs";
        line_panel(
            &p[0],
            &format!("training loss (faint: raw; line: EMA {})", self.smooth),
            "step",
            &loss,
            UpperRight,
            none,
        )?;
        line_panel(&p[1], "learning rate", "step", &lr, UpperRight, none)?;
        line_panel(
            &p[2],
            &dev_title,
            "step",
            &dev,
            LowerRight,
            "no evaluations in these logs",
        )?;
        line_panel(
            &p[3],
            "kept ratio vs its schedule",
            "step",
            &kept,
            UpperRight,
            "no kept ratio in these logs (not a pruning run)",
        )?;
        line_panel(
            &p[4],
            "mask churn (share of the mask changed since the last log)",
            "step",
            &churn,
            UpperRight,
            "no mask churn in these logs (not a pruning run)",
        )?;
        line_panel(
            &p[5],
            "overlap with the magnitude mask",
            "step",
            &overlap,
            LowerRight,
            "no magnitude overlap in these logs (movement pruning logs it)",
        )?;
        Ok(())
    }
}

/// Reads every run's log and draws the curves into `out` (see
/// [`crate::plot::output_paths`]). `labels`, when given, name the runs in order.
pub fn plot_runs(
    dirs: &[PathBuf],
    labels: &[String],
    smoothing: f64,
    out: &Path,
    force: bool,
    size: Option<(u32, u32)>,
) -> Result<Written> {
    crate::ensure!(!dirs.is_empty(), "no run directory given");
    crate::ensure!(
        labels.is_empty() || labels.len() == dirs.len(),
        "--label: {} labels for {} runs (give one per run, in order, or none)",
        labels.len(),
        dirs.len()
    );
    crate::ensure!(
        (0.0..1.0).contains(&smoothing),
        "--smooth {smoothing}: must be in [0, 1)"
    );
    let mut runs = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        runs.push(read_run(d, labels.get(i).map(String::as_str))?);
    }
    // Two runs of the same directory name (e.g. `…/a/run` and `…/b/run`):
    // tell them apart by their paths.
    for i in 0..runs.len() {
        if runs.iter().filter(|r| r.label == runs[i].label).count() > 1 && labels.is_empty() {
            runs[i].label = dirs[i].display().to_string();
        }
    }
    let mut notes = Vec::new();
    for r in &runs {
        if r.evals.is_empty() {
            notes.push(format!("{}: no evaluations", r.log.display()));
        }
    }
    let files = save(
        &Curves {
            runs: &runs,
            smooth: smoothing,
        },
        out,
        force,
        size,
    )?;
    Ok(Written { files, notes })
}
