//! `FileSnapshotStore`.
//!
//! ```text
//!  dir/snapshots.lock                held while a store has the directory open
//!  dir/<id>.tmp/state.bin            a snapshot being written
//!  dir/<id>/meta.bin                 magic "RKSNAPMT" | version u32 | length u32 | CRC32C u32 | SnapshotMeta (postcard)
//!  dir/<id>/state.bin                the data; its size and CRC32C are in meta.bin
//! ```
//!
//! `finish` syncs the data and the metadata, then renames `<id>.tmp` to
//! `<id>` and syncs `dir`: a snapshot directory without the suffix is
//! complete. `open` of the store removes every `*.tmp` left by a crash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use raftkit::wire::{decode_value, encode_value};
use raftkit::{
    SnapshotId, SnapshotMeta, SnapshotPoint, SnapshotReader, SnapshotSink, SnapshotStore,
    StorageError, StorageResult,
};

use crate::fsutil::{self, DirLock};

const LOCK_FILE: &str = "snapshots.lock";
const META_FILE: &str = "meta.bin";
const DATA_FILE: &str = "state.bin";
const TEMP_SUFFIX: &str = ".tmp";
const MAGIC: [u8; 8] = *b"RKSNAPMT";
const VERSION: u32 = 1;
const META_HEADER_LEN: usize = 20;

/// Snapshots as directories of files; keeps the newest `retain` by index.
///
/// Reading checks the data against the size and CRC32C in its metadata: a
/// mismatch is `StorageError::Corrupt` from `open`, or an `InvalidData` I/O
/// error saying "corrupt" from the reader, never good-looking data. Clones
/// share one open store; the directory is locked while open.
///
/// ```
/// use std::io::{Read, Write};
/// use raftkit::{Configuration, LogIndex, SnapshotPoint, SnapshotStore, Term};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = raftkit_file::FileSnapshotStore::open(dir.path(), 2)?;
/// let mut sink = store.create(SnapshotPoint {
///     index: LogIndex(10),
///     term: Term(1),
///     configuration: Configuration::default(),
///     configuration_index: LogIndex(1),
/// })?;
/// sink.write_all(b"state").unwrap();
/// let meta = sink.finish()?;
///
/// let (_, mut reader) = store.open(&meta.id)?;
/// let mut data = Vec::new();
/// reader.read_to_end(&mut data).unwrap();
/// assert_eq!(data, b"state");
/// # Ok::<(), raftkit::StorageError>(())
/// ```
#[derive(Clone, Debug)]
pub struct FileSnapshotStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    retain: usize,
    last_nonce: Mutex<u64>,
    _lock: DirLock,
}

impl FileSnapshotStore {
    /// Opens (creating if needed) the store in `dir`, keeping the newest
    /// `retain` snapshots, and removes snapshots a crash left incomplete.
    ///
    /// # Errors
    /// `Invalid` if `retain` is zero; `Locked` if another store has `dir`
    /// open; `Io` otherwise.
    pub fn open(dir: impl AsRef<Path>, retain: usize) -> StorageResult<FileSnapshotStore> {
        if retain == 0 {
            return Err(StorageError::Invalid(
                "a snapshot store must retain at least 1 snapshot, got retain = 0".into(),
            ));
        }
        let dir = dir.as_ref().to_path_buf();
        fsutil::create_dir(&dir)?;
        let lock = DirLock::acquire(&dir, LOCK_FILE)?;
        reap_incomplete(&dir)?;
        Ok(FileSnapshotStore {
            inner: Arc::new(Inner {
                dir,
                retain,
                last_nonce: Mutex::new(0),
                _lock: lock,
            }),
        })
    }

    /// The directory the snapshots live in.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = raftkit_file::FileSnapshotStore::open(dir.path(), 1)?;
    /// assert_eq!(store.dir(), dir.path());
    /// # Ok::<(), raftkit::StorageError>(())
    /// ```
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

fn reap_incomplete(dir: &Path) -> StorageResult<()> {
    let read = fs::read_dir(dir).map_err(|e| StorageError::io("listing", dir.display(), e))?;
    let mut reaped = false;
    for item in read {
        let item = item.map_err(|e| StorageError::io("listing", dir.display(), e))?;
        let path = item.path();
        let is_temp = item
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(TEMP_SUFFIX));
        if is_temp && path.is_dir() {
            tracing::warn!(snapshot = %path.display(), "removing a snapshot left incomplete by a crash");
            fs::remove_dir_all(&path)
                .map_err(|e| StorageError::io("removing", path.display(), e))?;
            reaped = true;
        }
    }
    if reaped {
        fsutil::sync_dir(dir)?;
    }
    Ok(())
}

