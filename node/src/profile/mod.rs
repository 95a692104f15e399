//! Node profiles: typed TOML, merged from files, the environment and flags.
//!
//! ```text
//!  --profile a.toml ─┐
//!  --profile b.toml ─┤ figment merge, in this order; later wins
//!  RAFTKIT_<SECTION>__<KEY> env ─┤
//!  --id --data-dir --http-addr --raft-addr --join ─┘
//!        │ extract (serde, deny_unknown_fields)   → ProfileError naming source + key
//!        ▼ validate (ids, TLS files, raft Config)  → ProfileError naming source + key
//!  Loaded { profile, figment }   nothing has touched the data directory yet
//! ```
//!
//! Every error names where the offending value came from (a file path, the
//! environment, or a flag), the key and the problem; the binary prints it and
//! exits with code 2.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

mod load;
mod schema;
#[cfg(test)]
mod tests;

pub use load::{load, valid_id, Loaded, ProfileError};
pub use schema::{example, schema, to_toml};

/// The longest server id accepted.
pub const MAX_ID_LEN: usize = 64;

/// One node's whole configuration. The top-level keys are fixed by the node
/// API contract (`shared/spec/node-api.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Server id, unique and stable for the node's life.
    pub id: String,
    /// Where the node keeps its log, stable state, snapshots and lock file.
    pub data_dir: PathBuf,
    /// The HTTP API, `/metrics`, `/health`, `/ready`.
    pub http_addr: SocketAddr,
    /// Bound by the transport and advertised to peers.
    pub raft_addr: SocketAddr,
    /// Bootstrap from `[[cluster.servers]]` (or this node alone) if storage is empty.
    #[serde(default)]
    pub bootstrap: bool,
    /// HTTP base URLs of nodes to ask to add this one, e.g. `["http://127.0.0.1:8001"]`.
    #[serde(default)]
    pub join: Vec<String>,
    /// With `join`: ask to be added as a non-voter.
    #[serde(default)]
    pub nonvoter: bool,
    /// Frames from another cluster id are refused by the transport. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<u64>,
    /// `[transport]`.
    #[serde(default)]
    pub transport: TransportProfile,
    /// `[storage]`.
    #[serde(default)]
    pub storage: StorageProfile,
    /// `[raft]`: every knob of `raftkit::Config`.
    #[serde(default)]
    pub raft: RaftProfile,
    /// `[cluster]`: the initial configuration.
    #[serde(default)]
    pub cluster: ClusterProfile,
    /// `[http]`.
    #[serde(default)]
    pub http: HttpProfile,
    /// `[log]`.
    #[serde(default)]
    pub log: LogProfile,
    /// `[debug]`: fault injection and planted bugs for the chaos tests.
    /// Hidden: absent from `config schema`, and every knob is warned at start.
    #[serde(default, skip_serializing_if = "DebugProfile::is_off")]
    pub debug: DebugProfile,
}

/// Which transport carries Raft messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// `raftkit-tcp`.
    #[default]
    Tcp,
    /// `raftkit-quic`.
    Quic,
    /// `raftkit-inmem`: channels inside one process; single-node profiles only.
    Inmem,
}

/// `[transport]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportProfile {
    /// `tcp`, `quic` or `inmem`. Default `tcp`.
    pub kind: TransportKind,
    /// QUIC only: self-signed certificates and no peer check (development only).
    pub insecure_dev: bool,
    /// Mutual TLS; optional for tcp, required for quic unless `insecure_dev`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsProfile>,
    /// How long a connection attempt may take. Default 1s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long one frame write may block before the connection is dropped. Default 10s.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// The largest frame sent or accepted. Default 16MiB.
    pub max_frame_size: ByteSize,
}

impl Default for TransportProfile {
    fn default() -> Self {
        let tcp = raftkit_tcp::TcpConfig::default();
        TransportProfile {
            kind: TransportKind::Tcp,
            insecure_dev: false,
            tls: None,
            connect_timeout: tcp.connect_timeout,
            write_timeout: tcp.write_timeout,
            max_frame_size: ByteSize::b(tcp.max_frame_bytes as u64),
        }
    }
}

/// `[transport.tls]`: PEM files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsProfile {
    /// The CA certificate that signs every server's certificate.
    pub ca: PathBuf,
    /// This server's certificate chain (SAN DNS = its id).
    pub cert: PathBuf,
    /// This server's private key.
    pub key: PathBuf,
}

/// Which storage backend keeps the log, stable state and snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// `raftkit-lmdb`.
    Lmdb,
    /// `raftkit-file`: segmented WAL, file snapshots.
    #[default]
    File,
    /// `raftkit-memory`: nothing survives a restart.
    Memory,
}

/// `[storage]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageProfile {
    /// `lmdb`, `file` or `memory`. Default `file`.
    pub kind: StorageKind,
    /// file: a WAL segment is closed past this size. Default 64MiB.
    pub segment_size: ByteSize,
    /// file: create segments full-size and zero-filled (one spare made
    /// ahead in the background), so an append overwrites instead of growing
    /// the file and its `fdatasync` commits no metadata. Default true.
    pub preallocate: bool,
    /// Snapshots kept. Default 2.
    pub snapshot_retain: usize,
    /// lmdb: the initial map size; it grows when full. Default 4GiB.
    pub map_size: ByteSize,
    /// lmdb: `always` (fsync every commit) or `none` (benchmarks only:
    /// a crash loses acknowledged writes). Default `always`.
    pub sync: LmdbSync,
}

/// `storage.sync` for lmdb.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LmdbSync {
    /// Every commit is durable when it returns.
    #[default]
    Always,
    /// No fsync: for benchmarks only.
    None,
}

