//! Kill -9 a child that appends, truncates and purges, at seeded moments,
//! then reopen the store and check that every operation the child reported
//! as returned survived, and that nothing else is there but what the
//! interrupted operation may have written.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use raftkit::{Entry, LogIndex, LogStore, StorageError};
use raftkit_file::{FileLogOptions, FileLogStore};
use raftkit_lmdb::{LmdbConfig, LmdbStore};
use raftkit_storage_durability::{Model, Op, Workload};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const KILLS: u64 = 220;
/// The whole run of one backend fails past this (the target is well under).
const TIME_LIMIT: Duration = Duration::from_secs(120);

/// Reads the whole log of the store in `dir`, dropping the store again.
type ReadAll = fn(&Path) -> Result<Vec<Entry>, StorageError>;

fn read_file_log(dir: &Path) -> Result<Vec<Entry>, StorageError> {
    let log = FileLogStore::open(
        dir,
        FileLogOptions {
            segment_size_bytes: 64 << 10,
            ..FileLogOptions::default()
        },
    )?;
    log.get(LogIndex(0), LogIndex(u64::MAX))
}

fn read_lmdb_log(dir: &Path) -> Result<Vec<Entry>, StorageError> {
    let log = LmdbStore::open(dir, LmdbConfig::default())?.log();
    log.get(LogIndex(0), LogIndex(u64::MAX))
}

fn spawn(
    backend: &str,
    dir: &Path,
    seed: u64,
    term: u64,
    next: u64,
) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_storage-crash-child"))
        .arg(backend)
        .arg(dir)
        .args([seed.to_string(), term.to_string(), next.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning storage-crash-child");
    let stdout = child.stdout.take().expect("the child's stdout");
    (child, BufReader::new(stdout))
}

/// Parses "<k> <op>" and checks it is op `k` of `workload`.
fn expect_op(line: &str, k: u64, workload: &mut Workload, what: &str) -> Op {
    let want = workload.next_op();
    let (num, op) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("{what}: bad line {line:?}"));
    let got: Op = op.parse().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(num, k.to_string(), "{what}: operations out of order");
    assert_eq!(
        got, want,
        "{what}: the child ran another operation than the workload's"
    );
    got
}

struct Totals {
    ops: u64,
    interrupted_visible: u64,
}

