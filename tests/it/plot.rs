//! `lpaf plot`: curves from logs written here, a roofline from a benchmark
//! file written here, spectra of a tiny compressed model; the pictures'
//! pixel sizes (read from the PNG header), the series in the SVG, and the
//! errors for empty / malformed inputs and existing outputs.

use std::path::{Path, PathBuf};

use lpaf::backend::Precision;
use lpaf::bench::kernels::{Bound, KernelBenchOptions, KernelBenchReport, KernelBenchRow};
use lpaf::compress::pipeline::run_recipe;
use lpaf::compress::rank::{model_matrices, numerical_rank, singular_values, RANK_REL_TOL};
use lpaf::plot::{curves, roofline, spectra};

/// Width and height from a PNG's IHDR chunk (right after the 8-byte signature).
fn png_size(p: &Path) -> (u32, u32) {
    let b = std::fs::read(p).unwrap();
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{}: not a PNG", p.display());
    assert_eq!(&b[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// `<text>` elements whose whole text is `t` (the SVG backend writes
/// `>\nTEXT\n</text>`).
fn texts(svg: &str, t: &str) -> usize {
    count(svg, &format!(">\n{t}\n</text>"))
}

/// A pruning run's log: loss falling, kept ratio following a schedule, churn
/// and overlap, an evaluation every 20 steps and a summary.
fn write_run(dir: &Path, seed: f64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut s = String::new();
    for k in 1..=10u64 {
        let step = 5 * k;
        let t = step as f64 / 50.0;
        let kept = 1.0 - 0.9 * t.min(0.8) / 0.8;
        s.push_str(&format!(
            "{{\"event\":\"step\",\"step\":{step},\"loss\":{},\"lr\":{},\"kept_ratio\":{},\"kept_target\":{},\"mask_churn\":{},\"magnitude_overlap\":{},\"elapsed_s\":1.0}}\n",
            0.7 - 0.2 * t + 0.01 * seed * (k % 2) as f64,
            3e-5 * (1.0 - t),
            kept + 1e-4,
            kept,
            if k == 1 { "null".to_string() } else { format!("{}", 0.05 / k as f64) },
            0.9 + 0.05 * t,
        ));
        if step % 20 == 0 {
            s.push_str(&format!(
                "{{\"event\":\"eval\",\"step\":{step},\"accuracy\":{},\"f1\":0.5,\"eval_loss\":0.6}}\n",
                0.5 + 0.01 * step as f64
            ));
        }
    }
    s.push_str("{\"event\":\"summary\",\"final_eval\":{\"main\":\"accuracy\"},\"steps\":50}\n");
    std::fs::write(dir.join("log.jsonl"), s).unwrap();
}

#[test]
fn plot_curves_of_runs_overlaid() {
    let d = tempfile::tempdir().unwrap();
    let runs: Vec<PathBuf> = ["run-a", "run-b", "run-c"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let p = d.path().join(n);
            // The same data under each name: every run adds the same series.
            let _ = i;
            write_run(&p, 0.0);
            p
        })
        .collect();

    let r = curves::read_run(&runs[0], None).unwrap();
    assert_eq!(r.label, "run-a");
    assert_eq!(r.steps.len(), 10);
    assert_eq!(r.steps[1].step, 10);
    assert!((r.steps[1].loss.unwrap() - (0.7 - 0.2 * 0.2)).abs() < 1e-12);
    assert_eq!(r.steps[0].mask_churn, None);
    assert_eq!(r.metric.as_deref(), Some("accuracy"));
    assert_eq!(r.evals, vec![(20, 0.7), (40, 0.9)]);

    let mut svgs = Vec::new();
    for n in 1..=3 {
        let out = d.path().join(format!("curves{n}"));
        let w = curves::plot_runs(&runs[..n], &[], 0.6, &out, false, None).unwrap();
        assert_eq!(
            w.files,
            vec![out.with_extension("png"), out.with_extension("svg")]
        );
        assert_eq!(png_size(&out.with_extension("png")), (1500, 900));
        let svg = std::fs::read_to_string(out.with_extension("svg")).unwrap();
        assert!(svg.contains("width=\"1500\"") && svg.contains("height=\"900\""));
        for (i, name) in ["run-a", "run-b", "run-c"].iter().enumerate() {
            // In each of the six panels' legends, for the runs plotted only.
            let want = if i < n { 6 } else { 0 };
            assert_eq!(texts(&svg, name), want, "{name} in {n} runs");
        }
        svgs.push(svg);
    }
    // Every run adds the same series (the runs' data have the same shape).
    let lines: Vec<usize> = svgs.iter().map(|s| count(s, "<polyline")).collect();
    let per_run = lines[1] - lines[0];
    assert!(per_run >= 7, "{lines:?}");
    assert_eq!(lines[2] - lines[1], per_run, "{lines:?}");

    // One format by extension; --label names the runs.
    let out = d.path().join("named.svg");
    let w = curves::plot_runs(
        &runs[..2],
        &["movement".into(), "magnitude".into()],
        0.0,
        &out,
        false,
        Some((1000, 600)),
    )
    .unwrap();
    assert_eq!(w.files, vec![out.clone()]);
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.contains("width=\"1000\"") && svg.contains("height=\"600\""));
    assert_eq!(texts(&svg, "movement"), 6);
    assert_eq!(texts(&svg, "run-a"), 0);
}

#[test]
fn plot_smoothing_is_a_debiased_moving_average() {
    let s = curves::smooth(&[(0.0, 1.0), (1.0, 3.0), (2.0, 3.0)], 0.5);
    // (0.5·1 + 0.5·... ) / (1 − 0.5^t)
    let e1 = 1.0;
    let e2 = (0.25 * 1.0 + 0.5 * 3.0) / 0.75;
    let e3 = (0.125 * 1.0 + 0.25 * 3.0 + 0.5 * 3.0) / 0.875;
    for (got, want) in s.iter().zip([e1, e2, e3]) {
        assert!((got.1 - want).abs() < 1e-12, "{s:?}");
    }
    assert_eq!(
        curves::smooth(&[(0.0, 2.0), (1.0, 5.0)], 0.0),
        vec![(0.0, 2.0), (1.0, 5.0)]
    );
}

#[test]
fn plot_bad_logs_and_outputs_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("c.png");
    let err = |dir: &Path| {
        curves::plot_runs(&[dir.to_path_buf()], &[], 0.6, &out, false, None)
            .unwrap_err()
            .to_string()
    };
    // No log.jsonl.
    let empty_dir = d.path().join("nolog");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let e = err(&empty_dir);
    assert!(
        e.contains(&empty_dir.join("log.jsonl").display().to_string()),
        "{e}"
    );
    // Not a directory.
    let e = err(&d.path().join("missing"));
    assert!(
        e.contains("missing") && e.contains("not a run directory"),
        "{e}"
    );
    // Empty log.
    let run = d.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let log = run.join("log.jsonl");
    std::fs::write(&log, "\n\n").unwrap();
    let e = err(&run);
    assert!(
        e.contains(&log.display().to_string()) && e.contains("empty"),
        "{e}"
    );
    // Malformed line 2.
    std::fs::write(
        &log,
        "{\"event\":\"step\",\"step\":1,\"loss\":0.5}\n{\"event\":\"step\",\"step\":2,\"loss\":\n",
    )
    .unwrap();
    let e = err(&run);
    assert!(e.contains(&format!("{}:2:", log.display())), "{e}");
    // A record that is not a number where one is expected, line 1.
    std::fs::write(&log, "{\"event\":\"step\",\"step\":1,\"loss\":\"x\"}\n").unwrap();
    let e = err(&run);
    assert!(
        e.contains(&format!("{}:1:", log.display())) && e.contains("loss"),
        "{e}"
    );
    // Records but no steps.
    std::fs::write(&log, "{\"event\":\"eval\",\"step\":1,\"accuracy\":0.5}\n").unwrap();
    let e = err(&run);
    assert!(e.contains("no step records"), "{e}");
    assert!(!out.exists(), "nothing is written on an error");

    // An existing output is kept unless --force.
    write_run(&run, 0.0);
    std::fs::write(&out, b"keep me").unwrap();
    let e = err(&run);
    assert!(e.contains("exists") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    curves::plot_runs(&[run.clone()], &[], 0.6, &out, true, None).unwrap();
    assert_eq!(png_size(&out), (1500, 900));
    // Both outputs are checked before either is written.
    let both = d.path().join("both");
    std::fs::write(both.with_extension("svg"), b"keep").unwrap();
    assert!(curves::plot_runs(&[run.clone()], &[], 0.6, &both, false, None).is_err());
    assert!(!both.with_extension("png").exists());
    // Unknown format; wrong label count.
    let e = curves::plot_runs(
        &[run.clone()],
        &[],
        0.6,
        &d.path().join("c.jpg"),
        false,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("c.jpg") && e.contains(".png"), "{e}");
    let e = curves::plot_runs(
        &[run.clone()],
        &["a".into(), "b".into()],
        0.6,
        &d.path().join("x.png"),
        false,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--label"), "{e}");
}

fn report() -> KernelBenchReport {
    let row = |kernel: &str, bound, flops: f64, bytes: f64, seconds: Option<f64>| KernelBenchRow {
        kernel: kernel.into(),
        size: "1 M".into(),
        bound,
        flops,
        bytes,
        seconds,
        ceiling_fraction: None,
        goal: String::new(),
        goal_met: None,
        error: seconds.is_none().then(|| "out of memory".to_string()),
    };
    KernelBenchReport {
        device: "test device".into(),
        options: KernelBenchOptions::quick(0.05),
        copy_bytes_per_s: 2e10,
        copy_size: "64 MiB".into(),
        gemm_flops_per_s: vec![(Precision::F32, 1e11), (Precision::Bf16, 5e10)],
        gemm_n: 256,
        rows: vec![
            row("score accumulation", Bound::Memory, 3e6, 2.5e7, Some(2e-3)),
            row(
                "weighted svd",
                Bound::Compute(Precision::F32),
                4e9,
                1e8,
                Some(0.2),
            ),
            row("top-k mask", Bound::Memory, 0.0, 1.3e7, Some(1e-3)),
            row(
                "fused layer",
                Bound::Compute(Precision::F32),
                1e9,
                1e7,
                None,
            ),
        ],
    }
}

#[test]
fn plot_roofline_of_a_bench_file() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("bench.jsonl");
    std::fs::write(&file, report().to_jsonl().unwrap()).unwrap();
    let b = roofline::read_bench(&file).unwrap();
    assert_eq!(b.copy_bytes_per_s, 2e10);
    let mut gemm = b.gemm.clone();
    gemm.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        gemm,
        vec![("bf16".to_string(), 5e10), ("fp32".to_string(), 1e11)]
    );
    assert_eq!(b.points.len(), 2);
    assert_eq!(b.points[1].kernel, "weighted svd");
    assert!((b.points[1].intensity() - 40.0).abs() < 1e-12);
    assert!((b.points[1].flops_per_s() - 2e10).abs() < 1e-3);
    assert_eq!(b.skipped.len(), 2, "{:?}", b.skipped);

    let out = d.path().join("roof");
    let w = roofline::plot_roofline(&file, &out, false, None).unwrap();
    assert_eq!(png_size(&out.with_extension("png")), (1200, 800));
    let svg = std::fs::read_to_string(out.with_extension("svg")).unwrap();
    // One legend entry per placed kernel (with its share of the roof:
    // svd at intensity 40 is under the fp32 GEMM roof, 2e10 / 1e11 = 20 %),
    // one per GEMM ceiling, none for the skipped ones.
    assert_eq!(count(&svg, "score accumulation (1 M)"), 1);
    assert_eq!(count(&svg, "weighted svd (1 M): 20 % of roof"), 1);
    assert_eq!(count(&svg, "roof: GEMM"), 2);
    assert_eq!(count(&svg, "top-k mask"), 0);
    assert!(
        w.notes.iter().any(|n| n.contains("top-k mask")),
        "{:?}",
        w.notes
    );
    assert!(w
        .notes
        .iter()
        .any(|n| n.contains("fused layer") && n.contains("out of memory")));

    // Errors name the file and line.
    let bad = d.path().join("bad.jsonl");
    let e = |text: &str| {
        std::fs::write(&bad, text).unwrap();
        roofline::plot_roofline(&bad, &d.path().join("r.png"), false, None)
            .unwrap_err()
            .to_string()
    };
    let m = e("");
    assert!(m.contains("bad.jsonl") && m.contains("empty"), "{m}");
    let first = report().to_jsonl().unwrap();
    let first = first.lines().next().unwrap();
    let m = e(&format!(
        "{first}\n{{\"record\":\"kernel\",\"kernel\":\"x\"\n"
    ));
    assert!(m.contains(&format!("{}:2:", bad.display())), "{m}");
    let m = e("{\"record\":\"kernel\",\"kernel\":\"x\",\"flops\":1,\"bytes\":1,\"seconds\":1}\n");
    assert!(m.contains("no ceilings"), "{m}");
    let m = e("{\"kernel\":\"x\"}\n");
    assert!(m.contains(":1:") && m.contains("record"), "{m}");
    assert!(!d.path().join("r.png").exists());
}

