//! `LmdbStore`: one LMDB environment holding a node's log and stable store.
//!
//! ```text
//!  dir/
//!    lmdb.lock    held while a store has the directory open (fs4 lock)
//!    data.mdb     LMDB's data file: databases "log" and "stable"
//!    lock.mdb     LMDB's reader table
//! ```
//!
//! Writers are serialised by a mutex and each runs one write transaction.
//! Readers run read transactions under a shared gate; growing the memory
//! map (which LMDB allows only while no transaction is open) takes the gate
//! exclusively, between two attempts of the write that found the map full.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions, MdbError, RoTxn, RwTxn, WithoutTls};
use raftkit::{Entry, StorageError, StorageResult};

use crate::codec::{decode_log_value, index_key, key_index};
use crate::config::{LmdbConfig, SyncPolicy, MIN_MAP_SIZE_BYTES};
use crate::lock::DirLock;
use crate::verify;
use crate::{LmdbLogStore, LmdbStableStore};

const LOCK_FILE: &str = "lmdb.lock";
const DATA_FILE: &str = "data.mdb";
const LOG_DB: &str = "log";
const STABLE_DB: &str = "stable";

pub(crate) type Db = Database<Bytes, Bytes>;

/// A node's LMDB environment, holding its log and its stable store.
///
/// Open it once, then take the two views the driver wants:
/// [`log`](LmdbStore::log) (a [`LogStore`](raftkit::LogStore)) and
/// [`stable`](LmdbStore::stable) (a [`StableStore`](raftkit::StableStore)).
/// Every clone and view shares the open environment; the directory stays
/// locked while any of them is alive. Every value carries a CRC32C: damage is
/// reported as `StorageError::Corrupt` naming the file and the index or key.
///
/// ```
/// use raftkit::{Entry, LogIndex, LogStore, Term};
/// use raftkit_lmdb::{LmdbConfig, LmdbStore};
///
/// let dir = tempfile::tempdir().unwrap();
/// let log = LmdbStore::open(dir.path(), LmdbConfig::default())?.log();
/// log.append(&[Entry::command(LogIndex(1), Term(1), "x".into())])?;
/// drop(log);
/// let log = LmdbStore::open(dir.path(), LmdbConfig::default())?.log();
/// assert_eq!(log.last_index()?, LogIndex(1));
/// # Ok::<(), raftkit::StorageError>(())
/// ```
#[derive(Clone)]
pub struct LmdbStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    // Declared (so dropped) before `_lock`: the environment closes before the
    // directory is unlocked.
    pub(crate) env: Env<WithoutTls>,
    pub(crate) log: Db,
    pub(crate) stable: Db,
    pub(crate) dir: PathBuf,
    /// `data.mdb`'s path as text, for error messages.
    pub(crate) file: String,
    /// Read transactions hold it shared; growing the map holds it exclusively.
    gate: RwLock<()>,
    /// Set when growing the map failed: LMDB has then unmapped the file and
    /// cannot map it again, so nothing may touch the environment (not even
    /// `info`, which reads the meta pages through the lost map) until the
    /// store is dropped and reopened.
    map_lost: AtomicBool,
    /// Serialises writers. Holds why the store stopped after a failed commit:
    /// LMDB may then be unable to tell what reached the disk, so it takes no
    /// more writes.
    writer: Mutex<Option<String>>,
    _lock: DirLock,
}

