//! Election safety (Figure 3): at most one leader per term.

use raftkit::RaftState;

use super::{Ledger, NodeView, Violation};

pub(crate) fn check(nodes: &[NodeView<'_>], ledger: &mut Ledger, out: &mut Vec<Violation>) {
    for n in nodes {
        let Some(core) = n.core else { continue };
        if core.state() != RaftState::Leader {
            continue;
        }
        let term = core.term();
        match ledger.leaders.get(&term) {
            Some(other) if other != core.id() => out.push(Violation {
                invariant: "election safety",
                detail: format!("two leaders in term {term}: {other} and {}", core.id()),
            }),
            Some(_) => {}
            None => {
                ledger.leaders.insert(term, core.id().clone());
            }
        }
    }
}
