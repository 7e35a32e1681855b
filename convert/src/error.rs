//! The convert crate's errors: every one names the file, and the tensor where there is one.

use std::path::{Path, PathBuf};

/// What went wrong reading or writing a checkpoint or GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error on a file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file's structure is wrong (truncated, out of range, over a cap, not UTF-8 …).
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },
    /// One tensor is wrong (shape, dtype, bytes, values).
    #[error("{}: tensor `{tensor}`: {msg}", path.display())]
    Tensor {
        path: PathBuf,
        tensor: String,
        msg: String,
    },
    /// The model or an option asks for something kiln does not do.
    #[error("{}: {msg}", path.display())]
    Unsupported { path: PathBuf, msg: String },
    /// Quantizing or converting a tensor failed.
    #[error("{}: tensor `{tensor}`: {source}", path.display())]
    Quant {
        path: PathBuf,
        tensor: String,
        #[source]
        source: quantize::QuantError,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn format(path: &Path, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
    pub(crate) fn tensor(path: &Path, tensor: &str, msg: impl Into<String>) -> Self {
        Error::Tensor {
            path: path.to_path_buf(),
            tensor: tensor.to_string(),
            msg: msg.into(),
        }
    }
    pub(crate) fn unsupported(path: &Path, msg: impl Into<String>) -> Self {
        Error::Unsupported {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}
