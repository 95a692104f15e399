//! Runs raftkit's storage conformance suites against the LMDB store, with
//! the default map and with a small map that must grow during the suites.

use std::path::Path;

use raftkit::testing::storage::{
    durable_log_store_suite, durable_stable_store_suite, log_store_suite, stable_store_suite,
};
use raftkit::StorageError;
use raftkit_lmdb::{LmdbConfig, LmdbLogStore, LmdbStableStore, LmdbStore, MIN_MAP_SIZE_BYTES};

fn must<T>(r: Result<T, StorageError>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn small_map() -> LmdbConfig {
    LmdbConfig {
        map_size: MIN_MAP_SIZE_BYTES,
        ..LmdbConfig::default()
    }
}

/// A fresh store in a temporary directory that lives as long as the test.
fn fresh(dirs: &mut Vec<tempfile::TempDir>, config: LmdbConfig) -> LmdbStore {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let store = must(LmdbStore::open(dir.path(), config), "open");
    dirs.push(dir);
    store
}

fn open(p: &Path, config: LmdbConfig) -> LmdbStore {
    must(LmdbStore::open(p, config), "open")
}

fn log(store: LmdbStore) -> LmdbLogStore {
    store.log()
}

fn stable(store: LmdbStore) -> LmdbStableStore {
    store.stable()
}

#[test]
fn lmdb_store_passes_the_log_suite() {
    let mut dirs = Vec::new();
    log_store_suite(|| log(fresh(&mut dirs, LmdbConfig::default())));
}

#[test]
fn lmdb_store_passes_the_log_suite_with_a_map_that_must_grow() {
    let mut dirs = Vec::new();
    log_store_suite(|| log(fresh(&mut dirs, small_map())));
}

#[test]
fn lmdb_store_passes_the_restart_suite() {
    durable_log_store_suite(|p| log(open(p, LmdbConfig::default())));
}

#[test]
fn lmdb_store_passes_the_restart_suite_with_a_map_that_must_grow() {
    durable_log_store_suite(|p| log(open(p, small_map())));
}

#[test]
fn lmdb_store_passes_the_stable_suites() {
    let mut dirs = Vec::new();
    stable_store_suite(|| stable(fresh(&mut dirs, LmdbConfig::default())));
    durable_stable_store_suite(|p| stable(open(p, LmdbConfig::default())));
}

#[test]
fn lmdb_store_passes_the_stable_suites_with_a_map_that_must_grow() {
    let mut dirs = Vec::new();
    stable_store_suite(|| stable(fresh(&mut dirs, small_map())));
    durable_stable_store_suite(|p| stable(open(p, small_map())));
}
