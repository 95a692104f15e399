//! `raftkit bench cluster`: N real `Raft` servers in this process over a
//! real transport and real storage, C closed-loop proposers on the leader.
//!
//! ```text
//!  tempdir/n1..nN ─▶ storage (memory | file | lmdb, fsync on)
//!  127.0.0.1:0    ─▶ transport (inmem | tcp | quic with throw-away certificates)
//!                    └─▶ Raft::new × N ─▶ bootstrap n1 with every voter ─▶ leader + barrier
//!  C tasks: loop { apply(16-byte key ‖ value) on the leader; time it }
//!           ├── warm-up (not counted)
//!           └── window: ops that started and finished inside it, HdrHistogram
//! ```
//!
//! The workload is the one of the HashiCorp Raft harness in
//! `shared/bench/hashicorp` (`bench.go`): command = 16-byte key (client id,
//! sequence) + value, a map state machine under a mutex with the value
//! copied, latency until committed and applied on the leader, the library's
//! default timing (1 s heartbeat and election timeouts).
//!
//! Storage and transports are assembled as `node::run` assembles them, with
//! two differences a single process needs: one shared in-memory network for
//! `inmem`, and port 0 (the bound address goes into the configuration).

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use raftkit::wire::ClusterId;
use raftkit::{
    Committed, Config, Configuration, Event, Fsm, FsmError, FsmSnapshot, NodeId, Raft, RaftState,
    Server, Transport,
};
use serde::Serialize;

use super::measure::{self, CpuSample, LatencySummary};
use super::{failure, output, parse_duration};
use crate::Failure;

/// Largest `--value-size`: the transports' default frame limit is well above.
const MAX_VALUE_SIZE: usize = 4 << 20;
/// Most servers in one bench cluster.
const MAX_NODES: usize = 15;
/// How long to wait for the first leader and its barrier.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The transport between the servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// The in-process channel network of `raftkit-inmem`.
    Inmem,
    /// `raftkit-tcp` on loopback.
    Tcp,
    /// `raftkit-quic` on loopback (throw-away self-signed certificates).
    Quic,
}

/// The log, stable and snapshot stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// `raftkit-memory`.
    Memory,
    /// `raftkit-file` (write-ahead log, fdatasync per append).
    File,
    /// `raftkit-lmdb` (sync on every commit).
    Lmdb,
}

impl TransportKind {
    /// The name used on the command line and in results.
    pub(crate) fn name(self) -> &'static str {
        match self {
            TransportKind::Inmem => "inmem",
            TransportKind::Tcp => "tcp",
            TransportKind::Quic => "quic",
        }
    }
}

impl StorageKind {
    /// The name used on the command line and in results.
    pub(crate) fn name(self) -> &'static str {
        match self {
            StorageKind::Memory => "memory",
            StorageKind::File => "file",
            StorageKind::Lmdb => "lmdb",
        }
    }
}

/// Where each server's state machine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsmPlacement {
    /// A thread of its own (the library's default).
    Thread,
    /// On the shared runtime, in each server's driver task (`Config::fsm_on_runtime`).
    Runtime,
}

/// `raftkit bench cluster`.
#[derive(Clone, Debug, Args)]
pub struct ClusterArgs {
    /// Transports to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "inmem")]
    pub transport: Vec<TransportKind>,
    /// Storage backends to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "memory")]
    pub storage: Vec<StorageKind>,
    /// Voters in the cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Concurrent closed-loop proposers, comma-separated: one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub clients: Vec<usize>,
    /// Value bytes per command (the key adds 16).
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Measured window per run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before the window, not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Where the durable stores go (a fresh temporary directory inside it
    /// per run); default: the system's temporary directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Run every transport × storage × client count.
    #[arg(long)]
    pub matrix: bool,
    /// Append one JSON object per run to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Append one CSV row per run to this file (header when new).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Draw throughput and latency percentiles of every run into this SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// A label copied into every row (e.g. the round of a comparison).
    #[arg(long)]
    pub label: Option<String>,
    /// Timeout of each `apply`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub apply_timeout: Duration,
    /// Tokio worker threads shared by the servers and the proposers
    /// (default: one per core).
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// Where each server's state machine runs: on the runtime, in the driver's task
    /// (fewer hand-offs per command; the bench's FSM is an in-memory map
    /// that never blocks, which is what `Config::fsm_on_runtime` is for,
    /// and HashiCorp's FSM likewise runs on its shared scheduler), or on a
    /// thread of its own (the library's default).
    #[arg(long, value_enum, default_value = "runtime")]
    pub fsm: FsmPlacement,
}

/// One run: a transport, a storage, a client count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSpec {
    /// The transport.
    pub transport: TransportKind,
    /// The storage.
    pub storage: StorageKind,
    /// Voters.
    pub nodes: usize,
    /// Concurrent proposers.
    pub clients: usize,
    /// Value bytes per command.
    pub value_size: usize,
    /// Measured window.
    pub duration: Duration,
    /// Unmeasured load before it.
    pub warmup: Duration,
    /// Parent of the run's temporary directory.
    pub data_dir: Option<PathBuf>,
    /// Timeout of each `apply`.
    pub apply_timeout: Duration,
    /// Distinct keys the proposers write, all together (`None`: every
    /// command a new key, as the HashiCorp harness does).
    pub keys: Option<u64>,
    /// Snapshot settings instead of the library's defaults.
    pub snapshots: Option<SnapshotTuning>,
    /// Where each server's state machine runs.
    pub fsm: FsmPlacement,
}

