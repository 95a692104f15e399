//! `MemSnapshotStore` and `DiscardSnapshotStore`.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use raftkit::{
    SnapshotId, SnapshotMeta, SnapshotPoint, SnapshotReader, SnapshotSink, SnapshotStore,
    StorageError, StorageResult,
};

use crate::poisoned;

const NAME: &str = "memory snapshot store";

/// Snapshots held in memory; keeps the newest `retain` (by index).
///
/// Clones share the same snapshots. `finish` computes the size and CRC32C of
/// the data; ids come from [`SnapshotId::for_point`] with a per-store counter
/// as the nonce.
///
/// ```
/// use std::io::{Read, Write};
/// use raftkit::{Configuration, LogIndex, SnapshotPoint, SnapshotStore, Term};
///
/// let store = raftkit_memory::MemSnapshotStore::new(2)?;
/// let point = SnapshotPoint {
///     index: LogIndex(10),
///     term: Term(1),
///     configuration: Configuration::default(),
///     configuration_index: LogIndex(1),
/// };
/// let mut sink = store.create(point)?;
/// sink.write_all(b"state").unwrap();
/// let meta = sink.finish()?;
/// assert_eq!(meta.checksum, crc32c::crc32c(b"state"));
///
/// let (_, mut reader) = store.open(&meta.id)?;
/// let mut data = Vec::new();
/// reader.read_to_end(&mut data).unwrap();
/// assert_eq!(data, b"state");
/// # Ok::<(), raftkit::StorageError>(())
/// ```
#[derive(Clone, Debug)]
pub struct MemSnapshotStore {
    inner: Arc<Mutex<Held>>,
    retain: usize,
}

#[derive(Debug, Default)]
struct Held {
    /// Newest first.
    snapshots: Vec<(SnapshotMeta, Bytes)>,
    next_nonce: u64,
}

impl MemSnapshotStore {
    /// An empty store that keeps the newest `retain` snapshots.
    ///
    /// # Errors
    /// `StorageError::Invalid` when `retain` is zero: a store must keep the
    /// snapshot it was just given.
    pub fn new(retain: usize) -> StorageResult<MemSnapshotStore> {
        if retain == 0 {
            return Err(StorageError::Invalid(
                "a snapshot store must retain at least 1 snapshot, got retain = 0".into(),
            ));
        }
        Ok(MemSnapshotStore {
            inner: Arc::default(),
            retain,
        })
    }

    /// How many snapshots it keeps.
    ///
    /// ```
    /// assert_eq!(raftkit_memory::MemSnapshotStore::new(3)?.retain(), 3);
    /// # Ok::<(), raftkit::StorageError>(())
    /// ```
    pub fn retain(&self) -> usize {
        self.retain
    }
}

impl SnapshotStore for MemSnapshotStore {
    fn create(&self, point: SnapshotPoint) -> StorageResult<Box<dyn SnapshotSink>> {
        let mut held = self.inner.lock().map_err(|_| poisoned(NAME))?;
        let id = SnapshotId::for_point(point.term, point.index, held.next_nonce);
        held.next_nonce += 1;
        Ok(Box::new(MemSnapshotSink {
            store: self.clone(),
            id,
            point,
            data: Vec::new(),
        }))
    }

    fn list(&self) -> StorageResult<Vec<SnapshotMeta>> {
        let held = self.inner.lock().map_err(|_| poisoned(NAME))?;
        Ok(held.snapshots.iter().map(|(m, _)| m.clone()).collect())
    }

    fn open(&self, id: &SnapshotId) -> StorageResult<(SnapshotMeta, SnapshotReader)> {
        let held = self.inner.lock().map_err(|_| poisoned(NAME))?;
        match held.snapshots.iter().find(|(m, _)| &m.id == id) {
            Some((meta, data)) => Ok((meta.clone(), Box::new(data.clone().reader()))),
            None => Err(StorageError::SnapshotNotFound(id.clone())),
        }
    }
}

struct MemSnapshotSink {
    store: MemSnapshotStore,
    id: SnapshotId,
    point: SnapshotPoint,
    data: Vec<u8>,
}

