//! A directed nemesis that walks the cluster into the states of the Raft
//! paper's Figure 8, where a leader could be tempted to commit an entry of an
//! earlier term by counting its replicas:
//!
//! ```text
//! 1. cut leader A off; clients' entries land on A alone (term a)      ── crash A
//! 2. B wins; cut it off before its no-op leaves (B holds index k, term b > a) ── crash B
//! 3. A restarts and wins with C's vote; A replicates its term-a entry at k
//!    to C; the moment A's commit index moves, A crashes with what it sent
//! 4. B restarts; its last term b beats C's a, so C votes for B, and B
//!    overwrites k on C. Safe only if A never committed k in step 3.
//! ```
//!
//! A correct leader commits nothing in step 3 until its own no-op (term > b)
//! is on C, after which B cannot win; a leader that counts old-term replicas
//! commits k, and step 4 removes a committed entry.

use raftkit::RaftState;

use super::{Ev, Sim};

/// Where a Figure-8 walk is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Figure8 {
    /// A is cut off, taking entries alone.
    Isolated { a: usize },
    /// A is down; waiting for another leader.
    AwaitLeader { a: usize },
    /// B won and was cut off at once.
    SecondIsolated { a: usize, b: usize },
    /// B is down, A restarted; waiting for A to commit something.
    AwaitCommit { a: usize, b: usize },
}

/// How long a walk may take before it is abandoned (virtual µs).
const WALK_US: u64 = 3_000_000;

impl Sim {
    /// Starts a walk if the cluster has a leader and every server is up.
    pub(super) fn nemesis_figure8(&mut self) {
        if self.figure8.is_some() || self.nodes.iter().any(|n| n.core.is_none()) {
            return;
        }
        let Some(a) = self.leader() else { return };
        self.heal();
        self.isolate(a);
        self.figure8 = Some(Figure8::Isolated { a });
        self.log(|| format!("figure 8: cut leader n{} off", a + 1));
        self.schedule(self.now + 30_000, Ev::Figure8Step);
        self.schedule(self.now + WALK_US, Ev::Figure8Abandon);
    }

    fn isolate(&mut self, x: usize) {
        for other in 0..self.nodes.len() {
            if other != x {
                self.cut[x][other] = true;
                self.cut[other][x] = true;
            }
        }
    }

    /// Drops every undelivered message server `x` sent.
    fn recall(&mut self, x: usize) {
        let id = self.nodes[x].id.clone();
        self.queue
            .retain(|_, ev| !matches!(ev, Ev::Deliver(m) if m.from == id));
    }

    pub(super) fn figure8_step(&mut self) {
        match self.figure8 {
            Some(Figure8::Isolated { a }) => {
                self.crash(a);
                self.heal();
                self.figure8 = Some(Figure8::AwaitLeader { a });
            }
            Some(Figure8::SecondIsolated { a, b }) => {
                self.crash(b);
                self.heal();
                self.isolate(b);
                self.figure8 = Some(Figure8::AwaitCommit { a, b });
                self.start_node(a);
            }
            _ => {}
        }
    }

    /// Called when server `i` becomes leader.
    pub(super) fn figure8_on_leader(&mut self, i: usize) {
        if let Some(Figure8::AwaitLeader { a }) = self.figure8 {
            if i != a {
                self.isolate(i);
                self.recall(i);
                self.figure8 = Some(Figure8::SecondIsolated { a, b: i });
                self.log(|| {
                    format!(
                        "figure 8: cut new leader n{} off before its no-op leaves",
                        i + 1
                    )
                });
                self.schedule(self.now + 30_000, Ev::Figure8Step);
            }
        }
    }

    /// Called when leader `i` has moved its commit index.
    pub(super) fn figure8_on_commit(&mut self, i: usize) -> bool {
        let Some(Figure8::AwaitCommit { a, b }) = self.figure8 else {
            return false;
        };
        if i != a
            || self.nodes[a]
                .core
                .as_ref()
                .is_none_or(|c| c.state() != RaftState::Leader)
        {
            return false;
        }
        self.recall(a);
        self.crash(a);
        self.heal();
        self.figure8 = None;
        self.log(|| {
            format!(
                "figure 8: n{} crashed as it committed; n{} returns",
                a + 1,
                b + 1
            )
        });
        self.start_node(b);
        let at = self.now + self.rng_range(100_000, 300_000);
        self.schedule(at, Ev::Restart(a));
        true
    }

    pub(super) fn figure8_abandon(&mut self) {
        if self.figure8.take().is_some() {
            self.heal();
            for i in 0..self.nodes.len() {
                if self.nodes[i].core.is_none() {
                    self.schedule(self.now + 1, Ev::Restart(i));
                }
            }
        }
    }
}
