//! `raftkit bench`: benchmarks that swap transports and storage on one workload.

use clap::Subcommand;

use crate::Failure;

/// `raftkit bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// An in-process cluster of real `Raft` instances.
    Cluster,
}

/// Runs a `raftkit bench` subcommand.
pub fn execute(cmd: BenchCmd) -> Result<(), Failure> {
    match cmd {
        BenchCmd::Cluster => Err(Failure::Other(anyhow::anyhow!(
            "raftkit bench cluster is not built yet"
        ))),
    }
}
