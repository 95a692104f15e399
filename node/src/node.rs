//! `raftkit run`: a validated profile becomes a running node.
//!
//! ```text
//!  Loaded profile ─▶ bind HTTP, probe raft_addr   (errors: exit 2, data dir untouched)
//!                 ─▶ lock data_dir/raftkit.lock   (a second process refuses)
//!                 ─▶ storage + transport + KvFsm ─▶ Raft::new
//!                 ─▶ bootstrap (no-op if state) / join loop / http_addr registration
//!                 ─▶ serve HTTP until SIGTERM/SIGINT ─▶ stop HTTP ─▶ raft.shutdown()
//! ```

use std::fs::File;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use raftkit::wire::ClusterId;
use raftkit::{Configuration, NodeId, Raft, RaftError, RaftState, Server, ServerAddress};
use raftkit_file::{FileLogOptions, FileLogStore, FileSnapshotStore, FileStableStore};
use raftkit_memory::{MemLogStore, MemSnapshotStore, MemStableStore};
use tokio::net::TcpListener;

use crate::fault::FaultLog;
use crate::http::Api;
use crate::kv::{Command, KvFsm, KvReader, KvResponse};
use crate::profile::{Loaded, Profile, StorageKind, SuffrageProfile, TransportKind};
use crate::Failure;

/// The lock file that keeps a second process off a data directory.
pub const LOCK_FILE: &str = "raftkit.lock";
/// How often the join loop tries again.
const RETRY_INTERVAL: Duration = Duration::from_millis(300);
/// How often a node checks its entry in the `id -> http_addr` table; a new
/// leader registers itself within this time, so keep it short.
const REGISTER_INTERVAL: Duration = Duration::from_millis(50);

/// Runs a node until `stop` resolves (the binary passes SIGTERM/SIGINT),
/// then shuts it down gracefully.
pub async fn run(
    loaded: Loaded,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Failure> {
    let p = &loaded.profile;
    let listener = preflight(&loaded).await?;
    let _lock = lock_data_dir(&p.data_dir)?;
    let metrics = crate::metrics::install();
    let (fsm, kv) = KvFsm::new();
    crate::fault::warn_enabled(&p.debug);
    let faults = crate::fault::Faults::new();
    let raft = start_raft(p, fsm, faults.clone()).await?;
    tracing::info!(id = %p.id, http = %p.http_addr, raft = %p.raft_addr, "node started");

    if p.bootstrap {
        bootstrap(&raft, p).await?;
    }
    let mut tasks = tokio::task::JoinSet::new();
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| Failure::Other(anyhow::anyhow!("building the HTTP client: {e}")))?;
    if !p.join.is_empty() {
        tasks.spawn(join_loop(raft.clone(), client.clone(), p.clone()));
    }
    tasks.spawn(register_http_addr(
        raft.clone(),
        kv.clone(),
        client.clone(),
        p.clone(),
    ));

    let api = Arc::new(Api {
        raft: raft.clone(),
        kv,
        id: NodeId::new(&p.id),
        max_value_bytes: usize::try_from(p.http.max_value_bytes.as_u64()).unwrap_or(usize::MAX),
        request_timeout: p.http.request_timeout,
        client,
        metrics,
        transport: transport_name(p.transport.kind),
        storage: storage_name(p.storage.kind),
    });
    // Stop on the signal, or when raft stops by itself (removed from the
    // cluster with shutdown_on_remove, or a fatal storage/state machine error).
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel();
    let watched = raft.clone();
    let either = async move {
        let by_itself = tokio::select! {
            _ = stop => None,
            removed = raft_stopped(watched) => Some(removed),
        };
        let _ = stopped_tx.send(by_itself);
    };
    let mut app = crate::http::router(api);
    if p.debug.fault_injection {
        app = app.merge(crate::fault::router(Arc::new(crate::fault::Control {
            faults,
            raft: raft.clone(),
            clock_rate: std::sync::Mutex::new(1.0),
        })));
    }
    if p.debug.unsafe_stale_linearizable_reads {
        app = app.layer(axum::middleware::map_request(crate::fault::stale_reads));
    }
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(either)
        .await;
    tracing::info!("HTTP stopped; shutting down raft");
    tasks.abort_all();
    raft.shutdown().await;
    tracing::info!("shut down");
    served.map_err(|e| Failure::Other(anyhow::anyhow!("HTTP server: {e}")))?;
    match stopped_rx.await {
        Ok(Some(false)) => Err(Failure::Other(anyhow::anyhow!(
            "raft stopped on its own (a fatal error; see the log above)"
        ))),
        Ok(Some(true)) => {
            tracing::info!("this node was removed from the cluster; exiting");
            Ok(())
        }
        Ok(None) | Err(_) => Ok(()),
    }
}

