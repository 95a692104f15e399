//! The sans-IO Raft state machine.
//!
//! The core owns the protocol state and performs no I/O: no clock, no
//! sockets, no files, no global randomness. Inputs are method calls, outputs
//! are plain data collected in a [`Ready`]:
//!
//! ```text
//!   tick() ─┐                                        ┌─▶ persist hard state, truncate, append
//!   step(m) ┼─▶ Core ──has_ready()? ready() ─▶ Ready ┼─▶ send messages (some only after persist)
//! propose() ┘    ▲                                   ├─▶ apply committed entries, serve reads
//!                │                                   └─▶ stream / install / create snapshots
//!                └── on_persisted / on_applied / on_snapshot_* (the driver acknowledges)
//! ```
//!
//! A driver loops: feed inputs, then `while core.has_ready() { let r =
//! core.ready(); perform(r); }`, acknowledging I/O with the `on_*` calls as
//! it completes. The simulation in `raftkit-tests` drives many cores this way
//! in one thread with virtual time.

mod election;
mod log;
mod membership;
mod progress;
mod quorum;
mod read;
mod replication;
mod snapshot;
#[cfg(test)]
mod tests;
mod transfer;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::ValidConfig;
use crate::message::{Message, MessageBody};
use crate::storage::{HardState, SnapshotMeta};
use crate::types::{Configuration, Entry, EntryPayload, LogIndex, NodeId, ServerAddress, Term};

pub use membership::ConfChange;

use log::RaftLog;
use membership::Membership;
use progress::{Progress, ProgressState};

/// A read request's identity, chosen by the driver.
pub type ReadId = u64;

/// What a server is doing (HashiCorp's `RaftState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RaftState {
    /// Following a leader (or waiting for one).
    Follower,
    /// Asking for votes (a pre-vote round counts too).
    Candidate,
    /// Leading.
    Leader,
    /// Stopped.
    Shutdown,
}

impl std::fmt::Display for RaftState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Something observers may want to know (see `Raft::subscribe`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The server changed role.
    StateChanged(RaftState),
    /// A new leader is known (or none).
    LeaderChanged(Option<NodeId>),
    /// A new configuration took effect (when appended).
    ConfigurationChanged {
        /// Its log index.
        index: LogIndex,
        /// The configuration.
        configuration: Configuration,
    },
    /// A leadership transfer ended without the target winning.
    LeadershipTransferAborted,
    /// This server was removed from the configuration and has stepped down.
    Removed,
    /// A message to this peer could not be sent (the driver reports it).
    HeartbeatFailed(NodeId),
}

/// A read confirmed by ReadIndex or lease: serve it once the state machine
/// has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The driver's id for the read.
    pub id: ReadId,
    /// The commit index when the read was confirmed.
    pub index: LogIndex,
}

/// A snapshot to stream to a follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSend {
    /// The follower.
    pub to: NodeId,
    /// The leader's term.
    pub term: Term,
    /// Which snapshot.
    pub meta: SnapshotMeta,
}