impl Default for StorageProfile {
    fn default() -> Self {
        StorageProfile {
            kind: StorageKind::File,
            segment_size: ByteSize::b(raftkit_file::FileLogOptions::default().segment_size_bytes),
            preallocate: raftkit_file::FileLogOptions::default().preallocate,
            snapshot_retain: 2,
            map_size: ByteSize::b(raftkit_lmdb::LmdbConfig::default().map_size),
            sync: LmdbSync::Always,
        }
    }
}

/// `[raft]`: `raftkit::Config` with human units. See that type for each
/// knob's meaning and the reason for its default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct RaftProfile {
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub election_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub leader_lease_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub commit_timeout: Duration,
    pub max_append_entries: usize,
    pub max_append_bytes: ByteSize,
    pub max_inflight: usize,
    pub max_apply_batch: usize,
    pub max_pending_proposals: usize,
    pub trailing_logs: u64,
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
    pub snapshot_threshold: u64,
    pub snapshot_chunk_bytes: ByteSize,
    pub pre_vote: bool,
    pub shutdown_on_remove: bool,
}

impl Default for RaftProfile {
    fn default() -> Self {
        let c = raftkit::Config::default();
        RaftProfile {
            heartbeat_timeout: c.heartbeat_timeout,
            election_timeout: c.election_timeout,
            leader_lease_timeout: c.leader_lease_timeout,
            commit_timeout: c.commit_timeout,
            max_append_entries: c.max_append_entries,
            max_append_bytes: ByteSize::b(c.max_append_bytes as u64),
            max_inflight: c.max_inflight,
            max_apply_batch: c.max_apply_batch,
            max_pending_proposals: c.max_pending_proposals,
            trailing_logs: c.trailing_logs,
            snapshot_interval: c.snapshot_interval,
            snapshot_threshold: c.snapshot_threshold,
            snapshot_chunk_bytes: ByteSize::b(c.snapshot_chunk_bytes as u64),
            pre_vote: c.pre_vote,
            shutdown_on_remove: c.shutdown_on_remove,
        }
    }
}

impl RaftProfile {
    /// The library configuration for server `id`. Sizes beyond `usize` saturate.
    pub fn to_config(&self, id: &str) -> raftkit::Config {
        let size = |b: ByteSize| usize::try_from(b.as_u64()).unwrap_or(usize::MAX);
        raftkit::Config {
            local_id: raftkit::NodeId::new(id),
            heartbeat_timeout: self.heartbeat_timeout,
            election_timeout: self.election_timeout,
            leader_lease_timeout: self.leader_lease_timeout,
            commit_timeout: self.commit_timeout,
            max_append_entries: self.max_append_entries,
            max_append_bytes: size(self.max_append_bytes),
            max_inflight: self.max_inflight,
            max_apply_batch: self.max_apply_batch,
            max_pending_proposals: self.max_pending_proposals,
            trailing_logs: self.trailing_logs,
            snapshot_interval: self.snapshot_interval,
            snapshot_threshold: self.snapshot_threshold,
            snapshot_chunk_bytes: size(self.snapshot_chunk_bytes),
            pre_vote: self.pre_vote,
            shutdown_on_remove: self.shutdown_on_remove,
            // The KV map's snapshot copies the whole map: on the runtime
            // that would stall the node's tasks on a large store.
            fsm_on_runtime: false,
        }
    }
}

/// `[cluster]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterProfile {
    /// The initial configuration, used with `bootstrap = true`.
    pub servers: Vec<ClusterServer>,
}

/// One `[[cluster.servers]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterServer {
    /// Its server id.
    pub id: String,
    /// Its transport address.
    pub raft_addr: String,
    /// `voter` (default) or `nonvoter`.
    #[serde(default)]
    pub suffrage: SuffrageProfile,
}

/// Whether a server of the initial configuration votes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SuffrageProfile {
    /// Votes and counts toward quorums.
    #[default]
    Voter,
    /// Receives the log only.
    Nonvoter,
}

/// `[http]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpProfile {
    /// Largest value accepted by PUT and CAS; larger gets 413. Default 1MiB.
    pub max_value_bytes: ByteSize,
    /// How long a request may wait for commit, a read point or the leader;
    /// past it a write answers 504 (outcome unknown). Default 5s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for HttpProfile {
    fn default() -> Self {
        HttpProfile {
            max_value_bytes: ByteSize::mib(1),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Log verbosity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogProfile {
    /// `error`, `warn`, `info` (default), `debug`, `trace`; `RUST_LOG` overrides.
    pub level: LogLevel,
    /// `text` (default) or `json`.
    pub format: LogFormat,
}

/// `[debug]`: for testing the assembled system under faults. Never enable
/// in production: the `unsafe_*` knobs make the node lie to its clients.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugProfile {
    /// Serves `GET|POST /debug/fault` (disk faults, clock rate).
    pub fault_injection: bool,
    /// Planted bug: `consistency=linearizable` reads are answered from the
    /// local state machine, without ReadIndex.
    pub unsafe_stale_linearizable_reads: bool,
    /// Planted bug: log appends are acknowledged at once and written out up
    /// to this long afterwards (a SIGKILL loses them). `0s` = off.
    #[serde(with = "humantime_serde")]
    pub unsafe_ack_before_fsync: Duration,
}

impl DebugProfile {
    /// True when no knob is on.
    pub fn is_off(&self) -> bool {
        *self == DebugProfile::default()
    }
}

/// Values given as command-line flags; they override files and environment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    /// `--id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--http-addr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<String>,
    /// `--raft-addr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft_addr: Option<String>,
    /// `--join` (repeatable).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub join: Vec<String>,
}