impl LmdbStore {
    /// Opens (creating if needed) the store in `dir`.
    ///
    /// Before LMDB maps `data.mdb`, the store reads every live page once to
    /// check the file's structure (about 0.1 s for 280 MiB and a million
    /// entries from the page cache; a cold disk adds the read time).
    ///
    /// # Errors
    /// `Invalid` for bad settings; `Locked` if another store has `dir` open;
    /// `Corrupt` if the data file fails LMDB's checks or the log has a hole;
    /// `Io` otherwise.
    pub fn open(dir: impl AsRef<Path>, config: LmdbConfig) -> StorageResult<LmdbStore> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| StorageError::io("creating directory", dir.display(), e))?;
        let lock = DirLock::acquire(&dir, LOCK_FILE)?;
        let file = dir.join(DATA_FILE).display().to_string();
        if config.sync == SyncPolicy::None {
            tracing::warn!(
                dir = %dir.display(),
                "LMDB store opened with SyncPolicy::None: commits are NOT durable on return; \
                 a power loss can lose acknowledged Raft writes. Use it for benchmarks only."
            );
        }
        // LMDB trusts the pages it maps; check their structure first.
        verify::check(&dir.join(DATA_FILE))?;
        let env = open_env(&dir, &file, &config)?;
        let (log, stable) = create_databases(&env, &file)?;
        let store = LmdbStore {
            inner: Arc::new(Inner {
                env,
                log,
                stable,
                dir,
                file,
                gate: RwLock::new(()),
                map_lost: AtomicBool::new(false),
                writer: Mutex::new(None),
                _lock: lock,
            }),
        };
        store.check_log()?;
        Ok(store)
    }

    /// The log, as a [`LogStore`](raftkit::LogStore).
    pub fn log(&self) -> LmdbLogStore {
        LmdbLogStore {
            store: self.clone(),
        }
    }

    /// The stable store, as a [`StableStore`](raftkit::StableStore).
    pub fn stable(&self) -> LmdbStableStore {
        LmdbStableStore {
            store: self.clone(),
        }
    }

    /// The directory the store lives in.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = raftkit_lmdb::LmdbStore::open(dir.path(), Default::default())?;
    /// assert_eq!(store.dir(), dir.path());
    /// # Ok::<(), raftkit::StorageError>(())
    /// ```
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The current size of the memory map in bytes: the configured
    /// `map_size`, or more after the store grew it.
    ///
    /// ```
    /// use raftkit_lmdb::{LmdbConfig, LmdbStore};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = LmdbStore::open(dir.path(), LmdbConfig { map_size: 8 << 20, ..Default::default() })?;
    /// assert_eq!(store.map_size(), 8 << 20);
    /// # Ok::<(), raftkit::StorageError>(())
    /// ```
    ///
    /// Zero after a failed attempt to grow the map, which leaves the store
    /// unusable until it is reopened.
    pub fn map_size(&self) -> u64 {
        let _gate = self.inner.gate.read();
        if self.inner.map_lost.load(Ordering::Acquire) {
            return 0;
        }
        self.inner.env.info().map_size as u64
    }

    /// Checks on open that the log's keys are contiguous (their count matches
    /// their span) and that its first and last entries decode.
    fn check_log(&self) -> StorageResult<()> {
        let inner = &*self.inner;
        self.read(|txn| {
            let (first, last) = bounds(inner, txn)?;
            let count = inner.log.len(txn).map_err(|e| inner.err("counting", e))?;
            let span = if last == 0 { 0 } else { last - first + 1 };
            if count != span {
                return Err(StorageError::Corrupt(format!(
                    "{}: the log holds {count} entries between index {first} and {last}; \
                     a contiguous log would hold {span} (a hole, or damaged keys)",
                    inner.file
                )));
            }
            for index in [first, last].into_iter().filter(|&i| i != 0) {
                read_entry(inner, txn, index)?;
            }
            Ok(())
        })
    }

    /// Runs `f` in a read transaction under the shared gate.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&RoTxn<'_>) -> StorageResult<T>,
    ) -> StorageResult<T> {
        let inner = &*self.inner;
        let _gate = inner.gate.read().map_err(|_| poisoned())?;
        if inner.map_lost.load(Ordering::Acquire) {
            return Err(map_lost(inner));
        }
        let txn = inner
            .env
            .read_txn()
            .map_err(|e| inner.err("starting a read transaction", e))?;
        f(&txn)
    }

    /// Runs `f` in a write transaction and commits it. If the map is full,
    /// grows it by at least `2 * bytes` and tries once more. A failed commit
    /// stops the store.
    pub(crate) fn write<T>(
        &self,
        what: &str,
        bytes: usize,
        f: impl Fn(&Inner, &mut RwTxn<'_>) -> StorageResult<T>,
    ) -> StorageResult<T> {
        let inner = &*self.inner;
        let mut broken = inner.writer.lock().map_err(|_| poisoned())?;
        if let Some(why) = &*broken {
            return Err(StorageError::Other(format!(
                "store in {} stopped after an earlier failure: {why}",
                inner.dir.display()
            )));
        }
        match attempt(inner, what, &f) {
            Err(Attempt::MapFull) => {}
            Err(Attempt::Failed(e)) => return Err(e),
            Err(Attempt::CommitFailed(e)) => {
                *broken = Some(e.to_string());
                return Err(e);
            }
            Ok(v) => return Ok(v),
        }
        let grown = match self.grow_map(bytes) {
            Ok(size) => size,
            Err(e) => {
                if inner.map_lost.load(Ordering::Acquire) {
                    *broken = Some(e.to_string());
                }
                return Err(e);
            }
        };
        match attempt(inner, what, &f) {
            Ok(v) => Ok(v),
            Err(Attempt::MapFull) => Err(full(inner, grown)),
            Err(Attempt::Failed(e)) => Err(e),
            Err(Attempt::CommitFailed(e)) => {
                *broken = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Grows the memory map to hold at least `2 * bytes` more; returns the
    /// new size. Called with the writer lock held and no write transaction.
    fn grow_map(&self, bytes: usize) -> StorageResult<u64> {
        let inner = &*self.inner;
        let current = inner.env.info().map_size as u64;
        let want = current
            .saturating_mul(2)
            .max(current.saturating_add((bytes as u64).saturating_mul(2)));
        let new = want
            .div_ceil(MIN_MAP_SIZE_BYTES)
            .saturating_mul(MIN_MAP_SIZE_BYTES);
        let new_usize = usize::try_from(new).map_err(|_| full(inner, current))?;
        // Wait for every read transaction to end, and keep new ones out.
        let _gate = inner.gate.write().map_err(|_| poisoned())?;
        #[allow(unsafe_code)]
        // SAFETY: LMDB permits `mdb_env_set_mapsize` on an open environment
        // while this process has no transaction open. Writers are excluded by
        // the writer lock our caller holds (its own transaction has ended),
        // readers by the exclusive gate: every read transaction of this store
        // is opened and ended under the shared gate. No other process has
        // the environment open (the directory lock).
        let resized = unsafe { inner.env.resize(new_usize) };
        if resized.is_err() {
            // LMDB unmapped the file before it failed to map it again, and
            // keeps no map to fall back to.
            inner.map_lost.store(true, Ordering::Release);
        }
        match resized {
            Ok(()) => {
                tracing::info!(
                    dir = %inner.dir.display(),
                    from = current,
                    to = new,
                    "LMDB map was full; grew it"
                );
                Ok(new)
            }
            Err(e) => {
                tracing::error!(
                    dir = %inner.dir.display(),
                    error = %e,
                    "growing the LMDB map failed; the store must be reopened"
                );
                Err(StorageError::Full(format!(
                    "the LMDB map of {} is full at {current} bytes and growing it to {new} \
                     failed ({e}); raise LmdbConfig::map_size (or the process's address-space \
                     limit) and reopen the store",
                    inner.dir.display()
                )))
            }
        }
    }
}

/// How one attempt of a write went wrong.
enum Attempt {
    /// The map is full; nothing was written.
    MapFull,
    /// An error before the commit; nothing was written.
    Failed(StorageError),
    /// The commit failed; what reached the disk is unknown.
    CommitFailed(StorageError),
}

fn attempt<T>(
    inner: &Inner,
    what: &str,
    f: &impl Fn(&Inner, &mut RwTxn<'_>) -> StorageResult<T>,
) -> Result<T, Attempt> {
    let mut txn = inner
        .env
        .write_txn()
        .map_err(|e| classify(inner, what, e))?;
    // `Inner::err` maps LMDB's MDB_MAP_FULL, and only it, to `Full`.
    let value = f(inner, &mut txn).map_err(|e| match e {
        StorageError::Full(_) => Attempt::MapFull,
        e => Attempt::Failed(e),
    })?;
    txn.commit().map_err(|e| match e {
        heed::Error::Mdb(MdbError::MapFull) => Attempt::MapFull,
        e => Attempt::CommitFailed(inner.err(what, e)),
    })?;
    Ok(value)
}

fn classify(inner: &Inner, what: &str, e: heed::Error) -> Attempt {
    match e {
        heed::Error::Mdb(MdbError::MapFull) => Attempt::MapFull,
        e => Attempt::Failed(inner.err(what, e)),
    }
}

fn full(inner: &Inner, size: u64) -> StorageError {
    StorageError::Full(format!(
        "the LMDB map of {} is full at {size} bytes and could not grow; \
         raise LmdbConfig::map_size or free disk space",
        inner.dir.display()
    ))
}

fn map_lost(inner: &Inner) -> StorageError {
    StorageError::Other(format!(
        "the LMDB map of {} was lost when growing it failed; reopen the store",
        inner.dir.display()
    ))
}

fn poisoned() -> StorageError {
    StorageError::Other("lmdb store: a thread panicked while holding the store's lock".into())
}

impl Inner {
    /// Maps a heed error met while doing `what`.
    pub(crate) fn err(&self, what: &str, e: heed::Error) -> StorageError {
        match e {
            heed::Error::Io(e) => StorageError::io(what.to_owned(), &self.file, e),
            heed::Error::Mdb(MdbError::MapFull) => full(self, self.env.info().map_size as u64),
            heed::Error::Mdb(m) if is_damage(&m) => {
                StorageError::Corrupt(format!("{}: {what}: {m}", self.file))
            }
            heed::Error::Decoding(e) | heed::Error::Encoding(e) => {
                StorageError::Corrupt(format!("{}: {what}: {e}", self.file))
            }
            e => StorageError::Other(format!("{}: {what}: {e}", self.file)),
        }
    }
}

/// LMDB errors that mean the file is damaged (or not an LMDB file).
fn is_damage(e: &MdbError) -> bool {
    matches!(
        e,
        MdbError::PageNotFound
            | MdbError::Corrupted
            | MdbError::Panic
            | MdbError::VersionMismatch
            | MdbError::Invalid
            | MdbError::Incompatible
            | MdbError::PageFull
            | MdbError::BadValSize
            | MdbError::Problem
    )
}

fn open_env(dir: &Path, file: &str, config: &LmdbConfig) -> StorageResult<Env<WithoutTls>> {
    let map_size = usize::try_from(config.map_size)
        .map_err(|_| StorageError::Invalid(format!("map_size {} too large", config.map_size)))?;
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options.map_size(map_size).max_dbs(2);
    if config.sync == SyncPolicy::None {
        #[allow(unsafe_code)]
        // SAFETY: `NO_SYNC` is "unsafe" in heed's sense that a crash can lose
        // or (without a journaling file system) damage recent commits; it
        // cannot cause memory unsafety. It is opt-in, documented as for
        // benchmarks only, and warned about at open.
        unsafe {
            options.flags(heed::EnvFlags::NO_SYNC);
        }
    }
    #[allow(unsafe_code)]
    // SAFETY: memory-mapping `data.mdb` is sound as long as nothing else
    // changes the file while it is mapped. We hold the directory lock, so no
    // other raftkit store (in this process or another) opens it, and LMDB's
    // own lock file keeps its readers and writers coordinated.
    let opened = unsafe { options.open(dir) };
    opened.map_err(|e| match e {
        heed::Error::EnvAlreadyOpened => {
            StorageError::Locked(format!("{} is already open in this process", dir.display()))
        }
        heed::Error::Mdb(m) if is_damage(&m) => {
            StorageError::Corrupt(format!("{file}: opening the LMDB environment: {m}"))
        }
        heed::Error::Io(e) => StorageError::io("opening the LMDB environment", file, e),
        e => StorageError::Other(format!("{file}: opening the LMDB environment: {e}")),
    })
}

fn create_databases(env: &Env<WithoutTls>, file: &str) -> StorageResult<(Db, Db)> {
    let fail = |what: &str, e: heed::Error| match e {
        heed::Error::Io(e) => StorageError::io(what.to_owned(), file, e),
        heed::Error::Mdb(m) if is_damage(&m) => {
            StorageError::Corrupt(format!("{file}: {what}: {m}"))
        }
        e => StorageError::Other(format!("{file}: {what}: {e}")),
    };
    let mut txn = env
        .write_txn()
        .map_err(|e| fail("starting a write transaction", e))?;
    let log = env
        .create_database(&mut txn, Some(LOG_DB))
        .map_err(|e| fail("opening the log database", e))?;
    let stable = env
        .create_database(&mut txn, Some(STABLE_DB))
        .map_err(|e| fail("opening the stable database", e))?;
    txn.commit()
        .map_err(|e| fail("committing the databases", e))?;
    Ok((log, stable))
}

/// The (first, last) index of the log, or (0, 0) when empty.
pub(crate) fn bounds(inner: &Inner, txn: &RoTxn<'_>) -> StorageResult<(u64, u64)> {
    let first = inner
        .log
        .first(txn)
        .map_err(|e| inner.err("reading the first log key", e))?;
    let last = inner
        .log
        .last(txn)
        .map_err(|e| inner.err("reading the last log key", e))?;
    match (first, last) {
        (Some((f, _)), Some((l, _))) => {
            let (f, l) = (key_index(f)?, key_index(l)?);
            if f > l || f == 0 {
                return Err(StorageError::Corrupt(format!(
                    "{}: log keys out of order (first {f}, last {l})",
                    inner.file
                )));
            }
            Ok((f, l))
        }
        _ => Ok((0, 0)),
    }
}

fn read_entry(inner: &Inner, txn: &RoTxn<'_>, index: u64) -> StorageResult<Entry> {
    let value = inner
        .log
        .get(txn, &index_key(index))
        .map_err(|e| inner.err("reading a log entry", e))?
        .ok_or_else(|| {
            StorageError::Corrupt(format!("{}: log entry {index} is missing", inner.file))
        })?;
    decode_log_value(index, value, &inner.file)
}

/// Checks that `entries` can follow a log ending at `last`.
pub(crate) fn check_batch(entries: &[Entry], first: u64, last: u64) -> StorageResult<()> {
    let start = entries[0].index.0;
    if start == 0 {
        return Err(StorageError::Invalid("an entry with index 0".into()));
    }
    if last != 0 && start != last + 1 {
        return Err(StorageError::Invalid(format!(
            "the batch starts at index {start}; the log holds {first}..={last}, so it must start at {}",
            last + 1
        )));
    }
    for (k, pair) in entries.windows(2).enumerate() {
        if pair[1].index.0 != pair[0].index.0 + 1 {
            return Err(StorageError::Invalid(format!(
                "the batch is not contiguous: entry {} has index {} after {}",
                k + 1,
                pair[1].index,
                pair[0].index
            )));
        }
    }
    Ok(())
}

impl fmt::Debug for LmdbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LmdbStore")
            .field("dir", &self.inner.dir)
            .field("map_size", &self.map_size())
            .finish()
    }
}
