//! Preallocated segments: the zero-filled tail, torn records over zeros,
//! truncation that zeroes, the spare segment at open, and the same flows
//! without preallocation.

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raftkit::{Entry, LogIndex, LogStore, StorageError, Term};
use raftkit_file::{FileLogOptions, FileLogStore, MIN_SEGMENT_SIZE_BYTES};

mod common;
use common::segments;

const SIZE: u64 = MIN_SEGMENT_SIZE_BYTES;
const PREALLOCATED: FileLogOptions = FileLogOptions {
    segment_size_bytes: SIZE,
    preallocate: true,
};
const GROWING: FileLogOptions = FileLogOptions {
    segment_size_bytes: SIZE,
    preallocate: false,
};
const HEADER_LEN: usize = 32;
const RECORD_HEADER_LEN: usize = 12;
const SPARE: &str = "spare.wal.tmp";

fn entry(i: u64, term: u64) -> Entry {
    Entry::command(LogIndex(i), Term(term), Bytes::from(vec![i as u8; 100]))
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|i| entry(i, term)).collect()
}

fn open(dir: &Path, options: FileLogOptions) -> FileLogStore {
    FileLogStore::open(dir, options).unwrap_or_else(|e| panic!("opening the log: {e}"))
}

fn all(log: &FileLogStore) -> Vec<Entry> {
    log.get(LogIndex(0), LogIndex(u64::MAX))
        .unwrap_or_else(|e| panic!("reading the log: {e}"))
}

/// The offset of each record of a segment (walking the lengths up to the
/// first zero one) and where the records end.
fn records(segment: &Path) -> (Vec<usize>, usize) {
    let data = fs::read(segment).expect("reading a segment");
    let (mut off, mut out) = (HEADER_LEN, Vec::new());
    while off + RECORD_HEADER_LEN <= data.len() {
        let len =
            u32::from_le_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
        if len == 0 {
            break;
        }
        out.push(off);
        off += RECORD_HEADER_LEN + len;
    }
    (out, off)
}

fn copy_dir(from: &Path, to: &Path) {
    for item in fs::read_dir(from).expect("listing") {
        let path = item.expect("listing").path();
        if let Some(name) = path.file_name() {
            fs::copy(&path, to.join(name)).expect("copying");
        }
    }
}

/// Overwrites `range` of `path` with zeros, keeping its length.
fn zero(path: &Path, range: std::ops::Range<usize>) {
    let mut data = fs::read(path).expect("reading");
    data[range].fill(0);
    fs::write(path, data).expect("writing");
}

/// Collects the events logged while `f` runs on this thread.
fn logged<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = tracing::subscriber::with_default(Capture(Arc::clone(&lines)), f);
    let lines = lines.lock().expect("log lines").clone();
    (out, lines)
}

struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = event.metadata().level().to_string();
        event.record(&mut Fields(&mut line));
        self.0.lock().expect("log lines").push(line);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn segments_are_full_size_and_their_zero_tail_ends_the_log() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let written = entries(1..=100, 1);
    {
        let log = open(dir.path(), PREALLOCATED);
        for batch in written.chunks(3) {
            log.append(batch).expect("append");
        }
    }
    let files = segments(dir.path());
    assert!(files.len() >= 3, "100 entries fill several 4 KiB segments");
    for f in &files {
        let data = fs::read(f).expect("reading");
        let (recs, end) = records(f);
        assert_eq!(data.len() as u64, SIZE, "{} is preallocated", f.display());
        assert!(
            !recs.is_empty() && end < data.len(),
            "{} has a tail",
            f.display()
        );
        assert!(data[end..].iter().all(|&b| b == 0), "the tail is zeros");
    }
    let (log, lines) = logged(|| open(dir.path(), PREALLOCATED));
    assert_eq!(
        all(&log),
        written,
        "the zero tails end the segments' records"
    );
    assert!(
        lines.is_empty(),
        "a clean zero tail is not a torn tail: {lines:?}"
    );
}

