//! Terms, elections and votes (§5.2, §5.4.1), with pre-vote and leader
//! stickiness (§9.6 of Ongaro's thesis).

use crate::message::{
    AppendEntriesResponse, InstallSnapshotResponse, Message, MessageBody, RequestVoteRequest,
    RequestVoteResponse,
};
use crate::types::{NodeId, ServerAddress, Term};

use super::quorum::{tally, VoteResult};
use super::{Core, Event, LeaderState, Progress, RaftState, Role, Votes};

impl Core {
    /// Applies the term rules of §5.1 to a message's envelope. Returns whether
    /// the body should be handled.
    pub(super) fn check_term(&mut self, msg: &Message) -> bool {
        use MessageBody as B;
        if msg.term > self.term {
            match &msg.body {
                B::RequestVoteRequest(req) => {
                    // Leader stickiness: while we hear from a leader, nobody
                    // can depose it, so a rejoining partitioned server can't
                    // disrupt the cluster and a lease holds. A transfer's
                    // election is exempt: the leader asked for it.
                    if self.in_leader_lease() && !req.leadership_transfer {
                        return false;
                    }
                    if req.pre_vote {
                        return true;
                    }
                    self.become_follower(msg.term, None);
                }
                B::RequestVoteResponse(resp) if resp.pre_vote && resp.granted => return true,
                B::AppendEntriesRequest(_) | B::InstallSnapshotRequest(_) | B::TimeoutNow => {
                    self.become_follower(msg.term, Some(msg.from.clone()));
                }
                _ => self.become_follower(msg.term, None),
            }
            true
        } else if msg.term < self.term {
            match &msg.body {
                // A stale leader: answer with our term so it steps down.
                B::AppendEntriesRequest(req) => self.send(
                    msg.from.clone(),
                    B::AppendEntriesResponse(AppendEntriesResponse {
                        success: false,
                        index: req.prev_log_index,
                        hint: None,
                        round: req.round,
                    }),
                ),
                B::InstallSnapshotRequest(_) => self.send(
                    msg.from.clone(),
                    B::InstallSnapshotResponse(InstallSnapshotResponse {
                        success: false,
                        index: self.log.last_index(),
                    }),
                ),
                B::RequestVoteRequest(req) if req.pre_vote => self.send(
                    msg.from.clone(),
                    B::RequestVoteResponse(RequestVoteResponse {
                        granted: false,
                        pre_vote: true,
                    }),
                ),
                _ => {}
            }
            false
        } else {
            true
        }
    }

    /// Whether a leader was heard from within the minimum election timeout
    /// (or we are that leader).
    fn in_leader_lease(&self) -> bool {
        match self.role {
            Role::Leader(_) => true,
            _ => self.leader.is_some() && self.election_elapsed < self.cfg.election_ticks,
        }
    }

