//! File-system helpers: positional I/O, atomic replacement, directory sync
//! and the directory lock.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use raftkit::{StorageError, StorageResult};

/// Reads exactly `buf.len()` bytes at `offset`.
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let (mut done, mut buf) = (0u64, buf);
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_read(file, buf, offset + done) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    done += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The size of the zero writes of [`write_zeros`].
const ZERO_CHUNK: u64 = 1 << 20;

/// Overwrites bytes `from..to` of `file` with zeros, in writes that end on
/// multiples of 1 MiB (so whole blocks get written). Checks `stop` before
/// each write and gives up, returning `false`, once it says so.
pub(crate) fn write_zeros(
    file: &File,
    from: u64,
    to: u64,
    stop: impl Fn() -> bool,
) -> io::Result<bool> {
    let zeros = vec![0u8; ZERO_CHUNK.min(to.saturating_sub(from)) as usize];
    let mut at = from;
    while at < to {
        if stop() {
            return Ok(false);
        }
        let n = (ZERO_CHUNK - at % ZERO_CHUNK).min(to - at);
        write_all_at(file, &zeros[..n as usize], at)?;
        at += n;
    }
    Ok(true)
}

/// Writes all of `buf` at `offset`.
pub(crate) fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let (mut done, mut buf) = (0u64, buf);
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_write(file, buf, offset + done) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    done += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Makes the directory's entries (creations, renames, deletions) durable.
pub(crate) fn sync_dir(dir: &Path) -> StorageResult<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageError::io("syncing directory", dir.display(), e))
    }
    #[cfg(not(unix))]
    {
        // Windows cannot open a directory as a file; NTFS journals renames.
        let _ = dir;
        Ok(())
    }
}

/// The temporary name `path` is written under before it is renamed into place.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Replaces `path` with `bytes` atomically: write a temporary file, fsync it,
/// rename it over `path`, fsync the directory. After a crash the file holds
/// either its old content or the new one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> StorageResult<()> {
    let tmp = temp_path(path);
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().map_err(|e| StorageError::io("writing", tmp.display(), e))?;
    fs::rename(&tmp, path).map_err(|e| {
        StorageError::io(format!("renaming {} to", tmp.display()), path.display(), e)
    })?;
    sync_dir(parent(path))
}

/// The directory holding `path`.
pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Removes `path` if it exists.
pub(crate) fn remove_file_if_exists(path: &Path) -> StorageResult<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("removing", path.display(), e)),
    }
}

/// Creates `dir` (and its parents) if missing.
pub(crate) fn create_dir(dir: &Path) -> StorageResult<()> {
    fs::create_dir_all(dir).map_err(|e| StorageError::io("creating directory", dir.display(), e))
}

/// An exclusive lock on a directory, held until dropped.
///
/// The lock is an advisory `flock` on a lock file inside the directory, so a
/// second process (or a second store in this one) opening the same directory
/// fails with `StorageError::Locked` instead of corrupting it.
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
