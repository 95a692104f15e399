//! Safety invariants, one file each, checked after every simulation step.
//!
//! Each checker reads the servers' views and a [`Ledger`] of what the run
//! has established so far (leaders per term, committed and applied entries)
//! and reports [`Violation`]s. Figure 3 of the Raft paper lists the
//! properties; §5.4.3 argues them.

use std::collections::{BTreeMap, BTreeSet};

use raftkit::{Core, LogIndex, NodeId, Term};

pub(crate) mod acked_writes;
pub(crate) mod election_safety;
pub(crate) mod leader_completeness;
pub(crate) mod log_matching;
pub(crate) mod monotonic;
pub(crate) mod state_machine_safety;

/// One server as the checkers see it.
pub(crate) struct NodeView<'a> {
    pub(crate) idx: usize,
    pub(crate) incarnation: u64,
    pub(crate) core: Option<&'a Core>,
}

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

/// Per-server marks for monotonicity.
#[derive(Clone, Debug, Default)]
pub(crate) struct Marks {
    pub(crate) incarnation: u64,
    pub(crate) term: Term,
    pub(crate) commit: LogIndex,
    pub(crate) applied: LogIndex,
    /// Highest commit index already copied into the ledger.
    pub(crate) recorded_commit: LogIndex,
}

/// What the run has established so far.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// The leader of each term seen.
    pub(crate) leaders: BTreeMap<Term, NodeId>,
    /// Leaders already checked for completeness.
    pub(crate) checked_leaders: BTreeSet<(Term, NodeId)>,
    /// Committed entries: index → (term, payload digest).
    pub(crate) committed: BTreeMap<LogIndex, (Term, u64)>,
    /// Applied entries: index → (term, payload digest).
    pub(crate) applied: BTreeMap<LogIndex, (Term, u64)>,
    /// Per-server marks.
    pub(crate) marks: Vec<Marks>,
}

/// Runs every per-step checker.
pub(crate) fn check_all(
    nodes: &[NodeView<'_>],
    ledger: &mut Ledger,
    full: bool,
    out: &mut Vec<Violation>,
) {
    election_safety::check(nodes, ledger, out);
    monotonic::check(nodes, ledger, out);
    state_machine_safety::record_commits(nodes, ledger, out);
    leader_completeness::check(nodes, ledger, out);
    if full {
        log_matching::check(nodes, out);
    }
}
