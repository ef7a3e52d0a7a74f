//! The compressed-model directory (docs/algorithms.md §7): `config.json`, the tokenizer,
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
use crate::{bail, ensure};

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

/// The stored parts of one compressible matrix, after validation.
struct Parts {
    form: &'static str,
    rank: usize,
    nnz: usize,
}

/// Checks that `t` is a 1-D integer tensor and returns its values.
fn int_vector(tensors: &BTreeMap<String, HostTensor>, name: &str) -> Result<Vec<i64>> {
    let t = &tensors[name];
    if t.shape.len() != 1 {
        bail!(
            "tensor '{name}' has shape {:?}, expected one dimension",
            t.shape
        );
    }
    t.as_i64(name)
}

/// Validates the CSR triple of `prefix` against an `out × inp` matrix:
/// values and column indices of one length, `out + 1` row pointers from 0 to
/// nnz, non-decreasing, and column indices in range, strictly increasing
/// (sorted, no duplicates) within each row. Returns nnz.
fn check_csr(
    tensors: &BTreeMap<String, HostTensor>,
    prefix: &str,
    out: usize,
    inp: usize,
) -> Result<usize> {
    let vn = format!("{prefix}.sparse_values");
    let iname = format!("{prefix}.sparse_indices");
    let pn = format!("{prefix}.sparse_indptr");
    let vals = &tensors[&vn];
    if vals.shape.len() != 1 {
        bail!("tensor '{vn}' has shape {:?}, expected [nnz]", vals.shape);
    }
    vals.as_f32(&vn)?;
    let nnz = vals.shape[0];
    let idx = int_vector(tensors, &iname)?;
    let ptr = int_vector(tensors, &pn)?;
    ensure!(
        idx.len() == nnz,
        "tensor '{iname}' has {} entries but '{vn}' has {nnz}",
        idx.len()
    );
    ensure!(
        ptr.len() == out + 1,
        "tensor '{pn}' has {} entries, expected {} (rows + 1)",
        ptr.len(),
        out + 1
    );
    ensure!(ptr[0] == 0, "tensor '{pn}' starts at {}, not 0", ptr[0]);
    ensure!(
        ptr[out] == nnz as i64,
        "tensor '{pn}' ends at {}, but there are {nnz} values",
        ptr[out]
    );
    for r in 0..out {
        let (a, b) = (ptr[r], ptr[r + 1]);
        ensure!(a <= b, "tensor '{pn}' decreases at row {r} ({a} then {b})");
        ensure!(
            a >= 0 && b <= nnz as i64,
            "tensor '{pn}': row {r} spans {a}..{b}, outside the {nnz} values"
        );
        let mut prev = -1i64;
        for &c in &idx[a as usize..b as usize] {
            ensure!(
                c >= 0 && (c as usize) < inp,
                "tensor '{iname}': column index {c} at row {r} is outside 0..{inp}"
            );
            ensure!(
                c > prev,
                "tensor '{iname}': column indices of row {r} are not sorted and unique ({prev} then {c})"
            );
            prev = c;
        }
    }
    Ok(nnz)
}

