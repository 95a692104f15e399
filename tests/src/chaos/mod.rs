//! The multi-process chaos harness: real `raftkit` processes, real sockets
//! and disks, real faults, and a linearizability check of what clients saw.
//!
//! ```text
//!  profiles ─▶ N × `raftkit run` (loopback, or one network namespace each)
//!     clients ──PUT/GET/DELETE/CAS──▶ random nodes ──▶ History (invoke/complete, ns)
//!     nemesis ──kill / kill-majority / pause / partition / clock / disk──▶ nodes
//!  heal everything ─▶ first successful write ─▶ stop clients
//!  convergence: every node at one applied index, same data (stale reads on each node)
//!  final linearizable read of every key ─▶ History
//!  lost acks: acknowledged write-once keys the final reads do not find
//!  linearizability::check(History) ─▶ Report ─▶ one JSON line
//! ```
//!
//! [`run`] does one run and returns a [`Report`]; the tests in
//! `tests/tests/chaos.rs` choose the configuration and assert on the report.
//! On failure the run directory is kept: every node's log, the profiles and
//! `history.txt` (the [`History`] text form, re-checkable with
//! [`crate::linearizability::check`]).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tokio::sync::watch;

use crate::history::{ClientId, History, Op, Outcome, Record, Returned};
use crate::linearizability;

pub mod client;
pub mod cluster;
pub mod nemesis;
pub mod net;

use client::{Recorder, Workload};
use cluster::Cluster;
use nemesis::{cut_between, Event, Fault, Shape};

/// The transport between nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `raftkit-tcp`.
    Tcp,
    /// `raftkit-quic` (`insecure_dev`: self-signed certificates).
    Quic,
}

/// The storage backend of every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// `raftkit-lmdb`.
    Lmdb,
    /// `raftkit-file`.
    File,
}

/// Planted bugs (`[debug]` knobs of the node) for showing the harness catches them.
#[derive(Clone, Debug, Default)]
pub struct Planted {
    /// `unsafe_stale_linearizable_reads`.
    pub stale_reads: bool,
    /// `unsafe_ack_before_fsync`.
    pub ack_before_fsync: Option<Duration>,
}

/// One run's configuration.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// Names the run in reports and its directory.
    pub name: String,
    /// 3 or 5 nodes (1..=9 work).
    pub nodes: usize,
    /// Transport.
    pub transport: Transport,
    /// Storage.
    pub storage: Storage,
    /// The faults the nemesis picks from (empty: none).
    pub nemeses: Vec<Fault>,
    /// How long clients run under faults (not counting start-up and checks).
    pub duration: Duration,
    /// Seeds the schedule and the clients' choices.
    pub seed: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Register keys in use at a time.
    pub keys: usize,
    /// Clients move to fresh register keys this often (bounds each key's history).
    pub key_epoch: Duration,
    /// Client-side timeout of one request.
    pub client_timeout: Duration,
    /// The nodes' heartbeat and election timeout.
    pub raft_timeout: Duration,
    /// Planted bugs.
    pub planted: Planted,
    /// Run in network namespaces even without partitions.
    pub namespaces: bool,
}

impl ChaosConfig {
    /// Defaults for a short run: 3 nodes, TCP + LMDB, kill and pause, 60 s.
    pub fn new(name: &str) -> ChaosConfig {
        ChaosConfig {
            name: name.into(),
            nodes: 3,
            transport: Transport::Tcp,
            storage: Storage::Lmdb,
            nemeses: vec![Fault::Kill, Fault::Pause],
            duration: Duration::from_secs(60),
            seed: 1,
            clients: 4,
            keys: 5,
            key_epoch: Duration::from_secs(30),
            client_timeout: Duration::from_secs(4),
            raft_timeout: Duration::from_secs(1),
            planted: Planted::default(),
            namespaces: false,
        }
    }

    /// Whether the nodes need `[debug] fault_injection`.
    pub fn fault_injection(&self) -> bool {
        self.nemeses.contains(&Fault::Clock) || self.nemeses.contains(&Fault::Disk)
    }

    /// Whether the run needs network namespaces.
    pub fn needs_namespaces(&self) -> bool {
        self.namespaces || self.nemeses.contains(&Fault::Partition)
    }

    /// The nodes' `http.request_timeout`: shorter than the client's, so a
    /// node answers 504 before the client gives up.
    pub fn node_request_timeout(&self) -> Duration {
        (self.client_timeout / 2).max(Duration::from_millis(500))
    }
}

/// Why a run did not happen.
#[derive(Debug)]
pub enum NotRun {
    /// The environment lacks what the configuration needs (the reason says what).
    Unsupported(String),
    /// Setting up failed.
    Setup(String),
}

