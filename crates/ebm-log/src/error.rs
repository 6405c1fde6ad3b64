//! The crate's error type.

use std::path::{Path, PathBuf};

/// Everything that can go wrong while logging. Messages name the file or folder involved.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O operation on `path` failed; `op` says what was being done ("create folder", ...).
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "create folder" or "write".
        op: &'static str,
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Writing or reading the CSV file at `path` failed.
    #[error("CSV file {}: {msg}", path.display())]
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// Drawing or encoding the figure for `path` failed.
    #[error("figure {}: {msg}", path.display())]
    Plot {
        /// The figure being written.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// A record of a TensorBoard event file is damaged.
    #[error("corrupt record in {} at byte {offset}: {msg}", path.display())]
    Corrupt {
        /// The event file (or "<memory>" for an in-memory buffer).
        path: PathBuf,
        /// Byte offset of the record's start.
        offset: u64,
        /// What is wrong.
        msg: String,
    },
    /// A second TensorBoard writer was opened for a run folder that already has one.
    #[error("a TensorBoard writer is already open for {} (one writer per run folder)", .0.display())]
    WriterExists(PathBuf),
    /// A run folder with an explicitly requested name already exists.
    #[error("run folder {} already exists; pick another run name or remove it", .0.display())]
    RunExists(PathBuf),
    /// An argument is not acceptable (empty data, wrong tensor shape, bad name, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A libtorch operation failed while reading a tensor.
    #[error("tensor: {0}")]
    Tensor(#[from] tch::TchError),
    /// A metrics sink failed (the trait's error, as it came).
    #[error(transparent)]
    Sink(#[from] ebm_core::train::SinkError),
}

/// Result alias with [`LogError`].
pub type Result<T, E = LogError> = std::result::Result<T, E>;

impl LogError {
    /// Shorthand for [`LogError::Io`].
    pub(crate) fn io(op: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        LogError::Io { op, path: path.as_ref().to_path_buf(), source }
    }

    /// Shorthand for [`LogError::InvalidInput`].
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        LogError::InvalidInput(msg.into())
    }
}