/// Everything the driver must do after a batch of inputs.
///
/// Perform it in this order; [`Ready`]'s fields say when each part may go:
///
/// 1. send `messages` at once (a leader's appends go out in parallel with
///    its own log write);
/// 2. persist, in order: `hard_state`, `install_snapshot` (reset the log
///    store to start after the snapshot), `truncate_from`, `entries`; then
///    call [`Core::on_persisted`] with [`Ready::persisted_upto`];
/// 3. only then send `messages_after_persist` (votes and append
///    acknowledgements promise durability);
/// 4. apply: restore `install_snapshot` into the FSM, then apply `committed`
///    in order and call [`Core::on_applied`];
/// 5. serve `reads` once applied reaches their index; fail `aborted_reads`;
/// 6. stream `send_snapshots`, create a snapshot if `create_snapshot`, purge
///    the log store up to `purge_upto` (any time after).
#[must_use = "a Ready holds I/O the driver must perform"]
#[derive(Debug, Default)]
pub struct Ready {
    /// Term and vote to persist, when they changed.
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader that replaces the log and the FSM
    /// state. Its data is already in the snapshot store.
    pub install_snapshot: Option<SnapshotMeta>,
    /// Remove every stored entry from this index on, before appending.
    pub truncate_from: Option<LogIndex>,
    /// Entries to append to the log store.
    pub entries: Vec<Entry>,
    /// Messages to send now.
    pub messages: Vec<Message>,
    /// Messages to send once everything above is durable.
    pub messages_after_persist: Vec<Message>,
    /// Committed entries to apply, in order.
    pub committed: Vec<Entry>,
    /// Reads now safe to serve once applied reaches their index.
    pub reads: Vec<ReadState>,
    /// Reads that can no longer be confirmed here (leadership lost).
    pub aborted_reads: Vec<ReadId>,
    /// Snapshots to stream to followers.
    pub send_snapshots: Vec<SnapshotSend>,
    /// Take a snapshot of the FSM now and report with `on_snapshot_created`.
    pub create_snapshot: bool,
    /// Entries up to here are in a snapshot; the log store may drop them.
    pub purge_upto: Option<LogIndex>,
    /// Role, leader and configuration changes.
    pub events: Vec<Event>,
}

impl Ready {
    /// The `(index, term)` to pass to [`Core::on_persisted`] once `entries` are durable.
    pub fn persisted_upto(&self) -> Option<(LogIndex, Term)> {
        self.entries.last().map(|e| (e.index, e.term))
    }

    /// Whether this Ready asks for nothing at all.
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.install_snapshot.is_none()
            && self.truncate_from.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.messages_after_persist.is_empty()
            && self.committed.is_empty()
            && self.reads.is_empty()
            && self.aborted_reads.is_empty()
            && self.send_snapshots.is_empty()
            && !self.create_snapshot
            && self.purge_upto.is_none()
            && self.events.is_empty()
    }
}

/// What a server restores from durable storage when it starts.
#[derive(Clone, Debug, Default)]
pub struct RestoredState {
    /// Term and vote.
    pub hard_state: HardState,
    /// The newest snapshot, already restored into the FSM by the driver.
    pub snapshot: Option<SnapshotMeta>,
    /// The log entries held in storage (those at or below the snapshot's
    /// index are ignored).
    pub entries: Vec<Entry>,
}

/// Why the core could not start from what storage held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The stored log has a hole.
    #[error("stored log is not contiguous: entry {found} follows {expected_after}")]
    Gap {
        /// The index the next entry should have followed.
        expected_after: LogIndex,
        /// The index found.
        found: LogIndex,
    },
}

/// Why a proposal or admin call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader accepts it; here is who leads, if known.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this server knows of.
        leader: Option<NodeId>,
    },
    /// A leadership transfer is under way.
    #[error("leadership transfer in progress")]
    LeadershipTransferInProgress,
    /// A configuration change is not yet committed, or the leader has not yet
    /// committed an entry of its term.
    #[error("a configuration change is already in progress")]
    ConfigChangeInProgress,
    /// `prev_index` did not match the latest configuration's index.
    #[error("configuration changed since index {expected} (now {actual})")]
    ConfigurationChanged {
        /// The index the caller expected.
        expected: LogIndex,
        /// The latest configuration's index.
        actual: LogIndex,
    },
    /// The change itself is not possible.
    #[error("invalid configuration change: {0}")]
    InvalidChange(String),
    /// The cluster already has state (bootstrap only).
    #[error("cannot bootstrap a server that already has state")]
    CantBootstrap,
    /// The server has stopped (removed).
    #[error("server is shut down")]
    Shutdown,
}

/// Why a message was not stepped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The message is addressed to another server.
    #[error("message for {to} delivered to {me}")]
    WrongRecipient {
        /// Its recipient.
        to: NodeId,
        /// This server.
        me: NodeId,
    },
}

