//! `lpaf info`: storage statistics of a model directory and, with `--rank`,
//! the numerical ranks behind LPAF's premise (first-order pruning yields
//! low-rank matrices; docs/algorithms.md §4.1).

use std::path::Path;

use serde::Serialize;
use serde_json::json;

use crate::cli::InfoArgs;
use crate::compress::format::{recount, stats_table};
use crate::compress::rank::{
    magnitude_pruned_like, model_matrices as matrices, numerical_rank, singular_values_many,
    RANK_REL_TOL,
};
use crate::error::{Error, Result};

#[derive(Serialize)]
struct RankRow {
    matrix: String,
    shape: [usize; 2],
    density: f64,
    rank: usize,
    dense_rank: Option<usize>,
    magnitude_rank: Option<usize>,
}

pub fn info(a: InfoArgs) -> Result<()> {
    if !a.rank {
        return print_stats(&a.model, a.json);
    }
    let (names, shapes, mats) = matrices(&a.model)?;
    let refs: Vec<(&[f32], usize, usize)> = mats
        .iter()
        .zip(&shapes)
        .map(|(m, &(o, i))| (&m[..], o, i))
        .collect();
    let svals = singular_values_many(&refs)?;
    let dense = match &a.dense {
        Some(d) => {
            let (dn, ds, dm) = matrices(d)?;
            if dn != names || ds != shapes {
                return Err(Error::msg(format!(
                    "{}: not the same architecture as {}",
                    d.display(),
                    a.model.display()
                )));
            }
            Some(dm)
        }
        None => None,
    };
    let mut rows = Vec::new();
    let mut dense_ranks = Vec::new();
    let mut mag_ranks = Vec::new();
    if let Some(dm) = &dense {
        let drefs: Vec<(&[f32], usize, usize)> = dm
            .iter()
            .zip(&shapes)
            .map(|(m, &(o, i))| (&m[..], o, i))
            .collect();
        for s in singular_values_many(&drefs)? {
            dense_ranks.push(numerical_rank(&s, RANK_REL_TOL));
        }
        // Magnitude pruning of the dense matrix at the compressed one's density.
        let pruned = magnitude_pruned_like(dm, &mats, &shapes)?;
        let prefs: Vec<(&[f32], usize, usize)> = pruned
            .iter()
            .zip(&shapes)
            .map(|(m, &(o, i))| (&m[..], o, i))
            .collect();
        for s in singular_values_many(&prefs)? {
            mag_ranks.push(numerical_rank(&s, RANK_REL_TOL));
        }
    }
    for (idx, name) in names.iter().enumerate() {
        let (o, i) = shapes[idx];
        rows.push(RankRow {
            matrix: name.clone(),
            shape: [o, i],
            density: mats[idx].iter().filter(|&&v| v != 0.0).count() as f64 / (o * i) as f64,
            rank: numerical_rank(&svals[idx], RANK_REL_TOL),
            dense_rank: dense_ranks.get(idx).copied(),
            magnitude_rank: mag_ranks.get(idx).copied(),
        });
    }
    if a.json {
        crate::outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    crate::outln!("numerical rank = singular values above 1e-3·σ_max")?;
    crate::outln!("| matrix | shape | density | rank | dense rank | magnitude-pruned rank |\n|---|---|---|---|---|---|")?;
    for r in &rows {
        let opt = |v: Option<usize>| v.map(|x| x.to_string()).unwrap_or_else(|| "–".into());
        crate::outln!(
            "| {} | {}×{} | {:.3} | {} | {} | {} |",
            r.matrix.trim_start_matches("bert.encoder."),
            r.shape[0],
            r.shape[1],
            r.density,
            r.rank,
            opt(r.dense_rank),
            opt(r.magnitude_rank)
        )?;
    }
    let mean = |f: &dyn Fn(&RankRow) -> Option<usize>| {
        let v: Vec<f64> = rows
            .iter()
            .filter_map(|r| f(r).map(|x| x as f64 / r.shape[0].min(r.shape[1]) as f64))
            .collect();
        if v.is_empty() {
            None
        } else {
            Some(v.iter().sum::<f64>() / v.len() as f64)
        }
    };
    crate::outln!(
        "mean rank / full rank: this model {:.3}{}{}",
        mean(&|r| Some(r.rank)).unwrap_or(0.0),
        mean(&|r| r.dense_rank)
            .map(|v| format!(", dense {v:.3}"))
            .unwrap_or_default(),
        mean(&|r| r.magnitude_rank)
            .map(|v| format!(", magnitude-pruned {v:.3}"))
            .unwrap_or_default()
    )?;
    Ok(())
}

/// The statistics table of a model directory.
fn print_stats(dir: &Path, as_json: bool) -> Result<()> {
    let (m, t) = recount(dir)?;
    if as_json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"matrices": m, "total": t}))?
        )?;
    } else {
        crate::out!("{}", stats_table(&m, &t))?;
    }
    Ok(())
}
