//! Leadership transfer (§3.10 of Ongaro's thesis): stop taking proposals,
//! catch the target up, send it TimeoutNow; give up after an election
//! timeout and lead on.

use crate::message::MessageBody;
use crate::types::NodeId;

use super::{Core, ProposeError};

/// A transfer under way.
#[derive(Debug, Clone)]
pub(super) struct Transfer {
    pub(super) target: NodeId,
    /// The tick at which it is abandoned.
    pub(super) deadline: u64,
    /// TimeoutNow has gone out.
    pub(super) sent: bool,
}

impl Core {
    /// Starts handing leadership to `target`, or to the most up-to-date voter.
    /// Returns the chosen target.
    pub fn transfer_leadership(&mut self, target: Option<NodeId>) -> Result<NodeId, ProposeError> {
        let l = self.leader_for_proposals()?;
        let config = self.membership.config();
        let target = match target {
            Some(t) if t == self.id => {
                return Err(ProposeError::InvalidChange(
                    "cannot transfer leadership to itself".into(),
                ))
            }
            Some(t) if !config.is_voter(&t) => {
                return Err(ProposeError::InvalidChange(format!("{t} is not a voter")))
            }
            Some(t) => t,
            None => config
                .voters()
                .filter(|v| **v != self.id)
                .max_by_key(|v| l.progress.get(*v).map_or(0, |p| p.match_index.0))
                .cloned()
                .ok_or_else(|| {
                    ProposeError::InvalidChange("no other voter to transfer to".into())
                })?,
        };
        let deadline = self.now + self.cfg.election_ticks;
        if let Some(l) = self.leader_state_mut() {
            l.transfer = Some(Transfer {
                target: target.clone(),
                deadline,
                sent: false,
            });
        }
        let caught_up = self
            .leader_state()
            .and_then(|l| l.progress.get(&target))
            .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.maybe_send_timeout_now(&target);
        }
        Ok(target)
    }

    /// Sends TimeoutNow once the transfer target holds the whole log.
    pub(super) fn maybe_send_timeout_now(&mut self, peer: &NodeId) {
        let Some(l) = self.leader_state_mut() else {
            return;
        };
        let Some(t) = l.transfer.as_mut() else { return };
        if &t.target != peer || t.sent {
            return;
        }
        t.sent = true;
        self.send(peer.clone(), MessageBody::TimeoutNow);
    }

    pub(super) fn handle_timeout_now(&mut self, from: NodeId) {
        if !self.is_voter() || matches!(self.role, super::Role::Leader(_)) {
            return;
        }
        tracing::debug!(id = %self.id, %from, "TimeoutNow: campaigning at once");
        self.campaign(false, true);
    }

    /// The target of the ongoing leadership transfer, if any.
    pub fn transfer_target(&self) -> Option<&NodeId> {
        self.leader_state()
            .and_then(|l| l.transfer.as_ref())
            .map(|t| &t.target)
    }
}
