//! The storage plug-in traits: the log, the stable store and snapshots.
//!
//! All three are synchronous. The driver calls them from its own I/O thread
//! (never from an async task), batches log appends so that one call covers
//! every proposal waiting (group commit), and treats any error as fatal: a
//! storage error stops the node, it is never retried silently, because a
//! retried write may already have half happened.
//!
//! ```text
//!  core ──Ready{entries, hard_state}──▶ driver I/O thread ──append()──▶ LogStore
//!       ◀──────────on_persisted(index)───────────┘  (only after append returned)
//! ```

use std::fmt;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::types::{Configuration, Entry, LogIndex, NodeId, Term};

/// What went wrong in a storage backend.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An operating-system I/O error, with what was being done and where.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation, e.g. "appending to the log".
        op: String,
        /// The file or directory involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Stored data failed a check; the message names the file, offset and index.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The caller broke the trait's contract (e.g. a gap in appended indexes).
    #[error("invalid use of the store: {0}")]
    Invalid(String),
    /// The store is full and cannot grow; the message names the setting to raise.
    #[error("store is full: {0}")]
    Full(String),
    /// The data directory is held by another process.
    #[error("{0}")]
    Locked(String),
    /// A snapshot that does not exist.
    #[error("no snapshot {0}")]
    SnapshotNotFound(SnapshotId),
    /// Any other backend error.
    #[error("{0}")]
    Other(String),
}

impl StorageError {
    /// An I/O error while doing `op` on `path`.
    pub fn io(op: impl Into<String>, path: impl fmt::Display, source: std::io::Error) -> Self {
        StorageError::Io {
            op: op.into(),
            path: path.to_string(),
            source,
        }
    }
}

/// Result of a storage call.
pub type StorageResult<T> = Result<T, StorageError>;

/// The replicated log (HashiCorp's `LogStore`).
///
/// Indexes are contiguous: the store holds every entry from `first_index` to
/// `last_index`. An empty store reports `LogIndex::ZERO` for both.
pub trait LogStore: Send + Sync + 'static {
    /// The index of the first entry held, or zero when empty.
    ///
    /// # Contract
    /// Reflects every `append`, `truncate_suffix` and `purge_prefix` that returned.
    fn first_index(&self) -> StorageResult<LogIndex>;

    /// The index of the last entry held, or zero when empty.
    ///
    /// # Contract
    /// As for `first_index`.
    fn last_index(&self) -> StorageResult<LogIndex>;

    /// The entries with `from <= index < to` that the store holds, in order.
    ///
    /// # Contract
    /// Returns exactly the held entries of that range, byte for byte as they
    /// were appended. Safe to call from other threads while `append` runs;
    /// a reader sees either all or none of a concurrent batch.
    ///
    /// The driver calls it once, at start-up, for the whole log since the
    /// last compaction (it keeps that tail in memory while running, bounded
    /// by the snapshot threshold and `trailing_logs`), so the result is not
    /// capped in bytes.
    fn get(&self, from: LogIndex, to: LogIndex) -> StorageResult<Vec<Entry>>;

    /// Appends a batch of entries.
    ///
    /// # Contract
    /// `entries` are contiguous; the first is `last_index + 1`, or any index
    /// when the store is empty. **Durable on return**: after `Ok`, a crash
    /// (even `kill -9` or a power loss) loses none of them. On `Err` nothing of
    /// the batch may be assumed durable and the node stops.
    fn append(&self, entries: &[Entry]) -> StorageResult<()>;

    /// Removes every entry with `index >= from` (a conflicting suffix, §5.3).
    ///
    /// # Contract
    /// Durable on return. A crash during the call leaves either the old log
    /// or the truncated one, never a log with a hole.
    fn truncate_suffix(&self, from: LogIndex) -> StorageResult<()>;

    /// Removes every entry with `index <= upto` (compaction after a snapshot).
    ///
    /// # Contract
    /// May remove fewer entries than asked (whole segments only, say), never
    /// more; `first_index` tells what is left. `upto` past the last entry
    /// empties the store; an empty store then takes an `append` at any index
    /// (the snapshot, not the log, remembers where the log stood).
    /// Durable on return. A crash during the call leaves a contiguous log
    /// ending where it ended before: the old one, the purged one, or one in
    /// between — never a hole, and never fewer entries at the tail.
    fn purge_prefix(&self, upto: LogIndex) -> StorageResult<()>;

    /// Whether this store keeps everything in memory, so that its writes
    /// cost no more than a copy. The driver then writes on its own task
    /// instead of handing each batch to an I/O thread and back, which saves
    /// two thread hand-offs per write. Default: false.
    fn is_in_memory(&self) -> bool {
        false
    }
}

