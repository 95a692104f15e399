//! A map that cannot grow: the write returns `StorageError::Full` naming
//! `map_size`, and the store refuses later calls instead of crashing.
//!
//! Growing LMDB's map fails when the process runs out of address space, so
//! the test re-runs this binary as a child (`fill_until_full_child`) under
//! `ulimit -v`, and the child fills a store whose map starts at 1 MiB.

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use raftkit::{Entry, LogIndex, LogStore, StorageError, Term};
use raftkit_lmdb::{LmdbConfig, LmdbStore, MIN_MAP_SIZE_BYTES};

const CHILD_ENV: &str = "RAFTKIT_LMDB_FULL_DIR";
const ENTRY_BYTES: usize = 4 << 20;
/// The child's address-space limit, in KiB: room for the test binary and a
/// few hundred MiB of map.
const ADDRESS_SPACE_KIB: u64 = 600 << 10;

fn kind(e: &StorageError) -> &'static str {
    match e {
        StorageError::Full(_) => "Full",
        StorageError::Other(_) => "Other",
        StorageError::Corrupt(_) => "Corrupt",
        _ => "another",
    }
}

fn fill(dir: &Path) {
    let config = LmdbConfig {
        map_size: MIN_MAP_SIZE_BYTES,
        ..LmdbConfig::default()
    };
    let store = LmdbStore::open(dir, config).expect("open");
    let log = store.log();
    let data = Bytes::from(vec![0x3Cu8; ENTRY_BYTES]);
    for i in 1..=1_000u64 {
        let entry = Entry::command(LogIndex(i), Term(1), data.clone());
        if let Err(e) = log.append(&[entry]) {
            println!("FAILED_AT {i} {} {e}", kind(&e));
            let read = log.get(LogIndex(1), LogIndex(2)).err();
            println!("READ_AFTER {}", read.as_ref().map_or("Ok", kind));
            let entry = Entry::command(LogIndex(i), Term(1), data.clone());
            let write = log.append(&[entry]).err();
            println!("WRITE_AFTER {}", write.as_ref().map_or("Ok", kind));
            println!("MAP_SIZE_AFTER {}", store.map_size());
            return;
        }
    }
    println!("NEVER_FULL");
}

#[test]
#[ignore = "run by a_map_that_cannot_grow_is_full_naming_map_size_and_never_crashes, under ulimit -v"]
fn fill_until_full_child() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        fill(Path::new(&dir));
    }
}

fn field<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.split(&format!("{name} "))
        .nth(1)
        .and_then(|r| r.lines().next())
}

#[test]
fn a_map_that_cannot_grow_is_full_naming_map_size_and_never_crashes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\""
        ))
        .arg(&exe)
        .args(["fill_until_full_child", "--exact", "--ignored"])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .output()
        .expect("running the child under bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = format!(
        "the child ended with {}; stdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    let failed = field(&stdout, "FAILED_AT").unwrap_or_else(|| panic!("no failure: {report}"));
    let mut words = failed.splitn(3, ' ');
    let at: u64 = words.next().and_then(|w| w.parse().ok()).expect("an index");
    assert_eq!(words.next(), Some("Full"), "{report}");
    assert!(
        words.next().is_some_and(|m| m.contains("map_size")),
        "{report}"
    );
    assert!(at > 1, "the map should grow a few times first: {report}");
    assert_eq!(field(&stdout, "READ_AFTER"), Some("Other"), "{report}");
    assert_eq!(field(&stdout, "WRITE_AFTER"), Some("Other"), "{report}");
    assert_eq!(field(&stdout, "MAP_SIZE_AFTER"), Some("0"), "{report}");
    // Everything appended before the failure is there after a reopen.
    let log = LmdbStore::open(dir.path(), LmdbConfig::default())
        .expect("reopening without the limit")
        .log();
    assert_eq!(log.last_index().expect("last"), LogIndex(at - 1));
    let last = log.get(LogIndex(at - 1), LogIndex(at)).expect("get");
    assert_eq!(last.len(), 1);
    assert!(
        last[0].size_bytes() >= ENTRY_BYTES,
        "the last entry before the failure"
    );
}
