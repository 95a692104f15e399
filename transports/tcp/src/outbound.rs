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

use bytes::Buf;
use raftkit::transport::errors::ErrorKind;
use raftkit::transport::link::{
    drain_closed, encode_messages, fill_batch, reconnect, Backoff, Link, LinkState, Reconnect,
    Reconnecting,
};
use raftkit::wire::stream::{CodecError, PrefixedFrames};
use raftkit::wire::{encode_frame, Frame, FrameChunks};
use raftkit::{Message, Peer, TransportError};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::transport::{connect, Shared, Stream};

struct Conn {
    read: ReadHalf<Stream>,
    write: WriteHalf<Stream>,
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
    let (read, mut write) = tokio::io::split(stream);
    let hello = encode_frame(
        shared.config.cluster,
        &Frame::Hello {
            from: shared.id.clone(),
        },
    );
    write_frames(shared, &mut write, vec![hello.into()], "writing a frame").await?;
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

/// Writes `msgs` as `Messages` frames within the batching limits.
async fn write_batch(
    shared: &Shared,
    c: &mut Conn,
    msgs: Vec<Message>,
) -> Result<(), TransportError> {
    let limits = shared.config.batch_limits();
    let mut encoded = encode_messages(shared.config.cluster, msgs, &limits, &shared.errors);
    let frames = std::mem::take(&mut encoded.frames);
    write_frames(shared, &mut c.write, frames, "writing messages").await?;
    encoded.record_sent();
    Ok(())
}

/// Writes each frame behind its 4-byte length straight to the socket with
/// vectored writes (no frame is copied into a codec's buffer, shared
/// payloads included), then flushes, within the write timeout; returns the
/// bytes written. `context` names the write in an error.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    shared: &Shared,
    stream: &mut W,
    frames: Vec<FrameChunks>,
    context: &str,
) -> Result<usize, TransportError> {
    let mut out = PrefixedFrames::new(frames, shared.config.max_frame_bytes)?;
    let bytes = out.remaining();
    let write = async {
        stream.write_all_buf(&mut out).await?;
        stream.flush().await
    };
    match timeout(shared.config.write_timeout, write).await {
        Err(_) => Err(write_timed_out()),
        Ok(Err(e)) => Err(io_error(context, e)),
        Ok(Ok(())) => Ok(bytes),
    }
}

fn write_timed_out() -> TransportError {
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
