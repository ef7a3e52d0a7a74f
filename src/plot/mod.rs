//! `lpaf plot`: pictures of what the engine writes as text — training curves
//! from run logs ([`curves`]), singular-value spectra of model directories
//! ([`spectra`]), and the roofline of `lpaf bench kernels --jsonl`
//! ([`roofline`]).
//!
//! Drawn with `plotters` on its pure-Rust bitmap (PNG) and SVG backends; text
//! is laid out with `ab_glyph` from the Noto Sans font that the
//! `ttf-noto-sans` crate embeds, so no system font library is involved.
//! Only `cli` uses this module.

pub mod curves;
pub mod roofline;
pub mod spectra;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{Error, Result};

/// What a plot wrote, and what it left out (printed by the command).
#[derive(Debug, Default)]
pub struct Written {
    pub files: Vec<PathBuf>,
    pub notes: Vec<String>,
}

/// Line colours, one per run / method (colour-blind-safe "tab10" tones).
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

pub(crate) const FONT: &str = "sans-serif";

pub(crate) fn draw_err<E: std::fmt::Display>(e: E) -> Error {
    Error::msg(format!("drawing the picture: {e}"))
}

/// A picture that can be drawn on any plotters backend.
pub trait Picture {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Png,
    Svg,
}

/// The files `out` names: `X.png` or `X.svg` one file, `X` (no extension)
/// both `X.png` and `X.svg`.
pub fn output_paths(out: &Path) -> Result<Vec<(PathBuf, Format)>> {
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    Ok(match ext.as_deref() {
        Some("png") => vec![(out.to_path_buf(), Format::Png)],
        Some("svg") => vec![(out.to_path_buf(), Format::Svg)],
        None => vec![
            (out.with_extension("png"), Format::Png),
            (out.with_extension("svg"), Format::Svg),
        ],
        Some(other) => crate::bail!(
            "{}: unknown picture format .{other} (use .png, .svg, or no extension for both)",
            out.display()
        ),
    })
}

fn register_font() -> Result<()> {
    static OK: OnceLock<bool> = OnceLock::new();
    let ok = *OK.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, ttf_noto_sans::REGULAR).is_ok()
    });
    crate::ensure!(ok, "the embedded font (Noto Sans) could not be loaded");
    Ok(())
}

/// Draws `pic` into the file(s) `out` names. An existing file is an error
/// unless `force`; each file is written to a temporary name beside it and
/// renamed, so a failed drawing leaves nothing half-written.
/// `size` (width, height in pixels) replaces the picture's own.
pub fn save(
    pic: &impl Picture,
    out: &Path,
    force: bool,
    size: Option<(u32, u32)>,
) -> Result<Vec<PathBuf>> {
    register_font()?;
    if let Some((w, h)) = size {
        crate::ensure!(
            (400..=8000).contains(&w) && (300..=8000).contains(&h),
            "--size {w}x{h}: width 400…8000 and height 300…8000 pixels"
        );
    }
    let outs = output_paths(out)?;
    if !force {
        for (p, _) in &outs {
            crate::ensure!(
                !p.exists(),
                "{}: exists; pass --force to replace it, or choose another name",
                p.display()
            );
        }
    }
    let size = size.unwrap_or(pic.size());
    let mut written = Vec::new();
    for (path, fmt) in outs {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        match fmt {
            Format::Png => {
                // The bitmap backend picks its encoder by extension: keep .png.
                let tmp = tempfile::Builder::new()
                    .prefix(".lpaf-plot-")
                    .suffix(".png")
                    .tempfile_in(&dir)
                    .map_err(|e| Error::io(&dir, e))?;
                {
                    let root = BitMapBackend::new(tmp.path(), size).into_drawing_area();
                    pic.draw(&root)?;
                    root.present().map_err(draw_err)?;
                }
                // Temporary files are owner-only; a picture is an ordinary file.
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    tmp.as_file()
                        .set_permissions(std::fs::Permissions::from_mode(0o644))
                        .map_err(|e| Error::io(&path, e))?;
                }
                tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
            }
            Format::Svg => {
                let mut s = String::new();
                {
                    let root = SVGBackend::with_string(&mut s, size).into_drawing_area();
                    pic.draw(&root)?;
                    root.present().map_err(draw_err)?;
                }
                crate::model::io::write_atomic(&path, s.as_bytes())?;
            }
        }
        written.push(path);
    }
    Ok(written)
}

