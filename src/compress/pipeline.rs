//! Running a recipe end to end: load the starting model and the data, install
//! the method's layers, train with its hooks (optionally distilling), and
//! save the compressed model with its statistics.
//!
//! Outputs under `output/`: `compressed/` (docs/algorithms.md §7 format), `log.jsonl`,
//! `summary.json`, `checkpoint/` (resumable). LPAF has three stages: stage 1
//! writes `stage1/` (its own log and checkpoint) and `pruned/` (the pruned
//! model, compressed format); stage 3 trains in `output/` itself. A resumed
//! LPAF run whose `pruned/` exists skips stage 1; the factorization is
//! deterministic, so stage 3 resumes onto the same structure.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::backend::{Backend, Tensor};
use crate::compress::distill::{check_teacher, DistillHooks};
use crate::compress::factorize::{bias_param, plain_svd};
use crate::compress::format::{load_compressed, save_compressed, stats_table, CompressionInfo};
use crate::compress::layers::{FactorizedLinear, MaskKind};
use crate::compress::losparse::{install_losparse, LoSparseHooks, LoSparseSettings};
use crate::compress::lpaf::{
    factorize_pruned, finalize_lowrank, FactorizeSettings, MixedRankHooks, MixedRankSchedule,
};
use crate::compress::prune::{
    finalize_masks, init_scores, install_masked, PruneHooks, PruneKind, PruneSettings,
};
use crate::compress::rank::{allocate, singular_values_many};
use crate::compress::recipe::{Method, Recipe};
use crate::error::{Error, Result};
use crate::model::bert::{linear_prefix, DenseFactory};
use crate::model::io::expand_home;
use crate::model::linear::DenseLinear;
use crate::model::param::Param;
use crate::model::weights::load_model_dir;
use crate::model::Bert;
use crate::train::config::TrainSection;
use crate::train::run::{load_data, report_load, run_training, RunData};
use crate::train::schedule::CubicSchedule;
use crate::train::trainer::{fingerprint, TrainHooks, TrainSummary};

/// What a finished compression reports (also `summary.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompressOutcome {
    pub method: String,
    /// The device that ran it.
    pub device: String,
    pub kept_ratio: f64,
    pub dev_metrics: Vec<(String, f64)>,
    pub main_metric: Option<f64>,
    pub train_seconds: f64,
    pub samples_per_second: f64,
    pub steps: u64,
    pub output: PathBuf,
    pub stages: Vec<TrainSummary>,
    /// The run stopped early (`train.stop_after`): nothing was saved but the
    /// checkpoint; resume to finish.
    pub stopped: bool,
    /// What reproducing the run needs (src/train/provenance.rs).
    #[serde(default)]
    pub reproduction: serde_json::Value,
}

/// Wraps hooks with distillation when the recipe asks for it.
fn with_distill<'a, H: TrainHooks + 'a>(
    be: &dyn Backend,
    recipe: &Recipe,
    student: &Bert,
    hooks: H,
) -> Result<Box<dyn TrainHooks + 'a>> {
    match &recipe.distill {
        None => Ok(Box::new(hooks)),
        Some(d) => {
            let dir = expand_home(&d.teacher);
            // The teacher keeps its own (fine-tuned) head; one created here would be untrained.
            let (teacher, _) = load_model_dir(be, &dir, None, recipe.train.seed, &DenseFactory)
                .map_err(|e| Error::msg(format!("teacher {}: {e}", dir.display())))?;
            check_teacher(student, &teacher, &d.settings())
                .map_err(|e| Error::msg(format!("teacher {}: {e}", dir.display())))?;
            Ok(Box::new(DistillHooks {
                inner: hooks,
                teacher,
                settings: d.settings(),
            }))
        }
    }
}

