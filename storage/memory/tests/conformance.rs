//! Runs raftkit's storage conformance suites against the memory stores.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use raftkit::testing::storage::{
    durable_log_store_suite, durable_snapshot_store_suite, durable_stable_store_suite,
    log_store_suite, snapshot_point, snapshot_store_suite, stable_store_suite,
};
use raftkit::{SnapshotStore, StorageError};
use raftkit_memory::{DiscardSnapshotStore, MemLogStore, MemSnapshotStore, MemStableStore};

/// A "disk" per directory: reopening a path hands back a clone sharing the
/// state, as a simulated restart does.
fn disks<S: Clone>(new: impl Fn() -> S) -> impl FnMut(&Path) -> S {
    let mut by_path: HashMap<PathBuf, S> = HashMap::new();
    move |path| {
        by_path
            .entry(path.to_path_buf())
            .or_insert_with(&new)
            .clone()
    }
}

fn mem_snapshots(retain: usize) -> MemSnapshotStore {
    match MemSnapshotStore::new(retain) {
        Ok(s) => s,
        Err(e) => panic!("MemSnapshotStore::new({retain}): {e}"),
    }
}

#[test]
fn mem_log_store_passes_the_log_suite() {
    log_store_suite(MemLogStore::new);
}

#[test]
fn mem_log_store_clones_pass_the_restart_suite() {
    durable_log_store_suite(disks(MemLogStore::new));
}

#[test]
fn mem_stable_store_passes_the_stable_suite() {
    stable_store_suite(MemStableStore::new);
}

#[test]
fn mem_stable_store_clones_pass_the_restart_suite() {
    durable_stable_store_suite(disks(MemStableStore::new));
}

#[test]
fn mem_snapshot_store_passes_the_snapshot_suite_for_several_retains() {
    for retain in [1, 2, 3, 5] {
        snapshot_store_suite(|| mem_snapshots(retain), retain);
    }
}

#[test]
fn mem_snapshot_store_clones_pass_the_restart_suite() {
    durable_snapshot_store_suite(disks(|| mem_snapshots(2)));
}

#[test]
fn mem_snapshot_store_rejects_retain_zero() {
    assert!(
        matches!(MemSnapshotStore::new(0), Err(StorageError::Invalid(_))),
        "retain = 0 should be StorageError::Invalid"
    );
}

#[test]
fn discard_snapshot_store_accepts_writes_and_keeps_nothing() {
    let store = DiscardSnapshotStore::new();
    let data = vec![7u8; 100_000];
    let mut sink = store.create(snapshot_point(10, 2)).expect("create");
    let id = sink.id().clone();
    sink.write_all(&data).expect("writing to a discard sink");
    let meta = sink.finish().expect("finish");
    assert_eq!(meta.id, id, "finish returned another id than the sink's");
    assert_eq!(
        (meta.size, meta.checksum),
        (data.len() as u64, crc32c::crc32c(&data))
    );
    assert!(
        store.list().expect("list").is_empty(),
        "a discard store should list nothing"
    );
    assert!(
        matches!(store.open(&meta.id), Err(StorageError::SnapshotNotFound(got)) if got == meta.id),
        "open on a discard store should be SnapshotNotFound"
    );
    let other = store.create(snapshot_point(10, 2)).expect("create");
    assert_ne!(
        other.id(),
        &id,
        "two snapshots of one point got the same id"
    );
    other.cancel().expect("cancel");
}
