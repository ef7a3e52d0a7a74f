//! Checkpoints: everything a resumed run needs to continue bit-identically —
//! parameters, AdamW moments, compressed layers' state (masks, scores, their
//! averages), and the trainer's position (step, data cursor, seed, schedule,
//! method state). Written into a temporary directory and renamed into place,
//! so an interrupted save never replaces a good checkpoint with a broken one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, DType, Tensor};
use crate::error::{Error, Result, ResultExt};
use crate::model::io::{read_safetensors, write_safetensors, FloatFormat, HostData, HostTensor};
use crate::model::Bert;

/// The trainer's position and anything else a method needs, as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub lpaf_version: String,
    /// Optimizer steps done.
    pub step: u64,
    pub total_steps: u64,
    pub seed: u64,
    /// Data order position: epoch and index of the next feature within it.
    pub epoch: u64,
    pub position: u64,
    pub best_metric: Option<f64>,
    pub best_step: Option<u64>,
    /// The compression method's own state (schedule position, RNG, counters).
    pub method: serde_json::Value,
    /// A fingerprint of the run's settings; resuming with other settings is refused.
    pub config_fingerprint: String,
}

/// Downloads a tensor of any dtype to a host tensor.
pub fn to_host(be: &dyn Backend, t: &Tensor) -> Result<HostTensor> {
    Ok(match t.dtype() {
        DType::F32 | DType::Bf16 => HostTensor::f32(t.shape(), be.to_f32(t)?),
        DType::U8 => HostTensor::u8(t.shape(), be.to_u8(t)?),
        DType::I32 => HostTensor::i32(t.shape(), be.to_i32(t)?),
    })
}

/// Uploads a host tensor into `dst` (same shape and dtype class), naming it in errors.
pub fn from_host(be: &dyn Backend, name: &str, h: &HostTensor, dst: &mut Tensor) -> Result<()> {
    if h.shape != dst.shape() {
        return Err(Error::msg(format!(
            "tensor '{name}': checkpoint shape {:?}, model shape {:?}",
            h.shape,
            dst.shape()
        )));
    }
    let t = match (&h.data, dst.dtype()) {
        (HostData::F32(v), DType::F32) => be.from_f32(v, &h.shape)?,
        (HostData::U8(v), DType::U8) => be.from_u8(v, &h.shape)?,
        (HostData::I32(v), DType::I32) => be.from_i32(v, &h.shape)?,
        _ => {
            return Err(Error::msg(format!(
                "tensor '{name}': dtype in checkpoint does not match {:?}",
                dst.dtype()
            )))
        }
    };
    be.copy(&t, dst)
}

/// Writes the directory produced by `fill` atomically: into a sibling
/// temporary directory first, then renamed over `dir`.
pub fn write_dir_atomic(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let name = dir
        .file_name()
        .ok_or_else(|| Error::msg(format!("{}: not a directory name", dir.display())))?;
    let tmp = parent.join(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = parent.join(format!(
        ".{}.old-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}

/// Saves model parameters, optimizer moments, layer state and trainer state.
pub fn save_checkpoint(
    be: &dyn Backend,
    model: &mut Bert,
    state: &TrainerState,
    dir: &Path,
) -> Result<()> {
    let mut params = BTreeMap::new();
    let mut moments = BTreeMap::new();
    model.visit_params(&mut |p| {
        params.insert(p.name.clone(), to_host(be, &p.value)?);
        if let Some((m, v)) = &p.adam {
            moments.insert(format!("m/{}", p.name), to_host(be, m)?);
            moments.insert(format!("v/{}", p.name), to_host(be, v)?);
        }
        Ok(())
    })?;
    let mut extra = BTreeMap::new();
    model.visit_state(&mut |name, t| {
        extra.insert(name.to_string(), to_host(be, t)?);
        Ok(())
    })?;
    let json = serde_json::to_string_pretty(state)?;
    let config = serde_json::to_string_pretty(&model.config)?;
    write_dir_atomic(dir, |tmp| {
        write_safetensors(
            &tmp.join("params.safetensors"),
            &params,
            FloatFormat::F32,
            None,
        )?;
        write_safetensors(
            &tmp.join("optimizer.safetensors"),
            &moments,
            FloatFormat::F32,
            None,
        )?;
        write_safetensors(
            &tmp.join("state.safetensors"),
            &extra,
            FloatFormat::F32,
            None,
        )?;
        std::fs::write(tmp.join("config.json"), config.as_bytes())
            .map_err(|e| Error::io(tmp.join("config.json"), e))?;
        std::fs::write(tmp.join("trainer.json"), json.as_bytes())
            .map_err(|e| Error::io(tmp.join("trainer.json"), e))
    })
    .with_context(|| format!("saving checkpoint {}", dir.display()))
}

/// Reads only the trainer state of a checkpoint.
pub fn read_trainer_state(dir: &Path) -> Result<TrainerState> {
    let p = dir.join("trainer.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    serde_json::from_str(&text).with_context(|| format!("{}: malformed trainer state", p.display()))
}

/// Restores a checkpoint into a model of the same structure; returns its
/// trainer state. Every parameter and state tensor must be present.
pub fn load_checkpoint(be: &dyn Backend, model: &mut Bert, dir: &Path) -> Result<TrainerState> {
    let ctx = |f: &str| -> PathBuf { dir.join(f) };
    let state = read_trainer_state(dir)?;
    let params = read_safetensors(&ctx("params.safetensors"))?;
    let moments = read_safetensors(&ctx("optimizer.safetensors"))?;
    let extra = read_safetensors(&ctx("state.safetensors"))?;
    model
        .visit_params(&mut |p| {
            let h = params
                .get(&p.name)
                .ok_or_else(|| Error::msg(format!("parameter '{}' is missing", p.name)))?;
            from_host(be, &p.name, h, &mut p.value)?;
            match (
                moments.get(&format!("m/{}", p.name)),
                moments.get(&format!("v/{}", p.name)),
            ) {
                (Some(m), Some(v)) => {
                    p.adam_state(be)?;
                    let (mt, vt) = p.adam.as_mut().expect("allocated");
                    from_host(be, &format!("m/{}", p.name), m, mt)?;
                    from_host(be, &format!("v/{}", p.name), v, vt)?;
                }
                (None, None) => p.adam = None,
                _ => {
                    return Err(Error::msg(format!(
                        "optimizer state of '{}' is incomplete",
                        p.name
                    )))
                }
            }
            Ok(())
        })
        .with_context(|| format!("{}", ctx("params.safetensors").display()))?;
    model
        .visit_state(&mut |name, t| {
            let h = extra
                .get(name)
                .ok_or_else(|| Error::msg(format!("state tensor '{name}' is missing")))?;
            from_host(be, name, h, t)
        })
        .with_context(|| format!("{}", ctx("state.safetensors").display()))?;
    Ok(state)
}