/// When servers take snapshots and how much log they keep after one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotTuning {
    /// Applied entries since the last snapshot that make one due.
    pub threshold: u64,
    /// Entries kept behind a snapshot.
    pub trailing_logs: u64,
    /// How often a server checks whether a snapshot is due.
    pub interval: Duration,
}

impl ClusterArgs {
    /// Checks the arguments and lists the runs they ask for, in order.
    pub fn runs(&self) -> Result<Vec<RunSpec>, String> {
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return Err(format!(
                "--nodes must be 1 to {MAX_NODES}, not {}",
                self.nodes
            ));
        }
        if self.clients.is_empty() || self.clients.contains(&0) {
            return Err("--clients must list client counts of at least 1".into());
        }
        if self.value_size > MAX_VALUE_SIZE {
            return Err(format!(
                "--value-size must be at most {MAX_VALUE_SIZE} bytes, not {}",
                self.value_size
            ));
        }
        if self.duration.is_zero() {
            return Err("--duration must be longer than 0s".into());
        }
        if self.apply_timeout.is_zero() {
            return Err("--apply-timeout must be longer than 0s".into());
        }
        if self.worker_threads == Some(0) {
            return Err("--worker-threads must be at least 1".into());
        }
        let (transports, storages) = if self.matrix {
            (
                TransportKind::value_variants().to_vec(),
                StorageKind::value_variants().to_vec(),
            )
        } else {
            (dedup(&self.transport), dedup(&self.storage))
        };
        if transports.is_empty() || storages.is_empty() {
            return Err("--transport and --storage must name at least one each".into());
        }
        let mut runs = Vec::new();
        for &transport in &transports {
            for &storage in &storages {
                for &clients in &self.clients {
                    runs.push(RunSpec {
                        transport,
                        storage,
                        nodes: self.nodes,
                        clients,
                        value_size: self.value_size,
                        duration: self.duration,
                        warmup: self.warmup,
                        data_dir: self.data_dir.clone(),
                        apply_timeout: self.apply_timeout,
                        keys: None,
                        snapshots: None,
                        fsm: self.fsm,
                    });
                }
            }
        }
        Ok(runs)
    }
}

fn dedup<T: PartialEq + Copy>(items: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for &i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// One run's result: the HashiCorp harness's fields, then ours.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterRow {
    /// `transport-storage`, e.g. `tcp-lmdb`.
    pub mode: String,
    /// Concurrent proposers.
    pub clients: usize,
    /// Value bytes per command.
    pub value_size: usize,
    /// Operations that started and finished inside the window.
    pub ops: u64,
    /// The window's length.
    pub seconds: f64,
    /// `ops / seconds`.
    pub ops_per_sec: f64,
    /// Median latency.
    pub p50_us: f64,
    /// 99th percentile latency.
    pub p99_us: f64,
    /// 99.9th percentile latency.
    pub p999_us: f64,
    /// Failed operations inside the window.
    pub errors: u64,
    /// Cores this process used in the window (-1: unknown).
    pub self_cpu_cores: f64,
    /// Cores the rest of the machine used meanwhile (-1: unknown).
    pub other_cpu_cores: f64,
    /// The transport.
    pub transport: TransportKind,
    /// The storage.
    pub storage: StorageKind,
    /// Voters.
    pub nodes: usize,
    /// Where each server's state machine ran.
    pub fsm: FsmPlacement,
    /// Tokio worker threads shared by the servers and the proposers.
    pub worker_threads: usize,
    /// Largest latency.
    pub max_us: f64,
    /// Mean latency.
    pub mean_us: f64,
    /// CPU seconds of this process per 1000 operations (-1: unknown).
    pub cpu_s_per_1k_ops: f64,
    /// Peak RSS of this process during the run (-1: unknown).
    pub peak_rss_mib: f64,
    /// Leader changes any server saw during warm-up and window.
    pub leader_changes: u64,
    /// The leader's term moved during the run.
    pub term_changed: bool,
    /// Followers whose applied index advanced less than half the leader's.
    pub stalled_followers: usize,
    /// How far each server's applied index advanced in the window.
    pub applied_delta_per_node: Vec<u64>,
    /// No errors, no leader change, no stalled follower.
    pub healthy: bool,
    /// From start to a leader that committed its barrier.
    pub startup_ms: u64,
    /// The warm-up.
    pub warmup_s: f64,
    /// The filesystem type of the data directory (durable storage only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_fs: Option<String>,
    /// `--label`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// This binary's version.
    pub raftkit_version: &'static str,
    /// When the run ended (RFC 3339).
    pub timestamp: String,
    /// The first error message, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// The CSV columns, in order.
pub const CSV_COLUMNS: &[&str] = &[
    "label",
    "mode",
    "transport",
    "storage",
    "nodes",
    "fsm",
    "worker_threads",
    "clients",
    "value_size",
    "ops",
    "seconds",
    "ops_per_sec",
    "p50_us",
    "p99_us",
    "p999_us",
    "max_us",
    "mean_us",
    "errors",
    "self_cpu_cores",
    "other_cpu_cores",
    "cpu_s_per_1k_ops",
    "peak_rss_mib",
    "leader_changes",
    "healthy",
    "timestamp",
];

/// Runs `raftkit bench cluster`.
pub fn execute(args: ClusterArgs) -> Result<(), Failure> {
    let runs = args.runs().map_err(failure)?;
    let rt = super::runtime_with(args.worker_threads)?;
    let mut rows = Vec::new();
    for (i, spec) in runs.iter().enumerate() {
        eprintln!(
            "bench cluster [{}/{}]: {} + {}, {} nodes, {} clients, {} B values, {:?} + {:?} warm-up",
            i + 1,
            runs.len(),
            spec.transport.name(),
            spec.storage.name(),
            spec.nodes,
            spec.clients,
            spec.value_size,
            spec.duration,
            spec.warmup
        );
        let mut row = rt.block_on(run(spec, std::io::stderr().is_terminal()))?;
        row.label = args.label.clone();
        if let Some(e) = &row.first_error {
            eprintln!("  {} errors; first: {e}", row.errors);
        }
        if let Some(path) = &args.json {
            output::append_json(path, &row)?;
        }
        if let Some(path) = &args.csv {
            output::append_csv(path, CSV_COLUMNS, &row)?;
        }
        rows.push(row);
        if let Some(path) = &args.svg {
            // Redrawn after every run, so an interrupted matrix still has a chart.
            super::chart::cluster(&rows, path)?;
        }
    }
    print!("{}", table(&rows));
    Ok(())
}

/// The summary table of some runs.
pub fn table(rows: &[ClusterRow]) -> String {
    let headers = [
        "transport",
        "storage",
        "nodes",
        "clients",
        "ops/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "errors",
        "cpu",
        "other",
        "cpu-s/1k",
        "rss MiB",
        "leader chg",
        "healthy",
    ];
    let num = |x: f64, d: usize| {
        if x < 0.0 {
            "-".to_string()
        } else {
            format!("{x:.d$}")
        }
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.transport.name().to_string(),
                r.storage.name().to_string(),
                r.nodes.to_string(),
                r.clients.to_string(),
                output::thousands(r.ops_per_sec),
                output::thousands(r.p50_us),
                output::thousands(r.p99_us),
                output::thousands(r.p999_us),
                output::thousands(r.max_us),
                r.errors.to_string(),
                num(r.self_cpu_cores, 2),
                num(r.other_cpu_cores, 2),
                num(r.cpu_s_per_1k_ops, 3),
                num(r.peak_rss_mib, 0),
                r.leader_changes.to_string(),
                if r.healthy { "yes" } else { "NO" }.to_string(),
            ]
        })
        .collect();
    output::table(&headers, &cells)
}

