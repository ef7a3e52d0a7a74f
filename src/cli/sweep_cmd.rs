//! `lpaf sweep SWEEP.toml`: expand, run (locally or as Slurm arrays) and
//! collect a sweep (src/sweep/, README "Sweeps and clusters").

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Result};
use crate::sweep::{self, exec::describe, shell_quote, RunReport, State};

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// The sweep file (TOML: recipes × kept_ratios × seeds × overrides).
    pub file: Option<PathBuf>,
    /// Output root (overrides the file's `output`).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Only collect the table of the sweep under ROOT.
    #[arg(long, value_name = "ROOT", conflicts_with_all = ["file", "emit", "dry_run", "run_index"])]
    pub collect: Option<PathBuf>,
    /// One run per GPU at a time, each with CUDA_VISIBLE_DEVICES set (`--gpus 0,1,2,3`).
    #[arg(long, value_delimiter = ',', conflicts_with = "jobs")]
    pub gpus: Vec<String>,
    /// Runs at once on this machine (default 1; for CPU machines).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Write job scripts instead of running: `slurm`.
    #[arg(long, value_name = "SCHEDULER")]
    pub emit: Option<String>,
    /// With --emit slurm: an `#SBATCH` option for the run arrays (repeatable,
    /// e.g. `--sbatch=--partition=a100 --sbatch=--time=04:00:00`); without a
    /// --gres / --gpus one, each task asks for `--gres=gpu:1`.
    #[arg(long = "sbatch", value_name = "OPTION", allow_hyphen_values = true)]
    pub sbatch: Vec<String>,
    /// With --emit slurm: ask for no GPU (CPU clusters).
    #[arg(long)]
    pub cpu: bool,
    /// List the runs (index, name, state, command) and run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run only the run with this index (what each Slurm array task does).
    #[arg(long, value_name = "I")]
    pub run_index: Option<usize>,
}

pub fn sweep(a: SweepArgs) -> Result<()> {
    if let Some(root) = &a.collect {
        let t = sweep::collect(root)?;
        let (md, jl) = t.write(root)?;
        crate::out!("{}", t.markdown())?;
        crate::outln!("table: {} and {}", md.display(), jl.display())?;
        return Ok(());
    }
    let file = a
        .file
        .as_ref()
        .ok_or_else(|| Error::msg("lpaf sweep: give a sweep file (or --collect ROOT)"))?;
    let plan = sweep::plan(file, a.output.as_deref())?;
    let exe = std::env::current_exe()
        .map_err(|e| Error::msg(format!("finding the lpaf binary to run: {e}")))?;
    if a.dry_run {
        crate::outln!(
            "{} runs of {} under {}:",
            plan.runs.len(),
            file.display(),
            plan.root.display()
        )?;
        for r in &plan.runs {
            let st = match sweep::state(&plan.root, r) {
                State::New => "new",
                State::Interrupted => "interrupted (resumes)",
                State::Finished => "finished (skipped)",
                State::Changed(_) => "finished by another command (left alone)",
            };
            let mut cmd = vec![exe.display().to_string()];
            cmd.extend(r.args.iter().cloned());
            crate::outln!("{}\t{}\t{st}\t{}", r.index, r.name, shell_quote(&cmd))?;
        }
        return Ok(());
    }
    if let Some(kind) = &a.emit {
        if kind != "slurm" {
            return Err(Error::msg(format!(
                "--emit {kind}: the only scheduler is slurm"
            )));
        }
        let e = sweep::slurm::emit(&plan, &exe, &a.sbatch, a.cpu)?;
        for s in &e.scripts {
            crate::outln!("wrote {}", s.display())?;
        }
        crate::outln!(
            "{} runs; submit with: bash {}",
            plan.runs.len(),
            e.submit.display()
        )?;
        return Ok(());
    }
    if let Some(i) = a.run_index {
        let run = plan.runs.get(i).ok_or_else(|| {
            Error::msg(format!(
                "--run-index {i}: {} has runs 0 to {}",
                file.display(),
                plan.runs.len().saturating_sub(1)
            ))
        })?;
        let rep = sweep::run_one(&plan, run, &exe, None)?;
        crate::outln!("{}: {}", run.name, describe(&rep))?;
        return match rep {
            RunReport::Failed { .. } => Err(Error::msg(format!("run {} failed", run.name))),
            _ => Ok(()),
        };
    }
    let slots: Vec<Option<String>> = if a.gpus.is_empty() {
        let n = a.jobs.unwrap_or(1);
        if n == 0 {
            return Err(Error::msg("--jobs must be at least 1"));
        }
        vec![None; n]
    } else {
        a.gpus.iter().map(|g| Some(g.trim().to_string())).collect()
    };
    crate::outln!(
        "sweep {}: {} runs under {}, {} at a time",
        file.display(),
        plan.runs.len(),
        plan.root.display(),
        slots.len()
    )?;
    let reports = sweep::run_local(&plan, &exe, &slots, &|l: &str| {
        // A closed pipe ends the process inside outln; nothing else to do.
        let _ = crate::outln!("{l}");
    })?;
    let t = sweep::collect(&plan.root)?;
    let (md, jl) = t.write(&plan.root)?;
    crate::out!("{}", t.markdown())?;
    crate::outln!("table: {} and {}", md.display(), jl.display())?;
    let failed: Vec<String> = reports
        .iter()
        .filter_map(|(n, r)| match r {
            RunReport::Failed { .. } => Some(format!("{n}: {}", describe(r))),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        return Err(Error::msg(format!(
            "{} of {} runs failed:\n  {}",
            failed.len(),
            plan.runs.len(),
            failed.join("\n  ")
        )));
    }
    Ok(())
}