fn crash_loop(backend: &str, read_all: ReadAll, seed: u64) -> Totals {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut model = Model::default();
    let mut next = 1;
    let mut totals = Totals {
        ops: 0,
        interrupted_visible: 0,
    };
    for run in 0..KILLS {
        let what = format!("{backend}, seed {seed}, run {run}");
        let (child_seed, term) = (seed.wrapping_mul(1_000_003) ^ run, (run + 1) * 1_000_000);
        let mut workload = if model.last == 0 {
            Workload::new(child_seed, term, next)
        } else {
            Workload::resume(child_seed, term, model.first, model.last + 1)
        };
        let (mut child, mut out) = spawn(backend, dir.path(), child_seed, term, next);
        // Kill after a seeded number of reported operations (0: perhaps
        // before the store is even open), plus a seeded jitter.
        let lines = rng.random_range(0..=14u64);
        let jitter = Duration::from_micros(rng.random_range(0..3_000));
        let mut line = String::new();
        let mut k = 0;
        while k < lines {
            line.clear();
            if out.read_line(&mut line).expect("reading the child") == 0 {
                panic!("{what}: the child exited early (see its stderr above)");
            }
            let text = line.trim_end();
            if let Some(rest) = text.strip_prefix("READY ") {
                let want = format!("{} {}", model.first, model.last);
                assert_eq!(
                    rest, want,
                    "{what}: the child opened another log than the parent read"
                );
                continue;
            }
            k += 1;
            model.apply(&expect_op(text, k, &mut workload, &what));
        }
        // Not a wait for a condition: a random delay, so the kill lands at
        // any point of an operation, not just after a print.
        std::thread::sleep(jitter);
        child.kill().expect("SIGKILL");
        child.wait().expect("reaping the child");
        // Whatever the child printed before it died also returned.
        loop {
            line.clear();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let text = line.trim_end();
            if text.starts_with("READY ") {
                continue;
            }
            k += 1;
            model.apply(&expect_op(text, k, &mut workload, &what));
        }
        totals.ops += k;
        let next_before = workload.next_index();
        let pending = workload.next_op();
        let held = read_all(dir.path()).unwrap_or_else(|e| panic!("{what}: reopening: {e}"));
        if let Err(e) = model.check(&held, Some(&pending)) {
            panic!("{what}: after {k} operations, killed during {pending}: {e}");
        }
        let (held_first, held_last) = match (held.first(), held.last()) {
            (Some(f), Some(l)) => (f.index.0, l.index.0),
            _ => (0, 0),
        };
        let took_effect = match pending {
            Op::Append { .. } => held_last > model.last,
            Op::Truncate { .. } => held_last < model.last,
            Op::Purge { .. } => held_first > model.first,
        };
        totals.interrupted_visible += u64::from(took_effect);
        // The next run starts from what the store holds.
        model
            .versions
            .split_off(&held.first().map_or(u64::MAX, |e| e.index.0));
        for e in &held {
            model.versions.insert(e.index.0, e.term.0);
        }
        (model.first, model.last) = (held_first, held_last);
        next = match (held.is_empty(), &pending) {
            (true, Op::Truncate { from }) => *from,
            (true, _) => next_before,
            (false, _) => model.last + 1,
        };
        assert!(
            started.elapsed() < TIME_LIMIT,
            "{what}: over {TIME_LIMIT:?}"
        );
    }
    println!(
        "{backend}: {KILLS} kills, {} operations returned, the interrupted operation \
         had (partly) taken effect after {} of the kills, {:?}",
        totals.ops,
        totals.interrupted_visible,
        started.elapsed()
    );
    totals
}

#[test]
fn file_log_keeps_every_returned_operation_across_kill_9() {
    let totals = crash_loop("file", read_file_log, 1);
    assert!(
        totals.ops > KILLS,
        "the children should get work done between kills"
    );
}

#[test]
fn lmdb_log_keeps_every_returned_operation_across_kill_9() {
    let totals = crash_loop("lmdb", read_lmdb_log, 2);
    assert!(
        totals.ops > KILLS,
        "the children should get work done between kills"
    );
}

/// Starts a child on `dir`, waits for its READY line, runs `open` in this
/// process, then kills the child.
fn open_while_a_child_holds(
    backend: &str,
    dir: &Path,
    open: impl FnOnce() -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let (mut child, mut out) = spawn(backend, dir, 9, 1, 1);
    let mut line = String::new();
    out.read_line(&mut line).expect("reading the child");
    assert!(
        line.starts_with("READY "),
        "the child should open the store first: {line:?}"
    );
    let result = open();
    child.kill().expect("SIGKILL");
    child.wait().expect("reaping the child");
    result
}

#[track_caller]
fn expect_locked(result: Result<(), StorageError>, dir: &Path) {
    match result {
        Err(StorageError::Locked(msg)) => assert!(
            msg.contains(&dir.display().to_string()),
            "Locked should name the directory: {msg}"
        ),
        Err(e) => panic!("expected StorageError::Locked, got: {e}"),
        Ok(()) => panic!("a store open in another process was opened again"),
    }
}

#[test]
fn a_store_open_in_another_process_is_locked_and_free_after_its_death() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let lmdb = || LmdbStore::open(dir.path(), LmdbConfig::default()).map(drop);
    expect_locked(
        open_while_a_child_holds("lmdb", dir.path(), lmdb),
        dir.path(),
    );
    lmdb().expect("opening after the holder was killed");
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = || FileLogStore::open(dir.path(), FileLogOptions::default()).map(drop);
    expect_locked(
        open_while_a_child_holds("file", dir.path(), file),
        dir.path(),
    );
    file().expect("opening after the holder was killed");
}