/// Per-follower replication state, for stats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The follower.
    pub id: NodeId,
    /// How far its log matches the leader's.
    pub match_index: LogIndex,
    /// The next index to send.
    pub next_index: LogIndex,
    /// AppendEntries messages in flight.
    pub inflight: usize,
    /// "probe", "replicate" or "snapshot".
    pub state: &'static str,
}

/// A consistent picture of the core, for `stats()` and invariant checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This server.
    pub id: NodeId,
    /// Its role.
    pub state: RaftState,
    /// Its term.
    pub term: Term,
    /// Its vote in that term.
    pub vote: Option<NodeId>,
    /// The leader it knows.
    pub leader: Option<NodeId>,
    /// The highest committed index it knows.
    pub commit_index: LogIndex,
    /// The highest index the driver reported applied.
    pub applied_index: LogIndex,
    /// The last log index (durable or not).
    pub last_log_index: LogIndex,
    /// The term of that entry.
    pub last_log_term: Term,
    /// The last durable log index.
    pub persisted_index: LogIndex,
    /// The first index still in the in-memory log.
    pub first_log_index: LogIndex,
    /// The newest snapshot's index (zero if none).
    pub last_snapshot_index: LogIndex,
    /// The newest snapshot's term.
    pub last_snapshot_term: Term,
    /// The configuration in effect and its index.
    pub configuration: Configuration,
    /// That configuration's log index.
    pub configuration_index: LogIndex,
    /// Ticks since the leader was last heard from (0 on the leader).
    pub ticks_since_leader_contact: u64,
    /// Per-follower progress (leader only).
    pub peers: Vec<PeerStatus>,
}

/// A leader's extra state.
#[derive(Debug)]
struct LeaderState {
    progress: std::collections::BTreeMap<NodeId, Progress>,
    /// The current heartbeat round; bumped by each heartbeat broadcast and
    /// each batch of reads.
    round: u64,
    /// When each unconfirmed round started, oldest first.
    round_ticks: std::collections::VecDeque<(u64, u64)>,
    /// Reads waiting for a quorum to confirm `round`.
    pending_reads: Vec<PendingRead>,
    /// Reads not yet assigned a round (a new round goes out at `ready`).
    unsent_reads: Vec<ReadId>,
    /// The no-op this leader appended on election (§8): until it commits,
    /// the commit index may lag and reads must wait.
    noop_index: LogIndex,
    /// Ticks since election, for the heartbeat timer.
    heartbeat_elapsed: u64,
    /// An ongoing leadership transfer.
    transfer: Option<transfer::Transfer>,
    /// Send the commit index at the next `ready` to followers that have not
    /// heard it (set by `announce_commit`).
    announce_commit: bool,
}

#[derive(Debug, Clone, Copy)]
struct PendingRead {
    id: ReadId,
    index: LogIndex,
    round: u64,
}

/// A candidate's (or pre-candidate's) vote count.
#[derive(Debug, Default)]
struct Votes {
    pre_vote: bool,
    granted: std::collections::BTreeSet<NodeId>,
    rejected: std::collections::BTreeSet<NodeId>,
}

#[derive(Debug)]
enum Role {
    Follower,
    Candidate(Votes),
    Leader(Box<LeaderState>),
    Shutdown,
}

#[derive(Debug, Default)]
struct Outbox {
    messages: Vec<Message>,
    after_persist: Vec<Message>,
    reads: Vec<ReadState>,
    aborted_reads: Vec<ReadId>,
    send_snapshots: Vec<SnapshotSend>,
    install_snapshot: Option<SnapshotMeta>,
    create_snapshot: bool,
    purge_upto: Option<LogIndex>,
    events: Vec<Event>,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.after_persist.is_empty()
            && self.reads.is_empty()
            && self.aborted_reads.is_empty()
            && self.send_snapshots.is_empty()
            && self.install_snapshot.is_none()
            && !self.create_snapshot
            && self.purge_upto.is_none()
            && self.events.is_empty()
    }
}

