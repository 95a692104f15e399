//! The application's state machine.

use std::io::{Read, Write};

use bytes::Bytes;

use crate::types::{LogIndex, Term};

/// A committed command, handed to [`Fsm::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Its log index.
    pub index: LogIndex,
    /// Its term.
    pub term: Term,
    /// The command, as passed to `Raft::apply`. On a follower it is a
    /// slice of the network frame it arrived in (no copy is made on the
    /// way), so keeping it keeps that frame's buffer alive: copy out what
    /// the state machine keeps for long, or decode it into its own types.
    pub data: Bytes,
}

/// An error from the application's state machine.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FsmError(pub String);

impl From<std::io::Error> for FsmError {
    fn from(e: std::io::Error) -> FsmError {
        FsmError(e.to_string())
    }
}

/// A replicated state machine (HashiCorp's `FSM`, batched).
///
/// The driver calls it from one dedicated task, in log order, never
/// concurrently with itself.
pub trait Fsm: Send + 'static {
    /// What `apply` returns for each command; `Raft::apply` hands it back to
    /// the caller that proposed the command.
    type Response: Send + 'static;

    /// Applies committed commands in log order.
    ///
    /// # Contract
    /// Returns exactly one response per command, in order. Must be
    /// deterministic: every server applies the same commands and must reach
    /// the same state. Never called twice for one index.
    fn apply(&mut self, batch: &[Committed]) -> Vec<Self::Response>;

    /// Captures the current state for a snapshot.
    ///
    /// # Contract
    /// Should be quick (a copy-on-write handle or a clone); the expensive
    /// writing happens in [`FsmSnapshot::persist`] on another thread while
    /// `apply` goes on.
    fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError>;

    /// Replaces the whole state with a snapshot's.
    ///
    /// # Contract
    /// Discards the current state first; on error the node stops.
    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), FsmError>;
}

/// A point-in-time state captured by [`Fsm::snapshot`].
pub trait FsmSnapshot: Send + 'static {
    /// Writes the state out.
    fn persist(self: Box<Self>, sink: &mut dyn Write) -> Result<(), FsmError>;
}
