//! Crash recovery and damage detection of the file stores, by editing their
//! files between a close and an open.

use std::fs;
use std::path::Path;

use bytes::Bytes;
use raftkit::{Entry, LogIndex, LogStore, StableStore, StorageError, Term};
use raftkit_file::{
    FileLogOptions, FileLogStore, FileSnapshotStore, FileStableStore, MIN_SEGMENT_SIZE_BYTES,
};

mod common;
use common::segments;

const SEGMENT: FileLogOptions = FileLogOptions {
    segment_size_bytes: MIN_SEGMENT_SIZE_BYTES,
    preallocate: true,
};
const HEADER_LEN: usize = 32;
const RECORD_HEADER_LEN: usize = 12;

fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    range
        .map(|i| Entry::command(LogIndex(i), Term(1), Bytes::from(vec![i as u8; 100])))
        .collect()
}

fn open(dir: &Path) -> FileLogStore {
    FileLogStore::open(dir, SEGMENT).unwrap_or_else(|e| panic!("opening the log: {e}"))
}

/// A log of `n` entries over several 4 KiB segments, closed again.
fn written_log(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = open(dir.path());
    for batch in entries(1..=n).chunks(7) {
        log.append(batch).expect("append");
    }
    dir
}

fn first_index_of(segment: &Path) -> u64 {
    let stem = segment
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("a segment name");
    stem.parse().expect("a segment named by its first index")
}

/// The (offset, index) of each record of a segment, by walking the lengths
/// up to the first zero length (the zero-filled tail of a preallocated
/// segment), and the offset where the records end.
fn records_and_end(segment: &Path) -> (Vec<(usize, u64)>, usize) {
    let data = fs::read(segment).expect("reading a segment");
    let (mut off, mut index, mut out) = (HEADER_LEN, first_index_of(segment), Vec::new());
    while off + RECORD_HEADER_LEN <= data.len() {
        let len =
            u32::from_le_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
        if len == 0 {
            break;
        }
        out.push((off, index));
        off += RECORD_HEADER_LEN + len;
        index += 1;
    }
    (out, off)
}

fn records(segment: &Path) -> Vec<(usize, u64)> {
    records_and_end(segment).0
}

/// Where the records of a segment end (its file may be longer, zero-filled).
fn data_end(segment: &Path) -> u64 {
    records_and_end(segment).1 as u64
}

fn flip_byte(path: &Path, at: usize) {
    let mut data = fs::read(path).expect("reading");
    data[at] ^= 0x40;
    fs::write(path, data).expect("writing");
}

#[track_caller]
fn expect_corrupt(result: Result<FileLogStore, StorageError>, needles: &[&str]) {
    match result {
        Err(StorageError::Corrupt(msg)) => {
            for n in needles {
                assert!(
                    msg.contains(n),
                    "the Corrupt message should mention {n:?}: {msg}"
                );
            }
        }
        Err(e) => panic!("expected StorageError::Corrupt, got: {e}"),
        Ok(_) => panic!("expected StorageError::Corrupt, but the log opened"),
    }
}

#[test]
fn appends_roll_segments_and_purge_deletes_whole_ones() {
    let dir = written_log(200);
    let files = segments(dir.path());
    assert!(
        files.len() >= 5,
        "200 entries of 100 bytes should fill several 4 KiB segments, got {}",
        files.len()
    );
    let log = open(dir.path());
    let second = first_index_of(&files[1]);
    log.purge_prefix(LogIndex(second + 1)).expect("purge");
    assert_eq!(
        log.first_index().expect("first"),
        LogIndex(second),
        "purge keeps the segment holding upto+1"
    );
    assert_eq!(
        segments(dir.path()),
        files[1..].to_vec(),
        "purge should delete exactly the first segment file"
    );
}

