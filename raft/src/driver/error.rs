//! The driver's typed errors.

use std::sync::Arc;

use crate::core::ProposeError;
use crate::storage::StorageError;
use crate::types::{LogIndex, NodeId, ServerAddress};

/// Why a `Raft` call failed. Never a bare string: match on the variant.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RaftError {
    /// This server does not lead; `leader` is who does, if known.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The known leader and its address.
        leader: Option<(NodeId, ServerAddress)>,
    },
    /// Leadership was lost before the command committed; it may still take
    /// effect (outcome unknown).
    #[error("leadership lost while the command was in flight; its outcome is unknown")]
    LeadershipLost,
    /// The deadline passed; the outcome is unknown.
    #[error("timed out; the outcome is unknown")]
    Timeout,
    /// The server is shut down.
    #[error("raft is shut down")]
    Shutdown,
    /// Too many configuration changes already wait for their turn (a change
    /// otherwise waits, within its timeout, for the one before it to commit).
    #[error("a configuration change is already in progress and too many more wait")]
    ConfigChangeInProgress,
    /// `prev_index` did not match the latest configuration.
    #[error("configuration changed since index {expected} (now {actual})")]
    ConfigurationChanged {
        /// What the caller expected.
        expected: LogIndex,
        /// The latest configuration's index.
        actual: LogIndex,
    },
    /// The requested change cannot be made.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A leadership transfer is in progress.
    #[error("leadership transfer in progress")]
    LeadershipTransferInProgress,
    /// The transfer did not complete in time; the old leader resumed.
    #[error("leadership transfer did not complete")]
    LeadershipTransferFailed,
    /// Bootstrap refused: this server already has state.
    #[error("cannot bootstrap: the server already has state")]
    CantBootstrap,
    /// A user snapshot was asked for with nothing applied since the last one.
    #[error("nothing new to snapshot")]
    NothingNewToSnapshot,
    /// A storage backend failed; the node has stopped.
    #[error("storage failed: {0}")]
    Storage(Arc<StorageError>),
    /// The state machine failed; the node has stopped.
    #[error("state machine failed: {0}")]
    Fsm(String),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The stored state cannot be loaded.
    #[error("cannot restore: {0}")]
    Restore(String),
}

impl RaftError {
    pub(crate) fn from_propose(
        e: ProposeError,
        leader: Option<(NodeId, ServerAddress)>,
    ) -> RaftError {
        match e {
            ProposeError::NotLeader { .. } => RaftError::NotLeader { leader },
            ProposeError::LeadershipTransferInProgress => RaftError::LeadershipTransferInProgress,
            ProposeError::ConfigChangeInProgress => RaftError::ConfigChangeInProgress,
            ProposeError::ConfigurationChanged { expected, actual } => {
                RaftError::ConfigurationChanged { expected, actual }
            }
            ProposeError::InvalidChange(why) => RaftError::Invalid(why),
            ProposeError::CantBootstrap => RaftError::CantBootstrap,
            ProposeError::Shutdown => RaftError::Shutdown,
        }
    }
}

impl From<StorageError> for RaftError {
    fn from(e: StorageError) -> RaftError {
        RaftError::Storage(Arc::new(e))
    }
}
