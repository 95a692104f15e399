//! The `SnapshotStore` suites.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{ok, temp_dir};
use crate::storage::{SnapshotId, SnapshotMeta, SnapshotPoint, SnapshotStore, StorageError};
use crate::types::{Configuration, LogIndex, Server, Term};

/// A snapshot point at `index` in `term`, with a three-server configuration
/// taken at `index - 1`.
///
/// ```
/// let p = raftkit::testing::storage::snapshot_point(10, 2);
/// assert_eq!((p.index.0, p.term.0, p.configuration_index.0), (10, 2, 9));
/// ```
pub fn snapshot_point(index: u64, term: u64) -> SnapshotPoint {
    SnapshotPoint {
        index: LogIndex(index),
        term: Term(term),
        configuration: Configuration::new(vec![
            Server::voter("n1", "127.0.0.1:7001"),
            Server::voter("n2", "127.0.0.1:7002"),
            Server::nonvoter("n3", "127.0.0.1:7003"),
        ]),
        configuration_index: LogIndex(index.saturating_sub(1)),
    }
}

/// Runs every `SnapshotStore` check, each against a store from `fresh` (which
/// must be empty) that keeps the newest `retain` snapshots.
pub fn snapshot_store_suite<S: SnapshotStore>(mut fresh: impl FnMut() -> S, retain: usize) {
    assert!(
        retain >= 1,
        "the snapshot suite needs a store that retains at least one snapshot"
    );
    finished_snapshot_is_listed_and_opens(&fresh());
    empty_snapshot_round_trips(&fresh());
    large_snapshot_round_trips(&fresh());
    list_is_newest_first(&fresh(), retain);
    retain_keeps_the_newest(&fresh(), retain);
    cancel_leaves_nothing(&fresh());
    unfinished_snapshot_is_not_listed(&fresh());
    open_of_an_unknown_id_is_not_found(&fresh());
    snapshots_of_one_point_get_distinct_ids(&fresh());
}

/// Runs the restart checks: snapshots survive a restart, and a snapshot that
/// was being written when the process died is gone (files and all) after the
/// next open.
///
/// The "process death" is a `std::mem::forget` of the sink: no destructor
/// runs. A sink must therefore not keep its store's directory lock alive
/// (hold a `Weak` or the path, not the store).
pub fn durable_snapshot_store_suite<S: SnapshotStore>(mut open: impl FnMut(&Path) -> S) {
    reopen_lists_and_opens_the_same(&mut open);
    incomplete_snapshot_is_reaped_on_reopen(&mut open);
}

/// Checks that damaged snapshot data is reported, never returned as good.
///
/// Writes a snapshot in a new directory, drops the store, lets `corrupt`
/// damage the backend's files for that snapshot (flip bytes, cut the file),
/// reopens and reads it. `open` of the snapshot must fail with
/// `StorageError::Corrupt`, or its reader must fail with an error that says
/// "corrupt"; reading the data to its end successfully fails the check.
pub fn snapshot_corruption_check<S: SnapshotStore>(
    mut open: impl FnMut(&Path) -> S,
    corrupt: impl FnOnce(&Path, &SnapshotMeta),
) {
    let dir = temp_dir("snapshot-corrupt");
    let data = random_bytes(77, 256 << 10);
    let meta = {
        let s = open(dir.path());
        write_snapshot(&s, snapshot_point(50, 3), &data)
    };
    corrupt(dir.path(), &meta);
    let s = open(dir.path());
    match s.open(&meta.id) {
        Err(StorageError::Corrupt(_)) => {}
        Err(e) if e.to_string().to_lowercase().contains("corrupt") => {}
        Err(e) => panic!("opening a corrupted snapshot: expected StorageError::Corrupt, got: {e}"),
        Ok((_, mut reader)) => {
            let mut got = Vec::new();
            match reader.read_to_end(&mut got) {
                Err(e) => assert!(
                    e.to_string().to_lowercase().contains("corrupt"),
                    "reading a corrupted snapshot failed, but the error does not say corrupt: {e}"
                ),
                Ok(_) => panic!(
                    "a corrupted snapshot was read to its end as good data ({} bytes, {} originally)",
                    got.len(),
                    data.len()
                ),
            }
        }
    }
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    data
}

