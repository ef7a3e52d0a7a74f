//! The compressed-model directory (SPEC §7): `config.json`, the tokenizer,
//! `model.safetensors` in which each compressed `<name>.weight` is replaced by
//! `<name>.lowrank_u` / `<name>.lowrank_v` and, when there is a sparse part,
//! CSR tensors `<name>.sparse_values` / `.sparse_indices` / `.sparse_indptr`,
//! and `compression.json` (method, recipe, per-matrix rank / nnz / kept ratio).
//!
//! The kept ratio is always computed from the tensors as stored, so what is
//! printed equals a recount from the saved file.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::compress::layers::{
    from_csr, FactorizedLinear, LowRankSparseLinear, MaskKind, MaskedLinear,
};
use crate::data::TaskKind;
use crate::error::{Error, Result, ResultExt};
use crate::model::bert::{linear_prefix, slot_shape, take, Bert, LinearFactory};
use crate::model::config::BertConfig;
use crate::model::io::{
    read_safetensors, write_atomic, write_safetensors, FloatFormat, HostTensor,
};
use crate::model::linear::{DenseLinear, LinearOp};
use crate::model::param::Param;
use crate::model::weights::{
    copy_tokenizer_files, format_metadata, read_model_dir, save_model_dir, LoadReport,
};

pub const COMPRESSION_FILE: &str = "compression.json";

