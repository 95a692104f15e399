//! Snapshot streams: chunks through their own channel, never behind messages.

use std::io::{self, Read};

use bytes::{Bytes, BytesMut};
use raftkit::transport::IncomingSnapshot;
use raftkit::{
    Inbound, NodeId, Peer, SnapshotChunk, SnapshotOffer, SnapshotReader, TransportError,
};
use tokio::sync::{mpsc, watch};

use crate::endpoint::unreachable;
use crate::{InmemNetwork, NoRoute};

/// Streams `data` to `to` in chunks; `Ok` once the peer's channel has taken
/// the last one.
pub(crate) async fn stream(
    network: &InmemNetwork,
    from: &NodeId,
    to: &Peer,
    offer: SnapshotOffer,
    data: SnapshotReader,
    mut sender_closed: watch::Receiver<bool>,
) -> Result<(), TransportError> {
    let mut route = match network.route(from, &to.address) {
        Ok(route) => route,
        Err(NoRoute::Nobody) => return Err(unreachable(to, "nothing listens at that address")),
        Err(NoRoute::Blocked) => return Err(unreachable(to, "the link is cut")),
    };
    let config = network.config();
    let (chunk_tx, chunks) = mpsc::channel(config.snapshot_chunks_buffered.max(1));
    tokio::select! {
        sent = route.inbound.send(Inbound::Snapshot(IncomingSnapshot { offer, chunks })) => {
            sent.map_err(|_| unreachable(to, "the peer shut down"))?;
        }
        _ = route.closed.wait_for(|c| *c) => return Err(unreachable(to, "the peer shut down")),
        _ = sender_closed.wait_for(|c| *c) => return Err(TransportError::Shutdown),
    }

    // The reader is synchronous and may block: read it on a blocking thread.
    let (read_tx, mut read_rx) = mpsc::channel(2);
    let chunk_bytes = config.snapshot_chunk_bytes.max(1);
    tokio::task::spawn_blocking(move || read_chunks(data, chunk_bytes, &read_tx));
    while let Some(chunk) = read_rx.recv().await {
        let chunk = chunk.map_err(|source| TransportError::Io {
            context: "reading snapshot data".to_owned(),
            source,
        })?;
        if network.route(from, &to.address).is_err() {
            return Err(unreachable(to, "the link broke during the snapshot"));
        }
        tokio::select! {
            sent = chunk_tx.send(chunk) => {
                sent.map_err(|_| unreachable(to, "the peer dropped the snapshot stream"))?;
            }
            _ = route.closed.wait_for(|c| *c) => return Err(unreachable(to, "the peer shut down")),
            _ = sender_closed.wait_for(|c| *c) => return Err(TransportError::Shutdown),
        }
    }
    Ok(())
}

/// Reads `data` into chunks of `chunk_bytes`, marking the last one `done`
/// (an empty snapshot is one empty `done` chunk). Stops early when the
/// receiving side goes away.
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
