//! The child process of the crash tests: opens a store and runs the seeded
//! workload until killed, printing each operation as soon as it returns.
//!
//! ```text
//! storage-crash-child <file|lmdb> <dir> <seed> <term> <next>
//!   prints "READY <first> <last>", then "<k> <op>" after op k returns
//! ```

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use raftkit::{LogStore, StorageResult};
use raftkit_file::{FileLogOptions, FileLogStore};
use raftkit_lmdb::{LmdbConfig, LmdbStore};
use raftkit_storage_durability::{Op, Workload};

/// Segments small enough that purges delete files and appends roll often.
const FILE_SEGMENT_BYTES: u64 = 64 << 10;
/// A bound on a child left running by a parent that failed to kill it.
const MAX_OPS: u64 = 100_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let parsed = match &args[1..] {
        [backend, dir, seed, term, next] => seed
            .parse()
            .and_then(|s| Ok((s, term.parse()?, next.parse()?)))
            .ok()
            .map(|(s, t, n)| (backend.clone(), dir.clone(), s, t, n)),
        _ => None,
    };
    let Some((backend, dir, seed, term, next)) = parsed else {
        eprintln!("usage: storage-crash-child <file|lmdb> <dir> <seed> <term> <next>");
        return ExitCode::from(2);
    };
    let result = match backend.as_str() {
        "file" => FileLogStore::open(
            Path::new(&dir),
            FileLogOptions {
                segment_size_bytes: FILE_SEGMENT_BYTES,
                ..FileLogOptions::default()
            },
        )
        .and_then(|log| run(&log, seed, term, next)),
        "lmdb" => LmdbStore::open(Path::new(&dir), LmdbConfig::default())
            .and_then(|store| run(&store.log(), seed, term, next)),
        other => {
            eprintln!("unknown backend {other:?}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storage-crash-child: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(log: &impl LogStore, seed: u64, term: u64, next: u64) -> StorageResult<()> {
    let (first, last) = (log.first_index()?.0, log.last_index()?.0);
    let mut workload = if last == 0 {
        Workload::new(seed, term, next)
    } else {
        Workload::resume(seed, term, first, last + 1)
    };
    let mut out = std::io::stdout().lock();
    say(&mut out, format_args!("READY {first} {last}"));
    for k in 1..=MAX_OPS {
        let op = workload.next_op();
        match op {
            Op::Append { .. } => log.append(&op.entries())?,
            Op::Truncate { from } => log.truncate_suffix(raftkit::LogIndex(from))?,
            Op::Purge { upto } => log.purge_prefix(raftkit::LogIndex(upto))?,
        }
        say(&mut out, format_args!("{k} {op}"));
    }
    Ok(())
}

/// Prints a line and flushes it, so the parent sees it before the next op.
fn say(out: &mut impl Write, line: std::fmt::Arguments<'_>) {
    // A closed pipe means the parent is gone; the kill follows anyway.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
