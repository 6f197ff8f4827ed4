//! The storage error type.

use std::io;
use std::path::PathBuf;

use cairn_types::{BatchError, ErrorCode};

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// Stored bytes failed their checksum or structure check. Never served.
    #[error("corrupt data in {path} at byte {position}: {source}")]
    Corruption {
        path: PathBuf,
        position: u64,
        #[source]
        source: BatchError,
    },
    /// Log entries the log should hold are not there: the next segment does
    /// not continue the previous one (a segment file was deleted or cut
    /// short behind the log's back). Never skipped silently: the caller
    /// repairs the range from another replica.
    #[error("log entries [{from_index}, {to_index}) are missing before {path}")]
    Missing {
        path: PathBuf,
        from_index: u64,
        to_index: u64,
    },
    /// A segment file is shorter than the bytes the log published for it
    /// (cut behind the log's back).
    #[error("segment {path} ends before byte {position} the log holds: {source}")]
    ShortRead {
        path: PathBuf,
        position: u64,
        #[source]
        source: io::Error,
    },
    #[error("offset {requested} is out of range: the log holds [{start}, {end})")]
    OffsetOutOfRange {
        requested: u64,
        start: u64,
        end: u64,
    },
    #[error("log index {requested} is out of range: the log holds [{start}, {end})")]
    IndexOutOfRange {
        requested: u64,
        start: u64,
        end: u64,
    },
    /// An append named a log index that does not follow the log's last one.
    #[error("log {path}: append at index {got} out of sequence, expected {expected}")]
    IndexOutOfSequence {
        path: PathBuf,
        expected: u64,
        got: u64,
    },
    /// A request the log's current state cannot honour (e.g. truncating
    /// entries that were already purged).
    #[error("log {path}: {reason}")]
    InvalidRequest { path: PathBuf, reason: String },
    /// Files of an older, unsupported on-disk format.
    #[error("{path} was written in an unsupported older format: {reason}")]
    UnsupportedFormat { path: PathBuf, reason: String },
    #[error("invalid batch: {0}")]
    InvalidBatch(#[source] BatchError),
    #[error(
        "log {path} refuses appends after a failed write or sync (reopen it to recover): {reason}"
    )]
    Poisoned { path: PathBuf, reason: String },
    #[error("data directory {0} is locked by another process")]
    Locked(PathBuf),
    #[error("log {0} is closed")]
    Closed(PathBuf),
    #[error("the storage writer has stopped")]
    WriterStopped,
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

impl StorageError {
    pub fn code(&self) -> ErrorCode {
        match self {
            StorageError::Corruption { .. }
            | StorageError::Missing { .. }
            | StorageError::ShortRead { .. } => ErrorCode::Corruption,
            StorageError::OffsetOutOfRange { .. } | StorageError::IndexOutOfRange { .. } => {
                ErrorCode::OffsetOutOfRange
            }
            StorageError::InvalidBatch(_) => ErrorCode::InvalidEntry,
            StorageError::InvalidConfig(_) => ErrorCode::InvalidStreamConfig,
            StorageError::WriterStopped | StorageError::Closed(_) => ErrorCode::Unavailable,
            StorageError::Io { .. }
            | StorageError::Poisoned { .. }
            | StorageError::Locked(_)
            | StorageError::IndexOutOfSequence { .. }
            | StorageError::InvalidRequest { .. }
            | StorageError::UnsupportedFormat { .. } => ErrorCode::Storage,
        }
    }

    /// True when stored data is corrupt, missing or cut short: the answer
    /// cannot come from this replica until the range is repaired, but
    /// another replica may serve it.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            StorageError::Corruption { .. }
                | StorageError::Missing { .. }
                | StorageError::ShortRead { .. }
        )
    }
}

/// Attaches what we were doing (and to which path) to an I/O error.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| StorageError::Io {
            context: what(),
            source,
        })
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|errno| StorageError::Io {
            context: what(),
            source: errno.into(),
        })
    }
}
