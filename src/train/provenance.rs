//! What a run's `summary.json` records so that it can be reproduced: the
//! build (lpaf version, git commit, CUDA version of the build), the machine
//! (device, driver or CPU model), the run's full configuration with every
//! default filled in, its seed and precision, and the sha256 of the data and
//! weight files it read.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::backend::{Backend, DeviceKind, Precision};
use crate::data::task::TaskSpec;
use crate::error::{Error, Result};

mod build_info {
    include!(concat!(env!("OUT_DIR"), "/build_info.rs"));
}

/// The git commit lpaf was built from ("unknown" outside a checkout) and
/// whether tracked files differed from it.
pub fn git_commit() -> (&'static str, Option<bool>) {
    (build_info::GIT_COMMIT, build_info::GIT_DIRTY)
}

/// sha256 of a file, in hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The files a task spec reads: its explicit files, else every file of its
/// data directory.
pub fn data_files(spec: &TaskSpec) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = [&spec.train, &spec.dev, &spec.test]
        .into_iter()
        .flatten()
        .map(|p| crate::model::io::expand_home(p))
        .collect();
    if let Some(d) = &spec.data_dir {
        let d = crate::model::io::expand_home(d);
        if let Ok(rd) = std::fs::read_dir(&d) {
            let mut files: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            v.extend(files);
        }
    }
    v
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The `reproduction` object of a summary. `config` is the parsed
/// configuration (defaults filled in); `files` the data files and `model`
/// the starting model directory (its weights file is hashed).
pub fn reproduction(
    be: &dyn Backend,
    precision: Precision,
    seed: u64,
    config: &impl Serialize,
    files: &[PathBuf],
    model: &Path,
) -> Result<Value> {
    let f = |x: i32| format!("{}.{}", x / 1000, (x % 1000) / 10);
    let (commit, dirty) = git_commit();
    let mut hashes = serde_json::Map::new();
    for p in files {
        hashes.insert(p.display().to_string(), Value::String(sha256_file(p)?));
    }
    let weights = crate::model::weights::model_root(model)
        .map(|r| r.join("model.safetensors"))
        .ok()
        .filter(|p| p.is_file());
    let weights_hash = match &weights {
        Some(p) => json!({"path": p, "sha256": sha256_file(p)?}),
        None => Value::Null,
    };
    let machine = match be.kind() {
        DeviceKind::Cuda => json!({
            "device": be.name(),
            "driver_cuda_version": crate::device::driver_cuda_version().map(f),
            "emulated": crate::device::emulator::active(),
        }),
        DeviceKind::Cpu => json!({"device": be.name(), "cpu_model": cpu_model()}),
    };
    Ok(json!({
        "lpaf_version": env!("CARGO_PKG_VERSION"),
        "git_commit": commit,
        "git_dirty": dirty,
        "build_cuda_version": f(crate::device::BUILD_CUDA_VERSION),
        "kernels_built_by": crate::kernels::NVCC_VERSION,
        "machine": machine,
        "precision": precision,
        "seed": seed,
        "config": config,
        "data_sha256": hashes,
        "model_weights": weights_hash,
    }))
}
