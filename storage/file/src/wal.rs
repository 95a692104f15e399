//! `FileLogStore`: the segmented write-ahead log.
//!
//! ```text
//!  dir/
//!    wal.lock                      held while a store has the directory open
//!    00000000000000000001.wal      segment: entries 1..=k
//!    0000000000000000000k+1.wal    segment: entries k+1..   (the active one)
//!    wal.truncate                  only during truncate_suffix: the intent
//! ```
//!
//! `append` writes the batch to the active segment with positional writes and
//! calls `fdatasync` once; a batch that does not fit rolls to a new segment,
//! which is created under a temporary name, synced and renamed in. Readers
//! take a read lock on the in-memory index and read the files directly; the
//! index is updated only after the data is durable, so a reader sees whole
//! batches or nothing of them.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use raftkit::{Entry, LogIndex, LogStore, StorageError, StorageResult};

use crate::fsutil::{self, DirLock};
use crate::segment::{self, HEADER_LEN};

const LOCK_FILE: &str = "wal.lock";
const TRUNCATE_INTENT: &str = "wal.truncate";
const SEGMENT_SUFFIX: &str = ".wal";

/// Settings of a [`FileLogStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileLogOptions {
    /// A segment is closed and a new one started once the next record would
    /// take it past this size. An entry larger than this gets a segment of its
    /// own. Purging frees space a whole segment at a time, so smaller segments
    /// compact sooner; larger ones mean fewer files. Default 64 MiB; at least
    /// 4 KiB.
    pub segment_size_bytes: u64,
}

impl Default for FileLogOptions {
    fn default() -> Self {
        // Large enough that a busy node rolls a segment every few seconds at
        // most, small enough that compaction frees space promptly.
        FileLogOptions {
            segment_size_bytes: 64 << 20,
        }
    }
}

/// The smallest segment size accepted.
pub const MIN_SEGMENT_SIZE_BYTES: u64 = 4 << 10;

/// A durable log: segment files of entries, each record with its length and
/// a CRC32C.
///
/// Clones share one open store. Opening recovers: a record torn by a crash at
/// the very tail of the last segment is cut off (and logged with
/// `tracing::warn`); any other damage is `StorageError::Corrupt` naming the
/// file, the offset and the entry index. The directory is locked while open.
///
/// ```
/// use raftkit::{Entry, LogIndex, LogStore, Term};
/// use raftkit_file::{FileLogOptions, FileLogStore};
///
/// let dir = tempfile::tempdir().unwrap();
/// let log = FileLogStore::open(dir.path(), FileLogOptions::default())?;
/// log.append(&[Entry::command(LogIndex(1), Term(1), "x".into())])?;
/// drop(log);
/// let log = FileLogStore::open(dir.path(), FileLogOptions::default())?;
/// assert_eq!(log.last_index()?, LogIndex(1));
/// # Ok::<(), raftkit::StorageError>(())
/// ```
#[derive(Clone, Debug)]
pub struct FileLogStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: FileLogOptions,
    /// The index of what is durable; readers hold it shared.
    wal: RwLock<Wal>,
    /// Serialises writers. Holds why the store stopped, after a failed write:
    /// the files may then differ from the index, so it takes no more writes.
    writer: Mutex<Option<String>>,
    _lock: DirLock,
}

#[derive(Debug, Default)]
struct Wal {
    /// Contiguous, oldest first, none empty.
    segments: Vec<Segment>,
}

#[derive(Debug)]
struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// The offset of each record.
    offsets: Vec<u64>,
    /// Where the last record ends.
    end: u64,
}

impl Segment {
    fn last(&self) -> u64 {
        self.first + self.offsets.len() as u64 - 1
    }

    /// The byte offset where the record of `index` starts (or the end).
    fn offset_of(&self, index: u64) -> u64 {
        let k = (index - self.first) as usize;
        self.offsets.get(k).copied().unwrap_or(self.end)
    }
}

impl Wal {
    fn first(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.first)
    }

    fn last(&self) -> u64 {
        self.segments.last().map_or(0, Segment::last)
    }
}

/// A write in progress to one segment.
struct Pending {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Whether the segment was created by this append.
    new: bool,
    start: u64,
    buf: Vec<u8>,
    offsets: Vec<u64>,
}