// ------------------------------------------------------------------ FSM

/// The harness's state machine: key → value under a mutex, key and value
/// copied out of the command. Hashed with foldhash, as fast as the Go map of
/// the HashiCorp harness. The mutex is taken once per batch: the harness's
/// `Apply` gets one entry per call, this `apply` a batch.
#[derive(Default)]
struct MapFsm {
    map: Arc<Mutex<Map>>,
}

/// The key width of the workload's commands.
const KEY_LEN: usize = 16;

type Key = [u8; KEY_LEN];

type Map = HashMap<Key, Bytes, foldhash::fast::RandomState>;

impl Fsm for MapFsm {
    type Response = ();

    fn apply(&mut self, batch: &[Committed]) -> Vec<()> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        for c in batch {
            let Some((key, value)) = c.data.split_first_chunk::<KEY_LEN>() else {
                continue;
            };
            map.insert(*key, Bytes::copy_from_slice(value));
        }
        vec![(); batch.len()]
    }

    fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
        let copy = self
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok(Box::new(MapSnapshot(copy)))
    }

    fn restore(&mut self, from: &mut dyn Read) -> Result<(), FsmError> {
        let mut map = Map::default();
        let mut header = [0u8; 8];
        loop {
            match from.read_exact(&mut header) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e.into()),
            }
            let klen = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
            let vlen = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            if klen as usize != KEY_LEN {
                return Err(FsmError(format!(
                    "snapshot key of {klen} bytes; keys are {KEY_LEN}"
                )));
            }
            let mut k = [0; KEY_LEN];
            let mut v = vec![0; vlen as usize];
            from.read_exact(&mut k)
                .and_then(|()| from.read_exact(&mut v))
                .map_err(FsmError::from)?;
            map.insert(k, Bytes::from(v));
        }
        *self.map.lock().unwrap_or_else(PoisonError::into_inner) = map;
        Ok(())
    }
}

struct MapSnapshot(Map);

