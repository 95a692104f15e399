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

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use raftkit::wire::{encode_frame, Frame};
use raftkit::{Message, MessageBody, Peer, TransportError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::errors::{ErrorKind, BYTES_SENT_METRIC, MESSAGES_SENT_METRIC};
use crate::transport::{connect, Shared};

/// The message stream's priority: above snapshot streams (0), so that
/// heartbeats and appends never wait behind snapshot data in the sender.
const MESSAGE_PRIORITY: i32 = 1;

/// A peer's queue and its reachability.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) queue: mpsc::Sender<Vec<Message>>,
    pub(crate) state: Arc<LinkState>,
}

/// Whether a peer is unreachable, and whether anyone still wants it.
#[derive(Debug, Default)]
pub(crate) struct LinkState {
    /// Why the last connection attempt failed; `None` while connected or
    /// not yet tried.
    down: Mutex<Option<String>>,
    /// A send was refused since the last attempt: keep retrying.
    wanted: AtomicBool,
}

impl LinkState {
    /// Why the peer is unreachable, if it is. Marks the peer as wanted, so
    /// the link keeps trying to reconnect.
    pub(crate) fn refuse(&self) -> Option<String> {
        let down = self.down.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if down.is_some() {
            self.wanted.store(true, Ordering::Release);
        }
        down
    }

    fn set_down(&self, reason: String) {
        *self.down.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }

    fn set_up(&self) {
        *self.down.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn take_wanted(&self) -> bool {
        self.wanted.swap(false, Ordering::AcqRel)
    }
}

/// An open message stream and the connection it runs on.
struct Conn {
    connection: quinn::Connection,
    stream: quinn::SendStream,
}

/// Starts the link task for `peer` and returns its handle.
pub(crate) fn spawn_link(shared: &Arc<Shared>, peer: Peer) -> Link {
    let (queue, rx) = mpsc::channel(shared.config.send_queue_batches);
    let state = Arc::new(LinkState::default());
    let task = run_link(shared.clone(), peer, rx, state.clone());
    shared.tracker.spawn(task);
    Link { queue, state }
}

async fn run_link(
    shared: Arc<Shared>,
    peer: Peer,
    mut queue: mpsc::Receiver<Vec<Message>>,
    state: Arc<LinkState>,
) {
    let mut backoff = Backoff::new(&shared, &peer);
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
                queue.close();
                let mut rest = Vec::new();
                while let Ok(batch) = queue.try_recv() {
                    rest.extend(batch);
                }
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
        // Take what is queued, up to a message count and about a frame's
        // worth of bytes, so a backlog of large appends is never encoded
        // as one oversized frame (and then split again).
        let mut batch = first;
        let mut bytes = estimated_bytes(&batch);
        while batch.len() < shared.config.batch_max_messages
            && bytes < shared.config.max_frame_bytes
        {
            match queue.try_recv() {
                Ok(more) => {
                    bytes += estimated_bytes(&more);
                    batch.extend(more);
                }
                Err(_) => break,
            }
        }
        if conn.is_none() {
            match reconnect(&shared, &peer, &mut queue, &state, &mut backoff).await {
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

enum Reconnect {
    Connected(Conn),
    /// Nobody sent to the peer during the last backoff: stop trying until
    /// the next message (which `send` accepts again).
    GaveUp,
    Cancelled,
}

/// Connects. While attempts fail, `send` answers `Unreachable` (queueing
/// nothing) and attempts repeat with backoff as long as sends keep coming.
async fn reconnect(
    shared: &Shared,
    peer: &Peer,
    queue: &mut mpsc::Receiver<Vec<Message>>,
    state: &LinkState,
    backoff: &mut Backoff,
) -> Reconnect {
    loop {
        let connected = tokio::select! {
            _ = shared.cancel.cancelled() => return Reconnect::Cancelled,
            c = open(shared, peer) => c,
        };
        let e = match connected {
            Ok(c) => {
                backoff.reset();
                state.set_up();
                return Reconnect::Connected(c);
            }
            Err(e) => e,
        };
        shared.errors.record(ErrorKind::Connect);
        let wait = backoff.next_delay();
        tracing::debug!(peer = %peer.id, address = %peer.address, "connect failed ({e}); retrying in {wait:?}");
        state.set_down(e.to_string());
        // Raft retries: what was queued for an unreachable peer is stale.
        while queue.try_recv().is_ok() {}
        tokio::select! {
            _ = shared.cancel.cancelled() => return Reconnect::Cancelled,
            _ = tokio::time::sleep(wait) => {}
        }
        if !state.take_wanted() {
            state.set_up();
            return Reconnect::GaveUp;
        }
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
        write_frames(shared, &mut stream, vec![hello]).await?;
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

/// Writes `msgs` as `Messages` frames (split to fit `max_frame_bytes`).
async fn write_batch(
    shared: &Shared,
    stream: &mut quinn::SendStream,
    msgs: Vec<Message>,
) -> Result<(), TransportError> {
    let mut kinds: Vec<(&'static str, u64)> = Vec::new();
    for msg in &msgs {
        let kind = msg.body.kind();
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((kind, 1)),
        }
    }
    // Frames of about FRAME_BUDGET_BYTES: large enough to cost one header
    // and one decode call per many messages, small enough that the
    // receiver starts decoding while the rest is still in flight.
    let budget = FRAME_BUDGET_BYTES.min(shared.config.max_frame_bytes / 2);
    let mut frames = Vec::new();
    let (mut current, mut current_bytes) = (Vec::new(), 0);
    for msg in msgs {
        let size = estimated_bytes(std::slice::from_ref(&msg));
        if !current.is_empty() && current_bytes + size > budget {
            encode_batches(shared, std::mem::take(&mut current), &mut frames);
            current_bytes = 0;
        }
        current_bytes += size;
        current.push(msg);
    }
    if !current.is_empty() {
        encode_batches(shared, current, &mut frames);
    }
    let bytes = write_frames(shared, stream, frames).await?;
    for (kind, n) in kinds {
        metrics::counter!(MESSAGES_SENT_METRIC, "kind" => kind).increment(n);
    }
    metrics::counter!(BYTES_SENT_METRIC, "kind" => "messages").increment(bytes as u64);
    Ok(())
}

/// Writes each frame behind its 4-byte length, within the write timeout;
/// returns the bytes written. The frames' buffers go to quinn uncopied.
pub(crate) async fn write_frames(
    shared: &Shared,
    stream: &mut quinn::SendStream,
    frames: Vec<Bytes>,
) -> Result<usize, TransportError> {
    let mut chunks = Vec::with_capacity(frames.len() * 2);
    let mut bytes = 0;
    for frame in frames {
        if frame.len() > shared.config.max_frame_bytes {
            return Err(TransportError::Wire(raftkit::wire::WireError::TooLarge {
                len: frame.len(),
                max: shared.config.max_frame_bytes,
            }));
        }
        // `max_frame_bytes` fits a u32 (checked by `validate`).
        let len = frame.len() as u32;
        bytes += frame.len() + 4;
        chunks.push(Bytes::copy_from_slice(&len.to_be_bytes()));
        chunks.push(frame);
    }
    match timeout(
        shared.config.write_timeout,
        stream.write_all_chunks(&mut chunks),
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

/// The encoded size `write_batch` aims for per `Messages` frame.
const FRAME_BUDGET_BYTES: usize = 1 << 20;

/// About how many bytes `msgs` take encoded: entries' sizes plus a
/// message header each.
fn estimated_bytes(msgs: &[Message]) -> usize {
    const MESSAGE_OVERHEAD: usize = 64;
    msgs.iter()
        .map(|m| {
            MESSAGE_OVERHEAD
                + match &m.body {
                    MessageBody::AppendEntriesRequest(r) => {
                        r.entries.iter().map(|e| e.size_bytes()).sum()
                    }
                    _ => 0,
                }
        })
        .sum()
}

/// Encodes `msgs` into frames no larger than the maximum, halving batches
/// that come out too large; a single message too large is dropped.
fn encode_batches(shared: &Shared, msgs: Vec<Message>, out: &mut Vec<Bytes>) {
    let frame = encode_frame(shared.config.cluster, &Frame::Messages(msgs));
    if frame.len() <= shared.config.max_frame_bytes {
        out.push(frame);
        return;
    }
    let Frame::Messages(mut msgs) = decode_own(shared, &frame) else {
        return;
    };
    if msgs.len() == 1 {
        shared.errors.record(ErrorKind::OversizedMessage);
        tracing::warn!(
            len = frame.len(),
            max = shared.config.max_frame_bytes,
            kind = msgs[0].body.kind(),
            "dropping a message larger than max_frame_bytes"
        );
        return;
    }
    let tail = msgs.split_off(msgs.len() / 2);
    encode_batches(shared, msgs, out);
    encode_batches(shared, tail, out);
}

/// Decodes a frame this transport just encoded (only on the rare oversize
/// path, to get the messages back without cloning every batch up front).
fn decode_own(shared: &Shared, frame: &[u8]) -> Frame {
    match raftkit::wire::decode_frame(shared.config.cluster, frame) {
        Ok(f) => f,
        // Our own encoding always decodes; if it did not, drop the batch.
        Err(_) => Frame::Messages(Vec::new()),
    }
}

/// Exponential reconnect delays with jitter, from a seed derived from the
/// local id and the peer address (deterministic, yet different per pair).
struct Backoff {
    bound: Duration,
    min: Duration,
    max: Duration,
    rng: ChaCha8Rng,
}

impl Backoff {
    fn new(shared: &Shared, peer: &Peer) -> Backoff {
        // DefaultHasher::new() has fixed keys, so the seed is stable.
        let mut hasher = DefaultHasher::new();
        (shared.id.as_str(), peer.address.as_str()).hash(&mut hasher);
        let (min, max) = (shared.config.backoff_min, shared.config.backoff_max);
        Backoff {
            bound: min,
            min,
            max,
            rng: ChaCha8Rng::seed_from_u64(hasher.finish()),
        }
    }

    fn reset(&mut self) {
        self.bound = self.min;
    }

    /// A delay between half and all of the current bound; doubles the bound.
    fn next_delay(&mut self) -> Duration {
        let bound = self.bound;
        self.bound = (self.bound * 2).min(self.max);
        let half = bound / 2;
        half + half.mul_f64(self.rng.random::<f64>())
    }
}