struct HookRef<'a>(&'a mut dyn TrainHooks);
impl TrainHooks for HookRef<'_> {
    fn on_step_begin(&mut self, be: &dyn Backend, m: &mut Bert, s: u64) -> Result<()> {
        self.0.on_step_begin(be, m, s)
    }
    fn uses_logits(&self) -> bool {
        self.0.uses_logits()
    }
    fn extra_loss(
        &mut self,
        be: &dyn Backend,
        ctx: &crate::model::StepCtx,
        b: &crate::data::Batch,
        st: &Bert,
        l: &[f32],
        sc: f32,
    ) -> Result<Option<crate::train::trainer::ExtraLoss>> {
        self.0.extra_loss(be, ctx, b, st, l, sc)
    }
    fn custom_update(
        &mut self,
        be: &dyn Backend,
        m: &mut Bert,
        hp: &dyn Fn(&Param) -> crate::backend::AdamWStep,
    ) -> Result<bool> {
        self.0.custom_update(be, m, hp)
    }
    fn on_step_end(&mut self, be: &dyn Backend, m: &mut Bert, s: u64) -> Result<()> {
        self.0.on_step_end(be, m, s)
    }
    fn log_fields(
        &mut self,
        be: &dyn Backend,
        m: &mut Bert,
    ) -> Result<Vec<(String, serde_json::Value)>> {
        self.0.log_fields(be, m)
    }
    fn bar_note(&self) -> String {
        self.0.bar_note()
    }
    fn state(&self) -> serde_json::Value {
        self.0.state()
    }
    fn restore(&mut self, s: &serde_json::Value) -> Result<()> {
        self.0.restore(s)
    }
}