/// Resolves once raft's state is `Shutdown`; true if it was removed from
/// the configuration first. The state is watched (not only the events), since
/// the events may all be read before the state changes.
async fn raft_stopped(raft: Raft<KvResponse>) -> bool {
    use tokio::sync::broadcast::error::RecvError;
    const RECHECK: Duration = Duration::from_secs(60);
    let mut events = raft.subscribe();
    let mut removed = false;
    loop {
        tokio::select! {
            r = raft.wait_for_state(RaftState::Shutdown, RECHECK) => {
                if !matches!(r, Err(RaftError::Timeout)) {
                    // The Removed event may still be queued behind others.
                    while let Ok(e) = events.try_recv() {
                        removed |= e == raftkit::Event::Removed;
                    }
                    return removed;
                }
            }
            e = events.recv() => match e {
                Ok(raftkit::Event::Removed) => removed = true,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return removed,
            },
        }
    }
}

/// Checks what can only be checked by trying, before the data directory is
/// touched: the HTTP listener (kept), the raft port (probed and released),
/// and plug-ins this binary lacks. Every failure is a profile error (exit 2).
async fn preflight(loaded: &Loaded) -> Result<TcpListener, Failure> {
    let p = &loaded.profile;
    let listener = TcpListener::bind(p.http_addr).await.map_err(|e| {
        Failure::Profile(loaded.error(
            "http_addr",
            format_args!("cannot listen on {}: {e}", p.http_addr),
        ))
    })?;
    if p.transport.kind != TransportKind::Inmem {
        std::net::TcpListener::bind(p.raft_addr).map_err(|e| {
            Failure::Profile(loaded.error(
                "raft_addr",
                format_args!("cannot listen on {}: {e}", p.raft_addr),
            ))
        })?;
    }
    Ok(listener)
}

fn transport_name(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Tcp => "tcp",
        TransportKind::Quic => "quic",
        TransportKind::Inmem => "inmem",
    }
}

fn storage_name(kind: StorageKind) -> &'static str {
    match kind {
        StorageKind::Lmdb => "lmdb",
        StorageKind::File => "file",
        StorageKind::Memory => "memory",
    }
}

