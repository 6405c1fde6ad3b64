//! The library's error type. Every fallible public function returns [`Result`].

use thiserror::Error;

/// Errors raised by ebm-core. Messages name the offending value so a user can fix the input.
#[derive(Debug, Error)]
pub enum EbmError {
    /// A tensor had the wrong shape; `expected` and `got` are human-readable shapes.
    #[error("shape mismatch in {what}: expected {expected}, got {got:?}")]
    Shape {
        /// What was being checked (e.g. "Langevin input x").
        what: String,
        /// The expected shape, e.g. "[B, 2]".
        expected: String,
        /// The actual shape.
        got: Vec<i64>,
    },
    /// A tensor contained NaN or ±Inf.
    #[error("non-finite values (NaN or Inf) in {0}")]
    NonFinite(String),
    /// A configuration or argument value is out of its valid range.
    #[error("invalid value for {name}: {msg}")]
    InvalidArg {
        /// The parameter's name, e.g. "step_size".
        name: String,
        /// What is wrong, e.g. "must be > 0, got -0.1".
        msg: String,
    },
    /// Training diverged (non-finite loss or energies).
    #[error("training diverged at step {step}: {msg}")]
    Diverged {
        /// The optimisation step at which it happened.
        step: usize,
        /// What was non-finite.
        msg: String,
    },
    /// A data file could not be parsed.
    #[error("bad data in {path}: {msg}")]
    Data {
        /// The file.
        path: String,
        /// What is wrong (with the line number where possible).
        msg: String,
    },
    /// An I/O error, with the path involved.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An error from libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A metrics sink failed (its own error, wrapped).
    #[error("metrics sink: {0}")]
    Sink(#[from] SinkError),
}

/// Result alias for ebm-core.
pub type Result<T> = std::result::Result<T, EbmError>;

/// Shorthand to build an [`EbmError::InvalidArg`].
pub fn invalid(name: &str, msg: impl Into<String>) -> EbmError {
    EbmError::InvalidArg { name: name.to_string(), msg: msg.into() }
}

/// Helper for I/O errors carrying the path.
pub(crate) fn io_err(path: impl AsRef<std::path::Path>, source: std::io::Error) -> EbmError {
    EbmError::Io { path: path.as_ref().display().to_string(), source }
}

/// An error of a metrics sink, wrapped as it came (its message and its sources are the sink's own).
#[derive(Debug)]
pub struct SinkError(pub Box<dyn std::error::Error + Send + Sync>);

impl SinkError {
    /// Wraps any error.
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        SinkError(e.into())
    }
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}