/// The range of the finite values, padded by `pad` of its width; a single
/// value gets a small range around it. None when there are no finite values.
pub(crate) fn span(vals: impl Iterator<Item = f64>, pad: f64) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return None;
    }
    let w = hi - lo;
    if w <= 1e-12 * hi.abs().max(1e-300) {
        let d = if lo != 0.0 { 0.05 * lo.abs() } else { 1.0 };
        return Some((lo - d, hi + d));
    }
    Some((lo - pad * w, hi + pad * w))
}

/// How a series is drawn.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Style {
    Line(u32),
    /// The raw values behind a smoothed line.
    Faint,
    /// A reference (schedule, chance, threshold).
    Dashed,
    Dots,
}

pub(crate) struct Series {
    pub label: Option<String>,
    pub color: RGBColor,
    pub style: Style,
    pub points: Vec<(f64, f64)>,
}

/// Writes `note` where a panel would be (a panel with no data).
pub(crate) fn empty_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    note: &str,
) -> Result<()> {
    let style = (FONT, 17).into_font().color(&BLACK);
    area.draw(&Text::new(title.to_string(), (24, 20), style))
        .map_err(draw_err)?;
    let style = (FONT, 14).into_font().color(&RGBColor(110, 110, 110));
    area.draw(&Text::new(note.to_string(), (24, 50), style))
        .map_err(draw_err)?;
    Ok(())
}

/// One linear-axes panel of `series`, with a legend of the labelled ones.
pub(crate) fn line_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    series: &[Series],
    legend: SeriesLabelPosition,
    missing: &str,
) -> Result<()> {
    let xs = || series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = || series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (Some(xr), Some(yr)) = (span(xs(), 0.0), span(ys(), 0.06)) else {
        return empty_panel(area, title, missing);
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 17))
        .margin(12)
        .x_label_area_size(38)
        .y_label_area_size(62)
        .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .x_labels(6)
        .y_labels(6)
        .light_line_style(BLACK.mix(0.04))
        .label_style((FONT, 13))
        .draw()
        .map_err(draw_err)?;
    draw_series(&mut chart, series)?;
    if series.iter().any(|s| s.label.is_some()) {
        chart
            .configure_series_labels()
            .position(legend)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font((FONT, 13))
            .draw()
            .map_err(draw_err)?;
    }
    Ok(())
}

/// Draws `series` on any chart whose coordinates are (f64, f64) values.
pub(crate) fn draw_series<DB, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    series: &[Series],
) -> Result<()>
where
    DB: DrawingBackend,
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    for s in series {
        let c = s.color;
        let pts = s.points.iter().copied();
        let anno = match s.style {
            Style::Line(w) => chart.draw_series(LineSeries::new(pts, c.stroke_width(w))),
            Style::Faint => chart.draw_series(LineSeries::new(pts, c.mix(0.3).stroke_width(1))),
            Style::Dashed => chart.draw_series(DashedLineSeries::new(pts, 6, 4, c.stroke_width(1))),
            Style::Dots => chart.draw_series(pts.map(|p| Circle::new(p, 3, c.filled()))),
        }
        .map_err(draw_err)?;
        if let Some(l) = &s.label {
            let style = match s.style {
                Style::Dashed | Style::Faint => c.mix(0.6).filled(),
                _ => c.filled(),
            };
            anno.label(l.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 16, y + 4)], style));
        }
    }
    Ok(())
}

/// "WxH" → (W, H), for `--size`.
pub fn parse_size(s: &str) -> Result<(u32, u32)> {
    let bad = || {
        Error::msg(format!(
            "--size {s}: expected WIDTHxHEIGHT in pixels, e.g. 1200x720"
        ))
    };
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    Ok((
        w.trim().parse().map_err(|_| bad())?,
        h.trim().parse().map_err(|_| bad())?,
    ))
}

/// `v` with an SI prefix: 1.2e10 → "12.0 G".
pub(crate) fn si(v: f64) -> String {
    let a = v.abs();
    let (d, p) = if a >= 1e12 {
        (1e12, "T")
    } else if a >= 1e9 {
        (1e9, "G")
    } else if a >= 1e6 {
        (1e6, "M")
    } else if a >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    format!("{:.3} {p}", v / d)
        .trim_end_matches(' ')
        .to_string()
}