impl FsmSnapshot for MapSnapshot {
    fn persist(self: Box<Self>, sink: &mut dyn Write) -> Result<(), FsmError> {
        for (k, v) in &self.0 {
            let mut header = [0u8; 8];
            header[..4].copy_from_slice(&(k.len() as u32).to_be_bytes());
            header[4..].copy_from_slice(&(v.len() as u32).to_be_bytes());
            sink.write_all(&header)
                .and_then(|()| sink.write_all(k))
                .and_then(|()| sink.write_all(v))
                .map_err(FsmError::from)?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ cluster

enum Endpoint {
    Inmem(raftkit_inmem::InmemTransport),
    Tcp(raftkit_tcp::TcpTransport),
    Quic(raftkit_quic::QuicTransport),
}

impl Endpoint {
    async fn bind(
        kind: TransportKind,
        id: &NodeId,
        network: &raftkit_inmem::InmemNetwork,
    ) -> Result<Endpoint, Failure> {
        let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let cluster = ClusterId(0xbe7c);
        Ok(match kind {
            TransportKind::Inmem => Endpoint::Inmem(
                network.endpoint(id.clone(), raftkit::ServerAddress::new(id.as_str())),
            ),
            TransportKind::Tcp => {
                let config = raftkit_tcp::TcpConfig {
                    cluster,
                    ..raftkit_tcp::TcpConfig::default()
                };
                Endpoint::Tcp(
                    raftkit_tcp::TcpTransport::bind(id.clone(), any, config)
                        .await
                        .map_err(|e| failure(format_args!("starting the tcp transport: {e}")))?,
                )
            }
            TransportKind::Quic => {
                let config = raftkit_quic::QuicConfig {
                    cluster,
                    insecure_dev: true,
                    ..raftkit_quic::QuicConfig::default()
                };
                Endpoint::Quic(
                    raftkit_quic::QuicTransport::bind(id.clone(), any, config)
                        .await
                        .map_err(|e| failure(format_args!("starting the quic transport: {e}")))?,
                )
            }
        })
    }

    fn address(&self) -> raftkit::ServerAddress {
        match self {
            Endpoint::Inmem(t) => t.local_addr(),
            Endpoint::Tcp(t) => t.local_addr(),
            Endpoint::Quic(t) => t.local_addr(),
        }
    }
}

async fn start_node(
    config: Config,
    storage: StorageKind,
    dir: &Path,
    endpoint: Endpoint,
) -> Result<Raft<()>, Failure> {
    use raftkit_file::{FileLogOptions, FileLogStore, FileSnapshotStore, FileStableStore};
    use raftkit_memory::{MemLogStore, MemSnapshotStore, MemStableStore};
    let fsm = MapFsm::default();
    let open = |what: &str, e: raftkit::StorageError| failure(format_args!("opening {what}: {e}"));
    match storage {
        StorageKind::Memory => {
            let snaps = MemSnapshotStore::new(1).map_err(|e| open("the snapshot store", e))?;
            with_endpoint(
                config,
                fsm,
                MemLogStore::new(),
                MemStableStore::new(),
                snaps,
                endpoint,
            )
            .await
        }
        StorageKind::File => {
            let log = FileLogStore::open(dir.join("log"), FileLogOptions::default())
                .map_err(|e| open("the log", e))?;
            let stable = FileStableStore::open(dir.join("stable"))
                .map_err(|e| open("the stable store", e))?;
            let snaps = FileSnapshotStore::open(dir.join("snapshots"), 2)
                .map_err(|e| open("the snapshot store", e))?;
            with_endpoint(config, fsm, log, stable, snaps, endpoint).await
        }
        StorageKind::Lmdb => {
            let store = raftkit_lmdb::LmdbStore::open(
                dir.join("lmdb"),
                raftkit_lmdb::LmdbConfig::default(),
            )
            .map_err(|e| open("the lmdb store", e))?;
            let snaps = FileSnapshotStore::open(dir.join("snapshots"), 2)
                .map_err(|e| open("the snapshot store", e))?;
            with_endpoint(config, fsm, store.log(), store.stable(), snaps, endpoint).await
        }
    }
}

async fn with_endpoint<L, S, P>(
    config: Config,
    fsm: MapFsm,
    log: L,
    stable: S,
    snaps: P,
    endpoint: Endpoint,
) -> Result<Raft<()>, Failure>
where
    L: raftkit::LogStore,
    S: raftkit::StableStore,
    P: raftkit::SnapshotStore,
{
    let raft = match endpoint {
        Endpoint::Inmem(t) => Raft::new(config, fsm, log, stable, snaps, t).await,
        Endpoint::Tcp(t) => Raft::new(config, fsm, log, stable, snaps, t).await,
        Endpoint::Quic(t) => Raft::new(config, fsm, log, stable, snaps, t).await,
    };
    raft.map_err(|e| failure(format_args!("starting raft: {e}")))
}

/// A running bench cluster and the directory its stores live in.
pub(crate) struct Cluster {
    pub(crate) nodes: Vec<Raft<()>>,
    pub(crate) leader: usize,
    dir: Option<tempfile::TempDir>,
    data_fs: Option<String>,
}

impl Cluster {
    /// The directory every server's stores are in (none for memory storage).
    pub(crate) fn data_path(&self) -> Option<&Path> {
        self.dir.as_ref().map(|d| d.path())
    }

    pub(crate) async fn start(spec: &RunSpec) -> Result<Cluster, Failure> {
        let (dir, data_fs) = if spec.storage == StorageKind::Memory {
            (None, None)
        } else {
            let parent = spec.data_dir.clone().unwrap_or_else(std::env::temp_dir);
            std::fs::create_dir_all(&parent)
                .map_err(|e| failure(format_args!("creating {}: {e}", parent.display())))?;
            let dir = tempfile::Builder::new()
                .prefix("raftkit-bench-")
                .tempdir_in(&parent)
                .map_err(|e| {
                    failure(format_args!(
                        "creating a directory in {}: {e}",
                        parent.display()
                    ))
                })?;
            let fs = fs_type(dir.path());
            if fs.as_deref() == Some("tmpfs") {
                eprintln!(
                    "  warning: {} is on tmpfs: fsync costs nothing there; use --data-dir on a disk",
                    parent.display()
                );
            }
            (Some(dir), fs)
        };
        let network = raftkit_inmem::InmemNetwork::new(1);
        let ids: Vec<NodeId> = (1..=spec.nodes)
            .map(|i| NodeId::new(format!("n{i}")))
            .collect();
        let mut endpoints = Vec::new();
        for id in &ids {
            endpoints.push(Endpoint::bind(spec.transport, id, &network).await?);
        }
        let servers: Vec<Server> = ids
            .iter()
            .zip(&endpoints)
            .map(|(id, e)| Server::voter(id.as_str(), e.address().as_str()))
            .collect();
        let mut nodes = Vec::new();
        for (id, endpoint) in ids.iter().zip(endpoints) {
            let node_dir = match &dir {
                Some(d) => d.path().join(id.as_str()),
                None => PathBuf::new(),
            };
            let mut config = Config {
                local_id: id.clone(),
                fsm_on_runtime: spec.fsm == FsmPlacement::Runtime,
                ..Config::default()
            };
            if let Some(t) = spec.snapshots {
                config.snapshot_threshold = t.threshold;
                config.trailing_logs = t.trailing_logs;
                config.snapshot_interval = t.interval;
            }
            match start_node(config, spec.storage, &node_dir, endpoint).await {
                Ok(raft) => nodes.push(raft),
                Err(e) => {
                    shutdown(&nodes).await;
                    return Err(e);
                }
            }
        }
        let mut cluster = Cluster {
            nodes,
            leader: 0,
            dir,
            data_fs,
        };
        if let Err(e) = cluster.elect(servers).await {
            shutdown(&cluster.nodes).await;
            return Err(e);
        }
        Ok(cluster)
    }

    async fn elect(&mut self, servers: Vec<Server>) -> Result<(), Failure> {
        self.nodes[0]
            .bootstrap_cluster(Configuration::new(servers))
            .await
            .map_err(|e| failure(format_args!("bootstrapping: {e}")))?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut every = tokio::time::interval(Duration::from_millis(5));
        loop {
            if let Some(i) = self
                .nodes
                .iter()
                .position(|n| n.state() == RaftState::Leader)
            {
                self.leader = i;
                break;
            }
            if Instant::now() > deadline {
                return Err(failure(format_args!(
                    "no leader {STARTUP_TIMEOUT:?} after bootstrapping"
                )));
            }
            every.tick().await;
        }
        let leader = &self.nodes[self.leader];
        leader
            .barrier(STARTUP_TIMEOUT)
            .await
            .map_err(|e| failure(format_args!("the leader's barrier: {e}")))?;
        // A follower that learns the leader only once the load has started
        // would count as a leader change in the run.
        let Some((id, _)) = leader.leader() else {
            return Err(failure("the leader does not name itself as leader"));
        };
        loop {
            let unaware = self
                .nodes
                .iter()
                .position(|n| n.leader().is_none_or(|(l, _)| l != id));
            let Some(i) = unaware else { return Ok(()) };
            if Instant::now() > deadline {
                return Err(failure(format_args!(
                    "n{} did not learn the leader ({id}) within {STARTUP_TIMEOUT:?} of bootstrapping",
                    i + 1
                )));
            }
            every.tick().await;
        }
    }

    async fn applied(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for n in &self.nodes {
            out.push(n.stats().await.map_or(0, |s| s.status.applied_index.0));
        }
        out
    }

    async fn term(&self) -> u64 {
        self.nodes[self.leader]
            .stats()
            .await
            .map_or(0, |s| s.status.term.0)
    }
}

/// Stops every server at once.
pub(crate) async fn shutdown(nodes: &[Raft<()>]) {
    let mut all = tokio::task::JoinSet::new();
    for n in nodes {
        let n = n.clone();
        all.spawn(async move { n.shutdown().await });
    }
    while all.join_next().await.is_some() {}
}

/// The filesystem type `path` lives on, from `/proc/self/mounts`.
pub(crate) fn fs_type(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let _dev = f.next()?;
            let at = f.next()?.replace("\\040", " ");
            let kind = f.next()?;
            path.starts_with(&at).then(|| (at.len(), kind.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, kind)| kind)
}

// ------------------------------------------------------------------ load

pub(crate) const WARMUP: u8 = 0;
pub(crate) const MEASURING: u8 = 1;
pub(crate) const STOP: u8 = 2;

pub(crate) struct ClientResult {
    latencies: Histogram<u64>,
    pub(crate) errors: u64,
    first_error: Option<String>,
}

/// One closed-loop proposer. With `keys`, it writes that many keys over
/// and over; without, a new key every command.
async fn client(
    raft: Raft<()>,
    id: u64,
    keys: Option<u64>,
    value: Arc<[u8]>,
    phase: Arc<AtomicU8>,
    done: Arc<AtomicU64>,
    apply_timeout: Duration,
) -> ClientResult {
    let mut latencies = measure::new_histogram();
    let mut errors = 0;
    let mut first_error = None;
    let mut seq = 0u64;
    loop {
        let started_in = phase.load(Ordering::Acquire);
        if started_in == STOP {
            break;
        }
        let mut command = Vec::with_capacity(16 + value.len());
        command.extend_from_slice(&id.to_be_bytes());
        let key = match keys {
            Some(k) => seq % k.max(1),
            None => seq,
        };
        command.extend_from_slice(&key.to_be_bytes());
        command.extend_from_slice(&value);
        seq += 1;
        let start = Instant::now();
        let result = raft.apply(Bytes::from(command), apply_timeout).await;
        let took = start.elapsed();
        let counted = started_in == MEASURING && phase.load(Ordering::Acquire) == MEASURING;
        done.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => {
                if counted {
                    measure::record(&mut latencies, took);
                }
            }
            Err(e) => {
                if counted {
                    errors += 1;
                }
                first_error.get_or_insert_with(|| e.to_string());
                // As the Go harness does: do not spin on a failing leader.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    ClientResult {
        latencies,
        errors,
        first_error,
    }
}

/// Counts `LeaderChanged` events with a leader, until `stop`.
async fn count_leader_changes(
    mut events: tokio::sync::broadcast::Receiver<Event>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> u64 {
    use tokio::sync::broadcast::error::RecvError;
    let mut n = 0;
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Ok(Event::LeaderChanged(Some(_))) => n += 1,
                Ok(_) => {}
                // Events were dropped: at least one may have been a change.
                Err(RecvError::Lagged(_)) => n += 1,
                Err(RecvError::Closed) => return n,
            },
            _ = stop.changed() => return n,
        }
    }
}

/// Runs one cell: starts a cluster, loads it, measures, stops it.
pub async fn run(spec: &RunSpec, progress: bool) -> Result<ClusterRow, Failure> {
    measure::reset_peak_rss();
    let t0 = Instant::now();
    let cluster = Cluster::start(spec).await?;
    let startup = t0.elapsed();
    let result = load(&cluster, spec, progress).await;
    shutdown(&cluster.nodes).await;
    let mut row = result?;
    row.startup_ms = startup.as_millis() as u64;
    row.data_fs = cluster.data_fs.clone();
    Ok(row)
}

async fn load(cluster: &Cluster, spec: &RunSpec, progress: bool) -> Result<ClusterRow, Failure> {
    let leader = &cluster.nodes[cluster.leader];
    let term0 = cluster.term().await;
    let (stop_events, stop_rx) = tokio::sync::watch::channel(false);
    let watchers: Vec<_> = cluster
        .nodes
        .iter()
        .map(|n| tokio::spawn(count_leader_changes(n.subscribe(), stop_rx.clone())))
        .collect();

    let phase = Arc::new(AtomicU8::new(WARMUP));
    let done = Arc::new(AtomicU64::new(0));
    let clients = spawn_clients(leader, spec, &phase, &done);

    let bar = progress.then(|| progress_bar(spec));
    let ticker = bar.clone().map(|bar| {
        let done = done.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(200));
            let start = Instant::now();
            let mut last = (Instant::now(), 0u64);
            loop {
                every.tick().await;
                let now = Instant::now();
                let n = done.load(Ordering::Relaxed);
                let rate = (n - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-6);
                last = (now, n);
                bar.set_position(start.elapsed().as_millis() as u64);
                bar.set_message(format!("{} ops/s", output::thousands(rate)));
            }
        })
    });

    tokio::time::sleep(spec.warmup).await;
    let applied0 = cluster.applied().await;
    let cpu0 = CpuSample::now();
    let window = Instant::now();
    phase.store(MEASURING, Ordering::Release);
    tokio::time::sleep(spec.duration).await;
    phase.store(STOP, Ordering::Release);
    let seconds = window.elapsed().as_secs_f64();
    let cpu = cpu0.until(&CpuSample::now());
    let applied1 = cluster.applied().await;

    let mut latencies = measure::new_histogram();
    let mut errors = 0;
    let mut first_error = None;
    for c in clients {
        let r = c
            .await
            .map_err(|e| failure(format_args!("a client task failed: {e}")))?;
        latencies
            .add(&r.latencies)
            .map_err(|e| failure(format_args!("merging histograms: {e}")))?;
        errors += r.errors;
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let term1 = cluster.term().await;
    let _ = stop_events.send(true);
    let mut leader_changes = 0;
    for w in watchers {
        leader_changes = leader_changes.max(w.await.unwrap_or(1));
    }
    let still_leader = leader.state() == RaftState::Leader;

    let deltas: Vec<u64> = applied0
        .iter()
        .zip(&applied1)
        .map(|(a, b)| b.saturating_sub(*a))
        .collect();
    let leader_delta = deltas[cluster.leader];
    let stalled_followers = deltas
        .iter()
        .enumerate()
        .filter(|(i, d)| *i != cluster.leader && **d * 2 < leader_delta)
        .count();
    let ops = latencies.len();
    let lat = LatencySummary::of(&latencies);
    let term_changed = term0 != term1 || !still_leader;
    let ops_per_sec = measure::round1(ops as f64 / seconds);
    Ok(ClusterRow {
        mode: format!("{}-{}", spec.transport.name(), spec.storage.name()),
        clients: spec.clients,
        value_size: spec.value_size,
        ops,
        seconds: (seconds * 1000.0).round() / 1000.0,
        ops_per_sec,
        p50_us: lat.p50_us,
        p99_us: lat.p99_us,
        p999_us: lat.p999_us,
        errors,
        self_cpu_cores: cpu.self_cores.map_or(-1.0, measure::round2),
        other_cpu_cores: cpu.other_cores.map_or(-1.0, measure::round2),
        transport: spec.transport,
        storage: spec.storage,
        nodes: spec.nodes,
        fsm: spec.fsm,
        worker_threads: tokio::runtime::Handle::current().metrics().num_workers(),
        max_us: lat.max_us,
        mean_us: lat.mean_us,
        cpu_s_per_1k_ops: match cpu.self_s {
            Some(s) if ops > 0 => (s / ops as f64 * 1000.0 * 10_000.0).round() / 10_000.0,
            _ => -1.0,
        },
        peak_rss_mib: measure::peak_rss_mib().map_or(-1.0, measure::round1),
        leader_changes,
        term_changed,
        stalled_followers,
        applied_delta_per_node: deltas,
        healthy: errors == 0 && leader_changes == 0 && !term_changed && stalled_followers == 0,
        startup_ms: 0,
        warmup_s: spec.warmup.as_secs_f64(),
        data_fs: None,
        label: None,
        raftkit_version: env!("CARGO_PKG_VERSION"),
        timestamp: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        first_error,
    })
}

