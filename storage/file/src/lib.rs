//! File storage for raftkit: a segmented write-ahead log, a stable store and
//! a snapshot store, each in a directory of its own (or all in one).
//!
//! What it is: durable implementations of [`raftkit::storage`]'s traits on
//! plain files, with a CRC32C on every log record, metadata file and
//! snapshot, `fsync` where the contracts say "durable on return", and crash
//! recovery on open.
//!
//! ```text
//!   driver I/O thread ──append(batch)──▶ FileLogStore ──pwrite + fdatasync──▶ NNNN.wal
//!                     ──set(key)───────▶ FileStableStore ── tmp, fsync, rename, fsync dir
//!                     ──create/finish──▶ FileSnapshotStore ── <id>.tmp/ ──rename──▶ <id>/
//! ```
//!
//! Log segments are preallocated by default ([`FileLogOptions::preallocate`]):
//! each is created at its full size, zero-filled with real writes and synced
//! before it is used, so an append is an overwrite and its `fdatasync` commits
//! data, not the file's growth. A background thread keeps the next segment
//! ready. The log therefore takes up to (segments + 1 spare) x
//! `segment_size_bytes` of disk (64 MiB each by default), however little it
//! holds; purging frees whole segments. A segment's records end at the first
//! zero length field; the recovery rules are in the `segment` module's source.
//!
//! What it is not: a database. The log keeps an index of record offsets in
//! memory (8 bytes per entry) and reads entries from the files on demand; the
//! stable store keeps all its values in memory and rewrites one small file on
//! every `set`. Each store locks its directory, so two processes cannot open
//! the same store.
//!
//! ```
//! use raftkit::{Entry, HardState, LogIndex, LogStore, StableStore, Term};
//! use raftkit_file::{FileLogStore, FileSnapshotStore, FileStableStore};
//!
//! let data = tempfile::tempdir().unwrap();
//! let log = FileLogStore::open(data.path().join("log"), Default::default())?;
//! let stable = FileStableStore::open(data.path().join("stable"))?;
//! let snapshots = FileSnapshotStore::open(data.path().join("snapshots"), 2)?;
//! log.append(&[Entry::command(LogIndex(1), Term(1), "x".into())])?;
//! stable.save_hard_state(&HardState { term: Term(1), vote: None })?;
//! # drop(snapshots);
//! # Ok::<(), raftkit::StorageError>(())
//! ```

mod fsutil;
mod segment;
mod snapshot;
mod stable;
mod wal;

pub use snapshot::FileSnapshotStore;
pub use stable::FileStableStore;
pub use wal::{FileLogOptions, FileLogStore, MIN_SEGMENT_SIZE_BYTES};
