//! Linearizable reads without log writes (§6.4 of Ongaro's thesis):
//! ReadIndex, batched so that one heartbeat round confirms every read
//! waiting, and lease reads that skip the round while the lease holds.
//!
//! ```text
//! read_index(id) ─▶ unsent ──ready()──▶ round r broadcast ──quorum acks r──▶ ReadState{id, commit}
//! ```

use crate::types::LogIndex;

use super::quorum::quorum_value;
use super::{Core, PendingRead, ProposeError, ReadId, ReadState, Role};

impl Core {
    /// Asks for a ReadIndex read (leader only). The read shows up in
    /// `Ready::reads` once a quorum confirmed this leader after the call.
    pub fn read_index(&mut self, id: ReadId) -> Result<(), ProposeError> {
        match &mut self.role {
            Role::Leader(l) => {
                l.unsent_reads.push(id);
                Ok(())
            }
            Role::Shutdown => Err(ProposeError::Shutdown),
            _ => Err(ProposeError::NotLeader {
                leader: self.leader.clone(),
            }),
        }
    }

    /// A lease read (leader only): served at once while the leader's lease
    /// holds, else falls back to ReadIndex.
    pub fn lease_read(&mut self, id: ReadId) -> Result<(), ProposeError> {
        let noop_committed = self
            .leader_state()
            .is_some_and(|l| l.noop_index <= self.log.committed);
        if noop_committed && self.lease_valid() {
            self.out.reads.push(ReadState {
                id,
                index: self.log.committed,
            });
            return Ok(());
        }
        self.read_index(id)
    }

    /// Whether the leader's lease holds: a quorum confirmed a round that
    /// started less than `lease_ticks` ago. Followers promised not to elect
    /// anyone else for at least `heartbeat_timeout` after hearing that round.
    ///
    /// A leadership transfer voids the lease: its target campaigns with the
    /// `leadership_transfer` flag, which followers honour despite stickiness,
    /// so another leader may commit before this one hears of it.
    pub fn lease_valid(&self) -> bool {
        match &self.role {
            Role::Leader(l) => {
                l.transfer.is_none() && self.now < self.lease_start() + self.cfg.lease_ticks
            }
            _ => false,
        }
    }

    /// The tick at which the latest round confirmed by a quorum started.
    pub(super) fn lease_start(&self) -> u64 {
        let Some(l) = self.leader_state() else {
            return 0;
        };
        let round = self.quorum_round();
        l.round_ticks
            .iter()
            .find(|(r, _)| *r >= round)
            .map_or(self.now, |(_, tick)| *tick)
    }

    /// The latest round a quorum of voters has acknowledged.
    fn quorum_round(&self) -> u64 {
        let Some(l) = self.leader_state() else {
            return 0;
        };
        let config = self.membership.config();
        let rounds: Vec<u64> = config
            .voters()
            .map(|v| {
                if *v == self.id {
                    l.round
                } else {
                    l.progress.get(v).map_or(0, |p| p.acked_round)
                }
            })
            .collect();
        // A leader that is not a voter (being removed) has only its peers.
        quorum_value(rounds, config.quorum()).unwrap_or(0)
    }

    /// Gives waiting reads a fresh round once this leader's no-op committed.
    /// Returns whether a round started.
    pub(super) fn assign_reads(&mut self) -> bool {
        let commit = self.log.committed;
        let Some(l) = self.leader_state() else {
            return false;
        };
        if l.unsent_reads.is_empty() || l.noop_index > commit {
            return false;
        }
        self.new_round();
        let Some(l) = self.leader_state_mut() else {
            return false;
        };
        let round = l.round;
        let ids = std::mem::take(&mut l.unsent_reads);
        l.pending_reads
            .extend(ids.into_iter().map(|id| PendingRead {
                id,
                index: commit,
                round,
            }));
        true
    }

    /// Releases reads whose round a quorum has confirmed, and forgets rounds
    /// no longer needed for the lease.
    pub(super) fn confirm_reads(&mut self) {
        let confirmed = self.quorum_round();
        let Some(l) = self.leader_state_mut() else {
            return;
        };
        while l.round_ticks.len() > 1 && l.round_ticks.get(1).is_some_and(|(r, _)| *r <= confirmed)
        {
            l.round_ticks.pop_front();
        }
        let mut ready = Vec::new();
        l.pending_reads.retain(|r| {
            if r.round <= confirmed {
                ready.push(ReadState {
                    id: r.id,
                    index: r.index,
                });
                false
            } else {
                true
            }
        });
        self.out.reads.extend(ready);
    }

    /// On losing leadership every waiting read fails.
    pub(super) fn abort_leader_reads(&mut self) {
        let Some(l) = self.leader_state_mut() else {
            return;
        };
        let mut aborted: Vec<ReadId> = l.pending_reads.drain(..).map(|r| r.id).collect();
        aborted.append(&mut l.unsent_reads);
        self.out.aborted_reads.extend(aborted);
    }

    /// The commit index a read would be served at now (for tests).
    pub fn read_point(&self) -> LogIndex {
        self.log.committed
    }
}
