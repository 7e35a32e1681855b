//! The pipeline's error: what went wrong, and the file, target or option it concerns. The
//! library crates' errors pass through unchanged (they name their file and tensor already).

use std::path::PathBuf;

/// Everything a pipeline call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading, parsing or writing a model, GGUF or tokenizer.
    #[error(transparent)]
    Convert(#[from] convert::Error),
    /// A quantizer refused its input.
    #[error(transparent)]
    Quantize(#[from] quantize::QuantError),
    /// A type mix or a `--tensor-type` override that cannot be made.
    #[error(transparent)]
    Mix(#[from] quantize::mix::MixError),
    /// A tensor type name kiln does not know.
    #[error(transparent)]
    UnknownType(#[from] quantize::types::UnknownType),
    /// A calibration Hessian GPTQ cannot factor.
    #[error(transparent)]
    Gptq(#[from] quantize::gptq::GptqError),
    /// An importance matrix could not be read, computed, merged or written.
    #[error(transparent)]
    Imatrix(#[from] calibrate::imatrix::ImatrixError),
    /// The sensitivity measurement or allocation failed.
    #[error(transparent)]
    Sensitivity(#[from] calibrate::sensitivity::SensitivityError),
    /// Loading a model for kiln's kernel failed.
    #[error(transparent)]
    Load(#[from] verify::load::LoadError),
    /// Evaluating or comparing models failed.
    #[error(transparent)]
    Eval(#[from] verify::eval::EvalError),
    /// kiln's forward pass refused its input.
    #[error(transparent)]
    Forward(#[from] kernels::ForwardError),
    /// A weight could not be changed in a loaded model (AWQ's folds).
    #[error(transparent)]
    Weight(#[from] kernels::model::WeightError),
    /// `kiln.attention.*` keys of a file that do not describe a mask.
    #[error("{}: {source}", path.display())]
    MaskFormat {
        path: PathBuf,
        source: calibrate::masks::MaskFormatError,
    },
    /// A file or directory could not be read or written.
    #[error("{}: {what}", path.display())]
    Io {
        path: PathBuf,
        /// What was being done ("cannot read", "cannot write", …).
        what: &'static str,
        source: std::io::Error,
    },
    /// A text the tokenizer refused.
    #[error("{}: tokenizing failed: {msg}", path.display())]
    Tokenize { path: PathBuf, msg: String },
    /// A JSON file that is not the kiln JSON it should be.
    #[error("{}: not kiln's JSON", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A build file (or a file named in it) that kiln cannot build from.
    #[error("{}: {msg}", path.display())]
    BuildFile { path: PathBuf, msg: String },
    /// A `kiln build --target` job's directory that `build merge` refuses (missing, duplicated
    /// or foreign work).
    #[error("{msg}")]
    Merge { msg: String },
    /// Options that do not go together, or a value out of range.
    #[error("{0}")]
    Options(String),
    /// An error with what the pipeline was doing when it happened ("target q4: …").
    #[error("{context}")]
    Context { context: String, source: Box<Error> },
}

/// The pipeline's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A refused combination of options (the message says which).
    pub fn options(msg: impl Into<String>) -> Self {
        Error::Options(msg.into())
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, what: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            what,
            source,
        }
    }
}

/// Adds what the pipeline was doing to an error, as `anyhow`'s `with_context` does.
pub trait Context<T> {
    fn context_with(self, f: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context_with(self, f: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: f(),
            source: Box::new(e.into()),
        })
    }
}

impl From<regex::Error> for Error {
    fn from(e: regex::Error) -> Self {
        Error::Options(e.to_string())
    }
}

/// Shorthand: return an [`Error::Options`] with a formatted message.
macro_rules! bail {
    ($($t:tt)*) => {
        return Err($crate::Error::Options(format!($($t)*)))
    };
}
pub(crate) use bail;
