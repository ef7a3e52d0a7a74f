//! Sweeps: a TOML file of recipes × kept ratios × seeds × overrides expanded
//! into runs with stable names under one output root, run locally (one per
//! GPU or N at once) or as a Slurm job array, each resumable, and collected
//! into one table (README "Sweeps and clusters").
//!
//! Every run is a child `lpaf finetune` / `lpaf compress` with `--resume`, so
//! a run killed part way continues from its checkpoint the next time, and a
//! run whose `summary.json` exists with the same command is skipped.
//!
//! Layout under the root: `<name>/` (the run's output), `logs/<name>.log`
//! (its stdout and stderr), `logs/<name>.json` (what it is and the command
//! it ran, read by [`collect`]), `results.md` and `results.jsonl`.

pub mod collect;
pub mod exec;
pub mod slurm;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use collect::{collect, Cell, Table};
pub use exec::{run_local, run_one, RunReport};

/// The sweep file, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// Output root (relative paths are taken from the working directory, as
    /// in recipes); `--output` overrides it.
    pub output: Option<PathBuf>,
    /// Starting model of every run (`--model`).
    pub model: Option<PathBuf>,
    /// `--device` of every run.
    pub device: Option<String>,
    /// Where recipe names are looked up (`<dir>/<name>.toml`); default `recipes`.
    pub recipes_dir: Option<PathBuf>,
    /// Recipe names (`movement`, `finetune`, …) or paths to recipe files.
    pub recipes: Vec<String>,
    /// Target kept ratios (every recipe but `finetune`).
    #[serde(default)]
    pub kept_ratios: Vec<f64>,
    pub seeds: Vec<u64>,
    /// Recipes that start from the same seed's fine-tuned model
    /// (`<root>/finetune-s<seed>[-tag]/best`) instead of `model`, e.g. svd.
    #[serde(default)]
    pub start_from_finetune: Vec<String>,
    /// The metric of the table (default: each task's main metric).
    pub metric: Option<String>,
    /// Data keys of every run (`data.<key>`).
    #[serde(default)]
    pub data: toml::Table,
    /// Any configuration key of every run, dotted or as tables
    /// (`"train.steps" = 30` or `[set.train] steps = 30`).
    #[serde(default)]
    pub set: toml::Table,
    /// Keys for one recipe's runs only, after `set`
    /// (`[recipe_set.lpaf] "lpaf.finetune_steps" = 150`): a key of one
    /// method's section would be refused by the others' configurations.
    #[serde(default)]
    pub recipe_set: toml::Table,
    /// The override axis: each entry is one variant of every run.
    #[serde(default)]
    pub overrides: Vec<Override>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Appended to the run names (`-<tag>`).
    pub tag: String,
    #[serde(default)]
    pub set: toml::Table,
}

/// One run of a sweep.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Run {
    /// Position in the expanded sweep (the Slurm array index).
    pub index: usize,
    /// `<recipe>-k<ratio>-s<seed>[-<tag>]`, or `finetune-s<seed>[-<tag>]`.
    pub name: String,
    pub recipe: String,
    pub tag: Option<String>,
    /// Target kept ratio (`None` for fine-tuning).
    pub kept_ratio: Option<f64>,
    pub seed: u64,
    /// 0: fine-tuning runs; 1: the rest (some start from a phase-0 model).
    pub phase: u8,
    /// The run whose `best/` model this one starts from.
    pub depends_on: Option<String>,
    pub metric: Option<String>,
    /// Arguments of the child `lpaf` (without the program).
    pub args: Vec<String>,
    pub output: PathBuf,
}

/// An expanded sweep.
#[derive(Clone, Debug)]
pub struct Plan {
    pub source: PathBuf,
    pub root: PathBuf,
    pub runs: Vec<Run>,
}

impl Plan {
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
}

