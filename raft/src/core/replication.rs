//! Log replication (§5.3): the leader's side (progress, pipelining,
//! batching, heartbeats, commit) and the follower's side (consistency check,
//! conflict truncation, fast backtracking hints).

use crate::message::{AppendEntriesRequest, AppendEntriesResponse, MessageBody};
use crate::types::{LogIndex, NodeId, ServerAddress, Term};

use super::quorum::quorum_value;
use super::{Core, Event, ProgressState, RaftState, Role, SnapshotSend};

/// Election timeouts a leader waits for a follower to answer a snapshot
/// before sending it again.
const SNAPSHOT_TIMEOUT_ELECTIONS: u64 = 20;

impl Core {
    pub(super) fn tick_leader(&mut self) {
        let now = self.now;
        let lease_start = self.lease_start();
        let check_quorum_ticks = self.cfg.check_quorum_ticks;
        let heartbeat_ticks = self.cfg.heartbeat_ticks;
        let Some(l) = self.leader_state_mut() else {
            return;
        };
        l.heartbeat_elapsed += 1;
        let heartbeat_due = l.heartbeat_elapsed >= heartbeat_ticks;
        if heartbeat_due {
            l.heartbeat_elapsed = 0;
        }
        let transfer_expired = l.transfer.as_ref().is_some_and(|t| now >= t.deadline);
        if transfer_expired {
            l.transfer = None;
            self.out.events.push(Event::LeadershipTransferAborted);
        }
        // Check-quorum: a leader that has not heard from a quorum within the
        // lease timeout steps down, so a partitioned leader stops serving.
        if now.saturating_sub(lease_start) >= check_quorum_ticks {
            tracing::info!(id = %self.id, term = %self.term, "no quorum contact within the lease; stepping down");
            self.become_follower(self.term, None);
            return;
        }
        // A snapshot whose answer never came (the follower failed to store
        // it, or both the answer and every later reply were lost) is retried.
        let give_up = now.saturating_sub(SNAPSHOT_TIMEOUT_ELECTIONS * self.cfg.election_ticks);
        if let Some(l) = self.leader_state_mut() {
            for p in l.progress.values_mut() {
                if matches!(p.state, ProgressState::Snapshot { since, .. } if since < give_up) {
                    p.become_probe();
                }
            }
        }
        if heartbeat_due {
            self.broadcast_heartbeat();
            // Forget rounds a quorum has confirmed (with no peers, nothing
            // else would: no response ever arrives).
            self.confirm_reads();
        }
    }

    /// Starts a new round and sends every follower an AppendEntries that
    /// carries it (with no entries: the log goes in `flush_leader`).
    pub(super) fn broadcast_heartbeat(&mut self) {
        self.new_round();
        let peers: Vec<NodeId> = match self.leader_state() {
            Some(l) => l.progress.keys().cloned().collect(),
            None => return,
        };
        for peer in peers {
            self.send_heartbeat(&peer);
        }
    }

    pub(super) fn new_round(&mut self) {
        let now = self.now;
        if let Some(l) = self.leader_state_mut() {
            l.round += 1;
            l.round_ticks.push_back((l.round, now));
        }
    }

    /// An empty AppendEntries: proves leadership, carries the commit index.
    fn send_heartbeat(&mut self, peer: &NodeId) {
        let commit = self.log.committed;
        let last = self.log.last_index();
        let Some(l) = self.leader_state_mut() else {
            return;
        };
        let round = l.round;
        let Some(p) = l.progress.get_mut(peer) else {
            return;
        };
        let prev = p.next_index.prev().min(last);
        p.sent_commit = p.sent_commit.max(commit.min(prev));
        p.sent_this_ready = true;
        let (prev_log_index, prev_log_term) = match self.log.term(prev) {
            Some(t) => (prev, t),
            None => (
                self.log.offset(),
                self.log.term(self.log.offset()).unwrap_or(Term::ZERO),
            ),
        };
        let req = AppendEntriesRequest {
            prev_log_index,
            prev_log_term,
            entries: Vec::new(),
            leader_commit: commit,
            round,
        };
        self.send(peer.clone(), MessageBody::AppendEntriesRequest(req));
    }

