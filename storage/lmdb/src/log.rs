//! `LmdbLogStore`: the log database.

use std::ops::Bound::{Excluded, Included, Unbounded};

use heed::PutFlags;
use raftkit::{Entry, LogIndex, LogStore, StorageError, StorageResult};

use crate::codec::{decode_log_value, encode_log_value, index_key, key_index};
use crate::store::{bounds, check_batch, LmdbStore};

/// The log of an [`LmdbStore`]: entries keyed by their index (big-endian, so
/// LMDB's key order is log order), each value a CRC32C and the entry in
/// `raftkit::wire` encoding.
///
/// Each call is one LMDB transaction: a batch append, a truncation and a
/// purge are each atomic, and durable on return under
/// [`SyncPolicy::Always`](crate::SyncPolicy::Always). Clones share the store.
///
/// ```
/// use raftkit::{Entry, LogIndex, LogStore, Term};
/// let dir = tempfile::tempdir().unwrap();
/// let log = raftkit_lmdb::LmdbStore::open(dir.path(), Default::default())?.log();
/// log.append(&[Entry::command(LogIndex(7), Term(1), "x".into())])?;
/// assert_eq!((log.first_index()?, log.last_index()?), (LogIndex(7), LogIndex(7)));
/// # Ok::<(), raftkit::StorageError>(())
/// ```
#[derive(Clone, Debug)]
pub struct LmdbLogStore {
    pub(crate) store: LmdbStore,
}

impl LmdbLogStore {
    /// The store this log belongs to.
    pub fn store(&self) -> &LmdbStore {
        &self.store
    }
}

impl LogStore for LmdbLogStore {
    fn first_index(&self) -> StorageResult<LogIndex> {
        self.store
            .read(|txn| bounds(&self.store.inner, txn).map(|(f, _)| LogIndex(f)))
    }

    fn last_index(&self) -> StorageResult<LogIndex> {
        self.store
            .read(|txn| bounds(&self.store.inner, txn).map(|(_, l)| LogIndex(l)))
    }

    fn get(&self, from: LogIndex, to: LogIndex) -> StorageResult<Vec<Entry>> {
        if from >= to {
            return Ok(Vec::new());
        }
        let inner = &*self.store.inner;
        let (from_key, to_key) = (index_key(from.0), index_key(to.0));
        self.store.read(|txn| {
            let range = inner
                .log
                .range(txn, &(Included(&from_key[..]), Excluded(&to_key[..])))
                .map_err(|e| inner.err("reading the log", e))?;
            let mut out: Vec<Entry> = Vec::new();
            for item in range {
                let (key, value) = item.map_err(|e| inner.err("reading the log", e))?;
                let index = key_index(key)?;
                if let Some(prev) = out.last() {
                    if index != prev.index.0 + 1 {
                        return Err(StorageError::Corrupt(format!(
                            "{}: the log has a hole between index {} and {index}",
                            inner.file, prev.index
                        )));
                    }
                }
                out.push(decode_log_value(index, value, &inner.file)?);
            }
            Ok(out)
        })
    }

    fn append(&self, entries: &[Entry]) -> StorageResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        // Encode outside the transaction and the lock.
        let values: Vec<Vec<u8>> = entries.iter().map(encode_log_value).collect();
        let bytes = values.iter().map(|v| v.len() + 8).sum();
        self.store
            .write("appending to the log", bytes, |inner, txn| {
                let (first, last) = bounds(inner, txn)?;
                check_batch(entries, first, last)?;
                for (entry, value) in entries.iter().zip(&values) {
                    // Keys arrive in increasing order past the last one, so
                    // APPEND skips the search and fills pages fully.
                    inner
                        .log
                        .put_with_flags(txn, PutFlags::APPEND, &index_key(entry.index.0), value)
                        .map_err(|e| inner.err("appending to the log", e))?;
                }
                Ok(())
            })
    }

    fn truncate_suffix(&self, from: LogIndex) -> StorageResult<()> {
        let key = index_key(from.0);
        self.store.write("truncating the log", 0, |inner, txn| {
            inner
                .log
                .delete_range(txn, &(Included(&key[..]), Unbounded))
                .map_err(|e| inner.err("truncating the log", e))?;
            Ok(())
        })
    }

    fn purge_prefix(&self, upto: LogIndex) -> StorageResult<()> {
        let key = index_key(upto.0);
        self.store.write("purging the log", 0, |inner, txn| {
            inner
                .log
                .delete_range(txn, &(Unbounded, Included(&key[..])))
                .map_err(|e| inner.err("purging the log", e))?;
            Ok(())
        })
    }
}
