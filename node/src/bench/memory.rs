//! `raftkit bench memory`: what a node costs in memory when idle, and
//! whether memory and disk stay bounded while millions of entries are
//! applied with snapshots and log compaction on.
//!
//! ```text
//!  1. idle:  raftkit run (this binary, a generated one-node profile, tcp + file)
//!            ─▶ /ready answers ─▶ settle ─▶ VmRSS of that process, sampled
//!  2. load:  bench cluster's in-process servers (chosen transport × storage),
//!            C proposers writing a fixed set of keys (the state machine
//!            stays the same size), snapshots every --snapshot-threshold
//!            entries, --trailing-logs kept behind each
//!            ─▶ every --sample-every: entries applied, VmRSS, data on disk,
//!               log length and snapshot index of the leader
//!            ─▶ until --entries are applied
//! ```
//!
//! A run counts as bounded when the second half's peak RSS and peak disk
//! use are each at most 1.25 × the first half's: growth that tracks the
//! number of entries (a leak, a log never compacted) fails that, the
//! sawtooth of snapshots and compaction does not.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use serde::Serialize;

use super::cluster::{
    self, Cluster, FsmPlacement, RunSpec, SnapshotTuning, StorageKind, TransportKind,
};
use super::measure::{self, round1};
use super::{failure, output, parse_duration};
use crate::Failure;

/// How long the idle node has to answer `/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest `--value-size`.
const MAX_VALUE_SIZE: usize = 1 << 20;

/// `raftkit bench memory`.
#[derive(Clone, Debug, Args)]
pub struct MemoryArgs {
    /// Entries to apply in the load phase (0: idle phase only).
    #[arg(long, default_value_t = 10_000_000)]
    pub entries: u64,
    /// The transport between the servers of the load phase.
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: TransportKind,
    /// The storage of the load phase (file or lmdb to see the disk bounded).
    #[arg(long, value_enum, default_value = "file")]
    pub storage: StorageKind,
    /// Voters in the load phase.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Concurrent closed-loop proposers on the leader.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Value bytes per command (the key adds 16).
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Distinct keys written: the state machine's size.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Applied entries since the last snapshot that make one due.
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_threshold: u64,
    /// Entries kept behind a snapshot.
    #[arg(long, default_value_t = 10_240)]
    pub trailing_logs: u64,
    /// How often a server checks whether a snapshot is due.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub snapshot_interval: Duration,
    /// Time between samples.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub sample_every: Duration,
    /// How long the idle node runs after `/ready` before its RSS is read.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub idle_settle: Duration,
    /// Skip the idle phase.
    #[arg(long)]
    pub no_idle: bool,
    /// Where the stores go (a fresh temporary directory inside it); default:
    /// the system's temporary directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Append one JSON object per sample, then a summary object, to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Append one CSV row per sample to this file (header when new).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Draw RSS and disk against entries applied into this SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    pub worker_threads: Option<usize>,
}

