//! No acknowledged write is lost: every write a client saw succeed is in the
//! committed log at the index and term it was applied with.

use raftkit::{LogIndex, Term};

use super::{Ledger, Violation};

pub(crate) fn check(acked: &[(u64, LogIndex, Term)], ledger: &Ledger, out: &mut Vec<Violation>) {
    for (op, index, term) in acked {
        match ledger.committed.get(index) {
            Some((t, _)) if t == term => {}
            other => out.push(Violation {
                invariant: "acknowledged write lost",
                detail: format!(
                    "op {op} was acknowledged at index {index} term {term}, the committed log has {:?}",
                    other.map(|(t, _)| *t)
                ),
            }),
        }
    }
}