/// Whether `name` can be a snapshot directory: the characters of
/// `SnapshotId::for_point`, so no id can reach outside the store.
fn is_valid_id(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn encode_meta(meta: &SnapshotMeta) -> Vec<u8> {
    let body = encode_value(meta);
    let mut out = Vec::with_capacity(META_HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    // Metadata is a few hundred bytes; the length always fits.
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn read_meta(snapshot_dir: &Path) -> StorageResult<SnapshotMeta> {
    let path = snapshot_dir.join(META_FILE);
    let bytes = fs::read(&path).map_err(|e| StorageError::io("reading", path.display(), e))?;
    let bad = |what: String| StorageError::Corrupt(format!("{}: {what}", path.display()));
    if bytes.len() < META_HEADER_LEN || bytes[..8] != MAGIC {
        return Err(bad("not a raftkit snapshot metadata file".into()));
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if word(8) != VERSION {
        return Err(bad(format!(
            "format version {}; this build reads version {VERSION}",
            word(8)
        )));
    }
    let body = &bytes[META_HEADER_LEN..];
    if body.len() != word(12) as usize {
        return Err(bad(format!(
            "{} bytes of metadata, the header says {}",
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

fn newest_first(metas: &mut [SnapshotMeta]) {
    metas.sort_by(|a, b| (b.index, b.term, &b.id).cmp(&(a.index, a.term, &a.id)));
}

impl Inner {
    fn next_nonce(&self) -> StorageResult<u64> {
        let mut last = self.last_nonce.lock().map_err(|_| {
            StorageError::Other("file snapshot store: a thread panicked holding its lock".into())
        })?;
        // Wall-clock nanoseconds keep ids unique across restarts; the counter
        // keeps them unique when the clock stalls or steps back.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        *last = now.max(*last + 1);
        Ok(*last)
    }

    fn list(&self) -> StorageResult<Vec<SnapshotMeta>> {
        let dir = &self.dir;
        let read = fs::read_dir(dir).map_err(|e| StorageError::io("listing", dir.display(), e))?;
        let mut metas = Vec::new();
        for item in read {
            let item = item.map_err(|e| StorageError::io("listing", dir.display(), e))?;
            let name = item.file_name();
            let Some(name) = name.to_str().filter(|n| is_valid_id(n)) else {
                continue;
            };
            let path = item.path();
            if !path.is_dir() {
                continue;
            }
            match read_meta(&path) {
                Ok(meta) if meta.id.0 == name => metas.push(meta),
                Ok(meta) => {
                    tracing::warn!(snapshot = %path.display(), id = %meta.id, "skipping a snapshot whose metadata names another id")
                }
                Err(e) => {
                    tracing::warn!(snapshot = %path.display(), "skipping an unreadable snapshot: {e}")
                }
            }
        }
        newest_first(&mut metas);
        Ok(metas)
    }

    /// Deletes complete snapshots beyond the newest `retain`.
    fn apply_retention(&self) -> StorageResult<()> {
        let metas = self.list()?;
        if metas.len() <= self.retain {
            return Ok(());
        }
        for old in &metas[self.retain..] {
            let path = self.dir.join(&old.id.0);
            fs::remove_dir_all(&path)
                .map_err(|e| StorageError::io("removing old snapshot", path.display(), e))?;
        }
        fsutil::sync_dir(&self.dir)
    }
}

impl SnapshotStore for FileSnapshotStore {
    fn create(&self, point: SnapshotPoint) -> StorageResult<Box<dyn SnapshotSink>> {
        let id = SnapshotId::for_point(point.term, point.index, self.inner.next_nonce()?);
        let tmp = self.inner.dir.join(format!("{id}{TEMP_SUFFIX}"));
        fs::create_dir(&tmp)
            .map_err(|e| StorageError::io("creating snapshot directory", tmp.display(), e))?;
        let data = tmp.join(DATA_FILE);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&data)
            .map_err(|e| StorageError::io("creating", data.display(), e))?;
        Ok(Box::new(FileSnapshotSink {
            store: Arc::downgrade(&self.inner),
            id,
            point,
            tmp,
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            size: 0,
            crc: 0,
            settled: false,
        }))
    }

    fn list(&self) -> StorageResult<Vec<SnapshotMeta>> {
        self.inner.list()
    }

    fn open(&self, id: &SnapshotId) -> StorageResult<(SnapshotMeta, SnapshotReader)> {
        if !is_valid_id(&id.0) {
            return Err(StorageError::Invalid(format!(
                "{id:?} is not a snapshot id"
            )));
        }
        let dir = self.inner.dir.join(&id.0);
        if !dir.is_dir() {
            return Err(StorageError::SnapshotNotFound(id.clone()));
        }
        let meta = read_meta(&dir)?;
        if &meta.id != id {
            return Err(StorageError::Corrupt(format!(
                "{}: metadata names snapshot {}",
                dir.join(META_FILE).display(),
                meta.id
            )));
        }
        let path = dir.join(DATA_FILE);
        let file = File::open(&path)
            .map_err(|e| StorageError::io("opening snapshot data", path.display(), e))?;
        let len = file
            .metadata()
            .map_err(|e| StorageError::io("reading the size of", path.display(), e))?
            .len();
        if len != meta.size {
            return Err(StorageError::Corrupt(format!(
                "{}: {len} bytes, but the metadata says {}",
                path.display(),
                meta.size
            )));
        }
        let reader = VerifyingReader {
            file: BufReader::with_capacity(1 << 20, file),
            path,
            size: meta.size,
            read: 0,
            crc: 0,
            want: meta.checksum,
        };
        Ok((meta, Box::new(reader)))
    }
}

/// Reads snapshot data and fails with `InvalidData` ("corrupt ...") instead
/// of handing out the final bytes when size or CRC32C do not match.
struct VerifyingReader {
    file: BufReader<File>,
    path: PathBuf,
    size: u64,
    read: u64,
    crc: u32,
    want: u32,
}

impl VerifyingReader {
    fn corrupt(&self, what: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("corrupt snapshot {}: {what}", self.path.display()),
        )
    }
}

impl Read for VerifyingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.file.read(buf)?;
        if n == 0 {
            if self.read != self.size {
                return Err(
                    self.corrupt(format!("ended after {} of {} bytes", self.read, self.size))
                );
            }
            return Ok(0);
        }
        self.read += n as u64;
        if self.read > self.size {
            return Err(self.corrupt(format!(
                "longer than the {} bytes in its metadata",
                self.size
            )));
        }
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        if self.read == self.size && self.crc != self.want {
            return Err(self.corrupt(format!(
                "CRC32C of the data is {:08x}, the metadata says {:08x}",
                self.crc, self.want
            )));
        }
        Ok(n)
    }
}

struct FileSnapshotSink {
    /// Weak, so a sink that is leaked (a crash, in tests) does not keep the
    /// directory locked.
    store: Weak<Inner>,
    id: SnapshotId,
    point: SnapshotPoint,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
    size: u64,
    crc: u32,
    /// Finished or cancelled: nothing left for `Drop` to clean up.
    settled: bool,
}

impl FileSnapshotSink {
    fn finish_inner(&mut self) -> StorageResult<SnapshotMeta> {
        let data = self.tmp.join(DATA_FILE);
        let Some(writer) = self.file.take() else {
            return Err(StorageError::Other(format!(
                "snapshot {} was already finished",
                self.id
            )));
        };
        let file = writer
            .into_inner()
            .map_err(|e| StorageError::io("writing", data.display(), e.into_error()))?;
        file.sync_all()
            .map_err(|e| StorageError::io("syncing", data.display(), e))?;
        drop(file);
        let meta = SnapshotMeta {
            id: self.id.clone(),
            index: self.point.index,
            term: self.point.term,
            configuration: self.point.configuration.clone(),
            configuration_index: self.point.configuration_index,
            size: self.size,
            checksum: self.crc,
        };
        let meta_path = self.tmp.join(META_FILE);
        let write_meta = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&meta_path)?;
            f.write_all(&encode_meta(&meta))?;
            f.sync_all()
        };
        write_meta().map_err(|e| StorageError::io("writing", meta_path.display(), e))?;
        fsutil::sync_dir(&self.tmp)?;
        let Some(store) = self.store.upgrade() else {
            return Err(StorageError::Other(format!(
                "snapshot {}: its store was closed before the snapshot was finished",
                self.id
            )));
        };
        let done = store.dir.join(&self.id.0);
        fs::rename(&self.tmp, &done).map_err(|e| {
            StorageError::io(
                format!("renaming {} to", self.tmp.display()),
                done.display(),
                e,
            )
        })?;
        self.settled = true;
        fsutil::sync_dir(&store.dir)?;
        store.apply_retention()?;
        Ok(meta)
    }
}

impl Write for FileSnapshotSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other(format!(
                "snapshot {} is already finished",
                self.id
            )));
        };
        let n = file.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

impl SnapshotSink for FileSnapshotSink {
    fn id(&self) -> &SnapshotId {
        &self.id
    }

    fn finish(mut self: Box<Self>) -> StorageResult<SnapshotMeta> {
        self.finish_inner()
    }

    fn cancel(mut self: Box<Self>) -> StorageResult<()> {
        self.settled = true;
        self.file = None;
        fs::remove_dir_all(&self.tmp)
            .map_err(|e| StorageError::io("removing cancelled snapshot", self.tmp.display(), e))?;
        fsutil::sync_dir(fsutil::parent(&self.tmp))
    }
}

impl Drop for FileSnapshotSink {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Neither finished nor cancelled (or finishing failed): the temporary
        // directory would otherwise linger until the next open.
        self.file = None;
        if let Err(e) = fs::remove_dir_all(&self.tmp) {
            tracing::warn!(snapshot = %self.tmp.display(), "removing an abandoned snapshot: {e}");
        }
    }
}