/// Term and vote: the state that must survive a restart (Figure 2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this server has seen.
    pub term: Term,
    /// The candidate it voted for in `term`.
    pub vote: Option<NodeId>,
}

/// Small durable values (HashiCorp's `StableStore`): term, vote, and any
/// keyed value a node wants to keep.
pub trait StableStore: Send + Sync + 'static {
    /// Stores `value` under `key`.
    ///
    /// # Contract
    /// Durable on return, and atomic: after a crash `get` returns either the
    /// old value or the new one.
    fn set(&self, key: &str, value: &[u8]) -> StorageResult<()>;

    /// The value stored under `key`, if any.
    fn get(&self, key: &str) -> StorageResult<Option<Vec<u8>>>;

    /// As [`LogStore::is_in_memory`]. Default: false.
    fn is_in_memory(&self) -> bool {
        false
    }

    /// Stores term and vote together in one atomic write.
    fn save_hard_state(&self, state: &HardState) -> StorageResult<()> {
        let bytes = postcard::to_stdvec(state)
            .map_err(|e| StorageError::Other(format!("encoding hard state: {e}")))?;
        self.set(HARD_STATE_KEY, &bytes)
    }

    /// The term and vote last saved, or the zero state.
    fn load_hard_state(&self) -> StorageResult<HardState> {
        match self.get(HARD_STATE_KEY)? {
            None => Ok(HardState::default()),
            Some(bytes) => postcard::from_bytes(&bytes)
                .map_err(|e| StorageError::Corrupt(format!("stable key {HARD_STATE_KEY:?}: {e}"))),
        }
    }
}

/// The stable-store key under which term and vote live.
pub const HARD_STATE_KEY: &str = "raft/hard_state";

/// A snapshot's identity within its store.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SnapshotId(pub String);

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl SnapshotId {
    /// The conventional id of a snapshot: `<term>-<index>-<nonce>`, which sorts
    /// sensibly in a directory listing.
    pub fn for_point(term: Term, index: LogIndex, nonce: u64) -> SnapshotId {
        SnapshotId(format!("{:020}-{:020}-{:016x}", term.0, index.0, nonce))
    }
}

/// What a snapshot holds, and how to check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Its identity in the store that holds it.
    pub id: SnapshotId,
    /// The last log index it covers.
    pub index: LogIndex,
    /// The term of that entry.
    pub term: Term,
    /// The latest configuration at or before `index`.
    pub configuration: Configuration,
    /// The index of that configuration's entry.
    pub configuration_index: LogIndex,
    /// The data's length in bytes.
    pub size: u64,
    /// CRC32C of the data.
    pub checksum: u32,
}

/// What the creator of a snapshot knows before writing its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotPoint {
    /// The last log index it covers.
    pub index: LogIndex,
    /// The term of that entry.
    pub term: Term,
    /// The latest configuration at or before `index`.
    pub configuration: Configuration,
    /// The index of that configuration's entry.
    pub configuration_index: LogIndex,
}

/// Reads a snapshot's data.
pub type SnapshotReader = Box<dyn Read + Send>;

/// Receives a snapshot's data as it is written.
pub trait SnapshotSink: Write + Send {
    /// The id the snapshot will have.
    fn id(&self) -> &SnapshotId;

    /// Completes the snapshot.
    ///
    /// # Contract
    /// Durable on return; only now does `list` show it. Older snapshots beyond
    /// the store's retention may be deleted.
    fn finish(self: Box<Self>) -> StorageResult<SnapshotMeta>;

    /// Abandons the snapshot; nothing of it remains.
    fn cancel(self: Box<Self>) -> StorageResult<()>;
}

/// Where snapshots are kept (HashiCorp's `SnapshotStore`).
pub trait SnapshotStore: Send + Sync + 'static {
    /// Starts a new snapshot for `point`.
    fn create(&self, point: SnapshotPoint) -> StorageResult<Box<dyn SnapshotSink>>;

    /// The complete snapshots held, newest (highest index) first.
    fn list(&self) -> StorageResult<Vec<SnapshotMeta>>;

    /// Opens a complete snapshot for reading.
    ///
    /// # Contract
    /// A backend that can check the data (size, CRC) reports a mismatch as
    /// `StorageError::Corrupt`, from `open` or from the reader, never as good data.
    fn open(&self, id: &SnapshotId) -> StorageResult<(SnapshotMeta, SnapshotReader)>;
}
