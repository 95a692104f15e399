//! `raftkit bench floor`: what the machine itself costs, to read the
//! cluster figures against (the same tests as `shared/bench/hashicorp/floors.c`).
//!
//! ```text
//!  fsync_append_4k_fdatasync        4 KiB write at the end of a new file + fdatasync, in --dir
//!  fsync_overwrite_4k_fdatasync     4 KiB overwrite in a preallocated file + fdatasync
//!  tcp_loopback_pingpong_64B_any    64 B request, 64 B reply, TCP_NODELAY, two threads
//!  tcp_loopback_stream_1MiB_writes  one-way bandwidth with 1 MiB writes
//! ```
//!
//! A Raft commit on one machine cannot be faster than one append + fdatasync
//! on the leader plus one round trip to a follower that does the same.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use serde::Serialize;

use super::measure::{self, LatencySummary};
use super::{failure, output, parse_duration};
use crate::Failure;

/// Block size of the fsync tests.
const BLOCK: usize = 4096;
/// Size of the preallocated file of the overwrite test.
const PREALLOCATED: u64 = 64 << 20;
/// Message size of the ping-pong.
const PING: usize = 64;
/// Write size of the stream test.
const STREAM_WRITE: usize = 1 << 20;

/// `raftkit bench floor`.
#[derive(Clone, Debug, Args)]
pub struct FloorArgs {
    /// A directory on the filesystem to measure (the data directory's);
    /// a temporary file is written there and removed.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// How long each test runs.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Append one JSON object per test to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A label copied into every row.
    #[arg(long)]
    pub label: Option<String>,
}

/// One test's result.
#[derive(Clone, Debug, Serialize)]
pub struct FloorRow {
    /// The test, named as in `floors.c`.
    pub test: String,
    /// Operations (round trips, syncs) done.
    pub n: u64,
    /// How long the test ran.
    pub seconds: f64,
    /// `n / seconds` (zero for the stream test).
    pub ops_per_sec: f64,
    /// Latency percentiles (zero for the stream test).
    #[serde(flatten)]
    pub latency: LatencySummary,
    /// Bytes per second (stream test only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gbytes_per_sec: Option<f64>,
    /// The filesystem type of the directory (fsync tests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs: Option<String>,
    /// `--label`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// When the test ended (RFC 3339).
    pub timestamp: String,
}

/// Runs `raftkit bench floor`.
pub fn execute(args: FloorArgs) -> Result<(), Failure> {
    if args.duration.is_zero() {
        return Err(failure("--duration must be longer than 0s"));
    }
    let rows = run_all(&args.dir, args.duration)?;
    for mut row in rows.iter().cloned() {
        row.label = args.label.clone();
        if let Some(path) = &args.json {
            output::append_json(path, &row)?;
        }
    }
    print!("{}", table(&rows));
    Ok(())
}

/// Runs every floor test, `each` long.
pub fn run_all(dir: &Path, each: Duration) -> Result<Vec<FloorRow>, Failure> {
    if !dir.is_dir() {
        return Err(failure(format_args!(
            "--dir {} is not a directory",
            dir.display()
        )));
    }
    Ok(vec![
        fsync_test(dir, each, false)?,
        fsync_test(dir, each, true)?,
        tcp_pingpong(each)?,
        tcp_stream(each)?,
    ])
}

/// The summary table.
pub fn table(rows: &[FloorRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let us = |x: f64| {
                if r.gbytes_per_sec.is_some() {
                    "-".to_string()
                } else {
                    format!("{x:.1}")
                }
            };
            vec![
                r.test.clone(),
                if r.gbytes_per_sec.is_some() {
                    "-".to_string()
                } else {
                    output::thousands(r.ops_per_sec)
                },
                us(r.latency.p50_us),
                us(r.latency.p99_us),
                us(r.latency.p999_us),
                output::opt(r.gbytes_per_sec, 2),
            ]
        })
        .collect();
    output::table(
        &["test", "ops/s", "p50 µs", "p99 µs", "p99.9 µs", "GB/s"],
        &cells,
    )
}

fn row(test: &str, n: u64, seconds: f64, h: &hdrhistogram::Histogram<u64>) -> FloorRow {
    FloorRow {
        test: test.to_string(),
        n,
        seconds: (seconds * 1000.0).round() / 1000.0,
        ops_per_sec: measure::round1(n as f64 / seconds.max(1e-9)),
        latency: LatencySummary::of(h),
        gbytes_per_sec: None,
        fs: None,
        label: None,
        timestamp: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    }
}

fn io_failure(what: &str, e: std::io::Error) -> Failure {
    failure(format_args!("{what}: {e}"))
}

fn fsync_test(dir: &Path, each: Duration, overwrite: bool) -> Result<FloorRow, Failure> {
    let path = dir.join(format!(
        ".raftkit-floor-{}-{}.tmp",
        std::process::id(),
        if overwrite { "overwrite" } else { "append" }
    ));
    // Remove the file however the test ends.
    struct Remove<'a>(&'a Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| io_failure(&format!("creating {}", path.display()), e))?;
    let _remove = Remove(&path);
    let block = vec![b'x'; BLOCK];
    if overwrite {
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..(PREALLOCATED >> 20) {
            file.write_all(&chunk)
                .map_err(|e| io_failure("preallocating", e))?;
        }
        file.sync_all().map_err(|e| io_failure("fsync", e))?;
    }
    let mut h = measure::new_histogram();
    let start = Instant::now();
    let mut n = 0u64;
    let mut offset = 0u64;
    while start.elapsed() < each {
        let t = Instant::now();
        if overwrite {
            file.write_all_at(&block, offset)
        } else {
            file.write_all(&block)
        }
        .map_err(|e| io_failure("writing", e))?;
        file.sync_data().map_err(|e| io_failure("fdatasync", e))?;
        measure::record(&mut h, t.elapsed());
        n += 1;
        offset = (offset + BLOCK as u64) % PREALLOCATED;
    }
    let name = if overwrite {
        "fsync_overwrite_4k_fdatasync"
    } else {
        "fsync_append_4k_fdatasync"
    };
    let mut r = row(name, n, start.elapsed().as_secs_f64(), &h);
    r.fs = super::cluster::fs_type(dir);
    Ok(r)
}

