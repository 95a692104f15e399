//! `FileLogStore`: the segmented write-ahead log.
//!
//! ```text
//!  dir/
//!    wal.lock                      held while a store has the directory open
//!    00000000000000000001.wal      segment: entries 1..=k
//!    0000000000000000000k+1.wal    segment: entries k+1..   (the active one)
//!    wal.truncate                  only during truncate_suffix: the intent
//!    spare.wal.tmp                 the next segment, being zero-filled ahead
//! ```
//!
//! `append` writes the batch to the active segment with positional writes at
//! the in-memory end of its records and calls `fdatasync` once; a batch that
//! does not fit rolls to a new segment.
//!
//! With `preallocate` (the default) every segment is created at its full
//! size and zero-filled with real writes, then synced, before it is used: an
//! append then overwrites blocks the file already has, and its `fdatasync`
//! commits data alone, not the file's size and extents as well (on ext4 that
//! saves a journal commit per append). `fallocate` would not do: it leaves
//! unwritten extents whose conversion costs the same commit. A background
//! thread keeps one spare segment zero-filled ahead (`spare.wal.tmp`); at a
//! roll the spare gets its header, is synced and renamed into place, and the
//! directory is synced. When the spare is not ready yet the new segment is
//! prepared synchronously under `<first>.wal.tmp` instead; an error while
//! preparing the spare fails the append that needed it. Disk usage is up to
//! (segments + 1 spare) x `segment_size_bytes`.
//!
//! Without `preallocate`, a new segment is just a header (written under a
//! temporary name, synced, renamed in) and appends grow the file. Readers
//! take a read lock on the in-memory index and read the files directly; the
//! index is updated only after the data is durable, so a reader sees whole
//! batches or nothing of them.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use raftkit::{Entry, LogIndex, LogStore, StorageError, StorageResult};

use crate::fsutil::{self, DirLock};
use crate::segment::{self, HEADER_LEN};

mod recovery;

use recovery::{recover, truncate_segments, write_truncate_intent};

const LOCK_FILE: &str = "wal.lock";
const TRUNCATE_INTENT: &str = "wal.truncate";
const SEGMENT_SUFFIX: &str = ".wal";
/// The spare segment being prepared; `.wal.tmp`, so that open sweeps it.
const SPARE_FILE: &str = "spare.wal.tmp";

/// Settings of a [`FileLogStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileLogOptions {
    /// A segment is closed and a new one started once the next record would
    /// take it past this size. An entry larger than this gets a segment of its
    /// own. Purging frees space a whole segment at a time, so smaller segments
    /// compact sooner; larger ones mean fewer files. Default 64 MiB; at least
    /// 4 KiB.
    pub segment_size_bytes: u64,
    /// Create every segment at its full size, zero-filled and synced, before
    /// it is used, so that an append overwrites allocated blocks and its
    /// `fdatasync` does not also commit the file's new size. One spare
    /// segment is kept prepared ahead by a background thread, so the log
    /// takes up to (segments + 1) x `segment_size_bytes` of disk, whatever it
    /// holds. Default true; false appends at the end of growing files.
    pub preallocate: bool,
}

impl Default for FileLogOptions {
    fn default() -> Self {
        // Large enough that a busy node rolls a segment every few seconds at
        // most, small enough that compaction frees space promptly.
        FileLogOptions {
            segment_size_bytes: 64 << 20,
            preallocate: true,
        }
    }
}

/// The smallest segment size accepted.
pub const MIN_SEGMENT_SIZE_BYTES: u64 = 4 << 10;

/// A durable log: segment files of entries, each record with its length and
/// a CRC32C.
///
/// Clones share one open store. Opening recovers: a record torn by a crash at
/// the very tail of the last segment, with only zeros after it, is cut off
/// (overwritten with zeros, or cut off the file without preallocation) and
/// logged with `tracing::warn`; any other damage, including non-zero bytes
/// after the end of the records, is `StorageError::Corrupt` naming the file,
/// the offset (and the entry index, for a record). `truncate_suffix` zeroes
/// the records it removes, so none can be read back after a crash. The
/// directory is locked while open; with preallocation, a background thread
/// prepares the next segment while the store is open.
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
    /// The spare segment being prepared, if any. Locked only by writers.
    spare: Mutex<Option<SpareJob>>,
    _lock: DirLock,
}

