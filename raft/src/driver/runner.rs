//! The driver task: owns the core, feeds it inputs, carries out its Readys.
//! It takes no protocol decisions of its own.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::config::ValidConfig;
use crate::core::{ConfChange, Core, Event, ProposeError, RaftState, ReadId, Ready, RestoredState};
use crate::fsm::Fsm;
use crate::message::{InstallSnapshotRequest, Message, MessageBody};
use crate::storage::{
    LogStore, SnapshotMeta, SnapshotPoint, SnapshotStore, StableStore, StorageError,
};
use crate::transport::{Inbound, IncomingSnapshot, SnapshotOffer, Transport};
use crate::types::{Configuration, Entry, LogIndex, NodeId, ServerAddress, Term};

use super::alarm::Alarm;
use super::append_timer::AppendTimer;
use super::apply::{Applier, ApplyMsg, ApplyWorker, Responder, ToFsm};
use super::io::{send_grouped, AddressBook, IoBatch, IoThread, Writer};
use super::{Api, Observed, RaftError, Stats};

/// What the driver's helpers report back.
pub(crate) enum Internal {
    Persisted(Vec<(LogIndex, Term)>),
    StorageFailed(Arc<StorageError>),
    Applied(LogIndex),
    FsmFailed(String),
    SnapshotCreated(Result<SnapshotMeta, String>),
    SnapshotReceived {
        offer: SnapshotOffer,
        meta: SnapshotMeta,
    },
    SnapshotSendFailed(NodeId),
}

type Reply<T> = oneshot::Sender<Result<T, RaftError>>;

