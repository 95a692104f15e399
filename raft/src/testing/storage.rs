//! The storage conformance suites: one generic suite per trait, written once,
//! run by every backend against itself.
//!
//! ```text
//!   backend crate's tests/conformance.rs
//!        │  log_store_suite(|| MyLog::new())
//!        ▼
//!   raftkit::testing::storage ── one check per contract clause ──▶ panics naming the clause
//! ```
//!
//! The plain suites take a closure that makes a fresh, empty store. The
//! `durable_*` suites take a closure that opens a store in a directory; they
//! drop every handle to a store before opening the same directory again, as a
//! restarted process would. Each check is a function of its own, so a failure
//! names the rule that broke.
//!
//! A backend's `tests/conformance.rs` runs each suite that applies:
//!
//! ```
//! use raftkit::testing::storage::{log_store_suite, snapshot_store_suite, stable_store_suite};
//! use raftkit_memory::{MemLogStore, MemSnapshotStore, MemStableStore};
//!
//! log_store_suite(MemLogStore::new);
//! stable_store_suite(MemStableStore::new);
//! snapshot_store_suite(|| MemSnapshotStore::new(2).expect("retain 2 is valid"), 2);
//! ```

mod log;
mod snapshot;
mod stable;

pub use log::{durable_log_store_suite, log_store_suite, sample_entries};
pub use snapshot::{
    durable_snapshot_store_suite, snapshot_corruption_check, snapshot_point, snapshot_store_suite,
};
pub use stable::{durable_stable_store_suite, stable_store_suite};

use crate::storage::StorageResult;

/// Unwraps a storage result, or fails the test saying what was being done.
#[track_caller]
fn ok<T>(result: StorageResult<T>, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected storage error: {e}"),
    }
}

/// A fresh temporary directory for a durable check.
fn temp_dir(check: &str) -> tempfile::TempDir {
    match tempfile::Builder::new()
        .prefix(&format!("raftkit-{check}-"))
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => panic!("{check}: cannot create a temporary directory: {e}"),
    }
}
