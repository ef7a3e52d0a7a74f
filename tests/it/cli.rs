//! Bad input gives clear errors naming the file, tensor, line or flag (and a
//! non-zero exit from the binary); F16 / BF16 checkpoints load.

use std::path::{Path, PathBuf};
use std::process::Command;

use lpaf::backend::prelude::*;

use lpaf::backend::{CpuBackend, Precision};
use lpaf::data::TaskKind;
use lpaf::model::bert::DenseFactory;
use lpaf::model::io::{read_safetensors, write_safetensors, FloatFormat};
use lpaf::model::weights::load_model_dir;
use lpaf::model::StepCtx;

fn fixture(name: &str) -> PathBuf {
    crate::common::fixture(name)
}

/// A copy of the classification fixture to damage.
fn copy_fixture(dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(fixture("tiny-bert-cls")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
}

fn load_err(dir: &Path) -> String {
    match load_model_dir(&CpuBackend::new(), dir, None, 0, &DenseFactory) {
        Ok(_) => panic!("loading {} succeeded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn corrupt_and_truncated_safetensors_name_the_file() {
    let d = tempfile::tempdir().unwrap();
    copy_fixture(d.path());
    let w = d.path().join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("model.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );
    std::fs::write(&w, b"this is not a safetensors file at all").unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("model.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );
}

#[test]
fn config_weight_mismatch_names_the_tensor() {
    let d = tempfile::tempdir().unwrap();
    copy_fixture(d.path());
    let c = d.path().join("config.json");
    let text = std::fs::read_to_string(&c)
        .unwrap()
        .replace("\"intermediate_size\": 128", "\"intermediate_size\": 100");
    std::fs::write(&c, text).unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("bert.encoder.layer.0.intermediate.dense.weight") && e.contains("[100, 64]"),
        "{e}"
    );
    // A malformed config.
    std::fs::write(&c, "{ \"hidden_size\": 64, ").unwrap();
    let e = load_err(d.path());
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn missing_pieces_are_named() {
    let d = tempfile::tempdir().unwrap();
    copy_fixture(d.path());
    std::fs::remove_file(d.path().join("tokenizer.json")).unwrap();
    std::fs::remove_file(d.path().join("vocab.txt")).unwrap();
    let e = lpaf::data::tokenizer::Tokenizer::from_dir(d.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains(&d.path().display().to_string()), "{e}");
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model.safetensors not found"), "{e}");
    let e = lpaf::data::task::Task::from_name("sst3")
        .unwrap_err()
        .to_string();
    assert!(e.contains("sst3") && e.contains("polarity"), "{e}");
}

#[test]
fn half_precision_checkpoints_load() {
    let be = CpuBackend::new();
    let d = tempfile::tempdir().unwrap();
    copy_fixture(d.path());
    let t = read_safetensors(&fixture("tiny-bert-cls/model.safetensors")).unwrap();
    let r = read_safetensors(&fixture("tiny-bert-cls/reference.safetensors")).unwrap();
    let batch = lpaf::data::Batch {
        size: 4,
        seq_len: 12,
        input_ids: r["input_ids"]
            .as_i64("ids")
            .unwrap()
            .iter()
            .map(|&v| v as i32)
            .collect(),
        token_type_ids: r["token_type_ids"]
            .as_i64("t")
            .unwrap()
            .iter()
            .map(|&v| v as i32)
            .collect(),
        attention_mask: r["attention_mask"]
            .as_i64("m")
            .unwrap()
            .iter()
            .map(|&v| v as u8)
            .collect(),
        labels: lpaf::data::Labels::None,
        feature_ids: (0..4).collect(),
    };
    let want = r["logits"].as_f32("logits").unwrap().to_vec();
    for (fmt, tol) in [(FloatFormat::F16, 2e-3), (FloatFormat::Bf16, 2e-2)] {
        write_safetensors(&d.path().join("model.safetensors"), &t, fmt, None).unwrap();
        let (mut m, _) = load_model_dir(&be, d.path(), None, 0, &DenseFactory).unwrap();
        assert_eq!(m.task, TaskKind::Classification { num_labels: 3 });
        let z = be
            .to_f32(
                &m.forward(&be, &StepCtx::eval(Precision::F32), &batch)
                    .unwrap(),
            )
            .unwrap();
        let e = crate::common::rel_err(&z, &want);
        assert!(e < tol, "{fmt:?}: logits rel err {e}");
    }
}

/// The binary, when it exists where cargo built it (not on a machine the
/// test executable was carried to).
fn binary() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_lpaf"));
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("skipped: the lpaf binary is not at {}", p.display());
        None
    }
}

#[test]
fn the_binary_exits_nonzero_with_a_clear_message() {
    let Some(bin) = binary() else { return };
    let d = tempfile::tempdir().unwrap();
    // Unknown task.
    let out = Command::new(&bin)
        .args([
            "finetune", "--device", "cpu", "--quiet", "--task", "sst3", "--output",
        ])
        .arg(d.path().join("o"))
        .arg("--model")
        .arg(fixture("tiny-bert-cls"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error:") && err.contains("unknown task `sst3`"),
        "{err}"
    );
    // Malformed data row: names file and line.
    let csv = d.path().join("train.csv");
    std::fs::write(
        &csv,
        "sentence,label\ngood movie,1\n\"unterminated,0\nbad film\n",
    )
    .unwrap();
    let out = Command::new(&bin)
        .args([
            "finetune", "--device", "cpu", "--quiet", "--task", "csv", "--text-a", "sentence",
            "--output",
        ])
        .arg(d.path().join("o2"))
        .arg("--model")
        .arg(fixture("tiny-bert-cls"))
        .arg("--train")
        .arg(&csv)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("train.csv:"), "{err}");
    // Unknown recipe key, with a non-zero exit.
    let recipe = d.path().join("r.toml");
    std::fs::write(&recipe, "method = \"movement\"\nmodel = \"m\"\noutput = \"o\"\n[data]\ntask = \"csv\"\n[train]\nlearning_rate = 1.0\n").unwrap();
    let out = Command::new(&bin)
        .args(["compress", "--quiet", "--recipe"])
        .arg(&recipe)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("learning_rate") && err.contains("r.toml"),
        "{err}"
    );
    // Bad flag value.
    let out = Command::new(&bin)
        .args(["bench", "nonsense"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn info_reports_storage_and_numerical_ranks() {
    let Some(bin) = binary() else { return };
    let m = fixture("tiny-bert-cls");
    let out = Command::new(&bin)
        .args(["info", "--json"])
        .arg(&m)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total"]["kept_ratio"].as_f64().unwrap(), 1.0);
    assert_eq!(v["matrices"].as_array().unwrap().len(), 12);
    // A dense model against itself: same numerical rank, and magnitude
    // pruning "at the same density" (1.0) changes nothing.
    let out = Command::new(&bin)
        .args(["info", "--rank", "--json", "--dense"])
        .arg(&m)
        .arg(&m)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 12);
    for r in rows {
        let rank = r["rank"].as_u64().unwrap();
        assert!(rank > 0 && rank <= 64, "{r}");
        assert_eq!(r["dense_rank"].as_u64().unwrap(), rank);
        assert_eq!(r["magnitude_rank"].as_u64().unwrap(), rank);
        assert_eq!(r["density"].as_f64().unwrap(), 1.0);
    }
}

/// A driver older than the build is a clear error naming both CUDA versions
/// (the emulated device poses as a CUDA 12.4 driver); with a new enough
/// driver the same command runs on the device.
#[test]
fn gpu_old_driver_is_a_clear_error() {
    if lpaf::backend::gpu_for_test("gpu_old_driver_is_a_clear_error").is_none() {
        return;
    }
    if !lpaf::device::emulator::active() {
        eprintln!(
            "gpu_old_driver_is_a_clear_error: needs the emulated GPU to pose as an old driver"
        );
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_lpaf"))
        .args(["bench", "kernels", "--device", "cuda", "--scale", "0.001"])
        .env("LPAF_EMU_DRIVER_VERSION", "12040")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let build = lpaf::device::BUILD_CUDA_VERSION;
    if build >= 13000 {
        // The CUDA 13 build on a CUDA 12 driver: points at the CUDA 12 build.
        assert!(!out.status.success());
        assert!(
            err.contains("supports CUDA up to 12.4")
                && err.contains("needs CUDA 13.0")
                && err.contains("R580")
                && err.contains("--features cuda12"),
            "{err}"
        );
        assert!(lpaf::device::driver_version_ok(13000).is_ok());
        assert!(lpaf::device::driver_version_ok(12080).is_err());
    } else {
        // The CUDA 12 build runs on that driver; an 11.8 one is refused.
        assert!(out.status.success(), "{err}");
        let out = Command::new(env!("CARGO_BIN_EXE_lpaf"))
            .args(["bench", "kernels", "--device", "cuda", "--scale", "0.001"])
            .env("LPAF_EMU_DRIVER_VERSION", "11080")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("supports CUDA up to 11.8")
                && err.contains("needs CUDA 12.0")
                && err.contains("R525")
                && !err.contains("--features cuda12"),
            "{err}"
        );
        assert!(lpaf::device::driver_version_ok(12000).is_ok());
        assert!(lpaf::device::driver_version_ok(11080).is_err());
    }
}