/// A background preparation of the spare segment.
#[derive(Debug)]
struct SpareJob {
    handle: JoinHandle<io::Result<File>>,
    cancel: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let job = match self.spare.get_mut() {
            Ok(slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(job) = job {
            job.cancel.store(true, Ordering::Relaxed);
            // The thread stops within one chunk (or one final sync).
            let _ = job.handle.join();
            let _ = fs::remove_file(self.dir.join(SPARE_FILE));
        }
    }
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
        let wal = recover(&dir, options.preallocate)?;
        let inner = Inner {
            dir,
            options,
            wal: RwLock::new(wal),
            writer: Mutex::new(None),
            spare: Mutex::new(None),
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

/// Creates (or replaces) `path` as a file of `size` bytes, written for real
/// with zeros after `header` (if any), and synced. Gives up with
/// `Interrupted` between chunks once `cancel` is set.
fn prepare_file(
    path: &Path,
    size: u64,
    header: Option<&[u8]>,
    cancel: &AtomicBool,
) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let mut off = 0u64;
    if let Some(h) = header {
        fsutil::write_all_at(&file, h, 0)?;
        off = h.len() as u64;
    }
    let done = fsutil::write_zeros(&file, off, size, || cancel.load(Ordering::Relaxed))?;
    if !done {
        return Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "the log was closed while its spare segment was being prepared",
        ));
    }
    file.sync_all()?;
    Ok(file)
}

impl Inner {
    /// Creates a segment starting at `first`, ready to be appended to: with
    /// `preallocate`, the spare segment if it is ready, else one zero-filled
    /// now; without, a header alone. Either way the file is synced under a
    /// temporary name before it is renamed in and the directory synced.
    fn create_segment(&self, first: u64) -> StorageResult<Pending> {
        let path = segment_path(&self.dir, first);
        let header = segment::encode_header(first);
        let (tmp, file) = match self.take_spare()? {
            Some(file) => {
                let tmp = self.dir.join(SPARE_FILE);
                fsutil::write_all_at(&file, &header, 0)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| StorageError::io("writing the header of", tmp.display(), e))?;
                (tmp, file)
            }
            None => {
                let tmp = fsutil::temp_path(&path);
                let size = if self.options.preallocate {
                    self.options.segment_size_bytes
                } else {
                    HEADER_LEN
                };
                let file = prepare_file(&tmp, size, Some(&header), &AtomicBool::new(false))
                    .map_err(|e| StorageError::io("creating segment", tmp.display(), e))?;
                (tmp, file)
            }
        };
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

    /// The spare segment if its preparation has finished; `None` if there is
    /// none or it is still being written (it is then kept for a later roll).
    /// A failed preparation is an error here, where the spare is needed.
    fn take_spare(&self) -> StorageResult<Option<File>> {
        let mut slot = self.spare.lock().map_err(|_| poisoned())?;
        let Some(job) = slot.take() else {
            return Ok(None);
        };
        if !job.handle.is_finished() {
            *slot = Some(job);
            return Ok(None);
        }
        let path = self.dir.join(SPARE_FILE);
        match job.handle.join() {
            Ok(Ok(file)) => Ok(Some(file)),
            Ok(Err(e)) => Err(StorageError::io(
                "preparing the spare segment",
                path.display(),
                e,
            )),
            Err(_) => Err(StorageError::Other(format!(
                "the thread preparing the spare segment {} panicked",
                path.display()
            ))),
        }
    }

    /// Starts preparing a spare segment in the background, unless one is
    /// already there or preallocation is off.
    fn ensure_spare(&self) -> StorageResult<()> {
        if !self.options.preallocate {
            return Ok(());
        }
        let mut slot = self.spare.lock().map_err(|_| poisoned())?;
        if slot.is_some() {
            return Ok(());
        }
        let path = self.dir.join(SPARE_FILE);
        let size = self.options.segment_size_bytes;
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&cancel);
        let spawned = std::thread::Builder::new()
            .name("raftkit-wal-spare".into())
            .spawn(move || prepare_file(&path, size, None, &stop));
        match spawned {
            Ok(handle) => *slot = Some(SpareJob { handle, cancel }),
            // Not fatal: the next roll prepares its segment synchronously.
            Err(e) => tracing::warn!(
                dir = %self.dir.display(),
                "cannot start a thread to prepare a spare segment: {e}"
            ),
        }
        Ok(())
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
        self.publish(done)?;
        // The active segment is in use: have its successor ready ahead.
        self.ensure_spare()
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
        truncate_segments(&self.dir, &mut wal, from, self.options.preallocate)?;
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

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use raftkit::Term;

    use super::*;

    const SIZE: u64 = MIN_SEGMENT_SIZE_BYTES;

    fn options() -> FileLogOptions {
        FileLogOptions {
            segment_size_bytes: SIZE,
            preallocate: true,
        }
    }

    fn entry(i: u64) -> Entry {
        Entry::command(LogIndex(i), Term(1), vec![i as u8; 200].into())
    }

    fn segment_count(log: &FileLogStore) -> usize {
        log.inner.wal.read().expect("wal lock").segments.len()
    }

    /// Appends one entry at a time until the log has one more segment.
    fn append_until_roll(log: &FileLogStore, next: &mut u64) -> StorageResult<()> {
        let before = segment_count(log);
        while segment_count(log) == before {
            log.append(&[entry(*next)])?;
            *next += 1;
            assert!(*next < 10_000, "no roll after {next} entries");
        }
        Ok(())
    }

