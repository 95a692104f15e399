//! `raftkit`: run a Raft KV node from TOML profiles, or check a profile.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use raftkit_node::{Failure, Overrides};

#[derive(Parser)]
#[command(name = "raftkit", version, about = "A Raft KV node")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node from profiles (later files override earlier ones).
    Run(ProfileArgs),
    /// Inspect profiles.
    #[command(subcommand)]
    Config(ConfigCmd),
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate profiles and print the effective merged configuration.
    Check(ProfileArgs),
    /// Print every key with its default.
    Schema,
}

#[derive(clap::Args)]
struct ProfileArgs {
    /// A TOML profile; repeat to merge several in order.
    #[arg(long = "profile", required = true)]
    profiles: Vec<PathBuf>,
    #[arg(long)]
    id: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    http_addr: Option<String>,
    #[arg(long)]
    raft_addr: Option<String>,
    /// HTTP URL of a node to ask to add this one; repeatable.
    #[arg(long)]
    join: Vec<String>,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Config(ConfigCmd::Schema) => {
            print!("{}", raftkit_node::schema());
            Ok(())
        }
        Cmd::Config(ConfigCmd::Check(args)) => {
            load(args).map(|l| print!("{}", raftkit_node::profile::to_toml(&l.profile)))
        }
        Cmd::Run(args) => load(args).and_then(run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("raftkit: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}

fn load(a: ProfileArgs) -> Result<raftkit_node::Loaded, Failure> {
    let flags = Overrides {
        id: a.id,
        data_dir: a.data_dir,
        http_addr: a.http_addr,
        raft_addr: a.raft_addr,
        join: a.join,
    };
    Ok(raftkit_node::load(&a.profiles, &flags)?)
}

fn run(loaded: raftkit_node::Loaded) -> Result<(), Failure> {
    raftkit_node::init_tracing(&loaded.profile.log);
    let runtime = tokio::runtime::Runtime::new().map_err(anyhow::Error::from)?;
    runtime.block_on(raftkit_node::run(loaded, raftkit_node::shutdown_signal()))
}