#[allow(clippy::too_many_arguments)]
pub(crate) async fn start<F: Fsm>(
    cfg: ValidConfig,
    mut fsm: F,
    log: Arc<dyn LogStore>,
    stable: Arc<dyn StableStore>,
    snaps: Arc<dyn SnapshotStore>,
    transport: Arc<dyn Transport>,
    api: mpsc::Receiver<Api<F::Response>>,
    events: broadcast::Sender<Event>,
    observed: watch::Sender<Observed>,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, RaftError> {
    let (l, st, sn) = (log.clone(), stable.clone(), snaps.clone());
    let (restored, fsm) =
        tokio::task::spawn_blocking(move || load(&*l, &*st, &*sn, &mut fsm).map(|r| (r, fsm)))
            .await
            .map_err(|e| RaftError::Restore(format!("loading task failed: {e}")))??;
    let id = cfg.local_id.clone();
    let address = transport.local_addr();
    let seed = seed_for(&id);
    let applied = restored
        .snapshot
        .as_ref()
        .map_or((LogIndex::ZERO, Term::ZERO), |s| (s.index, s.term));
    let configuration = restored
        .snapshot
        .as_ref()
        .map_or((LogIndex::ZERO, Configuration::default()), |s| {
            (s.configuration_index, s.configuration.clone())
        });
    let core = Core::new(cfg.clone(), id.clone(), address, restored, seed)
        .map_err(|e| RaftError::Restore(e.to_string()))?;
    let inbound = transport.take_inbound().ok_or_else(|| {
        RaftError::Restore("the transport's inbound stream was already taken".into())
    })?;
    let book = Arc::new(AddressBook::default());
    for s in &core.configuration().servers {
        book.learn(&s.id, &s.address);
    }
    let (internal_tx, internal_rx) = mpsc::unbounded_channel();
    let (io_tx, io_rx) = std::sync::mpsc::channel();
    let writer = Writer {
        log,
        stable,
        transport: transport.clone(),
        book: book.clone(),
    };
    // In-memory stores are written inline; durable ones on the I/O thread.
    let (inline_writer, io_thread) = if writer.in_memory() {
        drop(io_rx);
        (Some(writer), None)
    } else {
        let io = IoThread {
            writer,
            done: internal_tx.clone(),
        };
        let rt = tokio::runtime::Handle::current();
        let thread = std::thread::Builder::new()
            .name(format!("raft-io-{id}"))
            .spawn(move || io.run(io_rx, rt))
            .map_err(|e| RaftError::Restore(format!("starting the I/O thread: {e}")))?;
        (None, Some(thread))
    };
    let applier = Applier {
        fsm,
        snapshots: snaps.clone(),
        done: internal_tx.clone(),
        applied,
        configuration,
        max_batch: cfg.max_apply_batch,
    };
    let (apply_worker, to_fsm) =
        ApplyWorker::start(applier, cfg.fsm_on_runtime, format!("raft-fsm-{id}"))
            .map_err(|e| RaftError::Restore(format!("starting the FSM thread: {e}")))?;
    let runner = Runner {
        core,
        cfg,
        id,
        transport,
        snaps,
        book,
        io_tx: Some(io_tx),
        inline_writer,
        to_fsm: Some(to_fsm),
        internal_tx,
        events,
        observed,
        pending: BTreeMap::new(),
        reads: HashMap::new(),
        next_read: 1,
        waiting_reads: Vec::new(),
        applied: applied.0,
        snapshot_waiters: Vec::new(),
        transfer_waiters: Vec::new(),
        queued_changes: VecDeque::new(),
        tasks: JoinSet::new(),
        failed: None,
        clock_rate: None,
        append_timer: AppendTimer::default(),
        held: Vec::new(),
        held_deadline: None,
    };
    Ok(tokio::spawn(runner.run(
        api,
        inbound,
        internal_rx,
        stop,
        io_thread,
        apply_worker,
    )))
}

/// Loads term, vote, the newest snapshot and the log; restores the FSM.
fn load<F: Fsm>(
    log: &dyn LogStore,
    stable: &dyn StableStore,
    snaps: &dyn SnapshotStore,
    fsm: &mut F,
) -> Result<RestoredState, RaftError> {
    let hard_state = stable.load_hard_state()?;
    let snapshot = snaps.list()?.into_iter().next();
    if let Some(meta) = &snapshot {
        let (_, mut reader) = snaps.open(&meta.id)?;
        fsm.restore(&mut reader)
            .map_err(|e| RaftError::Fsm(format!("restoring snapshot {}: {e}", meta.id)))?;
    }
    let (first, last) = (log.first_index()?, log.last_index()?);
    let entries = if last >= first && last > LogIndex::ZERO {
        log.get(first, last.next())?
    } else {
        Vec::new()
    };
    Ok(RestoredState {
        hard_state,
        snapshot,
        entries,
    })
}

/// Election jitter only needs to differ between servers and runs.
fn seed_for(id: &NodeId) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    id.as_str()
        .bytes()
        .fold(nanos, |h, b| h.rotate_left(5) ^ u64::from(b))
}

struct Runner<R> {
    core: Core,
    cfg: ValidConfig,
    id: NodeId,
    transport: Arc<dyn Transport>,
    snaps: Arc<dyn SnapshotStore>,
    book: Arc<AddressBook>,
    io_tx: Option<std::sync::mpsc::Sender<IoBatch>>,
    /// Set for in-memory stores: writes happen on this task.
    inline_writer: Option<Writer>,
    to_fsm: Option<ToFsm<R>>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    events: broadcast::Sender<Event>,
    observed: watch::Sender<Observed>,
    /// Proposals waiting to be applied: index → (term, who waits, when).
    pending: BTreeMap<LogIndex, (Term, Responder<R>, Instant)>,
    reads: HashMap<ReadId, (bool, Reply<LogIndex>)>,
    next_read: ReadId,
    /// Confirmed reads waiting for the FSM to reach their index.
    waiting_reads: Vec<(LogIndex, Reply<LogIndex>)>,
    applied: LogIndex,
    snapshot_waiters: Vec<Reply<SnapshotMeta>>,
    transfer_waiters: Vec<(NodeId, Reply<NodeId>)>,
    /// Membership changes waiting for the one before them to commit, oldest
    /// first (HashiCorp's leader takes a change only once the latest
    /// configuration is committed; the caller's timeout bounds the wait).
    queued_changes: VecDeque<(ConfChange, LogIndex, Reply<LogIndex>)>,
    tasks: JoinSet<()>,
    failed: Option<RaftError>,
    /// A tick-rate change asked for by fault injection, not yet applied.
    clock_rate: Option<f64>,
    /// AppendEntries round trips per peer (leader only).
    append_timer: AppendTimer,
    /// Committed entries a follower holds back from its FSM, to hand them
    /// over in fewer, larger batches (see `FOLLOWER_APPLY_DELAY`).
    held: Vec<Entry>,
    /// When the oldest held entry must go to the FSM.
    held_deadline: Option<tokio::time::Instant>,
}

