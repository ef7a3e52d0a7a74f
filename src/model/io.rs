//! Files: atomic writes and safetensors reading / writing with dtype conversion.
//!
//! Every write goes to a temporary file in the destination's directory and is
//! renamed into place, so an interrupted run never leaves a truncated model or
//! checkpoint behind.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::error::{Error, Result};

/// Expands a leading `~/` with `$HOME`.
pub fn expand_home(p: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~") {
        if let Some(h) = std::env::var_os("HOME") {
            return PathBuf::from(h).join(rest);
        }
    }
    p.to_path_buf()
}

/// The file a write to `path` should replace: `path` itself, or the file a
/// symbolic link at `path` points to. Anything that is not a regular file (a
/// device such as /dev/full, a directory, a pipe) is refused: renaming over it
/// would destroy it.
pub fn regular_target(path: &Path) -> Result<PathBuf> {
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    };
    match std::fs::metadata(&target) {
        Ok(m) if !m.is_file() => Err(Error::msg(format!(
            "{}: not a regular file (a {}); refusing to replace it — write to a file path",
            path.display(),
            if m.is_dir() {
                "directory"
            } else {
                "device, pipe or socket"
            }
        ))),
        _ => Ok(target),
    }
}

/// Flushes a directory's entries (a rename or a new file in it) to disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let d = std::fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
        d.sync_all().map_err(|e| Error::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes `bytes` to `path` atomically (temp file in the same directory,
/// fsync, rename, fsync of the directory). Refuses targets that are not
/// regular files; writes through a symbolic link to the file it names.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let path = &regular_target(path)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    // Temporary files are created owner-only; a model or log is an ordinary file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(path, e))?;
    }
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    sync_dir(dir)
}

/// Host tensor data as stored in files.
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
}

/// A named tensor read from or written to a file.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: HostData,
}

impl HostTensor {
    pub fn f32(shape: &[usize], data: Vec<f32>) -> HostTensor {
        HostTensor {
            shape: shape.to_vec(),
            data: HostData::F32(data),
        }
    }
    pub fn u8(shape: &[usize], data: Vec<u8>) -> HostTensor {
        HostTensor {
            shape: shape.to_vec(),
            data: HostData::U8(data),
        }
    }
    pub fn i32(shape: &[usize], data: Vec<i32>) -> HostTensor {
        HostTensor {
            shape: shape.to_vec(),
            data: HostData::I32(data),
        }
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// The values as f32 (error for integer tensors), naming the tensor.
    pub fn as_f32(&self, name: &str) -> Result<&[f32]> {
        match &self.data {
            HostData::F32(v) => Ok(v),
            _ => Err(Error::msg(format!("tensor '{name}' is not floating point"))),
        }
    }
    /// Integer values widened to i64 (error for floats), naming the tensor.
    pub fn as_i64(&self, name: &str) -> Result<Vec<i64>> {
        match &self.data {
            HostData::I64(v) => Ok(v.clone()),
            HostData::I32(v) => Ok(v.iter().map(|&x| x as i64).collect()),
            HostData::U8(v) => Ok(v.iter().map(|&x| x as i64).collect()),
            HostData::F32(_) => Err(Error::msg(format!(
                "tensor '{name}' is not an integer tensor"
            ))),
        }
    }
    pub fn as_u8(&self, name: &str) -> Result<&[u8]> {
        match &self.data {
            HostData::U8(v) => Ok(v),
            _ => Err(Error::msg(format!("tensor '{name}' is not a u8 tensor"))),
        }
    }
}

/// How floats are stored when writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatFormat {
    F32,
    F16,
    Bf16,
}

