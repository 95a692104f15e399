//! Sending a snapshot on a bidirectional stream of its own, on the same
//! connection as the messages but at a lower priority.
//!
//! ```text
//!  Hello ─▶ SnapshotOffer ─▶ SnapshotChunk{offset 0} ─▶ ... ─▶ SnapshotChunk{done} ─▶ FIN
//!                                                        ◀── SnapshotReceived
//! ```

use std::io::{self, Read};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use raftkit::wire::{decode_frame, encode_frame, Frame};
use raftkit::{Peer, SnapshotChunk, SnapshotOffer, SnapshotReader, TransportError};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::codec::FramedRead;

use crate::codec::FrameCodec;
use crate::outbound::write_frames;
use crate::transport::{connect, Shared};

/// Snapshot streams yield to the message stream (priority 1).
const SNAPSHOT_PRIORITY: i32 = 0;

/// Streams `data` to `to`; `Ok` once the peer acknowledged every chunk.
pub(crate) async fn send(
    shared: &Shared,
    to: &Peer,
    offer: SnapshotOffer,
    data: SnapshotReader,
) -> Result<(), TransportError> {
    let conn = connect(shared, to).await?;
    let (mut stream, recv) = conn.open_bi().await.map_err(|e| {
        shared.forget_connection(to, &conn);
        unreachable(to, &format!("opening a snapshot stream: {e}"))
    })?;
    // Cannot fail on a stream just opened; ignore if it did.
    let _ = stream.set_priority(SNAPSHOT_PRIORITY);
    let cluster = shared.config.cluster;
    let hello = Frame::Hello {
        from: shared.id.clone(),
    };
    let head = vec![
        encode_frame(cluster, &hello),
        encode_frame(cluster, &Frame::SnapshotOffer(offer)),
    ];
    write(shared, &mut stream, head).await?;

    // The reader is synchronous and may block: read it on a blocking thread.
    let (tx, mut chunks) = mpsc::channel(2);
    let chunk_bytes = shared.config.snapshot_chunk_bytes;
    tokio::task::spawn_blocking(move || read_chunks(data, chunk_bytes, &tx));
    while let Some(chunk) = chunks.recv().await {
        let SnapshotChunk { offset, data, done } = chunk.map_err(|source| TransportError::Io {
            context: "reading snapshot data".to_owned(),
            source,
        })?;
        let frame = encode_frame(cluster, &Frame::SnapshotChunk { offset, data, done });
        write(shared, &mut stream, vec![frame]).await?;
    }
    // Already finished only if the peer stopped the stream, which the
    // acknowledgement read below reports.
    let _ = stream.finish();
    let mut acks = FramedRead::new(recv, FrameCodec::new(shared.config.max_frame_bytes));
    match timeout(shared.config.snapshot_ack_timeout, acks.next()).await {
        Err(_) => Err(unreachable(
            to,
            "no SnapshotReceived before snapshot_ack_timeout",
        )),
        Ok(None) => Err(unreachable(
            to,
            "the peer closed the snapshot stream before acknowledging",
        )),
        Ok(Some(Err(e))) => Err(unreachable(
            to,
            &format!("reading the snapshot acknowledgement: {e}"),
        )),
        Ok(Some(Ok(frame))) => match decode_frame(cluster, &frame)? {
            Frame::SnapshotReceived => Ok(()),
            other => Err(unreachable(
                to,
                &format!("expected SnapshotReceived, got {other:?}"),
            )),
        },
    }
}

async fn write(
    shared: &Shared,
    stream: &mut quinn::SendStream,
    frames: Vec<Bytes>,
) -> Result<(), TransportError> {
    let bytes = write_frames(shared, stream, frames).await?;
    metrics::counter!(crate::BYTES_SENT_METRIC, "kind" => "snapshot").increment(bytes as u64);
    Ok(())
}

fn unreachable(to: &Peer, reason: &str) -> TransportError {
    TransportError::Unreachable {
        peer: to.id.clone(),
        reason: reason.to_owned(),
    }
}

/// Reads `data` into chunks of `chunk_bytes`, marking the last one `done`
/// (an empty snapshot is one empty `done` chunk). Stops early when the
/// sending task goes away.
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
