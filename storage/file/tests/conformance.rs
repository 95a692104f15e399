//! Runs raftkit's storage conformance suites against the file stores.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use raftkit::testing::storage::{
    durable_log_store_suite, durable_snapshot_store_suite, durable_stable_store_suite,
    log_store_suite, snapshot_corruption_check, snapshot_store_suite, stable_store_suite,
};
use raftkit::{SnapshotMeta, StorageError};
use raftkit_file::{FileLogOptions, FileLogStore, FileSnapshotStore, FileStableStore};

fn must<T>(r: Result<T, StorageError>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn small_segments() -> FileLogOptions {
    FileLogOptions {
        segment_size_bytes: 64 << 10,
        ..FileLogOptions::default()
    }
}

/// A fresh store in a temporary directory that lives as long as the test.
fn fresh<S>(dirs: &mut Vec<tempfile::TempDir>, open: impl Fn(&Path) -> S) -> S {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let store = open(dir.path());
    dirs.push(dir);
    store
}

#[test]
fn file_log_store_passes_the_log_suite_with_small_segments() {
    let mut dirs = Vec::new();
    log_store_suite(|| {
        fresh(&mut dirs, |p| {
            must(FileLogStore::open(p, small_segments()), "open")
        })
    });
}

#[test]
fn file_log_store_passes_the_log_suite_with_default_segments() {
    let mut dirs = Vec::new();
    log_store_suite(|| {
        fresh(&mut dirs, |p| {
            must(FileLogStore::open(p, FileLogOptions::default()), "open")
        })
    });
}

#[test]
fn file_log_store_passes_the_restart_suite_with_small_segments() {
    durable_log_store_suite(|p| must(FileLogStore::open(p, small_segments()), "open"));
}

#[test]
fn file_log_store_passes_the_restart_suite_with_default_segments() {
    durable_log_store_suite(|p| must(FileLogStore::open(p, FileLogOptions::default()), "open"));
}

#[test]
fn file_stable_store_passes_the_stable_suites() {
    let mut dirs = Vec::new();
    stable_store_suite(|| fresh(&mut dirs, |p| must(FileStableStore::open(p), "open")));
    durable_stable_store_suite(|p| must(FileStableStore::open(p), "open"));
}

#[test]
fn file_snapshot_store_passes_the_snapshot_suite_for_several_retains() {
    for retain in [1, 2, 3] {
        let mut dirs = Vec::new();
        snapshot_store_suite(
            || {
                fresh(&mut dirs, |p| {
                    must(FileSnapshotStore::open(p, retain), "open")
                })
            },
            retain,
        );
    }
}

#[test]
fn file_snapshot_store_passes_the_restart_suite() {
    durable_snapshot_store_suite(|p| must(FileSnapshotStore::open(p, 2), "open"));
}

fn snapshot_file(dir: &Path, meta: &SnapshotMeta, name: &str) -> std::fs::File {
    let path = dir.join(&meta.id.0).join(name);
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

#[test]
fn a_flipped_byte_in_snapshot_data_is_detected() {
    snapshot_corruption_check(
        |p| must(FileSnapshotStore::open(p, 2), "open"),
        |dir, meta| {
            let mut f = snapshot_file(dir, meta, "state.bin");
            f.seek(SeekFrom::Start(meta.size / 2)).expect("seek");
            f.write_all(&[0x5a ^ 0xff]).expect("flipping a byte");
        },
    );
}

#[test]
fn a_cut_snapshot_data_file_is_detected() {
    snapshot_corruption_check(
        |p| must(FileSnapshotStore::open(p, 2), "open"),
        |dir, meta| {
            snapshot_file(dir, meta, "state.bin")
                .set_len(meta.size - 1)
                .expect("cutting")
        },
    );
}

#[test]
fn a_flipped_byte_in_snapshot_metadata_is_detected() {
    snapshot_corruption_check(
        |p| must(FileSnapshotStore::open(p, 2), "open"),
        |dir, meta| {
            let mut f = snapshot_file(dir, meta, "meta.bin");
            f.seek(SeekFrom::Start(24)).expect("seek");
            f.write_all(&[0xee]).expect("flipping a byte");
        },
    );
}