impl FileLogStore {
    /// Opens (creating if needed) the log in `dir`, recovering after a crash.
    ///
    /// # Errors
    /// `Locked` if another store has `dir` open; `Corrupt` for damage other
    /// than a torn tail; `Invalid` for bad options; `Io` otherwise.
    pub fn open(dir: impl AsRef<Path>, options: FileLogOptions) -> StorageResult<FileLogStore> {
        let dir = dir.as_ref().to_path_buf();
        if options.segment_size_bytes < MIN_SEGMENT_SIZE_BYTES {
            return Err(StorageError::Invalid(format!(
                "segment_size_bytes is {}, below the minimum of {MIN_SEGMENT_SIZE_BYTES}",
                options.segment_size_bytes
            )));
        }
        fsutil::create_dir(&dir)?;
        let lock = DirLock::acquire(&dir, LOCK_FILE)?;
        let wal = recover(&dir)?;
        let inner = Inner {
            dir,
            options,
            wal: RwLock::new(wal),
            writer: Mutex::new(None),
            _lock: lock,
        };
        Ok(FileLogStore {
            inner: Arc::new(inner),
        })
    }

    /// The directory the log lives in.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = raftkit_file::FileLogStore::open(dir.path(), Default::default())?;
    /// assert_eq!(log.dir(), dir.path());
    /// # Ok::<(), raftkit::StorageError>(())
    /// ```
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn read_wal(&self) -> StorageResult<std::sync::RwLockReadGuard<'_, Wal>> {
        self.inner.wal.read().map_err(|_| poisoned())
    }

    /// Runs a mutation under the writer lock; a failure stops the store.
    fn write<T>(&self, op: impl FnOnce(&Inner) -> StorageResult<T>) -> StorageResult<T> {
        let mut broken = self.inner.writer.lock().map_err(|_| poisoned())?;
        if let Some(why) = &*broken {
            return Err(StorageError::Other(format!(
                "log in {} stopped after an earlier failure: {why}",
                self.inner.dir.display()
            )));
        }
        let result = op(&self.inner);
        if let Err(e) = &result {
            if !matches!(e, StorageError::Invalid(_)) {
                *broken = Some(e.to_string());
            }
        }
        result
    }
}

fn poisoned() -> StorageError {
    StorageError::Other("file log store: a thread panicked while holding its lock".into())
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}{SEGMENT_SUFFIX}"))
}

fn open_segment_file(path: &Path) -> StorageResult<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io("opening segment", path.display(), e))
}

