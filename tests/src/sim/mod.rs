//! Deterministic simulation of whole raftkit clusters.
//!
//! Several [`raftkit::Core`]s run in one thread against a simulated network
//! and simulated disks, in virtual time. One seed decides everything: message
//! loss, delay, duplication and reordering, partitions (symmetric,
//! asymmetric, bridges), crashes that lose every write not yet reported
//! durable, membership changes, leadership transfers, clock skew, and the
//! clients' operations. After every step the safety invariants in
//! [`invariants`] are checked; at the end the clients' history is checked for
//! linearizability.
//!
//! ```text
//!  event queue (time, seq) ──▶ Tick / Deliver / IoDone / Client / Nemesis
//!        ▲                              │
//!        └── net_send, io, timers ◀── drive(node): while has_ready { ready(); perform }
//! ```

mod figure8;
mod invariants;
mod kv;
mod options;

use std::collections::{BTreeMap, VecDeque};

use raftkit::core::{ReadId, RestoredState};
use raftkit::message::InstallSnapshotRequest;
use raftkit::{
    ConfChange, Config, Configuration, Core, Entry, EntryPayload, HardState, LogIndex, Message,
    MessageBody, NodeId, RaftState, Ready, Server, ServerAddress, SnapshotId, SnapshotMeta, Term,
    ValidConfig,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::history::{ClientId, History, Op, OpId, Outcome, Returned};
use invariants::{Ledger, Marks, NodeView};
use kv::{payload_digest, Command, Kv};

pub use invariants::Violation;
pub use options::SimOptions;

/// The result of one run.
#[derive(Debug)]
pub struct SimReport {
    /// The run's seed.
    pub seed: u64,
    /// Client operations invoked.
    pub ops: usize,
    /// Of which succeeded.
    pub ok_ops: usize,
    /// Faults injected: nemesis actions plus lost and duplicated messages.
    pub faults: usize,
    /// Broken invariants (empty on success).
    pub violations: Vec<Violation>,
    /// The trace (the tail of it unless the full trace was asked for).
    pub trace: Vec<String>,
    /// The client history, as text.
    pub history: String,
    /// The highest index committed.
    pub commit_index: LogIndex,
    /// Keys the linearizability check could not decide within its budget.
    pub inconclusive_keys: usize,
}

/// Runs the simulation named by `opts`. With `full_trace`, the trace keeps
/// every line (messages included); otherwise only its tail.
pub fn run(opts: &SimOptions, full_trace: bool) -> SimReport {
    let mut sim = Sim::new(opts.clone(), full_trace);
    sim.run();
    sim.report()
}

const TICK_US: u64 = 10_000;
const CLIENT_TIMEOUT_US: u64 = 2_000_000;
const SETTLE_US: u64 = 6_000_000;
const TRACE_TAIL: usize = 400;

#[derive(Debug)]
enum Ev {
    Tick(usize),
    Deliver(Message),
    DeliverSnapshot {
        to: usize,
        from: usize,
        term: Term,
        meta: SnapshotMeta,
        data: Kv,
    },
    SnapshotFailed {
        leader: usize,
        incarnation: u64,
        to: NodeId,
    },
    IoDone {
        node: usize,
        incarnation: u64,
        jobs: usize,
    },
    Client(usize),
    ClientTimeout {
        client: usize,
        op: OpId,
    },
    Nemesis,
    Heal,
    Restart(usize),
    /// Crash server `.0` if it is still in incarnation `.1`.
    CrashIf(usize, u64),
    /// The commit timer of server `node` fired (the driver's
    /// `commit_timeout`): it announces its commit index.
    AnnounceCommit {
        node: usize,
        incarnation: u64,
    },
    /// The next step of a Figure-8 walk.
    Figure8Step,
    /// Give up a Figure-8 walk that stalled.
    Figure8Abandon,
}

#[derive(Debug, Default)]
struct Disk {
    hard: HardState,
    log: BTreeMap<LogIndex, Entry>,
    snapshots: Vec<(SnapshotMeta, Kv)>,
}

impl Disk {
    fn keep_snapshot(&mut self, meta: SnapshotMeta, data: Kv) {
        self.snapshots.push((meta, data));
        self.snapshots.sort_by_key(|(m, _)| m.index);
        if self.snapshots.len() > 2 {
            self.snapshots.remove(0);
        }
    }
}

#[derive(Debug)]
struct IoJob {
    hard: Option<HardState>,
    install: Option<SnapshotMeta>,
    truncate_from: Option<LogIndex>,
    entries: Vec<Entry>,
    ack: Option<(LogIndex, Term)>,
    after: Vec<Message>,
}

#[derive(Debug)]
struct Node {
    id: NodeId,
    addr: ServerAddress,
    core: Option<Core>,
    incarnation: u64,
    disk: Disk,
    io: VecDeque<IoJob>,
    kv: Kv,
    applied: LogIndex,
    proposals: BTreeMap<LogIndex, (OpId, Term, usize)>,
    reads: BTreeMap<ReadId, (OpId, usize, Vec<u8>)>,
    ready_reads: Vec<(LogIndex, ReadId)>,
    tick_us: u64,
    /// The commit index last seen on this server while it led.
    seen_commit: LogIndex,
    /// Whether an `AnnounceCommit` for this incarnation is scheduled.
    commit_timer: bool,
}

#[derive(Debug, Default)]
struct Client {
    pending: Option<OpId>,
    seq: u64,
}

struct Sim {
    opts: SimOptions,
    cfg: ValidConfig,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    nodes: Vec<Node>,
    index_of: BTreeMap<NodeId, usize>,
    /// `cut[a][b]`: messages from a to b are lost.
    cut: Vec<Vec<bool>>,
    clients: Vec<Client>,
    history: History,
    acked: Vec<(u64, LogIndex, Term)>,
    next_read: ReadId,
    ledger: Ledger,
    violations: Vec<Violation>,
    faults: usize,
    steps: u64,
    faults_active: bool,
    /// A Figure-8 walk under way.
    figure8: Option<figure8::Figure8>,
    /// Keys whose linearizability search ran out of budget.
    inconclusive_keys: usize,
    full_trace: bool,
    trace: VecDeque<String>,
    snapshot_nonce: u64,
}

impl Sim {
    fn new(opts: SimOptions, full_trace: bool) -> Sim {
        let cfg = Config {
            local_id: NodeId::new("sim"),
            heartbeat_timeout: std::time::Duration::from_millis(100),
            election_timeout: std::time::Duration::from_millis(100),
            leader_lease_timeout: std::time::Duration::from_millis(50),
            // Under the 10 ms tick, so that commit indexes also travel alone.
            commit_timeout: std::time::Duration::from_millis(3),
            snapshot_threshold: opts.snapshot_threshold,
            trailing_logs: opts.trailing_logs,
            snapshot_interval: std::time::Duration::from_millis(10),
            max_append_entries: opts.max_append_entries,
            max_inflight: opts.max_inflight,
            ..Config::default()
        }
        .validate()
        .expect("simulation config is valid");
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let nodes: Vec<Node> = (0..opts.nodes)
            .map(|i| {
                let skew = rng.random_range(0..=2 * opts.clock_skew_permille);
                Node {
                    id: NodeId::new(format!("n{}", i + 1)),
                    addr: ServerAddress::new(format!("sim:{}", i + 1)),
                    core: None,
                    incarnation: 0,
                    disk: Disk::default(),
                    io: VecDeque::new(),
                    kv: Kv::default(),
                    applied: LogIndex::ZERO,
                    proposals: BTreeMap::new(),
                    reads: BTreeMap::new(),
                    ready_reads: Vec::new(),
                    tick_us: TICK_US * (1000 - opts.clock_skew_permille + skew) / 1000,
                    seen_commit: LogIndex::ZERO,
                    commit_timer: false,
                }
            })
            .collect();
        let index_of = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i))
            .collect();
        let n = opts.nodes;
        Sim {
            cfg,
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            index_of,
            cut: vec![vec![false; n]; n],
            clients: (0..opts.clients).map(|_| Client::default()).collect(),
            history: History::new(),
            acked: Vec::new(),
            next_read: 1,
            ledger: Ledger {
                marks: vec![Marks::default(); n],
                ..Ledger::default()
            },
            violations: Vec::new(),
            faults: 0,
            steps: 0,
            faults_active: true,
            full_trace,
            trace: VecDeque::new(),
            snapshot_nonce: 0,
            figure8: None,
            inconclusive_keys: 0,
            nodes,
            opts,
        }
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        let line = format!("{:>10}us {}", self.now, line());
        self.trace.push_back(line);
        if !self.full_trace && self.trace.len() > TRACE_TAIL {
            self.trace.pop_front();
        }
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn run(&mut self) {
        let servers: Vec<Server> = self
            .nodes
            .iter()
            .map(|n| Server::voter(n.id.clone(), n.addr.clone()))
            .collect();
        for i in 0..self.nodes.len() {
            self.start_node(i);
        }
        if let Some(core) = self.nodes[0].core.as_mut() {
            core.bootstrap(Configuration::new(servers))
                .expect("bootstrap of an empty server");
        }
        self.drive(0);
        for c in 0..self.clients.len() {
            let at = self.rng.random_range(0..50_000);
            self.schedule(at, Ev::Client(c));
        }
        let first = self.rand_between(self.opts.nemesis_every_us);
        self.schedule(first, Ev::Nemesis);
        let end_faults = self.opts.duration_us;
        while let Some(((at, _), ev)) = self.queue.pop_first() {
            if at >= end_faults && self.faults_active {
                self.end_faults();
            }
            if at >= end_faults + SETTLE_US {
                self.queue.insert((at, 0), ev);
                self.final_phase();
                return;
            }
            self.now = at;
            self.step(ev);
            if !self.violations.is_empty() {
                return;
            }
        }
    }

    fn step(&mut self, ev: Ev) {
        self.steps += 1;
        match ev {
            Ev::Tick(i) => {
                if let Some(core) = self.nodes[i].core.as_mut() {
                    core.tick();
                    self.drive(i);
                    let at = self.now + self.nodes[i].tick_us;
                    self.schedule(at, Ev::Tick(i));
                }
            }
            Ev::AnnounceCommit { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation {
                    self.nodes[node].commit_timer = false;
                    if let Some(core) = self.nodes[node].core.as_mut() {
                        core.announce_commit();
                        self.drive(node);
                    }
                }
            }
            Ev::Deliver(m) => self.deliver(m),
            Ev::DeliverSnapshot {
                to,
                from,
                term,
                meta,
                data,
            } => self.deliver_snapshot(to, from, term, meta, data),
            Ev::SnapshotFailed {
                leader,
                incarnation,
                to,
            } => {
                if self.nodes[leader].incarnation == incarnation {
                    if let Some(core) = self.nodes[leader].core.as_mut() {
                        core.on_snapshot_send_failed(&to);
                        self.drive(leader);
                    }
                }
            }
            Ev::IoDone {
                node,
                incarnation,
                jobs,
            } => self.io_done(node, incarnation, jobs),
            Ev::Client(c) => self.client_op(c),
            Ev::ClientTimeout { client, op } => {
                if self.clients[client].pending == Some(op) {
                    let outcome = match self.history.get(op).map(|r| &r.op) {
                        Some(Op::Get { .. }) => Outcome::Fail,
                        _ => Outcome::Unknown,
                    };
                    self.complete(client, op, outcome);
                }
            }
            Ev::Nemesis => self.nemesis(),
            Ev::Heal => self.heal(),
            Ev::Restart(i) => self.start_node(i),
            Ev::Figure8Step => self.figure8_step(),
            Ev::Figure8Abandon => self.figure8_abandon(),
            Ev::CrashIf(i, incarnation) => {
                if self.nodes[i].incarnation == incarnation && self.nodes[i].core.is_some() {
                    self.crash(i);
                    let at = self.now + self.rng.random_range(10_000..300_000);
                    self.schedule(at, Ev::Restart(i));
                }
            }
        }
        let full = self.steps.is_multiple_of(64);
        self.check(full);
    }

    fn check(&mut self, full: bool) {
        let views: Vec<NodeView<'_>> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(idx, n)| NodeView {
                idx,
                incarnation: n.incarnation,
                core: n.core.as_ref(),
            })
            .collect();
        invariants::check_all(&views, &mut self.ledger, full, &mut self.violations);
    }

    // ---- servers ----

    fn start_node(&mut self, i: usize) {
        if self.nodes[i].core.is_some() {
            return;
        }
        let node = &mut self.nodes[i];
        let snapshot = node.disk.snapshots.last().cloned();
        let restored = RestoredState {
            hard_state: node.disk.hard.clone(),
            snapshot: snapshot.as_ref().map(|(m, _)| m.clone()),
            entries: node.disk.log.values().cloned().collect(),
        };
        node.kv = snapshot
            .as_ref()
            .map(|(_, d)| d.clone())
            .unwrap_or_default();
        node.applied = snapshot.as_ref().map_or(LogIndex::ZERO, |(m, _)| m.index);
        node.incarnation += 1;
        node.commit_timer = false;
        let seed = self.opts.seed ^ ((i as u64) << 32) ^ node.incarnation;
        match Core::new(
            self.cfg.clone(),
            node.id.clone(),
            node.addr.clone(),
            restored,
            seed,
        ) {
            Ok(core) => node.core = Some(core),
            Err(e) => {
                let detail = format!("{} cannot restart: {e}", node.id);
                self.violations.push(Violation {
                    invariant: "restart",
                    detail,
                });
                return;
            }
        }
        let id = self.nodes[i].id.clone();
        self.log(|| format!("{id} starts (incarnation {})", i));
        let at = self.now + self.nodes[i].tick_us;
        self.schedule(at, Ev::Tick(i));
        self.drive(i);
    }

    fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if node.core.take().is_none() {
            return;
        }
        // Writes not yet reported durable are lost.
        let lost = node.io.len();
        node.io.clear();
        node.incarnation += 1;
        node.commit_timer = false;
        node.ready_reads.clear();
        // Half the time the machine dies with its messages still on it: what
        // it sent and was not yet delivered is lost too (a crash between
        // deciding and sending).
        if self.rng.random_bool(0.5) {
            let id = self.nodes[i].id.clone();
            self.queue
                .retain(|_, ev| !matches!(ev, Ev::Deliver(m) if m.from == id));
        }
        let node = &mut self.nodes[i];
        let proposals: Vec<(OpId, usize)> = std::mem::take(&mut node.proposals)
            .into_values()
            .map(|(op, _, c)| (op, c))
            .collect();
        let reads: Vec<(OpId, usize)> = std::mem::take(&mut node.reads)
            .into_values()
            .map(|(op, c, _)| (op, c))
            .collect();
        let id = node.id.clone();
        self.log(|| format!("{id} CRASHES, losing {lost} unsynced writes"));
        for (op, c) in proposals {
            self.complete(c, op, Outcome::Unknown);
        }
        for (op, c) in reads {
            self.complete(c, op, Outcome::Fail);
        }
    }

    /// Performs everything the core of server `i` has ready.
    fn drive(&mut self, i: usize) {
        let mut rounds = 0;
        loop {
            let Some(core) = self.nodes[i].core.as_mut() else {
                return;
            };
            if !core.has_ready() || !self.violations.is_empty() {
                break;
            }
            rounds += 1;
            if rounds > 10_000 {
                let detail = format!(
                    "{} still has work after 10000 Readys in one step",
                    core.id()
                );
                self.violations.push(Violation {
                    invariant: "livelock",
                    detail,
                });
                return;
            }
            let ready = core.ready();
            self.perform(i, ready);
        }
        // The driver arms its commit timer when the leader holds a commit
        // index no follower was sent.
        let node = &mut self.nodes[i];
        if !node.commit_timer && node.core.as_ref().is_some_and(|c| c.commit_unannounced()) {
            node.commit_timer = true;
            let incarnation = node.incarnation;
            let at = self.now + self.cfg.commit_timeout.as_micros() as u64;
            self.schedule(
                at,
                Ev::AnnounceCommit {
                    node: i,
                    incarnation,
                },
            );
        }
        // Storm seeds: a leader sometimes dies the moment it commits, with
        // what it has just sent (the next entries, the new commit index).
        let commit = self.nodes[i]
            .core
            .as_ref()
            .filter(|c| c.state() == RaftState::Leader)
            .map(|c| c.status().commit_index);
        let committed = commit.is_some_and(|c| c > self.nodes[i].seen_commit);
        if let Some(c) = commit {
            self.nodes[i].seen_commit = c;
        }
        if committed && self.figure8.is_some() && self.figure8_on_commit(i) {
            return;
        }
        if committed
            && self.faults_active
            && self.opts.crash_on_commit > 0.0
            && self.rng.random_bool(self.opts.crash_on_commit)
        {
            self.log(|| "leader crashes as it commits".to_string());
            let id = self.nodes[i].id.clone();
            self.queue
                .retain(|_, ev| !matches!(ev, Ev::Deliver(m) if m.from == id));
            self.crash(i);
            let at = self.now + self.rng.random_range(10_000..300_000);
            self.schedule(at, Ev::Restart(i));
            return;
        }
        if self.nodes[i]
            .core
            .as_ref()
            .is_some_and(|c| c.state() == RaftState::Shutdown)
        {
            self.crash(i);
            let at = self.now + 100_000;
            self.schedule(at, Ev::Restart(i));
        }
    }

    fn perform(&mut self, i: usize, r: Ready) {
        // A committed entry is never removed (Log Matching + Leader Completeness).
        if let Some(from) = r.truncate_from {
            // Entries a snapshot covers may go; the others must stay.
            let disk = &self.nodes[i].disk.log;
            let covered = self.nodes[i]
                .disk
                .snapshots
                .last()
                .map_or(LogIndex::ZERO, |(m, _)| m.index);
            let removed = self
                .ledger
                .committed
                .range(from.max(covered.next())..)
                .find(|(index, (term, digest))| {
                    disk.get(index)
                        .is_some_and(|e| e.term == *term && payload_digest(e) == *digest)
                });
            if let Some((c, _)) = removed {
                let id = self.nodes[i].id.clone();
                let detail =
                    format!("{id} truncates its log from {from}, removing committed entry {c}");
                self.violations.push(Violation {
                    invariant: "committed entry removed",
                    detail,
                });
            }
        }
        for m in r.messages {
            self.net_send(m);
        }
        for e in &r.events {
            let id = self.nodes[i].id.clone();
            self.log(|| format!("{id} {e:?}"));
            // Leader churn: new leaders often die young, before their own
            // entries reach a majority (the states of the paper's Figure 8).
            if *e == raftkit::Event::StateChanged(RaftState::Leader) {
                // Commit moves are counted from here on.
                let commit = self.nodes[i].core.as_ref().map(|c| c.status().commit_index);
                self.nodes[i].seen_commit = commit.unwrap_or_default();
            }
            if *e == raftkit::Event::StateChanged(RaftState::Leader) && self.figure8.is_some() {
                self.figure8_on_leader(i);
                continue;
            }
            let churn = self.faults_active
                && self.opts.leader_churn > 0.0
                && *e == raftkit::Event::StateChanged(RaftState::Leader)
                && self.rng.random_bool(self.opts.leader_churn);
            if churn {
                let at = self.now + self.rng.random_range(0..20_000);
                let incarnation = self.nodes[i].incarnation;
                self.schedule(at, Ev::CrashIf(i, incarnation));
            }
        }
        let job = IoJob {
            hard: r.hard_state,
            install: r.install_snapshot.clone(),
            truncate_from: r.truncate_from,
            ack: r.entries.last().map(|e| (e.index, e.term)),
            entries: r.entries,
            after: r.messages_after_persist,
        };
        let empty = job.hard.is_none()
            && job.install.is_none()
            && job.truncate_from.is_none()
            && job.entries.is_empty()
            && job.after.is_empty();
        if !empty {
            self.nodes[i].io.push_back(job);
            if self.nodes[i].io.len() == 1 {
                self.schedule_io(i);
            }
        }
        if let Some(meta) = r.install_snapshot {
            self.restore_snapshot(i, &meta);
        }
        self.apply(i, r.committed);
        self.nodes[i]
            .ready_reads
            .extend(r.reads.iter().map(|rs| (rs.index, rs.id)));
        for id in r.aborted_reads {
            if let Some((op, c, _)) = self.nodes[i].reads.remove(&id) {
                self.complete(c, op, Outcome::Fail);
            }
        }
        self.serve_reads(i);
        for s in r.send_snapshots {
            self.send_snapshot(i, s.to, s.term, s.meta);
        }
        if r.create_snapshot {
            self.create_snapshot(i);
        }
        if let Some(upto) = r.purge_upto {
            self.nodes[i].disk.log.retain(|k, _| *k > upto);
        }
    }

    /// Starts one disk write covering every job queued now (group commit,
    /// as the driver's I/O thread does).
    fn schedule_io(&mut self, i: usize) {
        let at = self.now + self.rng.random_range(0..=self.opts.persist_us);
        let incarnation = self.nodes[i].incarnation;
        let jobs = self.nodes[i].io.len();
        self.schedule(
            at,
            Ev::IoDone {
                node: i,
                incarnation,
                jobs,
            },
        );
    }

    fn io_done(&mut self, i: usize, incarnation: u64, jobs: usize) {
        if self.nodes[i].incarnation != incarnation {
            return;
        }
        for _ in 0..jobs {
            if !self.complete_job(i) {
                return;
            }
        }
        if !self.nodes[i].io.is_empty() {
            self.schedule_io(i);
        }
        self.drive(i);
    }

    /// Makes the oldest queued job durable and acknowledges it.
    fn complete_job(&mut self, i: usize) -> bool {
        let Some(job) = self.nodes[i].io.pop_front() else {
            return false;
        };
        let node = &mut self.nodes[i];
        if let Some(h) = job.hard {
            node.disk.hard = h;
        }
        if job.install.is_some() {
            node.disk.log.clear();
        }
        if let Some(from) = job.truncate_from {
            node.disk.log.split_off(&from);
        }
        for e in job.entries {
            let contiguous = node
                .disk
                .log
                .keys()
                .next_back()
                .is_none_or(|last| last.next() == e.index);
            if !contiguous {
                let detail = format!(
                    "{} asked to append {} after {:?}",
                    node.id,
                    e.index,
                    node.disk.log.keys().next_back()
                );
                self.violations.push(Violation {
                    invariant: "storage contract",
                    detail,
                });
                return false;
            }
            node.disk.log.insert(e.index, e);
        }
        if let (Some((index, term)), Some(core)) = (job.ack, node.core.as_mut()) {
            core.on_persisted(index, term);
        }
        for m in job.after {
            self.net_send(m);
        }
        true
    }

    fn apply(&mut self, i: usize, entries: Vec<Entry>) {
        let Some(last) = entries.last().map(|e| e.index) else {
            return;
        };
        for e in entries {
            let node = &mut self.nodes[i];
            let previous = node.applied;
            let who = node.id.to_string();
            invariants::state_machine_safety::record_apply(
                &mut self.ledger,
                &who,
                previous,
                e.index,
                e.term,
                payload_digest(&e),
                &mut self.violations,
            );
            let node = &mut self.nodes[i];
            node.applied = e.index;
            let returned = match &e.payload {
                EntryPayload::Command(data) => Some(node.kv.apply(data)),
                _ => None,
            };
            if let Some((op, term, client)) = node.proposals.remove(&e.index) {
                match returned {
                    Some(ret) if term == e.term => {
                        self.acked.push((op.0, e.index, e.term));
                        self.complete(client, op, Outcome::Ok(ret));
                    }
                    _ => self.complete(client, op, Outcome::Fail),
                }
            }
        }
        if let Some(core) = self.nodes[i].core.as_mut() {
            core.on_applied(last);
        }
    }

    fn serve_reads(&mut self, i: usize) {
        let applied = self.nodes[i].applied;
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.nodes[i].ready_reads)
            .into_iter()
            .partition(|(idx, _)| *idx <= applied);
        self.nodes[i].ready_reads = later;
        for (_, id) in now {
            if let Some((op, c, key)) = self.nodes[i].reads.remove(&id) {
                let value = self.nodes[i].kv.get(&key);
                self.complete(c, op, Outcome::Ok(Returned::Value(value)));
            }
        }
    }

    fn restore_snapshot(&mut self, i: usize, meta: &SnapshotMeta) {
        let node = &mut self.nodes[i];
        match node.disk.snapshots.iter().find(|(m, _)| m.id == meta.id) {
            Some((m, data)) => {
                node.kv = data.clone();
                node.applied = m.index;
                if let Some(core) = node.core.as_mut() {
                    core.on_applied(m.index);
                }
            }
            None => {
                let detail = format!(
                    "{} asked to install snapshot {} it does not hold",
                    node.id, meta.id
                );
                self.violations.push(Violation {
                    invariant: "snapshot contract",
                    detail,
                });
            }
        }
    }

    fn create_snapshot(&mut self, i: usize) {
        self.snapshot_nonce += 1;
        let nonce = self.snapshot_nonce;
        let node = &mut self.nodes[i];
        let Some(core) = node.core.as_mut() else {
            return;
        };
        let index = node.applied;
        let Some(term) = core.log_term(index) else {
            core.on_snapshot_failed();
            return;
        };
        let (configuration_index, configuration) = core.configuration_at(index);
        let meta = SnapshotMeta {
            id: SnapshotId::for_point(term, index, nonce),
            index,
            term,
            configuration,
            configuration_index,
            size: 0,
            checksum: node.kv.digest() as u32,
        };
        node.disk.keep_snapshot(meta.clone(), node.kv.clone());
        core.on_snapshot_created(meta);
        let id = node.id.clone();
        self.log(|| format!("{id} snapshot at {index}"));
    }

    fn send_snapshot(&mut self, from: usize, to: NodeId, term: Term, meta: SnapshotMeta) {
        let incarnation = self.nodes[from].incarnation;
        let data = self.nodes[from]
            .disk
            .snapshots
            .iter()
            .find(|(m, _)| m.id == meta.id)
            .map(|(_, d)| d.clone());
        let Some(&to_idx) = self.index_of.get(&to) else {
            return;
        };
        let delay = self.rng.random_range(1_000..20_000);
        let lost = self.cut[from][to_idx] || self.rng.random_bool(self.opts.drop);
        match data {
            Some(data) if !lost => self.schedule(
                self.now + delay,
                Ev::DeliverSnapshot {
                    to: to_idx,
                    from,
                    term,
                    meta,
                    data,
                },
            ),
            _ => self.schedule(
                self.now + delay,
                Ev::SnapshotFailed {
                    leader: from,
                    incarnation,
                    to,
                },
            ),
        }
    }

    fn deliver_snapshot(
        &mut self,
        to: usize,
        from: usize,
        term: Term,
        meta: SnapshotMeta,
        data: Kv,
    ) {
        if self.nodes[to].core.is_none() || self.cut[from][to] {
            let incarnation = self.nodes[from].incarnation;
            let to_id = self.nodes[to].id.clone();
            self.schedule(
                self.now + 1_000,
                Ev::SnapshotFailed {
                    leader: from,
                    incarnation,
                    to: to_id,
                },
            );
            return;
        }
        self.nodes[to].disk.keep_snapshot(meta.clone(), data);
        let msg = Message {
            from: self.nodes[from].id.clone(),
            from_addr: self.nodes[from].addr.clone(),
            to: self.nodes[to].id.clone(),
            term,
            body: MessageBody::InstallSnapshotRequest(InstallSnapshotRequest { meta }),
        };
        self.deliver(msg);
    }

    // ---- network ----

    fn net_send(&mut self, m: Message) {
        let (Some(&from), Some(&to)) = (self.index_of.get(&m.from), self.index_of.get(&m.to))
        else {
            return;
        };
        if self.cut[from][to] {
            return;
        }
        if self.opts.drop > 0.0 && self.rng.random_bool(self.opts.drop) {
            self.faults += 1;
            return;
        }
        let copies = if self.opts.duplicate > 0.0 && self.rng.random_bool(self.opts.duplicate) {
            self.faults += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.opts.long_delay > 0.0 && self.rng.random_bool(self.opts.long_delay)
            {
                self.rng
                    .random_range(self.opts.delay_us.1..=self.opts.long_delay_us)
            } else {
                self.rand_between(self.opts.delay_us)
            };
            if self.full_trace {
                let line = format!(
                    "{} -> {} {} term {} {:?}",
                    m.from,
                    m.to,
                    m.body.kind(),
                    m.term,
                    m.body
                );
                self.log(|| line);
            }
            self.schedule(self.now + delay, Ev::Deliver(m.clone()));
        }
    }

    fn deliver(&mut self, m: Message) {
        let (Some(&from), Some(&to)) = (self.index_of.get(&m.from), self.index_of.get(&m.to))
        else {
            return;
        };
        if self.cut[from][to] {
            return;
        }
        let Some(core) = self.nodes[to].core.as_mut() else {
            return;
        };
        if let Err(e) = core.step(m) {
            let detail = format!("step refused: {e}");
            self.violations.push(Violation {
                invariant: "simulation",
                detail,
            });
        }
        self.drive(to);
    }

    // ---- clients ----

    fn client_op(&mut self, c: usize) {
        if !self.faults_active || self.clients[c].pending.is_some() {
            return;
        }
        self.clients[c].seq += 1;
        let key = format!("k{}", self.rng.random_range(0..self.opts.keys)).into_bytes();
        let value = format!("c{c}-{}", self.clients[c].seq).into_bytes();
        let op = match self.rng.random_range(0..100) {
            0..40 => Op::Put { key, value },
            40..50 => Op::Delete { key },
            50..65 => {
                let expected = if self.rng.random_bool(0.3) {
                    None
                } else {
                    Some(
                        format!(
                            "c{}-{}",
                            self.rng.random_range(0..self.opts.clients),
                            self.rng.random_range(0..=self.clients[c].seq)
                        )
                        .into_bytes(),
                    )
                };
                let new = if self.rng.random_bool(0.1) {
                    None
                } else {
                    Some(value)
                };
                Op::Cas { key, expected, new }
            }
            _ => Op::Get { key },
        };
        let lease = self.rng.random_bool(0.3);
        self.invoke(c, op, lease);
    }

    fn invoke(&mut self, c: usize, op: Op, lease: bool) {
        let id = self
            .history
            .invoke(ClientId(c as u64), op.clone(), self.now);
        self.clients[c].pending = Some(id);
        self.schedule(
            self.now + CLIENT_TIMEOUT_US,
            Ev::ClientTimeout { client: c, op: id },
        );
        let Some(i) = self.pick_node() else {
            self.complete(c, id, Outcome::Fail);
            return;
        };
        let read_id = self.next_read;
        let Some(core) = self.nodes[i].core.as_mut() else {
            return;
        };
        let result = match (&op, Command::for_op(&op)) {
            (Op::Get { key }, _) => {
                let r = if lease {
                    core.lease_read(read_id)
                } else {
                    core.read_index(read_id)
                };
                r.map(|()| {
                    self.next_read += 1;
                    self.nodes[i].reads.insert(read_id, (id, c, key.clone()));
                })
            }
            (_, Some(cmd)) => {
                let term = core.term();
                core.propose(cmd.encode()).map(|index| {
                    self.nodes[i].proposals.insert(index, (id, term, c));
                })
            }
            (_, None) => unreachable!("every non-read op has a command"),
        };
        let who = self.nodes[i].id.clone();
        self.log(|| format!("client {c} op {} {op:?} at {who}: {result:?}", id.0));
        match result {
            Ok(()) => self.drive(i),
            Err(_) => self.complete(c, id, Outcome::Fail),
        }
    }

    /// A live server, usually one that believes it leads.
    fn pick_node(&mut self) -> Option<usize> {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].core.is_some())
            .collect();
        let leaders: Vec<usize> = live
            .iter()
            .copied()
            .filter(|i| {
                self.nodes[*i]
                    .core
                    .as_ref()
                    .is_some_and(|c| c.state() == RaftState::Leader)
            })
            .collect();
        let pool = if !leaders.is_empty() && self.rng.random_bool(0.9) {
            leaders
        } else {
            live
        };
        if pool.is_empty() {
            return None;
        }
        Some(pool[self.rng.random_range(0..pool.len())])
    }

    fn complete(&mut self, c: usize, op: OpId, outcome: Outcome) {
        if self.clients[c].pending != Some(op) {
            return;
        }
        let ok = matches!(outcome, Outcome::Ok(_));
        let line = format!("client {c} op {} -> {outcome:?}", op.0);
        self.log(|| line);
        if let Err(e) = self.history.complete(op, outcome, self.now) {
            self.violations.push(Violation {
                invariant: "simulation",
                detail: format!("history: {e}"),
            });
        }
        self.clients[c].pending = None;
        let think = if ok {
            self.rand_between(self.opts.think_us)
        } else {
            self.rng.random_range(1_000..20_000)
        };
        self.schedule(self.now + think, Ev::Client(c));
    }

    // ---- nemesis ----

    fn nemesis(&mut self) {
        if !self.faults_active {
            return;
        }
        let next = self.now + self.rand_between(self.opts.nemesis_every_us);
        self.schedule(next, Ev::Nemesis);
        if self.figure8.is_some() {
            return;
        }
        let mut actions = Vec::new();
        if self.opts.figure8 {
            actions.extend([5, 5]);
        }
        if self.opts.crashes {
            actions.extend([0, 0, 4]);
        }
        if self.opts.partitions {
            actions.push(1);
        }
        if self.opts.membership_changes {
            actions.push(2);
        }
        if self.opts.transfers {
            actions.push(3);
        }
        if actions.is_empty() {
            return;
        }
        self.faults += 1;
        match actions[self.rng.random_range(0..actions.len())] {
            0 => self.nemesis_crash(),
            1 => self.nemesis_partition(),
            2 => self.nemesis_membership(),
            3 => self.nemesis_transfer(),
            4 => self.nemesis_power_loss(),
            _ => self.nemesis_figure8(),
        }
    }

    fn leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|i| {
                self.nodes[*i]
                    .core
                    .as_ref()
                    .is_some_and(|c| c.state() == RaftState::Leader)
            })
            .max_by_key(|i| self.nodes[*i].core.as_ref().map(|c| c.term()))
    }

    fn nemesis_crash(&mut self) {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].core.is_some())
            .collect();
        let target = match self.leader() {
            Some(l) if self.rng.random_bool(0.5) => l,
            _ if !live.is_empty() => live[self.rng.random_range(0..live.len())],
            _ => return,
        };
        self.crash(target);
        let at = self.now + self.rng.random_range(10_000..1_000_000);
        self.schedule(at, Ev::Restart(target));
    }

    /// Every server loses power at once: only what each reported durable
    /// survives, and every acknowledged write must still be there.
    fn nemesis_power_loss(&mut self) {
        self.log(|| "POWER LOSS: every server crashes".to_string());
        for i in 0..self.nodes.len() {
            if self.nodes[i].core.is_some() {
                self.crash(i);
                let at = self.now + self.rng.random_range(10_000..300_000);
                self.schedule(at, Ev::Restart(i));
            }
        }
    }

    fn nemesis_partition(&mut self) {
        self.heal();
        let n = self.nodes.len();
        let kind = self.rng.random_range(0..5);
        let mut side: Vec<bool> = (0..n).map(|_| self.rng.random_bool(0.5)).collect();
        let desc = match kind {
            0 => {
                let x = self.leader().unwrap_or(0);
                side = (0..n).map(|i| i == x).collect();
                format!("isolate leader n{}", x + 1)
            }
            1 => {
                let x = self.rng.random_range(0..n);
                side = (0..n).map(|i| i == x).collect();
                format!("isolate n{}", x + 1)
            }
            2 => "random split".to_string(),
            3 => {
                let a = self.rng.random_range(0..n);
                let b = (a + 1 + self.rng.random_range(0..n - 1)) % n;
                self.cut[a][b] = true;
                let desc = format!("one-way cut n{} -> n{}", a + 1, b + 1);
                self.log(|| desc);
                self.schedule_heal();
                return;
            }
            _ => "bridge".to_string(),
        };
        let bridge = (kind == 4).then(|| self.rng.random_range(0..n));
        for a in 0..n {
            for b in 0..n {
                let crosses = side[a] != side[b];
                let bridged = bridge.is_some_and(|x| a == x || b == x);
                self.cut[a][b] = crosses && !bridged;
            }
        }
        let sides = format!("{side:?} bridge {bridge:?}");
        self.log(|| format!("partition: {desc} {sides}"));
        self.schedule_heal();
    }

    fn schedule_heal(&mut self) {
        let at = self.now + self.rng.random_range(50_000..1_500_000);
        self.schedule(at, Ev::Heal);
    }

    fn heal(&mut self) {
        for row in &mut self.cut {
            row.fill(false);
        }
        self.log(|| "heal".to_string());
    }

    fn nemesis_membership(&mut self) {
        let Some(l) = self.leader() else { return };
        let Some(core) = self.nodes[l].core.as_ref() else {
            return;
        };
        let config = core.configuration().clone();
        let leader_id = core.id().clone();
        let voters: Vec<NodeId> = config.voters().cloned().collect();
        let nonvoters: Vec<NodeId> = config
            .servers
            .iter()
            .filter(|s| !config.is_voter(&s.id))
            .map(|s| s.id.clone())
            .collect();
        let absent: Vec<usize> = (0..self.nodes.len())
            .filter(|i| config.server(&self.nodes[*i].id).is_none())
            .collect();
        let others: Vec<NodeId> = voters
            .iter()
            .filter(|v| **v != leader_id)
            .cloned()
            .collect();
        let change = match self.rng.random_range(0..4) {
            0 if !nonvoters.is_empty() => {
                let id = nonvoters[self.rng.random_range(0..nonvoters.len())].clone();
                let address = config
                    .server(&id)
                    .map(|s| s.address.clone())
                    .unwrap_or_else(|| ServerAddress::new("?"));
                ConfChange::AddVoter { id, address }
            }
            1 if !absent.is_empty() => {
                let i = absent[self.rng.random_range(0..absent.len())];
                ConfChange::AddNonvoter {
                    id: self.nodes[i].id.clone(),
                    address: self.nodes[i].addr.clone(),
                }
            }
            2 if voters.len() > 2 && !others.is_empty() => ConfChange::DemoteVoter {
                id: others[self.rng.random_range(0..others.len())].clone(),
            },
            3 if voters.len() > 2 => {
                // Sometimes the leader removes itself.
                let pool: Vec<NodeId> = if self.rng.random_bool(0.2) {
                    voters.clone()
                } else {
                    others.clone()
                };
                if pool.is_empty() {
                    return;
                }
                ConfChange::RemoveServer {
                    id: pool[self.rng.random_range(0..pool.len())].clone(),
                }
            }
            _ => return,
        };
        let Some(core) = self.nodes[l].core.as_mut() else {
            return;
        };
        let result = core.propose_conf_change(change.clone(), LogIndex::ZERO);
        self.log(|| format!("membership {change:?} at n{}: {result:?}", l + 1));
        self.drive(l);
    }

    fn nemesis_transfer(&mut self) {
        let Some(l) = self.leader() else { return };
        let Some(core) = self.nodes[l].core.as_mut() else {
            return;
        };
        let result = core.transfer_leadership(None);
        self.log(|| format!("leadership transfer from n{}: {result:?}", l + 1));
        self.drive(l);
    }

    // ---- the end ----

    fn end_faults(&mut self) {
        self.faults_active = false;
        self.opts.drop = 0.0;
        self.opts.duplicate = 0.0;
        self.opts.long_delay = 0.0;
        self.heal();
        for i in 0..self.nodes.len() {
            if self.nodes[i].core.is_none() {
                let at = self.now + 1;
                self.schedule(at, Ev::Restart(i));
            }
        }
        self.log(|| "faults end; settling".to_string());
    }

    /// After settling: every member has applied the same log and holds the
    /// same data; a final linearizable read of every key; then the history
    /// check.
    fn final_phase(&mut self) {
        let Some(l) = self.leader() else {
            self.violations.push(Violation {
                invariant: "liveness",
                detail: "no leader after the faults ended and the cluster settled".into(),
            });
            return;
        };
        // Final reads of every key through the leader.
        let keys: Vec<Vec<u8>> = (0..self.opts.keys)
            .map(|k| format!("k{k}").into_bytes())
            .collect();
        for key in keys {
            let c = 0;
            if self.clients.is_empty() {
                break;
            }
            if self.clients[c].pending.is_some() {
                continue;
            }
            self.faults_active = true;
            self.invoke(c, Op::Get { key }, false);
            self.faults_active = false;
            let deadline = self.now + CLIENT_TIMEOUT_US;
            while self.clients[c].pending.is_some() {
                let Some(((at, _), ev)) = self.queue.pop_first() else {
                    break;
                };
                if at > deadline {
                    break;
                }
                self.now = at;
                self.step(ev);
            }
        }
        let leader_commit = self.nodes[l]
            .core
            .as_ref()
            .map_or(LogIndex::ZERO, |c| c.status().commit_index);
        let config = self.nodes[l]
            .core
            .as_ref()
            .map(|c| c.configuration().clone())
            .unwrap_or_default();
        let leader_digest = self.nodes[l].kv.digest();
        let leader_applied = self.nodes[l].applied;
        let leader_status = self.nodes[l].core.as_ref().map(|c| c.status());
        let Some(leader_status) = leader_status else {
            return;
        };
        for n in &self.nodes {
            if config.server(&n.id).is_none() {
                continue;
            }
            if n.applied < leader_applied.min(leader_commit) {
                self.violations.push(Violation {
                    invariant: "convergence",
                    detail: format!(
                        "{} applied {} < leader's {} after settling; the leader's view of it: {:?}",
                        n.id,
                        n.applied,
                        leader_applied,
                        leader_status.peers.iter().find(|p| p.id == n.id)
                    ),
                });
            } else if n.applied == leader_applied && n.kv.digest() != leader_digest {
                self.violations.push(Violation {
                    invariant: "state machine safety",
                    detail: format!(
                        "{} has different data than the leader at index {}",
                        n.id, n.applied
                    ),
                });
            }
        }
        self.check(true);
        invariants::acked_writes::check(&self.acked, &self.ledger, &mut self.violations);
        // Histories with many unknown outcomes on one key can exhaust the
        // search; those keys are reported, not passed as linearizable.
        let options = crate::linearizability::CheckOptions {
            step_budget_per_key: 200_000_000,
        };
        let verdict = crate::linearizability::check_with(&self.history, &options);
        if let Some(v) = &verdict.violation {
            self.violations.push(Violation {
                invariant: "linearizability",
                detail: v.to_string(),
            });
        }
        self.inconclusive_keys = verdict.inconclusive.len();
    }

    fn report(self) -> SimReport {
        let ok_ops = self
            .history
            .records()
            .iter()
            .filter(|r| matches!(r.outcome(), Outcome::Ok(_)))
            .count();
        SimReport {
            seed: self.opts.seed,
            ops: self.history.len(),
            ok_ops,
            faults: self.faults,
            violations: self.violations,
            trace: self.trace.into(),
            history: self.history.to_text(),
            commit_index: self
                .ledger
                .committed
                .keys()
                .next_back()
                .copied()
                .unwrap_or_default(),
            inconclusive_keys: self.inconclusive_keys,
        }
    }

    fn rng_range(&mut self, lo: u64, hi: u64) -> u64 {
        self.rng.random_range(lo..hi)
    }

    fn rand_between(&mut self, (lo, hi): (u64, u64)) -> u64 {
        if hi <= lo {
            return lo;
        }
        self.rng.random_range(lo..=hi)
    }
}