impl MemoryArgs {
    fn check(&self) -> Result<(), String> {
        let at_least_one = [
            ("--nodes", self.nodes as u64),
            ("--clients", self.clients as u64),
            ("--keys", self.keys),
            ("--snapshot-threshold", self.snapshot_threshold),
        ];
        for (name, v) in at_least_one {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.value_size > MAX_VALUE_SIZE {
            return Err(format!(
                "--value-size must be at most {MAX_VALUE_SIZE} bytes, not {}",
                self.value_size
            ));
        }
        if self.sample_every.is_zero() {
            return Err("--sample-every must be longer than 0s".into());
        }
        if self.worker_threads == Some(0) {
            return Err("--worker-threads must be at least 1".into());
        }
        Ok(())
    }
}

/// One sample of the load phase.
#[derive(Clone, Debug, Serialize)]
pub struct MemorySample {
    /// Always `"sample"`.
    pub kind: &'static str,
    /// Seconds since the load started.
    pub elapsed_s: f64,
    /// Entries the leader has applied.
    pub applied: u64,
    /// This process's resident set (every server and the proposers), MiB.
    pub rss_mib: f64,
    /// Disk space of every server's stores, MiB.
    pub disk_mib: f64,
    /// Entries in the leader's log.
    pub log_entries: u64,
    /// The leader's newest snapshot's index.
    pub snapshot_index: u64,
}

/// The outcome of a `bench memory` run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MemorySummary {
    /// Always `"summary"`.
    pub kind: &'static str,
    /// RSS of an idle one-node `raftkit run`, MiB, after settling (-1: not measured).
    pub idle_rss_mib: f64,
    /// The largest RSS sampled while it settled (-1: not measured).
    pub idle_rss_max_mib: f64,
    /// `transport-storage` of the load phase.
    pub mode: String,
    /// Voters.
    pub nodes: usize,
    /// Proposers.
    pub clients: usize,
    /// Distinct keys.
    pub keys: u64,
    /// Value bytes per command.
    pub value_size: usize,
    /// Entries the leader applied during the load.
    pub entries: u64,
    /// Length of the load phase.
    pub seconds: f64,
    /// Entries per second.
    pub ops_per_sec: f64,
    /// Failed `apply` calls.
    pub errors: u64,
    /// Samples taken.
    pub samples: usize,
    /// Largest RSS in the first half of the samples, MiB.
    pub rss_first_half_max_mib: f64,
    /// Largest RSS in the second half, MiB.
    pub rss_second_half_max_mib: f64,
    /// Largest disk use in the first half, MiB.
    pub disk_first_half_max_mib: f64,
    /// Largest disk use in the second half, MiB.
    pub disk_second_half_max_mib: f64,
    /// Longest log the leader held.
    pub log_entries_max: u64,
    /// The leader's last snapshot index at the end.
    pub snapshot_index: u64,
    /// Both second-half peaks within 1.25 × the first half's.
    pub bounded: bool,
    /// When the run ended.
    pub timestamp: String,
}

/// Runs `raftkit bench memory`.
pub fn execute(args: MemoryArgs) -> Result<(), Failure> {
    args.check().map_err(failure)?;
    let mut summary = MemorySummary {
        kind: "summary",
        idle_rss_mib: -1.0,
        idle_rss_max_mib: -1.0,
        ..MemorySummary::default()
    };
    if !args.no_idle {
        eprintln!(
            "bench memory: idle one-node `raftkit run` for {:?}",
            args.idle_settle
        );
        let (settled, max) = idle_rss(&args)?;
        summary.idle_rss_mib = round1(settled);
        summary.idle_rss_max_mib = round1(max);
        eprintln!("  idle RSS {settled:.1} MiB (largest sample {max:.1} MiB)");
    }
    let mut samples = Vec::new();
    if args.entries > 0 {
        eprintln!(
            "bench memory: {} entries on {} + {}, {} nodes, {} clients, {} keys, snapshot every {} entries",
            output::thousands(args.entries as f64),
            args.transport.name(),
            args.storage.name(),
            args.nodes,
            args.clients,
            args.keys,
            args.snapshot_threshold,
        );
        let rt = super::runtime_with(args.worker_threads)?;
        rt.block_on(load(&args, &mut summary, &mut samples))?;
    }
    summary.timestamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    if let Some(path) = &args.json {
        for s in &samples {
            output::append_json(path, s)?;
        }
        output::append_json(path, &summary)?;
    }
    if let Some(path) = &args.svg {
        super::chart::memory(&samples, path)?;
    }
    print!("{}", table(&summary));
    Ok(())
}

/// Kills the idle node when the measurement ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> Result<std::net::SocketAddr, Failure> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| failure(format_args!("finding a free loopback port: {e}")))
}