/// Lists segment files by first index, removing leftover temporary ones.
fn list_segments(dir: &Path) -> StorageResult<Vec<(u64, PathBuf)>> {
    let read = fs::read_dir(dir).map_err(|e| StorageError::io("listing", dir.display(), e))?;
    let mut found = Vec::new();
    for item in read {
        let item = item.map_err(|e| StorageError::io("listing", dir.display(), e))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".wal.tmp") {
            fsutil::remove_file_if_exists(&item.path())?;
            continue;
        }
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        match stem.parse::<u64>() {
            Ok(first) if stem.len() == 20 => found.push((first, item.path())),
            _ => {
                return Err(StorageError::Corrupt(format!(
                    "{}: a .wal file whose name is not a 20-digit first index",
                    item.path().display()
                )))
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Rebuilds the index from the files: finishes an interrupted truncation,
/// cuts a torn tail, checks that segments are contiguous.
fn recover(dir: &Path) -> StorageResult<Wal> {
    let intent = read_truncate_intent(dir)?;
    let mut files = list_segments(dir)?;
    if let Some(from) = intent {
        for (first, path) in files.iter().filter(|(first, _)| *first >= from) {
            tracing::warn!(segment = %path.display(), first, "finishing an interrupted truncate_suffix({from})");
            fsutil::remove_file_if_exists(path)?;
        }
        files.retain(|(first, _)| *first < from);
        fsutil::sync_dir(dir)?;
    }
    let mut wal = Wal::default();
    let count = files.len();
    for (k, (name_first, path)) in files.into_iter().enumerate() {
        if let Some(seg) = load_segment(dir, name_first, path, k + 1 == count)? {
            if let Some(prev) = wal.segments.last() {
                if seg.first != prev.last() + 1 {
                    return Err(StorageError::Corrupt(format!(
                        "{} starts at index {} but {} ends at {}: the log has a hole",
                        seg.path.display(),
                        seg.first,
                        prev.path.display(),
                        prev.last()
                    )));
                }
            }
            wal.segments.push(seg);
        }
    }
    if let Some(from) = intent {
        truncate_segments(dir, &mut wal, from)?;
        fsutil::remove_file_if_exists(&dir.join(TRUNCATE_INTENT))?;
        fsutil::sync_dir(dir)?;
    }
    Ok(wal)
}

/// Loads one segment; `None` when it holds no record (and is then removed).
fn load_segment(
    dir: &Path,
    name_first: u64,
    path: PathBuf,
    is_last: bool,
) -> StorageResult<Option<Segment>> {
    let data =
        fs::read(&path).map_err(|e| StorageError::io("reading segment", path.display(), e))?;
    if data.len() < HEADER_LEN as usize && is_last {
        // A crash while a new segment was being filled; it never held a durable record.
        tracing::warn!(segment = %path.display(), "removing a last segment with a partial header");
        fsutil::remove_file_if_exists(&path)?;
        fsutil::sync_dir(dir)?;
        return Ok(None);
    }
    let first = segment::decode_header(&path, &data)?;
    if first != name_first {
        return Err(StorageError::Corrupt(format!(
            "{}: header says first index {first}, the file name says {name_first}",
            path.display()
        )));
    }
    let scan = segment::scan(&path, &data, first, is_last)?;
    drop(data);
    if let Some(why) = &scan.torn {
        tracing::warn!(segment = %path.display(), "cutting off a torn tail: {why}");
        let file = open_segment_file(&path)?;
        file.set_len(scan.end)
            .and_then(|()| file.sync_all())
            .map_err(|e| StorageError::io("cutting off a torn tail of", path.display(), e))?;
    }
    if scan.offsets.is_empty() {
        if !is_last {
            return Err(StorageError::Corrupt(format!(
                "{}: a segment with no record before the last segment",
                path.display()
            )));
        }
        fsutil::remove_file_if_exists(&path)?;
        fsutil::sync_dir(dir)?;
        return Ok(None);
    }
    let file = Arc::new(open_segment_file(&path)?);
    Ok(Some(Segment {
        first,
        path,
        file,
        offsets: scan.offsets,
        end: scan.end,
    }))
}

fn read_truncate_intent(dir: &Path) -> StorageResult<Option<u64>> {
    let path = dir.join(TRUNCATE_INTENT);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("reading", path.display(), e)),
    };
    if bytes.len() != 12 || crc32c::crc32c(&bytes[..8]).to_le_bytes() != bytes[8..] {
        return Err(StorageError::Corrupt(format!(
            "{}: {} bytes that are not a truncation intent (8-byte index + CRC32C)",
            path.display(),
            bytes.len()
        )));
    }
    let mut from = [0u8; 8];
    from.copy_from_slice(&bytes[..8]);
    Ok(Some(u64::from_le_bytes(from)))
}

fn write_truncate_intent(dir: &Path, from: u64) -> StorageResult<()> {
    let mut bytes = from.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(&from.to_le_bytes()).to_le_bytes());
    fsutil::write_atomic(&dir.join(TRUNCATE_INTENT), &bytes)
}

/// Removes every entry with index >= `from`: whole segments from the newest
/// back, synced, then the segment holding `from` is cut at that record.
fn truncate_segments(dir: &Path, wal: &mut Wal, from: u64) -> StorageResult<()> {
    let mut removed = false;
    while let Some(seg) = wal.segments.last() {
        if seg.first < from {
            break;
        }
        fsutil::remove_file_if_exists(&seg.path)?;
        wal.segments.pop();
        removed = true;
    }
    if removed {
        fsutil::sync_dir(dir)?;
    }
    if let Some(seg) = wal.segments.last_mut() {
        if seg.last() >= from {
            let cut = seg.offset_of(from);
            seg.file
                .set_len(cut)
                .and_then(|()| seg.file.sync_all())
                .map_err(|e| StorageError::io("truncating segment", seg.path.display(), e))?;
            seg.offsets.truncate((from - seg.first) as usize);
            seg.end = cut;
        }
    }
    Ok(())
}