impl std::fmt::Display for NotRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotRun::Unsupported(why) => write!(f, "cannot run here: {why}"),
            NotRun::Setup(why) => write!(f, "setting up the cluster failed: {why}"),
        }
    }
}

/// Availability while one kind of fault was in force.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Availability {
    /// Operations invoked while it was in force.
    pub ops: usize,
    /// Of those, how many succeeded.
    pub ok: usize,
    /// Faults of this kind injected.
    pub events: usize,
    /// The longest time from healing to the first successful write, ms
    /// (`None` if some heal saw no successful write before the next fault).
    pub max_heal_to_write_ms: Option<u64>,
}

/// What one run found.
#[derive(Clone, Debug)]
pub struct Report {
    /// Everything held.
    pub ok: bool,
    /// Operations recorded (final reads included).
    pub ops: usize,
    /// Operations that succeeded.
    pub ok_ops: usize,
    /// Operations whose outcome is unknown.
    pub unknown_ops: usize,
    /// Keys whose history is not linearizable.
    pub violations: usize,
    /// Keys the checker could not decide within its budget.
    pub inconclusive: usize,
    /// Acknowledged write-once PUTs that the final reads did not find.
    pub lost_acks: usize,
    /// Faults injected.
    pub nemesis_events: usize,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
    /// Per fault kind (`none` = no fault in force).
    pub availability: BTreeMap<String, Availability>,
    /// Partitions that kept a connected majority, and how many of them
    /// served at least one successful write while in force.
    pub majority_partitions: (usize, usize),
    /// From the final heal to the first successful write, ms.
    pub final_heal_to_write_ms: Option<u64>,
    /// Problems other than violations: unexpected exits, no convergence,
    /// final reads that never succeeded, nemesis errors.
    pub problems: Vec<String>,
    /// The smallest non-linearizable window, if any.
    pub violation_window: Option<String>,
    /// The run directory (kept on failure).
    pub dir: PathBuf,
    /// The history file (written on failure).
    pub history_file: Option<PathBuf>,
}

impl Report {
    /// The verdict as one JSON line.
    pub fn json_line(&self, cfg: &ChaosConfig) -> String {
        let availability: serde_json::Map<String, serde_json::Value> = self
            .availability
            .iter()
            .map(|(k, a)| {
                let fraction = if a.ops == 0 {
                    serde_json::Value::Null
                } else {
                    json!((a.ok as f64 / a.ops as f64 * 1000.0).round() / 1000.0)
                };
                (
                    k.clone(),
                    json!({"ops": a.ops, "ok": a.ok, "fraction": fraction, "events": a.events,
                           "max_heal_to_first_write_ms": a.max_heal_to_write_ms}),
                )
            })
            .collect();
        json!({
            "ok": self.ok,
            "ops": self.ops,
            "ok_ops": self.ok_ops,
            "unknown_ops": self.unknown_ops,
            "violations": self.violations,
            "lost_acks": self.lost_acks,
            "nemesis_events": self.nemesis_events,
            "seconds": (self.seconds * 10.0).round() / 10.0,
            "inconclusive": self.inconclusive,
            "availability": availability,
            "majority_partitions": self.majority_partitions.0,
            "majority_partitions_serving_writes": self.majority_partitions.1,
            "final_heal_to_first_write_ms": self.final_heal_to_write_ms,
            "problems": self.problems,
            "run": cfg.name,
            "nodes": cfg.nodes,
            "transport": format!("{:?}", cfg.transport).to_lowercase(),
            "storage": format!("{:?}", cfg.storage).to_lowercase(),
            "nemeses": cfg.nemeses.iter().map(|f| f.name()).collect::<Vec<_>>(),
            "seed": cfg.seed,
            "history": self.history_file.as_ref().map(|p| p.display().to_string()),
        })
        .to_string()
    }
}

