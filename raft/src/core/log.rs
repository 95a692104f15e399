//! The core's view of the log: the entries since the last compaction point,
//! in memory, with how far they are durable, committed and handed to apply.
//!
//! ```text
//!   offset     persisted          committed            last
//!     │ compacted │◀── durable ──▶│                    │
//!     ▼           ▼               ▼                    ▼
//!  ───┼───────────┼───────────────┼────────────────────┼──
//!     └ entries[0] = offset + 1                         └ entries.back()
//! ```
//!
//! Storage mirrors this log: the driver appends what [`RaftLog::take_unstable`]
//! hands out and reports back with `stable_to`. The core never reads storage
//! after start, so everything it may need to send (back to the compaction
//! point, `trailing_logs` behind the snapshot) stays here.

use std::collections::VecDeque;

use crate::types::{Entry, LogIndex, Term};

/// Entries since the compaction point, plus durability bookkeeping.
#[derive(Debug)]
pub(crate) struct RaftLog {
    entries: VecDeque<Entry>,
    /// The index before `entries[0]` (compaction point or snapshot index).
    offset: LogIndex,
    /// The term at `offset`.
    offset_term: Term,
    /// The last index known durable in storage.
    persisted: LogIndex,
    /// The last index handed to the driver for persisting.
    handed: LogIndex,
    /// The lowest index to truncate in storage before the next append.
    truncate_from: Option<LogIndex>,
    /// The highest index known committed.
    pub(crate) committed: LogIndex,
    /// The highest index handed to the driver for applying.
    pub(crate) applying: LogIndex,
}

impl RaftLog {
    /// A log restored from storage: everything given is already durable.
    /// With `truncate_stored`, storage holds entries from that index on that
    /// must go: the first `ready` asks the driver to truncate them.
    pub(crate) fn restore(
        offset: LogIndex,
        offset_term: Term,
        entries: Vec<Entry>,
        truncate_stored: Option<LogIndex>,
    ) -> RaftLog {
        let last = entries.last().map_or(offset, |e| e.index);
        RaftLog {
            entries: entries.into(),
            offset,
            offset_term,
            persisted: last,
            handed: last,
            truncate_from: truncate_stored,
            committed: offset,
            applying: offset,
        }
    }

    pub(crate) fn offset(&self) -> LogIndex {
        self.offset
    }

    pub(crate) fn first_index(&self) -> LogIndex {
        self.offset.next()
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.entries.back().map_or(self.offset, |e| e.index)
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.back().map_or(self.offset_term, |e| e.term)
    }

    pub(crate) fn persisted(&self) -> LogIndex {
        self.persisted
    }

