//! The lock file that keeps two processes from writing one THL directory.
//!
//! The writer and `thl purge` take an exclusive `flock` on `thl.lock`
//! through `File::try_lock`; the OS drops it when the process dies, so a
//! crashed replicator never leaves a stale lock. The holder's pid is written
//! into the file for operators.

use crate::thl::error::{Result, ThlError};
use crate::thl::segment::LOCK_FILE;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A held lock on a THL directory; released on drop.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock of `dir` (creating the directory and lock file) or
    /// fails with [`ThlError::Locked`].
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        std::fs::create_dir_all(dir).map_err(|e| ThlError::io("create", dir, e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| ThlError::io("open", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(ThlError::Locked { lock_file: path }),
            Err(TryLockError::Error(e)) => return Err(ThlError::io("lock", &path, e)),
        }
        // Best effort: the pid is for operators only.
        let _ = file
            .set_len(0)
            .and_then(|_| writeln!(file, "{}", std::process::id()));
        Ok(DirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// True when another holder has the lock of `dir` right now.
pub fn is_locked(dir: &Path) -> Result<bool> {
    if !dir.join(LOCK_FILE).exists() {
        return Ok(false);
    }
    match DirLock::acquire(dir) {
        Ok(_) => Ok(false),
        Err(ThlError::Locked { .. }) => Ok(true),
        Err(e) => Err(e),
    }
}
