//! Nothing lost, nothing silent (docs/robustness.md): outputs are never
//! clobbered, a run directory is used by one run at a time and continued
//! only on request, a crash anywhere (SIGKILL, or inside the checkpoint
//! swap) resumes bit-identically, diverged runs stop without saving, NaN
//! propagates, and eval maps labels and splits as the training run did.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lpaf::backend::gpu_for_test;
use lpaf::backend::{Backend, DType};
use lpaf::model::io::{read_safetensors, write_safetensors, FloatFormat, HostData};

use crate::common::{cpu, fixture};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lpaf"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A small two-class CSV task for the tiny fixture model.
fn write_task(dir: &Path, labels: [&str; 2]) -> PathBuf {
    let words = [
        "good", "bad", "movie", "film", "great", "awful", "fine", "plot",
    ];
    let mut s = String::from("sentence,label\n");
    for i in 0..64usize {
        let sent: Vec<&str> = (0..5).map(|k| words[(i * 7 + k * 3 + i / 3) % 8]).collect();
        s.push_str(&format!("{},{}\n", sent.join(" "), labels[i % 2]));
    }
    let p = dir.join("train.csv");
    std::fs::write(&p, s).unwrap();
    p
}

fn finetune(train: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args([
        "finetune",
        "--device",
        "cpu",
        "--quiet",
        "--task",
        "csv",
        "--text-a",
        "sentence",
        "--dev-split",
        "0.25",
        "--batch-size",
        "8",
        "--checkpoint-every",
        "2",
        "--log-every",
        "1",
        "--eval-every",
        "4",
        "--seed",
        "7",
        "--train",
    ])
    .arg(train)
    .arg("--model")
    .arg(fixture("tiny-bert-cls"))
    .arg("--output")
    .arg(out)
    .args(extra)
    .env_remove("LPAF_CRASH_AT");
    if !extra.contains(&"--epochs") {
        c.args(["--epochs", "3"]);
    }
    c
}

fn run_ok(mut c: Command) -> Output {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{:?} failed: {}", c, stderr(&o));
    o
}

/// The log without its timing fields (the rest must match exactly).
fn log_without_times(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if let Some(m) = v.as_object_mut() {
                for k in [
                    "elapsed_s",
                    "samples_per_s",
                    "train_seconds",
                    "samples_per_second",
                ] {
                    m.remove(k);
                }
            }
            v.to_string()
        })
        .collect()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".partial-") || n.contains(".old-"))
        .collect()
}

fn assert_same_run(reference: &Path, resumed: &Path, what: &str) {
    for f in ["final/model.safetensors", "best/model.safetensors"] {
        assert!(
            std::fs::read(reference.join(f)).unwrap() == std::fs::read(resumed.join(f)).unwrap(),
            "{what}: {f} differs from the uninterrupted run"
        );
    }
    assert_eq!(
        log_without_times(reference),
        log_without_times(resumed),
        "{what}: log.jsonl differs from the uninterrupted run (steps repeated or lost)"
    );
    assert!(
        leftovers(resumed).is_empty(),
        "{what}: {:?} left behind",
        leftovers(resumed)
    );
}

