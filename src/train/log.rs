//! Progress bar (step, loss, samples/s, ETA) and the JSON-lines run log a
//! plot can be made from: one object per logged step and per evaluation.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::error::{Error, Result};

pub struct RunLog {
    file: Option<BufWriter<File>>,
    bar: ProgressBar,
    started: Instant,
    samples: u64,
    /// Seconds spent outside training proper (evaluation, saving).
    excluded: f64,
}

impl RunLog {
    /// Opens (appending, so a resumed run continues the same file) the log at
    /// `path` and starts a bar at `start_step` of `total_steps`. `quiet` hides the bar.
    pub fn new(
        path: Option<&Path>,
        start_step: u64,
        total_steps: u64,
        quiet: bool,
    ) -> Result<RunLog> {
        let file = match path {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                }
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| Error::io(p, e))?;
                Some(BufWriter::new(f))
            }
            None => None,
        };
        let bar = if quiet {
            ProgressBar::with_draw_target(Some(total_steps), ProgressDrawTarget::hidden())
        } else {
            ProgressBar::new(total_steps)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps {msg} (ETA {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_position(start_step);
        Ok(RunLog {
            file,
            bar,
            started: Instant::now(),
            samples: 0,
            excluded: 0.0,
        })
    }

    /// Records samples processed (for samples/s).
    pub fn add_samples(&mut self, n: u64) {
        self.samples += n;
    }

    /// Leaves `seconds` (evaluation, checkpointing) out of the training time.
    pub fn exclude(&mut self, seconds: f64) {
        self.excluded += seconds;
    }

    /// Wall time minus evaluation and saving.
    pub fn train_seconds(&self) -> f64 {
        (self.elapsed_seconds() - self.excluded).max(0.0)
    }

    /// Training throughput (evaluation and saving excluded).
    pub fn samples_per_second(&self) -> f64 {
        let dt = self.train_seconds();
        if dt <= 0.0 {
            0.0
        } else {
            self.samples as f64 / dt
        }
    }

    pub fn elapsed_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Writes a step record (adds `samples_per_s` and `elapsed_s`) and updates the bar:
    /// `msg` is shown beside the counter.
    pub fn step(&mut self, step: u64, mut record: Value, msg: &str) -> Result<()> {
        if let Value::Object(m) = &mut record {
            m.insert("event".into(), json!("step"));
            m.insert("step".into(), json!(step));
            m.insert(
                "samples_per_s".into(),
                json!(round3(self.samples_per_second())),
            );
            m.insert("elapsed_s".into(), json!(round3(self.elapsed_seconds())));
        }
        self.write(&record)?;
        self.bar.set_position(step);
        self.bar
            .set_message(format!("{msg} {:.1} samples/s", self.samples_per_second()));
        Ok(())
    }

    /// Writes any other record (evaluation, summary) and prints `line` above the bar.
    pub fn event(&mut self, kind: &str, mut record: Value, line: Option<&str>) -> Result<()> {
        if let Value::Object(m) = &mut record {
            m.insert("event".into(), json!(kind));
            m.insert("elapsed_s".into(), json!(round3(self.elapsed_seconds())));
        }
        self.write(&record)?;
        if let Some(l) = line {
            self.bar.println(l);
        }
        Ok(())
    }

    /// Prints a line above the bar (or to stderr when hidden).
    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    fn write(&mut self, v: &Value) -> Result<()> {
        if let Some(f) = &mut self.file {
            let line = serde_json::to_string(v)?;
            f.write_all(line.as_bytes())
                .and_then(|_| f.write_all(b"\n"))
                .and_then(|_| f.flush())
                .map_err(|e| Error::Msg(format!("writing the run log: {e}")))?;
        }
        Ok(())
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Makes the log at `path` end where a run resumed at `step` continues:
/// keeps records of steps up to `step` (step, evaluation and divergence
/// records carry one) and records without a step; drops later ones, invocation summaries (a resumed
/// run writes its own) and a last line cut short by a crash. Step 0 empties
/// the log (a run starting over). Written atomically.
pub fn rewind(path: &Path, step: u64) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut kept = String::new();
    if step > 0 {
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v.get("event").and_then(Value::as_str) == Some("summary") {
                continue;
            }
            if v.get("step")
                .and_then(Value::as_u64)
                .is_some_and(|s| s > step)
            {
                continue;
            }
            kept.push_str(line);
            kept.push('\n');
        }
    }
    if kept != text {
        crate::model::io::write_atomic(path, kept.as_bytes())?;
    }
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
