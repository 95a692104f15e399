//! State machine safety (Figure 3): no two servers commit or apply different
//! entries at one index; each server applies every index once, in order.

use raftkit::{LogIndex, Term};

use super::{Ledger, NodeView, Violation};
use crate::sim::kv::payload_digest;

/// Copies each server's newly committed entries into the ledger, checking
/// them against what was committed before at the same index.
pub(crate) fn record_commits(
    nodes: &[NodeView<'_>],
    ledger: &mut Ledger,
    out: &mut Vec<Violation>,
) {
    for n in nodes {
        let Some(core) = n.core else { continue };
        let commit = core.status().commit_index;
        let from = ledger.marks[n.idx].recorded_commit;
        if commit <= from {
            continue;
        }
        for e in core
            .log_entries()
            .filter(|e| e.index > from && e.index <= commit)
        {
            let digest = payload_digest(e);
            match ledger.committed.get(&e.index) {
                Some(&(t, d)) if (t, d) != (e.term, digest) => out.push(Violation {
                    invariant: "state machine safety",
                    detail: format!(
                        "{} committed index {} term {} but term {} was committed there before",
                        core.id(),
                        e.index,
                        e.term,
                        t
                    ),
                }),
                Some(_) => {}
                None => {
                    ledger.committed.insert(e.index, (e.term, digest));
                }
            }
        }
        ledger.marks[n.idx].recorded_commit = commit;
    }
}

/// Records that server `idx` applied `(index, term)`; `previous` is the index
/// it had applied before.
pub(crate) fn record_apply(
    ledger: &mut Ledger,
    who: &str,
    previous: LogIndex,
    index: LogIndex,
    term: Term,
    digest: u64,
    out: &mut Vec<Violation>,
) {
    if index != previous.next() {
        out.push(Violation {
            invariant: "apply order",
            detail: format!("{who} applied index {index} right after {previous}"),
        });
    }
    match ledger.applied.get(&index) {
        Some(&(t, d)) if (t, d) != (term, digest) => out.push(Violation {
            invariant: "state machine safety",
            detail: format!(
                "{who} applied index {index} term {term}, another server applied term {t} there"
            ),
        }),
        Some(_) => {}
        None => {
            ledger.applied.insert(index, (term, digest));
        }
    }
    // Applied implies committed: record it even if compaction hid it from
    // `record_commits`.
    match ledger.committed.get(&index) {
        Some(&(t, d)) if (t, d) != (term, digest) => out.push(Violation {
            invariant: "state machine safety",
            detail: format!(
                "{who} applied index {index} term {term}, but term {t} was committed there"
            ),
        }),
        Some(_) => {}
        None => {
            ledger.committed.insert(index, (term, digest));
        }
    }
}
