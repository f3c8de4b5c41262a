//! Errors of the config layer. Every error names what the operator must fix:
//! the file, the line when known, and the key.

use std::path::PathBuf;

/// Why a config (or user.map) could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema (unknown key,
    /// wrong type, missing required key).
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{}{}: key '{key}': {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the key, when it could be located.
        line: Option<usize>,
        /// Dotted key path, e.g. `member[1].mysql` (array index 0-based).
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// A user.map line is malformed.
    #[error("{path}:{line}: {message}")]
    UserMap {
        /// The user.map file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// The key an `Invalid` error names (None for other kinds).
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The 1-based line, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Parse { line, .. } | ConfigError::UserMap { line, .. } => Some(*line),
            ConfigError::Invalid { line, .. } => *line,
            ConfigError::Io { .. } => None,
        }
    }
}
