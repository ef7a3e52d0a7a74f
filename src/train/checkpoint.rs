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
use crate::model::io::{
    read_safetensors, sync_dir, write_atomic, write_safetensors, FloatFormat, HostData, HostTensor,
};
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
    /// The divergence rule's memory: the reference loss (first step) and
    /// the losses of the latest ones (so a resumed run judges alike).
    #[serde(default)]
    pub reference_loss: Option<f64>,
    #[serde(default)]
    pub recent_losses: Vec<f64>,
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

/// The sibling directories `write_dir_atomic` uses for `dir`: the one being
/// filled and the previous version during the swap.
fn sibling(dir: &Path, kind: &str) -> Result<PathBuf> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dir
        .file_name()
        .ok_or_else(|| Error::msg(format!("{}: not a directory name", dir.display())))?;
    Ok(parent.join(format!(
        ".{}.{kind}-{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

fn sync_tree(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        if p.is_dir() {
            sync_tree(&p)?;
        } else {
            let f = std::fs::File::open(&p).map_err(|e| Error::io(&p, e))?;
            f.sync_all().map_err(|e| Error::io(&p, e))?;
        }
    }
    sync_dir(dir)
}

/// Writes the directory produced by `fill` atomically: into a sibling
/// `.NAME.partial-PID` first, every file and the directory fsynced, then
/// swapped in (`dir` → `.NAME.old-PID`, partial → `dir`, parent fsynced, old
/// removed). A crash at any point leaves `dir` or one of the two siblings
/// complete; [`recover_checkpoint`] puts a checkpoint back together.
/// `dir`, when it exists, must be a directory.
pub fn write_dir_atomic(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::msg(format!(
            "{}: exists and is not a directory; refusing to replace it",
            dir.display()
        )));
    }
    let tmp = sibling(dir, "partial")?;
    let parent = tmp.parent().expect("sibling has a parent").to_path_buf();
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = fill(&tmp).and_then(|_| sync_tree(&tmp)) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    crate::fault::crash_point("dir-swap-before");
    let old = sibling(dir, "old")?;
    if dir.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        }
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
        crate::fault::crash_point("dir-swap-middle");
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    sync_dir(&parent)?;
    crate::fault::crash_point("dir-swap-after");
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    sync_dir(&parent)
}

/// Leftovers of interrupted [`write_dir_atomic`] calls in `dir`
/// (`.NAME.partial-PID`, `.NAME.old-PID`), of the directory `name` only when
/// given; sorted.
pub fn swap_leftovers(dir: &Path, name: Option<&str>) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            match name {
                Some(name) => {
                    n.starts_with(&format!(".{name}.partial-"))
                        || n.starts_with(&format!(".{name}.old-"))
                }
                None => n.starts_with('.') && (n.contains(".partial-") || n.contains(".old-")),
            }
        })
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Why a checkpoint directory cannot be resumed from, or its step.
pub fn checkpoint_complete(dir: &Path) -> Result<u64> {
    let state = read_trainer_state(dir)?;
    for f in [
        "params.safetensors",
        "optimizer.safetensors",
        "state.safetensors",
    ] {
        crate::model::io::safetensors_intact(&dir.join(f))?;
    }
    let c = dir.join("config.json");
    if !c.is_file() {
        return Err(Error::msg(format!("{}: missing", c.display())));
    }
    Ok(state.step)
}

/// Before a run uses `dir` (its `checkpoint/`): makes `dir` the newest
/// complete checkpoint left by an interrupted save and removes the rest.
/// A crash inside [`write_dir_atomic`] leaves `dir` (complete) and perhaps
/// a stale partial, or, in the middle of the swap, no `dir` but a complete
/// partial and the previous checkpoint as `.old`. Returns a note saying what
/// was recovered or removed. Only call this while holding the run
/// directory's lock (a live run's partial must not be touched).
pub fn recover_checkpoint(dir: &Path) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let siblings = swap_leftovers(&parent, Some(&name));
    if siblings.is_empty() {
        return Ok(notes);
    }
    let current = if dir.exists() {
        Some(checkpoint_complete(dir))
    } else {
        None
    };
    // The newest complete candidate: the current one, or a sibling with a later step.
    let mut best: Option<(u64, PathBuf)> = match &current {
        Some(Ok(step)) => Some((*step, dir.to_path_buf())),
        _ => None,
    };
    for s in &siblings {
        if let Ok(step) = checkpoint_complete(s) {
            if best.as_ref().map(|(b, _)| step > *b).unwrap_or(true) {
                best = Some((step, s.clone()));
            }
        }
    }
    match best {
        Some((step, p)) if p != dir => {
            if dir.exists() {
                std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            std::fs::rename(&p, dir).map_err(|e| Error::io(&p, e))?;
            sync_dir(&parent)?;
            notes.push(format!(
                "recovered the checkpoint of step {step} from {} (a save was interrupted)",
                p.display()
            ));
        }
        Some(_) => {}
        None => {
            if let Some(Err(e)) = current {
                return Err(Error::msg(format!(
                    "{}: the checkpoint is incomplete and no complete copy was left by the interrupted save ({e}); \
                     start over with --overwrite",
                    dir.display()
                )));
            }
        }
    }
    for s in siblings {
        if s.exists() {
            std::fs::remove_dir_all(&s).map_err(|e| Error::io(&s, e))?;
            notes.push(format!(
                "removed {} (left by an interrupted save)",
                s.display()
            ));
        }
    }
    sync_dir(&parent)?;
    Ok(notes)
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
        write_atomic(&tmp.join("config.json"), config.as_bytes())?;
        // Last: a partial directory with trainer.json had every other file written.
        write_atomic(&tmp.join("trainer.json"), json.as_bytes())
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