/// Reads and checks a sweep file; errors name the file and the key.
pub fn read_sweep(path: &Path) -> Result<SweepFile> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let f: SweepFile =
        toml::from_str(&text).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    let p = path.display();
    let bad = |key: &str, why: &str| Err(Error::msg(format!("{p}: `{key}` {why}")));
    if f.recipes.is_empty() {
        return bad("recipes", "is empty: name at least one recipe");
    }
    if f.seeds.is_empty() {
        return bad("seeds", "is empty: give at least one seed");
    }
    let compresses = f.recipes.iter().any(|r| recipe_name(r) != "finetune");
    if compresses && f.kept_ratios.is_empty() {
        return bad(
            "kept_ratios",
            "is empty: the compression recipes need at least one",
        );
    }
    for &k in &f.kept_ratios {
        if !(k > 0.0 && k <= 1.0) {
            return bad(
                "kept_ratios",
                &format!("has {k}: a kept ratio is in (0, 1]"),
            );
        }
    }
    for (what, list) in [("recipes", &f.recipes)] {
        let mut seen = std::collections::HashSet::new();
        for r in list {
            if !seen.insert(recipe_name(r)) {
                return bad(what, &format!("names recipe '{}' twice", recipe_name(r)));
            }
        }
    }
    if has_dup(&f.seeds) {
        return bad("seeds", "repeats a seed");
    }
    if has_dup(
        &f.kept_ratios
            .iter()
            .map(|k| k.to_bits())
            .collect::<Vec<_>>(),
    ) {
        return bad("kept_ratios", "repeats a ratio");
    }
    for s in &f.start_from_finetune {
        if !f.recipes.iter().any(|r| recipe_name(r) == *s) {
            return bad(
                "start_from_finetune",
                &format!("names '{s}', which is not in `recipes`"),
            );
        }
        if s == "finetune" {
            return bad("start_from_finetune", "cannot name finetune itself");
        }
    }
    if !f.start_from_finetune.is_empty() && !f.recipes.iter().any(|r| recipe_name(r) == "finetune")
    {
        return bad("start_from_finetune", "needs `finetune` among the recipes");
    }
    for (name, v) in &f.recipe_set {
        if !f.recipes.iter().any(|r| recipe_name(r) == *name) {
            return bad(
                &format!("recipe_set.{name}"),
                &format!("names '{name}', which is not in `recipes`"),
            );
        }
        if !v.is_table() {
            return bad(
                &format!("recipe_set.{name}"),
                "must be a table of configuration keys",
            );
        }
    }
    let mut tags = std::collections::HashSet::new();
    for (i, o) in f.overrides.iter().enumerate() {
        let ok = !o.tag.is_empty()
            && o.tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '=');
        if !ok {
            return bad(
                &format!("overrides[{i}].tag"),
                &format!("'{}' must be letters, digits, '_', '.' or '='", o.tag),
            );
        }
        if !tags.insert(o.tag.clone()) {
            return bad(
                &format!("overrides[{i}].tag"),
                &format!("'{}' repeats", o.tag),
            );
        }
    }
    Ok(f)
}

fn has_dup<T: Eq + std::hash::Hash + Clone>(v: &[T]) -> bool {
    let mut s = std::collections::HashSet::new();
    v.iter().any(|x| !s.insert(x.clone()))
}

/// `movement` for `movement`, `recipes/movement.toml` or `x/movement.toml`.
pub fn recipe_name(r: &str) -> String {
    let p = Path::new(r);
    if r.contains('/') || r.ends_with(".toml") {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| r.to_string())
    } else {
        r.to_string()
    }
}

/// The kept ratio as it appears in run names (`0.2`, `0.05`).
pub fn ratio_label(k: f64) -> String {
    format!("{k}")
}

/// Flattens `{train = {steps = 3}}` and `{"train.steps" = 3}` to dotted pairs.
fn flatten(prefix: &str, t: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(inner) => flatten(&key, inner, out),
            _ => out.push((key, v.clone())),
        }
    }
}

fn set_args(pairs: &[(String, toml::Value)], args: &mut Vec<String>) {
    for (k, v) in pairs {
        args.push("--set".into());
        args.push(format!("{k}={v}"));
    }
}

