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
//! ```
//! # // A toy store is enough to show the calling convention.
//! use raftkit::testing::storage::sample_entries;
//! let entries = sample_entries(1..=3, 1);
//! assert_eq!(entries.len(), 3);
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
