//! Running a sweep's runs as child processes of the same `lpaf` binary.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::model::io::write_atomic;
use crate::sweep::{log_path, record_path, state, Plan, Run, RunRecord, State};

/// How one run of this call ended.
#[derive(Clone, Debug, PartialEq)]
pub enum RunReport {
    /// Already finished: not run again.
    Skipped,
    /// Ran (fresh or resumed) and exited 0 with a summary.
    Ok { resumed: bool, seconds: f64 },
    /// Did not finish: why, and the log to read.
    Failed { why: String, log: PathBuf },
}

fn write_record(root: &Path, rec: &RunRecord) -> Result<()> {
    let p = record_path(root, &rec.run.name);
    write_atomic(&p, serde_json::to_string_pretty(rec)?.as_bytes())
}

/// Runs one run to its end (skipping it when finished); `gpu` becomes the
/// child's `CUDA_VISIBLE_DEVICES`.
pub fn run_one(plan: &Plan, run: &Run, exe: &Path, gpu: Option<&str>) -> Result<RunReport> {
    let root = &plan.root;
    let resumed = match state(root, run) {
        State::Finished => return Ok(RunReport::Skipped),
        State::Changed(why) => {
            return Ok(RunReport::Failed {
                why,
                log: log_path(root, &run.name),
            })
        }
        State::Interrupted => true,
        State::New => false,
    };
    let logs = plan.logs();
    std::fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;
    let log = log_path(root, &run.name);
    let mut rec = RunRecord {
        run: run.clone(),
        exit_code: None,
        signal: None,
        wall_seconds: None,
        log: log.clone(),
    };
    write_record(root, &rec)?;
    // Appended: an interrupted run's earlier log stays in front of the resumed one's.
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| Error::io(&log, e))?;
    let err = out.try_clone().map_err(|e| Error::io(&log, e))?;
    let mut cmd = Command::new(exe);
    cmd.args(&run.args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    if let Some(g) = gpu {
        cmd.env("CUDA_VISIBLE_DEVICES", g);
    }
    let t0 = Instant::now();
    let status = cmd.status().map_err(|e| {
        Error::msg(format!(
            "starting {} for run {}: {e}",
            exe.display(),
            run.name
        ))
    })?;
    let secs = t0.elapsed().as_secs_f64();
    rec.exit_code = status.code();
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        rec.signal = status.signal();
    }
    rec.wall_seconds = Some(secs);
    write_record(root, &rec)?;
    if !status.success() {
        let why = match (rec.exit_code, rec.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "failed".to_string(),
        };
        return Ok(RunReport::Failed { why, log });
    }
    match state(root, run) {
        State::Finished => Ok(RunReport::Ok {
            resumed,
            seconds: secs,
        }),
        _ => Ok(RunReport::Failed {
            why: "exited 0 but left no finished summary.json (stopped early?)".into(),
            log,
        }),
    }
}

/// Runs every unfinished run of the plan, `slots.len()` at a time (each
/// slot a GPU id for `CUDA_VISIBLE_DEVICES`, or `None` on the CPU):
/// fine-tuning first, then the rest. A failed run does not stop the others;
/// runs that start from a failed run's model are reported failed too.
pub fn run_local(
    plan: &Plan,
    exe: &Path,
    slots: &[Option<String>],
    print: &(dyn Fn(&str) + Sync),
) -> Result<Vec<(String, RunReport)>> {
    let n = plan.runs.len();
    let results: Mutex<HashMap<String, RunReport>> = Mutex::new(HashMap::new());
    for phase in [0u8, 1] {
        let mut queue = VecDeque::new();
        for r in plan.runs.iter().filter(|r| r.phase == phase) {
            let dep_failed =
                r.depends_on
                    .as_ref()
                    .and_then(|d| match results.lock().unwrap().get(d) {
                        Some(RunReport::Failed { .. }) => Some(d.clone()),
                        _ => None,
                    });
            if let Some(d) = dep_failed {
                let rep = RunReport::Failed {
                    why: format!("not run: it starts from {d}, which failed"),
                    log: log_path(&plan.root, &d),
                };
                print(&format!(
                    "[{}/{n}] {}: {}",
                    r.index + 1,
                    r.name,
                    describe(&rep)
                ));
                results.lock().unwrap().insert(r.name.clone(), rep);
            } else {
                queue.push_back(r);
            }
        }
        let queue = Mutex::new(queue);
        let error: Mutex<Option<Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            for slot in slots {
                let (queue, results, error) = (&queue, &results, &error);
                s.spawn(move || loop {
                    let Some(r) = queue.lock().unwrap().pop_front() else {
                        break;
                    };
                    let st = state(&plan.root, r);
                    if st != State::Finished {
                        let how = if st == State::Interrupted {
                            "resuming"
                        } else {
                            "starting"
                        };
                        let on = slot
                            .as_ref()
                            .map(|g| format!(" on GPU {g}"))
                            .unwrap_or_default();
                        print(&format!("[{}/{n}] {}: {how}{on}", r.index + 1, r.name));
                    }
                    match run_one(plan, r, exe, slot.as_deref()) {
                        Ok(rep) => {
                            print(&format!(
                                "[{}/{n}] {}: {}",
                                r.index + 1,
                                r.name,
                                describe(&rep)
                            ));
                            results.lock().unwrap().insert(r.name.clone(), rep);
                        }
                        Err(e) => {
                            error.lock().unwrap().get_or_insert(e);
                            break;
                        }
                    }
                });
            }
        });
        if let Some(e) = error.into_inner().unwrap() {
            return Err(e);
        }
    }
    let results = results.into_inner().unwrap();
    Ok(plan
        .runs
        .iter()
        .filter_map(|r| results.get(&r.name).map(|x| (r.name.clone(), x.clone())))
        .collect())
}

/// One line about a run's outcome.
pub fn describe(r: &RunReport) -> String {
    match r {
        RunReport::Skipped => "finished before, skipped".into(),
        RunReport::Ok { resumed, seconds } => format!(
            "ok ({seconds:.1} s{})",
            if *resumed {
                ", resumed from its checkpoint"
            } else {
                ""
            }
        ),
        RunReport::Failed { why, log } => format!("FAILED: {why}; log {}", log.display()),
    }
}