#[test]
fn plot_spectra_of_a_tiny_pruned_model() {
    let d = tempfile::tempdir().unwrap();
    crate::compress::write_task(d.path());
    let r = crate::compress::recipe("movement", d.path(), "mv", &[]);
    run_recipe(&lpaf::backend::CpuBackend::new(), &r, false, true).unwrap();
    let comp = d.path().join("mv/compressed");
    let dense = crate::common::fixture("tiny-bert-cls");

    let out = d.path().join("spectra");
    spectra::plot_spectra(&comp, Some(&dense), true, None, &out, false, None).unwrap();
    assert_eq!(png_size(&out.with_extension("png")), (1500, 900));
    let svg = std::fs::read_to_string(out.with_extension("svg")).unwrap();
    // Three versions and the threshold in each of the six panels.
    assert_eq!(count(&svg, "movement (mv/compressed): rank"), 6);
    assert_eq!(
        count(&svg, "dense magnitude-pruned to the same density: rank"),
        6
    );
    assert_eq!(count(&svg, "numerical-rank threshold"), 6);
    assert_eq!(count(&svg, "(density 0.200)"), 6);
    // The legend's rank is `info --rank`'s: mean numerical rank / full rank.
    let (_, shapes, mats) = model_matrices(&dense).unwrap();
    let layers = mats.len() / 6;
    let parent = dense
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let name = dense.file_name().unwrap().to_string_lossy().into_owned();
    let mut want: Vec<String> = Vec::new();
    for slot in 0..6 {
        let mut frac = 0.0;
        for l in 0..layers {
            let (o, i) = shapes[l * 6 + slot];
            let s = singular_values(&mats[l * 6 + slot], o, i).unwrap();
            frac += numerical_rank(&s, RANK_REL_TOL) as f64 / o.min(i) as f64 / layers as f64;
        }
        want.push(format!("dense ({parent}/{name}): rank {frac:.3} of full"));
    }
    for w in &want {
        let n = want.iter().filter(|x| *x == w).count();
        assert_eq!(count(&svg, w), n, "{w}");
    }

    // One layer; the model alone.
    let out1 = d.path().join("layer0.png");
    spectra::plot_spectra(&comp, None, false, Some(0), &out1, false, None).unwrap();
    assert_eq!(png_size(&out1), (1500, 900));
    let e = spectra::plot_spectra(
        &comp,
        None,
        false,
        Some(99),
        &d.path().join("l.png"),
        false,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--layer 99"), "{e}");
    let e = spectra::plot_spectra(
        &comp,
        None,
        true,
        None,
        &d.path().join("m.png"),
        false,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--magnitude needs --dense"), "{e}");
}
