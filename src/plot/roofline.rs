//! The roofline of `lpaf bench kernels --jsonl FILE`: each kernel as a point
//! of arithmetic intensity (FLOPs per byte moved) against achieved FLOP/s,
//! under the copy-bandwidth diagonal and the GEMM ceilings measured in the
//! same run. The byte counts are the fewest bytes each kernel must move
//! (`bench::kernels::Workload::bytes`), so a point's height under its roof is
//! the kernel's distance from its floor.

use std::path::Path;

use plotters::coord::combinators::IntoLogRange;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::plot::{color, draw_err, draw_series, save, si, Picture, Series, Style, Written, FONT};

/// One kernel's point.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub kernel: String,
    pub size: String,
    pub flops: f64,
    pub bytes: f64,
    pub seconds: f64,
}

impl Point {
    pub fn intensity(&self) -> f64 {
        self.flops / self.bytes
    }
    pub fn flops_per_s(&self) -> f64 {
        self.flops / self.seconds
    }
}

/// The ceilings and the kernels of one benchmark run.
#[derive(Clone, Debug)]
pub struct Bench {
    pub device: String,
    pub scale: Option<f64>,
    pub copy_bytes_per_s: f64,
    /// (precision, FLOP/s).
    pub gemm: Vec<(String, f64)>,
    pub points: Vec<Point>,
    /// Kernels that cannot be placed (failed runs, no FLOPs), with why.
    pub skipped: Vec<String>,
}

fn line_err(file: &Path, n: usize, what: impl std::fmt::Display) -> Error {
    Error::msg(format!("{}:{n}: {what}", file.display()))
}

/// Reads the JSON lines of `lpaf bench kernels --jsonl`.
pub fn read_bench(file: &Path) -> Result<Bench> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    let mut ceilings: Option<(String, Option<f64>, f64, Vec<(String, f64)>)> = None;
    let mut points = Vec::new();
    let mut skipped = Vec::new();
    let mut records = 0;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| line_err(file, n, format!("not JSON ({e})")))?;
        crate::ensure!(v.is_object(), "{}:{n}: not a JSON object", file.display());
        records += 1;
        let num = |k: &str| -> Result<f64> {
            v.get(k)
                .and_then(Value::as_f64)
                .ok_or_else(|| line_err(file, n, format!("no number \"{k}\"")))
        };
        match v.get("record").and_then(Value::as_str) {
            Some("ceilings") => {
                crate::ensure!(
                    ceilings.is_none(),
                    "{}:{n}: a second ceilings record (one benchmark run per file)",
                    file.display()
                );
                let copy = num("copy_bytes_per_s")?;
                crate::ensure!(
                    copy > 0.0,
                    "{}:{n}: copy_bytes_per_s must be positive",
                    file.display()
                );
                let gemm = v
                    .get("gemm_flops_per_s")
                    .and_then(Value::as_object)
                    .ok_or_else(|| line_err(file, n, "no \"gemm_flops_per_s\" object"))?
                    .iter()
                    .map(|(p, r)| {
                        r.as_f64()
                            .filter(|r| *r > 0.0)
                            .map(|r| (p.clone(), r))
                            .ok_or_else(|| {
                                line_err(
                                    file,
                                    n,
                                    format!("gemm_flops_per_s.{p} is not a positive number"),
                                )
                            })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let device = v
                    .get("device")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string();
                ceilings = Some((device, v.get("scale").and_then(Value::as_f64), copy, gemm));
            }
            Some("kernel") => {
                let kernel = v
                    .get("kernel")
                    .and_then(Value::as_str)
                    .ok_or_else(|| line_err(file, n, "no \"kernel\" name"))?
                    .to_string();
                let size = v
                    .get("size")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let (flops, bytes) = (num("flops")?, num("bytes")?);
                let seconds = v.get("seconds").and_then(Value::as_f64);
                match seconds {
                    None => skipped.push(format!(
                        "{kernel}: no time ({})",
                        v.get("error")
                            .and_then(Value::as_str)
                            .unwrap_or("the run failed")
                    )),
                    Some(_) if flops <= 0.0 => skipped.push(format!(
                        "{kernel}: no floating-point work (memory only), not on a FLOP/s roofline"
                    )),
                    Some(t) if t <= 0.0 || bytes <= 0.0 => {
                        return Err(line_err(file, n, "seconds and bytes must be positive"))
                    }
                    Some(t) => points.push(Point {
                        kernel,
                        size,
                        flops,
                        bytes,
                        seconds: t,
                    }),
                }
            }
            Some(other) => {
                return Err(line_err(file, n, format!("unknown record \"{other}\"")));
            }
            None => {
                return Err(line_err(
                    file,
                    n,
                    "no \"record\" field (write the file with `lpaf bench kernels --jsonl FILE`)",
                ))
            }
        }
    }
    crate::ensure!(
        records > 0,
        "{}: empty benchmark file (no records)",
        file.display()
    );
    let Some((device, scale, copy, gemm)) = ceilings else {
        crate::bail!(
            "{}: no ceilings record (write the file with `lpaf bench kernels --jsonl FILE`)",
            file.display()
        );
    };
    crate::ensure!(
        !points.is_empty(),
        "{}: no kernel to place (each was skipped: {})",
        file.display(),
        skipped.join("; ")
    );
    Ok(Bench {
        device,
        scale,
        copy_bytes_per_s: copy,
        gemm,
        points,
        skipped,
    })
}