/// Starts this binary as a one-node server and samples its RSS once it is
/// ready: (RSS at the end of `--idle-settle`, largest sample).
fn idle_rss(args: &MemoryArgs) -> Result<(f64, f64), Failure> {
    let parent = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent)
        .map_err(|e| failure(format_args!("creating {}: {e}", parent.display())))?;
    let dir = tempfile::Builder::new()
        .prefix("raftkit-idle-")
        .tempdir_in(&parent)
        .map_err(|e| {
            failure(format_args!(
                "creating a directory in {}: {e}",
                parent.display()
            ))
        })?;
    let (http, raft) = (free_addr()?, free_addr()?);
    let profile = dir.path().join("idle.toml");
    let text = format!(
        "id = \"n1\"\ndata_dir = {data:?}\nhttp_addr = \"{http}\"\nraft_addr = \"{raft}\"\n\
         bootstrap = true\n[transport]\nkind = \"tcp\"\n[storage]\nkind = \"file\"\n\
         [log]\nlevel = \"warn\"\n",
        data = dir.path().join("n1").display().to_string(),
    );
    std::fs::write(&profile, text)
        .map_err(|e| failure(format_args!("writing {}: {e}", profile.display())))?;
    let exe = std::env::current_exe()
        .map_err(|e| failure(format_args!("finding this program's path: {e}")))?;
    let child = Command::new(exe)
        .arg("run")
        .arg("--profile")
        .arg(&profile)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .env_remove("RUST_LOG")
        .spawn()
        .map_err(|e| failure(format_args!("starting the idle node: {e}")))?;
    let mut child = KillOnDrop(child);
    let pid = child.0.id().to_string();

    let rt = super::runtime()?;
    let url = format!("http://{http}/ready");
    rt.block_on(async {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut every = tokio::time::interval(Duration::from_millis(50));
        loop {
            every.tick().await;
            if let Ok(Some(status)) = child.0.try_wait() {
                return Err(failure(format_args!(
                    "the idle node exited with {status} before answering {url}"
                )));
            }
            let ok = client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            if Instant::now() > deadline {
                return Err(failure(format_args!(
                    "the idle node did not answer {url} within {READY_TIMEOUT:?}"
                )));
            }
        }
        let end = Instant::now() + args.idle_settle;
        let mut every = tokio::time::interval(Duration::from_millis(100));
        let mut max = 0.0f64;
        loop {
            every.tick().await;
            let rss = measure::rss_mib(&pid)
                .ok_or_else(|| failure(format_args!("reading /proc/{pid}/status")))?;
            max = max.max(rss);
            if Instant::now() >= end {
                return Ok((rss, max));
            }
        }
    })
}

/// Loads an in-process cluster until `--entries` are applied, sampling.
async fn load(
    args: &MemoryArgs,
    summary: &mut MemorySummary,
    samples: &mut Vec<MemorySample>,
) -> Result<(), Failure> {
    let spec = RunSpec {
        transport: args.transport,
        storage: args.storage,
        nodes: args.nodes,
        clients: args.clients,
        value_size: args.value_size,
        duration: Duration::ZERO,
        warmup: Duration::ZERO,
        data_dir: args.data_dir.clone(),
        apply_timeout: Duration::from_secs(10),
        keys: Some(args.keys),
        snapshots: Some(SnapshotTuning {
            threshold: args.snapshot_threshold,
            trailing_logs: args.trailing_logs,
            interval: args.snapshot_interval,
        }),
        fsm: FsmPlacement::Thread,
    };
    let cluster = Cluster::start(&spec).await?;
    let result = sample_until_applied(&cluster, &spec, args, samples).await;
    cluster::shutdown(&cluster.nodes).await;
    let (seconds, errors, applied) = result?;

    let half = samples.len() / 2;
    let peak =
        |part: &[MemorySample], f: fn(&MemorySample) -> f64| part.iter().map(f).fold(0.0, f64::max);
    let (first, second) = samples.split_at(half);
    summary.mode = format!("{}-{}", args.transport.name(), args.storage.name());
    summary.nodes = args.nodes;
    summary.clients = args.clients;
    summary.keys = args.keys;
    summary.value_size = args.value_size;
    summary.entries = applied;
    summary.seconds = round1(seconds);
    summary.ops_per_sec = round1(applied as f64 / seconds.max(1e-9));
    summary.errors = errors;
    summary.samples = samples.len();
    summary.rss_first_half_max_mib = round1(peak(first, |s| s.rss_mib));
    summary.rss_second_half_max_mib = round1(peak(second, |s| s.rss_mib));
    summary.disk_first_half_max_mib = round1(peak(first, |s| s.disk_mib));
    summary.disk_second_half_max_mib = round1(peak(second, |s| s.disk_mib));
    summary.log_entries_max = samples.iter().map(|s| s.log_entries).max().unwrap_or(0);
    summary.snapshot_index = samples.last().map_or(0, |s| s.snapshot_index);
    summary.bounded = samples.len() >= 4
        && summary.rss_second_half_max_mib <= 1.25 * summary.rss_first_half_max_mib
        && summary.disk_second_half_max_mib <= 1.25 * summary.disk_first_half_max_mib.max(1.0);
    Ok(())
}