#[test]
fn a_crash_during_the_record_write_leaves_a_torn_record_over_zeros_that_is_cut_and_logged() {
    let src = tempfile::tempdir().expect("temporary directory");
    {
        let log = open(src.path(), PREALLOCATED);
        log.append(&entries(1..=10, 1)).expect("append");
        log.append(&entries(11..=13, 1)).expect("the last batch");
    }
    let last = segments(src.path()).pop().expect("a segment");
    let name = last.file_name().expect("name").to_owned();
    let (recs, end) = records(&last);
    assert_eq!(recs.len(), 13, "one segment holds all 13 records");
    // A crash while the last batch (11..=13) was written: only the bytes
    // before `cut` reached the file, the zeros after it stayed. (A cut on a
    // record boundary is no torn record, just a shorter batch.)
    for cut in (recs[10] + 1..end).filter(|c| !recs.contains(c)) {
        let dir = tempfile::tempdir().expect("temporary directory");
        copy_dir(src.path(), dir.path());
        let seg = dir.path().join(&name);
        zero(&seg, cut..end);
        let (log, lines) = logged(|| open(dir.path(), PREALLOCATED));
        // The records wholly before the cut.
        let kept = recs.iter().filter(|&&r| r < cut).count() as u64 - 1;
        assert_eq!(all(&log), entries(1..=kept, 1), "cut at {cut}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("WARN") && l.contains("cutting off a torn tail")),
            "cut at {cut}: the torn tail should be logged: {lines:?}"
        );
        let data = fs::read(&seg).expect("reading");
        assert_eq!(data.len() as u64, SIZE, "the segment keeps its size");
        let at = recs[kept as usize];
        assert!(
            data[at..].iter().all(|&b| b == 0),
            "cut at {cut}: the torn record is overwritten with zeros"
        );
        assert!(
            !dir.path().join("wal.truncate").exists(),
            "the intent that guards the zeroing is gone"
        );
        // New entries go where the torn one was, and survive a reopen.
        let more: Vec<Entry> = (kept + 1..=kept + 5).map(|i| entry(i, 2)).collect();
        log.append(&more).expect("appending after recovery");
        drop(log);
        let (log, lines) = logged(|| open(dir.path(), PREALLOCATED));
        let mut want = entries(1..=kept, 1);
        want.extend(more);
        assert_eq!(all(&log), want, "cut at {cut}, after the next append");
        assert!(
            lines.is_empty(),
            "cut at {cut}: nothing more to cut: {lines:?}"
        );
    }
}

#[test]
fn garbage_after_a_torn_record_or_in_the_zero_tail_is_corrupt_naming_the_offset() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let log = open(dir.path(), PREALLOCATED);
        log.append(&entries(1..=10, 1)).expect("append");
    }
    let last = segments(dir.path()).pop().expect("a segment");
    let (_, end) = records(&last);
    let mut data = fs::read(&last).expect("reading");
    data[end + 200] = 0x33;
    fs::write(&last, &data).expect("writing");
    match FileLogStore::open(dir.path(), PREALLOCATED) {
        Err(StorageError::Corrupt(msg)) => assert!(
            msg.contains(&format!(
                "offset {}: non-zero bytes after the end",
                end + 200
            )),
            "{msg}"
        ),
        Err(e) => panic!("expected Corrupt, got: {e}"),
        Ok(_) => panic!("a stray byte in the zero tail was skipped"),
    }
}

/// Writes `n` entries of term 1, truncates from `from`, appends `from..=to`
/// of term 2 and closes; returns the directory.
fn truncate_and_reappend(options: FileLogOptions, n: u64, from: u64, to: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = open(dir.path(), options.clone());
    for batch in entries(1..=n, 1).chunks(4) {
        log.append(batch).expect("append");
    }
    log.truncate_suffix(LogIndex(from)).expect("truncate");
    log.append(&entries(from..=to, 2)).expect("re-append");
    // No orderly shutdown: dropping the store is what a crash leaves on disk
    // (every append and truncation is synced before it returns).
    drop(log);
    dir
}