/// Does one run. Prints progress and, last, the verdict JSON line to stdout.
pub async fn run(cfg: &ChaosConfig) -> Result<Report, NotRun> {
    if cfg.needs_namespaces() {
        if let Some(why) = net::unavailable() {
            return Err(NotRun::Unsupported(format!(
                "{} needs network namespaces: {why}",
                cfg.name
            )));
        }
    }
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!(
        "raftkit-chaos-{}-{}-{}",
        cfg.name,
        std::process::id(),
        cfg.seed
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| NotRun::Setup(format!("creating {}: {e}", dir.display())))?;
    let network = if cfg.needs_namespaces() {
        Some(net::Net::create(cfg.nodes, cfg.seed).map_err(NotRun::Setup)?)
    } else {
        None
    };
    let mut cluster = Cluster::create(cfg, &dir, network).map_err(NotRun::Setup)?;
    println!(
        "chaos {}: {} nodes, {:?} + {:?}, nemeses [{}], {:?}, seed {}, binary {}, dir {}{}",
        cfg.name,
        cfg.nodes,
        cfg.transport,
        cfg.storage,
        cfg.nemeses
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(","),
        cfg.duration,
        cfg.seed,
        cluster.binary().display(),
        dir.display(),
        if cluster.net.is_some() {
            ", network namespaces"
        } else {
            ", loopback"
        },
    );
    for i in 0..cfg.nodes {
        cluster.start(i).map_err(NotRun::Setup)?;
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4)
        .build()
        .map_err(|e| NotRun::Setup(format!("HTTP client: {e}")))?;
    wait_ready(&http, &mut cluster)
        .await
        .map_err(NotRun::Setup)?;

    let mut run = Run {
        cfg,
        cluster,
        http: http.clone(),
        rng: ChaCha8Rng::seed_from_u64(cfg.seed),
        recorder: Recorder::new(Instant::now()),
        events: Vec::new(),
        problems: Vec::new(),
        expected_exit: None,
        partitions: 0,
    };
    run.partitions = run.rng.random_range(0..4);
    let report = run.drive(dir, started).await;
    println!("{}", report.json_line(cfg));
    Ok(report)
}

async fn wait_ready(http: &reqwest::Client, cluster: &mut Cluster) -> Result<(), String> {
    let deadline = Instant::now() + cluster::READY_TIMEOUT;
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    for i in 0..cluster.nodes.len() {
        loop {
            let url = format!("{}/ready", cluster.nodes[i].base);
            let ready = match http.get(&url).timeout(Duration::from_secs(1)).send().await {
                Ok(r) => r.status().is_success(),
                Err(_) => false,
            };
            if ready {
                break;
            }
            if let Err(e) = cluster.check_alive(i) {
                return Err(format!("{e}; log:\n{}", cluster.log_tail(i, 30)));
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = (0..cluster.nodes.len())
                    .map(|j| format!("== {}\n{}", cluster.nodes[j].id, cluster.log_tail(j, 30)))
                    .collect();
                return Err(format!(
                    "{} not ready after {:?}; logs:\n{}",
                    cluster.nodes[i].id,
                    cluster::READY_TIMEOUT,
                    logs.join("\n")
                ));
            }
            poll.tick().await;
        }
    }
    Ok(())
}

/// The state of a run in progress.
struct Run<'a> {
    cfg: &'a ChaosConfig,
    cluster: Cluster,
    http: reqwest::Client,
    rng: ChaCha8Rng,
    recorder: Arc<Recorder>,
    events: Vec<Event>,
    problems: Vec<String>,
    /// A node expected to stop by itself (disk error injected).
    expected_exit: Option<usize>,
    /// Partitions injected so far (plus a seeded offset): picks the next shape.
    partitions: usize,
}

/// The harness's own client id for final reads.
const FINAL_READER: ClientId = ClientId(1_000_000);