/// Runs the proposers until the leader has applied `--entries`, taking a
/// sample every `--sample-every`: (seconds, errors, entries applied).
async fn sample_until_applied(
    cluster: &Cluster,
    spec: &RunSpec,
    args: &MemoryArgs,
    samples: &mut Vec<MemorySample>,
) -> Result<(f64, u64, u64), Failure> {
    let leader = &cluster.nodes[cluster.leader];
    let start_index = leader.stats().await.map_or(0, |s| s.status.applied_index.0);
    let phase = Arc::new(AtomicU8::new(cluster::MEASURING));
    let done = Arc::new(AtomicU64::new(0));
    let clients = cluster::spawn_clients(leader, spec, &phase, &done);
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(args.entries);
        let style = indicatif::ProgressStyle::with_template(
            "  {bar:40} {pos}/{len} entries {elapsed:>4} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar
    });

    let t0 = Instant::now();
    let mut every = tokio::time::interval(args.sample_every);
    let applied = loop {
        every.tick().await;
        let stats = leader
            .stats()
            .await
            .map_err(|e| failure(format_args!("reading the leader's stats: {e}")))?;
        let st = &stats.status;
        let applied = st.applied_index.0.saturating_sub(start_index);
        let sample = MemorySample {
            kind: "sample",
            elapsed_s: round1(t0.elapsed().as_secs_f64()),
            applied,
            rss_mib: measure::rss_mib("self").map_or(-1.0, round1),
            disk_mib: cluster
                .data_path()
                .map_or(0.0, |p| round1(measure::disk_mib(p))),
            log_entries: (st.last_log_index.0 + 1).saturating_sub(st.first_log_index.0.max(1)),
            snapshot_index: st.last_snapshot_index.0,
        };
        if let Some(path) = &args.csv {
            output::append_csv(path, SAMPLE_COLUMNS, &sample)?;
        }
        if let Some(bar) = &bar {
            bar.set_position(applied.min(args.entries));
            bar.set_message(format!(
                "rss {:.0} MiB, disk {:.0} MiB",
                sample.rss_mib, sample.disk_mib
            ));
        }
        samples.push(sample);
        if applied >= args.entries {
            break applied;
        }
        if st.state != raftkit::RaftState::Leader {
            return Err(failure("the leader lost its leadership during the run"));
        }
    };
    let seconds = t0.elapsed().as_secs_f64();
    phase.store(cluster::STOP, Ordering::Release);
    let mut errors = 0;
    for c in clients {
        errors += c
            .await
            .map_err(|e| failure(format_args!("a client task failed: {e}")))?
            .errors;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok((seconds, errors, applied))
}

/// The CSV columns of a sample.
pub const SAMPLE_COLUMNS: &[&str] = &[
    "elapsed_s",
    "applied",
    "rss_mib",
    "disk_mib",
    "log_entries",
    "snapshot_index",
];