/// Runs a recipe. `resume` continues from the output's checkpoints.
pub fn run_recipe(
    be: &dyn Backend,
    recipe: &Recipe,
    resume: bool,
    quiet: bool,
) -> Result<CompressOutcome> {
    recipe.validate()?;
    let model_dir = expand_home(&recipe.model);
    {
        let root = crate::model::weights::model_root(&model_dir)?;
        let config = crate::model::config::BertConfig::load(&root.join("config.json"))?;
        check_budgets(recipe, &config)?;
        config.check_max_seq_len(recipe.data.max_seq_len, &root.join("config.json"))?;
    }
    let (_tok, data) = load_data(&model_dir, &recipe.data, recipe.train.max_train_rows)?;
    let kind = data.task.kind.clone();
    let out = recipe.output.clone();
    let mut t = recipe.train.clone();
    // Mid-schedule models are not at the target size: keep the final one.
    t.keep_best = false;
    let recipe_json = serde_json::to_value(recipe)?;
    let base_fp = json!({"recipe": recipe_json});
    let mut no_best = |_: &dyn Backend, _: &mut Bert, _: &Path| -> Result<()> { Ok(()) };
    let mut stages: Vec<TrainSummary> = Vec::new();
    let target = recipe.target.kept_ratio;
    // Trains one stage; a stage that stopped before its last step
    // (train.stop_after) ends the invocation, and `--resume` continues it.
    macro_rules! stage {
        ($model:expr, $hooks:expr, $t:expr, $dir:expr, $name:expr) => {{
            let fp = fingerprint(&json!({"stage": $name, "base": base_fp}));
            let total = total_steps_for($t, data.train.as_deref())?;
            let mut hooks = HookRef($hooks.as_mut());
            let s = run_training(be, $model, &data, $t, $dir, &mut hooks, &mut no_best, resume, &fp, quiet)?;
            let done = s.steps >= total;
            stages.push(s);
            if !done {
                return Ok(stopped(recipe, stages));
            }
        }};
    }

    let load_start = |seed: u64| -> Result<Bert> {
        let (m, report) = load_model_dir(be, &model_dir, Some(kind.clone()), seed, &DenseFactory)?;
        report_load(&report, quiet);
        Ok(m)
    };

    let mut model = match recipe.method {
        Method::Movement | Method::SoftMovement | Method::Magnitude => {
            let mut model = load_start(t.seed)?;
            let kind = match recipe.method {
                Method::Movement => PruneKind::Movement,
                Method::SoftMovement => PruneKind::SoftMovement,
                _ => PruneKind::Magnitude,
            };
            install_masked(be, &mut model, kind.mask_kind(recipe.pruning.score_rule))?;
            start_scores(be, &mut model, recipe, &t, &data)?;
            let mut hooks = with_distill(
                be,
                recipe,
                &model,
                prune_hooks(recipe, kind, target, &t, &data)?,
            )?;
            stage!(&mut model, hooks, &t, &out, "prune");
            drop(hooks);
            finalize_masks(be, &mut model)?;
            model
        }
        Method::Svd => {
            let mut model = load_start(t.seed)?;
            factorize_dense(be, &mut model, target, recipe)?;
            let mut hooks = with_distill(be, recipe, &model, crate::train::trainer::NoHooks)?;
            stage!(&mut model, hooks, &t, &out, "svd");
            model
        }
        Method::Losparse => {
            let mut model = load_start(t.seed)?;
            let l = &recipe.losparse;
            let dense: usize = dense_params(&model);
            let mut s = losparse_settings(recipe, &t, &data, 0.0)?;
            let lowrank = match l.rank {
                Some(r) => {
                    check_rank(&model, r)?;
                    let rho = rank_to_ratio(&model, r);
                    s.rank_ratio = rho;
                    install_losparse(be, &mut model, &s, t.seed)?
                }
                None => install_losparse(be, &mut model, &s, t.seed)?,
            };
            let lowrank_frac = lowrank as f64 / dense as f64;
            let final_kept = match l.final_kept {
                Some(g) => g,
                None => {
                    let g = target - lowrank_frac;
                    if g <= 0.0 {
                        return Err(Error::msg(format!(
                            "impossible budget: the low-rank part alone keeps {lowrank_frac:.4} of the parameters, \
                             target.kept_ratio is {target}; lower losparse.rank_ratio or raise the target"
                        )));
                    }
                    g
                }
            };
            s.final_kept = final_kept;
            let total = total_steps_for(&t, data.train.as_deref())?;
            let mut hooks = with_distill(be, recipe, &model, LoSparseHooks::new(s, total))?;
            stage!(&mut model, hooks, &t, &out, "losparse");
            model
        }
        Method::Lpaf => {
            let gamma_s = recipe.lpaf.sparse_kept.unwrap_or(target);
            let pruned_dir = out.join("pruned");
            let mut model = if resume
                && pruned_dir
                    .join(crate::compress::format::COMPRESSION_FILE)
                    .is_file()
            {
                if !quiet {
                    eprintln!("stage 1 already done: loading {}", pruned_dir.display());
                }
                load_compressed(be, &pruned_dir, t.seed)?.0
            } else {
                if !quiet {
                    eprintln!("LPAF stage 1: movement pruning to {gamma_s} kept per matrix");
                }
                let mut model = load_start(t.seed)?;
                install_masked(
                    be,
                    &mut model,
                    MaskKind::Movement(recipe.pruning.score_rule),
                )?;
                start_scores(be, &mut model, recipe, &t, &data)?;
                let mut hooks = with_distill(
                    be,
                    recipe,
                    &model,
                    prune_hooks(recipe, PruneKind::Movement, gamma_s, &t, &data)?,
                )?;
                stage!(&mut model, hooks, &t, &out.join("stage1"), "lpaf-prune");
                drop(hooks);
                finalize_masks(be, &mut model)?;
                save_compressed(
                    be,
                    &model,
                    &pruned_dir,
                    Some(&model_dir),
                    Some(&data.task.label_names),
                    "movement",
                    recipe_json.clone(),
                )?;
                model
            };
            if !quiet {
                eprintln!(
                    "LPAF stage 2: sparsity-aware SVD, {:?} rank allocation to kept ratio {target}",
                    recipe.lpaf.allocation
                );
            }
            let lp = &recipe.lpaf;
            let fs = FactorizeSettings {
                omega: lp.omega,
                em_steps: lp.em_steps,
                rel_tol: lp.rel_tol,
                power_iters: lp.power_iters,
                init_power_iters: lp.init_power_iters,
                allocation: lp.allocation,
            };
            let report = factorize_pruned(be, &mut model, target, &fs, t.seed)?;
            crate::model::io::write_atomic(
                &out.join("factorization.json"),
                serde_json::to_string_pretty(&report)?.as_bytes(),
            )?;
            let mut t3 = t.clone();
            if let Some(s) = lp.finetune_steps {
                t3.steps = Some(s);
            } else if let Some(e) = lp.finetune_epochs {
                t3.steps = None;
                t3.epochs = e;
            }
            if let Some(lr) = lp.finetune_lr {
                t3.lr = lr;
            }
            let total3 = total_steps_for(&t3, data.train.as_deref())?;
            let sched = MixedRankSchedule {
                p0: lp.p0,
                end_step: (lp.mixed_fraction * total3 as f64).round() as u64,
            };
            if !quiet {
                eprintln!(
                    "LPAF stage 3: mixed-rank fine-tuning, p from {} to 0 by step {}",
                    lp.p0, sched.end_step
                );
            }
            let mut hooks = with_distill(
                be,
                recipe,
                &model,
                MixedRankHooks {
                    schedule: sched,
                    p: lp.p0,
                },
            )?;
            stage!(&mut model, hooks, &t3, &out, "lpaf-mixed");
            drop(hooks);
            finalize_lowrank(&mut model);
            model
        }
    };
    let info = save_compressed(
        be,
        &model,
        &out.join("compressed"),
        Some(&model_dir),
        Some(&data.task.label_names),
        recipe.method.name(),
        recipe_json,
    )?;
    if !quiet {
        crate::out!("{}", stats_table(&info.matrices, &info.total))?;
    }
    outcome(be, &mut model, recipe, &data, &t, &info, stages)
}

