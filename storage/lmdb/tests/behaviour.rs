//! What the LMDB store does beyond the conformance suites: locking, growing
//! the map, settings, and the stable store's keys.

use std::path::Path;

use bytes::Bytes;
use raftkit::{Entry, LogIndex, LogStore, StableStore, StorageError, Term};
use raftkit_lmdb::{LmdbConfig, LmdbStore, SyncPolicy, MIN_MAP_SIZE_BYTES};

fn entries(range: std::ops::RangeInclusive<u64>, len: usize) -> Vec<Entry> {
    range
        .map(|i| Entry::command(LogIndex(i), Term(1), Bytes::from(vec![i as u8; len])))
        .collect()
}

fn small_map() -> LmdbConfig {
    LmdbConfig {
        map_size: MIN_MAP_SIZE_BYTES,
        ..LmdbConfig::default()
    }
}

#[track_caller]
fn expect_locked<T>(result: Result<T, StorageError>, dir: &Path) {
    match result {
        Err(StorageError::Locked(msg)) => assert!(
            msg.contains(&dir.display().to_string()),
            "Locked should name the directory: {msg}"
        ),
        Err(e) => panic!("expected StorageError::Locked, got: {e}"),
        Ok(_) => panic!("a second open of a locked directory succeeded"),
    }
}

#[test]
fn a_second_open_of_a_store_directory_is_locked_until_every_clone_closes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = LmdbStore::open(dir.path(), LmdbConfig::default()).expect("open");
    expect_locked(
        LmdbStore::open(dir.path(), LmdbConfig::default()),
        dir.path(),
    );
    let clone = store.clone();
    drop(store);
    expect_locked(
        LmdbStore::open(dir.path(), LmdbConfig::default()),
        dir.path(),
    );
    drop(clone);
    LmdbStore::open(dir.path(), LmdbConfig::default()).expect("reopening after every clone closed");
}

#[test]
fn a_full_map_grows_and_the_data_reopens_with_the_small_setting() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let all = entries(1..=3_000, 1_000);
    {
        let store = LmdbStore::open(dir.path(), small_map()).expect("open");
        for batch in all.chunks(100) {
            store
                .log()
                .append(batch)
                .expect("append into a map that must grow");
        }
        assert!(
            store.map_size() > 3_000_000,
            "3 MB of entries should have grown the 1 MiB map, it is {}",
            store.map_size()
        );
        store
            .stable()
            .set("k", &vec![7u8; 300_000])
            .expect("a large stable value");
    }
    let store = LmdbStore::open(dir.path(), small_map()).expect("reopen with the small setting");
    let (log, stable) = (store.log(), store.stable());
    assert_eq!(log.get(LogIndex(0), LogIndex(10_000)).expect("get"), all);
    assert_eq!(
        stable.get("k").expect("get").map(|v| v.len()),
        Some(300_000)
    );
    log.truncate_suffix(LogIndex(10))
        .expect("truncate after reopening");
    log.purge_prefix(LogIndex(5))
        .expect("purge after reopening");
    assert_eq!(log.get(LogIndex(0), LogIndex(100)).expect("get"), all[5..9]);
}

#[test]
fn an_entry_far_larger_than_the_map_is_stored_after_one_growth() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = LmdbStore::open(dir.path(), small_map())
        .expect("open")
        .log();
    let big = entries(1..=1, 20 << 20);
    log.append(&big).expect("a 20 MiB entry into a 1 MiB map");
    assert_eq!(log.get(LogIndex(1), LogIndex(2)).expect("get"), big);
}

#[test]
fn map_sizes_below_the_minimum_or_not_whole_mib_are_invalid() {
    let dir = tempfile::tempdir().expect("temporary directory");
    for map_size in [0, 4096, MIN_MAP_SIZE_BYTES + 1] {
        let config = LmdbConfig {
            map_size,
            ..LmdbConfig::default()
        };
        match LmdbStore::open(dir.path(), config) {
            Err(StorageError::Invalid(msg)) => assert!(msg.contains("map_size"), "{msg}"),
            other => panic!("map_size {map_size}: expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn a_store_without_sync_still_round_trips_within_the_process() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = LmdbConfig {
        sync: SyncPolicy::None,
        ..LmdbConfig::default()
    };
    {
        let log = LmdbStore::open(dir.path(), config.clone())
            .expect("open")
            .log();
        log.append(&entries(1..=10, 10)).expect("append");
    }
    let log = LmdbStore::open(dir.path(), config).expect("reopen").log();
    assert_eq!(log.last_index().expect("last"), LogIndex(10));
}

#[test]
fn an_overlong_stable_key_is_invalid_and_reads_as_missing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = LmdbStore::open(dir.path(), LmdbConfig::default())
        .expect("open")
        .stable();
    let long = "k".repeat(4_000);
    assert!(matches!(
        store.set(&long, b"v"),
        Err(StorageError::Invalid(_))
    ));
    assert_eq!(store.get(&long).expect("get"), None);
    store.set("", b"empty key").expect("the empty key");
    assert_eq!(
        store.get("").expect("get").as_deref(),
        Some(&b"empty key"[..])
    );
}

#[test]
fn the_log_and_the_stable_store_share_one_environment_without_mixing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = LmdbStore::open(dir.path(), LmdbConfig::default()).expect("open");
    let (log, stable) = (store.log(), store.stable());
    stable.set("raft/x", b"value").expect("set");
    assert_eq!(log.first_index().expect("first"), LogIndex::ZERO);
    log.append(&entries(1..=3, 5)).expect("append");
    log.purge_prefix(LogIndex(u64::MAX))
        .expect("purge everything");
    assert_eq!(
        stable.get("raft/x").expect("get").as_deref(),
        Some(&b"value"[..])
    );
}

#[test]
fn large_free_page_lists_pass_the_open_check() {
    // Purging and truncating tens of thousands of entries frees thousands of
    // pages at once: LMDB keeps such free lists on overflow pages, which the
    // structural check at open must read, not refuse.
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let log = LmdbStore::open(dir.path(), LmdbConfig::default())
            .expect("open")
            .log();
        for batch in entries(1..=40_000, 1_000).chunks(2_000) {
            log.append(batch).expect("append");
        }
        log.purge_prefix(LogIndex(20_000)).expect("purge");
        log.truncate_suffix(LogIndex(30_001)).expect("truncate");
    }
    let log = LmdbStore::open(dir.path(), LmdbConfig::default())
        .expect("reopening after large frees")
        .log();
    assert_eq!(
        (
            log.first_index().expect("first"),
            log.last_index().expect("last")
        ),
        (LogIndex(20_001), LogIndex(30_000))
    );
    log.append(&entries(30_001..=30_100, 1_000))
        .expect("appending into freed pages");
    drop(log);
    LmdbStore::open(dir.path(), LmdbConfig::default()).expect("reopening after reuse");
}
