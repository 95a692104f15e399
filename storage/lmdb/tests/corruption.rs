//! Seeded random damage to `data.mdb`: opening or reading the damaged store
//! gives an error or exactly the data written, never a panic, never wrong
//! bytes, never a crash.
//!
//! LMDB reads its file through a memory map and trusts the page structure
//! it finds there, so a damaged file could in principle crash the process
//! rather than return an error. Each damaged copy is therefore read in a
//! child process (this test binary, re-run as `read_damaged_store_child`),
//! and the parent records how each child ended: a crash (a signal inside
//! LMDB), a panic or a wrong entry fails the test with its seed. The store
//! checks the file's page structure before LMDB maps it (`src/verify.rs`);
//! without that check, 1 seed in 300 crashed LMDB.

use std::fs;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use raftkit::{Entry, LogIndex, LogStore, StableStore, StorageError, Term};
use raftkit_lmdb::{LmdbConfig, LmdbStore};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SEEDS: u64 = 300;
/// Set to run more seeds (a soak), e.g. `RAFTKIT_LMDB_DAMAGE_SEEDS=5000`.
const SEEDS_ENV: &str = "RAFTKIT_LMDB_DAMAGE_SEEDS";
const CHILD_ENV: &str = "RAFTKIT_LMDB_DAMAGED_DIR";
const STABLE_KEYS: u64 = 20;

/// The entry at `index`: seeded bytes, some long enough to need LMDB
/// overflow pages.
fn entry(index: u64) -> Entry {
    let mut rng = ChaCha8Rng::seed_from_u64(index);
    let len = if index.is_multiple_of(50) {
        6_000
    } else {
        rng.random_range(0..400)
    };
    let mut data = vec![0u8; len];
    rng.fill(&mut data[..]);
    Entry::command(LogIndex(index), Term(1 + index / 100), Bytes::from(data))
}

fn stable_value(key: u64) -> Vec<u8> {
    vec![key as u8; 10 + key as usize * 7]
}

/// Writes a store whose history leaves free pages behind: appends, a
/// truncation, a purge; the final log is entries 101..=1500.
fn write_store(dir: &Path) {
    let store = LmdbStore::open(dir, LmdbConfig::default()).expect("open");
    let (log, stable) = (store.log(), store.stable());
    let batch = |from: u64, to: u64| (from..=to).map(entry).collect::<Vec<_>>();
    for start in (1..=1_600).step_by(50) {
        log.append(&batch(start, start + 49)).expect("append");
    }
    log.truncate_suffix(LogIndex(1_401)).expect("truncate");
    log.append(&batch(1_401, 1_500)).expect("append");
    log.purge_prefix(LogIndex(100)).expect("purge");
    for key in 0..STABLE_KEYS {
        stable
            .set(&format!("key-{key}"), &stable_value(key))
            .expect("set");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for item in fs::read_dir(from).expect("listing") {
        let path = item.expect("listing").path();
        if let Some(name) = path.file_name() {
            fs::copy(&path, to.join(name)).expect("copying");
        }
    }
}

/// What a child found in a damaged store.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// `open` returned an error.
    Refused,
    /// It opened, and a read returned an error.
    ReadError,
    /// Every entry and value read back exactly.
    Intact,
}

/// The child's side: open the damaged store named by `CHILD_ENV`, read
/// everything, and print the outcome; a wrong entry panics.
fn read_damaged(dir: &Path) -> Outcome {
    let store = match LmdbStore::open(dir, LmdbConfig::default()) {
        Err(StorageError::Locked(e)) => panic!("a damaged store should not be locked: {e}"),
        Err(_) => return Outcome::Refused,
        Ok(s) => s,
    };
    let (log, stable) = (store.log(), store.stable());
    let got = match (log.first_index(), log.last_index()) {
        (Ok(first), Ok(last)) => {
            assert_eq!(
                (first, last),
                (LogIndex(101), LogIndex(1_500)),
                "the damaged store reports other bounds"
            );
            match log.get(LogIndex(0), LogIndex(u64::MAX)) {
                Ok(got) => got,
                Err(_) => return Outcome::ReadError,
            }
        }
        _ => return Outcome::ReadError,
    };
    assert_eq!(got.len(), 1_400, "the damaged store returned other entries");
    for g in &got {
        assert_eq!(*g, entry(g.index.0), "a wrong entry at index {}", g.index);
    }
    for key in 0..STABLE_KEYS {
        match stable.get(&format!("key-{key}")) {
            Ok(v) => assert_eq!(v, Some(stable_value(key)), "a wrong stable value {key}"),
            Err(_) => return Outcome::ReadError,
        }
    }
    Outcome::Intact
}

