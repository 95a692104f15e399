//! `raftkit-node`: the `raftkit` binary as a library: TOML profiles, a KV
//! state machine, the HTTP API of `shared/spec/node-api.md`, and Prometheus
//! metrics, assembled over the `raftkit` library and its plug-ins.
//!
//! ```text
//!  main.rs (CLI) ─▶ profile::load ─▶ node::run ─┬─▶ Raft (raftkit) + storage + transport
//!                                               ├─▶ kv::KvFsm (the state machine)
//!                                               └─▶ http::router (axum) + metrics
//! ```
//!
//! It is not a general KV database: one process is one Raft server, and the
//! whole state lives in memory (snapshotted through the storage backend).

pub mod bench;
pub mod certs;
pub mod cli;
pub mod client;
pub mod fault;
pub mod http;
pub mod kv;
pub mod metrics;
pub mod node;
pub mod profile;
pub mod supervise;

use std::path::PathBuf;

pub use node::run;
pub use profile::{load, Loaded, Overrides, Profile, ProfileError};

/// Why the binary stops with an error; [`Failure::exit_code`] says how.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The profile cannot be used (exit code 2).
    #[error("invalid profile:\n{0}")]
    Profile(#[from] ProfileError),
    /// Another process holds the data directory's lock (exit code 1).
    #[error("data directory is in use by another raftkit process (lock held on {})", .0.display())]
    Locked(PathBuf),
    /// Anything else (exit code 1).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Failure {
    /// 2 for a bad profile, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Profile(_) => 2,
            Failure::Locked(_) | Failure::Other(_) => 1,
        }
    }
}

/// Installs the `tracing` subscriber the profile's `[log]` asks for;
/// `RUST_LOG`, when set, overrides the level.
pub fn init_tracing(log: &profile::LogProfile) {
    use profile::{LogFormat, LogLevel};
    use tracing_subscriber::EnvFilter;
    let level = match log.level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("signal received; shutting down");
}

/// `raftkit config schema`: every key with its default, as TOML.
pub fn schema() -> String {
    format!(
        "# Every profile key with its default. `id`, `data_dir`, `http_addr` and\n\
         # `raft_addr` have no default (example values shown); `[[cluster.servers]]`\n\
         # is empty by default. Override any key with RAFTKIT_<SECTION>__<KEY>.\n\n{}",
        profile::schema()
    )
}
