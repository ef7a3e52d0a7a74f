//! `lpaf compress --recipe FILE`.

use crate::cli::config::ConfigTable;
use crate::cli::CompressArgs;
use crate::compress::pipeline::run_recipe;
use crate::compress::recipe::Recipe;
use crate::error::Result;
use crate::train::run::backend;

pub fn compress(a: CompressArgs) -> Result<()> {
    let mut table = ConfigTable::from_file(&a.recipe)?;
    a.common.apply(&mut table)?;
    if let Some(t) = &a.teacher {
        table.set_value(
            "distill.teacher",
            toml::Value::String(t.display().to_string()),
        )?;
    }
    if let Some(k) = a.kept_ratio {
        table.set_value("target.kept_ratio", toml::Value::Float(k))?;
    }
    let recipe: Recipe = table.parse()?;
    recipe.validate()?;
    let _lock = crate::cli::commands::claim_output(&recipe.output, &a.common)?;
    crate::train::rundir::write_data_split(
        &recipe.output,
        recipe.data.dev_split,
        recipe.data.split_seed,
    )?;
    let be = backend(recipe.device, a.common.quiet)?;
    let o = run_recipe(be.as_ref(), &recipe, a.common.resume, a.common.quiet)?;
    if o.stopped {
        crate::outln!(
            "{}: stopped after {} steps (train.stop_after); continue with --resume (checkpoint in {})",
            o.method,
            o.steps,
            recipe.output.display()
        )?;
        return Ok(());
    }
    let metrics: Vec<String> = o
        .dev_metrics
        .iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect();
    crate::outln!(
        "{}: kept ratio {:.4}; dev {}; {} steps in {:.1} s ({:.1} samples/s); model: {}",
        o.method,
        o.kept_ratio,
        if metrics.is_empty() {
            "–".to_string()
        } else {
            metrics.join(", ")
        },
        o.steps,
        o.train_seconds,
        o.samples_per_second,
        o.output.display()
    )?;
    Ok(())
}