/// Validates the stored form of one matrix: which parts exist, their shapes
/// and dtypes, and the CSR structure. Every part a form needs must be there;
/// parts of two forms at once are refused.
fn check_matrix(
    tensors: &BTreeMap<String, HostTensor>,
    prefix: &str,
    out: usize,
    inp: usize,
) -> Result<Parts> {
    let has = |s: &str| tensors.contains_key(&format!("{prefix}.{s}"));
    let bias = format!("{prefix}.bias");
    match tensors.get(&bias) {
        Some(b) if b.shape == [out] => {}
        Some(b) => bail!("tensor '{bias}' has shape {:?}, expected [{out}]", b.shape),
        None => bail!("tensor '{bias}' is missing"),
    }
    let compressed = [
        "lowrank_u",
        "lowrank_v",
        "sparse_values",
        "sparse_indices",
        "sparse_indptr",
    ];
    if has("weight") {
        let w = format!("{prefix}.weight");
        let t = &tensors[&w];
        ensure!(
            t.shape == [out, inp],
            "tensor '{w}' has shape {:?}, expected [{out}, {inp}]",
            t.shape
        );
        t.as_f32(&w)?;
        if let Some(c) = compressed.iter().find(|c| has(c)) {
            bail!("matrix '{prefix}' has both '.weight' and '.{c}': one stored form only");
        }
        return Ok(Parts {
            form: "dense",
            rank: out.min(inp),
            nnz: out * inp,
        });
    }
    let rank = match (has("lowrank_u"), has("lowrank_v")) {
        (false, false) => None,
        (true, false) => {
            bail!("tensor '{prefix}.lowrank_v' is missing (its '.lowrank_u' is there)")
        }
        (false, true) => {
            bail!("tensor '{prefix}.lowrank_u' is missing (its '.lowrank_v' is there)")
        }
        (true, true) => {
            let (un, vn) = (format!("{prefix}.lowrank_u"), format!("{prefix}.lowrank_v"));
            let (u, v) = (&tensors[&un], &tensors[&vn]);
            ensure!(
                u.shape.len() == 2 && u.shape[0] == out,
                "tensor '{un}' has shape {:?}, expected [{out}, rank]",
                u.shape
            );
            let r = u.shape[1];
            ensure!(
                r <= out.min(inp),
                "tensor '{un}' has rank {r}, more than min({out}, {inp})"
            );
            ensure!(
                v.shape == [r, inp],
                "tensor '{vn}' has shape {:?}, expected [{r}, {inp}] (rank {r} from '{un}')",
                v.shape
            );
            u.as_f32(&un)?;
            v.as_f32(&vn)?;
            Some(r)
        }
    };
    let sparse_parts = ["sparse_values", "sparse_indices", "sparse_indptr"];
    let present = sparse_parts.iter().filter(|s| has(s)).count();
    let nnz = match present {
        0 => None,
        3 => Some(check_csr(tensors, prefix, out, inp)?),
        _ => {
            let missing: Vec<String> = sparse_parts
                .iter()
                .filter(|s| !has(s))
                .map(|s| format!("'{prefix}.{s}'"))
                .collect();
            bail!(
                "matrix '{prefix}': CSR part {} missing",
                missing.join(" and ")
            );
        }
    };
    Ok(match (rank, nnz) {
        (Some(r), None) => Parts {
            form: "lowrank",
            rank: r,
            nnz: 0,
        },
        (Some(r), Some(n)) => Parts {
            form: "lowrank+sparse",
            rank: r,
            nnz: n,
        },
        (None, Some(n)) => Parts {
            form: "sparse",
            rank: 0,
            nnz: n,
        },
        (None, None) => bail!(
            "matrix '{prefix}' has neither '.weight' nor '.lowrank_u'/'.lowrank_v' nor '.sparse_*' tensors"
        ),
    })
}