impl Write for MemSnapshotSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SnapshotSink for MemSnapshotSink {
    fn id(&self) -> &SnapshotId {
        &self.id
    }

    fn finish(self: Box<Self>) -> StorageResult<SnapshotMeta> {
        let MemSnapshotSink {
            store,
            id,
            point,
            data,
        } = *self;
        let meta = meta_for(id, point, data.len() as u64, crc32c::crc32c(&data));
        let mut held = store.inner.lock().map_err(|_| poisoned(NAME))?;
        held.snapshots.push((meta.clone(), Bytes::from(data)));
        held.snapshots
            .sort_by(|(a, _), (b, _)| (b.index, b.term, &b.id).cmp(&(a.index, a.term, &a.id)));
        held.snapshots.truncate(store.retain);
        Ok(meta)
    }

    fn cancel(self: Box<Self>) -> StorageResult<()> {
        Ok(())
    }
}

fn meta_for(id: SnapshotId, point: SnapshotPoint, size: u64, checksum: u32) -> SnapshotMeta {
    SnapshotMeta {
        id,
        index: point.index,
        term: point.term,
        configuration: point.configuration,
        configuration_index: point.configuration_index,
        size,
        checksum,
    }
}

/// A snapshot store that accepts snapshots and keeps none (HashiCorp's
/// `DiscardSnapshotStore`): `finish` reports the size and CRC32C of what was
/// written, `list` is always empty and `open` never finds anything.
///
/// For nodes and tests that never restore from a snapshot. A node with it
/// can still compact its log, but cannot catch up a follower by snapshot.
///
/// ```
/// use std::io::Write;
/// use raftkit::{Configuration, LogIndex, SnapshotPoint, SnapshotStore, Term};
///
/// let store = raftkit_memory::DiscardSnapshotStore::new();
/// let mut sink = store.create(SnapshotPoint {
///     index: LogIndex(5),
///     term: Term(1),
///     configuration: Configuration::default(),
///     configuration_index: LogIndex(1),
/// })?;
/// sink.write_all(b"gone").unwrap();
/// let meta = sink.finish()?;
/// assert_eq!(meta.size, 4);
/// assert!(store.list()?.is_empty());
/// assert!(store.open(&meta.id).is_err());
/// # Ok::<(), raftkit::StorageError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct DiscardSnapshotStore {
    next_nonce: Arc<AtomicU64>,
}

impl DiscardSnapshotStore {
    /// A store that keeps nothing.
    pub fn new() -> DiscardSnapshotStore {
        DiscardSnapshotStore::default()
    }
}

impl SnapshotStore for DiscardSnapshotStore {
    fn create(&self, point: SnapshotPoint) -> StorageResult<Box<dyn SnapshotSink>> {
        let nonce = self.next_nonce.fetch_add(1, Ordering::Relaxed);
        let id = SnapshotId::for_point(point.term, point.index, nonce);
        Ok(Box::new(DiscardSink {
            id,
            point,
            size: 0,
            crc: 0,
        }))
    }

    fn list(&self) -> StorageResult<Vec<SnapshotMeta>> {
        Ok(Vec::new())
    }

    fn open(&self, id: &SnapshotId) -> StorageResult<(SnapshotMeta, SnapshotReader)> {
        Err(StorageError::SnapshotNotFound(id.clone()))
    }
}

struct DiscardSink {
    id: SnapshotId,
    point: SnapshotPoint,
    size: u64,
    crc: u32,
}

impl Write for DiscardSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.size += buf.len() as u64;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SnapshotSink for DiscardSink {
    fn id(&self) -> &SnapshotId {
        &self.id
    }

    fn finish(self: Box<Self>) -> StorageResult<SnapshotMeta> {
        let DiscardSink {
            id,
            point,
            size,
            crc,
        } = *self;
        Ok(meta_for(id, point, size, crc))
    }

    fn cancel(self: Box<Self>) -> StorageResult<()> {
        Ok(())
    }
}