fn loopback_pair() -> Result<(TcpStream, TcpStream), Failure> {
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).map_err(|e| io_failure("binding loopback", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| io_failure("binding loopback", e))?;
    let client = TcpStream::connect(addr).map_err(|e| io_failure("connecting loopback", e))?;
    let (server, _) = listener
        .accept()
        .map_err(|e| io_failure("accepting loopback", e))?;
    for s in [&client, &server] {
        s.set_nodelay(true)
            .map_err(|e| io_failure("setting TCP_NODELAY", e))?;
    }
    Ok((client, server))
}

fn tcp_pingpong(each: Duration) -> Result<FloorRow, Failure> {
    let (mut client, mut server) = loopback_pair()?;
    let echo = std::thread::spawn(move || {
        let mut b = [0u8; PING];
        while server.read_exact(&mut b).is_ok() {
            if server.write_all(&b).is_err() {
                break;
            }
        }
    });
    let mut b = [b'p'; PING];
    let mut round_trip = |b: &mut [u8; PING]| -> Result<(), Failure> {
        client
            .write_all(b)
            .and_then(|()| client.read_exact(b))
            .map_err(|e| io_failure("loopback ping-pong", e))
    };
    for _ in 0..2000 {
        round_trip(&mut b)?;
    }
    let mut h = measure::new_histogram();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < each {
        let t = Instant::now();
        round_trip(&mut b)?;
        measure::record(&mut h, t.elapsed());
        n += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(client);
    let _ = echo.join();
    Ok(row("tcp_loopback_pingpong_64B_any", n, seconds, &h))
}

fn tcp_stream(each: Duration) -> Result<FloorRow, Failure> {
    let (mut client, mut server) = loopback_pair()?;
    let sink = std::thread::spawn(move || {
        let mut b = vec![0u8; STREAM_WRITE];
        let mut bytes = 0u64;
        while let Ok(n) = server.read(&mut b) {
            if n == 0 {
                break;
            }
            bytes += n as u64;
        }
        bytes
    });
    let b = vec![b's'; STREAM_WRITE];
    let start = Instant::now();
    let mut writes = 0u64;
    while start.elapsed() < each {
        client
            .write_all(&b)
            .map_err(|e| io_failure("loopback stream", e))?;
        writes += 1;
    }
    drop(client);
    let bytes = sink
        .join()
        .map_err(|_| failure("the loopback reader thread panicked"))?;
    let seconds = start.elapsed().as_secs_f64();
    let mut r = row(
        "tcp_loopback_stream_1MiB_writes",
        writes,
        seconds,
        &measure::new_histogram(),
    );
    r.ops_per_sec = 0.0;
    r.gbytes_per_sec = Some(measure::round2(bytes as f64 / seconds / 1e9));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: FloorArgs,
    }

    #[test]
    fn floor_arguments() {
        let a = Cli::try_parse_from(["floor", "--dir", "/x", "--duration", "200ms"])
            .unwrap()
            .args;
        assert_eq!(a.dir, PathBuf::from("/x"));
        assert_eq!(a.duration, Duration::from_millis(200));
        let a = Cli::try_parse_from(["floor"]).unwrap().args;
        assert_eq!(a.duration, Duration::from_secs(5));
        assert!(Cli::try_parse_from(["floor", "--duration", "x"]).is_err());
    }

    #[test]
    fn missing_directory_is_an_error() {
        let e = run_all(Path::new("/nonexistent/raftkit"), Duration::from_millis(10)).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }

    #[test]
    fn short_floor_run_measures_every_test() {
        let dir = tempfile::tempdir().unwrap();
        let rows = run_all(dir.path(), Duration::from_millis(100)).unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.test.as_str()).collect();
        assert_eq!(
            names,
            [
                "fsync_append_4k_fdatasync",
                "fsync_overwrite_4k_fdatasync",
                "tcp_loopback_pingpong_64B_any",
                "tcp_loopback_stream_1MiB_writes"
            ]
        );
        for r in &rows[..3] {
            assert!(r.n > 0, "{r:?}");
            assert!(
                r.latency.p50_us > 0.0 && r.latency.p50_us <= r.latency.p99_us,
                "{r:?}"
            );
            let json = serde_json::to_value(r).unwrap();
            for f in [
                "n",
                "seconds",
                "ops_per_sec",
                "p50_us",
                "p99_us",
                "p999_us",
                "max_us",
            ] {
                assert!(json[f].is_number(), "{f} missing: {json}");
            }
        }
        assert!(
            rows[3].gbytes_per_sec.is_some_and(|g| g > 0.0),
            "{:?}",
            rows[3]
        );
        // The temporary files are gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(table(&rows).contains("tcp_loopback_pingpong_64B_any"));
    }
}
