//! One long-lived outbound message stream per peer, fed by a bounded queue.
//!
//! ```text
//!  send() ──try_send──▶ queue (bounded) ──▶ link task ──Messages frames──▶ uni stream ──▶ peer
//!                                             │ dial (or reuse) the connection, open the
//!                                             │ stream (priority above snapshots), Hello
//!                                             └ on failure: drop the queue, answer
//!                                               Unreachable and retry with backoff
//!                                               while sends keep coming
//! ```

use std::sync::Arc;

use bytes::Buf;
use raftkit::transport::errors::ErrorKind;
use raftkit::transport::link::{
    drain_closed, encode_messages, fill_batch, reconnect, Backoff, Link, LinkState, Reconnect,
    Reconnecting,
};
use raftkit::wire::stream::PrefixedFrames;
use raftkit::wire::{encode_frame, Frame, FrameChunks};
use raftkit::{Message, Peer, TransportError};
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::transport::{connect, Shared};

/// The message stream's priority: above snapshot streams (0), so that
/// heartbeats and appends never wait behind snapshot data in the sender.
const MESSAGE_PRIORITY: i32 = 1;

/// An open message stream and the connection it runs on.
struct Conn {
    connection: quinn::Connection,
    stream: quinn::SendStream,
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
            e = closed(&conn) => {
                tracing::debug!(peer = %peer.id, "connection closed: {e}");
                if let Some(c) = conn.take() {
                    shared.forget_connection(&peer, &c.connection);
                }
                continue;
            }
            _ = tokio::time::sleep(shared.config.link_idle_timeout) => {
                // A peer nobody sends to any more (removed, say): free the
                // task and the stream. `send` starts a new link when needed.
                tracing::debug!(peer = %peer.id, "link idle; closing it");
                let rest = drain_closed(&mut queue);
                if let Some(mut c) = conn.take() {
                    if !rest.is_empty() {
                        let _ = write_batch(&shared, &mut c.stream, rest).await;
                    }
                    let _ = c.stream.finish();
                    shared.forget_connection(&peer, &c.connection);
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
            w = write_batch(&shared, &mut c.stream, batch) => w,
        };
        if let Err(e) = written {
            shared.errors.record(ErrorKind::Io);
            tracing::debug!(peer = %peer.id, "write failed ({e}); reconnecting");
            if let Some(c) = conn.take() {
                shared.forget_connection(&peer, &c.connection);
            }
        }
    }
}

/// Resolves when the link's connection closes.
async fn closed(conn: &Option<Conn>) -> quinn::ConnectionError {
    match conn {
        Some(c) => c.connection.closed().await,
        None => std::future::pending().await,
    }
}

/// Connects (or reuses the connection), opens the message stream and says
/// Hello.
async fn open(shared: &Shared, peer: &Peer) -> Result<Conn, TransportError> {
    let connection = connect(shared, peer).await?;
    let opened = async {
        let mut stream = connection
            .open_uni()
            .await
            .map_err(|e| TransportError::Unreachable {
                peer: peer.id.clone(),
                reason: format!("opening the message stream: {e}"),
            })?;
        // Cannot fail on a stream just opened; ignore if it did.
        let _ = stream.set_priority(MESSAGE_PRIORITY);
        let hello = encode_frame(
            shared.config.cluster,
            &Frame::Hello {
                from: shared.id.clone(),
            },
        );
        write_frames(shared, &mut stream, vec![hello.into()]).await?;
        Ok(stream)
    };
    match opened.await {
        Ok(stream) => Ok(Conn { connection, stream }),
        Err(e) => {
            shared.forget_connection(peer, &connection);
            Err(e)
        }
    }
}

/// Writes `msgs` as `Messages` frames within the batching limits.
async fn write_batch(
    shared: &Shared,
    stream: &mut quinn::SendStream,
    msgs: Vec<Message>,
) -> Result<(), TransportError> {
    let limits = shared.config.batch_limits();
    let mut encoded = encode_messages(shared.config.cluster, msgs, &limits, &shared.errors);
    write_frames(shared, stream, std::mem::take(&mut encoded.frames)).await?;
    encoded.record_sent();
    Ok(())
}

/// Writes each frame behind its 4-byte length, within the write timeout;
/// returns the bytes written. The frames' buffers, shared payloads
/// included, go to quinn uncopied. (quinn finds each packet's bytes by
/// walking the buffers not yet acknowledged, so many small buffers cost
/// more than copying them: hence sharing only payloads of at least
/// [`raftkit::wire::SHARED_PAYLOAD_MIN`].)
pub(crate) async fn write_frames(
    shared: &Shared,
    stream: &mut quinn::SendStream,
    frames: Vec<FrameChunks>,
) -> Result<usize, TransportError> {
    let mut out = PrefixedFrames::new(frames, shared.config.max_frame_bytes)?;
    let bytes = out.remaining();
    match timeout(
        shared.config.write_timeout,
        stream.write_all_chunks(out.chunks()),
    )
    .await
    {
        Err(_) => Err(TransportError::Io {
            context: "writing to the peer".to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::TimedOut),
        }),
        Ok(Err(e)) => Err(TransportError::Io {
            context: "writing to the peer".to_owned(),
            source: e.into(),
        }),
        Ok(Ok(())) => Ok(bytes),
    }
}
