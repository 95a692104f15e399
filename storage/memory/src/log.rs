//! `MemLogStore`.

use std::collections::VecDeque;
use std::sync::{Arc, PoisonError, RwLock};

use raftkit::{Entry, LogIndex, LogStore, StorageError, StorageResult};

use crate::poisoned;

/// A log held in memory (a `VecDeque` behind a `RwLock`).
///
/// Clones share the same log. Readers never see part of a batch: `append`
/// checks the whole batch and then adds it under one write lock.
///
/// ```
/// use raftkit::{Entry, LogIndex, LogStore, Term};
/// let log = raftkit_memory::MemLogStore::new();
/// let e = |i| Entry::command(LogIndex(i), Term(1), "cmd".into());
/// log.append(&[e(1), e(2), e(3)])?;
/// log.purge_prefix(LogIndex(1))?;
/// assert_eq!(log.get(LogIndex(0), LogIndex(10))?, vec![e(2), e(3)]);
/// # Ok::<(), raftkit::StorageError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemLogStore {
    inner: Arc<RwLock<Log>>,
}

#[derive(Debug, Default)]
struct Log {
    /// The index of `entries[0]`; meaningless when `entries` is empty.
    first: u64,
    entries: VecDeque<Entry>,
}

impl Log {
    fn last(&self) -> u64 {
        if self.entries.is_empty() {
            0
        } else {
            self.first + self.entries.len() as u64 - 1
        }
    }
}

const NAME: &str = "memory log store";

impl MemLogStore {
    /// An empty log.
    pub fn new() -> MemLogStore {
        MemLogStore::default()
    }

    /// How many entries the log holds.
    ///
    /// ```
    /// assert_eq!(raftkit_memory::MemLogStore::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        // A poisoned lock still guards a log whose length is meaningful.
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }

    /// Whether the log holds no entry.
    ///
    /// ```
    /// assert!(raftkit_memory::MemLogStore::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks that `entries` may follow a log whose last index is `last` (zero
/// when empty).
pub(crate) fn check_batch(last: u64, entries: &[Entry]) -> StorageResult<()> {
    let Some(head) = entries.first() else {
        return Ok(());
    };
    if head.index.0 == 0 {
        return Err(StorageError::Invalid(
            "appended an entry with index 0; the first index is 1".into(),
        ));
    }
    if last != 0 && head.index.0 != last + 1 {
        return Err(StorageError::Invalid(format!(
            "appended a batch starting at index {} to a log whose last index is {last}",
            head.index
        )));
    }
    for pair in entries.windows(2) {
        if pair[1].index.0 != pair[0].index.0.wrapping_add(1) {
            return Err(StorageError::Invalid(format!(
                "appended a batch with index {} followed by {}",
                pair[0].index, pair[1].index
            )));
        }
    }
    Ok(())
}

impl LogStore for MemLogStore {
    fn is_in_memory(&self) -> bool {
        true
    }

    fn first_index(&self) -> StorageResult<LogIndex> {
        let log = self.inner.read().map_err(|_| poisoned(NAME))?;
        Ok(LogIndex(if log.entries.is_empty() { 0 } else { log.first }))
    }

    fn last_index(&self) -> StorageResult<LogIndex> {
        let log = self.inner.read().map_err(|_| poisoned(NAME))?;
        Ok(LogIndex(log.last()))
    }

    fn get(&self, from: LogIndex, to: LogIndex) -> StorageResult<Vec<Entry>> {
        let log = self.inner.read().map_err(|_| poisoned(NAME))?;
        if log.entries.is_empty() {
            return Ok(Vec::new());
        }
        let lo = from.0.max(log.first);
        let hi = to.0.min(log.last() + 1);
        if lo >= hi {
            return Ok(Vec::new());
        }
        let (a, b) = ((lo - log.first) as usize, (hi - log.first) as usize);
        Ok(log.entries.range(a..b).cloned().collect())
    }

    fn append(&self, entries: &[Entry]) -> StorageResult<()> {
        let mut log = self.inner.write().map_err(|_| poisoned(NAME))?;
        check_batch(log.last(), entries)?;
        let Some(head) = entries.first() else {
            return Ok(());
        };
        if log.entries.is_empty() {
            log.first = head.index.0;
        }
        log.entries.extend(entries.iter().cloned());
        Ok(())
    }

    fn truncate_suffix(&self, from: LogIndex) -> StorageResult<()> {
        let mut log = self.inner.write().map_err(|_| poisoned(NAME))?;
        if log.entries.is_empty() || from.0 > log.last() {
            return Ok(());
        }
        let keep = from.0.saturating_sub(log.first) as usize;
        log.entries.truncate(keep);
        Ok(())
    }

    fn purge_prefix(&self, upto: LogIndex) -> StorageResult<()> {
        let mut log = self.inner.write().map_err(|_| poisoned(NAME))?;
        if log.entries.is_empty() || upto.0 < log.first {
            return Ok(());
        }
        if upto.0 >= log.last() {
            log.entries.clear();
            return Ok(());
        }
        let drop = (upto.0 + 1 - log.first) as usize;
        log.entries.drain(..drop);
        log.first = upto.0 + 1;
        Ok(())
    }
}