fn outcome(
    be: &dyn Backend,
    model: &mut Bert,
    recipe: &Recipe,
    data: &RunData,
    t: &TrainSection,
    info: &CompressionInfo,
    stages: Vec<TrainSummary>,
) -> Result<CompressOutcome> {
    // The final model's dev score (after finalizing masks / factors).
    let (metrics, main) = match &data.dev {
        Some(d) => {
            let r = crate::train::eval::evaluate(
                be,
                model,
                d,
                &data.task.metrics,
                t.eval_batch_size,
                t.precision,
            )?;
            let main = r.main_value();
            (r.metrics, main)
        }
        None => (Vec::new(), None),
    };
    let secs: f64 = stages.iter().map(|s| s.train_seconds).sum();
    let steps: u64 = stages.iter().map(|s| s.steps).sum();
    let sps = if stages.is_empty() {
        0.0
    } else {
        stages
            .iter()
            .map(|s| s.samples_per_second * s.train_seconds)
            .sum::<f64>()
            / secs.max(1e-9)
    };
    let o = CompressOutcome {
        method: recipe.method.name().to_string(),
        device: be.name(),
        kept_ratio: info.total.kept_ratio,
        dev_metrics: metrics,
        main_metric: main,
        train_seconds: secs,
        samples_per_second: sps,
        steps,
        output: recipe.output.join("compressed"),
        stages,
        stopped: false,
        reproduction: crate::train::provenance::reproduction(
            be,
            recipe.train.precision,
            recipe.train.seed,
            recipe,
            &crate::train::provenance::data_files(&recipe.data),
            &expand_home(&recipe.model),
        )?,
    };
    crate::model::io::write_atomic(
        &recipe.output.join("summary.json"),
        serde_json::to_string_pretty(&o)?.as_bytes(),
    )?;
    Ok(o)
}

fn stopped(recipe: &Recipe, stages: Vec<TrainSummary>) -> CompressOutcome {
    CompressOutcome {
        method: recipe.method.name().to_string(),
        device: String::new(),
        kept_ratio: f64::NAN,
        dev_metrics: Vec::new(),
        main_metric: None,
        train_seconds: stages.iter().map(|s| s.train_seconds).sum(),
        samples_per_second: 0.0,
        steps: stages.iter().map(|s| s.steps).sum(),
        output: recipe.output.join("checkpoint"),
        stages,
        stopped: true,
        reproduction: serde_json::Value::Null,
    }
}

fn dense_params(model: &Bert) -> usize {
    model
        .layers
        .iter()
        .flat_map(|l| l.linears.iter())
        .map(|l| l.in_features() * l.out_features())
        .sum()
}

fn check_rank(model: &Bert, r: usize) -> Result<()> {
    for (li, l) in model.layers.iter().enumerate() {
        for (s, x) in l.linears.iter().enumerate() {
            let m = x.in_features().min(x.out_features());
            if r > m {
                return Err(Error::msg(format!(
                    "rank {r} is larger than matrix {} ({}×{})",
                    linear_prefix(li, s),
                    x.out_features(),
                    x.in_features()
                )));
            }
        }
    }
    Ok(())
}

