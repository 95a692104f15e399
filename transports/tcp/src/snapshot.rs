//! Sending a snapshot on a connection of its own.
//!
//! ```text
//!  Hello ─▶ SnapshotOffer ─▶ SnapshotChunk{offset 0} ─▶ ... ─▶ SnapshotChunk{done}
//!                                                        ◀── SnapshotReceived
//! ```

use futures_util::StreamExt;
use raftkit::transport::chunks::spawn_reader;
use raftkit::transport::errors::BYTES_SENT_METRIC;
use raftkit::wire::stream::FrameCodec;
use raftkit::wire::{decode_frame, encode_frame, encode_snapshot_chunk, Frame, FrameChunks};
use raftkit::{Peer, SnapshotOffer, SnapshotReader, TransportError};
use tokio::time::timeout;
use tokio_util::codec::Framed;

use crate::outbound::{codec_error, write_frames};
use crate::transport::{connect, Shared, Stream};

/// Streams `data` to `to`; `Ok` once the peer acknowledged every chunk.
pub(crate) async fn send(
    shared: &Shared,
    to: &Peer,
    offer: SnapshotOffer,
    data: SnapshotReader,
) -> Result<(), TransportError> {
    let stream = connect(shared, to).await?;
    let mut framed = Framed::new(stream, FrameCodec::new(shared.config.max_frame_bytes));
    let cluster = shared.config.cluster;
    write(
        shared,
        &mut framed,
        encode_frame(
            cluster,
            &Frame::Hello {
                from: shared.id.clone(),
            },
        )
        .into(),
    )
    .await?;
    write(
        shared,
        &mut framed,
        encode_frame(cluster, &Frame::SnapshotOffer(offer)).into(),
    )
    .await?;

    let mut chunks = spawn_reader(data, shared.config.snapshot_chunk_bytes);
    while let Some(chunk) = chunks.recv().await {
        let chunk = chunk.map_err(|source| TransportError::Io {
            context: "reading snapshot data".to_owned(),
            source,
        })?;
        write(shared, &mut framed, encode_snapshot_chunk(cluster, chunk)).await?;
    }
    match timeout(shared.config.snapshot_ack_timeout, framed.next()).await {
        Err(_) => Err(unreachable(
            to,
            "no SnapshotReceived before snapshot_ack_timeout",
        )),
        Ok(None) => Err(unreachable(
            to,
            "the peer closed the snapshot connection before acknowledging",
        )),
        Ok(Some(Err(e))) => Err(codec_error("reading the snapshot acknowledgement", e)),
        Ok(Some(Ok(frame))) => match decode_frame(cluster, &frame)? {
            Frame::SnapshotReceived => Ok(()),
            other => Err(unreachable(
                to,
                &format!("expected SnapshotReceived, got {other:?}"),
            )),
        },
    }
}

/// Writes one frame straight to the socket (the codec only reads on this
/// connection, so nothing waits in its buffer) and counts its bytes.
async fn write(
    shared: &Shared,
    framed: &mut Framed<Stream, FrameCodec>,
    frame: FrameChunks,
) -> Result<(), TransportError> {
    let bytes = write_frames(
        shared,
        framed.get_mut(),
        vec![frame],
        "writing a snapshot frame",
    )
    .await?;
    metrics::counter!(BYTES_SENT_METRIC, "kind" => "snapshot").increment(bytes as u64);
    Ok(())
}

fn unreachable(to: &Peer, reason: &str) -> TransportError {
    TransportError::Unreachable {
        peer: to.id.clone(),
        reason: reason.to_owned(),
    }
}
