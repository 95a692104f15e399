//! Leader completeness (Figure 3, §5.4): a leader's log holds every entry
//! committed before its term began.

use super::{Ledger, NodeView, Violation};
use crate::sim::kv::payload_digest;

pub(crate) fn check(nodes: &[NodeView<'_>], ledger: &mut Ledger, out: &mut Vec<Violation>) {
    for n in nodes {
        let Some(core) = n.core else { continue };
        if core.state() != raftkit::RaftState::Leader {
            continue;
        }
        let key = (core.term(), core.id().clone());
        if !ledger.checked_leaders.insert(key) {
            continue;
        }
        let first = core.status().first_log_index;
        for (index, (term, digest)) in ledger.committed.range(first..) {
            let held = core.log_entries().find(|e| e.index == *index);
            let ok = held.is_some_and(|e| e.term == *term && payload_digest(e) == *digest);
            if !ok {
                out.push(Violation {
                    invariant: "leader completeness",
                    detail: format!(
                        "{} became leader of term {} without committed entry {index} (term {term}); holds {:?}",
                        core.id(),
                        core.term(),
                        held.map(|e| e.term)
                    ),
                });
                break;
            }
        }
    }
}
