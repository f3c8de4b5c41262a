//! Errors of the THL store: what went wrong, with the file and offset when
//! the disk is involved. Every fallible THL function returns [`ThlError`].

use std::path::PathBuf;

/// Result of THL operations.
pub type Result<T, E = ThlError> = std::result::Result<T, E>;

/// An error of the THL store.
#[derive(Debug, thiserror::Error)]
pub enum ThlError {
    /// An operating-system error on a file or directory.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What we were doing (`open`, `read`, `fsync`…).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Damaged data that recovery may not cut (not at the tail of the log).
    #[error("corrupt THL in {} at offset {offset}: {what}", file.display())]
    Corruption {
        /// The segment file.
        file: PathBuf,
        /// Byte offset of the damaged record or header.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// A file or record written by a newer carbide.
    #[error(
        "{} at offset {offset} has {kind} version {found}; this carbide reads version {supported} \
         (upgrade carbide to read it)",
        file.display()
    )]
    UnsupportedVersion {
        /// The segment file.
        file: PathBuf,
        /// Byte offset of the header or record.
        offset: u64,
        /// `segment format` or `record`.
        kind: &'static str,
        /// Version found on disk.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// Another process (a running replicator, or `thl purge`) holds the log.
    #[error(
        "THL directory is locked by another process (lock file {}); \
         stop the replicator of this service first",
        lock_file.display()
    )]
    Locked {
        /// The lock file.
        lock_file: PathBuf,
    },
    /// An append that breaks the seqno/fragment order.
    #[error("out of order append: {0}")]
    OutOfOrder(String),
    /// A request that cannot be done as asked (bad range, event too large…).
    #[error("{0}")]
    Invalid(String),
    /// An event that cannot be encoded.
    #[error("cannot encode event seqno {seqno}: {what}")]
    Encode {
        /// The event's seqno.
        seqno: u64,
        /// Why.
        what: String,
    },
}

impl ThlError {
    /// An IO error on `path` while doing `op`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ThlError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Corruption at `file`/`offset`.
    pub fn corrupt(file: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Self {
        ThlError::Corruption {
            file: file.into(),
            offset,
            what: what.into(),
        }
    }
}