/// Reads every tensor of a safetensors file; floats (F64/F32/F16/BF16) become
/// f32, integers keep their width class. Corrupt or truncated files give an
/// error naming the file.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the file is only read; a concurrent truncation by another
    // process is outside what this tool supports.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&mmap).map_err(|e| {
        Error::msg(format!(
            "{}: not a valid safetensors file ({e})",
            path.display()
        ))
    })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let t = convert(&view)
            .map_err(|m| Error::msg(format!("{}: tensor '{name}': {m}", path.display())))?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Checks that a safetensors file is whole (header parses, tensor data
/// covers the file exactly) without reading the tensor data.
pub fn safetensors_intact(path: &Path) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: read only, as in read_safetensors.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    SafeTensors::deserialize(&mmap).map_err(|e| {
        Error::msg(format!(
            "{}: not a valid safetensors file ({e})",
            path.display()
        ))
    })?;
    Ok(())
}

/// How the floating-point tensors of a safetensors file are stored (the
/// first one's dtype), read from the header only.
pub fn stored_float_format(path: &Path) -> Result<Option<FloatFormat>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: read-only mapping of a file this process does not modify.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let (_, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| {
        Error::msg(format!(
            "{}: not a valid safetensors file ({e})",
            path.display()
        ))
    })?;
    let mut infos: Vec<_> = meta.tensors().into_iter().collect();
    infos.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(infos.iter().find_map(|(_, i)| match i.dtype {
        Dtype::F32 | Dtype::F64 => Some(FloatFormat::F32),
        Dtype::F16 => Some(FloatFormat::F16),
        Dtype::BF16 => Some(FloatFormat::Bf16),
        _ => None,
    }))
}

/// Reads only the `__metadata__` map of a safetensors file.
pub fn read_safetensors_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| {
        Error::msg(format!(
            "{}: not a valid safetensors file ({e})",
            path.display()
        ))
    })?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

fn convert(view: &TensorView<'_>) -> std::result::Result<HostTensor, String> {
    let shape = view.shape().to_vec();
    let bytes = view.data();
    let n: usize = shape.iter().product();
    let need = n * view.dtype().bitsize() / 8;
    if bytes.len() != need {
        return Err(format!(
            "{} bytes for shape {shape:?} of {:?}",
            bytes.len(),
            view.dtype()
        ));
    }
    let chunks = |w: usize| bytes.chunks_exact(w);
    let data = match view.dtype() {
        Dtype::F32 => HostData::F32(
            chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        Dtype::F64 => HostData::F32(
            chunks(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
        ),
        Dtype::F16 => HostData::F32(
            chunks(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        Dtype::BF16 => HostData::F32(
            chunks(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        Dtype::I64 => HostData::I64(
            chunks(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        Dtype::I32 => HostData::I32(
            chunks(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        Dtype::U8 | Dtype::BOOL => HostData::U8(bytes.to_vec()),
        other => return Err(format!("unsupported dtype {other:?}")),
    };
    Ok(HostTensor { shape, data })
}

/// Writes tensors to a safetensors file atomically; floats in `format`.
pub fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, HostTensor>,
    format: FloatFormat,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let mut encoded: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        if t.numel() != data_len(&t.data) {
            return Err(Error::msg(format!(
                "tensor '{name}': shape {:?} does not match its data",
                t.shape
            )));
        }
        let (dtype, bytes) = match (&t.data, format) {
            (HostData::F32(v), FloatFormat::F32) => {
                (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
            }
            (HostData::F32(v), FloatFormat::F16) => (
                Dtype::F16,
                v.iter()
                    .flat_map(|x| f16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
            (HostData::F32(v), FloatFormat::Bf16) => (
                Dtype::BF16,
                v.iter()
                    .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
            (HostData::I64(v), _) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            (HostData::I32(v), _) => (Dtype::I32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            (HostData::U8(v), _) => (Dtype::U8, v.clone()),
        };
        encoded.push((name.clone(), dtype, t.shape.clone(), bytes));
    }
    let views: Vec<(String, TensorView<'_>)> = encoded
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::msg(format!("tensor '{n}': {e}")))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, metadata)
        .map_err(|e| Error::msg(format!("{}: serialising safetensors: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

fn data_len(d: &HostData) -> usize {
    match d {
        HostData::F32(v) => v.len(),
        HostData::I64(v) => v.len(),
        HostData::I32(v) => v.len(),
        HostData::U8(v) => v.len(),
    }
}
