//! `raftkit bench`: benchmarks that swap transports and storage on one workload.
//!
//! ```text
//!  bench cluster ─▶ N real Raft servers in this process (inmem | tcp | quic) × (memory | file | lmdb),
//!                   C closed-loop proposers on the leader ─▶ one row per run
//!  bench floor   ─▶ append + fdatasync, loopback TCP round trip and bandwidth
//!  bench http    ─▶ closed-loop load on running nodes through the HTTP API
//!  bench memory  ─▶ idle node RSS; RSS + disk while 10M entries are applied
//!                        │
//!                        ▼
//!            table on stdout, --json FILE (one object per line and run), --csv FILE,
//!            --svg FILE (cluster, memory)
//! ```
//!
//! The JSON rows use the field names of the HashiCorp Raft harness in
//! `shared/bench/hashicorp` (`mode, clients, value_size, ops, seconds,
//! ops_per_sec, p50_us, p99_us, p999_us, errors, self_cpu_cores,
//! other_cpu_cores`), so one script can put both side by side.

mod chart;
pub mod cluster;
pub mod floor;
pub mod http;
pub mod measure;
pub mod memory;
mod output;

use std::time::Duration;

use clap::Subcommand;

use crate::Failure;

/// `raftkit bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// An in-process cluster of real `Raft` instances: closed-loop proposers
    /// on the leader, one row per transport × storage × client count.
    Cluster(cluster::ClusterArgs),
    /// The machine's floors: append + fdatasync latency on a directory's
    /// filesystem, loopback TCP round trip and stream bandwidth.
    Floor(floor::FloorArgs),
    /// Closed-loop load on running nodes through their HTTP API.
    Http(http::HttpArgs),
    /// RSS of an idle node, then RSS and disk while millions of entries are
    /// applied with snapshots and log compaction on.
    Memory(memory::MemoryArgs),
}

/// Runs a `raftkit bench` subcommand.
pub fn execute(cmd: BenchCmd) -> Result<(), Failure> {
    match cmd {
        BenchCmd::Cluster(args) => cluster::execute(args),
        BenchCmd::Floor(args) => floor::execute(args),
        BenchCmd::Http(args) => http::execute(args),
        BenchCmd::Memory(args) => memory::execute(args),
    }
}

/// Parses a duration such as `10s`, `500ms` or `1m 30s`.
///
/// ```
/// use std::time::Duration;
/// use raftkit_node::bench::parse_duration;
/// assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
/// assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
/// assert!(parse_duration("ten").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration such as 10s or 500ms: {e}"))
}

fn failure(e: impl std::fmt::Display) -> Failure {
    Failure::Other(anyhow::anyhow!("{e}"))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    runtime_with(None)
}

/// A multi-threaded runtime with `workers` worker threads (default: one per core).
fn runtime_with(workers: Option<usize>) -> Result<tokio::runtime::Runtime, Failure> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    builder
        .enable_all()
        .build()
        .map_err(|e| failure(format_args!("starting the tokio runtime: {e}")))
}
