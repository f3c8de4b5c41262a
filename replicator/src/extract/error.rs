//! Errors of the extractor: where a failure came from (the source database,
//! the binlog bytes, the THL) and whether retrying can help.
//!
//! The daemon turns any [`ExtractError`] into `OFFLINE:ERROR` with the
//! message as `pendingError`; [`ExtractError::is_transient`] tells it when a
//! reconnect is worth trying instead.

use crate::thl::ThlError;

/// Result of extractor operations.
pub type Result<T, E = ExtractError> = std::result::Result<T, E>;

/// An extractor failure.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The source database refused or dropped the connection.
    #[error("source database {addr}: {source}")]
    Source {
        /// `host:port` of the source.
        addr: String,
        /// The driver error.
        source: mysql_async::Error,
    },
    /// The binlog needed to resume is no longer on the server.
    #[error(
        "binlog position {position} is no longer available on the source ({detail}); \
         the THL cannot be continued without a gap: re-provision this service \
         (reset the THL) or restore the missing binlog files"
    )]
    BinlogPurged {
        /// The position we asked for (`file:offset` or GTID).
        position: String,
        /// The server's message.
        detail: String,
    },
    /// Bytes in the binlog that cannot be decoded.
    #[error("cannot decode binlog event at {position}: {what}")]
    Decode {
        /// `file:offset` of the event.
        position: String,
        /// What is wrong.
        what: String,
    },
    /// A binlog file that ends inside an event.
    #[error("binlog file {file} is truncated at offset {offset}: {what}")]
    Truncated {
        /// The file.
        file: String,
        /// Offset of the incomplete event.
        offset: u64,
        /// What is missing.
        what: String,
    },
    /// A read of a local binlog file failed.
    #[error("read {file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The THL refused the write.
    #[error("THL: {0}")]
    Thl(#[from] ThlError),
    /// The source is set up in a way the extractor cannot work with.
    #[error("source configuration: {0}")]
    Config(String),
}

impl ExtractError {
    /// True when reconnecting to the source may fix it (network, restart of
    /// the database); false for purged binlogs, undecodable data and THL
    /// failures, which need an operator.
    pub fn is_transient(&self) -> bool {
        match self {
            ExtractError::Source { source, .. } => !matches!(
                source,
                mysql_async::Error::Server(e) if e.code == 1236
            ),
            _ => false,
        }
    }
}