#[test]
fn stale_records_after_a_truncation_and_a_re_append_are_not_resurrected() {
    for options in [PREALLOCATED, GROWING] {
        // The re-appended entries have the size of the ones they replace, so
        // the new tail ends exactly where the stale record of `to + 1` starts:
        // only zeroing (or shortening) keeps that record from being read back.
        let (n, from, to) = (12, 6, 8);
        let dir = truncate_and_reappend(options.clone(), n, from, to);
        let seg = segments(dir.path()).pop().expect("a segment");
        let (recs, end) = records(&seg);
        assert_eq!(
            recs.len() as u64,
            to,
            "{options:?}: one segment, re-appended up to {to}"
        );
        let fresh = tempfile::tempdir().expect("temporary directory");
        {
            let log = open(fresh.path(), options.clone());
            log.append(&entries(1..=n, 1)).expect("append");
        }
        let (old, _) = records(&segments(fresh.path())[0]);
        assert_eq!(
            end, old[to as usize],
            "the new tail ends where the stale record began"
        );
        let data = fs::read(&seg).expect("reading");
        assert!(
            data[end..].iter().all(|&b| b == 0),
            "{options:?}: the cut-off records are gone"
        );
        let log = open(dir.path(), options.clone());
        let mut want = entries(1..=from - 1, 1);
        want.extend(entries(from..=to, 2));
        assert_eq!(all(&log), want, "{options:?}: after reopening");
        assert_eq!(log.last_index().expect("last"), LogIndex(to));
    }
}

#[test]
fn a_truncation_across_segments_then_a_re_append_reads_back_only_the_new_entries() {
    for options in [PREALLOCATED, GROWING] {
        let dir = truncate_and_reappend(options.clone(), 120, 40, 45);
        let log = open(dir.path(), options.clone());
        let mut want = entries(1..=39, 1);
        want.extend(entries(40..=45, 2));
        assert_eq!(all(&log), want, "{options:?}");
    }
}

#[test]
fn a_crash_part_way_through_zeroing_a_truncated_tail_is_finished_on_open() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let log = open(dir.path(), PREALLOCATED);
        log.append(&entries(1..=20, 1)).expect("append");
    }
    let seg = segments(dir.path()).pop().expect("a segment");
    let (recs, end) = records(&seg);
    // truncate_suffix(10) wrote its intent and zeroed a block in the middle
    // of the tail before the crash: zeros with intact stale records after.
    let mut bytes = 10u64.to_le_bytes().to_vec();
    bytes.extend(crc32c::crc32c(&10u64.to_le_bytes()).to_le_bytes());
    fs::write(dir.path().join("wal.truncate"), bytes).expect("writing the intent");
    zero(&seg, recs[12]..recs[14]);
    let log = open(dir.path(), PREALLOCATED);
    assert_eq!(all(&log), entries(1..=9, 1));
    let data = fs::read(&seg).expect("reading");
    assert!(
        data[recs[9]..end].iter().all(|&b| b == 0),
        "the rest is zeroed"
    );
    assert!(!dir.path().join("wal.truncate").exists());
}

/// Polls until `path` exists with `len` bytes, or fails after a deadline.
fn wait_for_file(path: &Path, len: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs::metadata(path).map(|m| m.len()).ok() != Some(len) {
        assert!(
            Instant::now() < deadline,
            "{} did not reach {len} bytes within 30 s",
            path.display()
        );
        std::thread::park_timeout(Duration::from_millis(2));
    }
}