/// Creates `dir` and takes an exclusive lock on its lock file, held until
/// the returned file is dropped.
pub fn lock_data_dir(dir: &Path) -> Result<File, Failure> {
    let context = |what: &str, e: std::io::Error| {
        Failure::Other(anyhow::anyhow!("{what} {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| context("creating data directory", e))?;
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| context("opening lock file in", e))?;
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => Ok(file),
        Err(fs4::TryLockError::WouldBlock) => Err(Failure::Locked(path)),
        Err(fs4::TryLockError::Error(e)) => Err(context("locking", e)),
    }
}

fn raft_failure(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::Other(anyhow::anyhow!("{what}: {e}"))
}

async fn start_raft(
    p: &Profile,
    fsm: KvFsm,
    faults: Arc<crate::fault::Faults>,
) -> Result<Raft<KvResponse>, Failure> {
    let dir = &p.data_dir;
    let retain = p.storage.snapshot_retain;
    // Fault injection ([debug]); without it the wrapper only passes calls on.
    let lag = p.debug.unsafe_ack_before_fsync;
    match p.storage.kind {
        StorageKind::File => {
            let options = FileLogOptions {
                segment_size_bytes: p.storage.segment_size.as_u64(),
                preallocate: p.storage.preallocate,
            };
            let log = FileLogStore::open(dir.join("log"), options)
                .map_err(|e| raft_failure("opening the log", e))?;
            let stable = FileStableStore::open(dir.join("stable"))
                .map_err(|e| raft_failure("opening the stable store", e))?;
            let snaps = FileSnapshotStore::open(dir.join("snapshots"), retain)
                .map_err(|e| raft_failure("opening the snapshot store", e))?;
            with_transport(p, fsm, FaultLog::new(log, faults, lag), stable, snaps).await
        }
        StorageKind::Memory => {
            let snaps = MemSnapshotStore::new(retain)
                .map_err(|e| raft_failure("creating the snapshot store", e))?;
            let log = FaultLog::new(MemLogStore::new(), faults, lag);
            with_transport(p, fsm, log, MemStableStore::new(), snaps).await
        }
        StorageKind::Lmdb => {
            let sync = match p.storage.sync {
                crate::profile::LmdbSync::Always => raftkit_lmdb::SyncPolicy::Always,
                crate::profile::LmdbSync::None => raftkit_lmdb::SyncPolicy::None,
            };
            let config = raftkit_lmdb::LmdbConfig {
                map_size: p.storage.map_size.as_u64(),
                sync,
            };
            let store = raftkit_lmdb::LmdbStore::open(dir.join("lmdb"), config)
                .map_err(|e| raft_failure("opening the lmdb store", e))?;
            let snaps = FileSnapshotStore::open(dir.join("snapshots"), retain)
                .map_err(|e| raft_failure("opening the snapshot store", e))?;
            let log = FaultLog::new(store.log(), faults, lag);
            with_transport(p, fsm, log, store.stable(), snaps).await
        }
    }
}

async fn with_transport<L, S, P>(
    p: &Profile,
    fsm: KvFsm,
    log: L,
    stable: S,
    snaps: P,
) -> Result<Raft<KvResponse>, Failure>
where
    L: raftkit::LogStore,
    S: raftkit::StableStore,
    P: raftkit::SnapshotStore,
{
    let config = p.raft.to_config(&p.id);
    let id = NodeId::new(&p.id);
    let raft = match p.transport.kind {
        TransportKind::Tcp => {
            let tcp = raftkit_tcp::TcpConfig {
                cluster: ClusterId(p.cluster_id.unwrap_or(0)),
                connect_timeout: p.transport.connect_timeout,
                write_timeout: p.transport.write_timeout,
                max_frame_bytes: usize::try_from(p.transport.max_frame_size.as_u64())
                    .unwrap_or(usize::MAX),
                tls: p.transport.tls.as_ref().map(|t| raftkit_tcp::TlsConfig {
                    ca_pem: t.ca.clone(),
                    cert_pem: t.cert.clone(),
                    key_pem: t.key.clone(),
                }),
                ..raftkit_tcp::TcpConfig::default()
            };
            let transport = raftkit_tcp::TcpTransport::bind(id, p.raft_addr, tcp)
                .await
                .map_err(|e| raft_failure("starting the tcp transport", e))?;
            Raft::new(config, fsm, log, stable, snaps, transport).await
        }
        TransportKind::Inmem => {
            let network = raftkit_inmem::InmemNetwork::new(0);
            let transport = network.endpoint(id, ServerAddress::new(p.raft_addr.to_string()));
            Raft::new(config, fsm, log, stable, snaps, transport).await
        }
        TransportKind::Quic => {
            let quic = raftkit_quic::QuicConfig {
                cluster: ClusterId(p.cluster_id.unwrap_or(0)),
                connect_timeout: p.transport.connect_timeout,
                write_timeout: p.transport.write_timeout,
                max_frame_bytes: usize::try_from(p.transport.max_frame_size.as_u64())
                    .unwrap_or(usize::MAX),
                tls: p.transport.tls.as_ref().map(|t| raftkit_quic::TlsFiles {
                    ca_pem: t.ca.clone(),
                    cert_pem: t.cert.clone(),
                    key_pem: t.key.clone(),
                }),
                insecure_dev: p.transport.insecure_dev,
                ..raftkit_quic::QuicConfig::default()
            };
            let transport = raftkit_quic::QuicTransport::bind(id, p.raft_addr, quic)
                .await
                .map_err(|e| raft_failure("starting the quic transport", e))?;
            Raft::new(config, fsm, log, stable, snaps, transport).await
        }
    };
    raft.map_err(|e| raft_failure("starting raft", e))
}

async fn bootstrap(raft: &Raft<KvResponse>, p: &Profile) -> Result<(), Failure> {
    let servers = if p.cluster.servers.is_empty() {
        vec![Server::voter(
            p.id.as_str(),
            p.raft_addr.to_string().as_str(),
        )]
    } else {
        p.cluster
            .servers
            .iter()
            .map(|s| match s.suffrage {
                SuffrageProfile::Voter => Server::voter(s.id.as_str(), s.raft_addr.as_str()),
                SuffrageProfile::Nonvoter => Server::nonvoter(s.id.as_str(), s.raft_addr.as_str()),
            })
            .collect()
    };
    let n = servers.len();
    match raft.bootstrap_cluster(Configuration::new(servers)).await {
        Ok(()) => {
            tracing::info!(servers = n, "bootstrapped a new cluster");
            Ok(())
        }
        Err(RaftError::CantBootstrap) => {
            tracing::info!("bootstrap = true, but this node already has state; bootstrap skipped");
            Ok(())
        }
        Err(e) => Err(raft_failure("bootstrapping", e)),
    }
}

async fn in_configuration(raft: &Raft<KvResponse>, id: &NodeId) -> bool {
    match raft.get_configuration().await {
        Ok((_, configuration)) => configuration.server(id).is_some(),
        Err(_) => false,
    }
}

/// Asks the `join` nodes to add this one until it is in the configuration.
/// Each attempt is an idempotent membership change, so retrying is safe.
async fn join_loop(raft: Raft<KvResponse>, client: reqwest::Client, p: Profile) {
    let id = NodeId::new(&p.id);
    let route = if p.nonvoter { "nonvoters" } else { "voters" };
    let body = serde_json::json!({ "id": p.id, "raft_addr": p.raft_addr.to_string() });
    let mut every = tokio::time::interval(RETRY_INTERVAL);
    let mut asked = false;
    for url in p.join.iter().cycle() {
        every.tick().await;
        if in_configuration(&raft, &id).await {
            tracing::info!("this node is in the configuration; join done");
            return;
        }
        if asked {
            // The leader answered; give replication a few rounds to arrive.
            asked = false;
            continue;
        }
        let target = format!("{}/cluster/{route}", url.trim_end_matches('/'));
        match client
            .post(&target)
            .json(&body)
            .timeout(p.http.request_timeout + Duration::from_secs(2))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                tracing::info!(%target, "join accepted");
                asked = true;
            }
            Ok(r) => {
                tracing::info!(%target, status = %r.status(), "join not accepted yet; retrying")
            }
            Err(e) => tracing::info!(%target, error = %e, "join request failed; retrying"),
        }
    }
}

