//! One long-lived outbound connection per peer, fed by a bounded queue.
//!
//! ```text
//!  send() ──try_send──▶ queue (bounded) ──▶ link task ──Messages frames──▶ TCP ──▶ peer
//!                                             │ connect (Hello first), batch, write
//!                                             └ on failure: drop the queue, answer
//!                                               Unreachable and retry with backoff
//!                                               while sends keep coming
//! ```
//!
//! The queue, backoff and batching are [`raftkit::transport::link`]'s.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::SinkExt;
use raftkit::transport::errors::ErrorKind;
use raftkit::transport::link::{
    drain_closed, encode_messages, fill_batch, reconnect, Backoff, Link, LinkState, Reconnect,
    Reconnecting,
};
use raftkit::wire::stream::{CodecError, FrameCodec, PrefixedFrames};
use raftkit::wire::{encode_frame, Frame};
use raftkit::{Message, Peer, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::codec::FramedWrite;

use crate::transport::{connect, Shared, Stream};

struct Conn {
    read: ReadHalf<Stream>,
    write: FramedWrite<WriteHalf<Stream>, FrameCodec>,
}

/// Starts the link task for `peer` and returns its handle.
pub(crate) fn spawn_link(shared: &Arc<Shared>, peer: Peer) -> Link {
    let (link, rx) = Link::new(shared.config.send_queue_batches);
    let task = run_link(shared.clone(), peer, rx, link.state.clone());
    shared.tracker.spawn(task);
    link
}

async fn run_link(
    shared: Arc<Shared>,
    peer: Peer,
    mut queue: mpsc::Receiver<Vec<Message>>,
    state: Arc<LinkState>,
) {
    let config = &shared.config;
    let limits = config.batch_limits();
    let mut backoff = Backoff::new(&shared.id, &peer, config.backoff_min, config.backoff_max);
    let mut conn: Option<Conn> = None;
    loop {
        let first = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            batch = queue.recv() => match batch {
                Some(batch) => batch,
                None => return,
            },
            () = peer_closed(&mut conn) => {
                tracing::debug!(peer = %peer.id, "peer closed the connection");
                conn = None;
                continue;
            }
            _ = tokio::time::sleep(config.link_idle_timeout) => {
                // A peer nobody sends to any more (removed, say): free the
                // task and the socket. `send` starts a new link when needed.
                tracing::debug!(peer = %peer.id, "link idle; closing it");
                let rest = drain_closed(&mut queue);
                if let (Some(c), false) = (conn.as_mut(), rest.is_empty()) {
                    let _ = write_batch(&shared, c, rest).await;
                }
                return;
            }
        };
        let batch = fill_batch(first, &mut queue, &limits);
        if conn.is_none() {
            let r = Reconnecting {
                peer: &peer,
                cancel: &shared.cancel,
                queue: &mut queue,
                state: &state,
                backoff: &mut backoff,
                errors: &shared.errors,
            };
            match reconnect(r, || open(&shared, &peer)).await {
                Reconnect::Connected(c) => conn = Some(c),
                Reconnect::GaveUp => continue,
                Reconnect::Cancelled => return,
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let written = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            w = write_batch(&shared, c, batch) => w,
        };
        if let Err(e) = written {
            shared.errors.record(ErrorKind::Io);
            tracing::debug!(peer = %peer.id, "write failed ({e}); reconnecting");
            conn = None;
        }
    }
}

/// Connects and says Hello.
async fn open(shared: &Shared, peer: &Peer) -> Result<Conn, TransportError> {
    let stream = connect(shared, peer).await?;
    let (read, write) = tokio::io::split(stream);
    let mut write = FramedWrite::new(write, FrameCodec::new(shared.config.max_frame_bytes));
    let hello = encode_frame(
        shared.config.cluster,
        &Frame::Hello {
            from: shared.id.clone(),
        },
    );
    send_frame(shared, &mut write, hello).await?;
    Ok(Conn { read, write })
}

/// Resolves when the peer closes a connection (it never sends on one).
async fn peer_closed(conn: &mut Option<Conn>) {
    match conn {
        Some(c) => {
            let mut byte = [0u8; 1];
            let _ = c.read.read(&mut byte).await;
        }
        None => std::future::pending().await,
    }
}

/// Writes `msgs` as `Messages` frames within the batching limits, with
/// vectored writes of the frames' buffers (large entry payloads are not
/// copied on the way), then flushes.
async fn write_batch(
    shared: &Shared,
    c: &mut Conn,
    msgs: Vec<Message>,
) -> Result<(), TransportError> {
    let limits = shared.config.batch_limits();
    let mut encoded = encode_messages(shared.config.cluster, msgs, &limits, &shared.errors);
    let mut out = PrefixedFrames::new(
        std::mem::take(&mut encoded.frames),
        shared.config.max_frame_bytes,
    )?;
    let write = async {
        // Whatever the codec still buffers goes first, to keep the order.
        c.write
            .flush()
            .await
            .map_err(|e| codec_error("flushing", e))?;
        let stream = c.write.get_mut();
        stream
            .write_all_buf(&mut out)
            .await
            .map_err(|e| io_error("writing messages", e))?;
        stream
            .flush()
            .await
            .map_err(|e| io_error("flushing messages", e))
    };
    timeout(shared.config.write_timeout, write)
        .await
        .map_err(|_| write_timed_out())??;
    encoded.record_sent();
    Ok(())
}

/// Writes and flushes one frame, within the write timeout.
async fn send_frame(
    shared: &Shared,
    write: &mut FramedWrite<WriteHalf<Stream>, FrameCodec>,
    frame: Bytes,
) -> Result<(), TransportError> {
    match timeout(shared.config.write_timeout, write.send(frame)).await {
        Err(_) => Err(write_timed_out()),
        Ok(Err(e)) => Err(codec_error("writing a frame", e)),
        Ok(Ok(())) => Ok(()),
    }
}

pub(crate) fn write_timed_out() -> TransportError {
    io_error(
        "writing to the peer",
        std::io::Error::from(std::io::ErrorKind::TimedOut),
    )
}

fn io_error(context: &str, source: std::io::Error) -> TransportError {
    TransportError::Io {
        context: context.to_owned(),
        source,
    }
}

/// A framing error as a transport error: the socket's own, or the codec's
/// (a frame over `max_frame_bytes`) as `InvalidData`.
pub(crate) fn codec_error(context: &str, e: CodecError) -> TransportError {
    match e {
        CodecError::Io(source) => io_error(context, source),
        other => io_error(
            context,
            std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        ),
    }
}
