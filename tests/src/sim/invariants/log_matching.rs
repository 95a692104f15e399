//! Log matching (Figure 3, §5.3): if two logs hold an entry with the same
//! index and term, they are identical up to it.

use std::collections::BTreeMap;

use raftkit::{LogIndex, Term};

use super::{NodeView, Violation};
use crate::sim::kv::payload_digest;

/// A server's log: index → (term, payload digest).
type Log = BTreeMap<LogIndex, (Term, u64)>;

pub(crate) fn check(nodes: &[NodeView<'_>], out: &mut Vec<Violation>) {
    let logs: Vec<(String, Log)> = nodes
        .iter()
        .filter_map(|n| n.core)
        .map(|c| {
            let log = c
                .log_entries()
                .map(|e| (e.index, (e.term, payload_digest(e))))
                .collect();
            (c.id().to_string(), log)
        })
        .collect();
    for (i, (a_id, a)) in logs.iter().enumerate() {
        for (b_id, b) in &logs[i + 1..] {
            // The highest index where both hold the same term...
            let Some(top) = a
                .iter()
                .rev()
                .find(|(idx, (t, _))| b.get(idx).is_some_and(|(bt, _)| bt == t))
                .map(|(idx, _)| *idx)
            else {
                continue;
            };
            // ...and everything both hold up to it must be identical.
            for (idx, entry) in a.range(..=top) {
                if let Some(other) = b.get(idx) {
                    if other != entry {
                        out.push(Violation {
                            invariant: "log matching",
                            detail: format!(
                                "{a_id} and {b_id} agree on term at index {top} but differ at {idx}: {entry:?} vs {other:?}"
                            ),
                        });
                        return;
                    }
                }
            }
        }
    }
}