impl Run<'_> {
    async fn drive(&mut self, dir: PathBuf, started: Instant) -> Report {
        let cfg = self.cfg;
        let (stop_tx, stop_rx) = watch::channel(false);
        let work = Arc::new(Workload {
            recorder: self.recorder.clone(),
            bases: self.cluster.nodes.iter().map(|n| n.base.clone()).collect(),
            keys: cfg.keys,
            key_epoch: cfg.key_epoch,
            timeout: cfg.client_timeout,
            http: self.http.clone(),
        });
        let mut clients = tokio::task::JoinSet::new();
        for c in 0..cfg.clients {
            let seed = cfg.seed.wrapping_mul(1000).wrapping_add(c as u64);
            clients.spawn(client::client_loop(
                c as u64,
                work.clone(),
                seed,
                stop_rx.clone(),
            ));
        }

        let end = Instant::now() + cfg.duration;
        // Leave room at the end for the last fault to heal under load.
        let last_start = end.checked_sub(Duration::from_secs(12)).unwrap_or(end);
        self.hold(Duration::from_secs(3)).await;
        // Faults (and partition shapes) take turns from a seeded starting
        // point, so even a short run covers each of them.
        let first = self.rng.random_range(0..cfg.nemeses.len().max(1));
        let mut turn = 0;
        while !cfg.nemeses.is_empty() && Instant::now() < last_start {
            let fault = cfg.nemeses[(first + turn) % cfg.nemeses.len()];
            turn += 1;
            if let Err(e) = self.inject(fault).await {
                self.problems.push(format!("nemesis {fault}: {e}"));
                self.heal_all().await;
            }
            let quiet = Duration::from_millis(self.rng.random_range(2_000..5_000));
            self.hold(quiet).await;
        }
        if Instant::now() < end {
            self.hold(end - Instant::now()).await;
        }

        // Heal everything; clients keep going until a write succeeds.
        self.heal_all().await;
        let final_heal = self.recorder.now();
        let final_heal_to_write_ms = self.first_write_after(final_heal).await;
        if final_heal_to_write_ms.is_none() {
            self.problems
                .push("no write succeeded within 30 s of the final heal".into());
        }
        let _ = stop_tx.send(true);
        while clients.join_next().await.is_some() {}
        self.check_processes();

        let history = self.recorder.snapshot();
        let all_keys = all_keys(&history);
        if let Err(e) = self.converge(&all_keys).await {
            self.problems.push(format!("convergence: {e}"));
        }
        let finals = self.final_reads(&all_keys).await;
        let history = self.recorder.snapshot();
        let lost = lost_acks(&history, &finals);
        self.finish(history, lost, final_heal_to_write_ms, dir, started)
    }

    fn finish(
        &mut self,
        history: History,
        lost: Vec<String>,
        final_heal_to_write_ms: Option<u64>,
        dir: PathBuf,
        started: Instant,
    ) -> Report {
        let verdict = linearizability::check(&history);
        let violations = if verdict.violation.is_some() {
            count_violations(&history)
        } else {
            0
        };
        let records = history.records();
        let ok_ops = records
            .iter()
            .filter(|r| matches!(r.outcome(), Outcome::Ok(_)))
            .count();
        let unknown_ops = records
            .iter()
            .filter(|r| *r.outcome() == Outcome::Unknown)
            .count();
        let mut problems = std::mem::take(&mut self.problems);
        for key in verdict.inconclusive.iter().take(5) {
            problems.push(format!(
                "key {:?}: undecided after {} steps ({} ops)",
                String::from_utf8_lossy(&key.key),
                key.steps,
                key.ops
            ));
        }
        if !lost.is_empty() {
            problems.push(format!(
                "lost acknowledged writes (first {}): {}",
                lost.len().min(5),
                lost.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
            ));
        }
        let ok = verdict.ok && lost.is_empty() && problems.is_empty();
        let violation_window = verdict.violation.as_ref().map(ToString::to_string);
        let history_file = if ok {
            None
        } else {
            let path = dir.join("history.txt");
            match std::fs::write(&path, history.to_text()) {
                Ok(()) => Some(path),
                Err(e) => {
                    problems.push(format!("writing {}: {e}", path.display()));
                    None
                }
            }
        };
        if let Some(window) = &violation_window {
            println!(
                "chaos {}: NOT LINEARIZABLE; smallest window:\n{window}",
                self.cfg.name
            );
        }
        for p in &problems {
            println!("chaos {}: problem: {p}", self.cfg.name);
        }
        let (availability, majority) = self.availability(records);
        let report = Report {
            ok,
            ops: records.len(),
            ok_ops,
            unknown_ops,
            violations,
            inconclusive: verdict.inconclusive.len(),
            lost_acks: lost.len(),
            nemesis_events: self.events.len(),
            seconds: started.elapsed().as_secs_f64(),
            availability,
            majority_partitions: majority,
            final_heal_to_write_ms,
            problems,
            violation_window,
            dir: dir.clone(),
            history_file,
        };
        let answers: Vec<String> = self
            .recorder
            .answers()
            .into_iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        println!("chaos {}: answers: {}", self.cfg.name, answers.join(", "));
        for e in &self.events {
            println!(
                "chaos {}: event {:>8.1}s..{:>6.1}s {} {}",
                self.cfg.name,
                e.start as f64 / 1e9,
                e.heal as f64 / 1e9,
                e.fault,
                e.detail
            );
        }
        if ok {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            println!(
                "chaos {}: kept {} (node logs, profiles, history.txt)",
                self.cfg.name,
                dir.display()
            );
        }
        report
    }

    /// Availability per fault kind, and (partitions with a majority side,
    /// those of them that served a write).
    fn availability(&self, records: &[Record]) -> (BTreeMap<String, Availability>, (usize, usize)) {
        let mut table: BTreeMap<String, Availability> = BTreeMap::new();
        let in_event = |t: u64| self.events.iter().find(|e| e.start <= t && t < e.heal);
        for r in records.iter().filter(|r| r.client != FINAL_READER) {
            let kind = in_event(r.invoked_at).map_or("none", |e| e.fault.name());
            let a = table.entry(kind.to_string()).or_default();
            a.ops += 1;
            if matches!(r.outcome(), Outcome::Ok(_)) {
                a.ok += 1;
            }
        }
        let is_write = |r: &Record| !matches!(r.op, Op::Get { .. });
        let ok_writes: Vec<&Record> = records
            .iter()
            .filter(|r| is_write(r) && matches!(r.outcome(), Outcome::Ok(_)))
            .collect();
        let mut majority = (0, 0);
        for (i, e) in self.events.iter().enumerate() {
            let a = table.entry(e.fault.name().to_string()).or_default();
            a.events += 1;
            let next_start = self.events.get(i + 1).map_or(u64::MAX, |n| n.start);
            let first = ok_writes
                .iter()
                .filter(|r| r.invoked_at >= e.heal && r.invoked_at < next_start)
                .filter_map(|r| r.completed_at())
                .min();
            match first {
                Some(t) => {
                    let ms = (t - e.heal) / 1_000_000;
                    if a.events == 1 || a.max_heal_to_write_ms.is_some() {
                        a.max_heal_to_write_ms = Some(a.max_heal_to_write_ms.unwrap_or(0).max(ms));
                    }
                }
                None => a.max_heal_to_write_ms = None,
            }
            if e.fault == Fault::Partition && e.majority_side {
                majority.0 += 1;
                let served = ok_writes.iter().any(|r| {
                    r.invoked_at >= e.start && r.completed_at().is_some_and(|t| t <= e.heal)
                });
                if served {
                    majority.1 += 1;
                }
            }
        }
        (table, majority)
    }

    /// Waits `d` on a 100 ms interval, watching for nodes that die on
    /// their own (restarted at once, and reported).
    async fn hold(&mut self, d: Duration) {
        let until = Instant::now() + d;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            self.check_processes();
            if Instant::now() >= until {
                return;
            }
        }
    }

    fn check_processes(&mut self) {
        for i in 0..self.cluster.nodes.len() {
            if let Err(e) = self.cluster.check_alive(i) {
                if self.expected_exit == Some(i) {
                    continue;
                }
                let tail = self.cluster.log_tail(i, 15);
                self.problems.push(format!("{e}; log tail:\n{tail}"));
                if let Err(e) = self.cluster.start(i) {
                    self.problems.push(format!("restarting: {e}"));
                }
            }
        }
    }

    fn alive(&self, i: usize) -> bool {
        let n = &self.cluster.nodes[i];
        n.child.is_some() && !n.paused
    }

    /// The leader's index, as a live node reports it.
    async fn leader(&self) -> Option<usize> {
        for (i, node) in self.cluster.nodes.iter().enumerate() {
            if !self.alive(i) {
                continue;
            }
            let url = format!("{}/cluster", node.base);
            let Ok(r) = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
            else {
                continue;
            };
            let Ok(v) = r.json::<serde_json::Value>().await else {
                continue;
            };
            if let Some(id) = v["leader"]["id"].as_str() {
                return self.cluster.nodes.iter().position(|n| n.id == id);
            }
        }
        None
    }

    /// The leader (half the time, when known) or a random node.
    async fn target(&mut self) -> usize {
        // Draw both every time, so the schedule's randomness does not depend
        // on whether a leader was known.
        let (want_leader, random) = (
            self.rng.random_bool(0.5),
            self.rng.random_range(0..self.cfg.nodes),
        );
        if want_leader {
            if let Some(l) = self.leader().await {
                return l;
            }
        }
        random
    }

    async fn fault_request(&self, i: usize, body: serde_json::Value) -> Result<(), String> {
        let url = format!("{}/debug/fault", self.cluster.nodes[i].base);
        let mut last = String::new();
        for _ in 0..3 {
            match self
                .http
                .post(&url)
                .json(&body)
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("{} answered {}", url, r.status()),
                Err(e) => last = format!("{url}: {e}"),
            }
        }
        Err(last)
    }

    async fn inject(&mut self, fault: Fault) -> Result<(), String> {
        let n = self.cfg.nodes;
        let start = self.recorder.now();
        let mut majority_side = false;
        let detail = match fault {
            Fault::Kill => {
                let t = self.target().await;
                self.cluster.kill(t);
                let down = Duration::from_millis(self.rng.random_range(2_000..5_000));
                self.hold(down).await;
                self.cluster.start(t)?;
                format!(
                    "{} down {:.1}s",
                    self.cluster.nodes[t].id,
                    down.as_secs_f64()
                )
            }
            Fault::KillMajority => {
                let leader = self.leader().await;
                let mut order: Vec<usize> = (0..n).collect();
                shuffle(&mut order, &mut self.rng);
                if let Some(l) = leader {
                    order.retain(|&x| x != l);
                    order.insert(0, l);
                }
                let (majority, minority) = order.split_at(n / 2 + 1);
                let (majority, minority) = (majority.to_vec(), minority.to_vec());
                for &m in &minority {
                    self.cluster.signal_pause(m, true)?;
                }
                let alone = Duration::from_millis(self.rng.random_range(1_500..3_000));
                self.hold(alone).await;
                for &m in &majority {
                    self.cluster.kill(m);
                }
                let down = Duration::from_millis(self.rng.random_range(500..2_000));
                self.hold(down).await;
                for &m in &majority {
                    self.cluster.start(m)?;
                }
                let rejoin = Duration::from_millis(self.rng.random_range(1_000..3_000));
                self.hold(rejoin).await;
                for &m in &minority {
                    self.cluster.signal_pause(m, false)?;
                }
                format!(
                    "paused {}, killed {} (down {:.1}s)",
                    self.ids(&minority),
                    self.ids(&majority),
                    down.as_secs_f64()
                )
            }
            Fault::Pause => {
                let t = self.target().await;
                self.cluster.signal_pause(t, true)?;
                let d = Duration::from_millis(self.rng.random_range(3_000..7_000));
                self.hold(d).await;
                self.cluster.signal_pause(t, false)?;
                format!(
                    "{} paused {:.1}s",
                    self.cluster.nodes[t].id,
                    d.as_secs_f64()
                )
            }
            Fault::Partition => {
                let leader = self.leader().await;
                let shapes = [
                    Shape::MajorityMinority,
                    Shape::IsolateLeader,
                    Shape::Bridge,
                    Shape::Asymmetric,
                ];
                let shape = shapes[self.partitions % shapes.len()];
                self.partitions += 1;
                let mut order: Vec<usize> = (0..n).collect();
                shuffle(&mut order, &mut self.rng);
                let (pairs, what) = match shape {
                    Shape::MajorityMinority => {
                        let (a, b) = order.split_at(n / 2 + 1);
                        (
                            cut_between(a, b),
                            format!("{} | {}", self.ids(a), self.ids(b)),
                        )
                    }
                    Shape::IsolateLeader => {
                        let l = leader.unwrap_or(order[0]);
                        let rest: Vec<usize> = (0..n).filter(|&x| x != l).collect();
                        (
                            cut_between(&[l], &rest),
                            format!("{} | {}", self.ids(&[l]), self.ids(&rest)),
                        )
                    }
                    Shape::Bridge => {
                        let bridge = order[0];
                        let half = (n - 1) / 2;
                        let (a, b) = order[1..].split_at(half.max(1));
                        (
                            cut_between(a, b),
                            format!(
                                "{} <- {} -> {}",
                                self.ids(a),
                                self.ids(&[bridge]),
                                self.ids(b)
                            ),
                        )
                    }
                    Shape::Asymmetric => {
                        let pick_leader = self.rng.random_bool(0.5);
                        let x = leader.filter(|_| pick_leader).unwrap_or(order[0]);
                        let rest: Vec<usize> = (0..n).filter(|&y| y != x).collect();
                        if self.rng.random_bool(0.5) {
                            (
                                rest.iter().map(|&y| (x, y)).collect(),
                                format!("{} -x-> {}", self.ids(&[x]), self.ids(&rest)),
                            )
                        } else {
                            (
                                rest.iter().map(|&y| (y, x)).collect(),
                                format!("{} -x-> {}", self.ids(&rest), self.ids(&[x])),
                            )
                        }
                    }
                };
                majority_side = shape.keeps_a_majority();
                let net = self
                    .cluster
                    .net
                    .as_ref()
                    .ok_or("partitions need network namespaces")?;
                net.cut(&pairs)?;
                let d = Duration::from_millis(self.rng.random_range(5_000..9_000));
                self.hold(d).await;
                let healed = self.cluster.net.as_ref().map(net::Net::heal);
                healed.transpose()?;
                format!("{} {what} for {:.1}s", shape.name(), d.as_secs_f64())
            }
            Fault::Clock => {
                let t = self.target().await;
                let rates = [0.25, 0.5, 2.0, 4.0];
                let rate = rates[self.rng.random_range(0..rates.len())];
                self.fault_request(t, json!({ "clock_rate": rate })).await?;
                let d = Duration::from_millis(self.rng.random_range(5_000..9_000));
                self.hold(d).await;
                self.fault_request(t, json!({ "clock_rate": 1.0 })).await?;
                format!(
                    "{} clock x{rate} for {:.1}s",
                    self.cluster.nodes[t].id,
                    d.as_secs_f64()
                )
            }
            Fault::Disk => {
                let t = self.target().await;
                let mode = if self.rng.random_bool(0.5) {
                    "stall"
                } else {
                    "error"
                };
                if mode == "error" {
                    self.expected_exit = Some(t);
                }
                self.fault_request(t, json!({ "disk": mode })).await?;
                let d = Duration::from_millis(self.rng.random_range(3_000..6_000));
                self.hold(d).await;
                let exited = match self.cluster.check_alive(t) {
                    Ok(true) => false,
                    Ok(false) | Err(_) => true,
                };
                self.expected_exit = None;
                if exited {
                    self.cluster.start(t)?;
                } else {
                    self.fault_request(t, json!({ "disk": "ok" })).await?;
                }
                format!(
                    "{} disk {mode} for {:.1}s{}",
                    self.cluster.nodes[t].id,
                    d.as_secs_f64(),
                    if exited {
                        " (node stopped; restarted)"
                    } else {
                        ""
                    }
                )
            }
        };
        let heal = self.recorder.now();
        self.events.push(Event {
            fault,
            detail,
            start,
            heal,
            majority_side,
        });
        Ok(())
    }

    fn ids(&self, nodes: &[usize]) -> String {
        let ids: Vec<&str> = nodes
            .iter()
            .map(|&i| self.cluster.nodes[i].id.as_str())
            .collect();
        ids.join(",")
    }

    /// Undoes every fault: partitions, pauses, clocks and disks; starts dead nodes.
    async fn heal_all(&mut self) {
        if let Some(net) = &self.cluster.net {
            if let Err(e) = net.heal() {
                self.problems.push(format!("healing the network: {e}"));
            }
        }
        self.expected_exit = None;
        for i in 0..self.cfg.nodes {
            if self.cluster.nodes[i].paused {
                if let Err(e) = self.cluster.signal_pause(i, false) {
                    self.problems.push(e);
                }
            }
            if !matches!(self.cluster.check_alive(i), Ok(true)) {
                if let Err(e) = self.cluster.start(i) {
                    self.problems.push(e);
                }
            } else if self.cfg.fault_injection() {
                let body = json!({ "disk": "ok", "clock_rate": 1.0 });
                if let Err(e) = self.fault_request(i, body).await {
                    self.problems
                        .push(format!("healing faults on node {}: {e}", i + 1));
                }
            }
        }
    }

    /// Polls the history until a write invoked after `t` succeeds; ms from `t`.
    async fn first_write_after(&self, t: u64) -> Option<u64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut poll = tokio::time::interval(Duration::from_millis(50));
        loop {
            poll.tick().await;
            let h = self.recorder.snapshot();
            let first = h
                .records()
                .iter()
                .filter(|r| r.invoked_at >= t && !matches!(r.op, Op::Get { .. }))
                .filter(|r| matches!(r.outcome(), Outcome::Ok(_)))
                .filter_map(|r| r.completed_at())
                .min();
            if let Some(done) = first {
                return Some((done - t) / 1_000_000);
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// Waits until every node has applied the same index, then compares
    /// every key on every node (stale reads at that index).
    async fn converge(&self, keys: &[Vec<u8>]) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut poll = tokio::time::interval(Duration::from_millis(100));
        let mut last = String::new();
        loop {
            poll.tick().await;
            if Instant::now() >= deadline {
                return Err(format!("not converged after 60 s: {last}"));
            }
            let mut indexes = Vec::new();
            for node in &self.cluster.nodes {
                let url = format!("{}/cluster", node.base);
                let v = match self
                    .http
                    .get(&url)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                {
                    Ok(r) => r.json::<serde_json::Value>().await.ok(),
                    Err(_) => None,
                };
                let Some(v) = v else { break };
                indexes.push((
                    v["applied_index"].as_u64().unwrap_or(0),
                    v["commit_index"].as_u64().unwrap_or(0),
                ));
            }
            last = format!("(applied, commit) per node: {indexes:?}");
            let Some(&(applied, _)) = indexes.first() else {
                continue;
            };
            if indexes.len() < self.cfg.nodes
                || indexes.iter().any(|&(a, c)| a != applied || c != applied)
            {
                continue;
            }
            match self.compare_data(keys, applied).await {
                Ok(()) => {
                    println!(
                        "chaos {}: converged: {} nodes at applied index {applied}, {} keys equal",
                        self.cfg.name,
                        self.cfg.nodes,
                        keys.len()
                    );
                    return Ok(());
                }
                Err(DataCheck::Moved(why)) => last = why,
                Err(DataCheck::Differs(why)) => return Err(why),
            }
        }
    }

    async fn compare_data(&self, keys: &[Vec<u8>], applied: u64) -> Result<(), DataCheck> {
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in keys.chunks(64) {
            let chunk: Vec<Vec<u8>> = chunk.to_vec();
            let bases: Vec<String> = self.cluster.nodes.iter().map(|n| n.base.clone()).collect();
            let http = self.http.clone();
            tasks.spawn(async move {
                for key in chunk {
                    let mut first: Option<(String, Option<Vec<u8>>)> = None;
                    for base in &bases {
                        let url = format!("{base}/kv/{}?consistency=stale", String::from_utf8_lossy(&key));
                        let r = http
                            .get(&url)
                            .timeout(Duration::from_secs(5))
                            .send()
                            .await
                            .map_err(|e| DataCheck::Moved(format!("{url}: {e}")))?;
                        let at = r
                            .headers()
                            .get("x-raft-applied-index")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok());
                        if at != Some(applied) {
                            return Err(DataCheck::Moved(format!(
                                "{base} moved from applied index {applied} to {at:?}"
                            )));
                        }
                        let value = match r.status().as_u16() {
                            200 => Some(r.bytes().await.map_err(|e| DataCheck::Moved(e.to_string()))?.to_vec()),
                            404 => None,
                            s => return Err(DataCheck::Moved(format!("{url} answered {s}"))),
                        };
                        match &first {
                            None => first = Some((base.clone(), value)),
                            Some((b0, v0)) if *v0 != value => {
                                return Err(DataCheck::Differs(format!(
                                    "key {:?} differs at applied index {applied}: {b0} has {:?}, {base} has {:?}",
                                    String::from_utf8_lossy(&key),
                                    v0.as_deref().map(String::from_utf8_lossy),
                                    value.as_deref().map(String::from_utf8_lossy),
                                )))
                            }
                            Some(_) => {}
                        }
                    }
                }
                Ok(())
            });
            // At most 8 chunks in flight.
            if tasks.len() >= 8 {
                if let Some(r) = tasks.join_next().await {
                    r.map_err(|e| DataCheck::Moved(e.to_string()))??;
                }
            }
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| DataCheck::Moved(e.to_string()))??;
        }
        Ok(())
    }

    /// A linearizable read of every key, recorded in the history; retried
    /// until it succeeds (30 s for all). Returns the values read.
    async fn final_reads(&mut self, keys: &[Vec<u8>]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut values = BTreeMap::new();
        let mut failed = 0usize;
        for key in keys {
            let mut retry = tokio::time::interval(Duration::from_millis(50));
            loop {
                let node = self.rng.random_range(0..self.cfg.nodes);
                let op = Op::Get { key: key.clone() };
                let id = self.recorder.invoke(FINAL_READER, op.clone());
                let outcome = client::execute(
                    &self.http,
                    &self.cluster.nodes[node].base,
                    &op,
                    self.cfg.client_timeout,
                )
                .await;
                self.recorder.complete(id, outcome.clone());
                if let Outcome::Ok(Returned::Value(v)) = outcome {
                    values.insert(key.clone(), v);
                    break;
                }
                if Instant::now() >= deadline {
                    failed += 1;
                    break;
                }
                retry.tick().await;
            }
        }
        if failed > 0 {
            self.problems.push(format!(
                "{failed} of {} final reads never succeeded",
                keys.len()
            ));
        }
        values
    }
}

