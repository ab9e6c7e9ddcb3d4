//! Errors of the log layer.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use super::batch::BatchError;

/// Kafka error codes a broker maps [`LogError`] to.
mod codes {
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
}

#[derive(Debug, Error)]
pub enum LogError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("offset {requested} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        requested: i64,
        start: i64,
        end: i64,
    },
    #[error("corrupt log data in {path} at position {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("append must start at the log end offset {expected}, got {got}")]
    NonContiguousAppend { expected: i64, got: i64 },
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    #[error("log in {0} is closed")]
    Closed(PathBuf),
    #[error("log cleaner failed on {path}: {reason}")]
    Cleaner { path: PathBuf, reason: String },
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> LogError {
        LogError::Io {
            path: path.into(),
            source,
        }
    }

    /// The Kafka protocol error code for a response.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            LogError::Io { .. } | LogError::Corrupt { .. } => codes::KAFKA_STORAGE_ERROR,
            LogError::OffsetOutOfRange { .. } => codes::OFFSET_OUT_OF_RANGE,
            LogError::InvalidBatch(e) => e.kafka_error_code(),
            LogError::NonContiguousAppend { .. } => codes::CORRUPT_MESSAGE,
            LogError::InvalidAppend(_) | LogError::Closed(_) | LogError::Cleaner { .. } => {
                codes::UNKNOWN_SERVER_ERROR
            }
        }
    }
}

/// Attaches a path to `io::Result`s.
pub(crate) trait IoContext<T> {
    fn ctx(self, path: &std::path::Path) -> Result<T, LogError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, path: &std::path::Path) -> Result<T, LogError> {
        self.map_err(|e| LogError::io(path, e))
    }
}
