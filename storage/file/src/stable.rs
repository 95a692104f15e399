//! `FileStableStore`.
//!
//! ```text
//!  dir/stable.lock     held while a store has the directory open
//!  dir/stable.bin      magic "RKSTABLE" | version u32 | body length u32 | body CRC32C u32 | body
//!                      body: every key and value (postcard), rewritten whole on each set
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use raftkit::wire::{decode_value, encode_value};
use raftkit::{StableStore, StorageError, StorageResult};

use crate::fsutil::{self, DirLock};

const LOCK_FILE: &str = "stable.lock";
const DATA_FILE: &str = "stable.bin";
const MAGIC: [u8; 8] = *b"RKSTABLE";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 20;

/// Term, vote and small keyed values in one file, replaced atomically on
/// every `set` (temporary file, fsync, rename, fsync of the directory).
///
/// Meant for a handful of small values: all of them live in memory and each
/// `set` rewrites the file. Clones share one open store; the directory is
/// locked while open.
///
/// ```
/// use raftkit::{HardState, NodeId, StableStore, Term};
///
/// let dir = tempfile::tempdir().unwrap();
/// let stable = raftkit_file::FileStableStore::open(dir.path())?;
/// stable.save_hard_state(&HardState { term: Term(2), vote: Some(NodeId::new("n1")) })?;
/// drop(stable);
/// let stable = raftkit_file::FileStableStore::open(dir.path())?;
/// assert_eq!(stable.load_hard_state()?.term, Term(2));
/// # Ok::<(), raftkit::StorageError>(())
/// ```
#[derive(Clone, Debug)]
pub struct FileStableStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    values: Mutex<BTreeMap<String, Vec<u8>>>,
    _lock: DirLock,
}

impl FileStableStore {
    /// Opens (creating if needed) the store in `dir`.
    ///
    /// # Errors
    /// `Locked` if another store has `dir` open; `Corrupt` if the file fails
    /// its checks; `Io` otherwise.
    pub fn open(dir: impl AsRef<Path>) -> StorageResult<FileStableStore> {
        let dir = dir.as_ref();
        fsutil::create_dir(dir)?;
        let lock = DirLock::acquire(dir, LOCK_FILE)?;
        let path = dir.join(DATA_FILE);
        // A leftover temporary file is a `set` that never completed.
        fsutil::remove_file_if_exists(&fsutil::temp_path(&path))?;
        let values = match fs::read(&path) {
            Ok(bytes) => decode(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(StorageError::io("reading", path.display(), e)),
        };
        Ok(FileStableStore {
            inner: Arc::new(Inner {
                path,
                values: Mutex::new(values),
                _lock: lock,
            }),
        })
    }
}

fn encode(values: &BTreeMap<String, Vec<u8>>) -> StorageResult<Vec<u8>> {
    let body = encode_value(values);
    let len = u32::try_from(body.len()).map_err(|_| {
        StorageError::Full(format!(
            "the stable store's values take {} bytes; at most 4 GiB fit",
            body.len()
        ))
    })?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

fn decode(path: &Path, bytes: &[u8]) -> StorageResult<BTreeMap<String, Vec<u8>>> {
    let bad = |what: String| StorageError::Corrupt(format!("{}: {what}", path.display()));
    if bytes.len() < HEADER_LEN {
        return Err(bad(format!(
            "{} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    if bytes[..8] != MAGIC {
        return Err(bad("not a raftkit stable store file (bad magic)".into()));
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if word(8) != VERSION {
        return Err(bad(format!(
            "format version {}; this build reads version {VERSION}",
            word(8)
        )));
    }
    let body = &bytes[HEADER_LEN..];
    if body.len() != word(12) as usize {
        return Err(bad(format!(
            "body of {} bytes, the header says {}",
            body.len(),
            word(12)
        )));
    }
    let crc = crc32c::crc32c(body);
    if crc != word(16) {
        return Err(bad(format!(
            "CRC32C {crc:08x} does not match the stored {:08x}",
            word(16)
        )));
    }
    decode_value(body).map_err(|e| bad(format!("passes its CRC32C but does not decode: {e}")))
}

impl StableStore for FileStableStore {
    fn set(&self, key: &str, value: &[u8]) -> StorageResult<()> {
        let mut values = self.inner.values.lock().map_err(|_| {
            StorageError::Other("file stable store: a thread panicked holding its lock".into())
        })?;
        let mut next = values.clone();
        next.insert(key.to_owned(), value.to_vec());
        fsutil::write_atomic(&self.inner.path, &encode(&next)?)?;
        *values = next;
        Ok(())
    }

    fn get(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        let values = self.inner.values.lock().map_err(|_| {
            StorageError::Other("file stable store: a thread panicked holding its lock".into())
        })?;
        Ok(values.get(key).cloned())
    }
}
