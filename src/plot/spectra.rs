//! Normalised singular values (σᵢ/σ₁ against i / full rank) of a model's
//! compressible matrices, mean over the layers for each of the six matrix
//! types, beside the dense model's and the dense model magnitude-pruned to the
//! same density per matrix, with the numerical-rank threshold marked: the
//! picture of LPAF's premise (docs/algorithms.md §4.1). The singular values and
//! ranks are those of `lpaf info --rank` (`compress::rank`).

use std::path::Path;

use plotters::coord::combinators::IntoLogRange;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::compress::format::COMPRESSION_FILE;
use crate::compress::rank::{
    magnitude_pruned_like, model_matrices, numerical_rank, singular_values_many, Matrices,
    RANK_REL_TOL,
};
use crate::error::{Error, Result};
use crate::model::bert::SLOTS;
use crate::plot::{
    color, draw_err, draw_series, empty_panel, save, Picture, Series, Style, Written, FONT,
};

/// The lowest σᵢ/σ₁ drawn (exact zeros of a pruned matrix's tail sit here).
const FLOOR: f64 = 1e-7;

/// One version of the matrices (this model, dense, magnitude-pruned).
pub struct Version {
    pub label: String,
    /// Per slot type: mean σᵢ/σ₁ over the chosen layers.
    pub spectra: Vec<Vec<f64>>,
    /// Per slot type: mean numerical rank / full rank over the chosen layers.
    pub rank_fraction: Vec<f64>,
}

fn version(label: String, m: &Matrices, layers: &[usize]) -> Result<Version> {
    let (_, shapes, mats) = m;
    let refs: Vec<(&[f32], usize, usize)> = mats
        .iter()
        .zip(shapes)
        .map(|(v, &(o, i))| (&v[..], o, i))
        .collect();
    let svals = singular_values_many(&refs)?;
    let mut spectra = Vec::new();
    let mut rank_fraction = Vec::new();
    for s in 0..SLOTS.len() {
        let (o, i) = shapes[s];
        let full = o.min(i);
        let mut mean = vec![0.0; full];
        let mut rank = 0.0;
        for &l in layers {
            let sv = &svals[l * SLOTS.len() + s];
            let top = sv.first().copied().unwrap_or(0.0);
            for (j, m) in mean.iter_mut().enumerate() {
                let v = sv.get(j).copied().unwrap_or(0.0);
                *m += if top > 0.0 { v / top } else { 0.0 };
            }
            rank += numerical_rank(sv, RANK_REL_TOL) as f64 / full.max(1) as f64;
        }
        let n = layers.len().max(1) as f64;
        mean.iter_mut().for_each(|m| *m /= n);
        spectra.push(mean);
        rank_fraction.push(rank / n);
    }
    Ok(Version {
        label,
        spectra,
        rank_fraction,
    })
}

/// "movement-pruned (dir)" from compression.json, else the directory name.
fn model_label(dir: &Path) -> String {
    let name = dir
        .canonicalize()
        .ok()
        .map(|p| {
            // `…/run/compressed` reads better as `run/compressed`.
            let last: Vec<String> = p
                .iter()
                .rev()
                .take(2)
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            last.into_iter().rev().collect::<Vec<_>>().join("/")
        })
        .unwrap_or_else(|| dir.display().to_string());
    let method = std::fs::read_to_string(dir.join(COMPRESSION_FILE))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.get("method").and_then(|m| m.as_str()).map(String::from));
    match method {
        Some(m) => format!("{m} ({name})"),
        None => name,
    }
}

struct Spectra {
    versions: Vec<Version>,
    title: String,
    density: Vec<f64>,
}

