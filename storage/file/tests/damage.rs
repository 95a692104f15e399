//! Exhaustive tail cuts and seeded random damage against the file log: a
//! reopened log is either refused as `Corrupt` or holds a prefix of what was
//! written, never a wrong entry, never a panic.

use std::fs;
use std::path::Path;

use bytes::Bytes;
use raftkit::{Entry, LogIndex, LogStore, StorageError, Term};
use raftkit_file::{FileLogOptions, FileLogStore, MIN_SEGMENT_SIZE_BYTES};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::segments;

const SEGMENT: FileLogOptions = FileLogOptions {
    segment_size_bytes: MIN_SEGMENT_SIZE_BYTES,
    preallocate: true,
};

fn entries(n: u64) -> Vec<Entry> {
    (1..=n)
        .map(|i| {
            Entry::command(
                LogIndex(i),
                Term(1 + i / 50),
                Bytes::from(vec![i as u8; (i % 90) as usize]),
            )
        })
        .collect()
}

fn write_log(dir: &Path, all: &[Entry]) {
    let log = FileLogStore::open(dir, SEGMENT).expect("open");
    for batch in all.chunks(5) {
        log.append(batch).expect("append");
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

/// Opens `dir` and checks the log is a prefix of `all` of at least `min` entries.
fn assert_prefix(dir: &Path, all: &[Entry], min: usize, what: &str) {
    let log = FileLogStore::open(dir, SEGMENT)
        .unwrap_or_else(|e| panic!("{what}: should recover, got: {e}"));
    let got = log
        .get(LogIndex(0), LogIndex(u64::MAX))
        .unwrap_or_else(|e| panic!("{what}: get: {e}"));
    assert!(
        got.len() >= min,
        "{what}: recovered {} entries, at least {min} were complete",
        got.len()
    );
    assert_eq!(
        got[..],
        all[..got.len()],
        "{what}: recovered entries differ from those written"
    );
}

#[test]
fn cuts_of_the_last_segment_recover_the_complete_records() {
    let all = entries(120);
    let src = tempfile::tempdir().expect("temporary directory");
    write_log(src.path(), &all);
    let last = segments(src.path()).pop().expect("a segment");
    let first_in_last: u64 = last
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("name");
    let len = fs::metadata(&last).expect("metadata").len();
    // Every byte of the last few records, every 7th byte elsewhere (fsyncs are slow).
    for cut in (0..=len).filter(|c| c % 7 == 0 || c + 400 >= len) {
        let dir = tempfile::tempdir().expect("temporary directory");
        copy_dir(src.path(), dir.path());
        let name = last.file_name().expect("name");
        fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(name))
            .and_then(|f| f.set_len(cut))
            .expect("cut");
        // Whatever lies wholly before the cut segment survives.
        assert_prefix(
            dir.path(),
            &all,
            first_in_last as usize - 1,
            &format!("cut at byte {cut} of {len}"),
        );
    }
}

#[test]
fn seeded_random_damage_is_refused_or_recovered_never_wrong() {
    let all = entries(150);
    let src = tempfile::tempdir().expect("temporary directory");
    write_log(src.path(), &all);
    let files = segments(src.path());
    let (mut refused, mut recovered) = (0, 0);
    for seed in 0..300u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dir = tempfile::tempdir().expect("temporary directory");
        copy_dir(src.path(), dir.path());
        let victim = &files[rng.random_range(0..files.len())];
        let path = dir.path().join(victim.file_name().expect("name"));
        let mut data = fs::read(&path).expect("read");
        for _ in 0..rng.random_range(1..=3) {
            let at = rng.random_range(0..data.len());
            data[at] ^= rng.random_range(1..=255u8);
        }
        fs::write(&path, &data).expect("write");
        match FileLogStore::open(dir.path(), SEGMENT) {
            Err(StorageError::Corrupt(msg)) => {
                assert!(
                    msg.contains(".wal"),
                    "seed {seed}: Corrupt should name the segment: {msg}"
                );
                refused += 1;
            }
            Err(e) => panic!("seed {seed}: expected Corrupt or recovery, got: {e}"),
            Ok(log) => {
                let got = log
                    .get(LogIndex(0), LogIndex(u64::MAX))
                    .unwrap_or_else(|e| panic!("seed {seed}: get: {e}"));
                assert_eq!(
                    got[..],
                    all[..got.len()],
                    "seed {seed}: damage produced wrong entries"
                );
                recovered += 1;
            }
        }
    }
    assert!(refused > 250, "most random damage should be refused as Corrupt ({refused} refused, {recovered} recovered)");
}