struct Roofline<'a> {
    bench: &'a Bench,
}

impl Picture for Roofline<'_> {
    fn size(&self) -> (u32, u32) {
        (1200, 800)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let b = self.bench;
        root.fill(&WHITE).map_err(draw_err)?;
        let top_gemm = b.gemm.iter().map(|g| g.1).fold(0.0, f64::max);
        let ridges = b.gemm.iter().map(|g| g.1 / b.copy_bytes_per_s);
        let xs: Vec<f64> = b
            .points
            .iter()
            .map(Point::intensity)
            .chain(ridges)
            .collect();
        let x0 = xs.iter().copied().fold(f64::INFINITY, f64::min) / 4.0;
        let x1 = xs.iter().copied().fold(0.0, f64::max) * 4.0;
        let y0 = b
            .points
            .iter()
            .map(Point::flops_per_s)
            .chain(std::iter::once(b.copy_bytes_per_s * x0))
            .fold(f64::INFINITY, f64::min)
            / 2.0;
        let y1 = b
            .points
            .iter()
            .map(Point::flops_per_s)
            .fold(top_gemm, f64::max)
            * 3.0;
        let title = format!(
            "roofline: {}{}",
            b.device,
            b.scale.map(|s| format!(", scale {s}")).unwrap_or_default()
        );
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(80)
            .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("arithmetic intensity (FLOP / byte moved)")
            .y_desc("achieved FLOP/s")
            .y_label_formatter(&|v| si(*v))
            .light_line_style(BLACK.mix(0.04))
            .label_style((FONT, 14))
            .draw()
            .map_err(draw_err)?;
        let grey = RGBColor(60, 60, 60);
        let mut series = vec![Series {
            label: Some(format!(
                "copy bandwidth {}B/s (dashed: past the GEMM ceiling)",
                si(b.copy_bytes_per_s)
            )),
            color: grey,
            style: Style::Dashed,
            points: vec![(x0, b.copy_bytes_per_s * x0), (x1, b.copy_bytes_per_s * x1)],
        }];
        for (k, (p, rate)) in b.gemm.iter().enumerate() {
            let ridge = rate / b.copy_bytes_per_s;
            let mut pts = vec![];
            if ridge > x0 {
                pts.push((x0, b.copy_bytes_per_s * x0));
                pts.push((ridge, *rate));
            } else {
                pts.push((x0, *rate));
            }
            pts.push((x1, *rate));
            series.push(Series {
                label: Some(format!("roof: GEMM {p} {}FLOP/s", si(*rate))),
                color: RGBColor(
                    (40 + 60 * k as u8).min(200),
                    (40 + 60 * k as u8).min(200),
                    (40 + 60 * k as u8).min(200),
                ),
                style: Style::Line(if k == 0 { 2 } else { 1 }),
                points: pts,
            });
        }
        for (i, p) in b.points.iter().enumerate() {
            let roof = (b.copy_bytes_per_s * p.intensity()).min(top_gemm);
            series.push(Series {
                label: Some(format!(
                    "{} ({}): {:.0} % of roof",
                    p.kernel,
                    p.size,
                    100.0 * p.flops_per_s() / roof
                )),
                color: color(i),
                style: Style::Dots,
                points: vec![(p.intensity(), p.flops_per_s())],
            });
        }
        draw_series(&mut chart, &series)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .label_font((FONT, 13))
            .draw()
            .map_err(draw_err)?;
        Ok(())
    }
}

/// Reads `file` and draws its roofline into `out`.
pub fn plot_roofline(
    file: &Path,
    out: &Path,
    force: bool,
    size: Option<(u32, u32)>,
) -> Result<Written> {
    let bench = read_bench(file)?;
    let files = save(&Roofline { bench: &bench }, out, force, size)?;
    Ok(Written {
        files,
        notes: bench
            .skipped
            .iter()
            .map(|s| format!("not placed: {s}"))
            .collect(),
    })
}
