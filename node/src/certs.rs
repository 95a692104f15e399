//! `raftkit certs`: a CA and per-server certificates for the TLS profiles.

use std::path::PathBuf;

use clap::Args;

use crate::Failure;

/// `raftkit certs DIR --servers n1,n2,n3`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Where to write the PEM files.
    pub dir: PathBuf,
    /// Server ids, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub servers: Vec<String>,
}

/// Runs `raftkit certs`.
pub fn execute(args: CertsArgs) -> Result<(), Failure> {
    Err(Failure::Other(anyhow::anyhow!(
        "raftkit certs is not built yet (asked for {} in {})",
        args.servers.join(","),
        args.dir.display()
    )))
}
