//! The messages Raft servers exchange (the paper's RPCs, as one-way messages).
//!
//! Requests and responses are separate messages: a transport only moves them,
//! in order per peer, and never waits for a reply. Every message carries the
//! sender's term in its envelope; the core applies the term rules of §5.1 to
//! the envelope before looking at the body.

use serde::{Deserialize, Serialize};

use crate::storage::SnapshotMeta;
use crate::types::{Entry, LogIndex, NodeId, ServerAddress, Term};

/// One message from one server to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// Where the sender listens, so that a server can answer a peer that is
    /// not yet in its configuration (a new leader, a joining server's first probe).
    pub from_addr: ServerAddress,
    /// The recipient.
    pub to: NodeId,
    /// The sender's current term (for a pre-vote request: the term it would campaign in).
    pub term: Term,
    /// What it says.
    pub body: MessageBody,
}

/// The kinds of message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Leader → follower: replicate entries, or a heartbeat when `entries` is empty.
    AppendEntriesRequest(AppendEntriesRequest),
    /// Follower → leader: the outcome of an `AppendEntriesRequest`.
    AppendEntriesResponse(AppendEntriesResponse),
    /// Candidate → voter: a vote request, or a pre-vote probe (§9.6 of the thesis).
    RequestVoteRequest(RequestVoteRequest),
    /// Voter → candidate.
    RequestVoteResponse(RequestVoteResponse),
    /// Leader → follower: the snapshot described here has been streamed to
    /// the follower's snapshot store; install it. The driver of the receiving
    /// side steps this message into its core once the data is stored.
    InstallSnapshotRequest(InstallSnapshotRequest),
    /// Follower → leader: the outcome of an `InstallSnapshotRequest`.
    InstallSnapshotResponse(InstallSnapshotResponse),
    /// Leader → its chosen successor: start an election now (leadership transfer).
    TimeoutNow,
}

impl MessageBody {
    /// A short name for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageBody::AppendEntriesRequest(r) if r.entries.is_empty() => "heartbeat",
            MessageBody::AppendEntriesRequest(_) => "append_entries",
            MessageBody::AppendEntriesResponse(_) => "append_entries_response",
            MessageBody::RequestVoteRequest(r) if r.pre_vote => "pre_vote",
            MessageBody::RequestVoteRequest(_) => "request_vote",
            MessageBody::RequestVoteResponse(_) => "request_vote_response",
            MessageBody::InstallSnapshotRequest(_) => "install_snapshot",
            MessageBody::InstallSnapshotResponse(_) => "install_snapshot_response",
            MessageBody::TimeoutNow => "timeout_now",
        }
    }
}

/// Figure 2's AppendEntries arguments, plus a round number for reads and leases.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntriesRequest {
    /// Index of the entry just before `entries`.
    pub prev_log_index: LogIndex,
    /// Term of that entry.
    pub prev_log_term: Term,
    /// Entries to store, in index order (empty for a heartbeat).
    pub entries: Vec<Entry>,
    /// The leader's commit index.
    pub leader_commit: LogIndex,
    /// The leader's heartbeat round when it sent this; echoed in the response.
    /// A response proves the follower still followed the leader in that round
    /// (ReadIndex and lease reads count these).
    pub round: u64,
}

/// The reply to an [`AppendEntriesRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntriesResponse {
    /// Whether the follower's log matched at `prev_log_index`.
    pub success: bool,
    /// On success: the index of the last entry the request made durable
    /// (the follower's match index). On rejection: the `prev_log_index` rejected.
    pub index: LogIndex,
    /// On rejection: where the leader should probe next (the fast backtracking
    /// of §5.3): the follower's last index, or the first index of the
    /// conflicting term, with the term the follower has there.
    pub hint: Option<(LogIndex, Term)>,
    /// The request's `round`.
    pub round: u64,
}

/// Figure 2's RequestVote arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestVoteRequest {
    /// Index of the candidate's last log entry.
    pub last_log_index: LogIndex,
    /// Term of that entry.
    pub last_log_term: Term,
    /// A pre-vote: would you vote for me? Changes no state on the voter.
    pub pre_vote: bool,
    /// Sent after `TimeoutNow`: voters must not ignore it for having a leader.
    pub leadership_transfer: bool,
}

/// The reply to a [`RequestVoteRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestVoteResponse {
    /// Whether the vote (or pre-vote) was granted.
    pub granted: bool,
    /// Whether this answers a pre-vote.
    pub pre_vote: bool,
}

/// "Install the snapshot you have received."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshotRequest {
    /// What the snapshot holds.
    pub meta: SnapshotMeta,
}

/// The reply to an [`InstallSnapshotRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshotResponse {
    /// Whether the follower now holds the log up to `index`.
    pub success: bool,
    /// The follower's last log index after handling the request.
    pub index: LogIndex,
}