    fn spare_finished(log: &FileLogStore) -> bool {
        let slot = log.inner.spare.lock().expect("spare lock");
        slot.as_ref().is_some_and(|job| job.handle.is_finished())
    }

    fn wait_for_spare(log: &FileLogStore) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !spare_finished(log) {
            assert!(
                Instant::now() < deadline,
                "the spare segment was not prepared within 30 s"
            );
            std::thread::park_timeout(Duration::from_millis(2));
        }
    }

    /// Checks that `path` is a full-size segment, zero after its records.
    fn assert_preallocated(log: &FileLogStore, path: &Path) {
        let data = fs::read(path).expect("reading the segment");
        assert_eq!(
            data.len() as u64,
            SIZE,
            "{} is preallocated",
            path.display()
        );
        let wal = log.inner.wal.read().expect("wal lock");
        let seg = wal
            .segments
            .iter()
            .find(|s| s.path == path)
            .expect("a segment of the log");
        assert!(
            data[seg.end as usize..].iter().all(|&b| b == 0),
            "{} is zero after its records",
            path.display()
        );
    }

    #[test]
    fn a_roll_with_a_ready_spare_renames_the_spare_into_place() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = FileLogStore::open(dir.path(), options()).expect("open");
        let mut next = 1;
        log.append(&[entry(next)]).expect("append");
        next += 1;
        wait_for_spare(&log);
        let spare = dir.path().join(SPARE_FILE);
        let meta = fs::metadata(&spare).expect("the spare segment exists");
        assert_eq!(meta.len(), SIZE, "the spare is full-size");
        append_until_roll(&log, &mut next).expect("append");
        let second = log.inner.wal.read().expect("wal").segments[1].path.clone();
        assert_eq!(
            fs::metadata(&second).expect("the new segment").ino(),
            meta.ino(),
            "the new segment should be the spare, renamed"
        );
        assert_preallocated(&log, &second);
        assert!(
            log.inner.spare.lock().expect("spare lock").is_some(),
            "a new spare is being prepared after the old one was used"
        );
        let all: Vec<Entry> = (1..next).map(entry).collect();
        assert_eq!(log.get(LogIndex(0), LogIndex(u64::MAX)).expect("get"), all);
        drop(log);
        assert!(!spare.exists(), "closing the log removes its spare");
        let log = FileLogStore::open(dir.path(), options()).expect("reopen");
        assert_eq!(log.get(LogIndex(0), LogIndex(u64::MAX)).expect("get"), all);
    }

    /// Puts a spare job in place that finishes only with what `rx` sends.
    fn blocked_spare(log: &FileLogStore, rx: mpsc::Receiver<io::Result<File>>) {
        let mut slot = log.inner.spare.lock().expect("spare lock");
        if let Some(job) = slot.take() {
            job.cancel.store(true, Ordering::Relaxed);
            let _ = job.handle.join();
        }
        let handle = std::thread::spawn(move || {
            rx.recv()
                .unwrap_or_else(|_| Err(io::Error::other("the test ended")))
        });
        *slot = Some(SpareJob {
            handle,
            cancel: Arc::new(AtomicBool::new(false)),
        });
    }

    #[test]
    fn a_roll_without_a_ready_spare_prepares_the_segment_itself_and_a_failed_spare_fails_the_roll_that_needs_it(
    ) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = FileLogStore::open(dir.path(), options()).expect("open");
        // Declared after the log, so dropped before it: the blocked job then ends.
        let (tx, rx) = mpsc::channel();
        let mut next = 1;
        log.append(&[entry(next)]).expect("append");
        next += 1;
        blocked_spare(&log, rx);
        append_until_roll(&log, &mut next).expect("a roll while the spare is not ready");
        let second = log.inner.wal.read().expect("wal").segments[1].path.clone();
        assert_preallocated(&log, &second);
        assert!(
            !spare_finished(&log) && log.inner.spare.lock().expect("spare").is_some(),
            "the unfinished spare is kept for a later roll"
        );
        // The spare's preparation fails; the next roll, which needs it, says so.
        tx.send(Err(io::Error::other("the disk is on fire")))
            .expect("the job waits");
        wait_for_spare(&log);
        let err = append_until_roll(&log, &mut next).expect_err("the failed spare surfaces");
        let msg = err.to_string();
        assert!(
            msg.contains("preparing the spare segment") && msg.contains("the disk is on fire"),
            "{msg}"
        );
        let again = log.append(&[entry(next)]).expect_err("the store stopped");
        assert!(
            again
                .to_string()
                .contains("stopped after an earlier failure"),
            "{again}"
        );
        drop(log);
        let log = FileLogStore::open(dir.path(), options()).expect("reopen");
        let got = log.get(LogIndex(0), LogIndex(u64::MAX)).expect("get");
        // Everything before the failed append, nothing of it.
        assert_eq!(got, (1..next).map(entry).collect::<Vec<_>>());
    }
}