/// Refuses, before any work, budgets the recipe's keys make inconsistent:
/// an explicit `svd.rank` / `losparse.rank` keeping more than
/// `target.kept_ratio`, a `losparse.final_kept` that with the low-rank part
/// does not end at the target (within 2 %), and a target too small to give
/// every matrix rank 1 (SVD, LPAF; see [`allocate`]).
pub fn check_budgets(recipe: &Recipe, config: &crate::model::config::BertConfig) -> Result<()> {
    use crate::compress::rank::uniform_rank;
    let target = recipe.target.kept_ratio;
    let shapes: Vec<(usize, usize)> = (0..config.num_hidden_layers)
        .flat_map(|_| (0..6).map(|s| crate::model::bert::slot_shape(config, s)))
        .collect();
    let dense: f64 = shapes.iter().map(|&(o, i)| (o * i) as f64).sum();
    let frac = |ranks: &dyn Fn(usize, usize) -> usize| -> f64 {
        shapes
            .iter()
            .map(|&(o, i)| (ranks(o, i) * (o + i)) as f64)
            .sum::<f64>()
            / dense
    };
    let over = |k: f64| k > target * 1.02 + 1e-12;
    match recipe.method {
        Method::Svd => {
            if let Some(r) = recipe.svd.rank {
                for (k, &(o, i)) in shapes.iter().enumerate() {
                    if r > o.min(i) {
                        return Err(Error::msg(format!(
                            "svd.rank: rank {r} is larger than matrix {} ({o}×{i})",
                            linear_prefix(k / 6, k % 6)
                        )));
                    }
                }
                let k = frac(&|o, i| r.min(o.min(i)));
                if over(k) {
                    return Err(Error::msg(format!(
                        "svd.rank = {r} keeps {k:.4} of the parameters, more than target.kept_ratio = {target}: \
                         lower svd.rank, raise target.kept_ratio, or leave svd.rank out to allocate ranks to the target"
                    )));
                }
            }
        }
        Method::Losparse => {
            let l = &recipe.losparse;
            let (h, _) = shapes[0];
            let rho = match l.rank {
                Some(r) => (r as f64 * (2 * h) as f64 / (h * h) as f64).min(0.999_999) - 1e-12,
                None => l.rank_ratio,
            };
            let low = frac(&|o, i| uniform_rank(rho, o, i));
            let what = match l.rank {
                Some(r) => format!("losparse.rank = {r}"),
                None => format!("losparse.rank_ratio = {}", l.rank_ratio),
            };
            if over(low) {
                return Err(Error::msg(format!(
                    "impossible budget: {what}: the low-rank part alone keeps {low:.4} of the parameters, more than \
                     target.kept_ratio = {target}; lower it or raise the target"
                )));
            }
            if let Some(g) = l.final_kept {
                let total = low + g;
                if (total - target).abs() > 0.02 * target {
                    return Err(Error::msg(format!(
                        "losparse.final_kept = {g} with the low-rank part ({what}: {low:.4}) ends at a kept \
                         ratio of {total:.4}, but target.kept_ratio = {target}: set losparse.final_kept = {:.4} \
                         (or leave it out: it defaults to what the target leaves) or target.kept_ratio = {total:.4}",
                        (target - low).max(0.0)
                    )));
                }
            }
        }
        Method::Lpaf => {
            let floor = frac(&|_, _| 1);
            if target < floor {
                return Err(Error::msg(format!(
                    "target.kept_ratio = {target} cannot give each of the {} matrices rank 1 \
                     (that needs a kept ratio of at least {floor:.6}); raise target.kept_ratio",
                    shapes.len()
                )));
            }
        }
        _ => {}
    }
    if recipe.method == Method::Svd && recipe.svd.rank.is_none() {
        let floor = frac(&|_, _| 1);
        if target < floor {
            return Err(Error::msg(format!(
                "target.kept_ratio = {target} cannot give each of the {} matrices rank 1 \
                 (that needs a kept ratio of at least {floor:.6}); raise target.kept_ratio",
                shapes.len()
            )));
        }
    }
    Ok(())
}

/// The ρ that gives rank `r` on the first matrix (for an explicit LoSparse rank).
fn rank_to_ratio(model: &Bert, r: usize) -> f64 {
    let l = &model.layers[0].linears[0];
    let (o, i) = (l.out_features() as f64, l.in_features() as f64);
    (r as f64 * (o + i) / (o * i)).min(0.999_999) - 1e-12
}

/// Initial movement scores from `pruning.score_init` (see [`init_scores`]).
fn start_scores(
    be: &dyn Backend,
    model: &mut Bert,
    recipe: &Recipe,
    t: &TrainSection,
    data: &RunData,
) -> Result<()> {
    let total = total_steps_for(t, data.train.as_deref())?;
    let drift = t.score_lr as f64 * total as f64 / 2.0;
    let p = &recipe.pruning;
    init_scores(be, model, p.score_init, p.score_init_scale, drift)
}

fn prune_hooks(
    recipe: &Recipe,
    kind: PruneKind,
    kept: f64,
    t: &TrainSection,
    data: &RunData,
) -> Result<PruneHooks> {
    let total = total_steps_for(t, data.train.as_deref())?;
    let p = &recipe.pruning;
    let warm = (p.initial_warmup * total as f64).round() as u64;
    let cool = (p.final_warmup * total as f64).round() as u64;
    Ok(PruneHooks::new(PruneSettings {
        kind,
        scope: p.scope,
        schedule: CubicSchedule::new(1.0, kept, total, warm, cool),
        soft_tau: p.soft_tau,
        soft_lambda: p.soft_lambda,
        soft_min_kept: p.soft_min_kept,
        mask_interval: p.mask_interval,
    }))
}

