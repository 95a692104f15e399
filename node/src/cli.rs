//! The `raftkit` command line: its grammar and what each command calls.
//!
//! ```text
//!  raftkit run --profile a.toml [--profile b.toml] [--id ..]   one node    (node::run)
//!  raftkit up configs/local-3/                                  every profile as a child (supervise)
//!  raftkit config check --profile ... | config schema           profiles   (profile)
//!  raftkit status | kv ... | cluster ...  [--addr URL]          HTTP client (client)
//!  raftkit bench cluster|http|floor ...                         benchmarks (bench)
//!  raftkit certs DIR --servers n1,n2,n3                         TLS material (certs)
//! ```

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::{Failure, Overrides};

/// `raftkit`: a Raft KV node and its tools.
#[derive(Debug, Parser)]
#[command(
    name = "raftkit",
    version,
    about = "A Raft KV node, its supervisor and client"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run one node from profiles (later files override earlier ones).
    Run(ProfileArgs),
    /// Run every profile in a folder as a child process, with a live status table;
    /// Ctrl-C stops them all.
    Up {
        /// A folder of `*.toml` profiles, e.g. `configs/local-3`.
        dir: PathBuf,
    },
    /// Inspect profiles.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Print the state of running nodes (`GET /cluster`).
    Status {
        /// HTTP base URLs of the nodes.
        #[arg(long = "addr", default_value = "http://127.0.0.1:8001")]
        addrs: Vec<String>,
    },
    /// Read and write keys.
    Kv {
        /// HTTP base URL of any node.
        #[arg(long, default_value = "http://127.0.0.1:8001")]
        addr: String,
        /// The operation.
        #[command(subcommand)]
        op: KvCmd,
    },
    /// Change the cluster's membership and leadership.
    Cluster {
        /// HTTP base URL of any node.
        #[arg(long, default_value = "http://127.0.0.1:8001")]
        addr: String,
        /// The operation.
        #[command(subcommand)]
        op: ClusterCmd,
    },
    /// Benchmarks: an in-process cluster, HTTP load on running nodes, the
    /// machine's floors.
    #[command(subcommand)]
    Bench(crate::bench::BenchCmd),
    /// Generate a CA and per-server certificates for the TLS profiles.
    Certs(crate::certs::CertsArgs),
}

/// `raftkit config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate profiles and print the effective merged configuration.
    Check(ProfileArgs),
    /// Print every key with its default.
    Schema,
}

/// `raftkit kv ...`.
#[derive(Debug, Subcommand)]
pub enum KvCmd {
    /// Print a key's value.
    Get {
        /// The key.
        key: String,
        /// `linearizable` (default), `lease` or `stale`.
        #[arg(long, default_value = "linearizable")]
        consistency: String,
    },
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Compare-and-swap: set `new` only if the value is `expected`.
    Cas {
        /// The key.
        key: String,
        /// The value required now; omit for "absent".
        #[arg(long)]
        expected: Option<String>,
        /// The value to set; omit to delete.
        #[arg(long)]
        new: Option<String>,
    },
}

/// `raftkit cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Add a voter.
    AddVoter {
        /// Its server id.
        id: String,
        /// Its raft address.
        raft_addr: String,
    },
    /// Add a non-voter.
    AddNonvoter {
        /// Its server id.
        id: String,
        /// Its raft address.
        raft_addr: String,
    },
    /// Make a voter a non-voter.
    Demote {
        /// Its server id.
        id: String,
    },
    /// Remove a server.
    Remove {
        /// Its server id.
        id: String,
    },
    /// Hand leadership to another voter (the most up to date one, or `id`).
    Transfer {
        /// The server to lead next.
        id: Option<String>,
    },
    /// Take a snapshot on the leader now.
    Snapshot,
}

/// Profiles and the flags that override them.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// A TOML profile; repeat to merge several, in order.
    #[arg(long = "profile", required = true)]
    pub profiles: Vec<PathBuf>,
    /// Overrides `id`.
    #[arg(long)]
    pub id: Option<String>,
    /// Overrides `data_dir`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Overrides `http_addr`.
    #[arg(long)]
    pub http_addr: Option<String>,
    /// Overrides `raft_addr`.
    #[arg(long)]
    pub raft_addr: Option<String>,
    /// Overrides `join`: HTTP URL of a node to ask to add this one; repeatable.
    #[arg(long)]
    pub join: Vec<String>,
}

impl ProfileArgs {
    /// Loads and validates the profiles with the flags on top.
    pub fn load(self) -> Result<crate::Loaded, Failure> {
        let flags = Overrides {
            id: self.id,
            data_dir: self.data_dir,
            http_addr: self.http_addr,
            raft_addr: self.raft_addr,
            join: self.join,
        };
        Ok(crate::load(&self.profiles, &flags)?)
    }
}

/// Runs one command.
pub fn execute(command: Cmd) -> Result<(), Failure> {
    match command {
        Cmd::Run(args) => {
            let loaded = args.load()?;
            crate::init_tracing(&loaded.profile.log);
            runtime()?.block_on(crate::run(loaded, crate::shutdown_signal()))
        }
        Cmd::Config(ConfigCmd::Schema) => {
            print!("{}", crate::schema());
            Ok(())
        }
        Cmd::Config(ConfigCmd::Check(args)) => {
            print!("{}", crate::profile::to_toml(&args.load()?.profile));
            Ok(())
        }
        Cmd::Up { dir } => runtime()?.block_on(crate::supervise::up(&dir)),
        Cmd::Status { addrs } => runtime()?.block_on(crate::client::status(&addrs)),
        Cmd::Kv { addr, op } => runtime()?.block_on(crate::client::kv(&addr, op)),
        Cmd::Cluster { addr, op } => runtime()?.block_on(crate::client::cluster(&addr, op)),
        Cmd::Bench(cmd) => crate::bench::execute(cmd),
        Cmd::Certs(args) => crate::certs::execute(args),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Runtime::new().map_err(|e| Failure::Other(anyhow::Error::from(e)))
}
