//! `raftkit config schema`: every key with its default and a line of help.

use std::net::SocketAddr;

use super::{
    ClusterProfile, ClusterServer, HttpProfile, LogProfile, Profile, RaftProfile, StorageProfile,
    SuffrageProfile, TransportProfile,
};

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
        debug: super::DebugProfile::default(),
    }
}

/// The profile as TOML.
pub fn to_toml(profile: &Profile) -> String {
    toml::to_string_pretty(profile).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

/// One line of help per key, for `raftkit config schema`.
pub(super) const KEY_DOCS: &[(&str, &str)] = &[
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
    (
        "storage.preallocate",
        "file: zero-filled full-size segments, appends overwrite (faster fsync)",
    ),
    ("storage.snapshot_retain", "snapshots kept on disk"),
    (
        "storage.map_size",
        "lmdb: initial map size; grows when full",
    ),
    (
        "storage.sync",
        "lmdb: always | none (none loses acknowledged writes on a crash)",
    ),
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
