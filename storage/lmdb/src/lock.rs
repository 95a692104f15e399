//! The directory lock.

use std::fs::{File, OpenOptions};
use std::path::Path;

use raftkit::{StorageError, StorageResult};

/// An exclusive lock on a store directory, held until dropped.
///
/// LMDB itself allows several processes to share an environment; a Raft
/// node's log must have one owner, so the store takes an advisory lock on a
/// file of its own first, and a second open (in another process or in this
/// one) fails with `StorageError::Locked` instead of sharing the log.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock file `name` in `dir`, or fails without waiting.
    pub(crate) fn acquire(dir: &Path, name: &str) -> StorageResult<DirLock> {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StorageError::io("opening lock file", path.display(), e))?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(fs4::TryLockError::WouldBlock) => Err(StorageError::Locked(format!(
                "{} is in use: another process (or another store in this one) holds its lock file {}",
                dir.display(),
                path.display()
            ))),
            Err(fs4::TryLockError::Error(e)) => {
                Err(StorageError::io("locking", path.display(), e))
            }
        }
    }
}