#[test]
fn a_flipped_byte_mid_segment_is_corrupt_naming_file_offset_and_index() {
    let dir = written_log(200);
    let files = segments(dir.path());
    let middle = &files[files.len() / 2];
    let len = fs::metadata(middle).expect("metadata").len() as usize;
    let at = len / 2;
    let (offset, index) = records(middle)
        .into_iter()
        .rev()
        .find(|(off, _)| *off <= at)
        .expect("a record");
    flip_byte(middle, at);
    let name = middle.file_name().and_then(|n| n.to_str()).expect("name");
    expect_corrupt(
        FileLogStore::open(dir.path(), SEGMENT),
        &[
            name,
            &format!("offset {offset}"),
            &format!("entry index {index}"),
        ],
    );
}

#[test]
fn a_flipped_byte_before_the_last_record_of_the_last_segment_is_corrupt() {
    let dir = written_log(200);
    let last = segments(dir.path()).pop().expect("a segment");
    let recs = records(&last);
    assert!(
        recs.len() >= 2,
        "the last segment should hold at least two records"
    );
    let (offset, index) = recs[recs.len() - 2];
    flip_byte(&last, offset + RECORD_HEADER_LEN + 10);
    expect_corrupt(
        FileLogStore::open(dir.path(), SEGMENT),
        &[&format!("offset {offset}"), &format!("entry index {index}")],
    );
}

#[test]
fn a_tail_cut_mid_record_is_recovered_and_earlier_records_survive() {
    let dir = written_log(200);
    let last = segments(dir.path()).pop().expect("a segment");
    // The records end before the file does: the rest was zero-filled ahead.
    let len = data_end(&last);
    fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .and_then(|f| f.set_len(len - 5))
        .expect("cutting the tail");
    {
        let log = open(dir.path());
        assert_eq!(
            log.last_index().expect("last"),
            LogIndex(199),
            "the cut record is dropped, no more"
        );
        assert_eq!(
            log.get(LogIndex(1), LogIndex(200)).expect("get"),
            entries(1..=199),
            "earlier records intact"
        );
        log.append(&entries(200..=210))
            .expect("appending after recovery");
    }
    let log = open(dir.path());
    assert_eq!(
        log.get(LogIndex(0), LogIndex(1000)).expect("get"),
        entries(1..=210),
        "after a second restart"
    );
}

#[test]
fn a_zero_filled_tail_is_recovered() {
    let dir = written_log(50);
    let last = segments(dir.path()).pop().expect("a segment");
    let mut data = fs::read(&last).expect("read");
    data.extend([0u8; 300]);
    fs::write(&last, data).expect("write");
    let log = open(dir.path());
    assert_eq!(
        log.get(LogIndex(0), LogIndex(1000)).expect("get"),
        entries(1..=50)
    );
}

#[test]
fn a_cut_in_a_segment_that_is_not_the_last_is_corrupt() {
    let dir = written_log(200);
    let files = segments(dir.path());
    let len = data_end(&files[0]);
    fs::OpenOptions::new()
        .write(true)
        .open(&files[0])
        .and_then(|f| f.set_len(len - 5))
        .expect("cut");
    expect_corrupt(FileLogStore::open(dir.path(), SEGMENT), &["cut short"]);
}

#[test]
fn a_missing_middle_segment_is_a_hole() {
    let dir = written_log(200);
    let files = segments(dir.path());
    fs::remove_file(&files[1]).expect("removing a segment");
    expect_corrupt(FileLogStore::open(dir.path(), SEGMENT), &["hole"]);
}

#[test]
fn a_damaged_segment_header_is_corrupt() {
    let dir = written_log(200);
    let files = segments(dir.path());
    flip_byte(&files[0], 18);
    expect_corrupt(FileLogStore::open(dir.path(), SEGMENT), &["segment header"]);
}

#[test]
fn leftovers_of_a_crash_while_rolling_are_removed() {
    let dir = written_log(50);
    let next = dir.path().join(format!("{:020}.wal", 51));
    fs::write(&next, [b'R', b'K', b'W']).expect("a partial header");
    let tmp = dir.path().join(format!("{:020}.wal.tmp", 51));
    fs::write(&tmp, [0u8; 64]).expect("a temporary segment");
    let log = open(dir.path());
    assert_eq!(log.last_index().expect("last"), LogIndex(50));
    assert!(
        !next.exists() && !tmp.exists(),
        "the partial and temporary segments should be removed"
    );
    log.append(&entries(51..=60))
        .expect("appending after recovery");
}