    /// The term of the entry at `index`, if the log still knows it.
    pub(crate) fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.offset {
            return Some(self.offset_term);
        }
        self.get(index).map(|e| e.term)
    }

    pub(crate) fn get(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.offset {
            return None;
        }
        self.entries.get((index.0 - self.offset.0 - 1) as usize)
    }

    /// Whether `(index, term)` is at least as up to date as our last entry (§5.4.1).
    pub(crate) fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    pub(crate) fn matches(&self, index: LogIndex, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Appends an entry created by this node as leader.
    pub(crate) fn append(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index().next());
        self.entries.push_back(entry);
    }

    /// Merges entries from a leader after `prev` matched: skips those we
    /// already hold, truncates at the first conflict (§5.3), appends the rest.
    /// Returns the index where a truncation happened, if any.
    pub(crate) fn merge(&mut self, entries: Vec<Entry>) -> Option<LogIndex> {
        let mut truncated = None;
        let mut iter = entries.into_iter().peekable();
        while let Some(e) = iter.peek() {
            if e.index <= self.offset {
                iter.next();
                continue;
            }
            match self.term(e.index) {
                Some(t) if t == e.term => {
                    iter.next();
                }
                Some(_) => {
                    truncated = Some(e.index);
                    self.truncate(e.index);
                    break;
                }
                None => break,
            }
        }
        for e in iter {
            self.entries.push_back(e);
        }
        truncated
    }

    /// Drops every entry with `index >= from` (never committed ones).
    fn truncate(&mut self, from: LogIndex) {
        debug_assert!(from > self.committed, "truncating committed entry {from}");
        let keep = (from.0 - self.offset.0 - 1) as usize;
        self.entries.truncate(keep);
        if from <= self.handed {
            self.truncate_from = Some(self.truncate_from.map_or(from, |t| t.min(from)));
            self.handed = from.prev();
        }
        self.persisted = self.persisted.min(from.prev());
    }

    /// Entries `from..=to` (clamped to what is held), at most `max_count`
    /// and, past the first, at most `max_bytes` of payload.
    pub(crate) fn slice(
        &self,
        from: LogIndex,
        to: LogIndex,
        max_count: usize,
        max_bytes: usize,
    ) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut i = from.max(self.first_index());
        while i <= to && out.len() < max_count {
            let Some(e) = self.get(i) else { break };
            bytes += e.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
            i = i.next();
        }
        out
    }

    /// What the driver must persist now: a truncation point and new entries.
    pub(crate) fn take_unstable(&mut self) -> (Option<LogIndex>, Vec<Entry>) {
        let from = self.handed.next();
        let last = self.last_index();
        let entries = if from <= last {
            self.slice(from, last, usize::MAX, usize::MAX)
        } else {
            Vec::new()
        };
        self.handed = last;
        (self.truncate_from.take(), entries)
    }

    pub(crate) fn has_unstable(&self) -> bool {
        self.truncate_from.is_some() || self.handed < self.last_index()
    }

    /// The driver made entries up to `(index, term)` durable. Ignored when a
    /// truncation replaced that entry since (the term no longer matches):
    /// within one term a leader creates one entry per index, so a matching
    /// term means the very entry that was persisted.
    pub(crate) fn stable_to(&mut self, index: LogIndex, term: Term) -> bool {
        if index > self.persisted && index <= self.handed && self.term(index) == Some(term) {
            self.persisted = index;
            return true;
        }
        false
    }

    /// Advances the commit index; never moves it back.
    pub(crate) fn commit_to(&mut self, index: LogIndex) -> bool {
        let index = index.min(self.last_index());
        if index > self.committed {
            self.committed = index;
            return true;
        }
        false
    }

    /// Committed, durable entries not yet handed to apply, at most `max`.
    pub(crate) fn take_committed(&mut self, max: usize) -> Vec<Entry> {
        let upto = self.committed.min(self.persisted);
        if upto <= self.applying {
            return Vec::new();
        }
        let out = self.slice(self.applying.next(), upto, max, usize::MAX);
        if let Some(last) = out.last() {
            self.applying = last.index;
        }
        out
    }

    pub(crate) fn has_committed(&self) -> bool {
        self.committed.min(self.persisted) > self.applying
    }

    /// Forgets entries up to `upto` (they are in a snapshot now).
    pub(crate) fn compact(&mut self, upto: LogIndex) {
        if upto <= self.offset || upto > self.applying {
            return;
        }
        let Some(term) = self.term(upto) else { return };
        let n = (upto.0 - self.offset.0) as usize;
        self.entries.drain(..n);
        self.offset = upto;
        self.offset_term = term;
    }

    /// Replaces the whole log by a snapshot's end point (a follower installing
    /// a snapshot it has no matching entry for). The snapshot is durable.
    pub(crate) fn reset(&mut self, index: LogIndex, term: Term) {
        self.entries.clear();
        self.offset = index;
        self.offset_term = term;
        self.persisted = index;
        self.handed = index;
        self.truncate_from = None;
        self.committed = index;
        self.applying = index;
    }

    /// Every entry held.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// The entries held from `index` on.
    pub(crate) fn entries_from(&self, index: LogIndex) -> impl Iterator<Item = &Entry> {
        let skip = index.0.saturating_sub(self.offset.0 + 1) as usize;
        self.entries.range(skip.min(self.entries.len())..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryPayload;

    fn e(index: u64, term: u64) -> Entry {
        Entry {
            index: LogIndex(index),
            term: Term(term),
            payload: EntryPayload::Blank,
        }
    }

    #[test]
    fn merge_skips_matching_and_truncates_at_conflict() {
        let mut log = RaftLog::restore(LogIndex(0), Term(0), vec![e(1, 1), e(2, 1), e(3, 1)], None);
        assert_eq!(
            log.merge(vec![e(2, 1), e(3, 2), e(4, 2)]),
            Some(LogIndex(3))
        );
        assert_eq!(log.last_index(), LogIndex(4));
        assert_eq!(log.term(LogIndex(3)), Some(Term(2)));
        let (trunc, entries) = log.take_unstable();
        assert_eq!(trunc, Some(LogIndex(3)));
        assert_eq!(
            entries.iter().map(|e| e.index.0).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert_eq!(log.persisted(), LogIndex(2));
    }

    #[test]
    fn stale_persist_ack_after_truncation_is_ignored() {
        let mut log = RaftLog::restore(LogIndex(0), Term(0), vec![], None);
        log.merge(vec![e(1, 1), e(2, 1)]);
        let _ = log.take_unstable();
        log.merge(vec![e(2, 2)]);
        let _ = log.take_unstable();
        assert!(
            !log.stable_to(LogIndex(2), Term(1)),
            "ack for the replaced entry counted"
        );
        assert!(log.stable_to(LogIndex(2), Term(2)));
    }

    #[test]
    fn committed_entries_wait_for_local_durability() {
        let mut log = RaftLog::restore(LogIndex(0), Term(0), vec![], None);
        log.merge(vec![e(1, 1), e(2, 1)]);
        log.commit_to(LogIndex(2));
        assert!(log.take_committed(10).is_empty());
        let _ = log.take_unstable();
        log.stable_to(LogIndex(1), Term(1));
        assert_eq!(log.take_committed(10).len(), 1);
    }

    #[test]
    fn slice_respects_count_and_bytes_but_sends_at_least_one() {
        let log = RaftLog::restore(
            LogIndex(0),
            Term(0),
            (1..=10).map(|i| e(i, 1)).collect(),
            None,
        );
        assert_eq!(log.slice(LogIndex(1), LogIndex(10), 3, usize::MAX).len(), 3);
        assert_eq!(log.slice(LogIndex(1), LogIndex(10), 10, 1).len(), 1);
    }

    #[test]
    fn compact_keeps_term_at_offset() {
        let mut log = RaftLog::restore(
            LogIndex(0),
            Term(0),
            (1..=5).map(|i| e(i, i)).collect(),
            None,
        );
        log.commit_to(LogIndex(5));
        let _ = log.take_committed(10);
        log.compact(LogIndex(3));
        assert_eq!(log.term(LogIndex(3)), Some(Term(3)));
        assert_eq!(log.term(LogIndex(2)), None);
        assert_eq!(log.first_index(), LogIndex(4));
    }
}
