//! Within one life of a server its term, commit index and applied index
//! never decrease. (Across a crash the term may fall back to the last one
//! made durable; nothing was sent on the lost one, which the durability
//! checks of the other invariants cover.)

use super::{Ledger, Marks, NodeView, Violation};

pub(crate) fn check(nodes: &[NodeView<'_>], ledger: &mut Ledger, out: &mut Vec<Violation>) {
    for n in nodes {
        let Some(core) = n.core else { continue };
        let s = core.status();
        let m = &mut ledger.marks[n.idx];
        if m.incarnation == n.incarnation {
            if s.term < m.term {
                out.push(Violation {
                    invariant: "monotonic term",
                    detail: format!("{} went from term {} to {}", s.id, m.term, s.term),
                });
            }
            if s.commit_index < m.commit {
                out.push(Violation {
                    invariant: "monotonic commit",
                    detail: format!(
                        "{} commit went from {} to {}",
                        s.id, m.commit, s.commit_index
                    ),
                });
            }
            if s.applied_index < m.applied {
                out.push(Violation {
                    invariant: "monotonic applied",
                    detail: format!(
                        "{} applied went from {} to {}",
                        s.id, m.applied, s.applied_index
                    ),
                });
            }
        } else {
            *m = Marks {
                incarnation: n.incarnation,
                ..Marks::default()
            };
        }
        m.term = s.term;
        m.commit = s.commit_index;
        m.applied = s.applied_index;
    }
}