/// Creates, writes (in uneven pieces) and finishes a snapshot, checking the
/// metadata `finish` returns.
#[track_caller]
fn write_snapshot<S: SnapshotStore>(s: &S, point: SnapshotPoint, data: &[u8]) -> SnapshotMeta {
    let mut sink = ok(s.create(point.clone()), "create");
    let id = sink.id().clone();
    let mut rest = data;
    let mut piece = 1;
    while !rest.is_empty() {
        let n = piece.min(rest.len());
        if let Err(e) = sink.write_all(&rest[..n]) {
            panic!("writing snapshot {id}: {e}");
        }
        rest = &rest[n..];
        piece = piece * 3 + 7;
    }
    if let Err(e) = sink.flush() {
        panic!("flushing snapshot {id}: {e}");
    }
    let meta = ok(sink.finish(), "finish");
    assert_eq!(meta.id, id, "finish returned another id than the sink's");
    assert_eq!(
        (
            meta.index,
            meta.term,
            &meta.configuration,
            meta.configuration_index
        ),
        (
            point.index,
            point.term,
            &point.configuration,
            point.configuration_index
        ),
        "finish returned metadata that differs from the snapshot point"
    );
    assert_eq!(
        meta.size,
        data.len() as u64,
        "meta.size should be the data's length"
    );
    assert_eq!(
        meta.checksum,
        crc32c::crc32c(data),
        "meta.checksum should be the CRC32C of the data"
    );
    meta
}

#[track_caller]
fn assert_opens<S: SnapshotStore>(s: &S, meta: &SnapshotMeta, data: &[u8], when: &str) {
    let (got, mut reader) = ok(s.open(&meta.id), &format!("{when}: open({})", meta.id));
    assert_eq!(
        &got, meta,
        "{when}: open returned other metadata than finish"
    );
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4093];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) => panic!("{when}: reading snapshot {}: {e}", meta.id),
        }
    }
    assert!(
        bytes == data,
        "{when}: snapshot {} read back {} bytes that differ from the {} written",
        meta.id,
        bytes.len(),
        data.len()
    );
}

#[track_caller]
fn assert_listed<S: SnapshotStore>(s: &S, want: &[&SnapshotMeta], when: &str) {
    let got = ok(s.list(), &format!("{when}: list"));
    let want: Vec<SnapshotMeta> = want.iter().map(|m| (*m).clone()).collect();
    assert_eq!(
        got, want,
        "{when}: list should hold exactly these snapshots, newest first"
    );
}

#[track_caller]
fn assert_not_found<S: SnapshotStore>(s: &S, id: &SnapshotId, when: &str) {
    match s.open(id) {
        Err(StorageError::SnapshotNotFound(got)) => {
            assert_eq!(&got, id, "{when}: SnapshotNotFound names another id")
        }
        Err(e) => panic!("{when}: open({id}) should be SnapshotNotFound, got: {e}"),
        Ok(_) => panic!("{when}: open({id}) should be SnapshotNotFound, but it opened"),
    }
}

fn finished_snapshot_is_listed_and_opens<S: SnapshotStore>(s: &S) {
    let data = random_bytes(1, 300 << 10);
    let meta = write_snapshot(s, snapshot_point(100, 4), &data);
    assert_listed(s, &[&meta], "after one snapshot");
    assert_opens(s, &meta, &data, "after one snapshot");
    assert_opens(s, &meta, &data, "opening the same snapshot twice");
}

fn empty_snapshot_round_trips<S: SnapshotStore>(s: &S) {
    let meta = write_snapshot(s, snapshot_point(1, 1), &[]);
    assert_listed(s, &[&meta], "after an empty snapshot");
    assert_opens(s, &meta, &[], "an empty snapshot");
}

fn large_snapshot_round_trips<S: SnapshotStore>(s: &S) {
    let data = random_bytes(2, 5 << 20);
    let meta = write_snapshot(s, snapshot_point(9_000, 7), &data);
    assert_opens(s, &meta, &data, "a 5 MiB snapshot");
}

fn list_is_newest_first<S: SnapshotStore>(s: &S, retain: usize) {
    let mut made = Vec::new();
    for (index, seed) in [(20, 20), (40, 40), (30, 30)] {
        let data = random_bytes(seed, 1000 + index as usize);
        made.push((write_snapshot(s, snapshot_point(index, 2), &data), data));
    }
    made.sort_by_key(|(m, _)| std::cmp::Reverse(m.index));
    made.truncate(retain);
    let want: Vec<&SnapshotMeta> = made.iter().map(|(m, _)| m).collect();
    assert_listed(s, &want, "after snapshots at indexes 20, 40, 30");
    for (m, data) in &made {
        assert_opens(s, m, data, "after snapshots at indexes 20, 40, 30");
    }
}

fn retain_keeps_the_newest<S: SnapshotStore>(s: &S, retain: usize) {
    let metas: Vec<SnapshotMeta> = (1..=retain as u64 + 2)
        .map(|i| write_snapshot(s, snapshot_point(i * 10, 1), &random_bytes(i, 512)))
        .collect();
    let want: Vec<&SnapshotMeta> = metas.iter().rev().take(retain).collect();
    assert_listed(
        s,
        &want,
        &format!("after {} snapshots with retain {retain}", retain + 2),
    );
    for old in &metas[..2] {
        assert_not_found(s, &old.id, "a snapshot beyond the retention");
    }
}

