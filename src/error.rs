//! One error type for the whole crate. Every error names what it is about
//! (file, tensor, line, flag or CUDA operation); the CLI prints it and exits
//! non-zero. Nothing in the library panics on bad input.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Tensor shapes or dtypes do not fit the operation.
    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: String, detail: String },
    /// A CUDA driver / cuBLAS call failed, or CUDA is not usable here.
    #[error("CUDA error in {op}: {detail}")]
    Cuda { op: String, detail: String },
    /// A malformed data row or file entry.
    #[error("{file}:{line}: {msg}")]
    Data {
        file: String,
        line: usize,
        msg: String,
    },
    /// Any other invalid input or state, with its own message.
    #[error("{0}")]
    Msg(String),
    /// An error with the operation it happened in prepended.
    #[error("{context}: {source}")]
    Context { context: String, source: Box<Error> },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn msg(m: impl Into<String>) -> Self {
        Error::Msg(m.into())
    }
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
    pub fn shape(op: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Shape {
            op: op.into(),
            detail: detail.into(),
        }
    }
    pub fn cuda(op: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Error::Cuda {
            op: op.into(),
            detail: detail.to_string(),
        }
    }
    pub fn data(file: impl AsRef<Path>, line: usize, msg: impl Into<String>) -> Self {
        Error::Data {
            file: file.as_ref().display().to_string(),
            line,
            msg: msg.into(),
        }
    }
}

/// `.context("loading model")` on any `Result<_, Error>` (or io/json errors
/// converted first) prepends what was being done.
pub trait ResultExt<T> {
    fn context(self, ctx: impl std::fmt::Display) -> Result<T>;
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn context(self, ctx: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: ctx.to_string(),
            source: Box::new(e.into()),
        })
    }
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: f(),
            source: Box::new(e.into()),
        })
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Msg(format!("JSON: {e}"))
    }
}

impl From<safetensors::SafeTensorError> for Error {
    fn from(e: safetensors::SafeTensorError) -> Self {
        Error::Msg(format!("safetensors: {e}"))
    }
}

/// Return early with an [`Error::Msg`] built like `format!`.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::error::Error::Msg(format!($($arg)*))) };
}

/// Return early with an [`Error::Msg`] unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => { if !($cond) { $crate::bail!($($arg)*); } };
}
