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

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Metadata, Source};
use serde::{Deserialize, Serialize};

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
    /// Snapshots kept. Default 2.
    pub snapshot_retain: usize,
}

impl Default for StorageProfile {
    fn default() -> Self {
        StorageProfile {
            kind: StorageKind::File,
            segment_size: ByteSize::b(raftkit_file::FileLogOptions::default().segment_size_bytes),
            snapshot_retain: 2,
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

/// A profile that can be used, with where each of its values came from.
#[derive(Debug)]
pub struct Loaded {
    /// The merged, validated profile.
    pub profile: Profile,
    figment: Figment,
}

/// A profile that cannot be used: where, which key, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.lines.join("\n"))]
pub struct ProfileError {
    lines: Vec<String>,
}

impl ProfileError {
    fn new(source: impl fmt::Display, key: &str, problem: impl fmt::Display) -> ProfileError {
        let line = if key.is_empty() {
            format!("{source}: {problem}")
        } else {
            format!("{source}: key `{key}`: {problem}")
        };
        ProfileError { lines: vec![line] }
    }
}

impl Loaded {
    /// Where the value at `key` (dotted) came from: a file path, the
    /// environment or a flag.
    pub fn source_of(&self, key: &str) -> String {
        source_name(self.figment.find_metadata(key), key)
    }

    /// The error for a bad value at `key`, naming its source.
    pub fn error(&self, key: &str, problem: impl fmt::Display) -> ProfileError {
        ProfileError::new(self.source_of(key), key, problem)
    }
}

/// Merges the profile files in order, then `RAFTKIT_*` variables, then
/// flags, and validates the result. Touches nothing on disk but the files.
///
/// ```
/// use raftkit_node::profile::{load, Overrides};
/// let dir = tempfile::tempdir().unwrap();
/// let file = dir.path().join("n1.toml");
/// std::fs::write(&file, "id = \"n1\"\ndata_dir = \"d\"\nhttp_addr = \"127.0.0.1:8001\"\n\
///     raft_addr = \"127.0.0.1:7001\"\n[raft]\nheartbeat = \"1s\"\n").unwrap();
/// let err = load(&[file.clone()], &Overrides::default()).unwrap_err().to_string();
/// assert!(err.contains("key `raft.heartbeat`: unknown key"), "{err}");
///
/// let flags = Overrides { id: Some("n2".into()), ..Overrides::default() };
/// std::fs::write(&file, "id = \"n1\"\ndata_dir = \"d\"\nhttp_addr = \"127.0.0.1:8001\"\n\
///     raft_addr = \"127.0.0.1:7001\"\n").unwrap();
/// assert_eq!(load(&[file], &flags).unwrap().profile.id, "n2");
/// ```
pub fn load(files: &[PathBuf], overrides: &Overrides) -> Result<Loaded, ProfileError> {
    let mut figment = Figment::new();
    for file in files {
        check_readable(file)?;
        figment = figment.merge(Toml::file_exact(file));
    }
    figment = figment
        .merge(Env::prefixed("RAFTKIT_").split("__"))
        .merge(Serialized::defaults(overrides));
    let profile: Profile = figment.extract().map_err(|e| from_figment(e, files))?;
    let loaded = Loaded { profile, figment };
    validate(&loaded)?;
    Ok(loaded)
}

/// A profile with every key at its default (the required keys get example
/// values), for `raftkit config schema`.
pub fn example() -> Profile {
    Profile {
        id: "n1".into(),
        data_dir: "data/n1".into(),
        http_addr: SocketAddr::from(([127, 0, 0, 1], 8001)),
        raft_addr: SocketAddr::from(([127, 0, 0, 1], 7001)),
        bootstrap: false,
        join: Vec::new(),
        nonvoter: false,
        cluster_id: Some(0),
        transport: TransportProfile::default(),
        storage: StorageProfile::default(),
        raft: RaftProfile::default(),
        cluster: ClusterProfile {
            servers: vec![ClusterServer {
                id: "n1".into(),
                raft_addr: "127.0.0.1:7001".into(),
                suffrage: SuffrageProfile::Voter,
            }],
        },
        http: HttpProfile::default(),
        log: LogProfile::default(),
    }
}

/// The profile as TOML.
pub fn to_toml(profile: &Profile) -> String {
    toml::to_string_pretty(profile).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

/// One line of help per key, for `raftkit config schema`.
const KEY_DOCS: &[(&str, &str)] = &[
    (
        "id",
        "server id, unique and stable for the node's life (required)",
    ),
    (
        "data_dir",
        "log, stable state, snapshots and lock file (required)",
    ),
    (
        "http_addr",
        "HTTP API, /metrics, /health, /ready (required)",
    ),
    (
        "raft_addr",
        "bound by the transport and advertised to peers (required)",
    ),
    (
        "bootstrap",
        "true: bootstrap from [[cluster.servers]] (or alone) if storage is empty",
    ),
    (
        "join",
        "HTTP URLs of nodes to ask to add this one, e.g. [\"http://127.0.0.1:8001\"]",
    ),
    ("nonvoter", "with join: ask to be added as a non-voter"),
    (
        "cluster_id",
        "transports refuse frames from another cluster id",
    ),
    (
        "transport.kind",
        "tcp | quic | inmem (inmem: single-node profiles only)",
    ),
    (
        "transport.insecure_dev",
        "quic only: self-signed certificates, no peer check",
    ),
    (
        "transport.connect_timeout",
        "how long a connection attempt may take",
    ),
    (
        "transport.write_timeout",
        "a frame write blocked this long drops the connection",
    ),
    ("transport.max_frame_size", "largest frame sent or accepted"),
    ("storage.kind", "file | memory | lmdb"),
    (
        "storage.segment_size",
        "file: WAL segment size; compaction frees whole segments",
    ),
    ("storage.snapshot_retain", "snapshots kept on disk"),
    (
        "raft.heartbeat_timeout",
        "follower silence before an election; the tick is a tenth of it",
    ),
    (
        "raft.election_timeout",
        "a candidate without a majority retries after this",
    ),
    (
        "raft.leader_lease_timeout",
        "check-quorum and lease reads; <= heartbeat_timeout, >= 3 ticks",
    ),
    (
        "raft.commit_timeout",
        "longest delay before followers hear a new commit index",
    ),
    ("raft.max_append_entries", "entries per AppendEntries"),
    (
        "raft.max_append_bytes",
        "payload per AppendEntries (one entry always goes)",
    ),
    (
        "raft.max_inflight",
        "AppendEntries in flight per peer (pipeline window)",
    ),
    (
        "raft.max_apply_batch",
        "commands per state machine apply call",
    ),
    (
        "raft.max_pending_proposals",
        "proposals waiting to be appended before apply calls wait",
    ),
    (
        "raft.trailing_logs",
        "entries kept after a snapshot for lagging followers",
    ),
    (
        "raft.snapshot_interval",
        "how often to check whether a snapshot is due",
    ),
    (
        "raft.snapshot_threshold",
        "applied entries since the last snapshot that make one due",
    ),
    ("raft.snapshot_chunk_bytes", "InstallSnapshot chunk size"),
    (
        "raft.pre_vote",
        "pre-vote round so a returning partitioned node cannot depose a leader",
    ),
    (
        "raft.shutdown_on_remove",
        "stop raft when a configuration change removes this node",
    ),
    (
        "cluster.servers.id",
        "a server of the initial configuration (default: none)",
    ),
    ("cluster.servers.raft_addr", "its raft_addr"),
    ("cluster.servers.suffrage", "voter | nonvoter"),
    (
        "http.max_value_bytes",
        "largest value for PUT and CAS; larger gets 413",
    ),
    (
        "http.request_timeout",
        "commit / read-point / admin deadline; a write past it gets 504",
    ),
    (
        "log.level",
        "error | warn | info | debug | trace (RUST_LOG overrides)",
    ),
    ("log.format", "text | json"),
];

/// Every key with its default and one line of help, as commented TOML.
pub fn schema() -> String {
    let mut out = String::new();
    let mut section = String::new();
    for line in to_toml(&example()).lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[') {
            section = name.trim_matches(|c| c == '[' || c == ']').to_string();
            if section == "storage" {
                out.push_str(
                    "# [transport.tls]               mTLS: optional for tcp, required for quic\n\
                     # ca = \"certs/ca.pem\"          #   the CA that signs every node\n\
                     # cert = \"certs/n1.pem\"        #   this node's chain, SAN DNS = its id\n\
                     # key = \"certs/n1.key\"\n\n",
                );
            }
        } else if let Some((key, _)) = trimmed.split_once(" = ") {
            let full = if section.is_empty() {
                key.to_string()
            } else {
                format!("{section}.{key}")
            };
            if let Some((_, doc)) = KEY_DOCS.iter().find(|(k, _)| *k == full) {
                out.push_str(&format!("# {doc}\n"));
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn check_readable(file: &Path) -> Result<(), ProfileError> {
    match std::fs::metadata(file) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(ProfileError::new(file.display(), "", "is not a file")),
        Err(e) => Err(ProfileError::new(
            file.display(),
            "",
            format_args!("cannot read profile: {e}"),
        )),
    }
}

fn source_name(metadata: Option<&Metadata>, key: &str) -> String {
    match metadata {
        Some(Metadata {
            source: Some(Source::File(path)),
            ..
        }) => path.display().to_string(),
        Some(m) if m.name.contains("Overrides") => "command-line flag".into(),
        Some(m) if m.name.contains("environment") => {
            let var: Vec<String> = key.split('.').map(str::to_ascii_uppercase).collect();
            format!("environment variable RAFTKIT_{}", var.join("__"))
        }
        Some(m) => m.name.to_string(),
        None => "built-in default (no profile sets it)".into(),
    }
}

fn from_figment(errors: figment::Error, files: &[PathBuf]) -> ProfileError {
    let all_files = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    use figment::error::Kind;
    let lines = errors
        .into_iter()
        .map(|e| {
            let mut key = e.path.join(".");
            let problem = match &e.kind {
                Kind::UnknownField(field, _) => {
                    if e.path.last() != Some(field) {
                        key = if key.is_empty() {
                            field.clone()
                        } else {
                            format!("{key}.{field}")
                        };
                    }
                    "unknown key".to_string()
                }
                Kind::MissingField(field) => {
                    key = if key.is_empty() {
                        field.to_string()
                    } else {
                        format!("{key}.{field}")
                    };
                    "missing: no profile, RAFTKIT_* variable or flag sets it".to_string()
                }
                other => other.to_string(),
            };
            let source = match &e.kind {
                Kind::MissingField(_) => all_files.clone(),
                _ => source_name(e.metadata.as_ref(), &key),
            };
            ProfileError::new(source, &key, problem).lines.remove(0)
        })
        .collect();
    ProfileError { lines }
}

fn validate(loaded: &Loaded) -> Result<(), ProfileError> {
    let p = &loaded.profile;
    let id_ok = |id: &str| {
        (1..=MAX_ID_LEN).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if !id_ok(&p.id) {
        return Err(loaded.error(
            "id",
            format_args!(
                "{:?} must be 1..={MAX_ID_LEN} characters of A-Z a-z 0-9 - _ . \
                 (it names the node in URLs and TLS certificates)",
                p.id
            ),
        ));
    }
    if p.bootstrap && !p.join.is_empty() {
        return Err(loaded.error(
            "join",
            "a node either bootstraps a new cluster (bootstrap = true) or joins one, not both",
        ));
    }
    let mut seen = HashSet::new();
    for (i, server) in p.cluster.servers.iter().enumerate() {
        if !id_ok(&server.id) {
            return Err(loaded.error(
                "cluster.servers",
                format_args!(
                    "entry {}: id {:?} is not a valid server id",
                    i + 1,
                    server.id
                ),
            ));
        }
        if !seen.insert(server.id.as_str()) {
            return Err(loaded.error(
                "cluster.servers",
                format_args!("duplicate server id {:?} (entry {})", server.id, i + 1),
            ));
        }
    }
    if p.bootstrap && !p.cluster.servers.is_empty() {
        match p.cluster.servers.iter().find(|s| s.id == p.id) {
            None => {
                return Err(loaded.error(
                    "cluster.servers",
                    format_args!("bootstrap = true but this node ({:?}) is not listed", p.id),
                ))
            }
            Some(me) if me.raft_addr != p.raft_addr.to_string() => {
                return Err(loaded.error(
                    "cluster.servers",
                    format_args!(
                        "entry {:?} has raft_addr {} but raft_addr is {}",
                        p.id, me.raft_addr, p.raft_addr
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    for url in &p.join {
        if !url.starts_with("http://") {
            return Err(loaded.error("join", format_args!("{url:?} is not an http:// URL")));
        }
    }
    validate_transport(loaded)?;
    if p.storage.snapshot_retain == 0 {
        return Err(loaded.error("storage.snapshot_retain", "must be at least 1"));
    }
    if p.storage.kind == StorageKind::File
        && p.storage.segment_size.as_u64() < raftkit_file::MIN_SEGMENT_SIZE_BYTES
    {
        return Err(loaded.error(
            "storage.segment_size",
            format_args!(
                "{} is below the minimum of {}",
                p.storage.segment_size,
                ByteSize::b(raftkit_file::MIN_SEGMENT_SIZE_BYTES)
            ),
        ));
    }
    if p.http.request_timeout.is_zero() {
        return Err(loaded.error("http.request_timeout", "must be positive"));
    }
    if let Err(e) = p.raft.to_config(&p.id).validate() {
        return Err(loaded.error(&format!("raft.{}", e.field), e.reason));
    }
    Ok(())
}

fn validate_transport(loaded: &Loaded) -> Result<(), ProfileError> {
    let p = &loaded.profile;
    let t = &p.transport;
    if t.kind == TransportKind::Inmem && (p.cluster.servers.len() > 1 || !p.join.is_empty()) {
        return Err(loaded.error(
            "transport.kind",
            "inmem carries messages inside one process only; a profile with other servers \
             (cluster.servers or join) needs tcp or quic",
        ));
    }
    if t.kind == TransportKind::Quic && t.tls.is_none() && !t.insecure_dev {
        return Err(loaded.error(
            "transport.kind",
            "quic needs [transport.tls] (or insecure_dev = true for development)",
        ));
    }
    if t.insecure_dev && t.kind != TransportKind::Quic {
        return Err(loaded.error("transport.insecure_dev", "applies to quic only"));
    }
    if let Some(tls) = &t.tls {
        for (key, path) in [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)] {
            if !path.is_file() {
                return Err(loaded.error(
                    &format!("transport.tls.{key}"),
                    format_args!("file {} does not exist", path.display()),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const BASE: &str = r#"
id = "n1"
data_dir = "data/n1"
http_addr = "127.0.0.1:8001"
raft_addr = "127.0.0.1:7001"
"#;

    #[test]
    fn later_files_and_flags_override_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.toml", BASE);
        let b = write(
            dir.path(),
            "b.toml",
            "[raft]\nheartbeat_timeout = \"150ms\"\nleader_lease_timeout = \"100ms\"\n",
        );
        let flags = Overrides {
            id: Some("n9".into()),
            ..Overrides::default()
        };
        let loaded = load(&[a, b.clone()], &flags).unwrap();
        assert_eq!(loaded.profile.id, "n9");
        assert_eq!(
            loaded.profile.raft.heartbeat_timeout,
            Duration::from_millis(150)
        );
        assert_eq!(
            loaded.source_of("raft.heartbeat_timeout"),
            b.display().to_string()
        );
        assert_eq!(loaded.source_of("id"), "command-line flag");
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(
            dir.path(),
            "a.toml",
            &format!("{BASE}[raft]\nheartbeat = 1\n"),
        );
        let err = load(std::slice::from_ref(&a), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(&a.display().to_string()), "{err}");
        assert!(err.contains("`raft.heartbeat`"), "{err}");
        assert!(err.contains("unknown key"), "{err}");
    }

    #[test]
    fn bad_duration_names_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(
            dir.path(),
            "a.toml",
            &format!("{BASE}[raft]\nheartbeat_timeout = \"fast\"\n"),
        );
        let err = load(std::slice::from_ref(&a), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("raft.heartbeat_timeout"), "{err}");
        assert!(err.contains(&a.display().to_string()), "{err}");
    }

    #[test]
    fn duplicate_server_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{BASE}[[cluster.servers]]\nid = \"n1\"\nraft_addr = \"127.0.0.1:7001\"\n\
             [[cluster.servers]]\nid = \"n1\"\nraft_addr = \"127.0.0.1:7002\"\n"
        );
        let a = write(dir.path(), "a.toml", &text);
        let err = load(std::slice::from_ref(&a), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("duplicate server id"), "{err}");
        assert!(err.contains(&a.display().to_string()), "{err}");
    }

    #[test]
    fn inmem_with_peers_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text =
            format!("{BASE}join = [\"http://127.0.0.1:8002\"]\n[transport]\nkind = \"inmem\"\n");
        let a = write(dir.path(), "a.toml", &text);
        let err = load(&[a], &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("transport.kind"), "{err}");
    }

    #[test]
    fn bootstrap_with_join_and_bad_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{BASE}bootstrap = true\njoin = [\"http://127.0.0.1:8002\"]\n");
        let a = write(dir.path(), "a.toml", &text);
        let err = load(&[a], &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("`join`") && err.contains("not both"), "{err}");

        let a = write(dir.path(), "b.toml", BASE);
        let flags = Overrides {
            id: Some("n 1/x".into()),
            ..Overrides::default()
        };
        let err = load(&[a], &flags).unwrap_err().to_string();
        assert!(err.starts_with("command-line flag: key `id`"), "{err}");
    }

    #[test]
    fn missing_tls_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{BASE}[transport.tls]\nca = \"/nonexistent/ca.pem\"\ncert = \"c\"\nkey = \"k\"\n"
        );
        let a = write(dir.path(), "a.toml", &text);
        let err = load(&[a], &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("transport.tls.ca"), "{err}");
    }

    #[test]
    fn raft_config_errors_name_the_raft_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{BASE}[raft]\nheartbeat_timeout = \"100ms\"\n");
        let a = write(dir.path(), "a.toml", &text);
        let err = load(&[a], &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("raft.leader_lease_timeout"), "{err}");
    }

    #[test]
    fn schema_documents_every_key() {
        let text = schema();
        for (key, doc) in KEY_DOCS {
            assert!(text.contains(doc), "{key} undocumented in:\n{text}");
        }
    }

    #[test]
    fn example_round_trips_through_toml() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.toml", &to_toml(&example()));
        let loaded = load(&[a], &Overrides::default()).unwrap();
        assert_eq!(loaded.profile, example());
    }
}