/// Starts `spec.clients` proposers on `leader`, sharing `spec.keys` among
/// them; they run until `phase` is [`STOP`], counting into `done`.
pub(crate) fn spawn_clients(
    leader: &Raft<()>,
    spec: &RunSpec,
    phase: &Arc<AtomicU8>,
    done: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<ClientResult>> {
    let value = value_bytes(spec.value_size);
    (0..spec.clients)
        .map(|c| {
            tokio::spawn(client(
                leader.clone(),
                c as u64,
                spec.keys.map(|k| k.div_ceil(spec.clients as u64)),
                value.clone(),
                phase.clone(),
                done.clone(),
                spec.apply_timeout,
            ))
        })
        .collect()
}

/// The same pseudo-random value for every command, as the harness.
fn value_bytes(size: usize) -> Arc<[u8]> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn progress_bar(spec: &RunSpec) -> indicatif::ProgressBar {
    let total = (spec.warmup + spec.duration).as_millis() as u64;
    let bar = indicatif::ProgressBar::new(total);
    let style =
        indicatif::ProgressStyle::with_template("  {bar:40} {elapsed:>4}/{duration:4} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ClusterArgs,
    }

    fn parse(args: &[&str]) -> Result<ClusterArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("cluster").chain(args.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn arguments_parse_into_runs() {
        let args = parse(&[
            "--transport",
            "tcp,quic",
            "--storage",
            "lmdb",
            "--clients",
            "1,64",
            "--duration",
            "5s",
            "--warmup",
            "500ms",
            "--value-size",
            "1024",
        ])
        .unwrap();
        let runs = args.runs().unwrap();
        assert_eq!(runs.len(), 4);
        assert_eq!(runs[0].transport, TransportKind::Tcp);
        assert_eq!(runs[0].clients, 1);
        assert_eq!(runs[3].transport, TransportKind::Quic);
        assert_eq!(runs[3].clients, 64);
        assert_eq!(runs[3].storage, StorageKind::Lmdb);
        assert_eq!(runs[3].duration, Duration::from_secs(5));
        assert_eq!(runs[3].warmup, Duration::from_millis(500));
        assert_eq!(runs[3].value_size, 1024);
        assert_eq!(runs[3].nodes, 3);
    }

    #[test]
    fn defaults_and_matrix() {
        let runs = parse(&[]).unwrap().runs().unwrap();
        assert_eq!(runs.len(), 4, "inmem + memory at 1, 16, 64, 256 clients");
        assert!(runs.iter().all(|r| r.transport == TransportKind::Inmem
            && r.storage == StorageKind::Memory
            && r.duration == Duration::from_secs(10)
            && r.warmup == Duration::from_secs(2)
            && r.value_size == 256
            && r.fsm == FsmPlacement::Runtime));
        let matrix = parse(&["--matrix", "--clients", "8"])
            .unwrap()
            .runs()
            .unwrap();
        assert_eq!(matrix.len(), 9, "3 transports × 3 storages");
    }

    #[test]
    fn bad_arguments_are_named() {
        assert!(parse(&["--transport", "udp"]).is_err());
        assert!(parse(&["--duration", "soon"]).is_err());
        let e = parse(&["--clients", "0"]).unwrap().runs().unwrap_err();
        assert!(e.contains("--clients"), "{e}");
        let e = parse(&["--nodes", "0"]).unwrap().runs().unwrap_err();
        assert!(e.contains("--nodes"), "{e}");
        let e = parse(&["--duration", "0s"]).unwrap().runs().unwrap_err();
        assert!(e.contains("--duration"), "{e}");
        let e = parse(&["--value-size", "999999999"])
            .unwrap()
            .runs()
            .unwrap_err();
        assert!(e.contains("--value-size"), "{e}");
    }

    #[test]
    fn map_fsm_snapshot_round_trip() {
        let mut fsm = MapFsm::default();
        let data = Bytes::from([&[7u8; 16][..], b"value"].concat());
        let out = fsm.apply(&[Committed {
            index: raftkit::LogIndex(1),
            term: raftkit::Term(1),
            data,
        }]);
        assert_eq!(out.len(), 1);
        let mut buf = Vec::new();
        fsm.snapshot().unwrap().persist(&mut buf).unwrap();
        let mut other = MapFsm::default();
        other.restore(&mut buf.as_slice()).unwrap();
        let map = other.map.lock().unwrap();
        assert_eq!(map.get(&[7u8; 16]), Some(&Bytes::from_static(b"value")));
    }

    #[test]
    fn map_fsm_restore_refuses_a_key_of_the_wrong_width() {
        let mut snapshot = Vec::new();
        snapshot.extend_from_slice(&3u32.to_be_bytes());
        snapshot.extend_from_slice(&1u32.to_be_bytes());
        snapshot.extend_from_slice(b"abcv");
        let e = MapFsm::default()
            .restore(&mut snapshot.as_slice())
            .unwrap_err();
        assert!(e.to_string().contains("key of 3 bytes"), "{e}");
    }

    /// The load starts only once every server follows the leader (5
    /// voters over TCP, where a follower is most likely to lag).
    #[test]
    fn a_started_cluster_has_every_server_following_the_leader() {
        let spec = parse(&["--transport", "tcp", "--nodes", "5", "--clients", "1"])
            .unwrap()
            .runs()
            .unwrap()
            .remove(0);
        let rt = super::super::runtime().unwrap();
        rt.block_on(async {
            let cluster = Cluster::start(&spec).await.unwrap();
            let leader = cluster.nodes[cluster.leader].leader().map(|(id, _)| id);
            assert!(leader.is_some(), "the leader does not name itself");
            for (i, n) in cluster.nodes.iter().enumerate() {
                assert_eq!(
                    n.leader().map(|(id, _)| id),
                    leader,
                    "n{} started the load without knowing the leader",
                    i + 1
                );
            }
            shutdown(&cluster.nodes).await;
        });
    }

    /// A short real run: 3 servers on the in-memory network, 4 proposers,
    /// state machines on threads of their own (the default, the runtime,
    /// is what the other runs use).
    #[test]
    fn short_inmem_run_counts_operations() {
        let spec = parse(&[
            "--clients",
            "4",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--fsm",
            "thread",
        ])
        .unwrap()
        .runs()
        .unwrap()
        .remove(0);
        let rt = super::super::runtime().unwrap();
        let row = rt.block_on(run(&spec, false)).unwrap();
        assert!(row.ops > 0, "no operation completed: {row:?}");
        assert_eq!(row.errors, 0, "{row:?}");
        assert_eq!(row.applied_delta_per_node.len(), 3);
        let rate = row.ops as f64 / row.seconds;
        assert!(
            (rate - row.ops_per_sec).abs() <= 0.01 * rate + 1.0,
            "ops_per_sec {} disagrees with ops/seconds {rate}",
            row.ops_per_sec
        );
        assert!(row.seconds >= 1.0 && row.seconds < 5.0, "{row:?}");
        assert!(row.p50_us > 0.0 && row.p50_us <= row.p99_us && row.p99_us <= row.max_us);

        // The JSON line carries the harness's fields, all numeric.
        let json = serde_json::to_value(&row).unwrap();
        for field in [
            "clients",
            "value_size",
            "ops",
            "seconds",
            "ops_per_sec",
            "p50_us",
            "p99_us",
            "p999_us",
            "errors",
            "self_cpu_cores",
            "other_cpu_cores",
            "nodes",
            "max_us",
            "mean_us",
            "cpu_s_per_1k_ops",
            "peak_rss_mib",
            "leader_changes",
        ] {
            assert!(json[field].is_number(), "{field} is not a number: {json}");
        }
        assert_eq!(json["mode"], "inmem-memory");
        assert_eq!(json["fsm"], "thread");
        assert!(
            json["worker_threads"].as_u64().is_some_and(|n| n >= 1),
            "{json}"
        );
        assert_eq!(json["transport"], "inmem");
        assert_eq!(json["storage"], "memory");
        assert!(json["healthy"].is_boolean());

        // --json and --csv append one line per run.
        let dir = tempfile::tempdir().unwrap();
        let (jpath, cpath) = (dir.path().join("runs.jsonl"), dir.path().join("runs.csv"));
        for _ in 0..2 {
            output::append_json(&jpath, &row).unwrap();
            output::append_csv(&cpath, CSV_COLUMNS, &row).unwrap();
        }
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jpath)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["ops"], row.ops);
        let csv = std::fs::read_to_string(&cpath).unwrap();
        let csv: Vec<&str> = csv.lines().collect();
        assert_eq!(csv.len(), 3, "a header and two rows");
        assert_eq!(csv[0], CSV_COLUMNS.join(","));
        assert_eq!(csv[1].split(',').count(), CSV_COLUMNS.len());
        assert!(table(std::slice::from_ref(&row)).contains("inmem"));

        // --svg draws one bar per run and a line per percentile.
        let svg = dir.path().join("runs.svg");
        let mut other = row.clone();
        other.clients = 8;
        super::super::chart::cluster(&[row, other], &svg).unwrap();
        let drawn = std::fs::read_to_string(&svg).unwrap();
        assert!(
            drawn.starts_with("<svg"),
            "{}",
            &drawn[..drawn.len().min(200)]
        );
        for text in [
            "throughput (ops/s)",
            "inmem-memory C=4",
            "inmem-memory C=8",
            "p99.9",
        ] {
            assert!(drawn.contains(text), "{text:?} is not in the chart");
        }
        for colour in ["#00FF00", "#0000FF", "#FF0000"] {
            let line = format!("<polyline fill=\"none\" opacity=\"1\" stroke=\"{colour}\"");
            assert_eq!(
                drawn.matches(&line).count(),
                2,
                "{colour}: a percentile line and its legend mark"
            );
        }
        assert_eq!(
            drawn.matches("fill=\"#0000FF\"").count(),
            2,
            "one bar per run"
        );
    }
}