#[test]
#[ignore = "run by seeded_random_damage_is_refused_or_read_correctly_never_wrong_never_a_crash, in a child process"]
fn read_damaged_store_child() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        println!("OUTCOME {:?}", read_damaged(Path::new(&dir)));
    }
}

/// How the children ended, over every seed.
#[derive(Default)]
struct Tally {
    seeds: u64,
    refused: u32,
    read_error: u32,
    intact: u32,
    /// Seeds whose child panicked or read wrong data (a panic says which).
    wrong: Vec<String>,
    /// Seeds whose child was killed by a signal inside LMDB.
    crashed: Vec<String>,
}

fn damage_every_seed() -> Tally {
    let src = tempfile::tempdir().expect("temporary directory");
    write_store(src.path());
    let exe = std::env::current_exe().expect("the test binary");
    let mut tally = Tally::default();
    let seeds = std::env::var(SEEDS_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEEDS);
    for seed in 0..seeds {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dir = tempfile::tempdir().expect("temporary directory");
        copy_dir(src.path(), dir.path());
        let path = dir.path().join("data.mdb");
        let mut data = fs::read(&path).expect("read");
        let flips = rng.random_range(1..=3);
        for _ in 0..flips {
            let at = rng.random_range(0..data.len());
            data[at] ^= rng.random_range(1..=255u8);
        }
        fs::write(&path, &data).expect("write");
        let out = Command::new(&exe)
            .args(["read_damaged_store_child", "--exact", "--ignored"])
            .args(["--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .output()
            .expect("running the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        // libtest prints the test's name on the same line, before the outcome.
        let outcome = stdout
            .split("OUTCOME ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next());
        let report = || {
            format!(
                "seed {seed}: the child ended with {}; stderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        };
        match outcome {
            Some("Refused") => tally.refused += 1,
            Some("ReadError") => tally.read_error += 1,
            Some("Intact") => tally.intact += 1,
            _ if out.status.code().is_none() => tally.crashed.push(report()),
            _ => tally.wrong.push(report()),
        }
    }
    println!(
        "{seeds} damaged copies: {} refused at open, {} read errors, {} read back intact, \
         {} panics or wrong data, {} crashes",
        tally.refused,
        tally.read_error,
        tally.intact,
        tally.wrong.len(),
        tally.crashed.len()
    );
    tally.seeds = seeds;
    tally
}

/// Before the structural check in `verify.rs`, seed 291 (a flipped
/// `F_DUPDATA` bit in a leaf node) crashed LMDB in `mdb_xcursor_init1`.
#[test]
fn seeded_random_damage_is_refused_or_read_correctly_never_wrong_never_a_crash() {
    let tally = damage_every_seed();
    assert!(
        tally.wrong.is_empty(),
        "{} of {} damaged copies panicked or read wrong data:\n{}",
        tally.wrong.len(),
        tally.seeds,
        tally.wrong.join("\n")
    );
    assert!(
        tally.crashed.is_empty(),
        "{} of {} damaged copies crashed the reader:\n{}",
        tally.crashed.len(),
        tally.seeds,
        tally.crashed.join("\n")
    );
    // Nearly every flip lands in a value, a key or a page header and is
    // caught; a flip in free space changes nothing.
    assert!(
        u64::from(tally.refused + tally.read_error) > tally.seeds * 3 / 4,
        "most damage should be reported as an error"
    );
}