impl Inner {
    /// Creates a segment starting at `first`: header written under a
    /// temporary name, synced, renamed in, directory synced.
    fn create_segment(&self, first: u64) -> StorageResult<Pending> {
        let path = segment_path(&self.dir, first);
        let tmp = fsutil::temp_path(&path);
        let make = || -> std::io::Result<File> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            fsutil::write_all_at(&file, &segment::encode_header(first), 0)?;
            file.sync_all()?;
            Ok(file)
        };
        let file = make().map_err(|e| StorageError::io("creating segment", tmp.display(), e))?;
        fs::rename(&tmp, &path).map_err(|e| {
            StorageError::io(format!("renaming {} to", tmp.display()), path.display(), e)
        })?;
        fsutil::sync_dir(&self.dir)?;
        Ok(Pending {
            first,
            path,
            file: Arc::new(file),
            new: true,
            start: HEADER_LEN,
            buf: Vec::new(),
            offsets: Vec::new(),
        })
    }

    /// Writes and syncs a pending segment write.
    fn flush(&self, p: &Pending) -> StorageResult<()> {
        fsutil::write_all_at(&p.file, &p.buf, p.start)
            .and_then(|()| p.file.sync_data())
            .map_err(|e| StorageError::io("appending to", p.path.display(), e))
    }

    fn append(&self, entries: &[Entry]) -> StorageResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let (last, mut tail) = {
            let wal = self.wal.read().map_err(|_| poisoned())?;
            let tail = wal.segments.last().map(|s| Pending {
                first: s.first,
                path: s.path.clone(),
                file: Arc::clone(&s.file),
                new: false,
                start: s.end,
                buf: Vec::new(),
                offsets: Vec::new(),
            });
            (wal.last(), tail)
        };
        check_batch(last, entries)?;
        // Encode everything first: a bad entry must fail the batch before any byte is written.
        let records = entries
            .iter()
            .map(|entry| {
                let mut record = Vec::new();
                segment::encode_record(entry, &mut record).map(|()| (entry.index.0, record))
            })
            .collect::<StorageResult<Vec<_>>>()?;
        let mut done: Vec<Pending> = Vec::new();
        for (index, record) in records {
            let full = tail.as_ref().is_none_or(|t| {
                let size = t.start + t.buf.len() as u64;
                size > HEADER_LEN && size + record.len() as u64 > self.options.segment_size_bytes
            });
            if full {
                if let Some(t) = tail.take().filter(|t| !t.buf.is_empty()) {
                    // Make the old segment complete before the next exists, so
                    // recovery only ever finds a torn tail in the last one.
                    self.flush(&t)?;
                    done.push(t);
                }
                tail = Some(self.create_segment(index)?);
            }
            // `full` is true whenever `tail` was None, so it is Some here.
            let Some(t) = tail.as_mut() else {
                unreachable!("a segment was just created")
            };
            t.offsets.push(t.start + t.buf.len() as u64);
            t.buf.extend_from_slice(&record);
        }
        if let Some(t) = tail {
            self.flush(&t)?;
            done.push(t);
        }
        self.publish(done)
    }

    /// Makes durable writes visible to readers.
    fn publish(&self, done: Vec<Pending>) -> StorageResult<()> {
        let mut wal = self.wal.write().map_err(|_| poisoned())?;
        for p in done {
            if p.offsets.is_empty() {
                continue;
            }
            let end = p.start + p.buf.len() as u64;
            if p.new {
                wal.segments.push(Segment {
                    first: p.first,
                    path: p.path,
                    file: p.file,
                    offsets: p.offsets,
                    end,
                });
            } else if let Some(seg) = wal.segments.last_mut() {
                seg.offsets.extend(p.offsets);
                seg.end = end;
            }
        }
        Ok(())
    }

    fn truncate_suffix(&self, from: u64) -> StorageResult<()> {
        let mut wal = self.wal.write().map_err(|_| poisoned())?;
        if wal.segments.is_empty() || from > wal.last() {
            return Ok(());
        }
        // The intent makes the truncation all-or-nothing across a crash:
        // recovery finishes it if this file exists.
        write_truncate_intent(&self.dir, from)?;
        truncate_segments(&self.dir, &mut wal, from)?;
        fsutil::remove_file_if_exists(&self.dir.join(TRUNCATE_INTENT))?;
        fsutil::sync_dir(&self.dir)
    }

    fn purge_prefix(&self, upto: u64) -> StorageResult<()> {
        let mut wal = self.wal.write().map_err(|_| poisoned())?;
        let whole = wal.segments.iter().take_while(|s| s.last() <= upto).count();
        if whole == 0 {
            return Ok(());
        }
        // Oldest first, so a crash part-way leaves a contiguous suffix.
        for seg in &wal.segments[..whole] {
            fsutil::remove_file_if_exists(&seg.path)?;
        }
        wal.segments.drain(..whole);
        fsutil::sync_dir(&self.dir)
    }
}