fn cancel_leaves_nothing<S: SnapshotStore>(s: &S) {
    let mut sink = ok(s.create(snapshot_point(5, 1)), "create");
    let id = sink.id().clone();
    if let Err(e) = sink.write_all(&random_bytes(5, 10_000)) {
        panic!("writing a snapshot: {e}");
    }
    ok(sink.cancel(), "cancel");
    assert_listed(s, &[], "after a cancelled snapshot");
    assert_not_found(s, &id, "a cancelled snapshot");
}

fn unfinished_snapshot_is_not_listed<S: SnapshotStore>(s: &S) {
    let mut sink = ok(s.create(snapshot_point(8, 2)), "create");
    let id = sink.id().clone();
    let data = random_bytes(8, 10_000);
    if let Err(e) = sink.write_all(&data) {
        panic!("writing a snapshot: {e}");
    }
    assert_listed(s, &[], "while a snapshot is being written");
    assert_not_found(s, &id, "a snapshot being written");
    let meta = ok(sink.finish(), "finish");
    assert_listed(s, &[&meta], "once the snapshot is finished");
    assert_opens(s, &meta, &data, "once the snapshot is finished");
}

fn open_of_an_unknown_id_is_not_found<S: SnapshotStore>(s: &S) {
    assert_not_found(s, &SnapshotId("no-such-snapshot".into()), "an unknown id");
    let meta = write_snapshot(s, snapshot_point(3, 1), b"abc");
    assert_not_found(
        s,
        &SnapshotId(format!("{}x", meta.id)),
        "an id that only starts like a real one",
    );
    for hostile in ["", ".", "..", "../../etc/passwd", "a/b", "a\\b", "a\0b"] {
        let id = SnapshotId(hostile.into());
        assert!(
            s.open(&id).is_err(),
            "open({id:?}) of a malformed id should be an error"
        );
    }
}

fn snapshots_of_one_point_get_distinct_ids<S: SnapshotStore>(s: &S) {
    let a = ok(s.create(snapshot_point(12, 3)), "create");
    let b = ok(s.create(snapshot_point(12, 3)), "create");
    assert_ne!(a.id(), b.id(), "two snapshots of one point got the same id");
    ok(a.cancel(), "cancel");
    ok(b.cancel(), "cancel");
}

fn reopen_lists_and_opens_the_same<S: SnapshotStore>(open: &mut impl FnMut(&Path) -> S) {
    let dir = temp_dir("snapshot-reopen");
    let (a, b) = (random_bytes(10, 70_000), random_bytes(11, 12_345));
    let (ma, mb) = {
        let s = open(dir.path());
        (
            write_snapshot(&s, snapshot_point(10, 1), &a),
            write_snapshot(&s, snapshot_point(20, 2), &b),
        )
    };
    let s = open(dir.path());
    let listed = ok(s.list(), "list after a restart");
    assert_eq!(
        listed.first(),
        Some(&mb),
        "after a restart the newest snapshot should be listed first"
    );
    assert_opens(&s, &mb, &b, "after a restart");
    if listed.len() > 1 {
        assert_eq!(
            listed[1], ma,
            "after a restart, the second snapshot's metadata changed"
        );
        assert_opens(&s, &ma, &a, "after a restart");
    }
}

fn incomplete_snapshot_is_reaped_on_reopen<S: SnapshotStore>(open: &mut impl FnMut(&Path) -> S) {
    let dir = temp_dir("snapshot-reap");
    let data = random_bytes(12, 40_000);
    let done = {
        let s = open(dir.path());
        write_snapshot(&s, snapshot_point(10, 1), &data)
    };
    let before = file_tree(dir.path());
    {
        let s = open(dir.path());
        let mut sink = ok(s.create(snapshot_point(30, 2)), "create");
        if let Err(e) = sink.write_all(&random_bytes(13, 50_000)) {
            panic!("writing a snapshot: {e}");
        }
        // The process "dies" here: neither finish nor cancel nor drop runs.
        std::mem::forget(sink);
    }
    {
        let s = open(dir.path());
        assert_listed(&s, &[&done], "after a restart that interrupted a snapshot");
        assert_opens(
            &s,
            &done,
            &data,
            "after a restart that interrupted a snapshot",
        );
    }
    assert_eq!(
        file_tree(dir.path()),
        before,
        "reopening should delete every file of the interrupted snapshot"
    );
}

/// Every file and directory under `root`, relative to it.
fn file_tree(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => panic!("listing {}: {e}", dir.display()),
        };
        for entry in entries {
            let path = match entry {
                Ok(e) => e.path(),
                Err(e) => panic!("listing {}: {e}", dir.display()),
            };
            if path.is_dir() {
                todo.push(path.clone());
            }
            if let Ok(rel) = path.strip_prefix(root) {
                out.insert(rel.to_path_buf());
            }
        }
    }
    out
}
