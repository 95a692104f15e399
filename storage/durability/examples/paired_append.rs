//! Paired append latencies: each round times one fdatasync floor write, one
//! LMDB append and one file-log append back to back, so that all three see
//! the same disk weather (a shared virtual disk's fdatasync latency can
//! jump tenfold between one criterion benchmark and the next). Prints the
//! medians and the median of the per-round ratios to the floor.
//!
//! ```text
//! cargo run --release -p raftkit-storage-durability --example paired_append [rounds]
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raftkit::{Entry, LogIndex, LogStore, Term};
use raftkit_file::{FileLogOptions, FileLogStore};
use raftkit_lmdb::{LmdbConfig, LmdbStore};

const ENTRY_BYTES: usize = 256;
const PREALLOCATED: u64 = 64 << 20;

struct Floor {
    file: File,
    offset: u64,
}

impl Floor {
    fn new(dir: &std::path::Path) -> Floor {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.join("floor.bin"))
            .expect("creating the floor's file");
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..PREALLOCATED >> 20 {
            file.write_all(&chunk).expect("preallocating");
        }
        file.sync_all().expect("sync");
        Floor { file, offset: 0 }
    }

    /// Overwrites `len` bytes at the next offset and fdatasyncs.
    fn write(&mut self, len: usize) -> Duration {
        if self.offset + len as u64 > PREALLOCATED {
            self.offset = 0;
        }
        let chunk = vec![0x5Au8; len];
        let start = Instant::now();
        self.file
            .write_all_at(&chunk, self.offset)
            .expect("writing");
        self.file.sync_data().expect("fdatasync");
        self.offset += len as u64;
        start.elapsed()
    }
}

fn append(log: &impl LogStore, next: &mut u64, n: u64) -> Duration {
    let payload = Bytes::from(vec![0xA5u8; ENTRY_BYTES]);
    let batch: Vec<Entry> = (*next..*next + n)
        .map(|i| Entry::command(LogIndex(i), Term(1), payload.clone()))
        .collect();
    *next += n;
    let start = Instant::now();
    log.append(&batch).expect("append");
    start.elapsed()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut floor = Floor::new(dir.path());
    let lmdb = LmdbStore::open(dir.path().join("lmdb"), LmdbConfig::default())
        .expect("opening LMDB")
        .log();
    let file = FileLogStore::open(dir.path().join("wal"), FileLogOptions::default())
        .expect("opening the WAL");
    let (mut next_lmdb, mut next_file) = (1, 1);
    println!("{rounds} rounds per batch size, entries of {ENTRY_BYTES} bytes; medians");
    for n in [1u64, 16, 256] {
        // The floor writes what the batch's payload would take, at least 4 KiB.
        let floor_len = (n as usize * ENTRY_BYTES).max(4 << 10);
        let (mut f, mut l, mut w) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            f.push(floor.write(floor_len).as_secs_f64() * 1e3);
            l.push(append(&lmdb, &mut next_lmdb, n).as_secs_f64() * 1e3);
            w.push(append(&file, &mut next_file, n).as_secs_f64() * 1e3);
        }
        let ratio = |x: &[f64]| median(x.iter().zip(&f).map(|(a, b)| a / b).collect());
        let mib_s = |ms: f64| (n as usize * ENTRY_BYTES) as f64 / (ms / 1e3) / (1 << 20) as f64;
        let (fm, lm, wm) = (median(f.clone()), median(l.clone()), median(w.clone()));
        println!(
            "batch {n:>3}: floor ({} KiB + fdatasync) {fm:.3} ms | lmdb {lm:.3} ms ({:.1} MiB/s, {:.2}x floor) | file {wm:.3} ms ({:.1} MiB/s, {:.2}x floor)",
            floor_len >> 10,
            mib_s(lm),
            ratio(&l),
            mib_s(wm),
            ratio(&w),
        );
    }
    let mut big = Vec::new();
    for _ in 0..rounds.min(50) {
        big.push(floor.write(4 << 20).as_secs_f64() * 1e3);
    }
    let bm = median(big);
    println!(
        "sequential bandwidth (4 MiB + fdatasync): {bm:.3} ms, {:.0} MiB/s",
        4.0 / (bm / 1e3)
    );
}