/// Checks that `entries` may follow a log whose last index is `last` (zero
/// when empty).
fn check_batch(last: u64, entries: &[Entry]) -> StorageResult<()> {
    let Some(head) = entries.first() else {
        return Ok(());
    };
    if head.index.0 == 0 {
        return Err(StorageError::Invalid(
            "appended an entry with index 0; the first index is 1".into(),
        ));
    }
    if last != 0 && head.index.0 != last + 1 {
        return Err(StorageError::Invalid(format!(
            "appended a batch starting at index {} to a log whose last index is {last}",
            head.index
        )));
    }
    for pair in entries.windows(2) {
        if pair[1].index.0 != pair[0].index.0.wrapping_add(1) {
            return Err(StorageError::Invalid(format!(
                "appended a batch with index {} followed by {}",
                pair[0].index, pair[1].index
            )));
        }
    }
    Ok(())
}

/// Reads records `from..to` (clamped) of one segment into `out`, checking each.
fn read_segment(seg: &Segment, from: u64, to: u64, out: &mut Vec<Entry>) -> StorageResult<()> {
    let (lo, hi) = (from.max(seg.first), to.min(seg.last() + 1));
    if lo >= hi {
        return Ok(());
    }
    let (start, end) = (seg.offset_of(lo), seg.offset_of(hi));
    let len = usize::try_from(end - start).map_err(|_| {
        StorageError::Other(format!(
            "a read of {} bytes does not fit in memory",
            end - start
        ))
    })?;
    let mut buf = vec![0u8; len];
    fsutil::read_exact_at(&seg.file, &mut buf, start)
        .map_err(|e| StorageError::io("reading segment", seg.path.display(), e))?;
    let mut at = 0usize;
    for index in lo..hi {
        let offset = start + at as u64;
        let (entry, n) = segment::decode_record(&buf[at..], index)
            .map_err(|fault| segment::corrupt_record(&seg.path, offset, index, &fault))?;
        out.push(entry);
        at += n;
    }
    Ok(())
}

impl LogStore for FileLogStore {
    fn first_index(&self) -> StorageResult<LogIndex> {
        Ok(LogIndex(self.read_wal()?.first()))
    }

    fn last_index(&self) -> StorageResult<LogIndex> {
        Ok(LogIndex(self.read_wal()?.last()))
    }

    fn get(&self, from: LogIndex, to: LogIndex) -> StorageResult<Vec<Entry>> {
        let wal = self.read_wal()?;
        let mut out = Vec::new();
        for seg in &wal.segments {
            if seg.first >= to.0 {
                break;
            }
            if seg.last() >= from.0 {
                read_segment(seg, from.0, to.0, &mut out)?;
            }
        }
        Ok(out)
    }

    fn append(&self, entries: &[Entry]) -> StorageResult<()> {
        self.write(|inner| inner.append(entries))
    }

    fn truncate_suffix(&self, from: LogIndex) -> StorageResult<()> {
        self.write(|inner| inner.truncate_suffix(from.0))
    }

    fn purge_prefix(&self, upto: LogIndex) -> StorageResult<()> {
        self.write(|inner| inner.purge_prefix(upto.0))
    }
}
