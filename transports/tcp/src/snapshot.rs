//! Sending a snapshot on a connection of its own.
//!
//! ```text
//!  Hello ─▶ SnapshotOffer ─▶ SnapshotChunk{offset 0} ─▶ ... ─▶ SnapshotChunk{done}
//!                                                        ◀── SnapshotReceived
//! ```

use std::io::{self, Read};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use raftkit::wire::{decode_frame, encode_frame, Frame};
use raftkit::{Peer, SnapshotChunk, SnapshotOffer, SnapshotReader, TransportError};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::codec::Framed;

use crate::codec::FrameCodec;
use crate::outbound::codec_error;
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
        ),
    )
    .await?;
    write(
        shared,
        &mut framed,
        encode_frame(cluster, &Frame::SnapshotOffer(offer)),
    )
    .await?;

    // The reader is synchronous and may block: read it on a blocking thread.
    let (tx, mut chunks) = mpsc::channel(2);
    let chunk_bytes = shared.config.snapshot_chunk_bytes;
    tokio::task::spawn_blocking(move || read_chunks(data, chunk_bytes, &tx));
    while let Some(chunk) = chunks.recv().await {
        let SnapshotChunk { offset, data, done } = chunk.map_err(|source| TransportError::Io {
            context: "reading snapshot data".to_owned(),
            source,
        })?;
        write(
            shared,
            &mut framed,
            encode_frame(cluster, &Frame::SnapshotChunk { offset, data, done }),
        )
        .await?;
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

async fn write(
    shared: &Shared,
    framed: &mut Framed<Stream, FrameCodec>,
    frame: Bytes,
) -> Result<(), TransportError> {
    metrics::counter!(crate::BYTES_SENT_METRIC, "kind" => "snapshot")
        .increment(frame.len() as u64 + 4);
    match timeout(shared.config.write_timeout, framed.send(frame)).await {
        Err(_) => Err(TransportError::Io {
            context: "writing a snapshot frame".to_owned(),
            source: io::Error::from(io::ErrorKind::TimedOut),
        }),
        Ok(Err(e)) => Err(codec_error("writing a snapshot frame", e)),
        Ok(Ok(())) => Ok(()),
    }
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