enum DataCheck {
    /// Something changed under the comparison (or a node did not answer): retry.
    Moved(String),
    /// Two nodes hold different values at the same applied index.
    Differs(String),
}

fn shuffle(v: &mut [usize], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}

/// Every key a client touched (whatever the outcome).
fn all_keys(history: &History) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = history
        .records()
        .iter()
        .map(|r| r.op.key().to_vec())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    keys.sort();
    keys
}

/// Acknowledged write-once PUTs whose key the final read found without their value.
fn lost_acks(history: &History, finals: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> Vec<String> {
    let mut lost = Vec::new();
    for r in history.records() {
        let Op::Put { key, value } = &r.op else {
            continue;
        };
        if !key.starts_with(b"w-") || !matches!(r.outcome(), Outcome::Ok(_)) {
            continue;
        }
        match finals.get(key) {
            Some(Some(v)) if v == value => {}
            // No final read: already reported as a problem.
            None => {}
            Some(found) => {
                let mut s = String::new();
                let _ = write!(
                    s,
                    "op {} put {:?} acknowledged at {:.3}s, final read found {:?}",
                    r.id,
                    String::from_utf8_lossy(key),
                    r.completed_at().unwrap_or(0) as f64 / 1e9,
                    found.as_deref().map(String::from_utf8_lossy)
                );
                lost.push(s);
            }
        }
    }
    lost
}

/// How many keys are not linearizable (the checker reports only the first).
fn count_violations(history: &History) -> usize {
    let mut by_key: BTreeMap<Vec<u8>, History> = BTreeMap::new();
    for r in history.records() {
        let h = by_key.entry(r.op.key().to_vec()).or_default();
        let id = h.invoke(r.client, r.op.clone(), r.invoked_at);
        if let Some(c) = &r.completion {
            let _ = h.complete(id, c.outcome.clone(), c.completed_at);
        }
    }
    by_key
        .values()
        .filter(|h| linearizability::check(h).violation.is_some())
        .count()
}