/// The Raft protocol state machine of one server. See the module docs.
#[derive(Debug)]
pub struct Core {
    id: NodeId,
    address: ServerAddress,
    cfg: ValidConfig,
    rng: ChaCha8Rng,
    term: Term,
    vote: Option<NodeId>,
    hard_state_dirty: bool,
    log: RaftLog,
    membership: Membership,
    role: Role,
    leader: Option<NodeId>,
    /// Ticks since this core started.
    now: u64,
    /// Ticks since the leader was heard from or the election began.
    election_elapsed: u64,
    /// This term's randomized election timeout.
    election_timeout: u64,
    /// The newest snapshot held.
    snapshot: Option<SnapshotMeta>,
    /// A `create_snapshot` is out and not yet answered.
    snapshot_in_progress: bool,
    /// The user asked for a snapshot.
    snapshot_requested: bool,
    /// Tick of the last automatic snapshot check.
    last_snapshot_check: u64,
    /// The highest index the driver reported applied.
    applied: LogIndex,
    out: Outbox,
}

impl Core {
    /// A core restored from durable state.
    ///
    /// `seed` drives every random choice (election jitter); give each server
    /// of a simulation its own.
    pub fn new(
        cfg: ValidConfig,
        id: NodeId,
        address: ServerAddress,
        restored: RestoredState,
        seed: u64,
    ) -> Result<Core, RestoreError> {
        let (offset, offset_term, base_index, base) = match &restored.snapshot {
            Some(s) => (
                s.index,
                s.term,
                s.configuration_index,
                s.configuration.clone(),
            ),
            None => (
                LogIndex::ZERO,
                Term::ZERO,
                LogIndex::ZERO,
                Configuration::default(),
            ),
        };
        let mut membership = Membership::new(base_index, base);
        let mut entries = Vec::with_capacity(restored.entries.len());
        let mut expected = offset;
        // A snapshot received from a leader is stored before the log is reset
        // to start after it. A crash in between leaves the old log: stale past
        // the snapshot if it disagrees at the snapshot's index, and useless if
        // it ends before the snapshot (the next append would leave a hole).
        let stale_suffix = restored
            .entries
            .iter()
            .any(|e| e.index == offset && restored.snapshot.is_some() && e.term != offset_term);
        let stored_first = restored.entries.first().map(|e| e.index);
        let stored_last = restored.entries.last().map_or(LogIndex::ZERO, |e| e.index);
        let truncate_stored = if stale_suffix {
            Some(offset.next())
        } else if stored_last != LogIndex::ZERO && stored_last < offset {
            stored_first
        } else {
            None
        };
        for e in restored.entries {
            if e.index <= offset || stale_suffix {
                continue;
            }
            if e.index != expected.next() {
                return Err(RestoreError::Gap {
                    expected_after: expected,
                    found: e.index,
                });
            }
            expected = e.index;
            if let EntryPayload::Configuration(c) = &e.payload {
                membership.append(e.index, c.clone());
            }
            entries.push(e);
        }
        let mut core = Core {
            id,
            address,
            rng: ChaCha8Rng::seed_from_u64(seed),
            term: restored.hard_state.term,
            vote: restored.hard_state.vote,
            hard_state_dirty: false,
            log: RaftLog::restore(offset, offset_term, entries, truncate_stored),
            membership,
            role: Role::Follower,
            leader: None,
            now: 0,
            election_elapsed: 0,
            election_timeout: 0,
            applied: offset,
            snapshot: restored.snapshot,
            snapshot_in_progress: false,
            snapshot_requested: false,
            last_snapshot_check: 0,
            cfg,
            out: Outbox::default(),
        };
        core.reset_election_timeout(false);
        Ok(core)
    }