/// Expands a sweep file into its runs; `output` overrides the file's root.
pub fn expand(path: &Path, f: &SweepFile, output: Option<&Path>) -> Result<Plan> {
    let root = match (output, &f.output) {
        (Some(o), _) => o.to_path_buf(),
        (None, Some(o)) => crate::model::io::expand_home(o),
        (None, None) => {
            return Err(Error::msg(format!(
                "{}: no `output` (the sweep's root folder) and no --output",
                path.display()
            )))
        }
    };
    let dir = f
        .recipes_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("recipes"));
    let mut recipe_files = Vec::new();
    for r in &f.recipes {
        let file = if r.contains('/') || r.ends_with(".toml") {
            PathBuf::from(r)
        } else {
            dir.join(format!("{r}.toml"))
        };
        if !file.is_file() {
            return Err(Error::msg(format!(
                "{}: `recipes`: recipe '{r}' is not a file ({} not found; names are looked up in \
                 `recipes_dir`, default recipes/, from the working directory)",
                path.display(),
                file.display()
            )));
        }
        recipe_files.push((recipe_name(r), file));
    }
    let mut common = Vec::new();
    flatten("data", &f.data, &mut common);
    flatten("", &f.set, &mut common);
    let variants: Vec<(Option<String>, Vec<(String, toml::Value)>)> = if f.overrides.is_empty() {
        vec![(None, Vec::new())]
    } else {
        f.overrides
            .iter()
            .map(|o| {
                let mut v = Vec::new();
                flatten("", &o.set, &mut v);
                (Some(o.tag.clone()), v)
            })
            .collect()
    };
    let own = |name: &str| -> Vec<(String, toml::Value)> {
        let mut v = Vec::new();
        if let Some(toml::Value::Table(t)) = f.recipe_set.get(name) {
            flatten("", t, &mut v);
        }
        v
    };
    let suffix = |tag: &Option<String>| tag.as_ref().map(|t| format!("-{t}")).unwrap_or_default();
    let mut runs: Vec<Run> = Vec::new();
    let base = |kind: &str, file: &Path, seed: u64, out: &Path| -> Vec<String> {
        let mut a = vec![
            kind.to_string(),
            if kind == "finetune" {
                "--config"
            } else {
                "--recipe"
            }
            .to_string(),
            file.display().to_string(),
            "--seed".into(),
            seed.to_string(),
            "--output".into(),
            out.display().to_string(),
            "--resume".into(),
            "--quiet".into(),
        ];
        if let Some(d) = &f.device {
            a.extend(["--device".into(), d.clone()]);
        }
        a
    };
    // Phase 0: fine-tuning, one per seed and variant.
    for (name, file) in recipe_files.iter().filter(|(n, _)| n == "finetune") {
        for &seed in &f.seeds {
            for (tag, sets) in &variants {
                let run_name = format!("{name}-s{seed}{}", suffix(tag));
                let out = root.join(&run_name);
                let mut args = base("finetune", file, seed, &out);
                if let Some(m) = &f.model {
                    args.extend(["--model".into(), m.display().to_string()]);
                }
                set_args(&common, &mut args);
                set_args(&own(name), &mut args);
                set_args(sets, &mut args);
                runs.push(Run {
                    index: runs.len(),
                    name: run_name,
                    recipe: name.clone(),
                    tag: tag.clone(),
                    kept_ratio: None,
                    seed,
                    phase: 0,
                    depends_on: None,
                    metric: f.metric.clone(),
                    args,
                    output: out,
                });
            }
        }
    }
    // Phase 1: every compression recipe, seed by seed.
    for &seed in &f.seeds {
        for &k in &f.kept_ratios {
            for (name, file) in recipe_files.iter().filter(|(n, _)| n != "finetune") {
                for (tag, sets) in &variants {
                    let run_name = format!("{name}-k{}-s{seed}{}", ratio_label(k), suffix(tag));
                    let out = root.join(&run_name);
                    let mut args = base("compress", file, seed, &out);
                    args.extend(["--kept-ratio".into(), ratio_label(k)]);
                    let depends_on = if f.start_from_finetune.contains(name) {
                        let ft = format!("finetune-s{seed}{}", suffix(tag));
                        args.extend([
                            "--model".into(),
                            root.join(&ft).join("best").display().to_string(),
                        ]);
                        Some(ft)
                    } else {
                        if let Some(m) = &f.model {
                            args.extend(["--model".into(), m.display().to_string()]);
                        }
                        None
                    };
                    set_args(&common, &mut args);
                    set_args(&own(name), &mut args);
                    set_args(sets, &mut args);
                    runs.push(Run {
                        index: runs.len(),
                        name: run_name,
                        recipe: name.clone(),
                        tag: tag.clone(),
                        kept_ratio: Some(k),
                        seed,
                        phase: 1,
                        depends_on,
                        metric: f.metric.clone(),
                        args,
                        output: out,
                    });
                }
            }
        }
    }
    Ok(Plan {
        source: path.to_path_buf(),
        root,
        runs,
    })
}

/// Reads and expands a sweep file.
pub fn plan(path: &Path, output: Option<&Path>) -> Result<Plan> {
    let f = read_sweep(path)?;
    expand(path, &f, output)
}

/// Where a run stands.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// Never started.
    New,
    /// Started, not finished: runs again with `--resume`.
    Interrupted,
    /// `summary.json` present, made by the same command: skipped.
    Finished,
    /// Finished, but by another command (the sweep file changed): left alone.
    Changed(String),
}

/// What `logs/<name>.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    #[serde(flatten)]
    pub run: Run,
    /// The exit status of the last attempt (`None` while it runs or when
    /// killed by a signal).
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub wall_seconds: Option<f64>,
    pub log: PathBuf,
}

pub fn record_path(root: &Path, name: &str) -> PathBuf {
    root.join("logs").join(format!("{name}.json"))
}

pub fn log_path(root: &Path, name: &str) -> PathBuf {
    root.join("logs").join(format!("{name}.log"))
}

pub fn read_record(path: &Path) -> Result<RunRecord> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::msg(format!("{}: {e}", path.display())))
}

/// The state of a run from its output folder and record.
pub fn state(root: &Path, run: &Run) -> State {
    let summary = run.output.join("summary.json");
    if summary.is_file() {
        let stopped = std::fs::read_to_string(&summary)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|v| v.get("stopped").and_then(|s| s.as_bool()).unwrap_or(false));
        if stopped != Some(false) {
            // Stopped early (train.stop_after) or unreadable: run it on.
            return State::Interrupted;
        }
        return match read_record(&record_path(root, &run.name)) {
            Ok(r) if r.run.args == run.args => State::Finished,
            Ok(_) => State::Changed(format!(
                "{} finished with another command than the sweep file now gives (see {}); remove \
                 the folder to run it again",
                run.output.display(),
                record_path(root, &run.name).display()
            )),
            Err(_) => State::Changed(format!(
                "{} has a summary.json but no record of the command that made it ({}); remove \
                 the folder to run it again",
                run.output.display(),
                record_path(root, &run.name).display()
            )),
        };
    }
    if run.output.exists() {
        State::Interrupted
    } else {
        State::New
    }
}

/// A command line as bash reads it.
pub fn shell_quote(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            let safe = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if safe {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