/// Keeps this node's entry in the replicated `id -> http_addr` table
/// current: a leader writes it directly, a follower asks the leader.
async fn register_http_addr(
    raft: Raft<KvResponse>,
    kv: KvReader,
    client: reqwest::Client,
    p: Profile,
) {
    let mine = p.http_addr.to_string();
    let mut every = tokio::time::interval(REGISTER_INTERVAL);
    loop {
        every.tick().await;
        if kv.http_addr(&p.id).as_deref() == Some(mine.as_str()) {
            continue;
        }
        let Some((leader, _)) = raft.leader() else {
            continue;
        };
        if raft.state() == RaftState::Leader {
            let command = Command::SetHttpAddr {
                id: p.id.clone(),
                http_addr: mine.clone(),
            };
            if let Err(e) = raft.apply(command.encode(), p.http.request_timeout).await {
                tracing::debug!(error = %e, "registering http_addr");
            }
            continue;
        }
        let Some(leader_http) = kv.http_addr(leader.as_str()) else {
            continue;
        };
        let id = crate::client::encode_segment(&p.id);
        let url = format!("http://{leader_http}/cluster/servers/{id}/http-addr");
        let sent = client
            .put(&url)
            .json(&serde_json::json!({ "http_addr": mine }))
            .timeout(p.http.request_timeout)
            .send()
            .await;
        match sent {
            // Committed: give replication a moment to bring it here.
            Ok(r) if r.status().is_success() => tokio::time::sleep(RETRY_INTERVAL).await,
            Ok(r) => tracing::debug!(status = %r.status(), %url, "registering http_addr"),
            Err(e) => tracing::debug!(error = %e, %url, "registering http_addr"),
        }
    }
}