/// The summary as a two-column table.
pub fn table(s: &MemorySummary) -> String {
    let mib = |x: f64| {
        if x < 0.0 {
            "-".to_string()
        } else {
            format!("{x:.1} MiB")
        }
    };
    let rows = [
        (
            "idle node RSS (settled / largest)",
            format!("{} / {}", mib(s.idle_rss_mib), mib(s.idle_rss_max_mib)),
        ),
        (
            "load",
            format!(
                "{} · {} nodes · {} clients · {} keys · {} B values",
                s.mode, s.nodes, s.clients, s.keys, s.value_size
            ),
        ),
        (
            "entries applied",
            format!(
                "{} in {:.1} s ({} ops/s, {} errors)",
                output::thousands(s.entries as f64),
                s.seconds,
                output::thousands(s.ops_per_sec),
                s.errors
            ),
        ),
        (
            "RSS peak, 1st half → 2nd half",
            format!(
                "{} → {}",
                mib(s.rss_first_half_max_mib),
                mib(s.rss_second_half_max_mib)
            ),
        ),
        (
            "disk peak, 1st half → 2nd half",
            format!(
                "{} → {}",
                mib(s.disk_first_half_max_mib),
                mib(s.disk_second_half_max_mib)
            ),
        ),
        (
            "longest log on the leader",
            output::thousands(s.log_entries_max as f64),
        ),
        (
            "last snapshot index",
            output::thousands(s.snapshot_index as f64),
        ),
        (
            "bounded (2nd-half peaks ≤ 1.25 × 1st)",
            s.bounded.to_string(),
        ),
    ];
    let shown = if s.samples == 0 {
        &rows[..1]
    } else {
        &rows[..]
    };
    let mut out = String::new();
    for (k, v) in shown {
        out.push_str(&format!("{k:<40} {v}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: MemoryArgs,
    }

    fn parse(args: &[&str]) -> MemoryArgs {
        Cli::try_parse_from(std::iter::once("memory").chain(args.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn bad_arguments_are_named() {
        for (flag, value) in [
            ("--keys", "0"),
            ("--clients", "0"),
            ("--nodes", "0"),
            ("--snapshot-threshold", "0"),
            ("--sample-every", "0s"),
            ("--value-size", "99999999"),
        ] {
            let e = parse(&[flag, value]).check().unwrap_err();
            assert!(e.contains(flag), "{flag} {value}: {e}");
        }
        assert!(parse(&[]).check().is_ok());
    }

    /// A short real load: 3 in-memory servers, snapshots every 500
    /// entries (checked each 100 ms tick), 60 000 entries over 50 keys: the
    /// log is compacted (it never holds half of all entries; at 100k ops/s a
    /// tick adds about 10 000) and samples are taken.
    #[test]
    fn short_load_compacts_the_log_and_samples() {
        let args = parse(&[
            "--entries",
            "60000",
            "--transport",
            "inmem",
            "--storage",
            "memory",
            "--clients",
            "8",
            "--keys",
            "50",
            "--snapshot-threshold",
            "500",
            "--trailing-logs",
            "100",
            "--snapshot-interval",
            "100ms",
            "--sample-every",
            "50ms",
            "--no-idle",
        ]);
        let mut summary = MemorySummary::default();
        let mut samples = Vec::new();
        let rt = super::super::runtime().unwrap();
        rt.block_on(load(&args, &mut summary, &mut samples))
            .unwrap();
        assert!(summary.entries >= 60_000, "{summary:?}");
        assert_eq!(summary.errors, 0, "{summary:?}");
        assert!(samples.len() >= 2, "{samples:?}");
        assert!(samples.iter().all(|s| s.rss_mib > 0.0), "{samples:?}");
        assert!(
            summary.snapshot_index > 0,
            "no snapshot was taken: {summary:?}"
        );
        assert!(
            summary.log_entries_max < summary.entries / 2,
            "the log was not compacted: {summary:?}"
        );
        assert!(
            samples.windows(2).all(|w| w[0].applied <= w[1].applied),
            "applied went backwards: {samples:?}"
        );
        let text = table(&summary);
        assert!(text.contains("inmem-memory"), "{text}");

        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("memory.svg");
        crate::bench::chart::memory(&samples, &svg).unwrap();
        let drawn = std::fs::read_to_string(&svg).unwrap();
        assert!(
            drawn.starts_with("<svg"),
            "{}",
            &drawn[..drawn.len().min(200)]
        );
        assert!(drawn.contains("entries applied"), "axis title missing");
        assert!(drawn.contains("<polyline"), "no line drawn");
    }
}