/// One compressible matrix as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatrixStats {
    pub name: String,
    pub shape: [usize; 2],
    /// dense, lowrank, lowrank+sparse or sparse.
    pub form: String,
    pub rank: usize,
    pub nnz: usize,
    pub stored_params: usize,
    pub kept_ratio: f64,
    /// Bytes of CSR index storage (i32 column indices and row pointers).
    pub index_bytes: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TotalStats {
    pub dense_params: usize,
    pub stored_params: usize,
    pub kept_ratio: f64,
    pub index_bytes: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompressionInfo {
    pub engine: String,
    pub method: String,
    pub recipe: serde_json::Value,
    pub matrices: Vec<MatrixStats>,
    pub total: TotalStats,
}

fn shape_of(tensors: &BTreeMap<String, HostTensor>, name: &str) -> Option<Vec<usize>> {
    tensors.get(name).map(|t| t.shape.clone())
}

/// Per-matrix and total storage of the compressible matrices, counted from
/// the tensors under their stored names.
pub fn stats_from_tensors(
    config: &BertConfig,
    tensors: &BTreeMap<String, HostTensor>,
) -> Result<(Vec<MatrixStats>, TotalStats)> {
    let mut out = Vec::new();
    for layer in 0..config.num_hidden_layers {
        for slot in 0..6 {
            let prefix = linear_prefix(layer, slot);
            let (o, i) = slot_shape(config, slot);
            let dense = o * i;
            let (form, rank, nnz, index_bytes) = if tensors
                .contains_key(&format!("{prefix}.weight"))
            {
                ("dense", o.min(i), dense, 0)
            } else {
                let rank = match shape_of(tensors, &format!("{prefix}.lowrank_u")) {
                    Some(s) if s.len() == 2 && s[0] == o => s[1],
                    Some(s) => {
                        return Err(Error::msg(format!(
                            "tensor '{prefix}.lowrank_u' has shape {s:?}, expected [{o}, r]"
                        )))
                    }
                    None => 0,
                };
                let has_lr = tensors.contains_key(&format!("{prefix}.lowrank_u"));
                if has_lr && !tensors.contains_key(&format!("{prefix}.lowrank_v")) {
                    return Err(Error::msg(format!(
                        "tensor '{prefix}.lowrank_v' is missing"
                    )));
                }
                let nnz = shape_of(tensors, &format!("{prefix}.sparse_values"))
                    .map(|s| s.iter().product::<usize>());
                match (has_lr, nnz) {
                    (true, None) => ("lowrank", rank, 0, 0),
                    (true, Some(n)) => ("lowrank+sparse", rank, n, 4 * n + 4 * (o + 1)),
                    (false, Some(n)) => ("sparse", 0, n, 4 * n + 4 * (o + 1)),
                    (false, None) => {
                        return Err(Error::msg(format!(
                            "matrix '{prefix}' has neither '.weight' nor '.lowrank_u'/'.sparse_values' tensors"
                        )))
                    }
                }
            };
            let stored = if form == "dense" {
                dense
            } else {
                rank * (o + i) + nnz
            };
            out.push(MatrixStats {
                name: prefix,
                shape: [o, i],
                form: form.to_string(),
                rank,
                nnz,
                stored_params: stored,
                kept_ratio: stored as f64 / dense as f64,
                index_bytes,
            });
        }
    }
    let dense: usize = out.iter().map(|m| m.shape[0] * m.shape[1]).sum();
    let stored: usize = out.iter().map(|m| m.stored_params).sum();
    let total = TotalStats {
        dense_params: dense,
        stored_params: stored,
        kept_ratio: stored as f64 / dense.max(1) as f64,
        index_bytes: out.iter().map(|m| m.index_bytes).sum(),
    };
    Ok((out, total))
}

/// A readable table of the statistics (for `lpaf info` and after compression).
pub fn stats_table(matrices: &[MatrixStats], total: &TotalStats) -> String {
    let mut s =
        String::from("| matrix | shape | form | rank | nnz | kept |\n|---|---|---|---|---|---|\n");
    for m in matrices {
        s.push_str(&format!(
            "| {} | {}×{} | {} | {} | {} | {:.4} |\n",
            m.name.trim_start_matches("bert.encoder."),
            m.shape[0],
            m.shape[1],
            m.form,
            m.rank,
            m.nnz,
            m.kept_ratio
        ));
    }
    s.push_str(&format!(
        "| **total** | {} params | | | | **{:.4}** ({} stored, {} index bytes) |\n",
        total.dense_params, total.kept_ratio, total.stored_params, total.index_bytes
    ));
    s
}

/// Saves a compressed model directory; returns its statistics.
pub fn save_compressed(
    be: &dyn Backend,
    model: &Bert,
    dir: &Path,
    tokenizer_from: Option<&Path>,
    label_names: Option<&[String]>,
    method: &str,
    recipe: serde_json::Value,
) -> Result<CompressionInfo> {
    let tensors = model.export(be)?;
    let (matrices, total) = stats_from_tensors(&model.config, &tensors)?;
    let info = CompressionInfo {
        engine: format!("lpaf {}", env!("CARGO_PKG_VERSION")),
        method: method.to_string(),
        recipe,
        matrices,
        total,
    };
    crate::train::checkpoint::write_dir_atomic(dir, |tmp| {
        // config.json and the tokenizer as for any model, then our tensors.
        save_model_dir_config_only(model, tmp, tokenizer_from, label_names)?;
        write_safetensors(
            &tmp.join("model.safetensors"),
            &tensors,
            FloatFormat::F32,
            Some(format_metadata()),
        )?;
        write_atomic(
            &tmp.join(COMPRESSION_FILE),
            serde_json::to_string_pretty(&info)?.as_bytes(),
        )
    })
    .with_context(|| format!("saving the compressed model {}", dir.display()))?;
    Ok(info)
}

fn save_model_dir_config_only(
    model: &Bert,
    dir: &Path,
    tokenizer_from: Option<&Path>,
    label_names: Option<&[String]>,
) -> Result<()> {
    let mut config = model.config.clone();
    config
        .extra
        .insert("model_type".into(), serde_json::json!("bert"));
    config
        .extra
        .insert("lpaf_compressed".into(), serde_json::json!(true));
    if let (TaskKind::Classification { num_labels }, Some(names)) = (&model.task, label_names) {
        if names.len() == *num_labels {
            config.set_labels(names);
        }
    }
    if let TaskKind::Classification { num_labels } = &model.task {
        if config.id2label.as_ref().map(|m| m.len()) != Some(*num_labels) {
            let names: Vec<String> = (0..*num_labels).map(|i| format!("LABEL_{i}")).collect();
            config.set_labels(&names);
        }
    }
    if model.task == TaskKind::Regression {
        config.problem_type = Some("regression".into());
        config.set_labels(&["LABEL_0".to_string()]);
    }
    config.save(&dir.join("config.json"))?;
    if let Some(src) = tokenizer_from {
        copy_tokenizer_files(src, dir)?;
    }
    Ok(())
}

/// Reads `compression.json` of a compressed directory.
pub fn read_compression_info(dir: &Path) -> Result<CompressionInfo> {
    let p = dir.join(COMPRESSION_FILE);
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    serde_json::from_str(&text).with_context(|| format!("{}: malformed", p.display()))
}

/// Builds each matrix from whichever stored form it has: dense, factorized,
/// low-rank + sparse, or sparse only.
pub struct CompressedFactory;

impl LinearFactory for CompressedFactory {
    fn build(
        &self,
        be: &dyn Backend,
        prefix: &str,
        out: usize,
        inp: usize,
        tensors: &mut BTreeMap<String, HostTensor>,
    ) -> Result<Box<dyn LinearOp>> {
        if tensors.contains_key(&format!("{prefix}.weight")) {
            return crate::model::bert::DenseFactory.build(be, prefix, out, inp, tensors);
        }
        let b = take(tensors, &format!("{prefix}.bias"), &[out])?;
        let bias = Param::from_host(be, format!("{prefix}.bias"), &b, &[out], false)?;
        let sparse = if tensors.contains_key(&format!("{prefix}.sparse_values")) {
            let name = |s: &str| format!("{prefix}.{s}");
            let get = |tensors: &mut BTreeMap<String, HostTensor>, s: &str| {
                tensors
                    .remove(&name(s))
                    .ok_or_else(|| Error::msg(format!("tensor '{}' is missing", name(s))))
            };
            let vals = get(tensors, "sparse_values")?;
            let idx = get(tensors, "sparse_indices")?;
            let ptr = get(tensors, "sparse_indptr")?;
            Some(from_csr(
                prefix,
                vals.as_f32(&name("sparse_values"))?,
                &idx.as_i64(&name("sparse_indices"))?,
                &ptr.as_i64(&name("sparse_indptr"))?,
                out,
                inp,
            )?)
        } else {
            None
        };
        if tensors.contains_key(&format!("{prefix}.lowrank_u"))
            || tensors.contains_key(&format!("{prefix}.lowrank_v"))
        {
            let u_t = tensors
                .get(&format!("{prefix}.lowrank_u"))
                .ok_or_else(|| Error::msg(format!("tensor '{prefix}.lowrank_u' is missing")))?;
            let r = if u_t.shape.len() == 2 {
                u_t.shape[1]
            } else {
                0
            };
            let u = take(tensors, &format!("{prefix}.lowrank_u"), &[out, r])?;
            let v = take(tensors, &format!("{prefix}.lowrank_v"), &[r, inp])?;
            return Ok(match sparse {
                None => Box::new(FactorizedLinear::new(
                    be, prefix, &u, &v, bias, out, inp, r,
                )?),
                Some(s) => Box::new(LowRankSparseLinear::new(
                    be, prefix, &u, &v, &s, bias, out, inp, r, true, false,
                )?),
            });
        }
        match sparse {
            Some(w) => {
                let mask: Vec<u8> = w.iter().map(|&v| (v != 0.0) as u8).collect();
                let weight =
                    Param::from_host(be, format!("{prefix}.weight"), &w, &[out, inp], true)?;
                let mut l = MaskedLinear::new(be, prefix, weight, bias, MaskKind::Fixed)?;
                l.mask = be.from_u8(&mask, &[out, inp])?;
                l.kept = mask.iter().filter(|&&m| m != 0).count();
                Ok(Box::new(l))
            }
            None => Err(Error::msg(format!(
                "tensor '{prefix}.weight' is missing (and no compressed form of it either)"
            ))),
        }
    }
}

/// Loads a compressed (or plain) model directory.
pub fn load_compressed(be: &dyn Backend, dir: &Path, seed: u64) -> Result<(Bert, LoadReport)> {
    crate::model::weights::load_model_dir(be, dir, None, seed, &CompressedFactory)
}

/// The dense matrix `U·V + S` (host), from a matrix's stored tensors.
pub fn dense_matrix(
    tensors: &BTreeMap<String, HostTensor>,
    prefix: &str,
    out: usize,
    inp: usize,
) -> Result<Vec<f32>> {
    let mut w = vec![0.0f32; out * inp];
    if let (Some(u), Some(v)) = (
        tensors.get(&format!("{prefix}.lowrank_u")),
        tensors.get(&format!("{prefix}.lowrank_v")),
    ) {
        let r = u.shape[1];
        let (u, v) = (u.as_f32(prefix)?, v.as_f32(prefix)?);
        for i in 0..out {
            for k in 0..r {
                let a = u[i * r + k] as f64;
                if a == 0.0 {
                    continue;
                }
                for j in 0..inp {
                    w[i * inp + j] += (a * v[k * inp + j] as f64) as f32;
                }
            }
        }
    }
    if let Some(vals) = tensors.get(&format!("{prefix}.sparse_values")) {
        let s = from_csr(
            prefix,
            vals.as_f32(prefix)?,
            &tensors[&format!("{prefix}.sparse_indices")].as_i64(prefix)?,
            &tensors[&format!("{prefix}.sparse_indptr")].as_i64(prefix)?,
            out,
            inp,
        )?;
        w.iter_mut().zip(s).for_each(|(w, s)| *w += s);
    }
    Ok(w)
}

/// Writes `W = U·V + S` for every compressed matrix back as a plain Hugging
/// Face checkpoint that `transformers` loads with no custom code.
pub fn export_dense(be: &dyn Backend, src: &Path, dst: &Path) -> Result<()> {
    let (config, mut tensors, _) = read_model_dir(src)?;
    for layer in 0..config.num_hidden_layers {
        for slot in 0..6 {
            let prefix = linear_prefix(layer, slot);
            if tensors.contains_key(&format!("{prefix}.weight")) {
                continue;
            }
            let (o, i) = slot_shape(&config, slot);
            let w = dense_matrix(&tensors, &prefix, o, i)?;
            for s in [
                "lowrank_u",
                "lowrank_v",
                "sparse_values",
                "sparse_indices",
                "sparse_indptr",
            ] {
                tensors.remove(&format!("{prefix}.{s}"));
            }
            tensors.insert(format!("{prefix}.weight"), HostTensor::f32(&[o, i], w));
        }
    }
    let task = crate::model::weights::task_from_tensors(&tensors, &config)
        .ok_or_else(|| Error::msg(format!("{}: the model has no task head", src.display())))?;
    let labels = config.label_names();
    let mut created = Vec::new();
    let bert = Bert::from_tensors(
        be,
        config,
        task,
        &mut tensors,
        &crate::model::bert::DenseFactory,
        0,
        &mut created,
    )?;
    let mut bert = bert;
    bert.config.extra.remove("lpaf_compressed");
    save_model_dir(
        be,
        &bert,
        dst,
        Some(src),
        labels.as_deref(),
        FloatFormat::F32,
    )
}

/// Replaces a compressed layer by the dense layer of the same matrix (used by tests and export).
pub fn densify_layer(be: &dyn Backend, l: &dyn LinearOp, prefix: &str) -> Result<DenseLinear> {
    let mut t = BTreeMap::new();
    for (k, v) in l.export(be)? {
        t.insert(format!("{prefix}.{k}"), v);
    }
    let (o, i) = (l.out_features(), l.in_features());
    let w = if t.contains_key(&format!("{prefix}.weight")) {
        t[&format!("{prefix}.weight")].as_f32(prefix)?.to_vec()
    } else {
        dense_matrix(&t, prefix, o, i)?
    };
    let b = t[&format!("{prefix}.bias")].as_f32(prefix)?.to_vec();
    DenseLinear::from_host(be, prefix, &w, &b, o, i)
}

/// Recounts the statistics of a saved directory from its tensors.
pub fn recount(dir: &Path) -> Result<(Vec<MatrixStats>, TotalStats)> {
    let (config, tensors, _) = read_model_dir(dir)?;
    stats_from_tensors(&config, &tensors)
}

/// For `read_safetensors` users that need the raw names.
pub fn read_tensors(dir: &Path) -> Result<BTreeMap<String, HostTensor>> {
    read_safetensors(&dir.join("model.safetensors"))
}