    /// Writes the first configuration (HashiCorp's `BootstrapCluster`): only
    /// on a server with no state at all; every other server starts empty and
    /// learns the configuration from the leader.
    pub fn bootstrap(&mut self, configuration: Configuration) -> Result<(), ProposeError> {
        if self.term != Term::ZERO || self.log.last_index() != LogIndex::ZERO {
            return Err(ProposeError::CantBootstrap);
        }
        if configuration.voters().next().is_none() {
            return Err(ProposeError::InvalidChange(
                "the configuration has no voter".into(),
            ));
        }
        self.term = Term(1);
        self.hard_state_dirty = true;
        let entry = Entry {
            index: LogIndex(1),
            term: Term(1),
            payload: EntryPayload::Configuration(configuration.clone()),
        };
        self.log.append(entry);
        self.membership.append(LogIndex(1), configuration.clone());
        self.out.events.push(Event::ConfigurationChanged {
            index: LogIndex(1),
            configuration,
        });
        Ok(())
    }

    /// One logical tick: drives heartbeats, election timeouts, check-quorum,
    /// leadership-transfer timeouts and the snapshot timer.
    pub fn tick(&mut self) {
        self.now += 1;
        match self.role {
            Role::Leader(_) => self.tick_leader(),
            Role::Follower | Role::Candidate(_) => self.tick_election(),
            Role::Shutdown => {}
        }
        self.maybe_request_snapshot();
    }

    /// Handles a message from a peer.
    pub fn step(&mut self, msg: Message) -> Result<(), StepError> {
        if msg.to != self.id {
            return Err(StepError::WrongRecipient {
                to: msg.to,
                me: self.id.clone(),
            });
        }
        if matches!(self.role, Role::Shutdown) {
            return Ok(());
        }
        if !self.check_term(&msg) {
            return Ok(());
        }
        match msg.body {
            MessageBody::AppendEntriesRequest(req) => {
                self.handle_append_request(msg.from, msg.from_addr, req)
            }
            MessageBody::AppendEntriesResponse(resp) => {
                self.handle_append_response(msg.from, msg.term, resp)
            }
            MessageBody::RequestVoteRequest(req) => {
                self.handle_vote_request(msg.from, msg.from_addr, msg.term, req)
            }
            MessageBody::RequestVoteResponse(resp) => {
                self.handle_vote_response(msg.from, msg.term, resp)
            }
            MessageBody::InstallSnapshotRequest(req) => {
                self.handle_install_snapshot(msg.from, msg.from_addr, req.meta)
            }
            MessageBody::InstallSnapshotResponse(resp) => {
                self.handle_install_snapshot_response(msg.from, resp)
            }
            MessageBody::TimeoutNow => self.handle_timeout_now(msg.from),
        }
        Ok(())
    }

    /// Appends a command to the log (leader only) and returns its index.
    ///
    /// The entry goes to followers at the next `ready`, batched with every
    /// other proposal made since.
    pub fn propose(&mut self, data: Bytes) -> Result<LogIndex, ProposeError> {
        self.leader_for_proposals()?;
        Ok(self.append_entry(EntryPayload::Command(data)))
    }

    /// Appends a no-op (HashiCorp's `Barrier`): once applied, everything
    /// before it is applied.
    pub fn propose_barrier(&mut self) -> Result<LogIndex, ProposeError> {
        self.leader_for_proposals()?;
        Ok(self.append_entry(EntryPayload::Blank))
    }

