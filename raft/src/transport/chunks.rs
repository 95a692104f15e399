//! Snapshot data as chunks: read on the sending side, checked on the
//! receiving side. Shared by every transport.

use std::io::{self, Read};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::errors::{ConnError, ErrorKind};
use super::SnapshotChunk;
use crate::storage::SnapshotReader;

/// Reads `data` on a blocking thread (the reader is synchronous and may
/// block) into chunks of `chunk_bytes`, the last one marked `done` (an
/// empty snapshot is one empty `done` chunk). Reading stops early when the
/// receiver is dropped.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let data: raftkit::SnapshotReader = Box::new(std::io::Cursor::new(vec![7u8; 10]));
/// let mut chunks = raftkit::transport::chunks::spawn_reader(data, 4);
/// let mut lens = Vec::new();
/// while let Some(chunk) = chunks.recv().await {
///     let chunk = chunk.unwrap();
///     lens.push((chunk.offset, chunk.data.len(), chunk.done));
/// }
/// assert_eq!(lens, vec![(0, 4, false), (4, 4, false), (8, 2, true)]);
/// # });
/// ```
pub fn spawn_reader(
    data: SnapshotReader,
    chunk_bytes: usize,
) -> mpsc::Receiver<io::Result<SnapshotChunk>> {
    let (tx, rx) = mpsc::channel(2);
    let chunk_bytes = chunk_bytes.max(1);
    tokio::task::spawn_blocking(move || read_chunks(data, chunk_bytes, &tx));
    rx
}

fn read_chunks(
    mut data: SnapshotReader,
    chunk_bytes: usize,
    out: &mpsc::Sender<io::Result<SnapshotChunk>>,
) {
    let mut offset = 0u64;
    let mut pending: Option<Bytes> = None;
    loop {
        let buf = match fill(&mut data, chunk_bytes) {
            Ok(buf) => buf,
            Err(e) => {
                let _ = out.blocking_send(Err(e));
                return;
            }
        };
        let eof = buf.len() < chunk_bytes;
        if let Some(prev) = pending.take() {
            let done = buf.is_empty();
            let len = prev.len() as u64;
            if out
                .blocking_send(Ok(SnapshotChunk {
                    offset,
                    data: prev,
                    done,
                }))
                .is_err()
                || done
            {
                return;
            }
            offset += len;
        }
        if eof {
            let _ = out.blocking_send(Ok(SnapshotChunk {
                offset,
                data: buf,
                done: true,
            }));
            return;
        }
        pending = Some(buf);
    }
}

/// Reads up to `n` bytes, fewer only at the end of the data.
fn fill(data: &mut SnapshotReader, n: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(n);
    let mut len = 0;
    while len < n {
        match data.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(k) => len += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(buf.freeze())
}

/// Checks that a snapshot stream's chunks come in order and add up to the
/// offered size.
///
/// ```
/// use raftkit::transport::chunks::ChunkOrder;
/// let mut order = ChunkOrder::new(10);
/// assert!(order.check(0, 6, false).is_ok());
/// assert!(order.check(0, 4, true).is_err()); // not at offset 6
/// let mut order = ChunkOrder::new(10);
/// assert!(order.check(0, 6, true).is_err()); // done short of 10 bytes
/// ```
#[derive(Debug)]
pub struct ChunkOrder {
    size: u64,
    expected: u64,
}

impl ChunkOrder {
    /// For a snapshot of `size` bytes.
    pub fn new(size: u64) -> ChunkOrder {
        ChunkOrder { size, expected: 0 }
    }

    /// Accepts the next chunk, or names what is wrong with it
    /// ([`ErrorKind::SnapshotStream`]).
    pub fn check(&mut self, offset: u64, len: usize, done: bool) -> Result<(), ConnError> {
        if offset != self.expected {
            return Err(ConnError::new(
                ErrorKind::SnapshotStream,
                format!(
                    "snapshot chunk at offset {offset}, expected {}",
                    self.expected
                ),
            ));
        }
        self.expected = self.expected.saturating_add(len as u64);
        if self.expected > self.size || (done && self.expected != self.size) {
            return Err(ConnError::new(
                ErrorKind::SnapshotStream,
                format!(
                    "snapshot stream of {} bytes (done: {done}) for an offer of {}",
                    self.expected, self.size
                ),
            ));
        }
        Ok(())
    }
}