impl Picture for Spectra {
    fn size(&self) -> (u32, u32) {
        (1500, 900)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(draw_err)?;
        let root = root.titled(&self.title, (FONT, 20)).map_err(draw_err)?;
        for (s, area) in root.split_evenly((2, 3)).iter().enumerate() {
            let title = format!("{} (density {:.3})", SLOTS[s], self.density[s]);
            let lowest = self
                .versions
                .iter()
                .flat_map(|v| v.spectra[s].iter().copied())
                .filter(|&v| v > 0.0)
                .fold(1.0f64, f64::min)
                .max(FLOOR);
            if self.versions.iter().all(|v| v.spectra[s].is_empty()) {
                empty_panel(area, &title, "no singular values")?;
                continue;
            }
            let lo = (lowest / 2.0).min(RANK_REL_TOL / 3.0);
            let mut chart = ChartBuilder::on(area)
                .caption(&title, (FONT, 17))
                .margin(12)
                .x_label_area_size(38)
                .y_label_area_size(62)
                .build_cartesian_2d(0f64..1f64, (lo..1.5f64).log_scale())
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .x_desc("i / full rank")
                .y_desc("σi / σ1")
                .x_labels(6)
                .y_labels(8)
                .y_label_formatter(&|v| format!("{v:.0e}"))
                .light_line_style(BLACK.mix(0.04))
                .label_style((FONT, 13))
                .draw()
                .map_err(draw_err)?;
            let mut series: Vec<Series> = self
                .versions
                .iter()
                .enumerate()
                .map(|(k, v)| {
                    let n = v.spectra[s].len().max(1) as f64;
                    Series {
                        label: Some(format!(
                            "{}: rank {:.3} of full",
                            v.label, v.rank_fraction[s]
                        )),
                        color: color(k),
                        // The first (this model) widest: the others may lie on it.
                        style: Style::Line(if k == 0 { 4 } else { 1 }),
                        points: v.spectra[s]
                            .iter()
                            .enumerate()
                            .map(|(j, &y)| ((j as f64 + 0.5) / n, y.max(FLOOR)))
                            .collect(),
                    }
                })
                .collect();
            series.push(Series {
                label: Some(format!("numerical-rank threshold {RANK_REL_TOL:e}·σ1")),
                color: RGBColor(90, 90, 90),
                style: Style::Dashed,
                points: vec![(0.0, RANK_REL_TOL), (1.0, RANK_REL_TOL)],
            });
            draw_series(&mut chart, &series)?;
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .label_font((FONT, 12))
                .draw()
                .map_err(draw_err)?;
        }
        Ok(())
    }
}

/// Spectra of `model` (dense or compressed), with `dense`'s and, with
/// `magnitude`, those of `dense` magnitude-pruned to `model`'s density per
/// matrix. `layer` picks one layer instead of the mean over all.
pub fn plot_spectra(
    model: &Path,
    dense: Option<&Path>,
    magnitude: bool,
    layer: Option<usize>,
    out: &Path,
    force: bool,
    size: Option<(u32, u32)>,
) -> Result<Written> {
    crate::ensure!(
        !magnitude || dense.is_some(),
        "--magnitude needs --dense DIR: the magnitude-pruned matrices are the dense model's, pruned to this model's density"
    );
    let m = model_matrices(model)?;
    let n_layers = m.0.len() / SLOTS.len();
    let layers: Vec<usize> = match layer {
        Some(l) => {
            crate::ensure!(
                l < n_layers,
                "--layer {l}: {} has layers 0..{}",
                model.display(),
                n_layers.saturating_sub(1)
            );
            vec![l]
        }
        None => (0..n_layers).collect(),
    };
    crate::ensure!(!layers.is_empty(), "{}: no encoder layers", model.display());
    let mut density = vec![0.0; SLOTS.len()];
    for &l in &layers {
        for (s, d) in density.iter_mut().enumerate() {
            let v = &m.2[l * SLOTS.len() + s];
            *d += v.iter().filter(|&&x| x != 0.0).count() as f64
                / v.len().max(1) as f64
                / layers.len() as f64;
        }
    }
    let mut versions = vec![version(model_label(model), &m, &layers)?];
    if let Some(d) = dense {
        let dm = model_matrices(d)?;
        if dm.0 != m.0 || dm.1 != m.1 {
            return Err(Error::msg(format!(
                "{}: not the same architecture as {}",
                d.display(),
                model.display()
            )));
        }
        versions.push(version(
            format!("dense ({})", model_label(d)),
            &dm,
            &layers,
        )?);
        if magnitude {
            let pruned = magnitude_pruned_like(&dm.2, &m.2, &m.1)?;
            let pm: Matrices = (dm.0.clone(), dm.1.clone(), pruned);
            versions.push(version(
                "dense magnitude-pruned to the same density".to_string(),
                &pm,
                &layers,
            )?);
        }
    }
    let title = format!(
        "normalised singular values, {}",
        match layer {
            Some(l) => format!("layer {l}"),
            None => format!("mean over {n_layers} layers"),
        }
    );
    let files = save(
        &Spectra {
            versions,
            title,
            density,
        },
        out,
        force,
        size,
    )?;
    Ok(Written {
        files,
        notes: Vec::new(),
    })
}