    /// Proposes one membership change (leader only).
    ///
    /// Refused while another change is uncommitted or before this leader has
    /// committed an entry of its term (the fix to single-server changes in
    /// Ongaro's 2015 errata). `prev_index`, when not zero, must equal the
    /// latest configuration's index (HashiCorp's check against racing admins).
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
        prev_index: LogIndex,
    ) -> Result<LogIndex, ProposeError> {
        self.leader_for_proposals()?;
        let (latest_index, latest) = self.membership.latest();
        if prev_index != LogIndex::ZERO && prev_index != latest_index {
            return Err(ProposeError::ConfigurationChanged {
                expected: prev_index,
                actual: latest_index,
            });
        }
        let noop_committed = self
            .leader_state()
            .is_some_and(|l| l.noop_index <= self.log.committed);
        if latest_index > self.log.committed || !noop_committed {
            return Err(ProposeError::ConfigChangeInProgress);
        }
        let next = change.apply(latest).map_err(ProposeError::InvalidChange)?;
        Ok(self.append_entry(EntryPayload::Configuration(next)))
    }

    /// Whether `ready` has anything to return.
    pub fn has_ready(&self) -> bool {
        self.hard_state_dirty
            || self.log.has_unstable()
            || self.log.has_committed()
            || !self.out.is_empty()
            || self.leader_state().is_some_and(|l| {
                let reads_due = !l.unsent_reads.is_empty() && l.noop_index <= self.log.committed;
                reads_due
                    || (l.announce_commit
                        && l.progress
                            .values()
                            .any(|p| p.needs_commit(self.log.committed)))
            })
            || self.leader_has_pending_appends()
    }

    /// Collects the work to do. Call after inputs while `has_ready()`;
    /// perform each `Ready` (see its docs) before asking for the next, or at
    /// least in order.
    pub fn ready(&mut self) -> Ready {
        if matches!(self.role, Role::Leader(_)) {
            self.flush_leader();
        }
        let hard_state = if self.hard_state_dirty {
            self.hard_state_dirty = false;
            Some(HardState {
                term: self.term,
                vote: self.vote.clone(),
            })
        } else {
            None
        };
        let (truncate_from, entries) = self.log.take_unstable();
        let committed = self.log.take_committed(self.cfg.max_apply_batch);
        let out = std::mem::take(&mut self.out);
        Ready {
            hard_state,
            install_snapshot: out.install_snapshot,
            truncate_from,
            entries,
            messages: out.messages,
            messages_after_persist: out.after_persist,
            committed,
            reads: out.reads,
            aborted_reads: out.aborted_reads,
            send_snapshots: out.send_snapshots,
            create_snapshot: out.create_snapshot,
            purge_upto: out.purge_upto,
            events: out.events,
        }
    }

    /// The driver made log entries up to `(index, term)` durable.
    pub fn on_persisted(&mut self, index: LogIndex, term: Term) {
        if self.log.stable_to(index, term) && matches!(self.role, Role::Leader(_)) {
            self.maybe_commit();
        }
    }

    /// The FSM has applied every entry up to `index`.
    pub fn on_applied(&mut self, index: LogIndex) {
        if index > self.applied {
            self.applied = index;
        }
        self.maybe_request_snapshot();
    }

    /// The current status.
    pub fn status(&self) -> Status {
        let (configuration_index, configuration) = self.membership.latest();
        let peers = match &self.role {
            Role::Leader(l) => l
                .progress
                .iter()
                .map(|(id, p)| PeerStatus {
                    id: id.clone(),
                    match_index: p.match_index,
                    next_index: p.next_index,
                    inflight: p.inflight.len(),
                    state: match p.state {
                        ProgressState::Probe { .. } => "probe",
                        ProgressState::Replicate => "replicate",
                        ProgressState::Snapshot { .. } => "snapshot",
                    },
                })
                .collect(),
            _ => Vec::new(),
        };
        Status {
            id: self.id.clone(),
            state: self.state(),
            term: self.term,
            vote: self.vote.clone(),
            leader: self.leader.clone(),
            commit_index: self.log.committed,
            applied_index: self.applied,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            persisted_index: self.log.persisted(),
            first_log_index: self.log.first_index(),
            last_snapshot_index: self.snapshot.as_ref().map_or(LogIndex::ZERO, |s| s.index),
            last_snapshot_term: self.snapshot.as_ref().map_or(Term::ZERO, |s| s.term),
            configuration: configuration.clone(),
            configuration_index,
            ticks_since_leader_contact: if matches!(self.role, Role::Leader(_)) {
                0
            } else {
                self.election_elapsed
            },
            peers,
        }
    }

    /// This server's id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// Its role.
    pub fn state(&self) -> RaftState {
        match self.role {
            Role::Follower => RaftState::Follower,
            Role::Candidate(_) => RaftState::Candidate,
            Role::Leader(_) => RaftState::Leader,
            Role::Shutdown => RaftState::Shutdown,
        }
    }

    /// The leader it knows.
    pub fn leader(&self) -> Option<&NodeId> {
        self.leader.as_ref()
    }

    /// Its current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The configuration in effect.
    pub fn configuration(&self) -> &Configuration {
        self.membership.config()
    }

    /// The latest configuration at or before `index` (for snapshot metadata).
    pub fn configuration_at(&self, index: LogIndex) -> (LogIndex, Configuration) {
        let (i, c) = self.membership.at(index);
        (i, c.clone())
    }

    /// The entries the core still holds (for invariant checks).
    pub fn log_entries(&self) -> impl Iterator<Item = &Entry> {
        self.log.entries()
    }

    /// The term of the entry at `index`, if the core still knows it.
    pub fn log_term(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index)
    }

    // ---- shared helpers used by the per-concern modules ----

    fn leader_state(&self) -> Option<&LeaderState> {
        match &self.role {
            Role::Leader(l) => Some(l),
            _ => None,
        }
    }

    fn leader_state_mut(&mut self) -> Option<&mut LeaderState> {
        match &mut self.role {
            Role::Leader(l) => Some(l),
            _ => None,
        }
    }

    fn leader_for_proposals(&self) -> Result<&LeaderState, ProposeError> {
        match &self.role {
            Role::Leader(l) if l.transfer.is_some() => {
                Err(ProposeError::LeadershipTransferInProgress)
            }
            Role::Leader(l) => Ok(l),
            Role::Shutdown => Err(ProposeError::Shutdown),
            _ => Err(ProposeError::NotLeader {
                leader: self.leader.clone(),
            }),
        }
    }

    fn is_voter(&self) -> bool {
        self.membership.config().is_voter(&self.id)
    }

    fn message(&self, to: NodeId, body: MessageBody) -> Message {
        Message {
            from: self.id.clone(),
            from_addr: self.address.clone(),
            to,
            term: self.term,
            body,
        }
    }

    /// Queues a message that needs nothing persisted first.
    fn send(&mut self, to: NodeId, body: MessageBody) {
        let m = self.message(to, body);
        self.out.messages.push(m);
    }

    /// Queues a message that promises durability of this Ready's writes.
    fn send_after_persist(&mut self, to: NodeId, body: MessageBody) {
        let m = self.message(to, body);
        self.out.after_persist.push(m);
    }

    fn set_leader(&mut self, leader: Option<NodeId>) {
        if self.leader != leader {
            self.leader = leader.clone();
            self.out.events.push(Event::LeaderChanged(leader));
        }
    }

    fn reset_election_timeout(&mut self, candidate: bool) {
        let base = if candidate {
            self.cfg.candidate_ticks
        } else {
            self.cfg.election_ticks
        };
        self.election_elapsed = 0;
        self.election_timeout = self.rng.random_range(base..2 * base);
    }

    /// Appends an entry as leader; returns its index.
    fn append_entry(&mut self, payload: EntryPayload) -> LogIndex {
        let index = self.log.last_index().next();
        if let EntryPayload::Configuration(c) = &payload {
            self.membership.append(index, c.clone());
            self.out.events.push(Event::ConfigurationChanged {
                index,
                configuration: c.clone(),
            });
            self.sync_progress_with_membership();
        }
        self.log.append(Entry {
            index,
            term: self.term,
            payload,
        });
        index
    }

    /// Applies a configuration carried by entries appended from a leader.
    fn note_appended_configs(&mut self, from: LogIndex) {
        let new: Vec<(LogIndex, Configuration)> = self
            .log
            .entries_from(from)
            .filter_map(|e| match &e.payload {
                EntryPayload::Configuration(c) => Some((e.index, c.clone())),
                _ => None,
            })
            .collect();
        for (index, configuration) in new {
            self.membership.append(index, configuration.clone());
            self.out.events.push(Event::ConfigurationChanged {
                index,
                configuration,
            });
        }
    }
}
