//! Round-trip time of AppendEntries per peer, for
//! `raft_replication_append_entries_duration_seconds{peer}`: the leader notes
//! when each request left and observes the time when its response arrives.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::message::{Message, MessageBody};
use crate::types::{LogIndex, NodeId};

/// Requests remembered per peer; older ones (whose answers were lost) are
/// forgotten first.
const MAX_OUTSTANDING: usize = 512;

/// A request that left: its round, the index before its entries, the index
/// of its last entry, and when.
type Sent = (u64, LogIndex, LogIndex, Instant);

#[derive(Default)]
pub(crate) struct AppendTimer {
    sent: HashMap<NodeId, VecDeque<Sent>>,
}

impl AppendTimer {
    /// Notes the AppendEntries requests among `msgs`, about to be sent.
    pub(crate) fn sending(&mut self, msgs: &[Message]) {
        let now = Instant::now();
        for m in msgs {
            if let MessageBody::AppendEntriesRequest(req) = &m.body {
                let last = req.entries.last().map_or(req.prev_log_index, |e| e.index);
                let queue = self.sent.entry(m.to.clone()).or_default();
                if queue.len() == MAX_OUTSTANDING {
                    queue.pop_front();
                }
                queue.push_back((req.round, req.prev_log_index, last, now));
            }
        }
    }

    /// Observes the round trip of the request `m` answers, if `m` is an
    /// AppendEntries response to one of ours. Requests older than it were
    /// answered out of order or lost; they are forgotten.
    pub(crate) fn received(&mut self, m: &Message) {
        let MessageBody::AppendEntriesResponse(resp) = &m.body else {
            return;
        };
        let Some(queue) = self.sent.get_mut(&m.from) else {
            return;
        };
        let answers = |s: &Sent| {
            s.0 == resp.round
                && if resp.success {
                    s.2 == resp.index
                } else {
                    s.1 == resp.index
                }
        };
        if let Some(at) = queue.iter().position(answers) {
            let sent = queue[at].3;
            queue.drain(..=at);
            metrics::histogram!(
                "raft_replication_append_entries_duration_seconds",
                "peer" => m.from.to_string()
            )
            .record(sent.elapsed().as_secs_f64());
        }
    }

    /// Forgets everything (this server stopped leading).
    pub(crate) fn clear(&mut self) {
        self.sent.clear();
    }
}
