//! LMDB storage for raftkit: the log and the stable store of a node in one
//! LMDB environment (through [heed]).
//!
//! What it is: a durable [`LogStore`](raftkit::LogStore) ([`LmdbLogStore`])
//! and [`StableStore`](raftkit::StableStore) ([`LmdbStableStore`]) on LMDB's
//! copy-on-write B-tree, both views of one [`LmdbStore`].
//! Each `append`, `truncate_suffix`, `purge_prefix` and `set` is one write
//! transaction, and a committed transaction is durable (with the default
//! [`SyncPolicy::Always`]). Readers run in read transactions, so they see
//! whole batches or nothing of them and never wait for a writer.
//!
//! ```text
//!   driver I/O thread ──append(batch)──▶ LmdbStore ──one write txn──▶ dir/data.mdb
//!                                           │        (commit = fdatasync of data, then of meta)
//!                     ──set(key)──────────▶ │   log db:    key = index as big-endian u64
//!                                           │              value = CRC32C | wire::encode_entry
//!   readers ──get(range)──▶ read txn ───────┘   stable db: key = the key's UTF-8 bytes
//!                                                          value = CRC32C | value
//! ```
//!
//! LMDB keeps no checksums of its own, so each value carries a CRC32C and a
//! read of a damaged value is `StorageError::Corrupt`, never wrong bytes; on
//! open the store also checks that the log's keys are contiguous. LMDB does
//! trust the page *structure* it maps, though: some damage to page or node
//! headers can crash the process inside LMDB instead of returning an error
//! (1 of 300 seeded random damages in `tests/corruption.rs`). The file
//! backend, which reads through `read` and checks every record, has no such
//! case.
//!
//! What it is not: a snapshot store. Nodes on LMDB keep snapshots with
//! `raftkit_file::FileSnapshotStore` (in a directory of its own, e.g.
//! `<data>/snapshots`). Nor is it a store to share: the directory is locked
//! while open, so a second process (or a second open in this one) gets
//! `StorageError::Locked`.
//!
//! ```
//! use raftkit::{Entry, HardState, LogIndex, LogStore, StableStore, Term};
//! use raftkit_lmdb::{LmdbConfig, LmdbStore};
//!
//! let data = tempfile::tempdir().unwrap();
//! let store = LmdbStore::open(data.path().join("lmdb"), LmdbConfig::default())?;
//! // The driver takes the log and the stable store separately.
//! let (log, stable) = (store.log(), store.stable());
//! log.append(&[Entry::command(LogIndex(1), Term(1), "x".into())])?;
//! stable.save_hard_state(&HardState { term: Term(1), vote: None })?;
//! # Ok::<(), raftkit::StorageError>(())
//! ```

mod codec;
mod config;
mod lock;
mod log;
mod stable;
mod store;

pub use config::{LmdbConfig, SyncPolicy, MIN_MAP_SIZE_BYTES};
pub use log::LmdbLogStore;
pub use stable::LmdbStableStore;
pub use store::LmdbStore;
