//! `lpaf plot`: training curves, singular-value spectra, a kernel roofline.

use std::path::PathBuf;

use clap::Args;

use crate::error::Result;
use crate::plot::{curves, roofline, spectra};

#[derive(Args, Debug)]
#[command(
    after_help = "Output: -o X.png writes a PNG, -o X.svg an SVG, -o X (no extension) both \
X.png and X.svg. An existing file is never replaced without --force.\n\n\
Examples:\n  lpaf plot runs/movement runs/magnitude -o curves.png\n  \
lpaf plot --spectra runs/movement/compressed --dense ~/.cache/lpaf/minilm --magnitude -o spectra\n  \
lpaf bench kernels --jsonl bench.jsonl && lpaf plot --roofline bench.jsonl -o roofline.svg"
)]
pub struct PlotArgs {
    /// Run directories (each with the log.jsonl every run writes): loss, learning
    /// rate, dev metric, kept ratio vs schedule, mask churn, magnitude overlap; several are overlaid.
    pub runs: Vec<PathBuf>,
    /// Singular-value spectra of this model directory's matrices (dense or compressed),
    /// mean over the layers per matrix type, with the numerical-rank threshold (1e-3·σ1).
    #[arg(long, value_name = "MODEL_DIR", conflicts_with_all = ["runs", "roofline"])]
    pub spectra: Option<PathBuf>,
    /// --spectra: also the spectra of this dense model (e.g. the one pruning started from).
    #[arg(long, value_name = "DIR", requires = "spectra")]
    pub dense: Option<PathBuf>,
    /// --spectra: also the --dense model magnitude-pruned to the same density per matrix.
    #[arg(long, requires = "dense")]
    pub magnitude: bool,
    /// --spectra: one encoder layer instead of the mean over all.
    #[arg(long, requires = "spectra")]
    pub layer: Option<usize>,
    /// The roofline of `lpaf bench kernels --jsonl FILE` (the ceilings measured in the same run).
    #[arg(long, value_name = "BENCH.jsonl", conflicts_with = "runs")]
    pub roofline: Option<PathBuf>,
    /// Curves: a legend name per run, in order (default: the directory names).
    #[arg(long)]
    pub label: Vec<String>,
    /// Curves: weight of the past in the loss's moving average (0 = raw).
    #[arg(long, default_value_t = 0.6)]
    pub smooth: f64,
    /// The picture: X.png, X.svg, or X for both.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Picture size in pixels, WIDTHxHEIGHT (default: curves and spectra 1500x900, roofline 1200x800).
    #[arg(long)]
    pub size: Option<String>,
    /// Replace existing output files.
    #[arg(long)]
    pub force: bool,
}

pub fn plot(a: PlotArgs) -> Result<()> {
    let size = a.size.as_deref().map(crate::plot::parse_size).transpose()?;
    let w = if let Some(m) = &a.spectra {
        spectra::plot_spectra(
            m,
            a.dense.as_deref(),
            a.magnitude,
            a.layer,
            &a.output,
            a.force,
            size,
        )?
    } else if let Some(b) = &a.roofline {
        roofline::plot_roofline(b, &a.output, a.force, size)?
    } else {
        crate::ensure!(
            !a.runs.is_empty(),
            "nothing to plot: give run directories, --spectra MODEL_DIR or --roofline BENCH.jsonl"
        );
        curves::plot_runs(&a.runs, &a.label, a.smooth, &a.output, a.force, size)?
    };
    for n in &w.notes {
        eprintln!("note: {n}");
    }
    for f in &w.files {
        crate::outln!("wrote {}", f.display())?;
    }
    Ok(())
}
