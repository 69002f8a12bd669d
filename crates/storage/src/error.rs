//! The storage error: one enum, every variant saying what failed and where.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// A storage operation failed.
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The operating system refused a file operation.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("writing", "fsyncing", …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: Arc<io::Error>,
    },
    /// Stored bytes do not hold together: a checksum mismatch or malformed record anywhere but
    /// the torn tail of the newest segment. Never repaired silently.
    #[error("{path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An earlier write or fsync failed, so nothing more is acknowledged until the store is
    /// reopened (a failed fsync may have dropped dirty pages; retrying it could report success
    /// for data that is gone).
    #[error(
        "storage is poisoned by an earlier failure and acknowledges no writes until it is reopened: {cause}"
    )]
    Poisoned {
        /// The failure that poisoned it.
        cause: Arc<Error>,
    },
    /// A write or fsync in this data directory failed earlier in this process, so the page
    /// cache may hold bytes the disk does not: only a new process may recover it.
    #[error(
        "a write or fsync under {0} failed earlier in this process, so the page cache may hold data that never reached the disk; restart the process to recover from what the disk holds"
    )]
    SyncFailed(PathBuf),
    /// The index (fjall) failed.
    #[error("index failure: {0}")]
    Index(Arc<fjall::Error>),
    /// Another process holds the data directory.
    #[error(
        "the data directory {0} is locked by another process; stop it or choose another --data-dir"
    )]
    Locked(PathBuf),
    /// The store is shutting down.
    #[error("storage is shutting down")]
    Closed,
    /// An entry cannot follow the context's latest entry (a verified append out of order).
    #[error("cannot append: {0}")]
    Order(#[from] converge_core::head::ApplyError),
    /// The context is not where the caller expected it (it grew meanwhile).
    #[error("context {context} has latest sequence {actual}, expected {expected}")]
    Moved {
        /// The context.
        context: String,
        /// The latest sequence the caller expected.
        expected: u64,
        /// Its latest sequence.
        actual: u64,
    },
    /// The ledger cannot assign the next sequence, time or Lamport time.
    #[error(transparent)]
    Stamp(#[from] converge_core::head::StampError),
    /// A proof or read asked for something the context does not have.
    #[error("{0}")]
    OutOfRange(String),
    /// A configuration value is unusable.
    #[error("invalid storage configuration: {0}")]
    Config(String),
}

impl Error {
    /// An I/O error on `path` while doing `action`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io { action, path: path.into(), source: Arc::new(source) }
    }

    /// Corruption in `path` at `offset`.
    pub fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Self::Corrupt { path: path.into(), offset, reason: reason.into() }
    }
}

impl From<fjall::Error> for Error {
    fn from(err: fjall::Error) -> Self {
        match err {
            fjall::Error::Poisoned => Self::Poisoned { cause: Arc::new(Self::Closed) },
            other => Self::Index(Arc::new(other)),
        }
    }
}

/// Shorthand for storage results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