#[test]
fn a_spare_segment_present_half_written_or_absent_at_open_is_swept_and_prepared_anew() {
    type Leftover = fn(&Path);
    let cases: [(&str, Leftover); 4] = [
        ("absent", |_| {}),
        ("present", |p| {
            fs::write(p, vec![0u8; SIZE as usize]).expect("a spare")
        }),
        ("half-written", |p| {
            fs::write(p, vec![0u8; 1500]).expect("a half spare")
        }),
        ("with a header", |p| {
            // As if the crash came between its header and its rename.
            let mut data = fs::read(&segments(p.parent().expect("dir"))[0]).expect("a segment");
            data.truncate(HEADER_LEN);
            data.resize(SIZE as usize, 0);
            fs::write(p, data).expect("a spare with a header")
        }),
    ];
    for (what, leave) in cases {
        let dir = tempfile::tempdir().expect("temporary directory");
        {
            let log = open(dir.path(), PREALLOCATED);
            log.append(&entries(1..=50, 1)).expect("append");
        }
        let spare = dir.path().join(SPARE);
        assert!(!spare.exists(), "{what}: closing the log removes its spare");
        leave(&spare);
        let files = segments(dir.path());
        let log = open(dir.path(), PREALLOCATED);
        assert!(!spare.exists(), "{what}: open sweeps the leftover spare");
        assert_eq!(
            segments(dir.path()),
            files,
            "{what}: no segment added or lost"
        );
        assert_eq!(all(&log), entries(1..=50, 1), "{what}");
        // The next append starts preparing a spare again.
        log.append(&entries(51..=51, 1)).expect("append");
        wait_for_file(&spare, SIZE);
        // Enough to roll twice: the spare (ready or not) is used, then replaced.
        log.append(&entries(52..=150, 1)).expect("append");
        drop(log);
        assert_eq!(
            all(&open(dir.path(), PREALLOCATED)),
            entries(1..=150, 1),
            "{what}"
        );
    }
}

#[test]
fn a_segment_renamed_in_with_only_its_header_is_removed_on_open() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let log = open(dir.path(), PREALLOCATED);
        log.append(&entries(1..=50, 1)).expect("append");
    }
    // A crash right after a roll put the next segment in place, before the
    // append that rolled wrote into it.
    let last = segments(dir.path()).pop().expect("a segment");
    let next = dir.path().join(format!("{:020}.wal", 51));
    let mut header = fs::read(&last).expect("a segment")[..HEADER_LEN].to_vec();
    header[16..24].copy_from_slice(&51u64.to_le_bytes());
    let crc = crc32c::crc32c(&header[..24]);
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    header.resize(SIZE as usize, 0);
    fs::write(&next, header).expect("an empty preallocated segment");
    let log = open(dir.path(), PREALLOCATED);
    assert!(!next.exists(), "an empty last segment is removed");
    assert_eq!(all(&log), entries(1..=50, 1));
    log.append(&entries(51..=60, 1))
        .expect("appending after it");
}

#[test]
fn without_preallocation_segments_grow_and_torn_tails_are_cut_short() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let log = open(dir.path(), GROWING);
        for batch in entries(1..=100, 1).chunks(3) {
            log.append(batch).expect("append");
        }
    }
    assert!(
        !dir.path().join(SPARE).exists(),
        "no spare without preallocation"
    );
    let files = segments(dir.path());
    for f in &files {
        let (_, end) = records(f);
        assert_eq!(
            fs::metadata(f).expect("metadata").len(),
            end as u64,
            "{} ends with its records",
            f.display()
        );
    }
    let last = files.last().expect("a segment");
    let (recs, end) = records(last);
    fs::OpenOptions::new()
        .write(true)
        .open(last)
        .and_then(|f| f.set_len(end as u64 - 7))
        .expect("cutting");
    let log = open(dir.path(), GROWING);
    assert_eq!(all(&log), entries(1..=99, 1));
    assert_eq!(
        fs::metadata(last).expect("metadata").len(),
        *recs.last().expect("a record") as u64,
        "the torn record is cut off the file"
    );
    // A log written without preallocation opens with it, and the other way round.
    drop(log);
    let log = open(dir.path(), PREALLOCATED);
    log.append(&entries(100..=160, 1)).expect("append");
    drop(log);
    let log = open(dir.path(), GROWING);
    log.truncate_suffix(LogIndex(130)).expect("truncate");
    log.append(&entries(130..=140, 2)).expect("append");
    drop(log);
    let mut want = entries(1..=129, 1);
    want.extend(entries(130..=140, 2));
    assert_eq!(all(&open(dir.path(), PREALLOCATED)), want);
}