/// Per-matrix and total storage of the compressible matrices, counted from
/// the tensors under their stored names, after validating every matrix's
/// parts (see [`check_matrix`]).
pub fn stats_from_tensors(
    config: &BertConfig,
    tensors: &BTreeMap<String, HostTensor>,
) -> Result<(Vec<MatrixStats>, TotalStats)> {
    let mut out = Vec::new();
    for layer in 0..config.num_hidden_layers {
        for slot in 0..6 {
            let prefix = linear_prefix(layer, slot);
            let (o, i) = slot_shape(config, slot);
            let dense = o
                .checked_mul(i)
                .ok_or_else(|| Error::msg(format!("matrix '{prefix}': {o}×{i} overflows")))?;
            let p = check_matrix(tensors, &prefix, o, i)?;
            let index_bytes = if p.form.contains("sparse") {
                4 * p.nnz + 4 * (o + 1)
            } else {
                0
            };
            let stored = if p.form == "dense" {
                dense
            } else {
                p.rank * (o + i) + p.nnz
            };
            out.push(MatrixStats {
                name: prefix,
                shape: [o, i],
                form: p.form.to_string(),
                rank: p.rank,
                nnz: p.nnz,
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

/// A model directory read and validated: config, tensors (canonical names),
/// what loading found, the recounted statistics, and `compression.json`
/// when the directory is compressed.
pub struct ValidatedDir {
    pub config: BertConfig,
    pub tensors: BTreeMap<String, HostTensor>,
    pub report: LoadReport,
    pub matrices: Vec<MatrixStats>,
    pub total: TotalStats,
    pub info: Option<CompressionInfo>,
}

/// The one validator of the compressed format (used by eval, info, export
/// and loading): every matrix has all the parts of one stored form with
/// consistent shapes and a well-formed CSR part, and a compressed directory
/// (any matrix not dense, or `lpaf_compressed` in config.json) has a
/// `compression.json` that parses and equals the recount from the tensors.
/// A plain dense directory needs no `compression.json`; one that has it is
/// checked too.
pub fn validate_dir(dir: &Path) -> Result<ValidatedDir> {
    let (config, tensors, report) = read_model_dir(dir)?;
    let (matrices, total) = stats_from_tensors(&config, &tensors)
        .with_context(|| format!("{}", report.weights.display()))?;
    let compressed = matrices.iter().any(|m| m.form != "dense")
        || config.extra.get("lpaf_compressed") == Some(&serde_json::json!(true));
    let root = crate::model::weights::model_root(dir)?;
    let path = root.join(COMPRESSION_FILE);
    let info = if compressed || path.exists() {
        let info = read_compression_info(&root)?;
        check_info(&path, &info, &matrices, &total)?;
        Some(info)
    } else {
        None
    };
    Ok(ValidatedDir {
        config,
        tensors,
        report,
        matrices,
        total,
        info,
    })
}

/// `compression.json` must describe exactly what the tensors hold.
fn check_info(
    path: &Path,
    info: &CompressionInfo,
    matrices: &[MatrixStats],
    total: &TotalStats,
) -> Result<()> {
    let p = path.display();
    ensure!(
        info.matrices.len() == matrices.len(),
        "{p}: lists {} matrices, the model has {}",
        info.matrices.len(),
        matrices.len()
    );
    for (a, b) in info.matrices.iter().zip(matrices) {
        let same = a.name == b.name
            && a.shape == b.shape
            && a.form == b.form
            && a.rank == b.rank
            && a.nnz == b.nnz
            && a.stored_params == b.stored_params
            && a.index_bytes == b.index_bytes
            && (a.kept_ratio - b.kept_ratio).abs() <= 1e-9;
        ensure!(
            same,
            "{p}: says '{}' is {} {}×{} (rank {}, nnz {}, kept {:.4}) but the tensors hold {} {}×{} (rank {}, nnz {}, kept {:.4})",
            a.name, a.form, a.shape[0], a.shape[1], a.rank, a.nnz, a.kept_ratio,
            b.form, b.shape[0], b.shape[1], b.rank, b.nnz, b.kept_ratio
        );
    }
    let t = &info.total;
    ensure!(
        t.dense_params == total.dense_params
            && t.stored_params == total.stored_params
            && t.index_bytes == total.index_bytes
            && (t.kept_ratio - total.kept_ratio).abs() <= 1e-9,
        "{p}: total (kept {:.6}, {} stored, {} index bytes) disagrees with the recount (kept {:.6}, {} stored, {} index bytes)",
        t.kept_ratio, t.stored_params, t.index_bytes,
        total.kept_ratio, total.stored_params, total.index_bytes
    );
    Ok(())
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
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{}: missing (a compressed model directory needs it; it records what the tensors hold)",
            p.display()
        ),
        Err(e) => return Err(Error::io(&p, e)),
    };
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

/// Loads a compressed (or plain) model directory, validated first
/// ([`validate_dir`]).
pub fn load_compressed(be: &dyn Backend, dir: &Path, seed: u64) -> Result<(Bert, LoadReport)> {
    let v = validate_dir(dir)?;
    let (config, mut tensors, mut report) = (v.config, v.tensors, v.report);
    let task = crate::model::weights::task_from_tensors(&tensors, &config).ok_or_else(|| {
        Error::msg(format!(
            "{}: the checkpoint has no task head; say which task to build (a dataset / --task)",
            dir.display()
        ))
    })?;
    let bert = Bert::from_tensors(
        be,
        config,
        task,
        &mut tensors,
        &CompressedFactory,
        seed,
        &mut report.created,
    )
    .with_context(|| format!("loading {}", report.weights.display()))?;
    report.ignored.extend(tensors.into_keys());
    Ok((bert, report))
}

/// The dense matrix `U·V + S` (host), from a matrix's stored tensors
/// (checked first, so a malformed part is an error, never a panic).
pub fn dense_matrix(
    tensors: &BTreeMap<String, HostTensor>,
    prefix: &str,
    out: usize,
    inp: usize,
) -> Result<Vec<f32>> {
    let p = check_matrix(tensors, prefix, out, inp)?;
    if p.form == "dense" {
        return Ok(tensors[&format!("{prefix}.weight")]
            .as_f32(prefix)?
            .to_vec());
    }
    let mut w = vec![0.0f32; out * inp];
    if p.form.starts_with("lowrank") {
        let r = p.rank;
        let u = tensors[&format!("{prefix}.lowrank_u")].as_f32(prefix)?;
        let v = tensors[&format!("{prefix}.lowrank_v")].as_f32(prefix)?;
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
    if p.form.ends_with("sparse") {
        let s = from_csr(
            prefix,
            tensors[&format!("{prefix}.sparse_values")].as_f32(prefix)?,
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
    let v = validate_dir(src)?;
    let (config, mut tensors) = (v.config, v.tensors);
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
    let v = validate_dir(dir)?;
    Ok((v.matrices, v.total))
}

/// For `read_safetensors` users that need the raw names.
pub fn read_tensors(dir: &Path) -> Result<BTreeMap<String, HostTensor>> {
    read_safetensors(&dir.join("model.safetensors"))
}
