//! In-memory stores for raftkit: a log, a stable store, a snapshot store and a
//! discard snapshot store.
//!
//! What it is: the storage plug-ins of [`raftkit::storage`] kept in process
//! memory, for tests, simulations, examples and nodes that can afford to lose
//! everything on exit. Every store is `Clone`, and clones share one state
//! behind an `Arc`, so a simulated restart can "reopen the same disk" by
//! handing a clone to the new node:
//!
//! ```text
//!   node A ──▶ MemLogStore ──clone──▶ node A' (after a simulated crash)
//!                   └── Arc<RwLock<log>> ──┘   one "disk", two handles
//! ```
//!
//! What it is not: durable. "Durable on return" in the trait contracts means
//! "visible to every clone on return" here; a process exit loses everything.
//! It also does not model lost unsynced writes; a crash simulation that needs
//! that wraps these stores.
//!
//! ```
//! use raftkit::{Entry, LogIndex, LogStore, Term};
//! use raftkit_memory::MemLogStore;
//!
//! let log = MemLogStore::new();
//! log.append(&[Entry::command(LogIndex(1), Term(1), "x".into())])?;
//! let after_restart = log.clone();
//! assert_eq!(after_restart.last_index()?, LogIndex(1));
//! # Ok::<(), raftkit::StorageError>(())
//! ```

mod log;
mod snapshot;
mod stable;

pub use log::MemLogStore;
pub use snapshot::{DiscardSnapshotStore, MemSnapshotStore};
pub use stable::MemStableStore;

use raftkit::StorageError;

/// The error for a lock that a panicking thread left poisoned: the state may
/// be half-updated, so the store refuses to go on.
fn poisoned(store: &str) -> StorageError {
    StorageError::Other(format!(
        "{store}: a thread panicked while holding the store's lock"
    ))
}