fn losparse_settings(
    recipe: &Recipe,
    t: &TrainSection,
    data: &RunData,
    final_kept: f64,
) -> Result<LoSparseSettings> {
    let l = &recipe.losparse;
    let total = total_steps_for(t, data.train.as_deref())?;
    // Default unit: a tenth of the run, shrunk for short runs so that the
    // warm-up and final phases still fit (an explicit unit is taken as is).
    let phases = l.initial_warmup + l.final_warmup;
    let unit = l.unit_steps.unwrap_or_else(|| {
        let u = (total / 10).max(1);
        if phases * u > total {
            (total / (phases + 1)).max(1)
        } else {
            u
        }
    });
    if (l.initial_warmup + l.final_warmup) * unit > total {
        return Err(Error::msg(format!(
            "losparse: initial_warmup + final_warmup = {} units of {unit} steps exceed the {total} steps of the run",
            l.initial_warmup + l.final_warmup
        )));
    }
    Ok(LoSparseSettings {
        rank_ratio: l.rank_ratio,
        final_kept,
        delta_t: l.delta_t,
        beta1: l.beta1,
        beta2: l.beta2,
        structured: l.structured,
        hard_mask: l.hard_mask,
        unit_steps: unit,
        initial_warmup: l.initial_warmup,
        final_warmup: l.final_warmup,
    })
}

/// The SVD baseline: every dense matrix → rank-r truncated SVD (√Σ split),
/// ranks from the budget (uniform or energy) or one explicit rank.
pub fn factorize_dense(
    be: &dyn Backend,
    model: &mut Bert,
    kept: f64,
    recipe: &Recipe,
) -> Result<()> {
    let mut shapes = Vec::new();
    let mut host = Vec::new();
    for (li, layer) in model.layers.iter().enumerate() {
        for (s, l) in layer.linears.iter().enumerate() {
            let d = l.as_any().downcast_ref::<DenseLinear>().ok_or_else(|| {
                Error::msg(format!(
                    "{}: the SVD baseline factorizes dense matrices, found '{}'",
                    linear_prefix(li, s),
                    l.kind()
                ))
            })?;
            shapes.push((l.out_features(), l.in_features()));
            host.push(be.to_f32(&d.weight.value)?);
        }
    }
    let dense: usize = shapes.iter().map(|(o, i)| o * i).sum();
    let ranks: Vec<usize> = match recipe.svd.rank {
        Some(r) => {
            check_rank(model, r)?;
            vec![r; shapes.len()]
        }
        None => {
            let budget = (kept * dense as f64).floor() as usize;
            let mats: Vec<(&[f32], usize, usize)> = host
                .iter()
                .zip(&shapes)
                .map(|(h, &(o, i))| (&h[..], o, i))
                .collect();
            let sv = if recipe.svd.allocation.needs_spectra() {
                singular_values_many(&mats)?
            } else {
                vec![Vec::new(); shapes.len()]
            };
            allocate(recipe.svd.allocation, &sv, &shapes, budget)?
        }
    };
    let ws: Vec<Tensor> = host
        .iter()
        .zip(&shapes)
        .map(|(h, &(o, i))| be.from_f32(h, &[o, i]))
        .collect::<Result<_>>()?;
    let factors = plain_svd(be, &ws, &ranks, recipe.train.seed)?;
    let mut k = 0;
    for (li, layer) in model.layers.iter_mut().enumerate() {
        for s in 0..6 {
            let prefix = linear_prefix(li, s);
            let (o, i) = shapes[k];
            let d = layer.linears[s]
                .as_any()
                .downcast_ref::<DenseLinear>()
                .expect("checked");
            let bias = bias_param(be, &prefix, &d.bias.value)?;
            let f = FactorizedLinear::new(
                be,
                &prefix,
                &factors[k].u,
                &factors[k].v,
                bias,
                o,
                i,
                ranks[k],
            )?;
            layer.linears[s] = Box::new(f);
            k += 1;
        }
    }
    Ok(())
}

/// Optimizer steps of a training section over the run's training data.
fn total_steps_for(t: &TrainSection, train: Option<&crate::data::dataset::Dataset>) -> Result<u64> {
    let ds = train
        .ok_or_else(|| Error::msg("no training data (give train data or a data directory)"))?;
    crate::train::run::total_steps(t, ds)
}
