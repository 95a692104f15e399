//! Append throughput and latency of the durable backends, next to the
//! physical floor of the same file system.
//!
//! ```text
//! floor/overwrite_4k_fdatasync   write 4 KiB into a preallocated file + fdatasync: the
//!                                least a durable append can cost (compare with */append/1)
//! floor/write_4k_fdatasync       the same at the end of a growing file (the size changes,
//!                                so fdatasync also commits the inode)
//! floor/overwrite_64k_fdatasync  64 KiB (one batch of 256 x 256 B) + fdatasync
//! floor/write_4m_fdatasync       4 MiB at the end + fdatasync: sequential write bandwidth
//! lmdb/append/{1,16,256}       one durable LmdbStore append of N entries of 256 bytes
//! file/append/{1,16,256}       one durable FileLogStore append of N entries of 256 bytes
//!                              (default options: preallocated, zero-filled segments)
//! file-growing/append/{1,16,256}  the same with `preallocate: false` (appends grow the file)
//! ```
//!
//! Everything runs in one temporary directory (set `TMPDIR` to measure
//! another file system). Run with `cargo bench -p raftkit-storage-durability
//! --bench append` (about 1.5 minutes), or add `-- --quick` for a short run;
//! estimates are in `target/criterion/*/new/estimates.json`.
//!
//! Measured 2026-11-27 on the 2-core development VM (ext4 on a virtual disk)
//! with the command above, in microseconds. Another job shared the machine
//! (load average 1.1-1.6); two further runs, in which its disk traffic pushed
//! several groups (lmdb's and file-growing's among them) into milliseconds,
//! are left out.
//!
//! ```text
//!                          run 1   run 2   run 3
//! floor/overwrite_4k        187     182     134
//! floor/write_4k            284     256     249
//! file/append/1             177     140     147   ÷ overwrite_4k: 0.95x 0.77x 1.10x (target <= 1.5x)
//! file/append/16            207     149     147
//! file/append/256           452     398     349
//! file-growing/append/1     202     239     182   ÷ overwrite_4k: 1.08x 1.32x 1.36x
//! file-growing/append/16    213     314     204
//! file-growing/append/256   349     443     316
//! ```
//!
//! Before segments were preallocated, a quiet run gave file/append/1 214 µs
//! against a 140 µs overwrite floor (1.53x). At batch 256 preallocation buys
//! little and can cost: the spare segment's zero-fill (64 MiB, written by a
//! background thread about every 1000 appends of 64 KiB) shares the disk and
//! its cache flushes with the appends being timed.

#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raftkit::{Entry, LogIndex, LogStore, Term};
use raftkit_file::{FileLogOptions, FileLogStore};
use raftkit_lmdb::{LmdbConfig, LmdbStore};

const ENTRY_BYTES: usize = 256;
const BATCHES: [u64; 3] = [1, 16, 256];
/// The floor's file is cut back to empty once it passes this.
const FLOOR_FILE_MAX: u64 = 256 << 20;
/// The size of the floor's preallocated file.
const FLOOR_PREALLOCATED: u64 = 64 << 20;

/// Appends `iters` batches of `n` entries at `next`, timing only the appends.
fn append_batches(log: &impl LogStore, next: &mut u64, n: u64, iters: u64) -> Duration {
    let payload = Bytes::from(vec![0xA5u8; ENTRY_BYTES]);
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let batch: Vec<Entry> = (*next..*next + n)
            .map(|i| Entry::command(LogIndex(i), Term(1), payload.clone()))
            .collect();
        let start = Instant::now();
        log.append(&batch).expect("a benchmark append");
        total += start.elapsed();
        *next += n;
    }
    total
}

fn bench_backend(c: &mut Criterion, name: &str, log: &impl LogStore) {
    let mut group = c.benchmark_group(format!("{name}/append"));
    let mut next = 1;
    for n in BATCHES {
        group.throughput(Throughput::Bytes(n * ENTRY_BYTES as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| append_batches(log, &mut next, n, iters))
        });
    }
    group.finish();
}

fn lmdb(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = LmdbStore::open(dir.path(), LmdbConfig::default()).expect("opening LMDB");
    bench_backend(c, "lmdb", &store.log());
}

fn file(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = FileLogStore::open(dir.path(), FileLogOptions::default()).expect("opening the WAL");
    bench_backend(c, "file", &log);
}

fn file_growing(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = FileLogOptions {
        preallocate: false,
        ..FileLogOptions::default()
    };
    let log = FileLogStore::open(dir.path(), options).expect("opening the WAL");
    bench_backend(c, "file-growing", &log);
}

fn floor_file(dir: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(dir.join("floor.bin"))
        .expect("creating the floor's file")
}

/// Writes `iters` chunks of `len` bytes at the end of a file, each followed
/// by `fdatasync`, timing only the write and the sync.
fn write_and_sync(file: &mut File, len: usize, iters: u64) -> Duration {
    let chunk = vec![0x5Au8; len];
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        if file.metadata().expect("metadata").len() > FLOOR_FILE_MAX {
            // Keep the file bounded; the cut and its sync are not timed.
            file.set_len(0).expect("cutting the floor's file");
            file.sync_all().expect("syncing the cut");
            std::io::Seek::rewind(file).expect("rewinding");
        }
        let start = Instant::now();
        file.write_all(&chunk).expect("writing");
        file.sync_data().expect("fdatasync");
        total += start.elapsed();
    }
    total
}

/// A file of `FLOOR_PREALLOCATED` written bytes, synced.
fn preallocated_file(dir: &Path) -> File {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.join("floor-prealloc.bin"))
        .expect("creating the preallocated file");
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..FLOOR_PREALLOCATED >> 20 {
        file.write_all(&chunk).expect("preallocating");
    }
    file.sync_all().expect("syncing the preallocated file");
    file
}

/// Writes `iters` chunks of `len` bytes at successive offsets of a
/// preallocated file (wrapping), each followed by `fdatasync`.
fn overwrite_and_sync(file: &File, offset: &mut u64, len: usize, iters: u64) -> Duration {
    let chunk = vec![0x5Au8; len];
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        if *offset + len as u64 > FLOOR_PREALLOCATED {
            *offset = 0;
        }
        let start = Instant::now();
        std::os::unix::fs::FileExt::write_all_at(file, &chunk, *offset).expect("writing");
        file.sync_data().expect("fdatasync");
        total += start.elapsed();
        *offset += len as u64;
    }
    total
}

fn floor(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut group = c.benchmark_group("floor");
    let prealloc = preallocated_file(dir.path());
    let mut offset = 0;
    for (name, len) in [
        ("overwrite_4k_fdatasync", 4 << 10),
        ("overwrite_64k_fdatasync", 64 << 10),
    ] {
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| overwrite_and_sync(&prealloc, &mut offset, len, iters))
        });
    }
    let mut file = floor_file(dir.path());
    for (name, len) in [
        ("write_4k_fdatasync", 4 << 10),
        ("write_4m_fdatasync", 4 << 20),
    ] {
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| write_and_sync(&mut file, len, iters))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = floor, lmdb, file, file_growing
}
criterion_main!(benches);