    /// Sends the next batch of entries to `peer` if its window allows.
    /// Returns whether a batch went.
    fn maybe_send_append(&mut self, peer: &NodeId) -> bool {
        let max_inflight = self.cfg.max_inflight;
        let max_entries = self.cfg.max_append_entries;
        let max_bytes = self.cfg.max_append_bytes;
        let commit = self.log.committed;
        let last = self.log.last_index();
        let term = self.term;
        let now = self.now;
        let Role::Leader(l) = &mut self.role else {
            return false;
        };
        let round = l.round;
        let Some(p) = l.progress.get_mut(peer) else {
            return false;
        };
        if !p.can_send(max_inflight) || p.next_index > last {
            return false;
        }
        let prev = p.next_index.prev();
        let Some(prev_term) = self.log.term(prev) else {
            // The entries it needs are compacted away: send the snapshot.
            if let Some(meta) = self.snapshot.clone() {
                p.become_snapshot(meta.index, now);
                self.out.send_snapshots.push(SnapshotSend {
                    to: peer.clone(),
                    term,
                    meta,
                });
            }
            return false;
        };
        let entries = self.log.slice(p.next_index, last, max_entries, max_bytes);
        let Some(last_sent) = entries.last().map(|e| e.index) else {
            return false;
        };
        p.sent(last_sent);
        p.sent_commit = p.sent_commit.max(commit.min(last_sent));
        p.sent_this_ready = true;
        let req = AppendEntriesRequest {
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries,
            leader_commit: commit,
            round,
        };
        self.send(peer.clone(), MessageBody::AppendEntriesRequest(req));
        true
    }

    /// Whether some follower could be sent entries now.
    pub(super) fn leader_has_pending_appends(&self) -> bool {
        let last = self.log.last_index();
        self.leader_state().is_some_and(|l| {
            l.progress
                .values()
                .any(|p| p.can_send(self.cfg.max_inflight) && p.next_index <= last)
        })
    }

    /// Sends everything due at `ready`: new read rounds, entries up to each
    /// window, and, once `announce_commit` asked for it, the commit index to
    /// followers that got nothing else.
    pub(super) fn flush_leader(&mut self) {
        let round_started = self.assign_reads();
        let (peers, announce): (Vec<NodeId>, bool) = match self.leader_state_mut() {
            Some(l) => {
                for p in l.progress.values_mut() {
                    p.sent_this_ready = false;
                }
                let announce = std::mem::take(&mut l.announce_commit);
                (l.progress.keys().cloned().collect(), announce)
            }
            None => return,
        };
        let commit = self.log.committed;
        for peer in &peers {
            while self.maybe_send_append(peer) {}
            let Some(p) = self.leader_state().and_then(|l| l.progress.get(peer)) else {
                continue;
            };
            let in_snapshot = matches!(p.state, ProgressState::Snapshot { .. });
            let commit_due = announce && p.needs_commit(commit);
            if !p.sent_this_ready && !in_snapshot && (round_started || commit_due) {
                self.send_heartbeat(peer);
            }
        }
        self.confirm_reads();
    }

    /// Whether some follower has not been sent the leader's commit index.
    ///
    /// A new commit index travels with the next AppendEntries: the next
    /// entries, the next heartbeat, or an empty one the driver asks for with
    /// [`announce_commit`](Self::announce_commit) once `commit_timeout` has
    /// passed (HashiCorp's `CommitTimeout`). Under load the next entries
    /// follow within microseconds; sending the commit index on its own after
    /// every commit would double the messages of a lone client.
    pub fn commit_unannounced(&self) -> bool {
        let commit = self.log.committed;
        self.leader_state()
            .is_some_and(|l| l.progress.values().any(|p| p.needs_commit(commit)))
    }

    /// Sends the commit index, at the next `ready`, to every follower that
    /// has not been sent it and gets nothing else.
    pub fn announce_commit(&mut self) {
        if let Some(l) = self.leader_state_mut() {
            l.announce_commit = true;
        }
    }

    pub(super) fn handle_append_response(
        &mut self,
        from: NodeId,
        _term: Term,
        resp: AppendEntriesResponse,
    ) {
        let probe_next = resp
            .hint
            .map(|(index, term)| self.find_conflict_by_term(index, term).next());
        let last = self.log.last_index();
        let Some(l) = self.leader_state_mut() else {
            return;
        };
        let Some(p) = l.progress.get_mut(&from) else {
            return;
        };
        p.acked_round = p.acked_round.max(resp.round);
        let mut advanced = false;
        if resp.success {
            advanced = p.on_success(resp.index);
        } else {
            p.on_reject(
                resp.index,
                probe_next.unwrap_or(resp.index),
                resp.hint.map(|(i, _)| i),
            );
        }
        p.resume();
        let caught_up = p.match_index == last;
        if advanced {
            self.maybe_commit();
        }
        self.confirm_reads();
        if caught_up {
            self.maybe_send_timeout_now(&from);
        }
    }

