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
//! read of a damaged value is `StorageError::Corrupt`, never wrong bytes.
//! LMDB also trusts the page *structure* it maps, and some damage to page
//! or node headers would crash it inside C; so before mapping the file, the
//! store walks every reachable page with plain reads and checks what LMDB
//! relies on (page numbers, types, bounds, node offsets, overflow pages,
//! entry counts), refusing a damaged file as `StorageError::Corrupt`. That
//! costs one read of the file's live pages at open.
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
mod verify;

pub use config::{LmdbConfig, SyncPolicy, MIN_MAP_SIZE_BYTES};
pub use log::LmdbLogStore;
pub use stable::LmdbStableStore;
pub use store::LmdbStore;