/// Most inputs taken from one source before the core is asked for a Ready:
/// large enough to batch, small enough to keep ticks and acks flowing.
const DRAIN: usize = 4096;

/// How long a follower may hold committed entries back from its FSM. Only
/// the leader's callers wait on an FSM; a follower that hands over every
/// commit round wakes its FSM worker (a thread: a futex wake-up) once per
/// round, which cost more than the applying: in `raftkit bench cluster`
/// (3 in-memory servers) those wake-ups were 11% of the CPU at 16 clients,
/// and holding back made one client 16% faster with the FSM on a thread
/// and 16 clients 9% faster with it on the runtime (medians of 5 and 3
/// alternating runs). A follower's FSM (what a stale read sees) lags by at
/// most this much more.
const FOLLOWER_APPLY_DELAY: Duration = Duration::from_millis(1);

/// Held entries that make a follower hand them over at once. Larger batches
/// (4096 was tried) made the followers' bursts of applying raise the
/// leader's p99 by a quarter at 16 to 256 clients.
const FOLLOWER_APPLY_BATCH: usize = 256;

/// Membership changes that may wait for their turn at once; more are refused
/// with `ConfigChangeInProgress`.
const MAX_QUEUED_CHANGES: usize = 64;

impl<R: Send + 'static> Runner<R> {
    async fn run(
        mut self,
        mut api: mpsc::Receiver<Api<R>>,
        mut inbound: crate::transport::InboundStream,
        mut internal: mpsc::UnboundedReceiver<Internal>,
        mut stop: watch::Receiver<bool>,
        io_thread: Option<std::thread::JoinHandle<()>>,
        apply_worker: ApplyWorker,
    ) {
        let mut ticker = tokio::time::interval(self.cfg.tick_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When the entries a follower holds back must go to its FSM.
        let mut flush = Alarm::new();
        // `commit_timeout` after a commit index no follower was sent.
        let mut announce = Alarm::new();
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                Some(ev) = internal.recv() => {
                    self.handle_internal(ev);
                    for _ in 0..DRAIN {
                        match internal.try_recv() { Ok(ev) => self.handle_internal(ev), Err(_) => break }
                    }
                }
                Some(inb) = inbound.recv() => {
                    self.handle_inbound(inb);
                    for _ in 0..DRAIN {
                        match inbound.try_recv() { Ok(inb) => self.handle_inbound(inb), Err(_) => break }
                    }
                }
                req = api.recv() => match req {
                    Some(req) => {
                        self.handle_api(req);
                        for _ in 0..DRAIN {
                            match api.try_recv() { Ok(req) => self.handle_api(req), Err(_) => break }
                        }
                    }
                    None => break,
                },
                _ = flush.ring(), if flush.is_set() => self.flush_held(),
                _ = announce.ring(), if announce.is_set() => self.core.announce_commit(),
                _ = ticker.tick() => {
                    self.core.tick();
                    self.publish_metrics();
                }
            }
            if self.failed.is_some() {
                break;
            }
            if let Some(rate) = self.clock_rate.take() {
                tracing::warn!(rate, "fault injection: timers now run at {rate}x real time");
                ticker = tokio::time::interval(self.cfg.tick_interval().div_f64(rate));
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            self.process_ready();
            if !self.queued_changes.is_empty() {
                self.propose_queued_changes();
                self.process_ready();
            }
            if !announce.is_set() && self.core.commit_unannounced() {
                announce.set(Some(tokio::time::Instant::now() + self.cfg.commit_timeout));
            }
            flush.set(self.held_deadline);
        }
        self.flush_held();
        self.stop(io_thread, apply_worker).await;
    }

    async fn stop(
        mut self,
        io_thread: Option<std::thread::JoinHandle<()>>,
        apply_worker: ApplyWorker,
    ) {
        let reason = self.failed.clone().unwrap_or(RaftError::Shutdown);
        self.fail_pending(reason.clone());
        for (_, reply) in self.reads.drain() {
            let _ = reply.1.send(Err(reason.clone()));
        }
        for (_, reply) in self.waiting_reads.drain(..) {
            let _ = reply.send(Err(reason.clone()));
        }
        for reply in self.snapshot_waiters.drain(..) {
            let _ = reply.send(Err(reason.clone()));
        }
        for (_, reply) in self.transfer_waiters.drain(..) {
            let _ = reply.send(Err(reason.clone()));
        }
        for (_, _, reply) in self.queued_changes.drain(..) {
            let _ = reply.send(Err(reason.clone()));
        }
        // Closing the channels lets the threads finish what is queued: every
        // write handed to the I/O thread becomes durable before it exits.
        self.io_tx = None;
        self.to_fsm = None;
        self.tasks.abort_all();
        self.transport.shutdown().await;
        if let Some(t) = io_thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        apply_worker.join().await;
        self.observed.send_modify(|o| {
            o.state = RaftState::Shutdown;
            o.leader = None;
        });
        let _ = self.events.send(Event::StateChanged(RaftState::Shutdown));
    }

    fn leader_with_address(&self) -> Option<(NodeId, ServerAddress)> {
        let id = self.core.leader()?.clone();
        let address = self.book.get(&id).unwrap_or_else(|| ServerAddress::new(""));
        Some((id, address))
    }

    fn not_leader(&self) -> RaftError {
        RaftError::NotLeader {
            leader: self.leader_with_address(),
        }
    }

    fn handle_api(&mut self, req: Api<R>) {
        match req {
            Api::ClockRate { rate } => self.clock_rate = Some(rate),
            Api::Apply { data, reply } => match self.core.propose(data) {
                Ok(index) => {
                    self.pending.insert(
                        index,
                        (self.core.term(), Responder::Apply(reply), Instant::now()),
                    );
                }
                Err(e) => {
                    let _ = reply.send(Err(RaftError::from_propose(e, self.leader_with_address())));
                }
            },
            Api::Barrier { reply } => match self.core.propose_barrier() {
                Ok(index) => {
                    self.pending.insert(
                        index,
                        (self.core.term(), Responder::Index(reply), Instant::now()),
                    );
                }
                Err(e) => {
                    let _ = reply.send(Err(RaftError::from_propose(e, self.leader_with_address())));
                }
            },
            Api::ChangeConfig {
                change,
                prev_index,
                reply,
            } => {
                if self.queued_changes.len() >= MAX_QUEUED_CHANGES {
                    let _ = reply.send(Err(RaftError::ConfigChangeInProgress));
                } else {
                    self.queued_changes.push_back((change, prev_index, reply));
                    self.propose_queued_changes();
                }
            }
            Api::Bootstrap {
                configuration,
                reply,
            } => {
                for s in &configuration.servers {
                    self.book.learn(&s.id, &s.address);
                }
                let result = self
                    .core
                    .bootstrap(configuration)
                    .map_err(|e| RaftError::from_propose(e, None));
                let _ = reply.send(result);
            }
            Api::ReadIndex {
                lease,
                wait_applied,
                reply,
            } => {
                let id = self.next_read;
                self.next_read += 1;
                let result = if lease {
                    self.core.lease_read(id)
                } else {
                    self.core.read_index(id)
                };
                match result {
                    Ok(()) => {
                        self.reads.insert(id, (wait_applied, reply));
                    }
                    Err(e) => {
                        let _ =
                            reply.send(Err(RaftError::from_propose(e, self.leader_with_address())));
                    }
                }
            }
            Api::Snapshot { reply } => {
                if self.core.request_snapshot() {
                    self.snapshot_waiters.push(reply);
                } else {
                    let _ = reply.send(Err(RaftError::NothingNewToSnapshot));
                }
            }
            Api::Transfer { target, reply } => match self.core.transfer_leadership(target) {
                Ok(target) => self.transfer_waiters.push((target, reply)),
                Err(e) => {
                    let _ = reply.send(Err(RaftError::from_propose(e, self.leader_with_address())));
                }
            },
            Api::Configuration { reply } => {
                let s = self.core.status();
                let _ = reply.send(Ok((s.configuration_index, s.configuration)));
            }
            Api::Stats { reply } => {
                let status = self.core.status();
                let last_contact =
                    self.cfg.tick_interval() * status.ticks_since_leader_contact as u32;
                let _ = reply.send(Ok(Stats {
                    status,
                    last_contact,
                    pending_proposals: self.pending.len(),
                }));
            }
        }
    }

    fn handle_inbound(&mut self, inbound: Inbound) {
        match inbound {
            Inbound::Message(m) => {
                self.book.learn(&m.from, &m.from_addr);
                self.append_timer.received(&m);
                if let Err(e) = self.core.step(m) {
                    tracing::warn!(error = %e, "dropping misaddressed message");
                }
            }
            Inbound::Snapshot(incoming) => self.receive_snapshot(incoming),
        }
    }

    fn handle_internal(&mut self, ev: Internal) {
        match ev {
            Internal::Persisted(acks) => {
                for (index, term) in acks {
                    self.core.on_persisted(index, term);
                }
            }
            Internal::StorageFailed(e) => self.failed = Some(RaftError::Storage(e)),
            Internal::FsmFailed(e) => self.failed = Some(RaftError::Fsm(e)),
            Internal::Applied(index) => {
                self.applied = index;
                self.core.on_applied(index);
                let applied = self.applied;
                let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting_reads)
                    .into_iter()
                    .partition(|(i, _)| *i <= applied);
                self.waiting_reads = waiting;
                for (i, reply) in ready {
                    let _ = reply.send(Ok(i));
                }
            }
            Internal::SnapshotCreated(result) => match result {
                Ok(meta) => {
                    tracing::info!(index = %meta.index, id = %meta.id, "snapshot created");
                    self.core.on_snapshot_created(meta.clone());
                    for reply in self.snapshot_waiters.drain(..) {
                        let _ = reply.send(Ok(meta.clone()));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "snapshot failed");
                    self.core.on_snapshot_failed();
                    for reply in self.snapshot_waiters.drain(..) {
                        let _ = reply.send(Err(RaftError::Fsm(e.clone())));
                    }
                }
            },
            Internal::SnapshotReceived { offer, meta } => {
                let msg = Message {
                    from_addr: self
                        .book
                        .get(&offer.from)
                        .unwrap_or_else(|| ServerAddress::new("")),
                    from: offer.from,
                    to: self.id.clone(),
                    term: offer.term,
                    body: MessageBody::InstallSnapshotRequest(InstallSnapshotRequest { meta }),
                };
                if let Err(e) = self.core.step(msg) {
                    tracing::warn!(error = %e, "dropping misaddressed snapshot");
                }
            }
            Internal::SnapshotSendFailed(peer) => self.core.on_snapshot_send_failed(&peer),
        }
    }

    fn process_ready(&mut self) {
        let mut changed = false;
        while self.core.has_ready() {
            let ready = self.core.ready();
            changed |= !ready.events.is_empty();
            self.perform(ready);
        }
        if changed {
            self.publish_observed();
        }
    }

    fn perform(&mut self, r: Ready) {
        // 1. The leader's appends go out now, in parallel with its own write.
        if !r.messages.is_empty() {
            self.append_timer.sending(&r.messages);
            for peer in send_grouped(&*self.transport, &self.book, r.messages) {
                self.core.report_unreachable(&peer);
                let _ = self.events.send(Event::HeartbeatFailed(peer));
            }
        }
        // Callers of entries this Ready commits get their answer from the
        // apply step, even when the same Ready steps down (a leader that
        // commits its own removal steps down at once): take them before the
        // events fail whatever is still pending.
        let responders = self.committed_responders(&r.committed);
        for e in r.events {
            self.on_event(e);
        }
        // 2. Writes, then the messages that promise them, on the I/O thread.
        let batch = IoBatch {
            hard_state: r.hard_state,
            reset_log: r.install_snapshot.is_some(),
            truncate_from: r.truncate_from,
            ack: r.entries.last().map(|e| (e.index, e.term)),
            entries: r.entries,
            purge_upto: r.purge_upto,
            after: r.messages_after_persist,
        };
        if !batch.is_empty() {
            if let Some(writer) = &self.inline_writer {
                match writer.write_and_send(&mut [batch]) {
                    Ok(acks) => {
                        for (index, term) in acks {
                            self.core.on_persisted(index, term);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "storage failed; the node stops");
                        self.failed = Some(RaftError::Storage(Arc::new(e)));
                    }
                }
            } else if let Some(tx) = &self.io_tx {
                if tx.send(batch).is_err() {
                    self.failed = Some(RaftError::Shutdown);
                }
            }
        }
        // 3. Apply.
        if let Some(meta) = r.install_snapshot {
            self.send_to_fsm(ApplyMsg::Restore(meta));
        }
        if !r.committed.is_empty() {
            if responders.is_empty() && self.core.state() == RaftState::Follower {
                if self.held.is_empty() {
                    self.held_deadline = Some(tokio::time::Instant::now() + FOLLOWER_APPLY_DELAY);
                }
                self.held.extend(r.committed);
                if self.held.len() >= FOLLOWER_APPLY_BATCH {
                    self.flush_held();
                }
            } else {
                self.send_to_fsm(ApplyMsg::Entries {
                    entries: r.committed,
                    responders,
                });
            }
        }
        // 4. Reads.
        for rs in r.reads {
            if let Some((wait_applied, reply)) = self.reads.remove(&rs.id) {
                if !wait_applied || rs.index <= self.applied {
                    let _ = reply.send(Ok(rs.index));
                } else {
                    self.waiting_reads.push((rs.index, reply));
                }
            }
        }
        for id in r.aborted_reads {
            if let Some((_, reply)) = self.reads.remove(&id) {
                let _ = reply.send(Err(self.not_leader()));
            }
        }
        // 5. Snapshots.
        for s in r.send_snapshots {
            self.send_snapshot(s.to, s.term, s.meta);
        }
        if r.create_snapshot {
            self.send_to_fsm(ApplyMsg::Snapshot);
        }
    }

    /// Takes the callers waiting on `committed` entries out of `pending`;
    /// one whose entry was replaced by another term's learns it was lost.
    fn committed_responders(&mut self, committed: &[Entry]) -> Vec<(LogIndex, Responder<R>)> {
        let mut responders = Vec::new();
        for e in committed {
            if let Some((term, responder, started)) = self.pending.remove(&e.index) {
                if term == e.term {
                    metrics::histogram!("raft_commit_duration_seconds")
                        .record(started.elapsed().as_secs_f64());
                    responders.push((e.index, responder));
                } else {
                    responder.fail(RaftError::LeadershipLost);
                }
            }
        }
        responders
    }

    /// Hands the entries a follower held back to the FSM.
    fn flush_held(&mut self) {
        self.held_deadline = None;
        if !self.held.is_empty() {
            let entries = std::mem::take(&mut self.held);
            self.send_to_fsm(ApplyMsg::Entries {
                entries,
                responders: Vec::new(),
            });
        }
    }

    /// Hands `msg` to the FSM (its thread, or in place), after any entries
    /// held back.
    fn send_to_fsm(&mut self, msg: ApplyMsg<R>) {
        if !self.held.is_empty() {
            self.flush_held();
        }
        let thread_gone = match &mut self.to_fsm {
            Some(ToFsm::Thread(tx)) => tx.send(msg).is_err(),
            Some(ToFsm::Inline(applier)) => {
                let done = applier.handle(msg);
                self.handle_internal(done);
                false
            }
            None => false,
        };
        if thread_gone {
            self.failed = Some(RaftError::Shutdown);
        }
    }

    fn on_event(&mut self, e: Event) {
        match &e {
            Event::StateChanged(state) => {
                if *state == RaftState::Candidate {
                    metrics::counter!("raft_elections_total").increment(1);
                }
                if *state != RaftState::Leader {
                    // Entries in flight may still commit under the next
                    // leader: their outcome is unknown. Entries this leader
                    // already committed (a quorum holds them; its own write
                    // may still be under way, as when the quorum of a
                    // configuration that removes it is the others) are
                    // answered when they come out committed.
                    self.append_timer.clear();
                    let committed = self.core.status().commit_index;
                    let unknown = self.pending.split_off(&committed.next());
                    for (_, (_, responder, _)) in unknown {
                        responder.fail(RaftError::LeadershipLost);
                    }
                }
            }
            Event::LeaderChanged(leader) => {
                metrics::counter!("raft_leader_changes_total").increment(1);
                if let Some(new) = leader {
                    let (done, waiting): (Vec<_>, Vec<_>) =
                        std::mem::take(&mut self.transfer_waiters)
                            .into_iter()
                            .partition(|_| *new != self.id);
                    self.transfer_waiters = waiting;
                    for (_, reply) in done {
                        let _ = reply.send(Ok(new.clone()));
                    }
                }
            }
            Event::ConfigurationChanged { configuration, .. } => {
                for s in &configuration.servers {
                    self.book.learn(&s.id, &s.address);
                }
            }
            Event::LeadershipTransferAborted => {
                for (_, reply) in self.transfer_waiters.drain(..) {
                    let _ = reply.send(Err(RaftError::LeadershipTransferFailed));
                }
            }
            Event::Removed | Event::HeartbeatFailed(_) => {}
        }
        let _ = self.events.send(e);
    }

    /// Proposes waiting membership changes in order while the core takes
    /// them. A change whose caller gave up is dropped unproposed; the
    /// `prev_index` check happens when the change's turn comes.
    fn propose_queued_changes(&mut self) {
        while let Some((change, prev_index, reply)) = self.queued_changes.pop_front() {
            if reply.is_closed() {
                continue;
            }
            match self.core.propose_conf_change(change.clone(), prev_index) {
                Ok(index) => {
                    self.pending.insert(
                        index,
                        (self.core.term(), Responder::Index(reply), Instant::now()),
                    );
                }
                Err(ProposeError::ConfigChangeInProgress) => {
                    self.queued_changes.push_front((change, prev_index, reply));
                    return;
                }
                Err(e) => {
                    let _ = reply.send(Err(RaftError::from_propose(e, self.leader_with_address())));
                }
            }
        }
    }

    fn fail_pending(&mut self, e: RaftError) {
        for (_, (_, responder, _)) in std::mem::take(&mut self.pending) {
            responder.fail(e.clone());
        }
    }

    fn publish_observed(&mut self) {
        let state = self.core.state();
        let leader = self.leader_with_address();
        self.observed.send_if_modified(|o| {
            let changed = o.state != state || o.leader != leader;
            o.state = state;
            o.leader = leader;
            changed
        });
    }

    fn publish_metrics(&self) {
        let s = self.core.status();
        for state in [
            RaftState::Follower,
            RaftState::Candidate,
            RaftState::Leader,
            RaftState::Shutdown,
        ] {
            let v = if s.state == state { 1.0 } else { 0.0 };
            metrics::gauge!("raft_state", "state" => state.to_string()).set(v);
        }
        metrics::gauge!("raft_term").set(s.term.0 as f64);
        metrics::gauge!("raft_commit_index").set(s.commit_index.0 as f64);
        metrics::gauge!("raft_applied_index").set(self.applied.0 as f64);
        metrics::gauge!("raft_last_log_index").set(s.last_log_index.0 as f64);
        metrics::gauge!("raft_last_snapshot_index").set(s.last_snapshot_index.0 as f64);
        let contact = self.cfg.tick_interval() * s.ticks_since_leader_contact as u32;
        metrics::gauge!("raft_last_contact_seconds").set(contact.as_secs_f64());
        for p in &s.peers {
            metrics::gauge!("raft_replication_match_index", "peer" => p.id.to_string())
                .set(p.match_index.0 as f64);
            metrics::gauge!("raft_replication_inflight", "peer" => p.id.to_string())
                .set(p.inflight as f64);
        }
    }

    fn send_snapshot(&mut self, to: NodeId, term: Term, meta: SnapshotMeta) {
        let Some(peer) = self.book.peer(&to) else {
            self.core.on_snapshot_send_failed(&to);
            return;
        };
        let offer = SnapshotOffer {
            from: self.id.clone(),
            to: to.clone(),
            term,
            meta: meta.clone(),
        };
        let (snaps, transport, done) = (
            self.snaps.clone(),
            self.transport.clone(),
            self.internal_tx.clone(),
        );
        self.tasks.spawn(async move {
            let opened = tokio::task::spawn_blocking(move || snaps.open(&meta.id)).await;
            let result = match opened {
                Ok(Ok((_, reader))) => transport
                    .send_snapshot(&peer, offer, reader)
                    .await
                    .map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = result {
                tracing::warn!(peer = %to, error = %e, "sending snapshot failed");
                let _ = done.send(Internal::SnapshotSendFailed(to));
            }
        });
    }

    fn receive_snapshot(&mut self, incoming: IncomingSnapshot) {
        let IncomingSnapshot { offer, mut chunks } = incoming;
        let snaps = self.snaps.clone();
        let done = self.internal_tx.clone();
        self.tasks.spawn_blocking(move || {
            let point = SnapshotPoint {
                index: offer.meta.index,
                term: offer.meta.term,
                configuration: offer.meta.configuration.clone(),
                configuration_index: offer.meta.configuration_index,
            };
            let mut sink = match snaps.create(point) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot store incoming snapshot");
                    return;
                }
            };
            let mut complete = false;
            while let Some(chunk) = chunks.blocking_recv() {
                if let Err(e) = std::io::Write::write_all(&mut sink, &chunk.data) {
                    tracing::warn!(error = %e, "writing incoming snapshot failed");
                    let _ = sink.cancel();
                    return;
                }
                if chunk.done {
                    complete = true;
                    break;
                }
            }
            if !complete {
                tracing::warn!(from = %offer.from, "snapshot stream ended early; discarded");
                let _ = sink.cancel();
                return;
            }
            match sink.finish() {
                Ok(meta)
                    if meta.checksum == offer.meta.checksum && meta.size == offer.meta.size =>
                {
                    let _ = done.send(Internal::SnapshotReceived { offer, meta });
                }
                Ok(meta) => tracing::warn!(
                    got_size = meta.size,
                    want_size = offer.meta.size,
                    "received snapshot does not match its offer (size or CRC); ignored"
                ),
                Err(e) => tracing::warn!(error = %e, "finishing incoming snapshot failed"),
            }
        });
    }
}