    /// The largest index `<= index` whose term is `<= term` in our log (etcd's
    /// `findConflictByTerm`): everything after it surely conflicts.
    pub(super) fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> LogIndex {
        let mut i = index.min(self.log.last_index());
        loop {
            match self.log.term(i) {
                Some(t) if t > term => i = i.prev(),
                Some(_) => return i,
                None => return self.log.offset().min(i),
            }
        }
    }

    /// Advances the commit index to what a quorum of voters holds.
    pub(super) fn maybe_commit(&mut self) {
        let Some(l) = self.leader_state() else { return };
        let config = self.membership.config();
        let matches: Vec<u64> = config
            .voters()
            .map(|v| {
                if *v == self.id {
                    self.log.persisted().0
                } else {
                    l.progress.get(v).map_or(0, |p| p.match_index.0)
                }
            })
            .collect();
        let Some(q) = quorum_value(matches, config.quorum()) else {
            return;
        };
        let q = LogIndex(q);
        // §5.4.2, Figure 8: commit only by counting replicas of an entry from
        // the current term; earlier entries commit with it.
        if self.log.term(q) != Some(self.term) || !self.log.commit_to(q) {
            return;
        }
        self.maybe_step_down_removed();
    }

    /// A leader no longer a voter in a committed configuration steps down.
    fn maybe_step_down_removed(&mut self) {
        let (index, config) = self.membership.latest();
        if index > self.log.committed || config.is_voter(&self.id) {
            return;
        }
        let removed = config.server(&self.id).is_none();
        tracing::info!(id = %self.id, "configuration without this server as voter committed; stepping down");
        self.become_follower(self.term, None);
        if removed {
            self.out.events.push(Event::Removed);
            if self.cfg.shutdown_on_remove {
                self.role = Role::Shutdown;
                self.out
                    .events
                    .push(Event::StateChanged(RaftState::Shutdown));
            }
        }
    }

    pub(super) fn handle_append_request(
        &mut self,
        from: NodeId,
        _addr: ServerAddress,
        req: AppendEntriesRequest,
    ) {
        if !matches!(self.role, Role::Follower) {
            // Same term, someone else won: §5.2.
            self.become_follower(self.term, Some(from.clone()));
        }
        self.set_leader(Some(from.clone()));
        self.election_elapsed = 0;
        let round = req.round;
        let resp = if req.prev_log_index < self.log.committed {
            // Everything up to our commit index is settled; say so.
            AppendEntriesResponse {
                success: true,
                index: self.log.committed,
                hint: None,
                round,
            }
        } else if self.log.matches(req.prev_log_index, req.prev_log_term) {
            let last_new = LogIndex(req.prev_log_index.0 + req.entries.len() as u64);
            let old_last = self.log.last_index();
            let truncated = self.log.merge(req.entries);
            if let Some(at) = truncated {
                let before = self.membership.latest().0;
                self.membership.truncate(at);
                let (index, configuration) = self.membership.latest();
                if index != before {
                    let configuration = configuration.clone();
                    self.out.events.push(Event::ConfigurationChanged {
                        index,
                        configuration,
                    });
                }
            }
            let first_new = truncated.unwrap_or(old_last.next());
            if self.log.last_index() >= first_new {
                self.note_appended_configs(first_new);
            }
            self.log.commit_to(req.leader_commit.min(last_new));
            AppendEntriesResponse {
                success: true,
                index: last_new,
                hint: None,
                round,
            }
        } else {
            // Fast backtracking: point the leader at the last index that can
            // still match, with its term.
            let index = self.find_conflict_by_term(req.prev_log_index, req.prev_log_term);
            let term = self.log.term(index).unwrap_or(Term::ZERO);
            AppendEntriesResponse {
                success: false,
                index: req.prev_log_index,
                hint: Some((index, term)),
                round,
            }
        };
        self.send_after_persist(from, MessageBody::AppendEntriesResponse(resp));
    }

    /// A follower could not be reached; stop streaming to it optimistically.
    pub fn report_unreachable(&mut self, peer: &NodeId) {
        if let Some(p) = self
            .leader_state_mut()
            .and_then(|l| l.progress.get_mut(peer))
        {
            if p.state == ProgressState::Replicate {
                p.become_probe();
            }
        }
    }
}