    pub(super) fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.election_timeout {
            if self.is_voter() {
                self.campaign(self.cfg.pre_vote, false);
            } else {
                self.reset_election_timeout(false);
            }
        }
    }

    /// Starts a pre-vote round or an election.
    pub(super) fn campaign(&mut self, pre_vote: bool, leadership_transfer: bool) {
        let was = self.state();
        self.abort_leader_reads();
        self.set_leader(None);
        let vote_term = if pre_vote {
            self.term.next()
        } else {
            self.term = self.term.next();
            self.vote = Some(self.id.clone());
            self.hard_state_dirty = true;
            self.term
        };
        let mut votes = Votes {
            pre_vote,
            ..Votes::default()
        };
        votes.granted.insert(self.id.clone());
        self.role = Role::Candidate(votes);
        self.reset_election_timeout(true);
        if was != super::RaftState::Candidate {
            self.out
                .events
                .push(Event::StateChanged(RaftState::Candidate));
        }
        let req = RequestVoteRequest {
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            pre_vote,
            leadership_transfer,
        };
        let peers: Vec<NodeId> = self
            .membership
            .config()
            .voters()
            .filter(|v| **v != self.id)
            .cloned()
            .collect();
        for peer in peers {
            let mut m = self.message(peer, MessageBody::RequestVoteRequest(req.clone()));
            m.term = vote_term;
            // The candidate's own vote must be durable before it asks for others'.
            self.out.after_persist.push(m);
        }
        self.count_votes();
    }

    pub(super) fn handle_vote_request(
        &mut self,
        from: NodeId,
        _from_addr: ServerAddress,
        term: Term,
        req: RequestVoteRequest,
    ) {
        // §5.2: one vote per term, first come first served; a pre-vote for a
        // later term binds nothing.
        let can_vote = self.vote.as_ref() == Some(&from)
            || (self.vote.is_none() && self.leader.is_none())
            || (req.pre_vote && term > self.term);
        // §5.4.1: only for a candidate whose log is at least as up to date.
        let grant = can_vote
            && self
                .log
                .is_up_to_date(req.last_log_index, req.last_log_term);
        let resp = RequestVoteResponse {
            granted: grant,
            pre_vote: req.pre_vote,
        };
        let mut m = self.message(from.clone(), MessageBody::RequestVoteResponse(resp));
        if req.pre_vote && grant {
            m.term = term;
        }
        if grant && !req.pre_vote {
            self.vote = Some(from);
            self.hard_state_dirty = true;
            self.election_elapsed = 0;
        }
        self.out.after_persist.push(m);
    }

    pub(super) fn handle_vote_response(
        &mut self,
        from: NodeId,
        _term: Term,
        resp: RequestVoteResponse,
    ) {
        let Role::Candidate(votes) = &mut self.role else {
            return;
        };
        if votes.pre_vote != resp.pre_vote {
            return;
        }
        if resp.granted {
            votes.granted.insert(from);
        } else {
            votes.rejected.insert(from);
        }
        self.count_votes();
    }

    fn count_votes(&mut self) {
        let Role::Candidate(votes) = &self.role else {
            return;
        };
        let config = self.membership.config();
        let voters = config.voters().count();
        let granted = votes.granted.iter().filter(|v| config.is_voter(v)).count();
        let rejected = votes.rejected.iter().filter(|v| config.is_voter(v)).count();
        let pre_vote = votes.pre_vote;
        match tally(voters, granted, rejected) {
            VoteResult::Won if pre_vote => self.campaign(false, false),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.term, None),
            VoteResult::Pending => {}
        }
    }

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        let was = self.state();
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.hard_state_dirty = true;
        }
        self.abort_leader_reads();
        self.role = Role::Follower;
        self.set_leader(leader);
        self.reset_election_timeout(false);
        if was != RaftState::Follower {
            self.out
                .events
                .push(Event::StateChanged(RaftState::Follower));
        }
    }

    fn become_leader(&mut self) {
        let next = self.log.last_index().next();
        let progress = self
            .membership
            .config()
            .servers
            .iter()
            .filter(|s| s.id != self.id)
            .map(|s| (s.id.clone(), Progress::new(next)))
            .collect();
        self.role = Role::Leader(Box::new(LeaderState {
            progress,
            round: 0,
            round_ticks: [(0, self.now)].into(),
            pending_reads: Vec::new(),
            unsent_reads: Vec::new(),
            noop_index: next,
            heartbeat_elapsed: 0,
            transfer: None,
            announce_commit: false,
        }));
        self.out.events.push(Event::StateChanged(RaftState::Leader));
        self.set_leader(Some(self.id.clone()));
        // §8: a new leader commits a no-op to learn what is committed.
        let noop = self.append_entry(crate::types::EntryPayload::Blank);
        debug_assert_eq!(noop, next);
        self.maybe_commit();
    }

    /// Adds or drops follower progress to match the configuration in effect.
    pub(super) fn sync_progress_with_membership(&mut self) {
        let next = self.log.last_index().next();
        let config = self.membership.config().clone();
        let me = self.id.clone();
        let Some(l) = self.leader_state_mut() else {
            return;
        };
        l.progress.retain(|id, _| config.server(id).is_some());
        for s in &config.servers {
            if s.id != me {
                l.progress
                    .entry(s.id.clone())
                    .or_insert_with(|| Progress::new(next));
            }
        }
    }
}
