//! Snapshots (§7): when to take one, compaction after it, and installing one
//! received from the leader.
//!
//! ```text
//! applied - snapshot ≥ threshold ─▶ Ready.create_snapshot ─▶ driver snapshots FSM
//!        ◀── on_snapshot_created(meta) ── compact log to meta.index - trailing_logs, Ready.purge_upto
//! leader: follower's next entry compacted ─▶ Ready.send_snapshots ─▶ driver streams it
//! follower: data stored ─▶ step(InstallSnapshotRequest) ─▶ Ready.install_snapshot (+ response after persist)
//! ```

use crate::message::{InstallSnapshotResponse, MessageBody};
use crate::storage::SnapshotMeta;
use crate::types::{LogIndex, NodeId, ServerAddress};

use super::{Core, Event, ProgressState, Role};

impl Core {
    /// Asks for a snapshot now (HashiCorp's user snapshot). Returns false if
    /// nothing was applied since the last one.
    pub fn request_snapshot(&mut self) -> bool {
        let last = self.snapshot.as_ref().map_or(LogIndex::ZERO, |s| s.index);
        if self.applied <= last {
            return false;
        }
        self.snapshot_requested = true;
        self.maybe_request_snapshot();
        true
    }

    pub(super) fn maybe_request_snapshot(&mut self) {
        if self.snapshot_in_progress || matches!(self.role, Role::Shutdown) {
            return;
        }
        let last = self.snapshot.as_ref().map_or(LogIndex::ZERO, |s| s.index);
        let due =
            self.now.saturating_sub(self.last_snapshot_check) >= self.cfg.snapshot_interval_ticks;
        if due {
            self.last_snapshot_check = self.now;
        }
        let over_threshold = self.applied.0.saturating_sub(last.0) >= self.cfg.snapshot_threshold;
        if self.snapshot_requested || (due && over_threshold) {
            self.snapshot_requested = false;
            self.snapshot_in_progress = true;
            self.out.create_snapshot = true;
        }
    }

    /// The driver finished a snapshot: compact the log behind it, keeping
    /// `trailing_logs` entries for followers slightly behind.
    pub fn on_snapshot_created(&mut self, meta: SnapshotMeta) {
        self.snapshot_in_progress = false;
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.index >= meta.index)
        {
            return;
        }
        let upto = LogIndex(meta.index.0.saturating_sub(self.cfg.trailing_logs));
        self.snapshot = Some(meta);
        if upto > self.log.offset() {
            self.log.compact(upto);
            self.membership.compact(upto);
            self.out.purge_upto = Some(self.log.offset());
        }
    }

    /// The driver could not create the snapshot it was asked for.
    pub fn on_snapshot_failed(&mut self) {
        self.snapshot_in_progress = false;
    }

    /// Streaming a snapshot to `peer` failed; it will be retried.
    pub fn on_snapshot_send_failed(&mut self, peer: &NodeId) {
        if let Some(p) = self
            .leader_state_mut()
            .and_then(|l| l.progress.get_mut(peer))
        {
            if matches!(p.state, ProgressState::Snapshot { .. }) {
                p.become_probe();
            }
        }
    }

    pub(super) fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        _addr: ServerAddress,
        meta: SnapshotMeta,
    ) {
        if !matches!(self.role, Role::Follower) {
            self.become_follower(self.term, Some(from.clone()));
        }
        self.set_leader(Some(from.clone()));
        self.election_elapsed = 0;
        let index = if meta.index <= self.log.committed {
            self.log.committed
        } else if self.log.matches(meta.index, meta.term) {
            // We hold the entry: keep the log after it, it all matches (§7).
            self.log.commit_to(meta.index);
            meta.index
        } else {
            self.log.reset(meta.index, meta.term);
            self.membership
                .reset(meta.configuration_index, meta.configuration.clone());
            self.out.events.push(Event::ConfigurationChanged {
                index: meta.configuration_index,
                configuration: meta.configuration.clone(),
            });
            self.applied = self.applied.max(meta.index);
            self.snapshot = Some(meta.clone());
            self.out.install_snapshot = Some(meta.clone());
            meta.index
        };
        let resp = InstallSnapshotResponse {
            success: true,
            index,
        };
        self.send_after_persist(from, MessageBody::InstallSnapshotResponse(resp));
    }

    pub(super) fn handle_install_snapshot_response(
        &mut self,
        from: NodeId,
        resp: InstallSnapshotResponse,
    ) {
        let Some(p) = self
            .leader_state_mut()
            .and_then(|l| l.progress.get_mut(&from))
        else {
            return;
        };
        if resp.success {
            if p.on_success(resp.index) {
                self.maybe_commit();
            }
        } else {
            p.become_probe();
        }
    }
}