#[test]
fn crashes_inside_the_checkpoint_swap_and_sigkill_resume_bit_identically() {
    let d = tempfile::tempdir().unwrap();
    let train = write_task(d.path(), ["neg", "pos"]);
    let reference = d.path().join("ref");
    run_ok(finetune(&train, &reference, &[]));
    // Each point of the swap, on the 3rd directory write (checkpoints and best/).
    for point in ["dir-swap-before", "dir-swap-middle", "dir-swap-after"] {
        let out = d.path().join(point);
        let o = finetune(&train, &out, &[])
            .env("LPAF_CRASH_AT", format!("{point}:3"))
            .output()
            .unwrap();
        assert!(!o.status.success(), "{point}: the crash point did not fire");
        let o = run_ok(finetune(&train, &out, &["--resume"]));
        // Continued, not restarted (a restart would also end identical).
        assert!(
            stderr(&o).contains("resuming from"),
            "{point}: {}",
            stderr(&o)
        );
        if point == "dir-swap-middle" {
            // No checkpoint/ was left, only the complete partial and the old one.
            assert!(
                stderr(&o).contains("recovered the checkpoint"),
                "{}",
                stderr(&o)
            );
        }
        assert_same_run(&reference, &out, point);
    }
    // Real SIGKILLs at moments of a longer run (once it has logged 5, 25 and
    // 50 of its 72 steps: wherever it then is, often inside a checkpoint
    // write), then resumed.
    let long = ["--epochs", "12"];
    let reference = d.path().join("ref-long");
    run_ok(finetune(&train, &reference, &long));
    for after in [5usize, 25, 50] {
        let out = d.path().join(format!("killed-{after}"));
        let mut child = finetune(&train, &out, &long).spawn().unwrap();
        let t0 = std::time::Instant::now();
        loop {
            let logged = std::fs::read_to_string(out.join("log.jsonl"))
                .map(|t| t.matches("\"event\":\"step\"").count())
                .unwrap_or(0);
            if logged >= after || t0.elapsed().as_secs() > 120 {
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let _ = child.kill(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "the run finished before the kill after {after} steps"
        );
        let o = run_ok(finetune(&train, &out, &[&long[..], &["--resume"]].concat()));
        assert!(
            stderr(&o).contains("resuming from"),
            "after {after}: {}",
            stderr(&o)
        );
        assert_same_run(
            &reference,
            &out,
            &format!("SIGKILL after {after} logged steps"),
        );
    }
}

#[test]
fn a_run_directory_is_continued_only_on_request_and_by_one_run_at_a_time() {
    let d = tempfile::tempdir().unwrap();
    let train = write_task(d.path(), ["neg", "pos"]);
    let out = d.path().join("run");
    run_ok(finetune(&train, &out, &[]));
    let before = std::fs::read(out.join("final/model.safetensors")).unwrap();
    // Without --resume: refused, nothing touched.
    let o = finetune(&train, &out, &[]).output().unwrap();
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("holds an earlier run (checkpoint at step 18)") && e.contains("--overwrite"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(out.join("final/model.safetensors")).unwrap(),
        before
    );
    // Both flags: refused.
    let o = finetune(&train, &out, &["--resume", "--overwrite"])
        .output()
        .unwrap();
    assert!(!o.status.success() && stderr(&o).contains("exclude each other"));
    // While another run holds the directory: refused.
    let (lock, _) = lpaf::train::rundir::claim(&out, true, false).unwrap();
    let o = finetune(&train, &out, &["--resume"]).output().unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("another lpaf run is using this directory"),
        "{}",
        stderr(&o)
    );
    drop(lock);
    // --overwrite starts over: same seed, same result, a log of one run.
    let keep = out.join("notes.txt");
    std::fs::write(&keep, "mine").unwrap();
    let o = run_ok(finetune(&train, &out, &["--overwrite"]));
    assert!(
        stderr(&o).contains("--overwrite: removed"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(out.join("final/model.safetensors")).unwrap(),
        before
    );
    assert_eq!(
        std::fs::read_to_string(&keep).unwrap(),
        "mine",
        "--overwrite removed a file it did not write"
    );
    let log = log_without_times(&out);
    assert_eq!(log.iter().filter(|l| l.contains("\"summary\"")).count(), 1);
}

#[test]
fn outputs_are_never_clobbered() {
    let d = tempfile::tempdir().unwrap();
    // An atomic writer never renames over a device, a directory or a pipe.
    let e = lpaf::model::io::write_atomic(Path::new("/dev/full"), b"x").unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/full")
        .unwrap()
        .file_type()
        .is_char_device());
    let e = lpaf::model::io::write_atomic(d.path(), b"x").unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    // Through a symbolic link: the file it names is replaced, the link stays.
    let target = d.path().join("target.json");
    std::fs::write(&target, "old").unwrap();
    let link = d.path().join("link.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    lpaf::model::io::write_atomic(&link, b"new").unwrap();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");

    // eval --json /dev/full: an error, and /dev/full is still a device.
    let train = write_task(d.path(), ["neg", "pos"]);
    let run = d.path().join("run");
    run_ok(finetune(&train, &run, &[]));
    let o = eval_cmd(&train, &run.join("final"), &["--json", "/dev/full"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("/dev/full: not a regular file"),
        "{}",
        stderr(&o)
    );
    assert!(std::fs::metadata("/dev/full")
        .unwrap()
        .file_type()
        .is_char_device());

    // convert / export onto their input: refused, the input unchanged.
    let model = run.join("final");
    let before = std::fs::read(model.join("model.safetensors")).unwrap();
    for args in [
        vec!["convert".to_string(), path(&model), path(&model)],
        vec![
            "export".into(),
            "--dense".into(),
            path(&model),
            path(&model),
        ],
        vec!["convert".into(), path(&model), path(&model.join("sub"))],
        vec!["convert".into(), path(&model), path(&run)],
    ] {
        let o = Command::new(bin()).args(&args).output().unwrap();
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr(&o).contains("the input"), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(
        std::fs::read(model.join("model.safetensors")).unwrap(),
        before
    );
    // An existing non-empty output needs --overwrite.
    let conv = d.path().join("conv");
    std::fs::create_dir(&conv).unwrap();
    std::fs::write(conv.join("x"), "x").unwrap();
    let o = Command::new(bin())
        .arg("convert")
        .arg(&model)
        .arg(&conv)
        .output()
        .unwrap();
    assert!(
        !o.status.success() && stderr(&o).contains("--overwrite"),
        "{}",
        stderr(&o)
    );
    let o = Command::new(bin())
        .arg("convert")
        .arg(&model)
        .arg(&conv)
        .arg("--overwrite")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !conv.join("x").exists(),
        "the replaced directory kept a stale file"
    );
    assert!(conv.join("model.safetensors").is_file());
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn eval_cmd(train: &Path, model: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args([
        "eval",
        "--device",
        "cpu",
        "--task",
        "csv",
        "--text-a",
        "sentence",
        "--dev-split",
        "0.25",
        "--train",
    ])
    .arg(train)
    .arg("--model")
    .arg(model)
    .args(extra);
    c
}

/// `lpaf eval` of `model` on a dev CSV.
fn eval_dev(dev: &Path, model: &Path) -> Output {
    Command::new(bin())
        .args([
            "eval", "--device", "cpu", "--task", "csv", "--text-a", "sentence", "--dev",
        ])
        .arg(dev)
        .arg("--model")
        .arg(model)
        .output()
        .unwrap()
}

fn eval_line(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn eval_uses_the_runs_split_and_the_models_labels() {
    let d = tempfile::tempdir().unwrap();
    let train = write_task(d.path(), ["0", "1"]);
    let run = d.path().join("run");
    run_ok(finetune(&train, &run, &["--epochs", "2"])); // --seed 7 → split seed 7
    let model = run.join("final");
    let dflt = run_ok(eval_cmd(&train, &model, &[]));
    assert!(stderr(&dflt).contains("split seed 7"), "{}", stderr(&dflt));
    let seven = run_ok(eval_cmd(&train, &model, &["--split-seed", "7"]));
    assert_eq!(eval_line(&dflt), eval_line(&seven));
    let other = run_ok(eval_cmd(&train, &model, &["--split-seed", "42"]));
    assert_ne!(
        eval_line(&dflt),
        eval_line(&other),
        "the split seed made no difference: the test cannot tell splits apart"
    );
    // Dev labels the model does not have: an error naming them, not a remap.
    for labels in [["1", "2"], ["negative", "positive"]] {
        let dd = d.path().join(labels[0]);
        std::fs::create_dir(&dd).unwrap();
        let dev = write_task(&dd, labels);
        let o = eval_dev(&dev, &model);
        assert!(!o.status.success(), "{labels:?} evaluated");
        let e = stderr(&o);
        assert!(
            e.contains(&format!(
                "unknown label `{}`",
                if labels[0] == "1" { "2" } else { "negative" }
            )) && e.contains("id2label"),
            "{e}"
        );
    }
}

#[test]
fn divergence_stops_the_run_without_saving() {
    let d = tempfile::tempdir().unwrap();
    let train = write_task(d.path(), ["neg", "pos"]);
    let out = d.path().join("run");
    let o = finetune(&train, &out, &["--lr", "1000"]).output().unwrap();
    assert!(!o.status.success(), "a run at lr 1e3 finished");
    let e = stderr(&o);
    assert!(e.contains("training diverged at step"), "{e}");
    assert!(
        !out.join("final").exists() && !out.join("best").exists(),
        "a diverged model was saved"
    );
    let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
    assert!(log.contains("\"diverged\""), "{log}");
    // The rule can be turned off; then the lr-1e3 loss explodes (what the rule caught).
    let out2 = d.path().join("off");
    let o = finetune(
        &train,
        &out2,
        &["--set", "train.divergence_loss_factor=0", "--epochs", "1"],
    )
    .arg("--lr")
    .arg("1000")
    .output()
    .unwrap();
    let log = std::fs::read_to_string(out2.join("log.jsonl")).unwrap_or_default();
    let max_loss = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("loss").and_then(|x| x.as_f64()))
        .fold(0.0f64, f64::max);
    assert!(
        !o.status.success() || max_loss > 10.0,
        "without the rule the loss stayed at {max_loss}: the divergence test proves nothing"
    );
}

/// A copy of the tiny model with NaN in one query weight.
fn nan_model(dir: &Path) -> PathBuf {
    let src = fixture("tiny-bert-cls");
    let dst = dir.join("nan-model");
    std::fs::create_dir(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    let mut t = read_safetensors(&dst.join("model.safetensors")).unwrap();
    let key = t
        .keys()
        .find(|k| k.contains("attention.self.query.weight"))
        .unwrap()
        .clone();
    if let HostData::F32(v) = &mut t.get_mut(&key).unwrap().data {
        v[3] = f32::NAN;
    }
    write_safetensors(&dst.join("model.safetensors"), &t, FloatFormat::F32, None).unwrap();
    dst
}

#[test]
fn nan_weights_are_reported_not_scored() {
    let d = tempfile::tempdir().unwrap();
    let model = nan_model(d.path());
    let dev = d.path().join("dev.csv");
    // The fixture has three classes (LABEL_0..2, generic names: sorted order).
    std::fs::write(
        &dev,
        "sentence,label\ngood film,0\nbad plot,1\nfine movie,2\nawful,0\n",
    )
    .unwrap();
    let o = eval_dev(&dev, &model);
    assert!(
        !o.status.success(),
        "NaN weights were scored: {}",
        eval_line(&o)
    );
    let e = stderr(&o);
    assert!(
        e.contains("hold NaN or infinite values") && e.contains("query.weight (1 of"),
        "{e}"
    );
    assert!(e.contains("not finite"), "{e}");
    let o = Command::new(bin())
        .arg("convert")
        .arg(&model)
        .arg(d.path().join("conv"))
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("warning:") && stderr(&o).contains("query.weight"),
        "{}",
        stderr(&o)
    );
}

/// NaN in an unmasked score makes its softmax row NaN (f32::max / fmaxf
/// would drop it and give finite probabilities); other rows are untouched.
/// NaN also reaches LayerNorm's output and a sum of squares.
fn nan_propagation_body(be: &dyn Backend) {
    let (b, h, s) = (2usize, 2usize, 8usize);
    let mut scores: Vec<f32> = (0..b * h * s * s).map(|i| (i % 7) as f32 * 0.3).collect();
    scores[3 * s + 5] = f32::NAN; // row 3, key 5 (unmasked)
    scores[4 * s + 7] = f32::NAN; // row 4, key 7 (masked below): ignored
    let mut mask = vec![1u8; b * s];
    mask[7] = 0;
    let mut t = be.from_f32(&scores, &[b, h, s, s]).unwrap();
    let m = be.from_u8(&mask, &[b, s]).unwrap();
    be.attention_softmax(&mut t, &m, h, 0.5).unwrap();
    let p = be.to_f32(&t).unwrap();
    for row in 0..b * h * s {
        let r = &p[row * s..(row + 1) * s];
        if row == 3 {
            assert!(r.iter().all(|x| x.is_nan()), "row with a NaN score: {r:?}");
        } else {
            assert!(r.iter().all(|x| x.is_finite()), "row {row}: {r:?}");
            let sum: f32 = r.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "row {row} sums to {sum}");
        }
    }
    let (rows, cols) = (3usize, 16usize);
    let mut x: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
    x[cols + 4] = f32::NAN;
    let mut y = be.zeros(&[rows, cols], DType::F32).unwrap();
    let mut mean = be.zeros(&[rows], DType::F32).unwrap();
    let mut rstd = be.zeros(&[rows], DType::F32).unwrap();
    be.layer_norm(
        &be.from_f32(&x, &[rows, cols]).unwrap(),
        &be.from_f32(&vec![1.0; cols], &[cols]).unwrap(),
        &be.from_f32(&vec![0.0; cols], &[cols]).unwrap(),
        1e-12,
        &mut y,
        &mut mean,
        &mut rstd,
    )
    .unwrap();
    let y = be.to_f32(&y).unwrap();
    for r in 0..rows {
        let row = &y[r * cols..(r + 1) * cols];
        if r == 1 {
            assert!(
                row.iter().all(|v| v.is_nan()),
                "LayerNorm row with NaN: {row:?}"
            );
        } else {
            assert!(
                row.iter().all(|v| v.is_finite()),
                "LayerNorm row {r}: {row:?}"
            );
        }
    }
    let ss = be
        .sum_squares(&be.from_f32(&x, &[rows, cols]).unwrap())
        .unwrap();
    assert!(ss.is_nan(), "sum of squares with a NaN gave {ss}");
}

#[test]
fn nan_propagates_on_the_cpu() {
    nan_propagation_body(&cpu());
}

#[test]
fn gpu_nan_propagates() {
    let Some(g) = gpu_for_test("gpu_nan_propagates") else {
        return;
    };
    nan_propagation_body(g.as_ref());
}
