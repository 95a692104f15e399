//! Sending a snapshot on a bidirectional stream of its own, on the same
//! connection as the messages but at a lower priority.
//!
//! ```text
//!  Hello ─▶ SnapshotOffer ─▶ SnapshotChunk{offset 0} ─▶ ... ─▶ SnapshotChunk{done} ─▶ FIN
//!                                                        ◀── SnapshotReceived
//! ```

use futures_util::StreamExt;
use raftkit::transport::chunks::spawn_reader;
use raftkit::transport::errors::BYTES_SENT_METRIC;
use raftkit::wire::stream::FrameCodec;
use raftkit::wire::{decode_frame, encode_frame, encode_snapshot_chunk, Frame, FrameChunks};
use raftkit::{Peer, SnapshotOffer, SnapshotReader, TransportError};
use tokio::time::timeout;
use tokio_util::codec::FramedRead;

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
        encode_frame(cluster, &hello).into(),
        encode_frame(cluster, &Frame::SnapshotOffer(offer)).into(),
    ];
    write(shared, &mut stream, head).await?;

    let mut chunks = spawn_reader(data, shared.config.snapshot_chunk_bytes);
    while let Some(chunk) = chunks.recv().await {
        let chunk = chunk.map_err(|source| TransportError::Io {
            context: "reading snapshot data".to_owned(),
            source,
        })?;
        let frame = encode_snapshot_chunk(cluster, chunk);
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
    frames: Vec<FrameChunks>,
) -> Result<(), TransportError> {
    let bytes = write_frames(shared, stream, frames).await?;
    metrics::counter!(BYTES_SENT_METRIC, "kind" => "snapshot").increment(bytes as u64);
    Ok(())
}

fn unreachable(to: &Peer, reason: &str) -> TransportError {
    TransportError::Unreachable {
        peer: to.id.clone(),
        reason: reason.to_owned(),
    }
}
