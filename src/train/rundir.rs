//! Claiming a run's output directory: one run at a time (a lock held for
//! the run's life), and a directory that holds an earlier run is continued
//! only with `--resume` and replaced only with `--overwrite` — never
//! silently restarted over (docs/robustness.md).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::train::checkpoint::{checkpoint_complete, recover_checkpoint, swap_leftovers};

/// What a run writes into its output directory (every method, every stage).
/// `--overwrite` removes exactly these, nothing else the directory holds.
pub const RUN_OUTPUTS: &[&str] = &[
    "checkpoint",
    "stage1",
    "pruned",
    "compressed",
    "best",
    "final",
    "log.jsonl",
    "summary.json",
    "factorization.json",
    DATA_SPLIT_FILE,
];

/// The held-out split a run used (fraction and seed), so that `lpaf eval
/// --dev-split` on its models scores the same rows by default.
pub const DATA_SPLIT_FILE: &str = "data_split.json";

const LOCK_FILE: &str = ".lpaf.lock";

/// Held while a run uses its output directory; released when dropped or
/// when the process dies (an advisory `flock`).
#[derive(Debug)]
pub struct RunDirLock {
    _file: File,
    pub dir: PathBuf,
}

/// Locks `output` for a run and checks that starting (or resuming) there
/// loses nothing. Returns the lock and notes to print.
pub fn claim(output: &Path, resume: bool, overwrite: bool) -> Result<(RunDirLock, Vec<String>)> {
    if resume && overwrite {
        return Err(Error::msg(
            "--resume and --overwrite exclude each other: continue the run, or start it over",
        ));
    }
    if output.exists() && !output.is_dir() {
        return Err(Error::msg(format!(
            "{}: --output exists and is not a directory",
            output.display()
        )));
    }
    std::fs::create_dir_all(output).map_err(|e| Error::io(output, e))?;
    let lock_path = output.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&lock_path)
        .map_err(|e| Error::io(&lock_path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
            return Err(Error::msg(format!(
                "{}: another lpaf run is using this directory ({}); wait for it to finish or choose another --output",
                output.display(),
                holder.trim()
            )));
        }
        Err(TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
    }
    let _ = file.set_len(0);
    let _ = writeln!(file, "pid {}", std::process::id());
    let mut notes = Vec::new();
    let present = |output: &Path| -> Vec<&'static str> {
        RUN_OUTPUTS
            .iter()
            .copied()
            .filter(|n| output.join(n).exists())
            .collect()
    };
    // A run that failed before it trained leaves only its split record.
    let earlier_run = |output: &Path| -> Vec<&'static str> {
        present(output)
            .into_iter()
            .filter(|n| *n != DATA_SPLIT_FILE)
            .collect()
    };
    if overwrite {
        let found = present(output);
        for sub in [output.join("stage1"), output.to_path_buf()] {
            for p in swap_leftovers(&sub, None) {
                std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
            }
        }
        for n in &found {
            let p = output.join(n);
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(|e| Error::io(&p, e))?;
        }
        if !found.is_empty() {
            notes.push(format!(
                "--overwrite: removed the earlier run's {} from {}",
                found.join(", "),
                output.display()
            ));
        }
        return Ok((
            RunDirLock {
                _file: file,
                dir: output.to_path_buf(),
            },
            notes,
        ));
    }
    // Leftovers of interrupted directory swaps: checkpoints are recovered
    // (the newest complete copy is put back), the rest are removed.
    for sub in [output.to_path_buf(), output.join("stage1")] {
        if sub.join("checkpoint").exists() || !swap_leftovers(&sub, Some("checkpoint")).is_empty() {
            notes.extend(recover_checkpoint(&sub.join("checkpoint"))?);
        }
        for p in swap_leftovers(&sub, None) {
            if !p.exists() {
                continue;
            }
            std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
            notes.push(format!(
                "removed {} (left by an interrupted save)",
                p.display()
            ));
        }
    }
    let found = earlier_run(output);
    if !found.is_empty() && !resume {
        let at = [output.join("checkpoint"), output.join("stage1/checkpoint")]
            .iter()
            .find_map(|c| {
                checkpoint_complete(c)
                    .ok()
                    .map(|s| format!(" (checkpoint at step {s})"))
            })
            .unwrap_or_default();
        return Err(Error::msg(format!(
            "{} holds an earlier run{at}: {}. Pass --resume to continue it, --overwrite to replace it, or choose another --output",
            output.display(),
            found.join(", ")
        )));
    }
    if resume && !found.iter().any(|n| *n == "checkpoint" || *n == "stage1") {
        notes.push(format!(
            "--resume: {} has no checkpoint yet; starting at step 0",
            output.display()
        ));
    }
    Ok((
        RunDirLock {
            _file: file,
            dir: output.to_path_buf(),
        },
        notes,
    ))
}

/// Records the held-out split of a run (`dev_split` fraction and seed).
pub fn write_data_split(dir: &Path, dev_split: Option<f64>, split_seed: u64) -> Result<()> {
    let v = serde_json::json!({"dev_split": dev_split, "split_seed": split_seed});
    crate::model::io::write_atomic(
        &dir.join(DATA_SPLIT_FILE),
        serde_json::to_string_pretty(&v)?.as_bytes(),
    )
}

/// The split recorded for a model directory: in it, or in the run
/// directory above it (`RUN/final`, `RUN/best`, `RUN/compressed`).
pub fn read_data_split(model_dir: &Path) -> Result<Option<(Option<f64>, u64, PathBuf)>> {
    for d in [Some(model_dir), model_dir.parent()].into_iter().flatten() {
        let p = d.join(DATA_SPLIT_FILE);
        if !p.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::msg(format!("{}: malformed ({e})", p.display())))?;
        let seed = v
            .get("split_seed")
            .and_then(|s| s.as_u64())
            .ok_or_else(|| Error::msg(format!("{}: no split_seed", p.display())))?;
        let frac = v.get("dev_split").and_then(|s| s.as_f64());
        return Ok(Some((frac, seed, p)));
    }
    Ok(None)
}
