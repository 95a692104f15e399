//! A leader's view of one follower: how far its log matches, what to send
//! next, and how many messages are in flight (etcd's `tracker.Progress`).
//!
//! ```text
//!            reject / unreachable
//!   Probe ◀──────────────────────── Replicate
//!     │  success                        ▲
//!     └─────────────────────────────────┘
//!     │ next below the compaction point
//!     ▼
//!   Snapshot ── InstallSnapshot response / failure ──▶ Probe
//! ```

use std::collections::VecDeque;

use crate::types::LogIndex;

/// How the leader is sending to a follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ProgressState {
    /// Unsure where the logs match: one message at a time.
    Probe {
        /// A probe is outstanding; wait for its answer or a heartbeat reply.
        paused: bool,
    },
    /// Logs match up to `match_index`: stream optimistically, up to the window.
    Replicate,
    /// A snapshot ending at `index` is being streamed.
    Snapshot {
        /// Its last index.
        index: LogIndex,
        /// The leader's tick when it was sent, to give up on a lost one.
        since: u64,
    },
}

/// One follower's replication state.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub(crate) match_index: LogIndex,
    pub(crate) next_index: LogIndex,
    pub(crate) state: ProgressState,
    /// Last index of each AppendEntries in flight (Replicate only).
    pub(crate) inflight: VecDeque<LogIndex>,
    /// Highest heartbeat round the follower has answered.
    pub(crate) acked_round: u64,
    /// The commit index last sent.
    pub(crate) sent_commit: LogIndex,
    /// Whether anything was sent to it in the Ready being built.
    pub(crate) sent_this_ready: bool,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex) -> Progress {
        Progress {
            match_index: LogIndex::ZERO,
            next_index,
            state: ProgressState::Probe { paused: false },
            inflight: VecDeque::new(),
            acked_round: 0,
            sent_commit: LogIndex::ZERO,
            sent_this_ready: false,
        }
    }

    /// Whether another AppendEntries with entries may go now.
    pub(crate) fn can_send(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe { paused } => !paused,
            ProgressState::Replicate => self.inflight.len() < max_inflight,
            ProgressState::Snapshot { .. } => false,
        }
    }

    /// Records that entries up to `last` went out.
    pub(crate) fn sent(&mut self, last: LogIndex) {
        match self.state {
            ProgressState::Probe { .. } => self.state = ProgressState::Probe { paused: true },
            ProgressState::Replicate => {
                self.next_index = last.next();
                self.inflight.push_back(last);
            }
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// A success up to `index`. Returns whether the match index moved.
    pub(crate) fn on_success(&mut self, index: LogIndex) -> bool {
        let moved = index > self.match_index;
        if moved {
            self.match_index = index;
        }
        self.next_index = self.next_index.max(index.next());
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        match self.state {
            ProgressState::Probe { .. } => self.become_replicate(),
            ProgressState::Snapshot { index: snap, .. } if self.match_index >= snap => {
                self.become_replicate()
            }
            _ => {}
        }
        moved
    }

    /// A rejection of `rejected` (the prev index tried) with the next index to
    /// probe. Returns false for a stale rejection, which is ignored.
    /// `follower_last` is the follower's hint of its own log end, if any.
    pub(crate) fn on_reject(
        &mut self,
        rejected: LogIndex,
        probe_next: LogIndex,
        follower_last: Option<LogIndex>,
    ) -> bool {
        match self.state {
            ProgressState::Replicate if rejected <= self.match_index => false,
            ProgressState::Probe { .. } if rejected != self.next_index.prev() => false,
            // The follower already holds the snapshot (its answer to the
            // InstallSnapshot may have been lost): probe from its log end.
            ProgressState::Snapshot { index, .. } if follower_last.is_some_and(|l| l >= index) => {
                self.next_index = probe_next.min(rejected).max(self.match_index.next());
                self.become_probe();
                true
            }
            ProgressState::Snapshot { .. } => false,
            _ => {
                self.next_index = probe_next.min(rejected).max(self.match_index.next());
                self.become_probe();
                true
            }
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ProgressState::Probe { paused: false };
        self.next_index = self.next_index.max(self.match_index.next());
        self.inflight.clear();
    }

    fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index.next();
        self.inflight.clear();
    }

    pub(crate) fn become_snapshot(&mut self, index: LogIndex, now: u64) {
        self.state = ProgressState::Snapshot { index, since: now };
        self.inflight.clear();
    }

    /// Whether the follower should be told of `commit`: it has not been
    /// told of it up to what its log can hold, and it is not receiving a
    /// snapshot. `flush_leader` and `has_ready` share this, so a `Ready`
    /// is never promised and then found empty.
    pub(crate) fn needs_commit(&self, commit: LogIndex) -> bool {
        !matches!(self.state, ProgressState::Snapshot { .. })
            && self.sent_commit < commit.min(self.match_index.max(self.next_index.prev()))
    }

    /// A heartbeat answer unblocks a paused probe.
    pub(crate) fn resume(&mut self) {
        if let ProgressState::Probe { paused: true } = self.state {
            self.state = ProgressState::Probe { paused: false };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_sends_one_then_pauses_until_answered() {
        let mut p = Progress::new(LogIndex(5));
        assert!(p.can_send(4));
        p.sent(LogIndex(7));
        assert!(!p.can_send(4), "a probe must wait for its answer");
        p.resume();
        assert!(p.can_send(4));
    }

    #[test]
    fn replicate_window_limits_inflight_messages() {
        let mut p = Progress::new(LogIndex(1));
        p.on_success(LogIndex(0));
        assert_eq!(p.state, ProgressState::Replicate);
        p.sent(LogIndex(2));
        p.sent(LogIndex(4));
        assert!(!p.can_send(2));
        p.on_success(LogIndex(2));
        assert!(p.can_send(2));
        assert_eq!(p.next_index, LogIndex(5));
    }

    #[test]
    fn stale_rejection_is_ignored() {
        let mut p = Progress::new(LogIndex(1));
        p.on_success(LogIndex(10));
        assert!(
            !p.on_reject(LogIndex(8), LogIndex(3), None),
            "rejection below match must be stale"
        );
        assert!(p.on_reject(LogIndex(11), LogIndex(11), None));
        assert_eq!(p.state, ProgressState::Probe { paused: false });
        assert_eq!(p.next_index, LogIndex(11));
    }

    #[test]
    fn a_follower_that_holds_the_snapshot_leaves_snapshot_state() {
        let mut p = Progress::new(LogIndex(1));
        p.become_snapshot(LogIndex(50), 0);
        assert!(
            !p.on_reject(LogIndex(60), LogIndex(40), Some(LogIndex(40))),
            "still below the snapshot"
        );
        assert!(
            p.on_reject(LogIndex(60), LogIndex(51), Some(LogIndex(50))),
            "its log reaches the snapshot"
        );
        assert_eq!(
            (p.state.clone(), p.next_index),
            (ProgressState::Probe { paused: false }, LogIndex(51))
        );
    }

    #[test]
    fn rejection_never_moves_next_below_match() {
        let mut p = Progress::new(LogIndex(1));
        p.on_success(LogIndex(10));
        p.sent(LogIndex(20));
        assert!(p.on_reject(LogIndex(20), LogIndex(2), None));
        assert_eq!(p.next_index, LogIndex(11));
    }
}