fn write_intent(dir: &Path, from: u64) {
    let mut bytes = from.to_le_bytes().to_vec();
    bytes.extend(crc32c::crc32c(&from.to_le_bytes()).to_le_bytes());
    fs::write(dir.join("wal.truncate"), bytes).expect("writing a truncation intent");
}

#[test]
fn a_truncation_interrupted_before_any_change_is_finished_on_open() {
    let dir = written_log(200);
    write_intent(dir.path(), 120);
    let log = open(dir.path());
    assert_eq!(
        log.get(LogIndex(0), LogIndex(1000)).expect("get"),
        entries(1..=119)
    );
    assert!(
        !dir.path().join("wal.truncate").exists(),
        "the intent should be gone once done"
    );
}

#[test]
fn a_truncation_interrupted_after_deleting_segments_is_finished_on_open() {
    let dir = written_log(200);
    let files = segments(dir.path());
    let from = first_index_of(&files[2]) + 3;
    for later in &files[3..] {
        fs::remove_file(later).expect("removing a later segment");
    }
    write_intent(dir.path(), from);
    let log = open(dir.path());
    assert_eq!(
        log.get(LogIndex(0), LogIndex(1000)).expect("get"),
        entries(1..=from - 1)
    );
}

#[test]
fn a_damaged_truncation_intent_is_corrupt() {
    let dir = written_log(20);
    fs::write(dir.path().join("wal.truncate"), b"garbage").expect("write");
    expect_corrupt(FileLogStore::open(dir.path(), SEGMENT), &["wal.truncate"]);
}

#[test]
fn a_segment_size_below_the_minimum_is_invalid() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = FileLogOptions {
        segment_size_bytes: MIN_SEGMENT_SIZE_BYTES - 1,
        ..FileLogOptions::default()
    };
    assert!(matches!(
        FileLogStore::open(dir.path(), options),
        Err(StorageError::Invalid(_))
    ));
}

#[track_caller]
fn expect_locked<T>(result: Result<T, StorageError>, dir: &Path) {
    match result {
        Err(StorageError::Locked(msg)) => {
            assert!(
                msg.contains(&dir.display().to_string()),
                "Locked should name the directory: {msg}"
            )
        }
        Err(e) => panic!("expected StorageError::Locked, got: {e}"),
        Ok(_) => panic!("a second open of a locked directory succeeded"),
    }
}

#[test]
fn a_second_open_of_a_store_directory_is_locked_until_the_first_closes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let p = dir.path();
    let log = open(p);
    let stable = FileStableStore::open(p).expect("stable store in the same directory");
    let snaps = FileSnapshotStore::open(p, 1).expect("snapshot store in the same directory");
    expect_locked(FileLogStore::open(p, SEGMENT), p);
    expect_locked(FileStableStore::open(p), p);
    expect_locked(FileSnapshotStore::open(p, 1), p);
    let clone = log.clone();
    drop(log);
    expect_locked(FileLogStore::open(p, SEGMENT), p);
    drop((clone, stable, snaps));
    open(p);
    FileStableStore::open(p).expect("reopening the stable store");
    FileSnapshotStore::open(p, 1).expect("reopening the snapshot store");
}

#[test]
fn a_damaged_stable_store_file_is_corrupt() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let s = FileStableStore::open(dir.path()).expect("open");
        s.set("key", b"a value long enough to flip").expect("set");
    }
    let path = dir.path().join("stable.bin");
    let len = fs::metadata(&path).expect("metadata").len() as usize;
    flip_byte(&path, len - 3);
    match FileStableStore::open(dir.path()) {
        Err(StorageError::Corrupt(msg)) => assert!(msg.contains("stable.bin"), "{msg}"),
        Err(e) => panic!("expected Corrupt, got: {e}"),
        Ok(_) => panic!("a damaged stable store opened"),
    }
}

#[test]
fn a_snapshot_store_rejects_retain_zero() {
    let dir = tempfile::tempdir().expect("temporary directory");
    assert!(matches!(
        FileSnapshotStore::open(dir.path(), 0),
        Err(StorageError::Invalid(_))
    ));
}
